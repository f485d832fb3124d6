//! The corpus readers against fixtures made by other tools: Parquet files written and read
//! back by pyarrow, text and JSONL whose expected documents, skip reasons and byte offsets
//! tools/make_corpus_fixtures.py worked out with Python's json and UTF-8 decoding.

use retort::text::corpus::{Corpus, CorpusConfig, Document, Format, Split};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus").join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn config() -> CorpusConfig {
    CorpusConfig::default()
}

/// All documents, panicking on an Err (tests that expect one read the iterator themselves).
fn read_all(corpus: &mut Corpus) -> Vec<Document> {
    corpus.by_ref().map(|d| d.unwrap()).collect()
}

fn open_err(paths: &[PathBuf], cfg: &CorpusConfig) -> String {
    match Corpus::open(paths, cfg) {
        Ok(_) => panic!("open should fail for {paths:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn texts(docs: &[Document]) -> Vec<String> {
    docs.iter().map(|d| d.text.clone()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn parquet_rows_across_row_groups_equal_what_pyarrow_wrote() {
    let want = &expected()["rows.parquet"];
    assert!(want["row_groups"].as_u64().unwrap() >= 2, "the fixture must span row groups");
    let path = fixture("rows.parquet");
    let mut corpus = Corpus::open(&[path.clone()], &config()).unwrap();
    let docs = read_all(&mut corpus);
    assert_eq!(texts(&docs), strings(&want["texts"]));
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d.id, i as u64);
        assert_eq!(d.origin, format!("{}#{i}", path.display()));
        assert_eq!(d.raw_bytes, d.text.len() as u64);
    }
    assert_eq!(corpus.skipped().total(), 0);
    assert_eq!(corpus.bytes_read(), corpus.total_bytes());
    assert_eq!(corpus.total_bytes(), std::fs::metadata(&path).unwrap().len());
}

#[test]
fn parquet_zstd_large_string_under_another_key() {
    let cfg = CorpusConfig { text_key: "content".into(), ..config() };
    let docs = read_all(&mut Corpus::open(&[fixture("zstd.parquet")], &cfg).unwrap());
    let want = strings(&expected()["zstd.parquet"]["texts"]);
    assert_eq!(texts(&docs), want);
    assert!(docs[19].origin.ends_with("zstd.parquet#19"), "{}", docs[19].origin);
}

#[test]
fn parquet_nulls_and_blank_values_are_skipped_with_their_rows() {
    let want = expected()["nulls.parquet"]["texts"].as_array().unwrap().clone();
    let mut corpus = Corpus::open(&[fixture("nulls.parquet")], &config()).unwrap();
    let docs = read_all(&mut corpus);
    // pyarrow's nulls are None; whitespace-only values are "empty".
    let kept: Vec<(usize, String)> = want
        .iter()
        .enumerate()
        .filter_map(|(row, v)| v.as_str().filter(|s| !s.trim().is_empty()).map(|s| (row, s.to_string())))
        .collect();
    let got: Vec<(usize, String)> =
        docs.iter().map(|d| (d.origin.rsplit('#').next().unwrap().parse().unwrap(), d.text.clone())).collect();
    assert_eq!(got, kept);
    let nulls = want.iter().filter(|v| v.is_null()).count() as u64;
    let counts = corpus.skipped().counts();
    assert_eq!(counts.get("null"), Some(&nulls));
    assert_eq!(counts.get("empty"), Some(&1));
    assert_eq!(corpus.skipped().total(), nulls + 1);
    assert!(corpus.skipped().examples()[0].ends_with("nulls.parquet#1: null"), "{:?}", corpus.skipped().examples());
}

#[test]
fn parquet_without_a_usable_string_column_fails_at_open() {
    let e = open_err(&[fixture("int_text.parquet")], &config());
    assert!(e.contains("int_text.parquet") && e.contains("`text`") && e.contains("INT64") && e.contains("text_key"), "{e}");
    let e = open_err(&[fixture("no_text.parquet")], &config());
    assert!(e.contains("no_text.parquet: no column `text`; its columns are: body, id"), "{e}");
    let e = open_err(&[fixture("nested.parquet")], &config());
    assert!(e.contains("nested.parquet") && e.contains("nested columns are not supported"), "{e}");
    // A non-Parquet file read as Parquet says so.
    let cfg = CorpusConfig { format: Some(Format::Parquet), ..config() };
    let e = open_err(&[fixture("paragraphs.txt")], &cfg);
    assert!(e.contains("paragraphs.txt: not a readable Parquet file") && e.contains("`format`"), "{e}");
}

#[test]
fn paragraphs_are_blank_line_separated_blocks_with_their_first_line() {
    let path = fixture("paragraphs.txt");
    let cfg = CorpusConfig { split: Split::Paragraph, ..config() };
    let mut corpus = Corpus::open(&[path.clone()], &cfg).unwrap();
    let docs = read_all(&mut corpus);
    let want: Vec<(String, String)> = expected()["paragraphs.txt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (format!("{}:{}", path.display(), b["line"]), b["text"].as_str().unwrap().to_string()))
        .collect();
    let got: Vec<(String, String)> = docs.iter().map(|d| (d.origin.clone(), d.text.clone())).collect();
    assert_eq!(got, want);
    // Every byte of the file belongs to some paragraph (the file has no trailing blank lines).
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(docs.iter().map(|d| d.raw_bytes).sum::<u64>(), size);
    assert_eq!(corpus.bytes_read(), size);
}

#[test]
fn a_crlf_file_with_a_bom_reads_as_one_clean_document() {
    let path = fixture("crlf_bom.txt");
    let docs = read_all(&mut Corpus::open(&[path.clone()], &config()).unwrap());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].text, expected()["crlf_bom.txt"].as_str().unwrap());
    assert_eq!(docs[0].origin, path.display().to_string());
    assert_eq!(docs[0].raw_bytes, std::fs::metadata(&path).unwrap().len());
}

#[test]
fn malformed_jsonl_rows_are_skipped_by_reason_and_the_good_ones_read() {
    let want = &expected()["malformed.jsonl"];
    let path = fixture("malformed.jsonl");
    let cfg = CorpusConfig { max_doc_bytes: want["limit"].as_u64().unwrap() as usize, ..config() };
    let mut corpus = Corpus::open(&[path.clone()], &cfg).unwrap();
    let docs = read_all(&mut corpus);
    // The good rows, including the one after the over-limit line.
    let want_docs: Vec<(String, String)> = want["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (format!("{}:{}", path.display(), d["line"]), d["text"].as_str().unwrap().to_string()))
        .collect();
    let got: Vec<(String, String)> = docs.iter().map(|d| (d.origin.clone(), d.text.clone())).collect();
    assert_eq!(got, want_docs);
    assert_eq!(docs.iter().map(|d| d.id).collect::<Vec<_>>(), (0..want_docs.len() as u64).collect::<Vec<_>>());

    let skips = want["skips"].as_array().unwrap();
    let mut want_counts = std::collections::BTreeMap::new();
    for s in skips {
        *want_counts.entry(s["reason"].as_str().unwrap().to_string()).or_insert(0u64) += 1;
    }
    assert_eq!(corpus.skipped().counts(), &want_counts);
    assert_eq!(corpus.skipped().total(), skips.len() as u64);

    // Examples: the first five skips in file order, each naming file:line.
    let examples = corpus.skipped().examples();
    assert_eq!(examples.len(), 5);
    for (example, s) in examples.iter().zip(skips) {
        assert!(example.starts_with(&format!("{}:{}: ", path.display(), s["line"])), "{example} vs {s}");
    }
    let bad = skips.iter().find(|s| s["reason"] == "invalid utf-8").unwrap();
    assert!(examples[0].ends_with(&format!("invalid utf-8 at byte {} of the file", bad["byte"])), "{}", examples[0]);
    assert!(examples[1].contains("not json at column"), "{}", examples[1]);
    assert!(examples[3].ends_with("`text` is a number, not a string"), "{}", examples[3]);

    // Every byte, skipped or not, was read.
    assert_eq!(corpus.bytes_read(), want["size"].as_u64().unwrap());
    assert_eq!(corpus.bytes_read(), corpus.total_bytes());
}

#[test]
fn a_folder_mixing_formats_reads_in_sorted_order_skipping_hidden_files() {
    let folder = fixture("mixed");
    let mut corpus = Corpus::open(&[folder.clone()], &config()).unwrap();
    let docs = read_all(&mut corpus);
    assert_eq!(texts(&docs), strings(&expected()["mixed"]));
    assert_eq!(docs.iter().map(|d| d.id).collect::<Vec<_>>(), (0..docs.len() as u64).collect::<Vec<_>>());
    let origins: Vec<&str> = docs.iter().map(|d| d.origin.as_str()).collect();
    let f = |rest: &str| format!("{}/{rest}", folder.display());
    assert_eq!(origins, [f("a.txt"), f("b.jsonl:1"), f("b.jsonl:2"), f("c.parquet#0"), f("c.parquet#1"), f("sub/d.md")]);
    assert_eq!(corpus.bytes_read(), corpus.total_bytes());
}

#[test]
fn ids_continue_across_inputs() {
    let mut corpus = Corpus::open(&[fixture("crlf_bom.txt"), fixture("rows.parquet"), fixture("mixed/b.jsonl")], &config()).unwrap();
    let docs = read_all(&mut corpus);
    assert_eq!(docs.len(), 1 + 7 + 2);
    assert_eq!(docs.iter().map(|d| d.id).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert!(docs[1].origin.ends_with("rows.parquet#0") && docs[8].origin.ends_with("b.jsonl:1"));
}

#[test]
fn an_input_that_yields_nothing_is_an_error_after_the_documents_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&good, "{\"text\": \"fine\"}\n").unwrap();
    std::fs::write(&bad, "{\"body\": \"a\"}\n\n{\"body\": \"b\"}\n").unwrap();
    let mut corpus = Corpus::open(&[good, bad.clone()], &config()).unwrap();
    assert_eq!(corpus.next().unwrap().unwrap().text, "fine");
    let e = format!("{:#}", corpus.next().unwrap().unwrap_err());
    assert!(e.starts_with(&format!("input {} yielded no document (2 skipped; first: {}:1: no key `text`)", bad.display(), bad.display())), "{e}");
    assert!(corpus.next().is_none());

    // A whitespace-only text file: the file is its one (empty) document.
    let blank = dir.path().join("blank.txt");
    std::fs::write(&blank, " \n\t\n").unwrap();
    let mut corpus = Corpus::open(&[blank.clone()], &config()).unwrap();
    let e = format!("{:#}", corpus.next().unwrap().unwrap_err());
    assert!(e.contains(&format!("input {} yielded no document (1 skipped; first: {}: empty", blank.display(), blank.display())), "{e}");
    assert_eq!(corpus.skipped().counts().get("empty"), Some(&1));

    // A folder counts as one input: a good file in it is enough.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.txt"), " ").unwrap();
    std::fs::write(folder.join("b.txt"), "words").unwrap();
    let got: Vec<_> = Corpus::open(&[folder.clone()], &config()).unwrap().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_ref().unwrap().text, "words");
}

#[test]
fn bad_paths_and_empty_folders_fail_at_open_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let e = open_err(&[missing.clone()], &config());
    assert!(e.contains(&missing.display().to_string()) && e.contains("`input`"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join(".hidden.txt"), "x").unwrap();
    let e = open_err(&[empty.clone()], &config());
    assert!(e.contains(&format!("{}: the folder holds no files", empty.display())), "{e}");

    // An unknown extension names the file and says to set `format`; with `format` set it reads.
    let csv = dir.path().join("data.csv");
    std::fs::write(&csv, "a,b\n").unwrap();
    let e = open_err(&[csv.clone()], &config());
    assert!(e.contains(&format!("{}: cannot tell the corpus format from its extension `.csv`", csv.display())) && e.contains("set `format`"), "{e}");
    let cfg = CorpusConfig { format: Some(Format::Text), ..config() };
    assert_eq!(read_all(&mut Corpus::open(&[csv], &cfg).unwrap())[0].text, "a,b\n");
}

#[test]
fn text_documents_over_the_limit_or_with_bad_utf8_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(101)).unwrap();
    // BOM (3 bytes) + "ab\n" (3) + "c" (1): the bad byte is at offset 7, on line 2.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"\xEF\xBB\xBFab\nc\xC3(\n").unwrap();
    let ok = dir.path().join("ok.txt");
    std::fs::write(&ok, "x".repeat(100)).unwrap();
    let cfg = CorpusConfig { max_doc_bytes: 100, ..config() };
    let mut corpus = Corpus::open(&[dir.path().to_path_buf()], &cfg).unwrap();
    let docs = read_all(&mut corpus);
    assert_eq!(texts(&docs), ["x".repeat(100)], "exactly at the limit is kept");
    assert_eq!(
        corpus.skipped().examples(),
        [
            format!("{}:2: invalid utf-8 at byte 7 of the file", bad.display()),
            format!("{}: too large (101 bytes > max_doc_bytes = 100)", big.display()),
        ]
    );
    assert_eq!(corpus.bytes_read(), corpus.total_bytes());
}

#[test]
fn paragraph_mode_skips_a_bad_block_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.txt");
    // Block 1 (line 1) fine; block 2 (lines 3-4) has a bad byte at offset 4 + 6 + 2 = 12;
    // block 3 (line 6) is one over-long line; block 4 (line 8) fine, CRLF.
    let mut data = b"one\n\nline\nxx\xFFyy\n\n".to_vec();
    data.extend("z".repeat(50).as_bytes());
    data.extend(b"\n\r\nlast\r\n");
    std::fs::write(&path, &data).unwrap();
    let cfg = CorpusConfig { split: Split::Paragraph, max_doc_bytes: 20, ..config() };
    let mut corpus = Corpus::open(&[path.clone()], &cfg).unwrap();
    let docs = read_all(&mut corpus);
    let got: Vec<(String, String)> = docs.iter().map(|d| (d.origin.clone(), d.text.clone())).collect();
    let p = path.display();
    // A one-line paragraph of exactly the limit is kept; two lines joined by a newline over it are not.
    let edge = dir.path().join("edge.txt");
    std::fs::write(&edge, format!("{}\n\n{}\n{}\n", "e".repeat(20), "f".repeat(10), "g".repeat(10))).unwrap();
    let mut edges = Corpus::open(&[edge], &cfg).unwrap();
    assert_eq!(texts(&read_all(&mut edges)), ["e".repeat(20)]);
    assert_eq!(edges.skipped().counts().get("too large"), Some(&1));
    assert_eq!(got, [(format!("{p}:1"), "one".to_string()), (format!("{p}:8"), "last".to_string())]);
    assert_eq!(
        corpus.skipped().examples(),
        [
            format!("{p}:3: invalid utf-8 at byte 12 of the file"),
            format!("{p}:6: paragraph too large (over max_doc_bytes = 20)"),
        ]
    );
    assert_eq!(corpus.bytes_read(), data.len() as u64);
}

#[test]
fn a_huge_jsonl_line_is_dropped_and_the_next_lines_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    // 4 MiB in one line against a 1 KiB limit, with no newline inside to stop at early.
    let mut data = b"{\"text\": \"".to_vec();
    data.extend(std::iter::repeat_n(b'a', 4 << 20));
    data.extend(b"\"}\n{\"text\": \"after\"}\n");
    // A line of exactly the limit (its CRLF not counted) is kept.
    let exact = format!("{{\"text\": \"{}\"}}\r\n", "b".repeat(1024 - 12));
    assert_eq!(exact.len(), 1024 + 2);
    data.extend(exact.as_bytes());
    std::fs::write(&path, &data).unwrap();
    let cfg = CorpusConfig { max_doc_bytes: 1024, ..config() };
    let mut corpus = Corpus::open(&[path.clone()], &cfg).unwrap();
    let docs = read_all(&mut corpus);
    assert_eq!(texts(&docs), ["after".to_string(), "b".repeat(1024 - 12)]);
    assert_eq!(docs[0].origin, format!("{}:2", path.display()));
    assert_eq!(corpus.skipped().counts().get("too large"), Some(&1));
    assert_eq!(corpus.bytes_read(), data.len() as u64);
}

#[test]
fn config_keys_read_from_toml_names() {
    // The stage's TOML uses these exact words.
    let cfg: CorpusConfig =
        toml::from_str("format = \"parquet\"\nsplit = \"paragraph\"\ntext_key = \"body\"\nmax_doc_bytes = 5\n").unwrap();
    assert_eq!(cfg, CorpusConfig { format: Some(Format::Parquet), split: Split::Paragraph, text_key: "body".into(), max_doc_bytes: 5 });
    assert!(toml::from_str::<CorpusConfig>("split = \"sentence\"\ntext_key = \"t\"\nmax_doc_bytes = 5\n").is_err());
}
