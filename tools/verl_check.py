"""Checks a `retort export verl` folder against verl itself (tests/export_verl.rs).

Request (JSON on stdin):
  {"exports": [{"dir": D, "config_dir": null | C}], "tokenizer": MODEL_DIR, "samples": [JSONL, ...]}

For each export:
1. run.sh is run with PYTHON pointing at a shim that records its argv, so the overrides are
   exactly those run.sh passes. They are composed with verl's trainer config as main_ppo does
   (Hydra compose of `ppo_trainer` from verl's config folder, or from C: the FlowRL fork's
   base, verl 0.4.0). Hydra refuses an override whose key does not exist (unless it is
   appended with `+`); then every overridden value must have its default's type (an integer
   default also takes a float: verl writes float knobs like `entropy_coeff: 0`), the named
   estimator / KL type / aggregation must be ones verl implements, and with verl's own config
   folder, verl's `validate_config` (its dataclasses and batch-size checks) must pass.
2. train.parquet and test.parquet are loaded with verl's RLHFDataset and the tokenizer of
   MODEL_DIR (prompts longer than data.max_prompt_length are filtered by verl, so none may be
   lost), and each prompt's tokens as verl renders it must equal the prompt text's tokens
   (the exports checked here are chat = false: retort feeds the text itself; `"tokens": false`
   skips this for the FlowRL fork, whose verl 0.4.0 has no key for the raw template).
Then reward.py (of the first export) grades every row of the sample files (retort eval
samples, or rows graded by retort's verifiers): its verdicts must equal retort's, one call a
row (verl's naive reward manager) and in one batch (its batch manager); and its format rules
(think/answer, boxed) must give the results of src/train/rl/rewards.rs's unit tests.

Answer (JSON on stdout): per export the override count, the appended keys and the rows seen;
the reward rows compared and the mismatches.
"""

import importlib.util
import json
import os
import stat
import subprocess
import sys
import tempfile


def overrides_of(export_dir, work, model_dir):
    """The argv run.sh gives `python -m verl.trainer.main_ppo`, with MODEL_PATH = the model
    folder (verl's critic config reads its config.json)."""
    dump = os.path.join(work, "argv.json")
    shim = os.path.join(work, "python-shim")
    with open(shim, "w") as f:
        f.write(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({dump!r}, 'w'))\n")
    os.chmod(shim, os.stat(shim).st_mode | stat.S_IEXEC)
    fork = os.path.join(work, "flowrl")
    os.makedirs(os.path.join(fork, "verl"), exist_ok=True)
    env = dict(os.environ, PYTHON=shim, MODEL_PATH=model_dir, FLOWRL_DIR=fork, N_GPUS="1", NNODES="1")
    subprocess.run(["bash", os.path.join(export_dir, "run.sh")], check=True, env=env)
    with open(dump) as f:
        argv = json.load(f)
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"], argv[:2]
    return argv[2:]


def compose(config_dir, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        base = hydra_compose(config_name="ppo_trainer")
        cfg = hydra_compose(config_name="ppo_trainer", overrides=overrides)
    return base, cfg


def kind(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    from omegaconf import DictConfig, ListConfig

    if isinstance(v, (list, ListConfig)):
        return "list"
    if isinstance(v, (dict, DictConfig)):
        return "dict"
    return type(v).__name__


def check_types(base, cfg, overrides):
    from omegaconf import OmegaConf

    appended = []
    for o in overrides:
        key, _, _ = o.partition("=")
        if key.startswith("+"):
            appended.append(key[1:])
            continue
        if OmegaConf.is_missing(base, key):
            continue
        default = OmegaConf.select(base, key, throw_on_missing=False)
        value = OmegaConf.select(cfg, key)
        if default is None:
            continue
        # A float knob whose YAML default is written as an integer (`entropy_coeff: 0`) takes a float.
        if kind(default) != kind(value) and not (kind(default) == "int" and kind(value) == "float"):
            raise AssertionError(f"override {o!r}: verl's default {key} = {default!r} is a {kind(default)}, the export gives a {kind(value)}")
    return appended


def check_values(cfg):
    """The named estimator, KL type and aggregation exist in verl."""
    import torch
    from verl.trainer.ppo import core_algos

    a = cfg.actor_rollout_ref.actor
    core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    mask = torch.ones(1, 2)
    for kl in {a.kl_loss_type, cfg.algorithm.kl_penalty}:
        out = core_algos.kl_penalty(logp, ref, kl_penalty=kl)
        assert torch.isfinite(out).all(), kl
    kwargs = {}
    if a.get("loss_scale_factor") is not None:
        kwargs["loss_scale_factor"] = a.loss_scale_factor
    core_algos.agg_loss(loss_mat=logp, loss_mask=mask, loss_agg_mode=a.loss_agg_mode, **kwargs)


def check_dataset(export_dir, data_cfg, tokenizer, tokens=True):
    from verl.utils.dataset.rl_dataset import RLHFDataset
    import pyarrow.parquet as pq

    seen = {}
    kwargs = dict(data_cfg.get("apply_chat_template_kwargs") or {})
    for split in ("train", "test"):
        path = os.path.join(export_dir, f"{split}.parquet")
        table = pq.read_table(path).to_pylist()
        ds = RLHFDataset(data_files=[path], tokenizer=tokenizer, config=data_cfg)
        assert len(ds) == len(table), f"{path}: verl kept {len(ds)} of {len(table)} rows (prompts over data.max_prompt_length = {data_cfg.max_prompt_length} tokens are dropped)"
        for i, row in enumerate(table):
            item = ds[i]
            assert item["data_source"] == row["data_source"] and item["reward_model"]["ground_truth"] == row["reward_model"]["ground_truth"], (path, i)
            messages = [dict(m) for m in item["raw_prompt"]]
            assert messages == row["prompt"], (path, i, messages, row["prompt"])
            assert item["extra_info"]["split"] == split and item["extra_info"]["index"] == i, (path, i, item["extra_info"])
            if not tokens:
                continue
            verl_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
            if hasattr(verl_ids, "keys"):
                verl_ids = verl_ids["input_ids"]
            text_ids = tokenizer(row["prompt"][0]["content"], add_special_tokens=False)["input_ids"]
            assert list(verl_ids) == list(text_ids), f"{path} row {i}: verl renders {list(verl_ids)}, retort feeds {list(text_ids)}"
            assert len(verl_ids) <= data_cfg.max_prompt_length
        seen[split] = len(table)
    return seen


def check_rewards(reward_py, sample_files):
    spec = importlib.util.spec_from_file_location("exported_reward", reward_py)
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    rows = []
    for path in sample_files:
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    pairs = [reward.sample_to_verl(r) for r in rows]
    responses = [r.get("response", r.get("completion", "")) for r in rows]
    # One call per row, as verl's naive reward manager makes them.
    got = [reward.compute_score(ds, resp, gt, extra_info={"split": "test"}) for (ds, gt), resp in zip(pairs, responses)]
    batched = reward.compute_score([p[0] for p in pairs], responses, [p[1] for p in pairs])
    mismatches = []
    for r, g, b, resp in zip(rows, got, batched, responses):
        want = (bool(r["correct"]), float(r["reward"]))
        if (g["acc"] == 1.0, g["score"]) != want or g != b:
            mismatches.append({"response": resp, "retort": want, "reward.py": g, "batched": b, "id": r.get("id")})
    return {"rows": len(rows), "correct": sum(bool(r["correct"]) for r in rows), "mismatches": mismatches[:20], "mismatch_count": len(mismatches)}


def check_format_rules(reward_py):
    """reward.py's format rules on the cases of src/train/rl/rewards.rs's unit tests."""
    spec = importlib.util.spec_from_file_location("exported_reward_rules", reward_py)
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    ok = ["<think>2+2</think>\n<answer>4</answer>", "  <think>a</think><answer>b</answer>\n"]
    bad = [
        "<answer>4</answer>",
        "<think>x</think><answer>4</answer> done",
        "<think>x</think><think>y</think><answer>4</answer>",
        "<think></answer></think><answer>4",
        "<think> </think><answer>4</answer>",
        "<think>x</think><answer> </answer>",
        "<think>x</think>so<answer>4</answer>",
        "<think>x<answer></think>4</answer>",
    ]
    for t in ok:
        assert reward.think_answer_ok(t), t
    for t in bad:
        assert not reward.think_answer_ok(t), t
    think = {"kind": "think_answer"}
    assert reward.shaped(think, "<think>x</think><answer>4</answer>", True, 1.0) == 1.0
    assert reward.shaped(think, "<think>x</think><answer>5</answer>", False, 0.0) == 0.0
    assert reward.shaped(think, "4", True, 1.0) == 0.0
    boxed = {"kind": "boxed", "correct": 1.0, "wrong": -1.0, "missing": -2.0}
    assert [reward.shaped(boxed, r, c, 0.0) for r, c in [("so \\boxed{4}", True), ("so \\boxed{5}", False), ("I think 4", True)]] == [1.0, -1.0, -2.0]
    other = {"kind": "boxed", "correct": 1.0, "wrong": 0.0, "missing": -0.5}
    assert reward.shaped(other, "x", False, 0.0) == -0.5 and reward.shaped(other, "\\boxed{x}", False, 0.0) == 0.0
    return len(ok) + len(bad) + 7


def main():
    request = json.load(sys.stdin)
    # verl and datasets print progress to stdout; the answer is the only line there.
    answer_to, sys.stdout = sys.stdout, sys.stderr
    import verl
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    own_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    tokenizer = AutoTokenizer.from_pretrained(request["tokenizer"])
    answer = {"verl_version": getattr(verl, "__version__", "?"), "exports": []}
    with tempfile.TemporaryDirectory() as work:
        for e in request["exports"]:
            overrides = overrides_of(e["dir"], work, request["tokenizer"])
            config_dir = e.get("config_dir") or own_dir
            base, cfg = compose(config_dir, overrides)
            appended = check_types(base, cfg, overrides)
            if config_dir == own_dir:
                from verl.trainer.ppo.utils import need_critic, need_reference_policy
                from verl.utils.config import omega_conf_to_dataclass, validate_config

                check_values(cfg)
                validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
                # The sections main_ppo's workers build dataclasses of (verl's own `reward`
                # section does not convert, with or without overrides).
                for section in (cfg.algorithm, cfg.actor_rollout_ref.rollout):
                    omega_conf_to_dataclass(section)
                data_cfg = cfg.data
            else:
                # The fork's config is verl 0.4.0's; the data keys are read by today's RLHFDataset.
                data_only = [o for o in overrides if o.lstrip("+").startswith("data.")]
                data_cfg = compose(own_dir, data_only)[1].data
            rows = check_dataset(e["dir"], data_cfg, tokenizer, tokens=e.get("tokens", True))
            answer["exports"].append({"dir": e["dir"], "overrides": len(overrides), "appended": appended, "rows": rows, "config_dir": config_dir})
    first = request["exports"][0]["dir"]
    answer["reward"] = check_rewards(os.path.join(first, "reward.py"), request["samples"])
    answer["format_rule_cases"] = check_format_rules(os.path.join(first, "reward.py"))
    print(json.dumps(answer), file=answer_to)


if __name__ == "__main__":
    main()
