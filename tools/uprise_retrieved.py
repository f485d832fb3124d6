#!/usr/bin/env python3
"""What each method of an `uprise-eval` stage retrieved, against the query (stdlib only).

    python3 tools/uprise_retrieved.py RUN_DIR [--by-style]

RUN_DIR is a run folder of `uprise-tiny` (or any run with one `prompt-score` and one
`uprise-eval` stage). For every method's `retrieved-<method>.jsonl`, over the seen and the
held-out test rows apart, it prints:

- `demos`: mean number of demonstrations prepended;
- `style%`: share of those demos in the query's own style. In uprise-tiny a task is named
  `<family>-<style>` and the style fixes the template and the verbaliser pair, so a demo in
  the query's style shows the words the answer must use and a demo in another style shows
  other words;
- `cluster%` / `task%`: share of demos from the query's own cluster / own task (the pool holds
  no held-out cluster, so for held-out rows both are 0 except for `few-shot`, whose demos are
  the target task's own rows);
- `>=1 style%`: share of rows with at least one demo in the query's style;
- `EM | >=1`, `EM | 0`: exact match (%) of the rows with at least one / no demo in the
  query's style, with the row counts in brackets.

Figures are means over rows (the eval's table averages tasks, then clusters, so its seen
means weigh `arithmetic`'s eight tasks like the other clusters' four). `--by-style` adds the
style-match share and exact match per query style for each method.
"""

import json
import sys
from pathlib import Path


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def style_of(task):
    """uprise-tiny's tasks are `<family>-<style>`; the style is the part after the last '-'."""
    return task.rsplit("-", 1)[-1]


def find_stages(run):
    """(prompt-score folder, uprise-eval folder) of a run, each found by the files it writes."""
    score = [d for d in sorted(run.iterdir()) if (d / "meta.json").is_file() and (d / "pool.jsonl").is_file() and (d / "test.jsonl").is_file()]
    evals = [d for d in sorted(run.iterdir()) if d.is_dir() and any(d.glob("retrieved-*.jsonl"))]
    if len(score) != 1 or len(evals) != 1:
        sys.exit(f"{run}: expected one prompt-score stage folder (meta.json, pool.jsonl, test.jsonl) and one uprise-eval folder (retrieved-*.jsonl); found {[d.name for d in score]} and {[d.name for d in evals]}")
    return score[0], evals[0]


def row_stats(records, test_by_id, demos_of, held_out):
    """Per-row facts: (split, query style, number of demos, in-style, in-cluster, in-task, em)."""
    out = []
    for rec in records:
        q = test_by_id[rec["id"]]
        demos = [demos_of[p] for p in rec["pids"]]
        style = style_of(q["task"])
        em = rec.get("em", rec["acc"])
        out.append({
            "split": "held-out" if q["cluster"] in held_out else "seen",
            "style": style,
            "n": len(demos),
            "in_style": sum(style_of(d["task"]) == style for d in demos),
            "in_cluster": sum(d["cluster"] == q["cluster"] for d in demos),
            "in_task": sum(d["task"] == q["task"] for d in demos),
            "em": em,
        })
    return out


def pct(num, den):
    return f"{100.0 * num / den:.1f}" if den else "-"


def summary(rows):
    demos = sum(r["n"] for r in rows)
    some = [r for r in rows if r["in_style"] > 0]
    none = [r for r in rows if r["in_style"] == 0]
    return {
        "rows": len(rows),
        "demos": f"{demos / len(rows):.2f}" if rows else "-",
        "style%": pct(sum(r["in_style"] for r in rows), demos),
        "cluster%": pct(sum(r["in_cluster"] for r in rows), demos),
        "task%": pct(sum(r["in_task"] for r in rows), demos),
        ">=1 style%": pct(len(some), len(rows)),
        "EM | >=1": f"{pct(sum(r['em'] for r in some), len(some))} [{len(some)}]",
        "EM | 0": f"{pct(sum(r['em'] for r in none), len(none))} [{len(none)}]",
    }


def print_table(header, lines):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    for line in [header] + lines:
        print("  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths))))


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    run = Path(argv[1])
    if not run.is_dir():
        sys.exit(f"{run}: not a folder; give a run folder (runs/uprise-tiny-...)")
    score, ev = find_stages(run)
    held_out = set(json.loads((score / "meta.json").read_text())["held_out"])
    test_by_id = {r["id"]: r for r in read_jsonl(score / "test.jsonl")}
    pool = read_jsonl(score / "pool.jsonl")
    target = read_jsonl(score / "target.jsonl") if (score / "target.jsonl").is_file() else []
    methods = []
    for path in sorted(ev.glob("retrieved-*.jsonl")):
        method = path.name[len("retrieved-"):-len(".jsonl")]
        # few-shot's ids index the target tasks' rows; every other method's the pool.
        demos_of = target if method == "few-shot" else pool
        methods.append((method, row_stats(read_jsonl(path), test_by_id, demos_of, held_out)))
    order = ["zero-shot", "few-shot", "random", "bm25", "untuned", "uprise"]
    methods.sort(key=lambda m: order.index(m[0]) if m[0] in order else len(order))

    print(f"{run}: held out {sorted(held_out)}; means over rows")
    cols = ["rows", "demos", "style%", "cluster%", "task%", ">=1 style%", "EM | >=1", "EM | 0"]
    lines = []
    for split in ("seen", "held-out"):
        for method, rows in methods:
            s = summary([r for r in rows if r["split"] == split])
            lines.append([method, split] + [s[c] for c in cols])
    print_table(["method", "split"] + cols, lines)

    if "--by-style" in argv:
        styles = sorted({r["style"] for _, rows in methods for r in rows})
        print("\nper query style: style% / EM (rows)")
        for split in ("seen", "held-out"):
            lines = []
            for method, rows in methods:
                line = [method, split]
                for st in styles:
                    s = summary([r for r in rows if r["split"] == split and r["style"] == st])
                    em = pct(sum(r["em"] for r in rows if r["split"] == split and r["style"] == st), s["rows"])
                    line.append(f"{s['style%']} / {em} ({s['rows']})")
                lines.append(line)
            print_table(["method", "split"] + styles, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
