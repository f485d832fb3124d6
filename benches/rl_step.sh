#!/usr/bin/env bash
# One GRPO step, retort against TRL's GRPOTrainer (issue 24): the same model folder, the same
# countdown prompts, 4 prompts × 4 completions, 96 new tokens forced on both sides (no EOS
# before), T = 1, THREADS threads, one optimizer step per rollout. Phases are timed on both
# sides (retort: timing/* metrics through tools/rl_phase_times.py; TRL: tools/trl_grpo_peer.py).
#
#   benches/rl_step.sh MODEL_DIR SIDE REF [STEPS]
#
# SIDE: retort | trl. REF: off (no reference model: retort log_ref_kl = false, TRL beta 0),
# log (retort's default: the reference only logged, every ref_kl_every steps; TRL beta 0),
# kl (a KL loss, the reference scored every step: retort kl_coef = 0.04, TRL beta = 0.04).
# STEPS (default 4): the first warms up and is left out of the medians.
# Prints one JSON line. Environment: RETORT (binary), PYTHON (with trl; default
# /work/venv-24/bin/python), THREADS (2), OUT (folder for runs; default a temp folder),
# ROLLOUT_DTYPE (retort's rollout_dtype: f32, the default, or bf16), UPDATE_DTYPE (retort's
# update_dtype: f32, the default, or bf16), TRL_BF16 (1: TRL's bf16=True autocast; default 0).
# Run the sides interleaved (A B A B) under `flock /tmp/cargo.lock` on a shared machine, and
# compare medians (benches/README.md, "RL step").
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,20p' "$0"; exit 2; fi
MODEL=$(cd "$1" && pwd); SIDE=$2; REF=$3; STEPS=${4:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
RETORT=${RETORT:-$HERE/../target/release/retort}
PYTHON=${PYTHON:-/work/venv-24/bin/python}
THREADS=${THREADS:-2}
ROLLOUT_DTYPE=${ROLLOUT_DTYPE:-f32}
UPDATE_DTYPE=${UPDATE_DTYPE:-f32}
TRL_BF16=${TRL_BF16:-0}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
case "$REF" in
  off) SETS=(--set stage.grpo.log_ref_kl=false); BETA=0 ;;
  log) SETS=(); BETA=0 ;;
  kl) SETS=(--set stage.grpo.kl_coef=0.04); BETA=0.04 ;;
  *) echo "rl_step.sh: REF must be off, log or kl" >&2; exit 2 ;;
esac
# The prompts: the tasks stage of the profile (seeded), shared by both sides.
DATA=$OUT/data/train.jsonl
if [ ! -f "$DATA" ]; then
  "$RETORT" run "$HERE/rl-step.toml" --headless --runs-dir "$OUT/data-run" --name data --set stage.grpo.steps=1 \
    --set stage.grpo.model="$MODEL" --set stage.grpo.max_new_tokens=1 --set stage.grpo.min_new_tokens=0 --force > "$OUT/data.log" 2>&1
  mkdir -p "$OUT/data"
  cp "$OUT"/data-run/data-*/data/train.jsonl "$DATA"
  rm -rf "$OUT/data-run"
fi
case "$SIDE" in
  retort)
    NAME=retort-$REF-$ROLLOUT_DTYPE-$UPDATE_DTYPE-$(date +%s%N)
    RAYON_NUM_THREADS=$THREADS "$RETORT" run "$HERE/rl-step.toml" --headless --runs-dir "$OUT/runs" --name "$NAME" --force \
      --set stage.grpo.model="$MODEL" --set stage.grpo.steps="$STEPS" --set stage.grpo.rollout_dtype="$ROLLOUT_DTYPE" --set stage.grpo.update_dtype="$UPDATE_DTYPE" "${SETS[@]}" > "$OUT/$NAME.log" 2>&1
    rm -rf "$OUT"/runs/"$NAME"-*/grpo/checkpoints "$OUT"/runs/"$NAME"-*/grpo/model
    "$PYTHON" "$HERE/../tools/rl_phase_times.py" "$OUT"/runs/"$NAME"-*/ grpo | "$PYTHON" -c "import json,sys; d=json.load(sys.stdin); d.update(side='retort', ref='$REF', model='$MODEL', rollout_dtype='$ROLLOUT_DTYPE', update_dtype='$UPDATE_DTYPE'); print(json.dumps(d))"
    ;;
  trl)
    OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$PYTHON" "$HERE/../tools/trl_grpo_peer.py" --model "$MODEL" --data "$DATA" --steps "$STEPS" \
      --prompts 4 --n 4 --max-new 96 --min-new 96 --threads "$THREADS" --beta "$BETA" --out "$OUT/trl" $([ "$TRL_BF16" = 1 ] && echo --bf16) > "$OUT/trl-$REF-$TRL_BF16.log" 2>&1
    tail -1 "$OUT/trl-$REF-$TRL_BF16.log" | "$PYTHON" -c "import json,sys; d=json.load(sys.stdin); d.update(side='trl', ref='$REF', model='$MODEL'); print(json.dumps(d))"
    ;;
  *) echo "rl_step.sh: SIDE must be retort or trl" >&2; exit 2 ;;
esac
