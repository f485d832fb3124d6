//! `retort doctor --selftest` and `retort preflight` through the binary.

use std::process::Command;

fn retort(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_retort")).args(args).env_remove("RETORT_RUNS_DIR").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_selftest_passes_on_the_cpu_with_one_line_per_check() {
    let (code, out, err) = retort(&["doctor", "--selftest", "--device", "cpu"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for check in ["decoder forward f32", "decoder forward bf16", "encoder forward f32", "encoder forward bf16", "sampling", "sft step", "grpo step", "flowrl step"] {
        let line = out.lines().find(|l| l.contains(check)).unwrap_or_else(|| panic!("no `{check}` line in:\n{out}"));
        assert!(line.starts_with("PASS"), "{line}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("tokens/s"), "the benchmarks' figures are missing:\n{out}");
}

#[test]
fn the_selftest_fails_cleanly_on_a_device_that_is_not_built_in() {
    if cfg!(feature = "cuda") {
        return;
    }
    let (code, _, err) = retort(&["doctor", "--selftest", "--device", "cuda:0"]);
    assert_ne!(code, 0);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn preflight_refuses_the_7b_run_on_an_80_gb_card_and_accepts_the_variant() {
    let card = ["--device", "cuda:0", "--device-memory", "80GiB", "--host-memory", "1TiB"];
    let (code, out, _) = retort(&[&["preflight", "flowrl-qwen2.5-7b"][..], &card[..]].concat());
    assert_eq!(code, 1, "{out}");
    // 4 bytes × 7,615,616,512 parameters = 28.37 GiB for the policy, again for its gradients
    // and the reference.
    assert!(out.contains("policy weights (f32)") && out.contains("28.37 GiB"), "{out}");
    assert!(out.contains("DOES NOT FIT: cuda:0 memory"), "{out}");
    let (code, out, _) = retort(&[&["preflight", "flowrl-qwen2.5-1.5b-80gb"][..], &card[..]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fits"), "{out}");
}

#[test]
fn run_refuses_before_making_a_run_folder_when_the_host_is_too_small() {
    let dir = tempfile::tempdir().unwrap();
    // 100,000 rows of 4096 tokens: terabytes of activations on any machine.
    let (code, _, err) = retort(&[
        "run",
        "sft-countdown-tiny",
        "--headless",
        "--runs-dir",
        dir.path().join("runs").to_str().unwrap(),
        "--set",
        "stage.sft.batch_size=100000",
        "--set",
        "stage.sft.max_len=4096",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("memory preflight") && err.contains("host RAM") && err.contains("--force"), "{err}");
    assert!(!dir.path().join("runs").exists(), "a refused run must leave no folder");
}
