#!/usr/bin/env python3
"""Golden sentence splits for retort's AdaptLLM splitter (src/synth/adaptllm/sentences.rs).

The reference pipeline splits with pysbd `Segmenter(language='en', clean=False)`; retort has
its own splitter and its tests compare against this fixture. Regenerate with:

    python3 -m venv /tmp/pysbd-venv && /tmp/pysbd-venv/bin/pip install pysbd
    /tmp/pysbd-venv/bin/python tools/pysbd_sentences.py \
        tests/fixtures/adaptllm/sentence_texts.json > tests/fixtures/adaptllm/sentences_pysbd.json

Input: a JSON list of {"name", "text"}. Output: the same list with "sentences" (pysbd's
segments as returned, trailing whitespace kept) and the pysbd version.
"""
import json
import sys

import pysbd

cases = json.load(open(sys.argv[1], encoding="utf-8"))
seg = pysbd.Segmenter(language="en", clean=False)
out = {
    "tool": "pysbd %s Segmenter(language='en', clean=False)" % pysbd.__version__,
    "cases": [{"name": c["name"], "text": c["text"], "sentences": seg.segment(c["text"])} for c in cases],
}
json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
sys.stdout.write("\n")
