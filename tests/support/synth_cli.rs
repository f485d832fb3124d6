//! Running the `retort` binary from the synth tests (synth, synth_stats, toedit): a command in
//! a folder, its success or failure, and the JSON lines of an output file.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

pub fn retort(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retort")).args(args).env_remove("RETORT_RUNS_DIR").current_dir(cwd).output().unwrap()
}

/// Stdout of a command that must succeed.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = retort(cwd, args);
    assert!(out.status.success(), "retort {args:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr of a command that must fail.
pub fn err(cwd: &Path, args: &[&str]) -> String {
    let out = retort(cwd, args);
    assert!(!out.status.success(), "retort {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout and stderr of a command that must fail: a run's error goes to its log on stdout, a
/// bad profile's to stderr.
pub fn err_with_log(cwd: &Path, args: &[&str]) -> String {
    let out = retort(cwd, args);
    assert!(!out.status.success(), "retort {args:?} should fail");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Start `retort ARGS` in `cwd`, SIGKILL it as soon as its output folder `out` holds a first
/// checkpoint, and check it left no final-looking `main_file`: a resumable half-done synth.
pub fn kill_after_first_checkpoint(cwd: &Path, args: &[&str], out: &str, main_file: &str) {
    let state = cwd.join(out).join(".synth-partial/state.json");
    kill_when(cwd, args, || state.exists(), "no checkpoint");
    assert!(!cwd.join(out).join("stats.json").exists(), "the synth finished before the kill; the corpus is too small to test resume");
    assert!(!cwd.join(out).join(main_file).exists(), "a killed synth must not leave a final-looking file");
}

/// Start `retort ARGS` in `cwd` and SIGKILL it as soon as `ready()` holds (`what` names what
/// never came, within 5 minutes).
pub fn kill_when(cwd: &Path, args: &[&str], ready: impl Fn() -> bool, what: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_retort"))
        .args(args)
        .env_remove("RETORT_RUNS_DIR")
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what} within 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

/// Every run's events of `cwd/runs`, concatenated.
pub fn all_events(cwd: &Path) -> String {
    std::fs::read_dir(cwd.join("runs"))
        .map(|d| d.map(|e| std::fs::read_to_string(e.unwrap().path().join("events.jsonl")).unwrap_or_default()).collect())
        .unwrap_or_default()
}
