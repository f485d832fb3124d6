#!/usr/bin/env python3
"""Print transformers' logits for a qwen2_vl model folder as JSON (round-trip reference).

Usage:  python tools/hf_vlm_logits.py DIR < request.json
request.json: {"input_ids": [...], "pixel_values": [[...], ...], "image_grid_thw": [[t, h, w], ...]}
              (one sequence; image pad tokens already expanded; pixel rows as the processor gives)
Output:       {"logits": [[float x V] x L]}
"""
import json
import sys

import torch
from transformers import Qwen2VLForConditionalGeneration


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_vlm_logits.py MODEL_DIR < request.json")
    req = json.load(sys.stdin)
    model = Qwen2VLForConditionalGeneration.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
    ids = torch.tensor([req["input_ids"]])
    types = (ids == model.config.image_token_id).int()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=torch.tensor(req["pixel_values"], dtype=torch.float32),
                    image_grid_thw=torch.tensor(req["image_grid_thw"]), mm_token_type_ids=types)
    json.dump({"logits": out.logits[0].float().tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
