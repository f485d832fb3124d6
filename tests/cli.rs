//! The `retort` binary end to end: profiles and their errors, run folders, events, resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn retort() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retort"));
    c.env_remove("RETORT_RUNS_DIR");
    c
}

fn run_ok(args: &[&str], cwd: &Path) -> Output {
    let out = retort().args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "retort {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_err(args: &[&str], cwd: &Path) -> String {
    let out = retort().args(args).current_dir(cwd).output().unwrap();
    assert!(!out.status.success(), "retort {args:?} should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn only_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

const SMALL: &[&str] = &["--set", "stage.data.train=60", "--set", "stage.data.test=20"];

#[test]
fn a_run_writes_a_complete_run_folder() {
    let d = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "tasks-demo", "--headless"];
    args.extend(SMALL);
    let out = run_ok(&args, d.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run finished"), "{stdout}");
    let run = only_run(&d.path().join("runs"));
    assert!(run.file_name().unwrap().to_str().unwrap().starts_with("tasks-demo-"));
    for f in ["profile.toml", "manifest.json", "events.jsonl", "data/train.jsonl", "data/test.jsonl"] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let m = manifest(&run);
    assert_eq!(m["status"], "finished");
    assert_eq!(m["stages"][0]["status"], "finished");
    assert_eq!(m["stages"][0]["output"], "data");
    assert_eq!(std::fs::read_to_string(run.join("data/train.jsonl")).unwrap().lines().count(), 60);
    // Every line of the events log is JSON; the log starts and ends the run.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(run.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert_eq!(events.last().unwrap()["outcome"], "finished");
    // The resolved profile reproduces the run: it parses, with the overrides baked in.
    let shown = run_ok(&["profiles", "show", run.join("profile.toml").to_str().unwrap()], d.path());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("train = 60"), "{text}");
    // `retort runs` lists it as finished; `watch` replays the log to the same ending.
    let runs = run_ok(&["runs"], d.path());
    let listing = String::from_utf8_lossy(&runs.stdout);
    assert!(listing.contains("finished") && listing.contains("tasks-demo"), "{listing}");
    let watch = run_ok(&["watch", "--headless", run.to_str().unwrap()], d.path());
    assert!(String::from_utf8_lossy(&watch.stdout).contains("run finished"));
}

#[test]
fn json_mode_prints_parseable_events_and_same_seed_gives_identical_data() {
    let d = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "tasks-demo", "--json", "--name", "a"];
    args.extend(SMALL);
    let out = run_ok(&args, d.path());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert!(lines.len() > 3);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v["event"].is_string() && v["t"].is_number());
    }
    let mut args_b = vec!["run", "tasks-demo", "--headless", "--name", "b"];
    args_b.extend(SMALL);
    run_ok(&args_b, d.path());
    let runs: Vec<PathBuf> = std::fs::read_dir(d.path().join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    let a = runs.iter().find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("a-")).unwrap();
    let b = runs.iter().find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("b-")).unwrap();
    for f in ["data/train.jsonl", "data/test.jsonl"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    // A different seed gives different data.
    let mut args_c = vec!["run", "tasks-demo", "--headless", "--name", "c", "--set", "run.seed=5"];
    args_c.extend(SMALL);
    run_ok(&args_c, d.path());
    let c = std::fs::read_dir(d.path().join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("c-")).unwrap();
    assert_ne!(std::fs::read(a.join("data/test.jsonl")).unwrap(), std::fs::read(c.join("data/test.jsonl")).unwrap());
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const GOOD: &str = "[run]\nname = \"t\"\nseed = 1\n\n[[stage]]\nkind = \"tasks\"\nname = \"data\"\ntask = \"countdown\"\ntrain = 10\ntest = 5\n";

#[test]
fn profile_errors_name_file_line_key_and_fix() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let e = run_err(&["run", "nosuchpreset"], dir);
    assert!(e.contains("no preset named `nosuchpreset`") && e.contains("tasks-demo"), "{e}");

    let p = write(dir, "syntax.toml", "[run]\nname = \"t\"\nseed = = 3\n");
    let e = run_err(&["run", &p], dir);
    assert!(e.contains("syntax.toml:3:") && e.contains("TOML syntax error"), "{e}");

    let p = write(dir, "unknown.toml", &GOOD.replace("seed = 1", "seeed = 1"));
    let e = run_err(&["run", &p], dir);
    assert!(e.contains("unknown.toml:3:1") && e.contains("did you mean `seed`"), "{e}");

    let p = write(dir, "stagekey.toml", &GOOD.replace("train = 10", "trian = 10"));
    let e = run_err(&["run", &p], dir);
    assert!(e.contains("stagekey.toml:9:1") && e.contains("`stage.data.trian`") && e.contains("did you mean `train`"), "{e}");

    let p = write(dir, "type.toml", &GOOD.replace("train = 10", "train = \"many\""));
    let e = run_err(&["run", &p], dir);
    assert!(e.contains("type.toml:9:") && e.contains("invalid type") && e.contains("train"), "{e}");

    let p = write(dir, "kind.toml", &GOOD.replace("kind = \"tasks\"", "kind = \"taks\""));
    let e = run_err(&["run", &p], dir);
    assert!(e.contains("kind.toml:6:") && e.contains("did you mean `tasks`"), "{e}");

    let p = write(dir, "task.toml", &GOOD.replace("countdown", "sudoku"));
    let e = run_err(&["run", &p], dir);
    assert!(e.contains("task.toml:8:") && e.contains("sudoku") && e.contains("countdown"), "{e}");

    let p = write(dir, "good.toml", GOOD);
    let e = run_err(&["run", &p, "--set", "stage.data.nosuch=3"], dir);
    assert!(e.contains("--set stage.data.nosuch=3") && e.contains("unknown key `nosuch`"), "{e}");
    let e = run_err(&["run", &p, "--set", "stage.data.train=lots"], dir);
    assert!(e.contains("--set stage.data.train=lots") && e.contains("invalid type"), "{e}");
    let e = run_err(&["run", &p, "--set", "stage.dta.train=3"], dir);
    assert!(e.contains("no stage named `dta`") && e.contains("did you mean `data`"), "{e}");

    // Nothing was half-written by any of the failures above.
    assert!(!dir.join("runs").exists() || std::fs::read_dir(dir.join("runs")).unwrap().count() == 0);
}

/// Every preset loads, round-trips through its resolved text, and uses current key names only
/// (no deprecation warnings).
#[test]
fn every_preset_shows_and_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let listing = String::from_utf8_lossy(&run_ok(&["profiles"], d.path()).stdout).into_owned();
    let names: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.len() >= 10, "{listing}");
    for name in names {
        let out = run_ok(&["profiles", "show", name], d.path());
        assert!(out.stderr.is_empty(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        let p = write(d.path(), &format!("{name}.toml"), &shown);
        assert_eq!(String::from_utf8_lossy(&run_ok(&["profiles", "show", &p], d.path()).stdout), shown, "{name}");
    }
}

/// The sft, rl and eval stages name their problems with one set of keys. The names each
/// stage used before still load, with one warning a key, and mean what the new ones mean.
const SOURCE_OLD: &str = "[run]\nname = \"t\"\n\n[[stage]]\nkind = \"model-init\"\nname = \"init\"\n\n\
[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = \"@init\"\n[stage.data]\ntask = \"countdown\"\ntrain = 40\ntest = 9\n\n\
[[stage]]\nkind = \"sft\"\nname = \"rows\"\nmodel = \"@init\"\n[stage.data]\njsonl = \"a.jsonl\"\neval_jsonl = \"b.jsonl\"\n\n\
[[stage]]\nkind = \"rl\"\nname = \"grpo\"\nmodel = \"@sft\"\ntask = \"countdown\"\ntask_options = { max_target = 25 }\n\n\
[[stage]]\nkind = \"eval\"\nname = \"eval\"\nmodels = [\"@grpo\"]\ntask = \"countdown\"\nproblems = 7\n";

#[test]
fn old_problem_source_keys_still_load_with_one_warning_each() {
    let d = tempfile::tempdir().unwrap();
    let new = SOURCE_OLD
        .replace("train = 40", "train_problems = 40")
        .replace("test = 9", "test_problems = 9")
        .replace("eval_jsonl", "test_jsonl")
        .replace("task_options", "options")
        .replace("problems = 7", "test_problems = 7");
    let old = write(d.path(), "old.toml", SOURCE_OLD);
    let new = write(d.path(), "new.toml", &new);
    let (a, b) = (run_ok(&["profiles", "show", &old], d.path()), run_ok(&["profiles", "show", &new], d.path()));
    assert_eq!(String::from_utf8_lossy(&a.stdout), String::from_utf8_lossy(&b.stdout), "old and new names resolve alike");
    assert!(b.stderr.is_empty(), "{}", String::from_utf8_lossy(&b.stderr));
    let warnings = String::from_utf8_lossy(&a.stderr).into_owned();
    let lines: Vec<&str> = warnings.lines().collect();
    assert_eq!(lines.len(), 5, "{warnings}");
    for (stage, old_key, new_key) in [
        ("sft", "data.train", "data.train_problems"),
        ("sft", "data.test", "data.test_problems"),
        ("rows", "data.eval_jsonl", "data.test_jsonl"),
        ("grpo", "task_options", "options"),
        ("eval", "problems", "test_problems"),
    ] {
        let want = format!("stage `{stage}`: `{old_key}` is a deprecated name of `{new_key}`");
        assert!(lines.iter().any(|l| l.contains(&want)), "{want}\n{warnings}");
    }
    let shown = String::from_utf8_lossy(&a.stdout).into_owned();
    assert!(shown.contains("train_problems = 40") && shown.contains("test_problems = 7") && shown.contains("max_target = 25"), "{shown}");
    // An old name set by --set sets the new key, and warns once.
    let out = run_ok(&["profiles", "show", &old, "--set", "stage.eval.problems=3", "--set", "stage.grpo.task_options.max_target=30"], d.path());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("test_problems = 3") && shown.contains("max_target = 30"), "{shown}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 5);
    // Old names inside a table set whole are found too.
    let out = run_ok(&["profiles", "show", &new, "--set", "stage.sft.data={ task = \"countdown\", train = 12 }"], d.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("train_problems = 12"));
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(warnings.lines().count() == 1 && warnings.contains("`data.train` is a deprecated name"), "{warnings}");
    // Errors name the key as written, with file and line.
    let p = write(d.path(), "type.toml", &SOURCE_OLD.replace("problems = 7", "problems = \"x\""));
    let e = run_err(&["profiles", "show", &p], d.path());
    assert!(e.contains("type.toml:37:") && e.contains("`stage.eval.problems`") && e.contains("invalid type"), "{e}");
    let p = write(d.path(), "both.toml", &SOURCE_OLD.replace("problems = 7", "problems = 7\ntest_problems = 7"));
    let e = run_err(&["profiles", "show", &p], d.path());
    assert!(e.contains("`stage.eval.problems`") && e.contains("keep only `test_problems`"), "{e}");
    let p = write(d.path(), "typo.toml", &SOURCE_OLD.replace("task_options", "task_optons"));
    let e = run_err(&["profiles", "show", &p], d.path());
    assert!(e.contains("typo.toml:30:1") && e.contains("did you mean `options`"), "{e}");
    let p = write(d.path(), "data.toml", &SOURCE_OLD.replace("train = 40", "trian = 40"));
    let e = run_err(&["profiles", "show", &p], d.path());
    assert!(e.contains("data.toml:14:1") && e.contains("`stage.sft.data.trian`") && e.contains("did you mean `train_problems`"), "{e}");
    // A key the kind does not take is unknown there.
    let p = write(d.path(), "eval.toml", &SOURCE_OLD.replace("problems = 7", "train_problems = 7"));
    let e = run_err(&["profiles", "show", &p], d.path());
    assert!(e.contains("unknown key `train_problems`") && e.contains("did you mean `test_problems`"), "{e}");
}

#[test]
fn unwritable_runs_dir_and_bad_resume_targets_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let e = run_err(&["run", "--runs-dir", file.join("sub").to_str().unwrap()], d.path());
    assert!(e.contains("runs folder") && e.contains("--runs-dir"), "{e}");

    let e = run_err(&["run", "--resume", d.path().to_str().unwrap()], d.path());
    assert!(e.contains("not a retort run folder"), "{e}");

    let mut args = vec!["run", "tasks-demo", "--headless"];
    args.extend(SMALL);
    run_ok(&args, d.path());
    let run = only_run(&d.path().join("runs"));
    let e = run_err(&["run", "--resume", run.to_str().unwrap()], d.path());
    assert!(e.contains("already finished"), "{e}");
}

/// Wait until the events log of the only run under `runs` contains `needle`.
fn wait_for_event(runs: &Path, needle: &str, timeout: Duration) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Ok(mut it) = std::fs::read_dir(runs) {
            if let Some(Ok(e)) = it.next() {
                let text = std::fs::read_to_string(e.path().join("events.jsonl")).unwrap_or_default();
                if text.contains(needle) {
                    return e.path();
                }
            }
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {needle}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_interrupts_gracefully_and_resume_finishes() {
    let d = tempfile::tempdir().unwrap();
    // A stage long enough to interrupt: many arithmetic instances.
    let p = write(
        d.path(),
        "long.toml",
        "[run]\nname = \"long\"\n\n[[stage]]\nkind = \"tasks\"\nname = \"data\"\ntask = \"arithmetic\"\ntrain = 400000\ntest = 10\n",
    );
    let mut child = retort().args(["run", "--headless", &p]).current_dir(d.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let run = wait_for_event(&d.path().join("runs"), "\"progress\"", Duration::from_secs(60));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let m = manifest(&run);
    assert_eq!(m["status"], "interrupted");
    assert_eq!(m["stages"][0]["status"], "interrupted");
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(text.contains("\"stopping\"") && text.trim_end().ends_with("}"));
    assert!(text.lines().last().unwrap().contains("\"outcome\":\"interrupted\""));
    // `runs` shows it as interrupted.
    let listing = String::from_utf8_lossy(&run_ok(&["runs"], d.path()).stdout).into_owned();
    assert!(listing.contains("interrupted"), "{listing}");
    // Resume restarts the interrupted stage and finishes the run in the same folder.
    let out = run_ok(&["run", "--headless", "--resume", run.to_str().unwrap()], d.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("resuming"));
    let m = manifest(&run);
    assert_eq!(m["status"], "finished");
    assert_eq!(std::fs::read_to_string(run.join("data/train.jsonl")).unwrap().lines().count(), 400_000);
    let log = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert_eq!(log.matches("\"run_started\"").count(), 2, "the log keeps both attempts");
}

#[test]
fn a_failing_stage_marks_the_run_failed() {
    let d = tempfile::tempdir().unwrap();
    // Asking for more distinct instances than the task can make fails inside the stage.
    let p = write(
        d.path(),
        "tiny.toml",
        "[run]\nname = \"small\"\n\n[[stage]]\nkind = \"tasks\"\nname = \"data\"\ntask = \"arithmetic\"\ntrain = 100000\ntest = 10\n[stage.options]\ndigits = 1\n",
    );
    let out = retort().args(["run", "--headless", &p]).current_dir(d.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let run = only_run(&d.path().join("runs"));
    let m = manifest(&run);
    assert_eq!(m["status"], "failed");
    assert!(m["error"].as_str().unwrap().contains("data"));
    assert!(!run.join("data/train.jsonl").exists(), "no half-written split");
}

#[test]
fn profiles_runs_doctor_and_tasks_commands_work() {
    let d = tempfile::tempdir().unwrap();
    let out = run_ok(&["profiles"], d.path());
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.contains("tasks-demo"));
    assert!(listing.lines().any(|l| l.starts_with("flowrl-vs-grpo-tiny") && l.contains("(default)")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("flowrl-qwen2.5-7b") && l.contains("paper scale")), "{listing}");
    let out = run_ok(&["profiles", "show", "tasks-demo"], d.path());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("seed = 0") && shown.contains("device = \"auto\""), "defaults are filled in: {shown}");
    // Round trip: the resolved text resolves to itself.
    let p = write(d.path(), "resolved.toml", &shown);
    let again = run_ok(&["profiles", "show", &p], d.path());
    assert_eq!(String::from_utf8_lossy(&again.stdout), shown);
    // Overrides that only make sense together are validated together.
    let out = run_ok(
        &["profiles", "show", "tasks-demo", "--set", "stage.data.options.min_numbers=3", "--set", "stage.data.options.max_numbers=3", "--set", "stage.data.options.min_solutions=2"],
        d.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("min_numbers = 3"));
    let out = run_ok(&["doctor"], d.path());
    let doc = String::from_utf8_lossy(&out.stdout);
    assert!(doc.contains("cpu:") && doc.contains("hugging face cache"), "{doc}");
    let out = run_ok(&["runs"], d.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no runs"));
    let out = run_ok(&["tasks", "sample", "countdown", "-n", "2"], d.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("solutions"));
    let e = run_err(&["tasks", "sample", "sudoku"], d.path());
    assert!(e.contains("countdown"), "{e}");
}
