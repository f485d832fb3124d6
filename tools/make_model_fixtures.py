#!/usr/bin/env python3
"""Build the tiny reference models in tests/fixtures/ with Hugging Face transformers.

Decoders (tests/fixtures/models/):

For each supported architecture this writes <name>/{config.json, model.safetensors,
expected.json}: random f32 weights (norm weights and biases perturbed away from 1/0 so a
missing norm or bias changes the logits), a 2-row batch whose second row is left-padded,
the transformers logits at every valid position, and an 8-token greedy continuation.

The Rust tests in tests/model_fixtures.rs load these and must reproduce the numbers.

Encoders (tests/fixtures/encoders/): bert (BertForPreTraining: `bert.` prefix, pooler, MLM and
NSP heads, erf GELU), roberta (RobertaForMaskedLM: `roberta.` prefix, MLM head, no pooler,
tanh GELU in the layers, one left-padded row), bert_bare (BertModel saved without prefix, only
a pooler, as sentence-transformers checkpoints are; ReLU). Each folder holds config.json,
model.safetensors, a tiny trained tokenizer (WordPiece for bert, byte-level BPE for roberta)
and expected.json: a padded batch of three texts with its input ids, attention mask, token
type ids, and transformers' last hidden state, pooled output and MLM logits at the valid
positions. tests/encoder.rs reproduces them.

Usage:  /work/venv/bin/python tools/make_model_fixtures.py [OUT_DIR] [--only decoders|encoders]
        (OUT_DIR is the decoders' folder; encoders go to its sibling `encoders/`)
"""
import functools
import json
import os
import sys

import torch
from transformers import (BertConfig, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, RobertaConfig)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)

FIXTURES = {
    # qkv bias (always on in qwen2) and a head tied to the embedding.
    "qwen2_tied": (Qwen2ForCausalLM, Qwen2Config(**COMMON, tie_word_embeddings=True,
                                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # explicit head_dim (32 != 64/4), per-head q/k RMSNorm, untied head.
    "qwen3_qknorm": (Qwen3ForCausalLM, Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=False,
                                                    attention_bias=False,
                                                    rope_parameters={"rope_type": "default", "rope_theta": 1000.0})),
    # GQA, llama3 frequency-dependent rope scaling, bias on q/k/v/o, untied head.
    "llama3_scaled": (LlamaForCausalLM, LlamaConfig(**COMMON, tie_word_embeddings=False, attention_bias=True,
                                                     rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                                      "factor": 8.0, "low_freq_factor": 1.0,
                                                                      "high_freq_factor": 4.0,
                                                                      "original_max_position_embeddings": 64})),
    # no biases, sliding_window larger than the test sequences.
    "mistral": (MistralForCausalLM, MistralConfig(**COMMON, head_dim=16, tie_word_embeddings=False,
                                                   sliding_window=4096,
                                                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
}

# Row 0: 12 real tokens. Row 1: 7 real tokens left-padded with 5 pads (pad id 0).
ROW0 = [1, 17, 42, 99, 5, 63, 120, 8, 77, 31, 64, 3]
ROW1 = [1, 88, 14, 101, 56, 9, 70]
LEN = len(ROW0)


def perturb(model, seed):
    """Weights with a spread big enough that logits differ clearly (std 0.02 gives nearly
    uniform logits and fragile argmax ties); norms around 1 and biases around 0, perturbed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.12 * torch.randn(p.shape, generator=g))


def batch():
    ids = [ROW0, [0] * (LEN - len(ROW1)) + ROW1]
    mask = [[1] * LEN, [0] * (LEN - len(ROW1)) + [1] * len(ROW1)]
    return ids, mask


def logits_for(model, ids, mask):
    ids_t = torch.tensor(ids)
    mask_t = torch.tensor(mask)
    # Positions count only real tokens, as transformers' generate() does for left padding.
    pos = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids_t, attention_mask=mask_t, position_ids=pos).logits.float()


def greedy(model, prompt, steps):
    """Greedy continuation by full re-forward each step; also returns the smallest margin
    between the top two logits, so fragile near-ties can be rejected."""
    seq = list(prompt)
    margin = float("inf")
    for _ in range(steps):
        with torch.no_grad():
            last = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        seq.append(int(last.argmax()))
    return seq[len(prompt):], margin


def build(name, cls, config, out_dir, seed):
    torch.manual_seed(seed)
    config.dtype = torch.float32
    model = cls(config).eval()
    perturb(model, seed)
    ids, mask = batch()
    logits = logits_for(model, ids, mask)
    # The padded row must agree with the same tokens unpadded (a property of the reference).
    alone = logits_for(model, [ROW1], [[1] * len(ROW1)])[0]
    pad = LEN - len(ROW1)
    assert torch.allclose(logits[1, pad:], alone, atol=1e-5), f"{name}: padded row differs"
    cont, margin = greedy(model, ROW0[:6], 8)
    assert margin > 1e-3, f"{name}: greedy near-tie (margin {margin}); change the seed"
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    gen_cfg = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    expected = {
        "source": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}",
        "input_ids": ids,
        "attention_mask": mask,
        # logits[b] lists the logits of row b at its valid positions, in order.
        "logits": [[logits[b, j].tolist() for j in range(LEN) if mask[b][j]] for b in range(2)],
        "greedy_prompt": ROW0[:6],
        "greedy_continuation": cont,
        "greedy_min_margin": margin,
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, {size} bytes, greedy {cont} (margin {margin:.4f})")


# ---------------------------------------------------------------- encoders

ENC_CORPUS = [
    "The cat sat on the mat. A dog ran in the park!",
    "The quick brown fox jumps over the lazy dog.",
    "Is this a test? Yes, it is a test.",
    "Models read text and write numbers; retort loads BERT and RoBERTa encoders.",
    "Sentences of different lengths are padded, and padding must not change the others.",
] * 5

# Three texts of different lengths; the second is a sentence pair for bert (its second
# segment has token type 1). Every character appears in ENC_CORPUS.
ENC_TEXTS = [
    ("The quick brown fox jumps over the lazy dog, and the cat sat.", None),
    ("Is this a test?", "Yes, it is."),
    ("A dog ran.", None),
]

ENC_COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=48, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@functools.lru_cache(maxsize=None)
def wordpiece_tokenizer():
    """Trained once per run, so bert and bert_bare share one vocabulary (training breaks ties
    between equally frequent pairs differently from run to run)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(ENC_CORPUS, trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return tok, specials


@functools.lru_cache(maxsize=None)
def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Printable ASCII in the byte-level alphabet (space is "Ġ"), so no test character is dropped.
    alphabet = [chr(c) for c in range(33, 127)] + ["Ġ"]
    tok.train_from_iterator(ENC_CORPUS, trainers.BpeTrainer(
        vocab_size=160, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], initial_alphabet=alphabet))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)
    specials = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>",
                    sep_token="</s>", mask_token="<mask>")
    return tok, specials


def bert_config(vocab, act):
    return BertConfig(vocab_size=vocab, type_vocab_size=2, hidden_act=act, layer_norm_eps=1e-12, pad_token_id=0,
                      **ENC_COMMON)


def roberta_config(vocab, act):
    return RobertaConfig(vocab_size=vocab, type_vocab_size=1, hidden_act=act, layer_norm_eps=1e-5, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2, **ENC_COMMON)


# name: (model class, config maker, hidden_act, tokenizer maker, base-model attribute, left-padded rows)
ENCODERS = {
    "bert": ("BertForPreTraining", bert_config, "gelu", wordpiece_tokenizer, "bert", []),
    "roberta": ("RobertaForMaskedLM", roberta_config, "gelu_new", bpe_tokenizer, "roberta", [2]),
    "bert_bare": ("BertModel", bert_config, "relu", wordpiece_tokenizer, None, []),
}


def perturb_encoder(model, seed):
    """As `perturb`, for encoder names: LayerNorm weights near 1, biases near 0, the rest 0.12·N(0,1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name.lower().replace("_", "") and name.endswith(".weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.12 * torch.randn(p.shape, generator=g))


def r7(values):
    """Floats at f32 precision, to keep the JSON small."""
    return [float(f"{v:.7g}") for v in values]


def build_encoder(name, out_dir, seed):
    import transformers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    cls_name, make_config, act, make_tok, base, left_rows = ENCODERS[name]
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    tok, specials = make_tok()
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(path)
    hf_tok = AutoTokenizer.from_pretrained(path)

    config = make_config(tok.get_vocab_size(), act)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    perturb_encoder(model, seed)

    pad = config.pad_token_id
    rows = []
    for a, b in ENC_TEXTS:
        pair = (a, b) if (b is not None and config.type_vocab_size > 1) else (a,)
        enc = hf_tok(*pair, return_token_type_ids=True)
        types = enc["token_type_ids"]
        rows.append((enc["input_ids"], types))
    length = max(len(ids) for ids, _ in rows)
    ids, mask, types = [], [], []
    for r, (row_ids, row_types) in enumerate(rows):
        n = length - len(row_ids)
        if r in left_rows:
            ids.append([pad] * n + row_ids), mask.append([0] * n + [1] * len(row_ids)), types.append([0] * n + row_types)
        else:
            ids.append(row_ids + [pad] * n), mask.append([1] * len(row_ids) + [0] * n), types.append(row_types + [0] * n)

    base_model = getattr(model, base) if base else model

    def run(ids, mask, types):
        args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
        with torch.no_grad():
            out = base_model(**args)
            logits = None
            if base is not None:
                full = model(**args)
                logits = full.prediction_logits if hasattr(full, "prediction_logits") else full.logits
        return out.last_hidden_state, out.pooler_output, logits

    hidden, pooled, logits = run(ids, mask, types)
    # Each row must agree with itself unpadded (a property of the reference: padding is masked,
    # and roberta's positions count only real tokens, so its left-padded row agrees too).
    for r, (row_ids, row_types) in enumerate(rows):
        alone, _, _ = run([row_ids], [[1] * len(row_ids)], [row_types])
        valid = torch.tensor(mask[r]).bool()
        assert torch.allclose(hidden[r][valid], alone[0], atol=1e-5), f"{name}: padded row {r} differs"

    model.save_pretrained(path, safe_serialization=True)
    gen_cfg = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    valid_rows = lambda t: [[r7(t[b, j].tolist()) for j in range(length) if mask[b][j]] for b in range(len(rows))]
    expected = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "texts": [list(t) for t in ENC_TEXTS],
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "heads": {"pooler": pooled is not None, "mlm": logits is not None},
        # Per row, the values at its valid positions in order.
        "hidden": valid_rows(hidden),
        "pooled": None if pooled is None else [r7(p.tolist()) for p in pooled],
        "mlm_logits": None if logits is None else valid_rows(logits),
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, vocab {config.vocab_size}, "
          f"batch {len(rows)}x{length}, {size} bytes")


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        at = args.index("--only")
        only = args[at + 1]
        del args[at:at + 2]
    out_dir = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")
    if only in (None, "decoders"):
        for i, (name, (cls, config)) in enumerate(FIXTURES.items()):
            build(name, cls, config, out_dir, seed=1000 + i)
    if only in (None, "encoders"):
        enc_dir = os.path.join(os.path.dirname(os.path.abspath(out_dir)), "encoders")
        for i, name in enumerate(ENCODERS):
            build_encoder(name, enc_dir, seed=2000 + i)


if __name__ == "__main__":
    main()
