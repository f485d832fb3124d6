#!/usr/bin/env python3
"""OOD scoring speed at RoBERTa-base / -large shape: retort's batched `retort ood` against the
reference's way (PyTorch, one text at a time), on the same random-weight model and texts.

It builds a RobertaForMaskedLM of the chosen shape with random weights (seeded) and saves it
with the tokenizer of a `diffusion-ood-tiny` run (a word-level vocabulary; the config keeps
RoBERTa's 50,265-row embedding and MLM head, so the head costs what it costs in the paper),
then times, on the run's ID + OOD test sets at t = 600:

  - peer: PyTorch, batch 1, no_grad: embeddings -> sqrt(abar) x0 + sqrt(1 - abar) eps ->
    + timestep embedding -> encoder -> lm_head -> cross-entropy over the tokens (the
    reference's `score` loop, research/synth-spec.md §5.4);
  - retort ood --batch 1 and --batch 32 (release build).

Usage (benches/README.md "OOD scoring"):
  .venv/bin/python benches/ood_speed.py RUN_DIR [--shape base|large] [--texts N] [--threads 2]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import RobertaConfig, RobertaForMaskedLM

SHAPES = {"base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}
SETS = ["recipes_test", "legal", "captions", "menus"]


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    args = t * freqs
    return torch.tensor(np.concatenate([np.cos(args), np.sin(args)]), dtype=torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--shape", default="base", choices=SHAPES)
    ap.add_argument("--texts", type=int, default=50, help="texts per set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--retort", default=os.path.join(os.path.dirname(__file__), "../target/release/retort"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    layers, hidden, heads, ffn = SHAPES[args.shape]
    cfg = RobertaConfig(vocab_size=50265, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5)
    model = RobertaForMaskedLM(cfg).eval()
    work = tempfile.mkdtemp(prefix="ood_speed_")
    folder = os.path.join(work, "model")
    model.save_pretrained(folder)
    tiny = os.path.join(args.run_dir, "diffuse/model")
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(tiny, f), folder)

    # The first N texts of each set, written where retort reads them.
    files = []
    for name in SETS:
        rows = [json.loads(l) for l in open(os.path.join(args.run_dir, "data", name + ".jsonl"))][: args.texts]
        path = os.path.join(work, name + ".jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        files.append((path, rows))

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    t = 600
    temb = timestep_embedding(t, hidden)
    texts = [r["text"] for _, rows in files for r in rows]
    n_tokens = 0
    gen = torch.Generator().manual_seed(42)
    start = time.perf_counter()
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids])
            n_tokens += ids.shape[1]
            x0 = model.roberta.embeddings(input_ids=ids)
            noise = torch.randn(x0.shape, generator=gen)
            xt = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * noise + temb
            h = model.roberta.encoder(xt).last_hidden_state
            F.cross_entropy(model.lm_head(h)[0], ids[0])
    peer_s = time.perf_counter() - start
    print(f"shape {args.shape}: {len(texts)} texts, {n_tokens / len(texts):.1f} tokens a text, {args.threads} threads")
    print(f"| PyTorch {torch.__version__}, batch 1 (the reference's way) | {len(texts) / peer_s:.1f} texts/s | {peer_s:.2f} s |")

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    for batch in [1, 32]:
        cmd = [args.retort, "ood", folder, "--id", files[0][0]]
        for path, _ in files[1:]:
            cmd += ["--ood", path]
        cmd += ["--t", str(t), "--batch", str(batch), "--json"]
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        rate = json.loads(out.stdout)["texts_per_s"]
        print(f"| retort ood --batch {batch} | {rate:.1f} texts/s (scoring) | {wall:.2f} s wall incl. load |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
