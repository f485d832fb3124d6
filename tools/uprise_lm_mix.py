#!/usr/bin/env python3
"""What the uprise-tiny LM's training text teaches: per row, the demonstrations before the
query, whether any of them is in the query's style (the only thing that fixes what its
verbalisers mean), and whether the query's answer agrees with the task data's fixed meaning.

    python3 tools/uprise_lm_mix.py RUN/data/lm.jsonl

Statements are re-judged here from the generator's word lists (read from
src/synth/tiny_uprise.rs), so a demo's meaning (flipped or not) is recovered from its text
alone; the script is a check of the generator, not a copy of it.
"""
import collections
import json
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src/synth/tiny_uprise.rs"


def words(name, text):
    m = re.search(rf"const {name}: &\[&str\] = &\[(.*?)\];", text)
    return re.findall(r'"(\w+)"', m.group(1))


def load_lists():
    text = SRC.read_text()
    pos = set(words("POSITIVE", text))
    syn = re.search(r"const SYNONYMS: &\[\(&str, &str\)\] = &\[(.*?)\];", text).group(1)
    pairs = re.findall(r'\("(\w+)", "(\w+)"\)', syn)
    return pos, {frozenset(p) for p in pairs}


POS, SYN = load_lists()
# (style, its two words: [true, false] in the task data). `fact` is the anchor style, if any.
STYLE_WORDS = {"qa": ("yes", "no"), "label": ("A", "B"), "verdict": ("false", "true"), "switch": ("off", "on"), "fact": ("right", "wrong")}
PATTERNS = [
    ("qa", r"^(?:Q|Question): (.*)\? (?:A|Answer):$"),
    ("label", r"^(?:Input|Text): (.*) Label:$"),
    ("verdict", r"^(?:Claim|Statement): (.*)\. Verdict:$"),
    ("fact", r"^Fact: (.*?)\.? Answer:$"),
    ("switch", r"^(.*) (?:->|=>)$"),
]


def truth(x):
    w = x.split(" ")
    if x.endswith("is even"):
        return int(w[0]) % 2 == 0, "parity"
    if "is more than" in x:
        return int(w[0]) > int(w[4]), "compare"
    if x.startswith("the ") and x.endswith(" is good"):
        return w[3] in POS, "sentiment"
    if " has " in x:
        premise, probe = x.split(" has ")
        return probe in premise.split(" "), "inclusion"
    if " means " in x:
        return w[0] == w[3] or frozenset((w[0], w[3])) in SYN, "synonym"
    raise ValueError(f"unknown statement {x!r}")


def parse(segment):
    """(style, statement, answer word or None) of one demo or query."""
    for style, pat in PATTERNS:
        head, _, ans = segment.rpartition(" ")
        for text, answer in ((segment, None), (head, ans)):
            m = re.match(pat, text)
            if m and (answer is None or answer in STYLE_WORDS[style]):
                return style, m.group(1), answer
    raise ValueError(f"cannot parse {segment!r}")


def main(path):
    rows = []
    for line in open(path):
        r = json.loads(line)
        rows.append(r["text"] if "text" in r else r["prompt"] + r["response"])
    n_demos = collections.Counter()
    implied = 0  # queries with at least one demo of their style
    canonical = collections.Counter()  # (query style, has same-style demo) -> [agree, total]
    agree = collections.Counter()
    restated = 0
    same_family_style = 0
    consistent = [0, 0]  # same-style demos whose meaning agrees with the query's
    per_style = collections.Counter()
    for text in rows:
        parts = text.split(" \n ")
        segs = [parse(p) for p in parts]
        *demos, query = segs
        q_style, q_x, q_ans = query
        q_true, q_fam = truth(q_x)
        per_style[q_style] += 1
        n_demos[len(demos)] += 1
        q_flip = q_ans != STYLE_WORDS[q_style][0 if q_true else 1]
        same = [d for d in demos if d[0] == q_style]
        if same:
            implied += 1
        if any(d[1] == q_x for d in same):
            restated += 1
        if any(truth(d[1])[1] == q_fam for d in same):
            same_family_style += 1
        for d in same:
            d_true, _ = truth(d[1])
            d_flip = d[2] != STYLE_WORDS[d[0]][0 if d_true else 1]
            consistent[0] += d_flip == q_flip
            consistent[1] += 1
        key = (q_style, bool(same))
        canonical[key] += 1
        agree[key] += not q_flip
    n = len(rows)
    print(f"{n} rows; demos before the query: " + ", ".join(f"{k}: {v / n:.0%}" for k, v in sorted(n_demos.items())))
    print(f"query styles: " + ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(per_style.items())))
    print(f"rows with >= 1 demo in the query's style (the meaning implied by demos): {implied / n:.1%}")
    print(f"  ... with a demo of the same family and style: {same_family_style / n:.1%}; restating the query: {restated / n:.1%}")
    print(f"same-style demos whose verbaliser meaning equals the query's: {consistent[0]}/{consistent[1]}")
    print("query answer as in the task data (unflipped), by style and whether a same-style demo precedes:")
    for key in sorted(canonical):
        print(f"  {key[0]:8} demo-in-style={key[1]!s:5}: {agree[key] / canonical[key]:.1%} of {canonical[key]}")


if __name__ == "__main__":
    main(sys.argv[1])
