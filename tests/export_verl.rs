//! `retort export verl`: the Parquet rows against the run that made the same problems, the
//! files an export writes, and — with verl installed from PyPI — verl itself: the run.sh
//! overrides composed with verl's trainer config (every key exists, every type matches,
//! verl's own validation passes), the Parquet loaded with verl's RLHFDataset and the model's
//! tokenizer, and reward.py's verdicts equal to retort's on an eval's saved samples and on
//! responses graded by retort's task verifiers.
//!
//! The verl checks need a Python with torch and transformers ($RETORT_PYTHON, else
//! .venv/bin/python) and the network or a warm cache: tools/verl_env.sh builds a venv with
//! verl 0.9.1 in $RETORT_TEST_CACHE (else the target folder's tmp/test-cache), or
//! $RETORT_VERL_PYTHON names one. Without them the test prints SKIPPED and passes, except
//! in CI (`CI=true`), where .ci/run installs verl and a skip is a failure.

use retort::export::verl::parquet::read_rows;
use retort::rng::Rng;
use retort::tasks::Instance;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn retort(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_retort")).args(args).current_dir(cwd).env_remove("RETORT_RUNS_DIR").output().unwrap();
    assert!(
        out.status.success(),
        "retort {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const PREFIX: &str = r#"
[run]
name = "verl-export"
seed = 3

[[stage]]
kind = "model-init"
name = "init"
preset = "tiny"

[[stage]]
kind = "tasks"
name = "data"
task = "countdown"
train = 40
test = 12

[stage.options]
min_numbers = 3
max_numbers = 4
max_target = 30
min_solutions = 3
"#;

/// Evaluates the (untrained) tiny model on the test split: samples.jsonl to grade again.
const EVAL: &str = r#"
[[stage]]
kind = "eval"
name = "eval"
models = ["@init"]
from = "@data"
n = 8
k = [1, 8]
temperature = 1.0
max_new_tokens = 16
"#;

const RL: &str = r#"
[[stage]]
kind = "rl"
name = "grpo"
model = "@init"
from = "@data"
prompts_per_step = 4
group_size = 4
mini_batch = 2
micro_batch = 4
steps = 3
max_new_tokens = 16
eval_every = 2
eval_problems = 12
eval_n = 4
eval_k = [1, 4]
checkpoint_every = 2
lr = 1e-5
warmup_steps = 1
clip_high = 0.28
kl_coef = 0.001
kl_estimator = "k3"
entropy_coeff = 0.001
overlong = { buffer = 4, penalty = 0.5 }

[[stage]]
kind = "rl"
name = "flowrl"
model = "@init"
from = "@data"
algorithm = "flowrl"
prompts_per_step = 4
group_size = 4
steps = 2
max_new_tokens = 16
eval_every = 0
eval_problems = 12
eval_n = 4
eval_k = [1, 4]
checkpoint_every = 2
z_layers = 2
z_lr = 10.0
"#;

/// The one run folder under `runs`.
fn only_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn instances(path: &Path) -> Vec<Instance> {
    retort::tasks::read_instances(path).unwrap()
}

/// Every row against the instance the run's tasks stage wrote at the same index.
fn assert_rows_match(parquet: &Path, split: &str, expected: &[Instance]) {
    let rows = read_rows(parquet).unwrap();
    assert_eq!(rows.len(), expected.len(), "{}", parquet.display());
    for (i, (row, inst)) in rows.iter().zip(expected).enumerate() {
        assert_eq!(row.data_source, "retort/countdown");
        assert_eq!(row.ability, "countdown");
        assert_eq!(row.style, "rule");
        assert_eq!((row.split.as_str(), row.index, row.id.as_str()), (split, i as i64, inst.id.as_str()));
        assert_eq!(row.prompt.len(), 1);
        assert_eq!((row.prompt[0].role.as_str(), row.prompt[0].content.as_str()), ("user", inst.prompt.as_str()));
        let truth: Value = serde_json::from_str(&row.ground_truth).unwrap();
        assert_eq!(truth, inst.data, "row {i}");
    }
}

/// Responses to instances of every built-in task, each with retort's verdict: the task's
/// own solutions and wrong answers, then edits that probe the grammar (spaces, claims,
/// brackets, overflow, Unicode white space, stray text).
fn graded_rows(seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for name in ["countdown", "arithmetic", "subset-sum"] {
        let mut options = toml::Table::new();
        if name == "countdown" {
            options.insert("allow_division".into(), toml::Value::Boolean(true));
        }
        let task = retort::tasks::build(name, &options).unwrap();
        for _ in 0..12 {
            let inst = task.generate(&mut rng);
            let mut responses: Vec<String> = Vec::new();
            for s in task.solutions(&inst).unwrap().iter().take(4) {
                responses.push(task.render_solution(&inst, s));
            }
            for _ in 0..3 {
                responses.push(task.wrong_response(&inst, &mut rng));
            }
            let base = responses.clone();
            let target = inst.data.get("target").and_then(|t| t.as_i64()).unwrap_or(7);
            for r in &base {
                responses.push(format!(" {} ", r.replace('+', " + ")));
                responses.push(format!("{r}={target}"));
                responses.push(format!("{r} = {}", target + 1));
                responses.push(format!("({r})"));
                responses.push(format!("{r}\u{a0}"));
                responses.push(format!("\u{a0}{r}"));
                responses.push(format!("{r}\u{b}"));
                responses.push(format!("{r}."));
                responses.push(format!("{r} => {target}"));
                responses.push(r.replacen(char::is_numeric, "", 1));
                responses.push(format!("{r}*1"));
                responses.push(format!("{r}/1"));
                responses.push(format!("{r}+0"));
            }
            responses.extend(
                [
                    "",
                    "   ",
                    "\u{3000}",
                    "99999999999999999999",
                    "9223372036854775807+1",
                    "9223372036854775807*9223372036854775807",
                    "=> 9223372036854775808",
                    "=> 0123",
                    "=>",
                    "1+",
                    "((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))",
                    "(((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))",
                    "1/0",
                    "٣+4",
                ]
                .map(String::from),
            );
            for response in responses {
                let v = task.verify(&inst, &response);
                out.push(json!({
                    "id": inst.id, "task": inst.task, "prompt": inst.prompt, "data": inst.data,
                    "response": response, "correct": v.correct, "reward": v.reward, "reason": v.reason,
                }));
            }
        }
    }
    // Math: reward.py hands these to `retort reward test`; the verdicts come from the library.
    let math = [
        ("2", &["\\boxed{2}", "The answer is 2.", "so 1+1 = 3", "#### 2", "x"][..]),
        ("\\frac34", &["\\boxed{0.75}", "Answer: 3/4", "\\boxed{\\frac{3}{4}}", "\\boxed{4/3}", "it is $\\dfrac34$"][..]),
        ("(1, 2)", &["\\boxed{(1,2)}", "\\boxed{(2,1)}", "The answer is $[1,2]$"][..]),
    ];
    for (gold, completions) in math {
        for c in completions {
            let v = retort::tasks::math::verify_math(c, gold, &Default::default());
            let reward = if v.correct { 1.0 } else { 0.0 };
            out.push(json!({"id": "math", "gold": gold, "prompt": "", "response": c, "correct": v.correct, "reward": reward}));
        }
    }
    out
}

fn cache_dir() -> PathBuf {
    match std::env::var("RETORT_TEST_CACHE") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-cache"),
    }
}

/// Skips with a reason; in CI, where .ci/run installs verl, a skip is a failure.
fn skip(reason: &str) {
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI must run the verl checks, but: {reason}");
    eprintln!("SKIPPED: {reason}");
}

/// A python with verl (and the FlowRL fork's base config folder), installing it into the
/// test cache when needed: (python, verl 0.4.0 config folder).
fn verl_python() -> Result<(String, PathBuf), String> {
    let works = |py: &str| Command::new(py).args(["-c", "import verl, hydra, torch, transformers"]).output().map(|o| o.status.success()).unwrap_or(false);
    if let Ok(py) = std::env::var("RETORT_VERL_PYTHON") {
        let venv = Path::new(&py).parent().and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_default();
        return if works(&py) { Ok((py, venv.join("verl-0.4.0-config"))) } else { Err(format!("RETORT_VERL_PYTHON={py} cannot import verl")) };
    }
    let base = match std::env::var("RETORT_PYTHON") {
        Ok(p) => p,
        Err(_) => manifest().join(".venv/bin/python").display().to_string(),
    };
    let has_torch = Command::new(&base).args(["-c", "import torch, transformers"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !has_torch {
        return Err(format!("no python with torch + transformers at {base} (set RETORT_PYTHON)"));
    }
    let venv = cache_dir().join("verl-venv");
    let out = Command::new("bash").arg(manifest().join("tools/verl_env.sh")).arg(&venv).arg(&base).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("installing verl into {} failed (offline?): {}", venv.display(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    let py = venv.join("bin/python").display().to_string();
    if !works(&py) {
        return Err(format!("{py} cannot import verl after install"));
    }
    Ok((py, venv.join("verl-0.4.0-config")))
}

#[test]
fn export_matches_the_run_and_verl_accepts_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::write(root.join("run.toml"), format!("{PREFIX}{EVAL}")).unwrap();
    std::fs::write(root.join("export.toml"), format!("{PREFIX}{RL}")).unwrap();
    retort(&["run", "run.toml", "--headless", "--runs-dir", "runs"], root);
    let run = only_run(&root.join("runs"));
    let train = instances(&run.join("data/train.jsonl"));
    let test = instances(&run.join("data/test.jsonl"));

    // Without --run the tasks stage is drawn again from the seed: the run's instances.
    let out = retort(&["export", "verl", "export.toml", "--out", "fresh"], root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stage `grpo` for verl 0.9.1: 40 train / 12 test rows"), "{stdout}");
    assert!(stdout.contains("stage `flowrl` for the FlowRL fork of verl"), "{stdout}");
    for stage in ["grpo", "flowrl"] {
        assert_rows_match(&root.join("fresh").join(stage).join("train.parquet"), "train", &train);
        assert_rows_match(&root.join("fresh").join(stage).join("test.parquet"), "test", &test);
    }
    // A second export into the same folder needs --force.
    let again = Command::new(env!("CARGO_BIN_EXE_retort")).args(["export", "verl", "export.toml", "--out", "fresh"]).current_dir(root).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", String::from_utf8_lossy(&again.stderr));

    // Mistakes get a message that names the way out.
    let err = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_retort")).args(args).current_dir(root).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["export", "verl", "run.toml", "--out", "none"]);
    assert!(e.contains("has no rl stage"), "{e}");
    let e = err(&["export", "verl", "export.toml", "--out", "none", "--stage", "ppo"]);
    assert!(e.contains("the profile's rl stages are grpo, flowrl"), "{e}");

    // With --run: the same rows, and the starting model is the run's folder.
    retort(&["export", "verl", "export.toml", "--out", "fromrun", "--run", run.to_str().unwrap()], root);
    let grpo = root.join("fromrun/grpo");
    let flowrl = root.join("fromrun/flowrl");
    assert_rows_match(&grpo.join("train.parquet"), "train", &train);
    let run_sh = std::fs::read_to_string(grpo.join("run.sh")).unwrap();
    let init = std::path::absolute(run.join("init/model")).unwrap();
    assert!(run_sh.contains(&format!("MODEL_PATH=\"${{MODEL_PATH:-{}", init.display())), "{run_sh}");
    for want in [
        "'actor_rollout_ref.rollout.n=4'",
        "'data.train_batch_size=4'",
        "'actor_rollout_ref.actor.ppo_mini_batch_size=2'",
        "'actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4'",
        "'actor_rollout_ref.actor.clip_ratio_low=0.2'",
        "'actor_rollout_ref.actor.clip_ratio_high=0.28'",
        "'actor_rollout_ref.actor.use_kl_loss=True'",
        "'actor_rollout_ref.actor.kl_loss_type=low_var_kl'",
        "'actor_rollout_ref.actor.kl_loss_coef=0.001'",
        "'actor_rollout_ref.actor.optim.lr=1e-5'",
        "'actor_rollout_ref.actor.optim.lr_warmup_steps=1'",
        "'actor_rollout_ref.actor.entropy_coeff=0.001'",
        "'actor_rollout_ref.actor.loss_agg_mode=token-mean'",
        "'algorithm.adv_estimator=grpo'",
        "'trainer.total_training_steps=3'",
        // 40 problems / 4 per step = 10 steps an epoch: one epoch covers 3 steps.
        "'trainer.total_epochs=1'",
        "'trainer.save_freq=2'",
        "'trainer.test_freq=2'",
        "'+reward.reward_kwargs.overlong_buffer_cfg.len=4'",
        "'+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=0.5'",
        "custom_reward_function.path=\"$HERE/reward.py\"",
    ] {
        assert!(run_sh.contains(want), "run.sh lacks {want}:\n{run_sh}");
    }
    let readme = std::fs::read_to_string(flowrl.join("README.md")).unwrap();
    for want in ["| `z_lr` | `10.0` |", "| `chat` | `false` |", "porj_layer=2", "6059a0be239a0fd07bffde867f722d3f39ca2099"] {
        assert!(readme.contains(want), "the FlowRL README lacks {want}:\n{readme}");
    }
    let flowrl_sh = std::fs::read_to_string(flowrl.join("run.sh")).unwrap();
    assert!(flowrl_sh.contains("'+actor_rollout_ref.actor.porj_layer=2'") && flowrl_sh.contains("FLOWRL_DIR"), "{flowrl_sh}");

    // Rows graded by retort (the eval's samples, and the task verifiers on crafted responses).
    let samples = run.join("eval/samples-init.jsonl");
    assert!(samples.is_file(), "the eval stage wrote no samples-init.jsonl");
    let graded = root.join("graded.jsonl");
    let rows = graded_rows(11);
    std::fs::write(&graded, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let correct = rows.iter().filter(|r| r["correct"] == json!(true)).count();
    eprintln!("crafted rows: {} ({correct} correct)", rows.len());
    assert!(correct > 50 && correct < rows.len() - 50, "{correct} of {} crafted responses are correct: too one-sided to compare verdicts", rows.len());

    let (python, fork_config) = match verl_python() {
        Ok(p) => p,
        Err(reason) => return skip(&reason),
    };
    let request = json!({
        "exports": [
            {"dir": grpo, "config_dir": null},
            {"dir": flowrl, "config_dir": fork_config, "tokens": false},
        ],
        "tokenizer": run.join("init/model"),
        "samples": [samples, graded],
    });
    let mut child = Command::new(&python)
        .arg(manifest().join("tools/verl_check.py"))
        .env("RETORT_BIN", env!("CARGO_BIN_EXE_retort"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tools/verl_check.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("verl check: {answer}");
    assert_eq!(answer["verl_version"], "0.9.1");
    let exports = answer["exports"].as_array().unwrap();
    assert_eq!(exports[0]["rows"], json!({"train": 40, "test": 12}));
    assert_eq!(exports[1]["rows"], json!({"train": 40, "test": 12}));
    assert!(exports[0]["overrides"].as_u64().unwrap() > 40, "{}", exports[0]);
    let appended: Vec<&str> = exports[1]["appended"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(appended, ["data.seed", "actor_rollout_ref.actor.porj_layer"], "FlowRL's keys beyond verl 0.4.0's config");
    let reward = &answer["reward"];
    let samples_rows = std::fs::read_to_string(&samples).unwrap().lines().count();
    assert_eq!(reward["rows"].as_u64().unwrap() as usize, samples_rows + rows.len());
    assert_eq!(reward["mismatch_count"], 0, "reward.py disagrees with retort: {}", reward["mismatches"]);
}
