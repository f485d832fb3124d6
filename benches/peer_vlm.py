#!/usr/bin/env python3
"""transformers peer of `retort bench vlm`: prefill and decode of a qwen2_vl folder with one
image, eager Qwen2VLForConditionalGeneration in f32 on the same weights and the same inputs.

    python benches/peer_vlm.py --make-image IMG.png [--size 448]      # the benchmark image
    retort bench vlm MODEL --image IMG.png --dump-inputs inputs.json    # ids + pixel values
    python benches/peer_vlm.py MODEL inputs.json [--new-tokens 32] [--threads 2] [--runs 3] [--warmup 1]

The inputs are retort's (token ids and the preprocessed pixel values: transformers' image
processor needs torchvision, which the shared venv lacks; retort's preprocessing is checked
against it in tests/vlm_fixtures.rs). Prefill = a greedy `generate` of 1 token (the tower, the
merger, the LLM's prefill and the first pick); decode tok/s = (N - 1) / (time of a greedy
`generate` of N tokens - prefill), with no stop token (min_new_tokens = N), as retort measures.

Prints one JSON object: {"side", "prompt_tokens", "image_tokens", "new_tokens", "prefill_s",
"decode_tok_s", "prefill_runs", "generate_runs", "peak_rss_mb", "threads", "torch",
"transformers"}.
"""
import argparse
import json
import resource
import statistics
import struct
import sys
import time
import zlib


def make_image(path, size):
    """A size x size RGB PNG (smooth colour ramps and a grid; no PIL needed), unfiltered rows."""
    rows = bytearray()
    for y in range(size):
        rows.append(0)
        for x in range(size):
            g = 255 if (x // 32 + y // 32) % 2 == 0 else 64
            rows += bytes(((x * 255) // (size - 1), g, (y * 255) // (size - 1)))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    print(f"wrote {path}: {size}x{size} RGB PNG")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("inputs", nargs="?")
    ap.add_argument("--make-image")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    if args.make_image:
        make_image(args.make_image, args.size)
        return
    if not (args.model and args.inputs):
        ap.error("give MODEL and INPUTS (or --make-image PATH)")

    import torch
    import transformers
    from transformers import Qwen2VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    model = Qwen2VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    with open(args.inputs) as f:
        req = json.load(f)
    ids = torch.tensor([req["input_ids"]])
    pixels = torch.tensor(req["pixel_values"], dtype=torch.float32)
    grid = torch.tensor(req["image_grid_thw"])
    image_tokens = int((ids == model.config.image_token_id).sum())
    extra = {"mm_token_type_ids": (ids == model.config.image_token_id).int()}

    def run(n):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, image_grid_thw=grid,
                                 max_new_tokens=n, min_new_tokens=n, do_sample=False, **extra)
        assert out.shape[1] - ids.shape[1] == n, out.shape
        return time.perf_counter() - t

    def tower():
        # The vision tower and merger alone, as retort's `tower_s`.
        t = time.perf_counter()
        with torch.no_grad():
            model.get_image_features(pixel_values=pixels, image_grid_thw=grid)
        return time.perf_counter() - t

    prefill, whole, towers = [], [], []
    for i in range(args.warmup + args.runs):
        p, g, tw = run(1), run(args.new_tokens), tower()
        print(f"run {i + 1}: prefill {p:.3f} s (tower {tw:.3f} s), {args.new_tokens} tokens {g:.3f} s{' (warmup)' if i < args.warmup else ''}", file=sys.stderr)
        if i >= args.warmup:
            prefill.append(p)
            whole.append(g)
            towers.append(tw)
    p, g = statistics.median(prefill), statistics.median(whole)
    print(json.dumps({
        "side": "transformers", "prompt_tokens": ids.shape[1], "image_tokens": image_tokens, "new_tokens": args.new_tokens,
        "prefill_s": p, "tower_s": statistics.median(towers), "decode_tok_s": (args.new_tokens - 1) / max(g - p, 1e-9), "prefill_runs": prefill, "generate_runs": whole,
        "peak_rss_mb": peak_rss_mb(), "threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
