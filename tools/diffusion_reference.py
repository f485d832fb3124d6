#!/usr/bin/env python3
"""PyTorch reference for retort's diffusion denoiser (research/synth-spec.md §5.2-5.3).

Loads the roberta-shaped tiny model of tests/fixtures/encoders/roberta with transformers'
RobertaForMaskedLM, builds a padded batch of three texts in both padding modes (retort's:
pad id 1 with an attention mask, L_mse / L_T over real positions; the reference code's: ids
padded with 0 = <s>, no mask, L_mse / L_T over every position), draws the noise with a seeded
torch generator, and computes the losses with the formulas written out here in torch:

    x0 = roberta.embeddings(ids); x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    x0_hat = roberta.encoder(x_t + temb(t), mask); logits = lm_head(x0_hat)
    L_mse = mean_{L,d}(x0 - x0_hat)^2, L_T = mean_{L,d}(sqrt(abar_{T-1}) x0)^2 (per row)
    L_round = cross_entropy(logits, labels, ignore_index=-100); total = mean(L_mse + L_T) + L_round

It writes tests/fixtures/diffusion/roberta_losses.json: ids, lengths, t, noise, and per mode
the loss terms and the squared norm of the total loss's gradient on the word embeddings (x0 is
not detached, so it flows through both the input and the target). tests/diffusion.rs must
reproduce them.

Usage: /work/main/.venv/bin/python tools/diffusion_reference.py
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, RobertaForMaskedLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "tests/fixtures/encoders/roberta")
OUT = os.path.join(ROOT, "tests/fixtures/diffusion/roberta_losses.json")
TEXTS = ["the cat sat on the mat", "a dog", "hello world, the quick brown fox"]
T_VALUES = [5, 600, 999]


def schedule():
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None]
    return torch.tensor(np.concatenate([np.cos(args), np.sin(args)], axis=-1), dtype=torch.float32)


def losses(model, ids, attention, real, mse_weight, t, noise, abar):
    model.zero_grad()
    roberta = model.roberta
    x0 = roberta.embeddings(input_ids=ids)
    sa = torch.tensor(np.sqrt(abar[t]), dtype=torch.float32)[:, None, None]
    so = torch.tensor(np.sqrt(1.0 - abar[t]), dtype=torch.float32)[:, None, None]
    x_t = sa * x0 + so * noise
    h0 = x_t + timestep_embedding(t, x0.shape[-1])[:, None, :]
    mask, _ = roberta._create_attention_masks(attention_mask=attention, encoder_attention_mask=None, embedding_output=h0,
                                              encoder_hidden_states=None, cache=None, position_ids=None)
    x0_hat = roberta.encoder(h0, attention_mask=mask).last_hidden_state
    logits = model.lm_head(x0_hat)
    w = mse_weight[:, :, None]
    d = x0.shape[-1]
    mse = (((x0 - x0_hat) ** 2) * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * d)
    last = float(np.sqrt(abar[-1]))
    t_loss = (((last * x0) ** 2) * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * d)
    labels = ids.masked_fill(real == 0, -100)
    round_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    per_row = per_token.sum(1) / real.sum(1)
    total = (mse + t_loss).mean() + round_loss
    total.backward()
    grad = model.roberta.embeddings.word_embeddings.weight.grad
    return {
        "mse": mse.tolist(), "t_loss": t_loss.tolist(), "round": round_loss.item(), "round_per_row": per_row.tolist(),
        "total": total.item(), "word_embedding_grad_sq": float((grad.double() ** 2).sum()),
    }


def main():
    torch.manual_seed(0)
    model = RobertaForMaskedLM.from_pretrained(MODEL, attn_implementation="eager").float()
    model.eval()
    tok = AutoTokenizer.from_pretrained(MODEL)
    rows = [tok(text)["input_ids"] for text in TEXTS]
    lengths = [len(r) for r in rows]
    width = max(lengths)
    real = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn((len(rows), width, model.config.hidden_size), generator=g)
    # Noise at padded positions is zero in retort's batches (each text draws its own length).
    noise = noise * real[:, :, None]
    abar = schedule()
    t = np.array(T_VALUES)
    out = {"texts": TEXTS, "lengths": lengths, "t": T_VALUES, "noise": noise.flatten().tolist(), "hidden": model.config.hidden_size}
    for mode, fill, attend_all in [("masked", model.config.pad_token_id, False), ("reference", 0, True)]:
        ids = torch.tensor([r + [fill] * (width - len(r)) for r in rows])
        attention = torch.ones_like(ids) if attend_all else real.long()
        mse_weight = torch.ones_like(real) if attend_all else real
        out[mode] = {"ids": ids.tolist(), **losses(model, ids, attention, real, mse_weight, t, noise, abar)}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f)
    print(json.dumps({k: out[k] for k in ("masked", "reference")})[:600])


if __name__ == "__main__":
    main()
