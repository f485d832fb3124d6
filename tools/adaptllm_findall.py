#!/usr/bin/env python3
"""The reference semantics of AdaptLLM's mining step: Python's re.findall with re.IGNORECASE
over each pattern (the patterns arrive on stdin with the texts, exactly as retort compiles
them, so both sides run the same regex source). Used by the Rust test that checks retort's
miner against Python's `re`.

stdin:  {"patterns": [{"sub": ..., "pattern": ..., "first": i, "connective": j, "second": k}],
         "texts": ["...", ...]}
stdout: [[{"sub", "first", "connective", "second"}, ...] per text]  (groups 1-based)
"""
import json
import re
import sys


def main():
    req = json.load(sys.stdin)
    compiled = [(p, re.compile(p["pattern"], re.IGNORECASE)) for p in req["patterns"]]
    out = []
    for text in req["texts"]:
        found = []
        for p, rx in compiled:
            for groups in rx.findall(text):
                found.append({"sub": p["sub"], "first": groups[p["first"] - 1],
                              "connective": groups[p["connective"] - 1], "second": groups[p["second"] - 1]})
        out.append(found)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
