//! The `rl` stage end to end on a tiny model: GRPO improves reward on an easy task, PPO and
//! FlowRL run and log their own metrics, a resumed run is bit-identical to an uninterrupted
//! one, and bad configurations are refused with explanations.
//!
//! One warm start (model-init → tasks → a short SFT on subset-sum) is built once and shared.

use retort::bus::{ControlRx, Emitter, Event};
use retort::stage::{StageConfig, StageCtx, StageOutput};
use retort::stages::find_kind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn parse(kind: &str, text: &str) -> Box<dyn StageConfig> {
    let value: toml::Value = toml::from_str(text).unwrap();
    (find_kind(kind).unwrap().parse)(value).unwrap()
}

/// Runs one stage in `run_dir/<name>` and returns its output and every event it sent.
fn run_stage(
    kind: &str,
    text: &str,
    run_dir: &Path,
    name: &str,
    outputs: &BTreeMap<String, PathBuf>,
) -> (anyhow::Result<StageOutput>, Vec<Event>) {
    let config = parse(kind, text);
    config.validate().unwrap_or_else(|(k, m)| panic!("{k}: {m}"));
    let (tx, rx) = crossbeam_channel::unbounded();
    let emitter = Emitter::new(tx).for_stage(name);
    let mut control = ControlRx::detached();
    let dir = run_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ctx = StageCtx {
        run_dir,
        dir,
        name: name.to_string(),
        seed: 7,
        device: candle_core::Device::Cpu,
        dtype: None,
        events: emitter,
        control: &mut control,
        outputs,
        resuming: false,
    };
    let out = config.run(&mut ctx);
    drop(ctx);
    (out, rx.try_iter().collect())
}

/// Model folder and data folder of the shared warm start.
struct Warm {
    _dir: tempfile::TempDir,
    outputs: BTreeMap<String, PathBuf>,
}

fn warm() -> &'static Warm {
    static WARM: OnceLock<Warm> = OnceLock::new();
    WARM.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut outputs = BTreeMap::new();
        let steps: [(&str, &str, &str); 3] = [
            ("model-init", "init", "preset = \"tiny\""),
            (
                "tasks",
                "data",
                "task = \"subset-sum\"\ntrain = 200\ntest = 30\n[options]\nmin_len = 3\nmax_len = 3\nmax_value = 9\nmin_target = 5\nmax_target = 15\nmin_solutions = 1",
            ),
            (
                "sft",
                "sft",
                "model = \"@init\"\nsteps = 60\nbatch_size = 16\nlr = 3e-3\nwarmup_steps = 5\nmax_len = 40\neval_every = 0\nsample_every = 0\ncheckpoint_every = 0\neval_samples = 0\nmax_new_tokens = 12\n[data]\nfrom = \"@data\"\n[data.teacher]\nwrong = 0.3",
            ),
        ];
        for (kind, name, text) in steps {
            let (out, _) = run_stage(kind, text, dir.path(), name, &outputs);
            let out = out.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            outputs.insert(name.to_string(), out.output.unwrap());
        }
        Warm { _dir: dir, outputs }
    })
}

fn metrics(events: &[Event]) -> Vec<BTreeMap<String, f64>> {
    events.iter().filter_map(|e| if let Event::Metrics { values, .. } = e { Some(values.clone()) } else { None }).collect()
}

const BASE: &str = "model = \"@sft\"\nfrom = \"@data\"\nmax_new_tokens = 12\nprompts_per_step = 4\ngroup_size = 8\n\
eval_problems = 30\neval_n = 16\neval_k = [1, 16]\nsamples_per_step = 1\ncheckpoint_every = 0\n";

/// `BASE` with the keys of `overrides` (TOML) replaced or added.
fn rl_cfg(overrides: &str) -> String {
    let mut t: toml::Table = toml::from_str(BASE).unwrap();
    t.extend(toml::from_str::<toml::Table>(overrides).unwrap());
    toml::to_string(&t).unwrap()
}

/// Sampled accuracy (32 draws per problem, T = 1) of a model folder on `problems`.
fn accuracy(model_dir: &Path, problems: &[retort::tasks::Instance]) -> f64 {
    let model = retort::model::Model::load(model_dir, &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
    let tok = retort::text::Tokenizer::load(model_dir).unwrap();
    let set = retort::tasks::ProblemSet::of_task("subset-sum", &toml::Table::new(), problems.to_vec()).unwrap();
    retort::train::sft::task_accuracy(&model, &tok, &set, false, 32, 1.0, 12, 99).unwrap().0
}

#[test]
fn grpo_improves_reward_on_an_easy_task() {
    let w = warm();
    let run = tempfile::tempdir().unwrap();
    // Twelve problems, each revisited about five times in 16 steps of 4 prompts: the reward
    // GRPO optimises is the accuracy on these prompts, measured before and after.
    let mut outputs = w.outputs.clone();
    let easy = "task = \"subset-sum\"\ntrain = 12\ntest = 4\n[options]\nmin_len = 3\nmax_len = 3\nmax_value = 9\nmin_target = 5\nmax_target = 15\nmin_solutions = 1";
    let (out, _) = run_stage("tasks", easy, run.path(), "easy", &outputs);
    outputs.insert("easy".into(), out.unwrap().output.unwrap());
    let problems = retort::tasks::read_instances(&outputs["easy"].join("train.jsonl")).unwrap();
    let before = accuracy(&outputs["sft"], &problems);
    let cfg = rl_cfg("algorithm = \"grpo\"\nfrom = \"@easy\"\nlr = 5e-4\nsteps = 16\neval_problems = 4\neval_n = 16\n");
    let (out, events) = run_stage("rl", &cfg, run.path(), "grpo", &outputs);
    let out = out.unwrap();
    let after = accuracy(out.output.as_ref().unwrap(), &problems);
    // 384 draws each way; the runs are deterministic on the CPU, and the margin is ~3 standard
    // errors of a binomial mean at these rates.
    assert!(after > before + 0.03 && after > 1.5 * before, "sampled accuracy on the training prompts: {before} before, {after} after GRPO");
    let m = metrics(&events);
    assert_eq!(m.len(), 16);
    for key in [
        "critic/score/mean",
        "critic/advantages/max",
        "response_length/clip_ratio",
        "actor/entropy",
        "actor/pg_loss",
        "actor/pg_clipfrac",
        "actor/ppo_kl",
        "actor/grad_norm",
        "actor/ref_kl",
        "frac_all_same_groups",
        "diversity/distinct_correct",
        "diversity/coverage",
        "diversity/entropy_correct",
        "timing/generate",
        "timing/update",
        "tokens_per_s",
    ] {
        assert!(m[0].contains_key(key), "missing metric {key}: {:?}", m[0].keys());
    }
    // Phases are reported inside every step, and samples carry rewards and advantages.
    let phases: Vec<String> = events.iter().filter_map(|e| if let Event::Progress { phase: Some(p), .. } = e { Some(p.clone()) } else { None }).collect();
    for p in ["generate", "reward", "logprob", "update"] {
        assert_eq!(phases.iter().filter(|q| *q == p).count(), 16, "phase {p}");
    }
    let samples = events.iter().filter(|e| matches!(e, Event::Sample { reward: Some(_), advantage: Some(_), .. })).count();
    assert_eq!(samples, 16);
    // The output is a loadable HF folder with the tokenizer.
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.output.as_ref().unwrap().join(f).is_file(), "{f}");
    }
}

#[test]
fn flowrl_and_ppo_run_and_log_their_metrics() {
    let w = warm();
    let run = tempfile::tempdir().unwrap();
    let flow = rl_cfg(&format!("algorithm = \"flowrl\"\nlr = 3e-4\nz_lr = 10\nsteps = 2\nmini_batch = 2\neval_problems = 4\n"));
    let (out, events) = run_stage("rl", &flow, run.path(), "flowrl", &w.outputs);
    out.unwrap();
    let m = metrics(&events);
    for key in ["actor/log_z", "actor/tb_loss", "actor/importance_weight_raw", "actor/importance_weight", "actor/log_prob", "actor/ref_log_prob"] {
        assert!(m[1][key].is_finite(), "{key}: {:?}", m[1].get(key));
    }
    // Two mini-batches per step: the second is off-policy, so the raw weight moves off 1.
    assert!(m.iter().any(|s| (s["actor/importance_weight_raw"] - 1.0).abs() > 1e-4), "{m:?}");

    let ppo = rl_cfg(&format!("algorithm = \"ppo\"\nlr = 3e-4\ncritic_lr = 1e-3\ncritic_warmup = 1\nsteps = 3\neval_problems = 4\n"));
    let (out, events) = run_stage("rl", &ppo, run.path(), "ppo", &w.outputs);
    out.unwrap();
    let m = metrics(&events);
    // Step 1 is critic warmup: no actor update yet.
    assert!(!m[0].contains_key("actor/pg_loss") && m[0].contains_key("critic/vf_loss"), "{:?}", m[0].keys());
    for key in ["critic/vf_loss", "critic/vf_explained_var", "critic/values/mean", "critic/returns/mean", "actor/pg_loss"] {
        assert!(m[2][key].is_finite(), "{key}");
    }
    // The critic starts at V ≡ 0; once some response has been rewarded, it has learned a
    // nonzero value (with no reward yet, the returns are all 0 and so are the values).
    assert_eq!(m[0]["critic/values/mean"], 0.0);
    let rewarded = m[..2].iter().any(|s| s["critic/score/max"] > 0.0);
    assert_eq!(m[2]["critic/values/mean"] != 0.0, rewarded, "{m:?}");
}

#[test]
fn a_logged_reference_runs_every_ref_kl_every_steps_and_changes_nothing_else() {
    // With kl_coef = 0 the reference only feeds `actor/ref_kl`: scoring it on fewer steps must
    // leave every other metric of every step as it was, and the logged values where it runs.
    let w = warm();
    let go = |extra: &str| {
        // Same stage name, so the same random streams (they derive from seed and name).
        let run = tempfile::tempdir().unwrap();
        let cfg = rl_cfg(&format!("algorithm = \"grpo\"\nlr = 3e-4\nsteps = 4\neval_problems = 4\n{extra}"));
        let (out, events) = run_stage("rl", &cfg, run.path(), "rl", &w.outputs);
        out.unwrap();
        metrics(&events)
    };
    let every = go("ref_kl_every = 1\n");
    let sparse = go("ref_kl_every = 3\n");
    assert_eq!((every.len(), sparse.len()), (4, 4));
    let logged: Vec<bool> = sparse.iter().map(|m| m.contains_key("actor/ref_kl")).collect();
    assert_eq!(logged, [true, false, true, true], "steps 1, 3 (every 3rd) and 4 (the last)");
    for (step, (a, b)) in every.iter().zip(&sparse).enumerate() {
        assert!(a.contains_key("actor/ref_kl"));
        for (k, v) in a {
            if k.starts_with("timing/") || k == "tokens_per_s" || (k == "actor/ref_kl" && !logged[step]) {
                continue;
            }
            assert_eq!(b.get(k), Some(v), "step {}: {k}", step + 1);
        }
    }
    // A KL loss reads the reference on every step, whatever ref_kl_every says.
    let kl = go("ref_kl_every = 3\nkl_coef = 0.01\n");
    assert!(kl.iter().all(|m| m.contains_key("actor/ref_kl") && m.contains_key("actor/kl_loss")), "{kl:?}");
    rejects(&rl_cfg("ref_kl_every = 0\n"), "ref_kl_every", &["at least 1"]);
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn resume_from_a_checkpoint_is_bit_exact() {
    let w = warm();
    // FlowRL exercises the most policy-side state: policy, Z head, their AdamW moments, the
    // step; PPO adds a second trainer, the critic, with its own optimizer and checkpoint files.
    for (algo, extra) in [("flowrl", "z_lr = 10\n"), ("ppo", "critic_lr = 1e-3\ncritic_warmup = 1\n")] {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // The stage keeps its name: its random streams derive from (seed, stage name).
        let cfg = rl_cfg(&format!("algorithm = \"{algo}\"\nlr = 3e-4\n{extra}steps = 4\ncheckpoint_every = 2\nkeep = 10\neval_problems = 2\n"));
        let (out, _) = run_stage("rl", &cfg, one.path(), "rl", &w.outputs);
        let full = out.unwrap().output.unwrap();
        // Pretend the run stopped after the step-2 checkpoint: drop everything later, rerun.
        let b = two.path().join("rl");
        copy_dir(&one.path().join("rl"), &b);
        std::fs::remove_dir_all(b.join("model")).unwrap();
        std::fs::remove_dir_all(b.join("checkpoints/step-00000004")).unwrap();
        assert!(b.join("checkpoints/step-00000002").is_dir());
        let (out, events) = run_stage("rl", &cfg, two.path(), "rl", &w.outputs);
        let resumed = out.unwrap().output.unwrap();
        assert!(events.iter().any(|e| matches!(e, Event::Log { message, .. } if message.contains("resumed from checkpoint at step 2"))));
        assert_eq!(metrics(&events).len(), 2, "{algo}: only steps 3 and 4 run again");
        let same = |a: &Path, b: &Path| file_bytes(a) == file_bytes(b);
        assert!(same(&full.join("model.safetensors"), &resumed.join("model.safetensors")), "{algo}: final weights differ after resume");
        let last = |d: &Path, file: &str| d.join("rl/checkpoints/step-00000004").join(file);
        let files: &[&str] = if algo == "ppo" { &["optimizer.safetensors", "critic.safetensors", "critic_optimizer.safetensors"] } else { &["optimizer.safetensors"] };
        for file in files {
            assert!(same(&last(one.path(), file), &last(two.path(), file)), "{algo}: {file} differs after resume");
        }
        if algo == "flowrl" {
            // And the check has teeth: a run with another seed-derived stream ends elsewhere.
            let (out, _) = run_stage("rl", &cfg, one.path(), "other-name", &w.outputs);
            assert!(!same(&full.join("model.safetensors"), &out.unwrap().output.unwrap().join("model.safetensors")));
        }
    }
}

fn rejects(text: &str, key: &str, needles: &[&str]) {
    let (k, msg) = parse("rl", text).validate().expect_err(text);
    assert_eq!(k, key, "{msg}");
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

#[test]
fn bad_configurations_are_explained() {
    let base = "model = \"@sft\"\nfrom = \"@data\"\n";
    rejects(&format!("{base}group_size = 1"), "group_size", &["nothing to compare", "group_size to 2 or more"]);
    rejects(
        &format!("{base}prompts_per_step = 6\ngroup_size = 8\nmini_batch = 4"),
        "mini_batch",
        &["6 × 8 = 48 responses", "4 prompts", "32 responses", "not a whole multiple", "counts prompts, not responses"],
    );
    rejects("model = \"@sft\"\ntask = \"poetry\"", "task", &["unknown task `poetry`", "verifier"]);
    rejects("model = \"@sft\"", "from", &["exactly one of"]);
    rejects(&format!("{base}entropy_adv = {{ alpha = 0.1, kappa = 1.0 }}"), "entropy_adv", &["kappa > 1"]);
    rejects(&format!("{base}advantage = {{ kind = \"gae\" }}"), "advantage", &["critic"]);
    rejects(&format!("{base}dual_clip = 0.5"), "dual_clip", &["> 1"]);
    // Unknown keys are refused at parse time.
    let value: toml::Value = toml::from_str(&format!("{base}group_sise = 4")).unwrap();
    let err = (find_kind("rl").unwrap().parse)(value).unwrap_err().to_string();
    assert!(err.contains("group_sise"), "{err}");
}

#[test]
fn a_reference_with_another_tokenizer_is_refused() {
    let w = warm();
    let run = tempfile::tempdir().unwrap();
    // Same model, but the reference's tokenizer maps two characters to each other's ids.
    let other = run.path().join("other-ref");
    copy_dir(&w.outputs["sft"], &other);
    let tok_path = other.join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["1"].clone(), vocab["2"].clone());
    vocab.insert("1".into(), b);
    vocab.insert("2".into(), a);
    std::fs::write(&tok_path, serde_json::to_string(&tok).unwrap()).unwrap();
    let cfg = rl_cfg(&format!("algorithm = \"flowrl\"\nreference = \"{}\"\nsteps = 1\n", other.display()));
    let (out, _) = run_stage("rl", &cfg, run.path(), "x", &w.outputs);
    let err = format!("{:#}", out.unwrap_err());
    assert!(err.contains("different tokenizer") && err.contains("must share one tokenizer"), "{err}");
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let w = warm();
    let run = tempfile::tempdir().unwrap();
    // An absurd learning rate overflows the weights within a few updates; the loss (or the
    // log-probs feeding it) turns non-finite and the stage must stop, naming the metric.
    let cfg = rl_cfg("algorithm = \"grpo\"\nlr = 1e30\nsteps = 4\ncheckpoint_every = 1\nkeep = 20\neval_problems = 1\nlog_ref_kl = false\n");
    let (out, events) = run_stage("rl", &cfg, run.path(), "nan", &w.outputs);
    let err = format!("{:#}", out.expect_err("training must stop"));
    assert!(err.contains("`actor/loss`") || err.contains("`critic/advantages`"), "{err}");
    assert!(err.contains("stays the latest"), "{err}");
    let done = metrics(&events).len() as u64;
    let ckpts = retort::train::checkpoint::Checkpoints::new(&run.path().join("nan"), 20);
    let (latest, _) = ckpts.latest().expect("steps before the NaN were checkpointed");
    assert_eq!(latest, done, "the newest checkpoint is the last finished step, not the failed one");
    assert!(err.contains(&format!("checkpoint (step {latest})")), "{err}");
    assert!(!run.path().join("nan/model").exists());
}

#[test]
fn rl_on_a_math_jsonl_with_a_format_reward() {
    // Math problems from a file, scored by the math verifier, with STILL-3's boxed format
    // reward on top: +1 correct, -1 wrong, -2 without a \boxed answer.
    let w = warm();
    let run = tempfile::tempdir().unwrap();
    let rows: String = (0..8).map(|i| format!("{{\"prompt\": \"subset 1 2 {i} -> {}\\n\", \"answer\": \"{}\"}}\n", i + 3, i + 3)).collect();
    std::fs::write(run.path().join("train.jsonl"), &rows).unwrap();
    std::fs::write(run.path().join("test.jsonl"), &rows[..rows.find('\n').unwrap() + 1]).unwrap();
    let mut t: toml::Table = toml::from_str(BASE).unwrap();
    t.remove("from");
    t.extend(toml::from_str::<toml::Table>(&format!(
        "jsonl = {:?}\ntest_jsonl = {:?}\nverifier = \"math\"\nsteps = 2\nsamples_per_step = 4\neval_problems = 1\neval_n = 16\nformat_reward = {{ kind = \"boxed\" }}\n",
        run.path().join("train.jsonl"),
        run.path().join("test.jsonl")
    ))
    .unwrap());
    let (out, events) = run_stage("rl", &toml::to_string(&t).unwrap(), run.path(), "math", &w.outputs);
    out.unwrap();
    let m = metrics(&events);
    assert_eq!(m.len(), 2);
    assert!(m[1].contains_key("eval/pass@1"), "quick eval on test_jsonl: {:?}", m[1].keys());
    let mut seen = 0;
    for e in &events {
        if let Event::Sample { prompt, response, reward: Some(r), correct: Some(c), .. } = e {
            // The verdict is the math verifier's on this prompt's gold answer...
            let gold: u32 = prompt.trim().rsplit(' ').next().unwrap().parse().unwrap();
            let v = retort::tasks::math::verify_math(response, &gold.to_string(), &Default::default());
            assert_eq!(v.correct, *c, "{prompt:?} {response:?}");
            // ...and the score is the format rule applied to it.
            let want = if !response.contains("\\boxed") { -2.0 } else if *c { 1.0 } else { -1.0 };
            assert_eq!(*r, want, "{response:?}");
            seen += 1;
        }
    }
    assert_eq!(seen, 8);
    assert!(m.iter().all(|s| (-2.0..=1.0).contains(&s["critic/score/mean"])), "{m:?}");
}

#[test]
fn jsonl_problem_sources_are_checked() {
    rejects("model = \"@sft\"\njsonl = \"p.jsonl\"", "verifier", &["need a verifier", "math", "code"]);
    rejects("model = \"@sft\"\njsonl = \"p.jsonl\"\nverifier = \"regex\"", "verifier", &["regex", "math, code"]);
    rejects("model = \"@sft\"\nfrom = \"@data\"\ntest_jsonl = \"t.jsonl\"", "test_jsonl", &["goes with `jsonl`"]);
    rejects("model = \"@sft\"\nfrom = \"@data\"\njsonl = \"p.jsonl\"\nverifier = \"math\"", "from", &["exactly one of"]);
    let value: toml::Value = toml::from_str("model = \"@sft\"\nfrom = \"@data\"\nformat_reward = { kind = \"xml\" }").unwrap();
    let err = (find_kind("rl").unwrap().parse)(value).unwrap_err().to_string();
    assert!(err.contains("xml") && err.contains("think_answer") && err.contains("boxed"), "{err}");
}
