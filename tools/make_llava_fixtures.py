#!/usr/bin/env python3
"""Build the tiny LLaVA references in tests/fixtures/vlm/llava_clip/ and llava_siglip/.

Each folder gets config.json, model.safetensors (random f32 weights, norms and biases
perturbed away from 1/0 so a missing one changes the logits), a real preprocessor_config.json,
images and expected.json:

- llava_clip: a CLIP vision tower (class token, pre-layernorm, quick_gelu, 3 layers; LLaVA
  takes layer -2 and drops the class token) and a llama decoder; LlavaImageProcessor with
  pad-to-square (shortest edge 16, crop 16).
- llava_siglip: a SigLIP vision tower (no class token, gelu_pytorch_tanh, pooling head that
  LLaVA ignores), layer -1 with `full` selection, and a qwen2 decoder (qkv biases);
  SiglipImageProcessor (resize to 16×16, mean/std 0.5).

expected.json holds `pixels` (per image: the processor's pixel_values (3, H, W)) and `prompts`:
one image and two images (input ids with the image tokens already expanded, as LlavaProcessor
does), logits at every position, and an 8-token greedy continuation (full re-forward each step).
tests/llava_fixtures.rs reproduces them. The Pillow backend of the processors is used.

Usage:  python tools/make_llava_fixtures.py [FIXTURES_VLM_DIR]   (needs torch, transformers, pillow)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from transformers import LlavaConfig, LlavaForConditionalGeneration
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

IMAGE = 150


def clip_config():
    return LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, image_size=16, patch_size=4, projection_dim=16,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5),
        text_config=dict(model_type="llama", vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False),
        image_token_index=IMAGE, image_seq_length=16, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", tie_word_embeddings=False)


def siglip_config():
    return LlavaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=16, patch_size=4, hidden_act="gelu_pytorch_tanh",
                           layer_norm_eps=1e-6),
        text_config=dict(model_type="qwen2", vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False),
        image_token_index=IMAGE, image_seq_length=16, vision_feature_layer=-1,
        vision_feature_select_strategy="full", projector_hidden_act="gelu", tie_word_embeddings=False)


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and ("norm" in name or "layrnorm" in name):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "class_embedding" in name or "position_embedding" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.12 * torch.randn(p.shape, generator=g))


def make_image(rng, h, w):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8))


def build(out, cfg, proc, images, prompt_parts, seed):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    cfg.dtype = torch.float32
    model = LlavaForConditionalGeneration(cfg).eval()
    perturb(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    gen_cfg = os.path.join(out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    proc.save_pretrained(out)
    rng = np.random.default_rng(seed)
    pixels = {}
    for name, (h, w), kw in images:
        img = make_image(rng, h, w)
        img.save(os.path.join(out, name), **kw)
        img = Image.open(os.path.join(out, name)).convert("RGB")
        pv = proc(images=[img], return_tensors="pt")["pixel_values"][0]
        pixels[name] = {"size": [h, w], "pixel_values": pv.tolist()}
    tokens = cfg.image_seq_length

    def run(ids, used):
        pv = torch.tensor([pixels[u]["pixel_values"] for u in used], dtype=torch.float32)
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids]), pixel_values=pv).logits[0].float()

    prompts = []
    for parts in prompt_parts:
        ids, used = [], []
        for p in parts:
            if isinstance(p, str):
                ids += [IMAGE] * tokens
                used.append(p)
            else:
                ids += p
        logits = run(ids, used)
        seq, margin = list(ids), float("inf")
        for _ in range(8):
            last = run(seq, used)[-1]
            top = torch.topk(last, 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq.append(int(last.argmax()))
        assert margin > 1e-3, f"greedy near-tie (margin {margin}); change the seed"
        prompts.append({"images": used, "input_ids": ids, "logits": logits.tolist(),
                        "greedy_continuation": seq[len(ids):], "greedy_min_margin": margin})
        print(f"{os.path.basename(out)}: prompt with {len(used)} image(s): {len(ids)} tokens, "
              f"greedy {seq[len(ids):]} (margin {margin:.4f})")
    expected = {"source": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
                          f"pillow {Image.__version__}",
                "pixels": pixels, "prompts": prompts}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(out, x)) for x in os.listdir(out))
    print(f"{os.path.basename(out)}: {sum(p.numel() for p in model.parameters())} params, {size} bytes")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm")
    prompts = ([[1, 17, 42], "a.png", [99, 5, 63, 120]], [[1], "a.png", [8, 77], "b.webp", [31, 64, 3]])
    # a.png is already 16×16 and b.webp (lossless) 12×16 pads to 16×16: no resize, so retort must
    # match the processor to float precision; c.jpg and d.png are resized (down and up).
    clip_proc = LlavaImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, do_pad=True)
    build(os.path.join(root, "llava_clip"), clip_config(), clip_proc,
          [("a.png", (16, 16), {}), ("b.webp", (12, 16), {"lossless": True}), ("c.jpg", (37, 53), {"quality": 90}),
           ("d.png", (9, 5), {})], prompts, 21)
    siglip_proc = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    build(os.path.join(root, "llava_siglip"), siglip_config(), siglip_proc,
          [("a.png", (16, 16), {}), ("b.webp", (16, 16), {"lossless": True}), ("c.jpg", (37, 53), {"quality": 90})],
          prompts, 22)


if __name__ == "__main__":
    main()
