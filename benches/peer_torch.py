#!/usr/bin/env python3
"""PyTorch peer benchmark for `retort bench`: eager transformers on the same weights folder.

    python benches/peer_torch.py MODEL_DIR generate [--threads N] [--warmup 2] [--runs 5]
    python benches/peer_torch.py MODEL_DIR train    [--threads N] [--warmup 2] [--runs 5]

generate: batch 8, 32-token random prompts, 64 sampled new tokens (temperature 1) with a
          manual KV-cache loop (prefill keeps only the last logits, then one token per step);
          tokens_per_s = batch * new_tokens / wall time including prefill.
train:    batch 8 x 128 random tokens, next-token cross-entropy over all positions,
          forward + backward + AdamW(lr 1e-5, weight_decay 0); tokens_per_s = batch * seq / step.

Prints one JSON object: {"mode", "tokens_per_s", "step_s" (median), "runs_s", "peak_rss_mb",
"threads", "torch", "transformers"}, plus for train the median phases "fwd_s" (forward and
loss), "bwd_s" (backward) and "opt_s" (AdamW step and zero_grad). Per-run times also go to stderr.
"""
import argparse
import inspect
import json
import resource
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cache_key(model):
    """Newer transformers 5.x renamed `past_key_values` to `cache` (argument and output)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def generate_once(model, prompts, new_tokens, gen):
    CACHE_KEY = cache_key(model)
    with torch.no_grad():
        out = model(input_ids=prompts, use_cache=True, logits_to_keep=1)
        past = getattr(out, CACHE_KEY)
        logits = out.logits[:, -1, :].float()
        for step in range(new_tokens):
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            if step == new_tokens - 1:
                break
            out = model(input_ids=nxt, use_cache=True, **{CACHE_KEY: past})
            past = getattr(out, CACHE_KEY)
            logits = out.logits[:, -1, :].float()


def train_once(model, opt, batch):
    """One step; returns (loss, fwd_s, bwd_s, opt_s), the phases retort's bench reports."""
    t0 = time.perf_counter()
    logits = model(input_ids=batch).logits.float()
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    value = loss.item()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return value, t1 - t0, t2 - t1, t3 - t2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("mode", choices=["generate", "train"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)

    times = []
    phases = {}
    if args.mode == "generate":
        model.eval()
        prompts = torch.randint(0, vocab, (args.batch, args.prompt_len), generator=gen)
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            generate_once(model, prompts, args.new_tokens, gen)
            dt = time.perf_counter() - t0
            print(f"run {i}: {dt:.4f} s{' (warmup)' if i < args.warmup else ''}", file=sys.stderr)
            if i >= args.warmup:
                times.append(dt)
        tokens = args.batch * args.new_tokens
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
        batch = torch.randint(0, vocab, (args.batch, args.seq_len), generator=gen)
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            loss, fwd, bwd, optim = train_once(model, opt, batch)
            dt = time.perf_counter() - t0
            print(f"step {i}: {dt:.4f} s (fwd {fwd:.3f} bwd {bwd:.3f} opt {optim:.3f}) loss {loss:.4f}"
                  f"{' (warmup)' if i < args.warmup else ''}", file=sys.stderr)
            if i >= args.warmup:
                times.append(dt)
                for name, value in (("fwd_s", fwd), ("bwd_s", bwd), ("opt_s", optim)):
                    phases.setdefault(name, []).append(value)
        tokens = args.batch * args.seq_len

    step = statistics.median(times)
    print(json.dumps({
        **{name: statistics.median(values) for name, values in phases.items()},
        "mode": args.mode,
        "tokens_per_s": tokens / step,
        "step_s": step,
        "runs_s": times,
        "peak_rss_mb": peak_rss_mb(),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
