#!/usr/bin/env python3
"""Speed peer for retort's `grpo-tiny`: TRL's GRPOTrainer on the same tiny model and prompts.

Usage (after a retort run of grpo-tiny, or any run with a `tasks` stage and an `sft` stage):
    .venv/bin/python tools/trl_grpo_peer.py --model runs/<run>/sft/model \
        --data runs/<run>/data/train.jsonl --steps 8 --prompts 8 --n 8 --max-new 24 --threads 2

It trains on the same countdown prompts with the same shape of step as the retort stage:
`--prompts` prompts x `--n` completions per step, one optimizer step per generation batch
(on-policy), temperature 1.0, `--max-new` completion tokens, no KL by default (beta = 0, so no
reference model; `--beta 0.04` adds TRL's k3 KL loss and a reference pass per rollout), lr 2e-4, and prints the wall-clock seconds of every step and their median (the first
step, which warms up, is left out of the median), and the median of each phase: generation,
rewards + advantages (with the reference pass, also given alone), and the update (forward +
backward + AdamW). retort's counterpart: `python3 tools/rl_phase_times.py RUN_DIR` after
`retort run grpo-tiny` (with `--set stage.grpo.log_ref_kl=false` for the no-reference case,
or `--set stage.grpo.kl_coef=0.04` against `--beta 0.04`). The countdown check below is a short
re-implementation for the reward signal only; it is not used to compare accuracy.
"""

import argparse
import ast
import json
import statistics
import sys
import time


def countdown_reward(numbers, target, text):
    """1.0 when `text` is an expression over + - * and parentheses that uses each given
    number at most once and evaluates to `target`, else 0.0."""
    expr = text.strip().split("\n")[0]
    if not expr or any(c not in "0123456789+-*() " for c in expr):
        return 0.0
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return 0.0
    used = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    pool = list(numbers)
    for u in used:
        if u not in pool:
            return 0.0
        pool.remove(u)
    try:
        value = eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}})
    except Exception:
        return 0.0
    return 1.0 if value == target else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF model folder (an sft stage's model/)")
    ap.add_argument("--data", required=True, help="train.jsonl of a countdown tasks stage")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--n", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new", type=int, default=24)
    ap.add_argument("--min-new", type=int, default=0,
                    help="no end-of-sequence before this many tokens (transformers' min_new_tokens); "
                         "with --min-new = --max-new every completion has the full length (benches/rl_step.sh)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.0,
                    help="KL coefficient; > 0 loads a reference model and scores every rollout with it")
    ap.add_argument("--out", default="/tmp/trl_grpo_peer")
    # TRL's GRPOConfig turns gradient checkpointing on by default (TrainingArguments does not);
    # it recomputes the forward in backward. retort does not, so the fair peer does not either.
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="keep TRL's default of gradient checkpointing on (off unless given)")
    # Mixed precision as TRL users turn it on: fp32 weights and AdamW, the forward (and its
    # backward) under CPU autocast to bf16 (accelerate's mixed_precision = "bf16").
    ap.add_argument("--bf16", action="store_true", help="TrainingArguments bf16=True (autocast to bf16; off unless given)")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [json.loads(line) for line in open(args.data) if line.strip()]
    rows = [r for r in rows if r["task"] == "countdown"]
    if not rows:
        sys.exit(f"{args.data}: no countdown instances")
    ds = Dataset.from_list(
        [{"prompt": r["prompt"], "numbers": r["data"]["numbers"], "target": r["data"]["target"]} for r in rows]
    )

    tok = AutoTokenizer.from_pretrained(args.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)

    def reward(prompts, completions, numbers, target, **_):
        return [countdown_reward(n, t, c) for n, t, c in zip(numbers, target, completions)]

    config = GRPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.prompts * args.n,
        gradient_accumulation_steps=1,
        num_generations=args.n,
        max_completion_length=args.max_new,
        temperature=1.0,
        top_p=1.0,
        learning_rate=2e-4,
        beta=args.beta,
        num_iterations=1,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=0,
        dataloader_num_workers=0,
        generation_kwargs={"min_new_tokens": args.min_new} if args.min_new > 0 else None,
    )

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.t = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            times.append(time.perf_counter() - self.t)
            print(f"step {len(times)}: {times[-1]:.3f} s", flush=True)

    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=ds, processing_class=tok, callbacks=[Timer()])

    # Per-phase wall clock, by wrapping the trainer's own phases: `_generate` (sampling),
    # `_generate_and_score_completions` (sampling + rewards + advantages; it would also hold the
    # reference / old log-prob passes, which beta = 0 and num_iterations = 1 switch off), and the
    # rest of the step (forward + backward + AdamW) as the update.
    phase = {"generate": [], "generate_and_score": [], "reference": []}
    scoring = [False]

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            phase[name].append(time.perf_counter() - t)
            return out
        return wrapper

    def scoring_phase(fn):
        def wrapper(*a, **k):
            scoring[0] = True
            try:
                return fn(*a, **k)
            finally:
                scoring[0] = False
        return wrapper

    # Log-prob passes made while scoring a rollout are the reference model's (beta > 0; with
    # num_iterations = 1 TRL takes no separate old-policy pass); the update's own pass is not.
    get_logps = trainer._get_per_token_logps_and_entropies

    def logps(*a, **k):
        if not scoring[0]:
            return get_logps(*a, **k)
        t = time.perf_counter()
        out = get_logps(*a, **k)
        phase["reference"].append(time.perf_counter() - t)
        return out

    trainer._get_per_token_logps_and_entropies = logps
    trainer._generate = timed("generate", trainer._generate)
    trainer._generate_and_score_completions = timed("generate_and_score", scoring_phase(trainer._generate_and_score_completions))
    trainer.train()
    steady = times[1:] or times
    gen = phase["generate"][1:] or phase["generate"]
    score = [gs - g for gs, g in zip(phase["generate_and_score"], phase["generate"])][1:]
    update = [t - gs for t, gs in zip(times, phase["generate_and_score"])][1:]
    ref = phase["reference"][1:]
    print(json.dumps({"trl_seconds_per_step_median": statistics.median(steady), "steps": len(times), "threads": args.threads,
                      "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new, "min_new_tokens": args.min_new, "beta": args.beta,
                      "gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
                      "step_s": times,
                      "phase_median_s": {"generate": statistics.median(gen),
                                         "score_and_advantages": statistics.median(score) if score else None,
                                         "of_which_reference": statistics.median(ref) if ref else 0.0,
                                         "update": statistics.median(update) if update else None}}))


if __name__ == "__main__":
    main()
