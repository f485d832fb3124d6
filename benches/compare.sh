#!/usr/bin/env bash
# Side-by-side speed of `retort bench` and the PyTorch peer (benches/peer_torch.py) on the
# same model folder, same workload, same thread count. Prints a table with ratios.
#
#   benches/compare.sh MODEL_DIR [generate|train|both] [--repeats R] [--warmup W] [WORKLOAD FLAGS]
#
# WORKLOAD FLAGS (--batch, --prompt-len, --new-tokens, --seq-len, --seed) go to both sides.
# Environment: RETORT (binary; default target/release/retort, then /work/main/target/release/retort),
# PYTHON (default: the repository's .venv/bin/python, which .ci/run creates, else python3), THREADS (default 2: RAYON_NUM_THREADS for retort,
# torch.set_num_threads for PyTorch), OUT (folder for the raw JSON; default a temp folder),
# OMP_WAIT_POLICY (default PASSIVE for torch: on a shared, oversubscribed machine torch's
# spinning OpenMP workers get descheduled and a tiny generation took 4 s instead of 0.3 s).
set -euo pipefail

if [ $# -lt 1 ]; then
  sed -n '2,11p' "$0"; exit 2
fi
MODEL=$1; shift
MODE=both
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then MODE=$1; shift; fi
REPEATS=5; WARMUP=1; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --batch|--prompt-len|--new-tokens|--seq-len|--seed) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${RETORT:-}" ]; then
  for c in "$HERE/../target/release/retort" /work/main/target/release/retort; do
    if [ -x "$c" ]; then RETORT=$c; break; fi
  done
fi
[ -x "${RETORT:-}" ] || { echo "compare.sh: no retort binary; build with cargo build --release or set RETORT" >&2; exit 2; }
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
THREADS=${THREADS:-2}
OUT=${OUT:-$(mktemp -d)}
[ -f "$MODEL/config.json" ] || { echo "compare.sh: $MODEL has no config.json" >&2; exit 2; }

case "$MODE" in
  both) MODES=(generate train) ;;
  generate|train) MODES=("$MODE") ;;
  *) echo "compare.sh: mode must be generate, train or both" >&2; exit 2 ;;
esac

for m in "${MODES[@]}"; do
  echo "== $m: retort ($RETORT, RAYON_NUM_THREADS=$THREADS)" >&2
  RAYON_NUM_THREADS=$THREADS "$RETORT" bench "$m" "$MODEL" --json --repeats "$REPEATS" --warmup "$WARMUP" "${EXTRA[@]}" > "$OUT/retort-$m.json"
  echo "== $m: torch ($PYTHON, $THREADS threads)" >&2
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$PYTHON" "$HERE/peer_torch.py" "$MODEL" "$m" --threads "$THREADS" --runs "$REPEATS" --warmup "$WARMUP" "${EXTRA[@]}" > "$OUT/torch-$m.json"
done

"$PYTHON" - "$OUT" "$MODEL" "${MODES[@]}" <<'PY'
import json, sys
out, model, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"model: {model}   raw JSON: {out}")
print(f"| mode | metric | retort | torch | retort / torch |")
print(f"| --- | --- | --- | --- | --- |")
for m in modes:
    r = json.load(open(f"{out}/retort-{m}.json")); t = json.load(open(f"{out}/torch-{m}.json"))
    rows = [("tokens_per_s", "tokens/s (higher is better)")]
    rows += [("step_s", "s per run (median)")] if m == "generate" else [("step_s", "s per step (median)"), ("fwd_s", "forward s"), ("bwd_s", "backward s"), ("opt_s", "optimizer s")]
    rows += [("peak_rss_mb", "peak RSS MiB")]
    for key, label in rows:
        a, b = r.get(key), t.get(key)
        if a is None or b is None:
            continue
        print(f"| {m} | {label} | {a:.4g} | {b:.4g} | {a / b:.2f}x |")
    spread = lambda d: f"{min(d['runs_s']):.3g}-{max(d['runs_s']):.3g}"
    print(f"| {m} | run spread s | {spread(r)} | {spread(t)} | |")
PY
