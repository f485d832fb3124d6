#!/usr/bin/env python3
"""Write the corpus-reader fixtures in tests/fixtures/corpus/ and expected.json beside them.

The Parquet files are written by pyarrow and their texts read back by pyarrow
(`pq.read_table`), so the Rust reader is checked against another implementation.
The text and JSONL files are written byte for byte here; the expected documents,
skip reasons and byte offsets are worked out by this script with Python's own
json and UTF-8 decoding, not by the code under test.

    python3 -m venv /tmp/corpus-venv && /tmp/corpus-venv/bin/pip install pyarrow
    /tmp/corpus-venv/bin/python tools/make_corpus_fixtures.py
"""

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "corpus")
# The max_doc_bytes the malformed-JSONL test runs with.
JSONL_LIMIT = 100


def write(name, data):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def parquet_texts(name, column):
    """The column as pyarrow reads it back (None for null)."""
    return pq.read_table(os.path.join(OUT, name), columns=[column]).column(column).to_pylist()


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    expected = {}

    # Snappy, three row groups (3 + 3 + 1 rows), non-ASCII text, an extra column to ignore.
    texts = ["alpha", "βeta — ünïcode", "gamma\nwith a newline", "delta", "ε 😀", "zeta", "eta"]
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string())})
    pq.write_table(table, os.path.join(OUT, "rows.parquet"), compression="snappy", row_group_size=3)
    expected["rows.parquet"] = {
        "texts": parquet_texts("rows.parquet", "text"),
        "row_groups": pq.ParquetFile(os.path.join(OUT, "rows.parquet")).metadata.num_row_groups,
    }

    # Nulls and a whitespace-only value among real rows (optional column, two row groups).
    texts = ["first", None, "  \n ", "fourth", None, "sixth"]
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), os.path.join(OUT, "nulls.parquet"), row_group_size=4)
    expected["nulls.parquet"] = {"texts": parquet_texts("nulls.parquet", "text")}

    # Zstd, the text under another key, as large_string (still BYTE_ARRAY / UTF8 on disk).
    texts = [f"document number {i}: " + "word " * i for i in range(20)]
    table = pa.table({"content": pa.array(texts, pa.large_string()), "score": pa.array([i * 0.5 for i in range(20)])})
    pq.write_table(table, os.path.join(OUT, "zstd.parquet"), compression="zstd", row_group_size=8)
    expected["zstd.parquet"] = {"texts": parquet_texts("zstd.parquet", "content")}

    # Errors at open: a non-string text column, no text column, a nested one.
    pq.write_table(pa.table({"text": pa.array([1, 2, 3], pa.int64())}), os.path.join(OUT, "int_text.parquet"))
    pq.write_table(pa.table({"body": ["a", "b"], "id": [1, 2]}), os.path.join(OUT, "no_text.parquet"))
    pq.write_table(pa.table({"text": pa.array([["a", "b"], ["c"]], pa.list_(pa.string()))}), os.path.join(OUT, "nested.parquet"))

    # Paragraphs: blank and whitespace-only separators, runs of them, no final newline.
    para = b"\n\nFirst paragraph,\nsecond line.\n\n\n   \t\nSecond paragraph.\n \nThird\nparagraph\nhere."
    write("paragraphs.txt", para)
    blocks, start, lines = [], None, para.decode().split("\n")
    for number, line in enumerate(lines + [""], 1):
        if line.strip():
            if start is None:
                start, buf = number, []
            buf.append(line)
        elif start is not None:
            blocks.append({"line": start, "text": "\n".join(buf)})
            start = None
    expected["paragraphs.txt"] = blocks

    # BOM + CRLF, read as one document (BOM dropped, CRLF -> LF).
    crlf = "\ufeffline one\r\nline two\r\n".encode()
    write("crlf_bom.txt", crlf)
    expected["crlf_bom.txt"] = crlf.decode("utf-8-sig").replace("\r\n", "\n")

    # Malformed JSONL: every skip reason, plus good rows before and after each.
    rows = [
        b'{"text": "good one", "meta": {"deep": [1, 2, {"x": null}]}}',
        b'{"text": "bad \xff\xfe byte"}',
        b"",
        b"this is not json",
        b'{"body": "no text key"}',
        b'{"text": 42}',
        b'{"text": "' + b"x" * 300 + b'"}',
        b'{"text": "after the long line"}\r',
        b'{"text": null}',
        b'["an", "array"]',
        b'{"text": "   "}',
        b"   ",
        b'{"id": 7, "text": "last, no newline \\u00e9"}',
    ]
    data = b"\n".join(rows)
    write("malformed.jsonl", data)
    docs, skips, offset = [], [], 0
    for number, raw in enumerate(rows, 1):
        line = raw.rstrip(b"\r")
        if len(line) > JSONL_LIMIT:
            skips.append({"line": number, "reason": "too large"})
        else:
            try:
                text = line.decode()
            except UnicodeDecodeError as e:
                skips.append({"line": number, "reason": "invalid utf-8", "byte": offset + e.start})
                text = None
            if text is not None and text.strip():
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    skips.append({"line": number, "reason": "not json"})
                    obj = None
                    text = None
                if text is None:
                    pass
                elif not isinstance(obj, dict):
                    skips.append({"line": number, "reason": "not json"})
                elif "text" not in obj:
                    skips.append({"line": number, "reason": "missing key"})
                elif obj["text"] is None:
                    skips.append({"line": number, "reason": "null"})
                elif not isinstance(obj["text"], str):
                    skips.append({"line": number, "reason": "not a string"})
                elif not obj["text"].strip():
                    skips.append({"line": number, "reason": "empty"})
                else:
                    docs.append({"line": number, "text": obj["text"]})
        offset += len(raw) + 1
    expected["malformed.jsonl"] = {"limit": JSONL_LIMIT, "docs": docs, "skips": skips, "size": len(data)}

    # A folder mixing formats, a hidden file to skip, a subfolder.
    write("mixed/a.txt", b"text file a\n")
    write("mixed/b.jsonl", b'{"text": "jsonl b1"}\n{"text": "jsonl b2"}\n')
    pq.write_table(pa.table({"text": ["parquet c1", "parquet c2"]}), os.path.join(OUT, "mixed", "c.parquet"))
    write("mixed/.hidden.txt", b"never read\n")
    write("mixed/.cache/config.txt", b"never read\n")
    write("mixed/sub/d.md", b"# markdown d\n")
    expected["mixed"] = ["text file a\n", "jsonl b1", "jsonl b2"] + parquet_texts("mixed/c.parquet", "text") + ["# markdown d\n"]

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
