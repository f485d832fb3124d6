#!/usr/bin/env python3
"""The adamllm-tiny table from finished runs (one run per seed): every measure as mean ± sample
standard deviation over the runs, the per-seed values, and the paper's corresponding number
(synth-spec §2.6). Read from each run's manifest.json stage summaries and the eval stage's
results.json. Usage: tools/adamllm_tiny_table.py runs/adamllm-tiny-*"""
import json
import math
import sys
from pathlib import Path


def summary(manifest, stage):
    for s in manifest["stages"]:
        if s["name"] == stage:
            return s.get("summary") or {}
    return {}


def image_scores(run, label, set_name):
    """The eval stage's scores of one model on one image set: {"exact", "recall", "rouge_l"}."""
    path = Path(run) / "eval" / "results.json"
    if not path.exists():
        return {}
    for r in json.loads(path.read_text()).get("images", []):
        if r["label"] == label and set_name in r["sets"]:
            return r["sets"][set_name]
    return {}


def ratio(a, b):
    return None if a is None or not b else a / b


# (measure, how to read it from a run, the paper's number beside it)
def measures():
    def s(stage, key):
        return lambda run, m: summary(m, stage).get(key)

    def share(stage, num, den):
        return lambda run, m: ratio(summary(m, stage).get(num), summary(m, stage).get(den))

    def img(label, set_name, metric):
        return lambda run, m: image_scores(run, label, set_name).get(metric)

    T7 = "Table 7"
    return [
        ("(B) images with a parsed task, of 120", s("visual", "tasks/tasks_parsed"), ""),
        ("(B) tasks kept by the filter", s("visual", "tasks/kept"), ""),
        ("(B) consistency without the filter (kept / parsed)", share("visual", "tasks/kept", "tasks/tasks_parsed"), f"biomed 30.3 %, food 35.7 % ({T7})"),
        ("(B) parsed tasks whose question has one answer in the scene", s("visual", "answerable"), ""),
        ("(B) task accuracy, no filter: precise answer", s("visual", "acc_precise_unfiltered"), f"biomed 64.3, food 77.2 ({T7})"),
        ("(B) task accuracy, no filter: informative answer", s("visual", "acc_informative_unfiltered"), f"biomed 61.0, food 75.5 ({T7})"),
        ("(B) task accuracy of the kept tasks (filter)", s("visual", "acc_kept"), f"biomed 75.1, food 84.3 ({T7})"),
        ("(iii) precise acc, real image, synthesizer w/ blank", s("visual", "acc_precise_unfiltered"), ""),
        ("(iii) precise acc, white image, synthesizer w/ blank", s("visual_blank", "acc_precise_unfiltered"), ""),
        ("(iii) precise acc, real image, synthesizer w/o blank", s("visual_noblank", "acc_precise_unfiltered"), ""),
        ("(iii) precise acc, white image, synthesizer w/o blank", s("visual_noblank_blank", "acc_precise_unfiltered"), "w/o blank image: biomed 58.3 → 55.8, food 42.0 → 35.9 (domain avg, Table 5)"),
        ("(iii) share of parsed tasks asking a colour (real image, w/ blank)", s("visual", "colour_questions"), ""),
        ("(iii) colour acc (only the image tells), real image, w/ blank", s("visual", "acc_precise_colour"), ""),
        ("(iii) colour acc, white image, w/ blank", s("visual_blank", "acc_precise_colour"), ""),
        ("(iii) colour acc, real image, w/o blank", s("visual_noblank", "acc_precise_colour"), ""),
        ("(iii) colour acc, white image, w/o blank", s("visual_noblank_blank", "acc_precise_colour"), ""),
        ("(C) caption loss, single-stage", s("single", "eval_loss"), ""),
        ("(C) caption loss, single-stage no filter", s("nofilter", "eval_loss"), ""),
        ("(C) caption loss, two-stage after captions", s("two_stage_1", "eval_loss"), ""),
        ("(C) caption loss, two-stage after tasks", s("two_stage_2", "eval_loss"), ""),
        ("(C) caption ROUGE-L, untrained target", img("init", "target_captions_test", "rouge_l"), ""),
        ("(C) caption ROUGE-L, single-stage", img("single", "target_captions_test", "rouge_l"), "AdaMLLM-8B recipe 24.8 (Table 3)"),
        ("(C) caption ROUGE-L, single-stage no filter", img("nofilter", "target_captions_test", "rouge_l"), ""),
        ("(C) caption ROUGE-L, two-stage after captions", img("two_stage_1", "target_captions_test", "rouge_l"), "recipe 25.3 (Table 14 note)"),
        ("(C) caption ROUGE-L, two-stage after tasks", img("two_stage_2", "target_captions_test", "rouge_l"), "recipe 16.2 (Table 14 note)"),
        ("(C) held-out question recall, untrained target", img("init", "target_test", "recall"), ""),
        ("(C) held-out question recall, single-stage", img("single", "target_test", "recall"), "food domain avg, single-stage 42.0 (LLaVA-8B, Recipe1M, Table 4)"),
        ("(C) held-out question recall, single-stage no filter", img("nofilter", "target_test", "recall"), ""),
        ("(C) held-out question recall, two-stage after captions", img("two_stage_1", "target_test", "recall"), ""),
        ("(C) held-out question recall, two-stage after tasks", img("two_stage_2", "target_test", "recall"), "two-stage 29.0 (same, Table 4)"),
    ]


def fmt(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:.3f}"


def mean_sd(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "-"
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return f"{fmt(m)} (n=1)"
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    if all(float(x).is_integer() and x >= 1 for x in xs):
        return f"{m:.1f} ± {sd:.1f}"  # counts
    return f"{m:.3f} ± {sd:.3f}"


def main(runs):
    loaded = []
    for run in runs:
        m = json.loads((Path(run) / "manifest.json").read_text())
        if m.get("status") == "finished":
            loaded.append((run, m))
    if not loaded:
        sys.exit("no finished run among " + " ".join(runs))
    loaded.sort(key=lambda rm: rm[1].get("seed", 0))
    seeds = [str(m.get("seed")) for _, m in loaded]
    print(f"| measure | mean ± sd over {len(loaded)} seed(s) | seeds {', '.join(seeds)} | paper |")
    print("| --- | --- | --- | --- |")
    for name, read, paper in measures():
        vals = [read(run, m) for run, m in loaded]
        print(f"| {name} | {mean_sd(vals)} | {' / '.join(fmt(v) for v in vals)} | {paper} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
