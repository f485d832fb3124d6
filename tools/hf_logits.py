#!/usr/bin/env python3
"""Print transformers' logits for a model folder as JSON (the reference for Rust tests).

Usage:  python tools/hf_logits.py DIR < request.json
request.json: {"input_ids": [[...], ...], "attention_mask": [[...], ...]}  (mask optional)
Output:       {"logits": [[[float x V] x L] x B]}   (f32, every position; pad positions too)

Position ids count only real tokens (cumsum of the mask - 1), as for left-padded generation.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_logits.py MODEL_DIR < request.json")
    request = json.load(sys.stdin)
    ids = torch.tensor(request["input_ids"], dtype=torch.long)
    mask = torch.tensor(request.get("attention_mask") or [[1] * ids.shape[1]] * ids.shape[0], dtype=torch.long)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    json.dump({"logits": logits.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
