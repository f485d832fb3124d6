#!/usr/bin/env python3
"""Tokenize texts with transformers' AutoTokenizer for a model folder (the reference for Rust
tests that retort and transformers agree on a retort-made tokenizer).

Usage:  python tools/hf_tokenize.py DIR < request.json
request.json: {"texts": ["...", ...], "messages": [{"role": ..., "content": ...}, ...],
               "save_to": "DIR" (optional: save the tokenizer there as transformers does)}
Output:       {"class": "...", "ids": [[...], ...], "decoded": ["...", ...],
               "chat": "..." (the chat template with add_generation_prompt, if messages given)}
Texts are encoded without added special tokens, as retort encodes a prompt.
"""
import json
import sys

from transformers import AutoTokenizer


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_tokenize.py MODEL_DIR < request.json")
    request = json.load(sys.stdin)
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    ids = [tok(text, add_special_tokens=False).input_ids for text in request["texts"]]
    out = {"class": type(tok).__name__, "ids": ids, "decoded": [tok.decode(i) for i in ids]}
    if request.get("messages"):
        out["chat"] = tok.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
    if request.get("save_to"):
        tok.save_pretrained(request["save_to"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
