//! What a hostile but fair new user tried, kept as regression tests: code completions that
//! exit early, over-long and malformed inputs, preflight gaps, two resumes of one run, a
//! terminal that disappears under the dashboard, full disks. Each test names the defect it
//! guards (issue "Reliability: what a hostile new user found").

use retort::tasks::code::{verify_code, verify_tests, CheckTest, CodeTests};
use retort::sandbox::{resolve_python, ExecStatus, Limits};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn retort() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retort"));
    c.env_remove("RETORT_RUNS_DIR").env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE");
    c
}

fn run_in(args: &[&str], cwd: &Path) -> Output {
    retort().args(args).current_dir(cwd).output().unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn python_or_skip(test: &str) -> Option<Limits> {
    match resolve_python("python3") {
        Ok(_) => Some(Limits { wall_s: 5.0, cpu_s: 4, ..Limits::default() }),
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            None
        }
    }
}

// ---- Defect 3: a code completion that exits early is not correct. ----

const TESTS: &str = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n";

#[test]
fn early_exits_are_not_graded_correct() {
    let Some(limits) = python_or_skip("early_exits") else { return };
    let cases = [
        ("sys.exit before the function", "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n"),
        ("os._exit", "import os\ndef add(a, b):\n    return a * b\nos._exit(0)\n"),
        (
            "atexit hook after a failing assertion",
            "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return a - b\n",
        ),
        ("SystemExit(0) after a wrong definition", "def add(a, b):\n    return 0\nraise SystemExit(0)\n"),
        (
            "daemon thread calling os._exit",
            "import os, threading, time\ndef add(a, b):\n    time.sleep(0.5)\n    return a * b\n\
             threading.Thread(target=lambda: os._exit(0), daemon=True).start()\ntime.sleep(0.2)\n",
        ),
        ("exit() at module level", "def add(a, b):\n    return a + b\nexit()\n"),
    ];
    for (what, program) in cases {
        let completion = format!("```python\n{program}```\n");
        let verdict = verify_code(&completion, TESTS, &limits);
        assert!(!verdict.correct, "{what}: graded correct: {verdict:?}");
        assert_eq!(verdict.reward, 0.0, "{what}");
    }
    // The atexit case still shows the assertion that failed.
    let verdict = verify_code(
        "```python\nimport atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return a - b\n```",
        TESTS,
        &limits,
    );
    assert!(verdict.output.contains("AssertionError"), "{verdict:?}");
    // An honest exit status 0 with early exit is named as such.
    let verdict = verify_code("```python\nimport sys\nsys.exit(0)\n```", TESTS, &limits);
    assert_eq!(verdict.status, Some(ExecStatus::Fail));
    assert!(verdict.reason.contains("exited before its tests finished"), "{}", verdict.reason);
}

/// The same exits on the HumanEval path (prompt + completion, then the test, then
/// `check(entry_point)`): none may pass before `check` has run to its end.
#[test]
fn humaneval_style_early_exits_are_not_graded_correct() {
    let Some(limits) = python_or_skip("humaneval_early_exits") else { return };
    let check = CheckTest::new(
        "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
        "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
        "add",
    )
    .unwrap();
    let tests = CodeTests::Check(check);
    let cases = [
        ("sys.exit(0) before check", "    return 0\nimport sys\nsys.exit(0)\n"),
        ("os._exit(0) before check", "    return 0\nimport os\nos._exit(0)\n"),
        ("raise SystemExit inside the function", "    raise SystemExit(0)\n"),
        ("os._exit(0) inside the function", "    import os\n    os._exit(0)\n"),
        ("atexit hook after a failing check", "    return a - b\nimport atexit, os\natexit.register(lambda: os._exit(0))\n"),
        (
            "daemon thread calling os._exit",
            "    import time\n    time.sleep(0.5)\n    return a * b\nimport os, threading, time\n\
             threading.Thread(target=lambda: os._exit(0), daemon=True).start()\ntime.sleep(0.2)\n",
        ),
        ("a check of its own, before the test's", "    return 0\ndef check(candidate):\n    pass\n"),
        ("an unclosed string swallowing the test", "    return 0\ns = \"\"\"\n"),
    ];
    for (what, completion) in cases {
        let verdict = verify_tests(completion, &tests, &limits);
        assert!(!verdict.correct, "{what}: graded correct: {verdict:?}");
        assert_eq!(verdict.reward, 0.0, "{what}");
    }
    let verdict = verify_tests("    return a + b\n", &tests, &limits);
    assert!(verdict.correct, "{verdict:?}");
}

#[test]
fn honest_programs_still_pass_with_their_output_intact() {
    let Some(limits) = python_or_skip("honest_programs") else { return };
    let program = "```python\nfrom __future__ import annotations\nimport sys\n\
                   def add(a: int, b: int) -> int:\n    return a + b\n\
                   if __name__ == \"__main__\":\n    print(\"main ran\", end=\"\")\n```";
    let verdict = verify_code(program, TESTS, &limits);
    assert!(verdict.correct, "{verdict:?}");
    assert_eq!(verdict.reason, "ok");
    assert_eq!(verdict.output, "main ran", "the marker is not part of the output shown");
    // A failing assert still names the assert line.
    let verdict = verify_code("```python\ndef add(a, b):\n    return a * b\n```", TESTS, &limits);
    assert_eq!(verdict.reason, "tests failed: assert add(2, 3) == 5 | AssertionError");
    // Source text that looks like Python string syntax cannot break out of the harness.
    let tricky = "```python\ns = \"\\\"\\\"\\\" and ''' inside\"\nt = '\\n'  # \"\"\" ''' \\\ndef add(a, b):\n    return a + b\n```";
    let verdict = verify_code(tricky, TESTS, &limits);
    assert!(verdict.correct, "{verdict:?}");
}

// ---- Defect 1: a dashboard whose terminal disappears stops the run and exits. ----

/// A pseudo-terminal pair: the master stays here, the slave path is given to the child.
struct Pty {
    master: std::fs::File,
    slave_path: String,
}

fn open_pty() -> Pty {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on a descriptor we own; checked for errors.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        // Not inherited by the child (or any other test's child): the terminal must vanish
        // when this test closes it.
        assert_eq!(libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC), 0);
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(fd)).to_string_lossy().into_owned();
        let size = libc::winsize { ws_row: 30, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
        libc::ioctl(fd, libc::TIOCSWINSZ, &size);
        Pty { master: std::fs::File::from_raw_fd(fd), slave_path: name }
    }
}

fn wait_for_file_text(path: &Path, needle: &str, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).unwrap_or_default().contains(needle) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn a_dashboard_whose_terminal_disappears_stops_the_run_and_exits() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    // A stage far too long to finish within the test.
    let p = write(
        d.path(),
        "long.toml",
        "[run]\nname = \"long\"\n\n[[stage]]\nkind = \"model-init\"\nname = \"init\"\npreset = \"tiny\"\n\n\
         [[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = \"@init\"\nsteps = 1000000\nbatch_size = 2\neval_every = 0\n\
         sample_every = 0\ncheckpoint_every = 1000000\neval_samples = 0\n[stage.data]\ntask = \"countdown\"\ntrain = 50\ntest = 5\n",
    );
    let pty = open_pty();
    let slave = || std::fs::OpenOptions::new().read(true).write(true).open(&pty.slave_path).unwrap();
    // The slave is the child's stdin/stdout/stderr but not its controlling terminal, so
    // closing the master sends no SIGHUP: only end-of-file / I/O errors tell it.
    let mut child = retort()
        .args(["run", &p.display().to_string()])
        .current_dir(d.path())
        .env("TERM", "xterm-256color")
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    // Drain the master (the dashboard draws continuously) until told to hang up.
    let hang_up = Arc::new(AtomicBool::new(false));
    let flag = hang_up.clone();
    let mut master = pty.master;
    let drainer = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while !flag.load(Ordering::SeqCst) {
            let mut p = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            if unsafe { libc::poll(&mut p, 1, 50) } > 0 && master.read(&mut buf).unwrap_or(0) == 0 {
                break;
            }
        }
        drop(master); // the terminal disappears
    });
    let runs = d.path().join("runs");
    let start = std::time::Instant::now();
    let run = loop {
        let found = std::fs::read_dir(&runs).ok().and_then(|mut it| it.next()).and_then(|e| e.ok()).map(|e| e.path());
        if let Some(run) = found.filter(|r| wait_for_file_text(&r.join("events.jsonl"), "\"progress\"", std::time::Duration::from_millis(200))) {
            break run;
        }
        assert!(start.elapsed().as_secs() < 120, "the run never started");
    };
    hang_up.store(true, Ordering::SeqCst);
    drainer.join().unwrap();
    // The process must end by itself: it stops the run (checkpoint) and exits. The bound is
    // generous (a loaded machine) yet finite; before the fix it spun forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            for t in std::fs::read_dir(format!("/proc/{}/task", child.id())).into_iter().flatten().flatten() {
                let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
                eprintln!("thread {:?} {} stat {} wchan {}", t.file_name(), read("comm").trim(), read("stat"), read("wchan"));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.is_some(), "retort kept running after its terminal disappeared");
    // It ended on its own, not by a crash on the dead terminal.
    assert!(status.unwrap().code().is_some_and(|c| c != 101), "{status:?}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "interrupted", "{m}");
    assert_eq!(m["stages"][1]["status"], "interrupted", "{m}");
    let log = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"outcome\":\"interrupted\""), "the run ended gracefully");
}

// ---- Shared fixtures for the binary tests below. ----

fn tiny_model(dir: &Path) -> PathBuf {
    let out = dir.join("tiny");
    let o = run_in(&["model", "init", "--preset", "tiny", "--out", out.to_str().unwrap()], dir);
    assert!(o.status.success(), "{}", stderr_of(&o));
    out
}

/// A profile of one sft stage on `model` with JSONL `data`, plus `extra` TOML lines.
fn sft_profile(dir: &Path, model: &str, data: &str, extra: &str) -> String {
    let text = format!(
        "[run]\nname = \"h\"\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = \"{model}\"\nsteps = 2\nbatch_size = 2\n\
         eval_every = 0\nsample_every = 0\neval_samples = 0\n{extra}\n[stage.data]\njsonl = \"{data}\"\n"
    );
    write(dir, "sft.toml", &text).display().to_string()
}

fn no_run_started(dir: &Path) -> bool {
    let runs = dir.join("runs");
    !runs.exists() || std::fs::read_dir(&runs).unwrap().count() == 0
}

fn pair_rows(n: usize) -> String {
    (0..n).map(|i| format!("{{\"prompt\":\"{i}+1=\",\"response\":\"{}\"}}\n", i + 1)).collect()
}

// ---- Defect 4: preflight gaps. ----

#[test]
fn bad_sft_numbers_are_refused_before_the_run_starts() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let data = write(d.path(), "d.jsonl", &pair_rows(4));
    let base = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "");
    for (set, needle) in [
        ("stage.sft.lr=-1", "learning rate must be finite and > 0"),
        ("stage.sft.lr=nan", "learning rate must be finite and > 0"),
        ("stage.sft.lr=inf", "learning rate must be finite and > 0"),
        ("stage.sft.steps=0", "steps must be at least 1"),
    ] {
        let o = run_in(&["run", "--headless", &base, "--set", set], d.path());
        assert_eq!(o.status.code(), Some(2), "{set}: {}", stderr_of(&o));
        let e = stderr_of(&o);
        assert!(e.contains(needle) && e.contains(&format!("--set {set}")), "{set}: {e}");
        assert!(no_run_started(d.path()), "{set}: a run folder was created");
    }
    // In the file itself, the error names the file, line and key.
    let in_file = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "lr = -1.0\n");
    let e = stderr_of(&run_in(&["run", "--headless", &in_file], d.path()));
    assert!(e.contains("sft.toml:") && e.contains("stage.sft.lr") && e.contains("learning rate"), "{e}");
}

#[test]
fn references_to_the_wrong_kind_of_stage_are_refused_at_load() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "wrong.toml",
        "[run]\nname = \"w\"\n\n[[stage]]\nkind = \"tasks\"\nname = \"data\"\ntask = \"countdown\"\ntrain = 10\ntest = 5\n\n\
         [[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = \"@data\"\n[stage.data]\ntask = \"countdown\"\n",
    );
    let o = run_in(&["run", "--headless", p.to_str().unwrap()], d.path());
    let e = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("model = \"@data\" needs a model folder") && e.contains("stage `data` (tasks) makes a data folder"), "{e}");
    assert!(no_run_started(d.path()));
    let p = write(
        d.path(),
        "wrong_rl.toml",
        "[run]\nname = \"w\"\n\n[[stage]]\nkind = \"model-init\"\nname = \"init\"\npreset = \"tiny\"\n\n\
         [[stage]]\nkind = \"rl\"\nname = \"rl\"\nmodel = \"@init\"\nfrom = \"@init\"\n",
    );
    let e = stderr_of(&run_in(&["run", "--headless", p.to_str().unwrap()], d.path()));
    assert!(e.contains("from = \"@init\" needs a data folder") && e.contains("stage `init` (model-init) makes a model folder"), "{e}");
    assert!(no_run_started(d.path()));
}

#[test]
fn a_missing_model_folder_is_named_as_such() {
    let d = tempfile::tempdir().unwrap();
    let data = write(d.path(), "d.jsonl", &pair_rows(4));
    let p = sft_profile(d.path(), "/no/such/model", data.to_str().unwrap(), "");
    let e = stderr_of(&run_in(&["run", "--headless", &p], d.path()));
    assert!(e.contains("/no/such/model: no such model folder"), "{e}");
    assert!(!e.contains("tokenizer.json"), "{e}");
    assert!(no_run_started(d.path()));
    let e = stderr_of(&run_in(&["generate", "/no/such/model", "--prompt", "x"], d.path()));
    assert!(e.contains("no such model folder"), "{e}");
}

#[test]
fn eval_out_to_an_unwritable_path_fails_before_sampling() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let blocker = write(d.path(), "afile", "x");
    let out = blocker.join("sub").join("r.json");
    let o = run_in(
        &["eval", model.to_str().unwrap(), "--task", "countdown", "--n", "2", "--k", "1", "--problems", "2", "--out", out.to_str().unwrap()],
        d.path(),
    );
    let e = stderr_of(&o);
    assert!(!o.status.success());
    assert!(e.contains(&format!("{}", blocker.display())), "{e}");
    assert!(!e.contains("samples/s"), "it sampled before failing: {e}");
}

// ---- Defect 2: over-long inputs are refused (or skipped) while reading, before compute. ----

#[test]
fn over_long_prompts_are_refused_naming_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    // A 20,000-character prompt (the model's context is 256) on line 2.
    let long = "7".repeat(20_000);
    let math = write(d.path(), "math.jsonl", &format!("{{\"prompt\":\"1+1=\",\"answer\":\"2\"}}\n{{\"prompt\":\"{long}\",\"answer\":\"1\"}}\n"));
    let args = ["eval", model.to_str().unwrap(), "--jsonl", math.to_str().unwrap(), "--verifier", "math", "--n", "2", "--k", "1"];
    let o = run_in(&args, d.path());
    let e = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("math.jsonl:2: the prompt is") && e.contains("context of 256 tokens"), "{e}");
    // With --too-long skip the long row is left out and the rest is evaluated.
    let mut skip = args.to_vec();
    skip.extend(["--too-long", "skip", "--json"]);
    let o = run_in(&skip, d.path());
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("left out 1 problem"), "{}", stderr_of(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(doc["problems"].as_array().map(|p| p.len()), Some(1), "{doc}");

    // A prompt a little past the context (not only huge ones) is refused too.
    let near = "1".repeat(250);
    let math = write(d.path(), "near.jsonl", &format!("{{\"prompt\":\"{near}\",\"answer\":\"1\"}}\n"));
    let e = stderr_of(&run_in(&["eval", model.to_str().unwrap(), "--jsonl", math.to_str().unwrap(), "--verifier", "math", "--n", "1", "--k", "1"], d.path()));
    assert!(e.contains("near.jsonl:1: the prompt is") && e.contains("max_new_tokens = 24"), "{e}");
}

#[test]
fn an_rl_stage_with_a_huge_prompt_fails_cleanly_before_rollouts() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let huge = "9".repeat(5_000_000);
    let math = write(d.path(), "rl.jsonl", &format!("{{\"prompt\":\"1+1=\",\"answer\":\"2\"}}\n{{\"prompt\":\"{huge}\",\"answer\":\"1\"}}\n"));
    let p = write(
        d.path(),
        "rl.toml",
        &format!(
            "[run]\nname = \"r\"\n\n[[stage]]\nkind = \"rl\"\nname = \"rl\"\nmodel = \"{}\"\njsonl = \"{}\"\nverifier = \"math\"\nsteps = 1\n\
             prompts_per_step = 1\ngroup_size = 2\nmax_new_tokens = 8\neval_every = 0\n",
            model.display(),
            math.display()
        ),
    );
    let o = run_in(&["run", "--headless", p.to_str().unwrap()], d.path());
    let e = format!("{}{}", stdout_of(&o), stderr_of(&o));
    assert!(!o.status.success());
    assert!(e.contains("rl.jsonl:2: the prompt is 5000000 bytes"), "{e}");
    let run = std::fs::read_dir(d.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "failed", "the manifest is not left at running: {m}");
}

#[test]
fn sft_rows_are_bounded_while_reading() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    // One 9 MB line: over the 8 MiB row limit, refused without reading it whole.
    let mut text = pair_rows(3);
    text.push_str(&format!("{{\"text\":\"{}\"}}\n", "a".repeat(9_000_000)));
    let data = write(d.path(), "big.jsonl", &text);
    let p = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "");
    let e = stderr_of(&run_in(&["run", "--headless", &p], d.path()));
    assert!(e.contains("big.jsonl:4: the line is longer than 8388608 bytes"), "{e}");
    assert!(no_run_started(d.path()));
    // A row over max_len with too_long = "error" names its line, before training.
    let mut text = pair_rows(3);
    text.push_str(&format!("{{\"prompt\":\"x\",\"response\":\"{}\"}}\n", "b".repeat(100)));
    let data = write(d.path(), "long.jsonl", &text);
    let p = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "max_len = 32\ntoo_long = \"error\"\n");
    let o = run_in(&["run", "--headless", &p], d.path());
    let e = format!("{}{}", stdout_of(&o), stderr_of(&o));
    assert!(e.contains("long.jsonl:4: the example is 102 tokens, longer than max_len = 32"), "{e}");
}

// ---- Defect 7: smaller ones. ----

#[test]
fn a_byte_order_mark_is_accepted_and_bad_utf8_is_named_by_line() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(pair_rows(4).as_bytes());
    let data = d.path().join("bom.jsonl");
    std::fs::write(&data, &bom).unwrap();
    let p = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "");
    let o = run_in(&["run", "--headless", &p], d.path());
    assert!(o.status.success(), "{}", stderr_of(&o));
    let mut bad = pair_rows(2).into_bytes();
    bad.extend(b"{\"prompt\":\"\xff\",\"response\":\"1\"}\n");
    let data = d.path().join("bad.jsonl");
    std::fs::write(&data, &bad).unwrap();
    let p = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "");
    let e = stderr_of(&run_in(&["run", "--headless", &p], d.path()));
    assert!(e.contains("bad.jsonl:3: invalid UTF-8 at byte 11 of the line"), "{e}");
}

#[test]
fn model_info_validates_the_folder() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let o = run_in(&["model", "info", model.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr_of(&o));
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 1000]).unwrap();
    let o = run_in(&["model", "info", model.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(2), "truncated weights pass as fine: {}", stdout_of(&o));
    assert!(stderr_of(&o).contains("truncated or corrupt"), "{}", stderr_of(&o));
    std::fs::write(&weights, &bytes).unwrap();
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"num_hidden_layers\": 4", "\"num_hidden_layers\": 5");
    std::fs::write(&config, text).unwrap();
    let o = run_in(&["model", "info", model.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("model.layers.4") && stderr_of(&o).contains("missing"), "{}", stderr_of(&o));
}

#[test]
fn user_errors_print_no_backtrace_even_with_rust_backtrace_set() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    for args in [
        vec!["generate", model.to_str().unwrap(), "--prompt", "1+1=", "--top-p", "0"],
        vec!["model", "info", "/no/such/model"],
        vec!["run", "nosuchpreset"],
    ] {
        let o = retort().args(&args).current_dir(d.path()).env("RUST_BACKTRACE", "1").output().unwrap();
        let e = stderr_of(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.starts_with("error: "), "{args:?}: {e}");
        assert!(!e.contains("backtrace") && !e.contains("  0: ") && !e.contains("at /"), "{args:?} printed a backtrace: {e}");
    }
}

#[test]
fn watch_names_unreadable_lines_and_an_empty_log() {
    let d = tempfile::tempdir().unwrap();
    let o = run_in(&["run", "tasks-demo", "--headless", "--set", "stage.data.train=20", "--set", "stage.data.test=5"], d.path());
    assert!(o.status.success(), "{}", stderr_of(&o));
    let run = std::fs::read_dir(d.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    let events = run.join("events.jsonl");
    let mut text = std::fs::read_to_string(&events).unwrap();
    let lines = text.lines().count();
    text.push_str("{broken\n{\"t\":1.0,\"event\":\"hologram\"}\n");
    std::fs::write(&events, &text).unwrap();
    let o = run_in(&["watch", run.to_str().unwrap(), "--headless"], d.path());
    let e = stderr_of(&o);
    assert!(e.contains(&format!("events.jsonl:{}: skipped: not valid JSON", lines + 1)), "{e}");
    assert!(e.contains(&format!("events.jsonl:{}: skipped: an event this version of retort does not know", lines + 2)), "{e}");
    std::fs::write(&events, "").unwrap();
    let o = run_in(&["watch", run.to_str().unwrap(), "--headless"], d.path());
    assert!(stderr_of(&o).contains("is empty: the run wrote no event"), "{}", stderr_of(&o));
}

// ---- Defect 5: one process per run folder. ----

#[test]
fn a_second_resume_of_a_live_run_is_refused_with_the_holders_pid() {
    let d = tempfile::tempdir().unwrap();
    let o = run_in(&["run", "tasks-demo", "--headless", "--set", "stage.data.train=20", "--set", "stage.data.test=5"], d.path());
    assert!(o.status.success(), "{}", stderr_of(&o));
    let run = std::fs::read_dir(d.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    // Make it resumable: as if it had been interrupted.
    let manifest = run.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("\"finished\"", "\"interrupted\"");
    std::fs::write(&manifest, text).unwrap();
    // This test process plays the live holder of the run.
    let holder = retort::run::RunLock::acquire(&run).unwrap();
    let o = run_in(&["run", "--headless", "--resume", run.to_str().unwrap()], d.path());
    let e = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(&format!("is in use by process {}", std::process::id())), "{e}");
    assert_eq!(std::fs::read_to_string(run.join("events.jsonl")).unwrap().matches("\"run_started\"").count(), 1, "the refused resume wrote nothing");
    drop(holder);
    let o = run_in(&["run", "--headless", "--resume", run.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr_of(&o));
}

// ---- Defect 6: leftovers on a full disk (simulated with a file-size limit). ----

/// Run retort with writes beyond `kib` KiB failing (EFBIG, as a full disk fails with ENOSPC).
fn run_with_file_limit(args: &[&str], cwd: &Path, kib: u64) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let script = format!("trap '' XFSZ; ulimit -f {kib}; exec '{}' {}", env!("CARGO_BIN_EXE_retort"), quoted.join(" "));
    Command::new("sh").arg("-c").arg(script).current_dir(cwd).env_remove("RUST_BACKTRACE").output().unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        let empty = entry.is_file() && std::fs::metadata(&entry).map(|m| m.len() == 0).unwrap_or(false);
        if name.contains(".tmp") || (empty && name.ends_with(".png")) {
            out.push(entry.display().to_string());
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_failed_model_init_leaves_no_folder_and_names_the_path_once() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m");
    let o = run_with_file_limit(&["model", "init", "--preset", "tiny", "--out", out.to_str().unwrap()], d.path(), 64);
    let e = stderr_of(&o);
    assert!(!o.status.success(), "the weights fit in 64 KiB?");
    assert!(!out.exists(), "a half model folder was left: {:?}", walk(&out));
    assert_eq!(e.matches("model.safetensors").count(), 1, "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn a_failed_checkpoint_or_report_leaves_nothing_half_written() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let data = write(d.path(), "d.jsonl", &pair_rows(8));
    let p = sft_profile(d.path(), model.to_str().unwrap(), data.to_str().unwrap(), "checkpoint_every = 1\n");
    // A tiny model's checkpoint (weights + AdamW moments) is several MB; the logs are small.
    let o = run_with_file_limit(&["run", "--headless", &p], d.path(), 512);
    let text = format!("{}{}", stdout_of(&o), stderr_of(&o));
    assert!(!o.status.success(), "{text}");
    let run = std::fs::read_dir(d.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    assert!(text.contains("cannot write checkpoint") && text.contains("step-00000001"), "{text}");
    // Said once: not repeated by the error's own causes, nor by the run's closing line.
    assert_eq!(text.matches("os error 27").count(), 1, "{text}");
    assert_eq!(text.matches("cannot write checkpoint").count(), 1, "{text}");
    assert_eq!(leftovers(&run), Vec::<String>::new());
    // The report of a run cannot be written under a 1 KiB limit: no empty PNG stays.
    let o = run_with_file_limit(&["report", run.to_str().unwrap()], d.path(), 1);
    assert!(!o.status.success());
    assert_eq!(leftovers(&run), Vec::<String>::new(), "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("cannot write"), "{}", stderr_of(&o));
}
