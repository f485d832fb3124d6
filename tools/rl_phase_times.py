#!/usr/bin/env python3
"""Median per-phase seconds of an `rl` stage, read from a run's events.jsonl.

Usage: python3 tools/rl_phase_times.py RUN_DIR [STAGE]   (STAGE defaults to the first rl stage
seen, e.g. `grpo`). The first step, which warms up, is left out of the medians. With bf16
rollouts the per-step `rollout/logprob_gap` is listed as well.
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
        if k.startswith("timing/") or k == "rollout/logprob_gap":
            series.setdefault(k, []).append(v)
if not series:
    sys.exit(f"{run}/events.jsonl: no timing/* metrics")
out = {k: round(statistics.median(v[1:] or v), 4) for k, v in sorted(series.items()) if k.startswith("timing/")}
report = {"stage": want, "steps": max(len(v) for v in series.values()), "phase_median_s": out}
if "rollout/logprob_gap" in series:
    # bf16 rollouts: mean |sampler log-prob − f32 policy log-prob| per step (all steps).
    report["logprob_gap"] = [round(v, 6) for v in series["rollout/logprob_gap"]]
print(json.dumps(report))
