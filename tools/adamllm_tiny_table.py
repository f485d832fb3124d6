#!/usr/bin/env python3
"""The adamllm-tiny table from finished runs: one row per run (seed), read from each run's
manifest.json stage summaries. Usage: tools/adamllm_tiny_table.py runs/adamllm-tiny-*"""
import json
import sys
from pathlib import Path


def summary(manifest, stage):
    for s in manifest["stages"]:
        if s["name"] == stage:
            return s.get("summary", {})
    return {}


def fmt(x):
    return "-" if x is None else f"{x:.3f}"


cols = [
    ("tasks", "visual", "tasks/tasks_parsed"),
    ("kept", "visual", "tasks/kept"),
    ("acc precise (no filter)", "visual", "acc_precise_unfiltered"),
    ("acc informative (no filter)", "visual", "acc_informative_unfiltered"),
    ("acc kept (filter)", "visual", "acc_kept"),
    ("acc blank img, synth w/ blank", "visual_blank", "acc_precise_unfiltered"),
    ("acc blank img, synth w/o blank", "visual_noblank_blank", "acc_precise_unfiltered"),
    ("caption loss single", "single", "eval_loss"),
    ("caption loss no filter", "nofilter", "eval_loss"),
    ("caption loss 2-stage after 1", "two_stage_1", "eval_loss"),
    ("caption loss 2-stage after 2", "two_stage_2", "eval_loss"),
]
print("| seed | " + " | ".join(c[0] for c in cols) + " |")
print("|" + " --- |" * (len(cols) + 1))
for run in sys.argv[1:]:
    m = json.loads((Path(run) / "manifest.json").read_text())
    if m.get("status") != "finished":
        continue
    vals = [summary(m, st).get(key) for _, st, key in cols]
    print(f"| {m['seed']} | " + " | ".join(fmt(v) if not (k.startswith("tasks") or k == "kept") or v is None else str(int(v)) for (k, _, _), v in zip(cols, vals)) + " |")
