#!/usr/bin/env python3
"""The Python side of a ToEdit speed comparison: the reference's per-document pass done with a
Hugging Face forward (full-vocabulary log-softmax, top-k per position, the p >= threshold
resample from softmax(lp / beta) over the top-k plus the actual token), over the same
documents and prior as `retort synth toedit`, on N threads.

    python benches/peer_toedit.py PRIOR_DIR corpus.jsonl [--threads 2] [--batch-size 8]
        [--max-len 2048] [--top-k 8] [--threshold 0.99] [--beta 1.0] [--limit 0]

Compare with
    time retort synth toedit corpus.jsonl --prior PRIOR_DIR --out /tmp/e --headless
and its stats.json (`toedit.generations[0].tokens` over the wall time).

Prints one JSON line: documents, tokens, eligible, realized, seconds, tokens_per_s, threads.
Tokenizing and decoding are timed with the pass (the reference's loop does all three).
"""
import argparse
import json
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def documents(path, key, limit):
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            text = json.loads(line).get(key)
            if isinstance(text, str) and text.strip():
                yield text
                n += 1
                if limit and n >= limit:
                    return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prior")
    ap.add_argument("corpus")
    ap.add_argument("--text-key", default="text")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    tok = AutoTokenizer.from_pretrained(args.prior)
    model = AutoModelForCausalLM.from_pretrained(args.prior, torch_dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    docs = list(documents(args.corpus, args.text_key, args.limit))
    tokens = eligible = realized = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(docs), args.batch_size):
            batch = [tok(t, truncation=True, max_length=args.max_len)["input_ids"] for t in docs[b : b + args.batch_size]]
            width = max(len(x) for x in batch)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            top_lp, top_id = logp.topk(args.top_k, dim=-1)
            for r, x in enumerate(batch):
                out = [x[0]]
                tokens += len(x)
                for i in range(1, len(x)):
                    lp = logp[r, i - 1, x[i]].item()
                    if np.exp(lp) >= args.threshold:
                        eligible += 1
                        cand = top_id[r, i - 1].tolist()
                        clp = top_lp[r, i - 1].tolist()
                        if x[i] not in cand:
                            cand.append(x[i])
                            clp.append(lp)
                        w = np.exp(np.array(clp) / args.beta)
                        y = int(rng.choice(cand, p=w / w.sum()))
                        realized += y != x[i]
                        out.append(y)
                    else:
                        out.append(x[i])
                tok.decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"documents": len(docs), "tokens": tokens, "eligible": eligible, "realized": realized, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9), "threads": args.threads}))


if __name__ == "__main__":
    main()
