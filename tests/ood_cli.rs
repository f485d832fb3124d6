//! `retort ood` and the diffusion-OOD stages through the binary, on tiny encoders built with
//! retort's own code: scores do not depend on batching, the dump and the JSON agree, bad
//! inputs are named, and a short profile (synth → encoder → MLM → denoise → ood) runs and
//! resumes.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn retort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retort")).args(args).env("RAYON_NUM_THREADS", "2").output().expect("the retort binary runs")
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "retort failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr_of(out: &Output) -> String {
    assert!(!out.status.success(), "retort should have failed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The tiny-ood files and a random tiny encoder over their vocabulary.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let cfg = retort::synth::tiny_ood::TinyOodConfig { seed: 1, general: 300, train: 50, test: 20 };
    retort::synth::tiny_ood::write(&data, &cfg).unwrap();
    let model = dir.join("enc");
    let shape = retort::model::encoder::tiny::TinyEncoderShape { hidden: 32, layers: 2, heads: 4, max_tokens: 48 };
    retort::model::encoder::tiny::init_tiny_encoder(&model, &data.join("general.jsonl"), shape, 3).unwrap();
    (data, model)
}

fn dump_scores(path: &Path) -> Vec<(String, u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v["t"].as_u64().unwrap(), v["recon_loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn scores_do_not_depend_on_the_batch_and_metrics_match_the_dump() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = setup(dir.path());
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let run = |batch: &str, dump: &Path| {
        let out = retort(&[
            "ood", &s(&model), "--id", &s(&data.join("recipes_test.jsonl")), "--ood", &s(&data.join("legal.jsonl")),
            "--ood", &s(&data.join("menus.jsonl")), "--t", "300", "--t", "600", "--batch", batch, "--json",
            "--dump", dump.to_str().unwrap(),
        ]);
        serde_json::from_str::<Value>(&stdout_of(&out)).unwrap()
    };
    let (d1, d7) = (dir.path().join("b1.jsonl"), dir.path().join("b7.jsonl"));
    let j1 = run("1", &d1);
    let j7 = run("7", &d7);
    let (a, b) = (dump_scores(&d1), dump_scores(&d7));
    // 20 ID + 2 × 20 OOD texts at two timesteps.
    assert_eq!(a.len(), 120);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, x.1), (&y.0, y.1));
        assert!((x.2 - y.2).abs() < 1e-4, "{x:?} vs {y:?}: padding changed a score");
    }
    // AUROC from the dump by brute force over pairs equals the reported one.
    let pairs = j7["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 4);
    for p in pairs {
        let t = p["t"].as_u64().unwrap();
        let ood = p["ood"].as_str().unwrap();
        let id_s: Vec<f64> = b.iter().filter(|r| r.1 == t && r.0.starts_with("recipes:")).map(|r| r.2).collect();
        let ood_s: Vec<f64> = b.iter().filter(|r| r.1 == t && r.0.starts_with(&format!("{ood}:"))).map(|r| r.2).collect();
        assert_eq!((id_s.len(), ood_s.len()), (20, 20));
        let mut wins = 0.0;
        for o in &ood_s {
            for i in &id_s {
                wins += if o > i { 1.0 } else if o == i { 0.5 } else { 0.0 };
            }
        }
        let got = p["auroc"].as_f64().unwrap();
        assert!((got - wins / 400.0).abs() < 1e-9, "{ood} t={t}: {got} vs {}", wins / 400.0);
    }
    assert_eq!(j1["pairs"][0]["auroc"], j7["pairs"][0]["auroc"]);
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = setup(dir.path());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let err = stderr_of(&retort(&["ood", &s(&model), "--id", &s(&empty), "--ood", &s(&data.join("legal.jsonl"))]));
    assert!(err.contains("empty.jsonl") && err.contains("no texts"), "{err}");

    let long = dir.path().join("long.jsonl");
    let words = vec!["onions"; 60].join(" ");
    std::fs::write(&long, format!("{{\"text\": \"chop onions\"}}\n{{\"text\": \"{words}\"}}\n")).unwrap();
    let err = stderr_of(&retort(&["ood", &s(&model), "--id", &s(&data.join("recipes_test.jsonl")), "--ood", &s(&long)]));
    assert!(err.contains("long.jsonl:2") && err.contains("62 tokens") && err.contains("48 positions") && err.contains("--truncate"), "{err}");
    stdout_of(&retort(&["ood", &s(&model), "--id", &s(&data.join("recipes_test.jsonl")), "--ood", &s(&long), "--truncate"]));

    let err = stderr_of(&retort(&["ood", &s(&model), "--id", &s(&data.join("recipes_test.jsonl")), "--ood", &s(&empty), "--t", "1000"]));
    assert!(err.contains("1000"), "{err}");
    let err = stderr_of(&retort(&["ood", &s(&model), "--id", &s(&data.join("recipes_test.jsonl")), "--ood", &s(&data.join("legal.jsonl")), "--maha", "0.99"]));
    assert!(err.contains("--id-train"), "{err}");
}

#[test]
fn mahalanobis_mix_is_reported_per_text() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = setup(dir.path());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let dump = dir.path().join("d.jsonl");
    stdout_of(&retort(&[
        "ood", &s(&model), "--id", &s(&data.join("recipes_test.jsonl")), "--ood", &s(&data.join("captions.jsonl")),
        "--maha", "0.99", "--id-train", &s(&data.join("recipes_train.jsonl")), "--dump", &s(&dump),
    ]));
    for line in std::fs::read_to_string(&dump).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let (r, m, score) = (v["recon_loss"].as_f64().unwrap(), v["maha"].as_f64().unwrap(), v["score"].as_f64().unwrap());
        assert!(m >= 0.0 && (score - (0.99 * r + 0.01 * m)).abs() < 1e-9, "{v}");
    }
}

const PROFILE: &str = r#"
[run]
name = "dood"
seed = 5

[[stage]]
kind = "synth"
name = "data"
method = "tiny-ood"
[stage.options]
general = 200
train = 60
test = 12

[[stage]]
kind = "model-init"
name = "init"
preset = "encoder-tiny"
corpus = "@data/general.jsonl"
context = 64

[[stage]]
kind = "denoise"
name = "pretrain"
objective = "mlm"
model = "@init"
steps = 6
batch_size = 8
lr = 1e-3
eval_every = 3
checkpoint_every = 3
[stage.data]
train = "@data/general.jsonl"

[[stage]]
kind = "denoise"
name = "diffuse"
model = "@pretrain"
steps = 6
batch_size = 8
lr = 1e-3
eval_every = 3
checkpoint_every = 3
[stage.data]
train = "@data/recipes_train.jsonl"
id_eval = "@data/recipes_test.jsonl"
ood_eval = ["@data/legal.jsonl"]

[[stage]]
kind = "eval"
name = "after"
models = ["@pretrain", "@diffuse"]
[stage.ood]
id = "@data/recipes_test.jsonl"
ood = ["@data/legal.jsonl", "@data/menus.jsonl"]
t = [300, 600]
"#;

fn metrics_of(run_dir: &Path, stage: &str) -> Vec<(u64, String, f64)> {
    let text = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["event"].as_str() != Some("metrics") || v["stage"].as_str() != Some(stage) {
            continue;
        }
        let step = v["step"].as_u64().unwrap();
        for (k, x) in v["values"].as_object().unwrap() {
            if let Some(x) = x.as_f64() {
                out.push((step, k.clone(), x));
            }
        }
    }
    out
}

#[test]
fn a_short_profile_trains_scores_and_reports_the_losses() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, PROFILE).unwrap();
    let runs = dir.path().join("runs");
    let out = retort(&["run", profile.to_str().unwrap(), "--headless", "--runs-dir", runs.to_str().unwrap()]);
    stdout_of(&out);
    // The run folder is `dood-<timestamp>`, the only one in the runs folder.
    let run_dir = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let results: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("after/results.json")).unwrap()).unwrap();
    // Both encoders, each with 2 OOD sets × 2 timesteps, and each with its score dump.
    let ood = results["ood"].as_array().unwrap();
    assert_eq!(ood.iter().map(|r| r["label"].as_str().unwrap()).collect::<Vec<_>>(), vec!["pretrain", "diffuse"]);
    for r in ood {
        assert_eq!(r["pairs"].as_array().unwrap().len(), 4);
        let dump = std::fs::read_to_string(run_dir.join(format!("after/scores-{}.jsonl", r["label"].as_str().unwrap()))).unwrap();
        assert_eq!(dump.lines().count(), 2 * 3 * 12, "12 texts in each of 3 sets at 2 timesteps");
    }
    let scored = metrics_of(&run_dir, "after");
    assert!(scored.iter().any(|(s, k, v)| *s == 600 && k == "diffuse/ood/auroc/legal" && (0.0..=1.0).contains(v)), "{scored:?}");
    // `retort report` draws the histograms per model and t and the loss over t.
    stdout_of(&retort(&["report", run_dir.to_str().unwrap()]));
    let report = run_dir.join("report");
    for png in ["ood_hist-after-diffuse-t300.png", "ood_hist-after-pretrain-t600.png", "recon_t-after.png", "recon-diffuse.png"] {
        assert!(report.join(png).is_file(), "no {png}");
    }
    assert!(!report.join("passk-after.png").exists(), "an OOD-only eval stage has no pass@k to plot");
    let m = metrics_of(&run_dir, "diffuse");
    let has = |step: u64, key: &str| m.iter().any(|(s, k, v)| *s == step && k == key && v.is_finite());
    for key in ["loss", "loss/mse", "loss/t", "loss/round"] {
        assert!(has(6, key), "no {key} at step 6: {m:?}");
    }
    for step in [0, 3, 6] {
        assert!(has(step, "eval/recon/id/recipes") && has(step, "eval/recon/ood/legal"), "held-out losses at {step}");
    }
    // The trained encoder loads back with its MLM head.
    assert!(run_dir.join("diffuse/model/model.safetensors").is_file() && run_dir.join("diffuse/model/tokenizer.json").is_file());
}

/// Runs a `denoise` stage config (TOML) in `dir` through the library, as the pipeline would.
/// The model folder and the steps of the metrics events it sent.
fn run_denoise(toml_text: &str, dir: &Path) -> (PathBuf, Vec<u64>) {
    use retort::stage::{StageConfig, StageCtx};
    let cfg: retort::train::denoise::DenoiseStage = toml::from_str(toml_text).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut control = retort::bus::ControlRx::detached();
    let outputs = std::collections::BTreeMap::new();
    std::fs::create_dir_all(dir).unwrap();
    let mut ctx = StageCtx {
        run_dir: dir,
        dir: dir.join("diffuse"),
        name: "diffuse".into(),
        seed: 11,
        device: candle_core::Device::Cpu,
        dtype: None,
        events: retort::bus::Emitter::new(tx),
        control: &mut control,
        outputs: &outputs,
        resuming: true,
    };
    std::fs::create_dir_all(&ctx.dir).unwrap();
    let out = cfg.run(&mut ctx).unwrap().output.unwrap();
    drop(ctx);
    let steps = rx.try_iter().filter_map(|e| match e {
        retort::bus::Event::Metrics { step, .. } => Some(step),
        _ => None,
    });
    (out, steps.collect())
}

#[test]
fn a_stopped_denoise_stage_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = setup(dir.path());
    // A constant learning rate, so a 3-step run is the first half of a 6-step one.
    let config = |steps: u64| {
        format!(
            "model = {:?}\nsteps = {steps}\nbatch_size = 4\nlr = 1e-3\nschedule = \"constant\"\ncheckpoint_every = 3\neval_every = 0\n\
             [data]\ntrain = {:?}\n",
            model,
            data.join("recipes_train.jsonl")
        )
    };
    let (whole, steps) = run_denoise(&config(6), &dir.path().join("whole"));
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    let split = dir.path().join("split");
    run_denoise(&config(3), &split);
    // The second call finds the step-3 checkpoint and trains only steps 4 to 6.
    let (resumed, steps) = run_denoise(&config(6), &split);
    assert_eq!(steps, [4, 5, 6]);
    let a = std::fs::read(whole.join("model.safetensors")).unwrap();
    let b = std::fs::read(resumed.join("model.safetensors")).unwrap();
    assert!(a == b, "the resumed weights differ from the uninterrupted run's");
    let fresh = std::fs::read(model.join("model.safetensors")).unwrap();
    assert!(a != fresh, "training changed nothing");
}
