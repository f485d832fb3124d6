#!/usr/bin/env python3
"""Build the tiny reference models in tests/fixtures/models/ with Hugging Face transformers.

For each supported architecture this writes <name>/{config.json, model.safetensors,
expected.json}: random f32 weights (norm weights and biases perturbed away from 1/0 so a
missing norm or bias changes the logits), a 2-row batch whose second row is left-padded,
the transformers logits at every valid position, and an 8-token greedy continuation.

The Rust tests in tests/model_fixtures.rs load these and must reproduce the numbers.
Usage:  /work/venv/bin/python tools/make_model_fixtures.py [OUT_DIR]
"""
import json
import os
import sys

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)

FIXTURES = {
    # qkv bias (always on in qwen2) and a head tied to the embedding.
    "qwen2_tied": (Qwen2ForCausalLM, Qwen2Config(**COMMON, tie_word_embeddings=True,
                                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # explicit head_dim (32 != 64/4), per-head q/k RMSNorm, untied head.
    "qwen3_qknorm": (Qwen3ForCausalLM, Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=False,
                                                    attention_bias=False,
                                                    rope_parameters={"rope_type": "default", "rope_theta": 1000.0})),
    # GQA, llama3 frequency-dependent rope scaling, bias on q/k/v/o, untied head.
    "llama3_scaled": (LlamaForCausalLM, LlamaConfig(**COMMON, tie_word_embeddings=False, attention_bias=True,
                                                     rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                                      "factor": 8.0, "low_freq_factor": 1.0,
                                                                      "high_freq_factor": 4.0,
                                                                      "original_max_position_embeddings": 64})),
    # no biases, sliding_window larger than the test sequences.
    "mistral": (MistralForCausalLM, MistralConfig(**COMMON, head_dim=16, tie_word_embeddings=False,
                                                   sliding_window=4096,
                                                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
}

# Row 0: 12 real tokens. Row 1: 7 real tokens left-padded with 5 pads (pad id 0).
ROW0 = [1, 17, 42, 99, 5, 63, 120, 8, 77, 31, 64, 3]
ROW1 = [1, 88, 14, 101, 56, 9, 70]
LEN = len(ROW0)


def perturb(model, seed):
    """Weights with a spread big enough that logits differ clearly (std 0.02 gives nearly
    uniform logits and fragile argmax ties); norms around 1 and biases around 0, perturbed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.12 * torch.randn(p.shape, generator=g))


def batch():
    ids = [ROW0, [0] * (LEN - len(ROW1)) + ROW1]
    mask = [[1] * LEN, [0] * (LEN - len(ROW1)) + [1] * len(ROW1)]
    return ids, mask


def logits_for(model, ids, mask):
    ids_t = torch.tensor(ids)
    mask_t = torch.tensor(mask)
    # Positions count only real tokens, as transformers' generate() does for left padding.
    pos = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids_t, attention_mask=mask_t, position_ids=pos).logits.float()


def greedy(model, prompt, steps):
    """Greedy continuation by full re-forward each step; also returns the smallest margin
    between the top two logits, so fragile near-ties can be rejected."""
    seq = list(prompt)
    margin = float("inf")
    for _ in range(steps):
        with torch.no_grad():
            last = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        seq.append(int(last.argmax()))
    return seq[len(prompt):], margin


def build(name, cls, config, out_dir, seed):
    torch.manual_seed(seed)
    config.dtype = torch.float32
    model = cls(config).eval()
    perturb(model, seed)
    ids, mask = batch()
    logits = logits_for(model, ids, mask)
    # The padded row must agree with the same tokens unpadded (a property of the reference).
    alone = logits_for(model, [ROW1], [[1] * len(ROW1)])[0]
    pad = LEN - len(ROW1)
    assert torch.allclose(logits[1, pad:], alone, atol=1e-5), f"{name}: padded row differs"
    cont, margin = greedy(model, ROW0[:6], 8)
    assert margin > 1e-3, f"{name}: greedy near-tie (margin {margin}); change the seed"
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    gen_cfg = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    expected = {
        "source": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}",
        "input_ids": ids,
        "attention_mask": mask,
        # logits[b] lists the logits of row b at its valid positions, in order.
        "logits": [[logits[b, j].tolist() for j in range(LEN) if mask[b][j]] for b in range(2)],
        "greedy_prompt": ROW0[:6],
        "greedy_continuation": cont,
        "greedy_min_margin": margin,
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, {size} bytes, greedy {cont} (margin {margin:.4f})")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")
    for i, (name, (cls, config)) in enumerate(FIXTURES.items()):
        build(name, cls, config, out_dir, seed=1000 + i)


if __name__ == "__main__":
    main()
