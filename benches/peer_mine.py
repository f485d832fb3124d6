#!/usr/bin/env python3
"""The Python side of `retort bench mine`: AdaptLLM's mining pass (re.findall with
re.IGNORECASE, every pattern over every document, as the reference's raw2read does) over the
same documents, timed the same way (median of --repeats after --warmup, mining only; reading
the files is not timed).

The patterns are not written here: `retort bench mine --patterns-json` prints the ones retort
compiles (the reference's, character for character), so both sides run the same regex source.

    retort bench mine --patterns-json > /tmp/patterns.json
    python3 benches/peer_mine.py /tmp/patterns.json corpus.jsonl [--text-key text] [--repeats 5]

Prints one JSON line: bytes, documents, matches, median_s, mb_per_s, runs.
"""
import argparse
import json
import re
import statistics
import sys
import time


def documents(path, text_key):
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    text = json.loads(line).get(text_key)
                    if isinstance(text, str) and text.strip():
                        yield text
    else:
        with open(path, encoding="utf-8") as f:
            yield f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("patterns")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--text-key", default="text")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    with open(args.patterns) as f:
        rules = json.load(f)["patterns"]
    compiled = [re.compile(r["pattern"], re.IGNORECASE) for r in rules]
    docs = [d for p in args.files for d in documents(p, args.text_key)]
    size = sum(len(d.encode("utf-8")) for d in docs)
    runs, matches = [], 0
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        found = 0
        for d in docs:
            for rx in compiled:
                found += len(rx.findall(d))
        elapsed = time.perf_counter() - start
        matches = found
        if i >= args.warmup:
            runs.append(elapsed)
    median = statistics.median(runs)
    json.dump({"side": "python re", "bytes": size, "documents": len(docs), "matches": matches,
               "median_s": median, "mb_per_s": size / 1e6 / median, "runs": runs}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
