#!/usr/bin/env python3
"""Build the tiny Qwen2-VL reference in tests/fixtures/vlm/qwen2_vl/ with transformers.

Writes config.json, model.safetensors (random f32 weights, norms and biases perturbed away
from 1/0 so a missing one changes the logits), preprocessor_config.json (a real
Qwen2VLImageProcessor config with a small patch size), four images and expected.json:

- `pixels`: per image, transformers' processor output (pixel_values rows, image_grid_thw).
  a.png and b.webp (lossless) already meet smart_resize, so they only rescale, normalise and
  patchify: retort must match to float precision. c.jpg and d.png are resized (down and up).
- `prompts`: a prompt with one image and one with two (input ids with the image pads already
  expanded, as the processor does), transformers' logits at every position, M-RoPE position
  ids, and an 8-token greedy continuation of the two-image prompt (full re-forward each step).

tests/vlm_fixtures.rs reproduces them. The Pillow backend of the image processor is used
(torchvision is not installed), so the reference resize is PIL's bicubic.

Usage:  python tools/make_vlm_fixtures.py [OUT_DIR]   (needs torch, transformers, pillow)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

IMAGE, VIDEO, V_START, V_END = 150, 151, 152, 153


def config():
    return Qwen2VLConfig(
        text_config=dict(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
                         # head_dim 16: 8 frequencies split 4 temporal, 2 height, 2 width.
                         rope_parameters={"rope_type": "default", "mrope_section": [4, 2, 2], "rope_theta": 10000.0}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=V_START, vision_end_token_id=V_END,
        tie_word_embeddings=False)


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and ("norm" in name or "ln_q" in name):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.12 * torch.randn(p.shape, generator=g))


def images(out, seed):
    """Smooth random images (a gradient plus noise) so resizing has something to interpolate."""
    rng = np.random.default_rng(seed)

    def make(h, w):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)], -1)
        return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)

    Image.fromarray(make(24, 32)).save(os.path.join(out, "a.png"))
    Image.fromarray(make(16, 24)).save(os.path.join(out, "b.webp"), lossless=True)
    Image.fromarray(make(37, 53)).save(os.path.join(out, "c.jpg"), quality=90)
    Image.fromarray(make(5, 9)).save(os.path.join(out, "d.png"))
    return ["a.png", "b.webp", "c.jpg", "d.png"]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm", "qwen2_vl")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(21)
    cfg = config()
    cfg.dtype = torch.float32
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    perturb(model, 21)
    model.save_pretrained(out, safe_serialization=True)
    gen_cfg = os.path.join(out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    proc = Qwen2VLImageProcessorPil(min_pixels=64, max_pixels=1024, patch_size=4, temporal_patch_size=2, merge_size=2)
    proc.save_pretrained(out)

    names = images(out, 21)
    pixels = {}
    for name in names:
        img = Image.open(os.path.join(out, name)).convert("RGB")
        feat = proc(images=[img], return_tensors="pt")
        pixels[name] = {"size": [img.height, img.width], "grid_thw": feat["image_grid_thw"][0].tolist(),
                        "pixel_values": feat["pixel_values"].tolist()}

    def prompt_ids(parts):
        ids, used = [], []
        for p in parts:
            if isinstance(p, str):
                t, h, w = pixels[p]["grid_thw"]
                ids += [V_START] + [IMAGE] * (t * h * w // 4) + [V_END]
                used.append(p)
            else:
                ids += p
        return ids, used

    def run(ids, used):
        pv = torch.tensor(np.concatenate([pixels[u]["pixel_values"] for u in used]), dtype=torch.float32)
        grid = torch.tensor([pixels[u]["grid_thw"] for u in used])
        ids_t = torch.tensor([ids])
        types = (ids_t == IMAGE).int()
        with torch.no_grad():
            logits = model(input_ids=ids_t, pixel_values=pv, image_grid_thw=grid, mm_token_type_ids=types).logits[0].float()
            pos, delta = model.model.get_rope_index(ids_t, types, image_grid_thw=grid)
        return logits, pos[:, 0].tolist(), int(delta[0, 0])

    prompts = []
    for parts in ([[1, 17, 42], "a.png", [99, 5, 63, 120]], [[1], "a.png", [8, 77], "b.webp", [31, 64, 3]]):
        ids, used = prompt_ids(parts)
        logits, pos, delta = run(ids, used)
        seq, margin = list(ids), float("inf")
        for _ in range(8):
            last = run(seq, used)[0][-1]
            top = torch.topk(last, 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq.append(int(last.argmax()))
        assert margin > 1e-3, f"greedy near-tie (margin {margin}); change the seed"
        prompts.append({"images": used, "input_ids": ids, "position_ids": pos, "rope_delta": delta,
                        "logits": logits.tolist(), "greedy_continuation": seq[len(ids):], "greedy_min_margin": margin})
        print(f"prompt with {len(used)} image(s): {len(ids)} tokens, greedy {seq[len(ids):]} (margin {margin:.4f})")

    expected = {"source": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
                          f"pillow {Image.__version__}",
                "pixels": pixels, "prompts": prompts}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(out, x)) for x in os.listdir(out))
    print(f"qwen2_vl: {sum(p.numel() for p in model.parameters())} params, {size} bytes in {out}")


if __name__ == "__main__":
    main()
