#!/usr/bin/env python3
"""Median per-phase seconds of an `rl` stage, read from a run's events.jsonl.

Usage: python3 tools/rl_phase_times.py RUN_DIR [STAGE]   (STAGE defaults to the first rl stage
seen, e.g. `grpo`). The first step, which warms up, is left out of the medians.
"""
import json
import statistics
import sys

run = sys.argv[1]
want = sys.argv[2] if len(sys.argv) > 2 else None
series = {}
for line in open(f"{run}/events.jsonl"):
    e = json.loads(line)
    if e.get("event") != "metrics" or not any(k.startswith("timing/") for k in e.get("values", {})):
        continue
    if want is None:
        want = e["stage"]
    if e["stage"] != want:
        continue
    for k, v in e["values"].items():
        if k.startswith("timing/"):
            series.setdefault(k, []).append(v)
if not series:
    sys.exit(f"{run}/events.jsonl: no timing/* metrics")
out = {k: round(statistics.median(v[1:] or v), 4) for k, v in sorted(series.items())}
print(json.dumps({"stage": want, "steps": max(len(v) for v in series.values()), "phase_median_s": out}))
