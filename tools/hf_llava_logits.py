#!/usr/bin/env python3
"""Print transformers' logits for a llava model folder as JSON (round-trip reference).

Usage:  python tools/hf_llava_logits.py DIR < request.json
request.json: {"input_ids": [...], "pixel_values": [[[[...]]]]}   (one sequence; image tokens
              already expanded; pixel values (images, 3, H, W) as the processor gives)
Output:       {"logits": [[float x V] x L], "missing_keys": [...]}  (tensors transformers had to
              initialise because the folder lacks them)
"""
import json
import sys

import torch
from transformers import LlavaForConditionalGeneration


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_llava_logits.py MODEL_DIR < request.json")
    req = json.load(sys.stdin)
    model, info = LlavaForConditionalGeneration.from_pretrained(sys.argv[1], dtype=torch.float32, output_loading_info=True)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([req["input_ids"]]), pixel_values=torch.tensor(req["pixel_values"], dtype=torch.float32))
    json.dump({"logits": out.logits[0].float().tolist(), "missing_keys": sorted(info["missing_keys"])}, sys.stdout)


if __name__ == "__main__":
    main()
