//! `retort synth` end to end: the tiny-domain generator feeding AdaptLLM, what the output
//! folder holds, determinism for a seed, the dry run, and bad input named before any work.

use std::path::Path;
#[path = "support/synth_cli.rs"]
mod support;
use support::{all_events, err, kill_after_first_checkpoint, lines, ok};

fn small_corpora(dir: &Path) {
    ok(
        dir,
        &["synth", "tiny-domain", "--out", "corp", "--headless", "--set", "seed=4", "--set", "domain_docs=40", "--set", "domain_heldout=10", "--set", "general_docs=20", "--set", "general_instruct=20", "--set", "domain_choice=10", "--set", "general_choice=10"],
    );
}

#[test]
fn adaptllm_turns_every_document_into_a_text_and_audits_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    small_corpora(dir.path());
    assert_eq!(lines(&dir.path().join("corp/domain.jsonl")).len(), 40);
    ok(dir.path(), &["synth", "adaptllm", "corp/domain.jsonl", "--out", "rc", "--headless"]);
    let rc = dir.path().join("rc");
    let data = lines(&rc.join("data.jsonl"));
    assert_eq!(data.len(), 40, "one reading-comprehension text per document");
    assert!(data.iter().all(|r| r["text"].as_str().is_some_and(|t| !t.is_empty())));
    let tasks = lines(&rc.join("tasks.jsonl"));
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(rc.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["documents"], 40);
    // stats.json counts exactly the rows of the audit file, per type/sub-category.
    let counted: u64 = stats["tasks"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(counted, tasks.len() as u64);
    assert!(tasks.iter().all(|t| t["origin"].as_str().unwrap().contains("domain.jsonl:")));
    // The generated domain text is written to contain the connectives the patterns look for.
    assert!(stats["tasks"]["nli/entail"].as_u64().unwrap() > 0, "{stats}");
    // The chat variant: a user turn first, alternating roles.
    for row in lines(&rc.join("chat.jsonl")) {
        let roles: Vec<&str> = row["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles[0], "user");
        assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
    }
    assert!(!rc.join(".synth-partial").exists(), "the work folder is gone once complete");

    // The same command over the same corpus gives the same bytes (a fresh run, same seed).
    ok(dir.path(), &["synth", "adaptllm", "corp/domain.jsonl", "--out", "rc2", "--headless"]);
    assert_eq!(std::fs::read(rc.join("data.jsonl")).unwrap(), std::fs::read(dir.path().join("rc2/data.jsonl")).unwrap());
}

#[test]
fn the_dry_run_prints_the_tasks_of_one_document_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    small_corpora(dir.path());
    let runs = || std::fs::read_dir(dir.path().join("runs")).unwrap().count();
    let before = runs();
    let out = ok(dir.path(), &["synth", "adaptllm", "--dry-run", "corp/domain.jsonl", "--doc", "2"]);
    assert!(out.contains("domain.jsonl:3"), "document 2 is on line 3: {out}");
    assert!(out.contains("task(s) mined") && out.contains("reading-comprehension text"), "{out}");
    assert_eq!(runs(), before, "a dry run makes no run folder");
}

#[test]
fn bad_input_is_named_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(dir.path(), &["synth", "adaptlm", "x.jsonl", "--out", "o"]);
    assert!(e.contains("unknown synthesis method `adaptlm`") && e.contains("adaptllm"), "{e}");
    let e = err(dir.path(), &["synth", "adaptllm", "missing.jsonl", "--out", "o", "--headless"]);
    assert!(e.contains("missing.jsonl"), "{e}");
    std::fs::write(dir.path().join("d.jsonl"), "{\"text\": \"A title\\nSome text.\"}\n").unwrap();
    let e = err(dir.path(), &["synth", "adaptllm", "d.jsonl", "--out", "o", "--headless", "--set", "max_per_subcategry=3"]);
    assert!(e.contains("max_per_subcategry"), "{e}");
    assert!(!dir.path().join("o/data.jsonl").exists());
    let e = err(dir.path(), &["synth", "adaptllm", "d.jsonl"]);
    assert!(e.contains("--out"), "{e}");
}

#[test]
fn a_killed_synth_resumes_and_writes_the_same_bytes_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Large enough that the mining takes seconds in a debug build, so the kill lands mid-run.
    ok(d, &["synth", "tiny-domain", "--out", "corp", "--headless", "--set", "domain_docs=20000", "--set", "general_docs=10", "--set", "general_instruct=10"]);
    let args = |out: &'static str| vec!["synth", "adaptllm", "corp/domain.jsonl", "--out", out, "--headless", "--set", "checkpoint_every=100"];
    ok(d, &args("whole"));

    kill_after_first_checkpoint(d, &args("killed"), "killed", "data.jsonl");

    // The same command again picks up from the checkpoint.
    let log = ok(d, &args("killed"));
    let events = all_events(d);
    assert!(events.contains("resuming after"), "the rerun did not resume: {log}");
    for file in ["data.jsonl", "chat.jsonl", "tasks.jsonl"] {
        let a = std::fs::read(d.join("whole").join(file)).unwrap();
        let b = std::fs::read(d.join("killed").join(file)).unwrap();
        assert!(a == b, "{file} differs after the resume ({} vs {} bytes)", a.len(), b.len());
    }
    let stats = |p: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(d.join(p).join("stats.json")).unwrap()).unwrap() };
    let (a, b) = (stats("whole"), stats("killed"));
    for key in ["documents", "rows", "tasks", "skipped", "input_bytes"] {
        assert_eq!(a[key], b[key], "stats.json `{key}` differs after the resume");
    }
}
