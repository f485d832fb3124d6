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
