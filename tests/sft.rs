//! The SFT stage end to end through the binary: learning, exact resume after a graceful stop
//! and after SIGKILL, LoRA, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn retort() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retort"));
    c.env_remove("RETORT_RUNS_DIR");
    c
}

/// The tiny warm-start profile shrunk to seconds.
const SMALL: &[&str] = &[
    "--set", "stage.sft.steps=12",
    "--set", "stage.sft.batch_size=8",
    "--set", "stage.sft.checkpoint_every=4",
    "--set", "stage.sft.eval_every=0",
    "--set", "stage.sft.sample_every=0",
    "--set", "stage.sft.eval_samples=0",
    "--set", "stage.sft.data.train_problems=64",
    "--set", "stage.sft.data.test_problems=8",
];

fn run_in(dir: &Path, name: &str) -> Command {
    let mut c = retort();
    c.args(["run", "sft-countdown-tiny", "--headless", "--name", name]).args(SMALL).current_dir(dir);
    c
}

fn run_dir(dir: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}-")))
        .unwrap()
}

fn wait_for(path: &Path, needle: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(path).unwrap_or_default().contains(needle) {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {needle} in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The folder of run `name` once the process has created it.
fn wait_for_run(dir: &Path, name: &str) -> PathBuf {
    let start = Instant::now();
    loop {
        let found = std::fs::read_dir(dir.join("runs")).ok().and_then(|mut it| {
            it.find_map(|e| {
                let p = e.ok()?.path();
                p.file_name()?.to_str()?.starts_with(&format!("{name}-")).then_some(p)
            })
        });
        if let Some(p) = found {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "run {name} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("sft/model/model.safetensors")).unwrap()
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

fn resume(run: &Path, dir: &Path) {
    let out = retort().args(["run", "--headless", "--resume", run.to_str().unwrap()]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed from checkpoint"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn interrupted_and_killed_runs_resume_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let out = run_in(dir, "whole").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole = run_dir(dir, "whole");
    let reference = weights(&whole);
    // The loss went down and the final model is a loadable HF folder with the tokenizer.
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(whole.join("sft/model").join(f).is_file(), "missing {f}");
    }

    // Graceful stop (SIGTERM) after the first checkpoint: the stage checkpoints and exits.
    let mut child = run_in(dir, "stopped").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let stopped = wait_for_run(dir, "stopped");
    wait_for(&stopped.join("events.jsonl"), "\"checkpoint_saved\"");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(manifest(&stopped)["status"], "interrupted");
    resume(&stopped, dir);
    assert_eq!(manifest(&stopped)["status"], "finished");
    assert!(weights(&stopped) == reference, "resumed after a graceful stop, the weights differ");

    // Hard kill: at most the steps since the last checkpoint are lost, and the result is the same.
    let mut child = run_in(dir, "killed").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let killed = wait_for_run(dir, "killed");
    wait_for(&killed.join("events.jsonl"), "\"step\":5");
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert_eq!(manifest(&killed)["status"], "running", "a killed process cannot update its manifest");
    let listing = String::from_utf8_lossy(&retort().args(["runs"]).current_dir(dir).output().unwrap().stdout).into_owned();
    assert!(listing.lines().any(|l| l.starts_with("killed-") && l.contains("interrupted")), "{listing}");
    resume(&killed, dir);
    assert!(weights(&killed) == reference, "resumed after SIGKILL, the weights differ");
}

#[test]
fn overfits_a_handful_of_examples_and_lora_trains_adapters_only() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = dir.join("base");
    let out = retort().args(["run", "sft-countdown-tiny", "--headless", "--name", "setup", "--set", "stage.sft.steps=1", "--set", "stage.sft.eval_samples=0", "--set", "stage.sft.data.train_problems=20", "--set", "stage.sft.data.test_problems=4"]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let init = std::fs::read_dir(dir.join("runs")).unwrap().next().unwrap().unwrap().path().join("init/model");
    std::fs::rename(&init, &model).unwrap();
    let data = dir.join("four.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\":\"2+2=\",\"response\":\"4\"}\n{\"prompt\":\"red \",\"response\":\"apple\"}\n{\"prompt\":\"abc\",\"response\":\"def\"}\n{\"prompt\":\"x\",\"response\":\"yz!\"}\n",
    )
    .unwrap();
    let out = retort()
        .args(["sft", model.to_str().unwrap(), "--jsonl", data.to_str().unwrap(), "--headless"])
        .args(["--set", "steps=80", "--set", "batch_size=4", "--set", "lr=0.003", "--set", "warmup_steps=0", "--set", "schedule=\"constant\"", "--set", "eval_every=0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("sft-2")).unwrap();
    let final_loss = manifest(&run)["stages"][0]["summary"]["loss"].as_f64().unwrap();
    assert!(final_loss < 0.05, "did not overfit: loss {final_loss}");

    // LoRA: adapters are saved in PEFT layout, and the merged model differs from the base.
    let out = retort()
        .args(["sft", model.to_str().unwrap(), "--jsonl", data.to_str().unwrap(), "--headless"])
        .args(["--set", "steps=20", "--set", "batch_size=4", "--set", "lr=0.01", "--set", "lora.rank=4", "--set", "lora.targets=[\"q_proj\",\"v_proj\"]"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lora_run = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("sft-2"))
        .find(|p| p.join("sft/adapter").exists())
        .expect("a LoRA run folder with adapters");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lora_run.join("sft/adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["peft_type"], "LORA");
    assert_ne!(std::fs::read(lora_run.join("sft/model/model.safetensors")).unwrap(), std::fs::read(model.join("model.safetensors")).unwrap());
}

#[test]
fn bad_sft_input_is_explained() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"a\",\"response\":\"b\"}\nnot json\n").unwrap();
    // A malformed line is reported with file and line before any run folder exists.
    let model = dir.join("m");
    assert!(retort().args(["model", "init", "--preset", "tiny", "--out", model.to_str().unwrap()]).output().unwrap().status.success());
    let out = retort().args(["sft", model.to_str().unwrap(), "--jsonl", bad.to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad.jsonl:2") && text.contains("not a valid row"), "{text}");
    std::fs::write(&bad, "{\"prompt\":\"a\"}\n").unwrap();
    let text = String::from_utf8_lossy(&retort().args(["sft", model.to_str().unwrap(), "--jsonl", bad.to_str().unwrap()]).current_dir(dir).output().unwrap().stderr).into_owned();
    assert!(text.contains("bad.jsonl:1") && text.contains("without \"response\""), "{text}");
    // The same for a problems file of an eval (or rl) stage in a profile.
    let problems = dir.join("problems.jsonl");
    std::fs::write(&problems, "{\"prompt\":\"1+1\",\"answer\":\"2\"}\n{\"prompt\":\"2+2\"}\n").unwrap();
    let profile = dir.join("p.toml");
    std::fs::write(&profile, format!("[run]\nname = \"bad\"\n\n[[stage]]\nkind = \"eval\"\nmodels = [{:?}]\njsonl = {:?}\nverifier = \"math\"\n", model, problems)).unwrap();
    let out = retort().args(["run", profile.to_str().unwrap()]).current_dir(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("problems.jsonl") && text.contains('2') && text.contains("answer"), "{text}");
    assert!(!dir.join("runs").exists(), "a run folder was created for bad data");
    let out = retort().args(["sft", "no-such-model", "--jsonl", model.join("config.json").to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&retort().args(["run", "sft-countdown-tiny", "--set", "stage.sft.lora.targets=[\"qkv\"]"]).current_dir(dir).output().unwrap().stderr).into_owned();
    assert!(e.contains("no module named `qkv`") && e.contains("q_proj"), "{e}");
}

/// Append one control request the way `retort watch` does (one JSON string per line).
fn send_control(run: &Path, control: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(run.join("control.jsonl")).unwrap();
    writeln!(f, "\"{control}\"").unwrap();
}

#[test]
fn control_file_pauses_checkpoints_and_stops_a_headless_run() {
    // What `retort watch` does to a run started headless elsewhere: pause, checkpoint now,
    // resume, then stop with a checkpoint.
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut child = retort()
        .args(["run", "sft-countdown-tiny", "--headless", "--name", "ctl"])
        .args(SMALL)
        .args(["--set", "stage.sft.steps=400", "--set", "stage.sft.checkpoint_every=1000"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_for_run(dir, "ctl");
    let events = run.join("events.jsonl");
    wait_for(&events, "\"stage\":\"sft\",\"step\":2");
    send_control(&run, "pause");
    wait_for(&events, "\"state\":\"paused\"");
    // Paused means no optimizer step happens: the step count stays put.
    let steps = |text: &str| text.matches("\"event\":\"metrics\",\"stage\":\"sft\"").count();
    let before = steps(&std::fs::read_to_string(&events).unwrap());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(steps(&std::fs::read_to_string(&events).unwrap()), before, "a paused run kept training");
    send_control(&run, "checkpoint_now");
    send_control(&run, "resume");
    wait_for(&events, "\"checkpoint_saved\"");
    wait_for(&events, "\"state\":\"running\"");
    send_control(&run, "stop");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(manifest(&run)["status"], "interrupted");
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.matches("\"checkpoint_saved\"").count() >= 2, "stop did not checkpoint: {text}");
    assert!(text.contains("\"state\":\"stopping\""), "{text}");
}

/// A profile training a fresh tiny model on a mixture of three JSONL sources, one row shape
/// each (text, chat messages, prompt/response), with the mixture's lines in `mix`.
fn mixture_profile(dir: &Path, mix: &str, extra: &str) -> PathBuf {
    let text: String = (0..30).map(|i| format!("{{\"text\":\"plain text row number {i}\"}}\n")).collect();
    let chat: String = (0..30)
        .map(|i| format!("{{\"messages\":[{{\"role\":\"user\",\"content\":\"q{i}\"}},{{\"role\":\"assistant\",\"content\":\"a{i}\"}}]}}\n"))
        .collect();
    let pairs: String = (0..30).map(|i| format!("{{\"prompt\":\"{i}+1=\",\"response\":\"{}\"}}\n", i + 1)).collect();
    for (name, rows) in [("text.jsonl", text), ("chat.jsonl", chat), ("pairs.jsonl", pairs)] {
        std::fs::write(dir.join(name), rows).unwrap();
    }
    let profile = dir.join("mix.toml");
    std::fs::write(
        &profile,
        format!(
            "[run]\nname = \"mix\"\nseed = 3\n\n[[stage]]\nkind = \"model-init\"\nname = \"init\"\npreset = \"tiny\"\n\n\
             [[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = \"@init\"\nsteps = 12\nbatch_size = 4\nmax_len = 48\n\
             checkpoint_every = 4\neval_every = 0\nsample_every = 0\n{extra}\n[stage.data]\nmix = {mix}\n"
        ),
    )
    .unwrap();
    profile
}

#[test]
fn a_weighted_mixture_trains_in_its_shares_and_resumes_bit_identically() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mix = format!(
        "[ {{ jsonl = {:?}, weight = 1.0 }}, {{ jsonl = {:?}, weight = 2.0 }}, {{ jsonl = {:?} }} ]",
        dir.join("text.jsonl"),
        dir.join("chat.jsonl"),
        dir.join("pairs.jsonl")
    );
    // Packing on: each source is packed apart, and the shares are shares of packed rows.
    let profile = mixture_profile(dir, &mix, "pack = true");
    let run = |name: &str| {
        let mut c = retort();
        c.args(["run", profile.to_str().unwrap(), "--headless", "--name", name]).current_dir(dir);
        c
    };
    let out = run("whole").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole = run_dir(dir, "whole");
    // 12 steps × 4 = 48 examples at weights 1 : 2 : 1 (the last defaulted): 12, 24 and 12
    // exactly, since every quota 48·w/4 is a whole number and the schedule is within one of it.
    let summary = &manifest(&whole)["stages"][1]["summary"];
    let shares: Vec<f64> = (0..3).map(|i| summary[format!("mix[{i}].share")].as_f64().unwrap()).collect();
    assert_eq!(shares, vec![0.25, 0.5, 0.25], "{summary}");
    let events = std::fs::read_to_string(whole.join("events.jsonl")).unwrap();
    assert!(events.contains("mixture over 48 examples: data.mix[0] 12 (25.0%); data.mix[1] 24 (50.0%); data.mix[2] 12 (25.0%)"), "{events}");

    // The same seed gives the same weights; a stop after a checkpoint resumes to them exactly.
    let again = run("again").output().unwrap();
    assert!(again.status.success());
    assert!(weights(&run_dir(dir, "again")) == weights(&whole), "two runs of one profile and seed differ");
    let mut child = run("stopped").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let stopped = wait_for_run(dir, "stopped");
    wait_for(&stopped.join("events.jsonl"), "\"checkpoint_saved\"");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    resume(&stopped, dir);
    assert!(weights(&stopped) == weights(&whole), "resumed mid-mixture, the weights differ");
    assert_eq!(manifest(&stopped)["stages"][1]["summary"]["mix[1].share"].as_f64(), Some(0.5));
}

#[test]
fn bad_mixtures_are_explained_before_a_run_starts() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let fails_with = |mix: &str, extra: &str, needles: &[&str]| {
        let profile = mixture_profile(dir, mix, extra);
        let out = retort().args(["run", profile.to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mix}: accepted");
        for n in needles {
            assert!(text.contains(n), "{mix}: expected {n:?} in {text}");
        }
        assert!(!dir.join("runs").exists(), "a run folder was created for {mix}");
    };
    let a = format!("{:?}", dir.join("text.jsonl"));
    fails_with(&format!("[ {{ jsonl = {a} }}, {{ jsonl = {a}, weight = 0.0 }} ]"), "", &["stage.sft.data.mix[1].weight", "finite and > 0"]);
    fails_with(&format!("[ {{ jsonl = {a}, weight = -2.0 }} ]"), "", &["data.mix[0].weight"]);
    fails_with("[]", "", &["data.mix", "at least one source"]);
    fails_with(&format!("[ {{ jsonl = {a}, wieght = 1.0 }} ]"), "", &["data.mix[0].wieght", "weight"]);
    // The mixture replaces `jsonl` rather than adding to it.
    let profile_mix = format!("[ {{ jsonl = {a} }} ]\njsonl = {a}");
    fails_with(&profile_mix, "", &["data.mix", "takes the place of"]);
    // `@stage/file` sources are declared references: they must name an earlier stage with text.
    fails_with("[ { jsonl = \"@init/rows.jsonl\" } ]", "", &["data.mix", "@init/rows.jsonl", "text data"]);
    // Each file is read before training: a bad row names the file and line.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\":\"fine\"}\n{\"prompt\":\"no response\"}\n").unwrap();
    fails_with(&format!("[ {{ jsonl = {a} }}, {{ jsonl = {:?} }} ]", bad), "", &["bad.jsonl:2", "without \"response\"", "data.mix[1]"]);
}

/// Instruction-synthesizer rows (`{"context", "qa_list"}`, research/synth-spec.md §3.2): a
/// fresh tiny model's loss on the pairs falls, packed or in a mixture with text rows, and a
/// malformed row is named by file, line and key before any run folder exists.
#[test]
fn trains_a_synthesizer_on_context_and_pairs_rows() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = dir.join("m");
    assert!(retort().args(["model", "init", "--preset", "tiny", "--out", model.to_str().unwrap()]).output().unwrap().status.success());
    let towns = [("Zorvia", "1843", "river"), ("Bellmont", "1710", "harbor"), ("Quillan", "1902", "mining"), ("Tessaly", "1655", "market"), ("Orvane", "1788", "mountain"), ("Pellick", "1821", "border")];
    let rows: String = towns
        .iter()
        .map(|(name, year, kind)| {
            let row = serde_json::json!({
                "context": format!("{name} is a {kind} town founded in {year}."),
                "qa_list": [[format!("When was {name} founded?"), year], [format!("What kind of town is {name}?"), format!("A {kind} town.")]],
                "entity": name,
            });
            format!("{row}\n")
        })
        .collect();
    let qa = dir.join("qa.jsonl");
    std::fs::write(&qa, &rows).unwrap();
    let out = retort()
        .args(["sft", model.to_str().unwrap(), "--jsonl", qa.to_str().unwrap(), "--headless"])
        .args(["--set", "steps=40", "--set", "batch_size=2", "--set", "lr=0.003", "--set", "schedule=\"constant\"", "--set", "pack=true"])
        .args(["--set", "eval_every=0", "--set", "sample_every=0", "--set", "checkpoint_every=0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("sft-")).unwrap();
    let losses: Vec<f64> = std::fs::read_to_string(run.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "metrics" && e["stage"] == "sft")
        .filter_map(|e| e["values"]["loss"].as_f64())
        .collect();
    assert!(losses.len() >= 10, "{losses:?}");
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..3]), mean(&losses[losses.len() - 3..]));
    assert!(last < 0.5 * first, "the loss did not fall: {first} → {last}");

    // In a mixture with text rows, unpacked.
    std::fs::write(dir.join("text.jsonl"), "{\"text\":\"plain text\"}\n{\"text\":\"more text\"}\n").unwrap();
    let profile = dir.join("mix.toml");
    std::fs::write(
        &profile,
        format!(
            "[run]\nname = \"mix\"\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {:?}\nsteps = 3\nbatch_size = 2\n\
             eval_every = 0\nsample_every = 0\ncheckpoint_every = 0\n[stage.data]\nmix = [ {{ jsonl = {:?} }}, {{ jsonl = {:?} }} ]\n",
            model,
            qa,
            dir.join("text.jsonl")
        ),
    )
    .unwrap();
    let out = retort().args(["run", profile.to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A malformed row: its file, line and key, and no run folder.
    let bad_dir = dir.join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let bad = bad_dir.join("bad.jsonl");
    std::fs::write(&bad, format!("{}{{\"context\":\"Zorvia.\",\"qa_list\":[[\"When?\"]]}}\n", rows.lines().next().unwrap().to_owned() + "\n")).unwrap();
    let out = retort().args(["sft", model.to_str().unwrap(), "--jsonl", bad.to_str().unwrap(), "--headless"]).current_dir(&bad_dir).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad.jsonl:2") && text.contains("\"qa_list\"[0] must be [question, answer], two strings"), "{text}");
    // The same in a mixture source of a profile.
    let mix_bad = format!("[ {{ jsonl = {:?} }}, {{ jsonl = {bad:?} }} ]", qa);
    std::fs::write(&profile, std::fs::read_to_string(&profile).unwrap().replace(&format!("mix = [ {{ jsonl = {:?} }}, {{ jsonl = {:?} }} ]", qa, dir.join("text.jsonl")), &format!("mix = {mix_bad}"))).unwrap();
    let out = retort().args(["run", profile.to_str().unwrap(), "--headless"]).current_dir(&bad_dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("data.mix[1]") && text.contains("bad.jsonl:2") && text.contains("\"qa_list\"[0]"), "{text}");
    assert!(!bad_dir.join("runs").exists(), "a run folder was created for bad data");
}
