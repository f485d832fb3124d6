#!/usr/bin/env python3
"""Option scores and perplexity of a model folder with transformers (the reference for
tests/text_eval.rs).

Usage:  python tools/hf_text_scores.py MODEL_DIR [MODEL_DIR ...] < request.json
request.json: {"choice": [{"input": str, "options": [str, ...]}, ...],
               "documents": [str, ...], "max_len": int, "stride": int}
Output:       {"models": [one per MODEL_DIR, in order:
                 {"choice_nll": [[mean NLL per option] per row],
                  "doc_nll": [[NLL sum, scored tokens] per document],
                  "nll": float, "ppl": float, "tokens": int, "bos": bool}]}
(Several folders share one Python start-up, which costs more than scoring a tiny model.)

Choice: the continuation is the tokens of `input + " " + option` past those of `input`
(lm-evaluation-harness's split), after whatever the tokenizer puts in front of an empty text
with special tokens (its BOS, if any); the score is the mean NLL of the continuation tokens.
Perplexity: the strided loop of the transformers perplexity guide, per document (tokenized
with special tokens), the model's own loss over `labels` with the already-scored tokens set to
-100, token-weighted over documents.
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: hf_text_scores.py MODEL_DIR [MODEL_DIR ...] < request.json")
    request = json.load(sys.stdin)
    json.dump({"models": [scores(d, request) for d in sys.argv[1:]]}, sys.stdout)


def scores(model_dir, request):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prefix = tok("", add_special_tokens=True)["input_ids"]

    choice_nll = []
    with torch.no_grad():
        for row in request.get("choice", []):
            context = tok(row["input"], add_special_tokens=False)["input_ids"]
            scores = []
            for option in row["options"]:
                whole = tok(row["input"] + " " + option, add_special_tokens=False)["input_ids"]
                cont = whole[len(context):]
                ids = torch.tensor([prefix + context + cont])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
                start = len(prefix) + len(context)
                total = sum(logp[start + i - 1, t].item() for i, t in enumerate(cont))
                scores.append(-total / len(cont))
            choice_nll.append(scores)

        max_len, stride = request["max_len"], request["stride"]
        doc_nll = []
        for text in request.get("documents", []):
            ids = torch.tensor([tok(text, add_special_tokens=True)["input_ids"]])
            seq_len = ids.shape[1]
            nll_sum, n_tokens, prev_end = 0.0, 0, 0
            for begin in range(0, seq_len, stride):
                end = min(begin + max_len, seq_len)
                trg_len = end - prev_end
                input_ids = ids[:, begin:end]
                target = input_ids.clone()
                target[:, :-trg_len] = -100
                n_valid = int((target[:, 1:] != -100).sum())
                if n_valid > 0:
                    loss = model(input_ids=input_ids, labels=target).loss
                    nll_sum += loss.item() * n_valid
                    n_tokens += n_valid
                prev_end = end
                if end == seq_len:
                    break
            doc_nll.append([nll_sum, n_tokens])

    total = sum(d[0] for d in doc_nll)
    tokens = sum(d[1] for d in doc_nll)
    nll = total / tokens if tokens else float("nan")
    return {"choice_nll": choice_nll, "doc_nll": doc_nll, "nll": nll, "ppl": math.exp(nll), "tokens": tokens, "bos": len(prefix) > 0}


if __name__ == "__main__":
    main()
