//! `retort synth toedit` end to end on a tiny random prior: the output files and counts,
//! determinism for a seed, deletion, windows versus truncation, iterated generations, the dry
//! run and bad options.

use std::path::Path;
#[path = "support/synth_cli.rs"]
mod support;
use support::{all_events, err_with_log as err, kill_after_first_checkpoint, lines, ok};

fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path.join("stats.json")).unwrap()).unwrap()
}

/// A tiny prior (character tokenizer, ~100 ids: a random model gives p ≈ 0.01) and a corpus
/// of 7 documents, one of them 360 characters (longer than the windows used below).
fn setup(d: &Path) {
    ok(d, &["model", "init", "--preset", "tiny", "--out", "prior", "--seed", "3"]);
    let mut corpus = String::new();
    for i in 0..6 {
        corpus.push_str(&serde_json::json!({"text": format!("Document {i}: the bees visit the flowers of the meadow.")}).to_string());
        corpus.push('\n');
    }
    let long: String = (0..60).map(|i| format!("word{} ", i % 10)).collect();
    corpus.push_str(&serde_json::json!({ "text": long }).to_string());
    corpus.push('\n');
    std::fs::write(d.join("human.jsonl"), corpus).unwrap();
}

#[test]
fn toedit_edits_every_document_counts_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // threshold 0.005: with a random prior most tokens are eligible; β = 3 flattens the draw.
    let args = |out: &'static str| vec!["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", out, "--headless", "--set", "threshold=0.005", "--set", "beta=3.0", "--set", "batch_size=3", "--set", "max_len=64"];
    ok(d, &args("e1"));
    let data = lines(&d.join("e1/data.jsonl"));
    let audit = lines(&d.join("e1/audit.jsonl"));
    assert_eq!((data.len(), audit.len()), (7, 7), "one text and one audit row per document");
    let human = lines(&d.join("human.jsonl"));
    // up_revise deletes nothing: with a character tokenizer a text keeps its length, less the
    // tokens resampled to a special token (decoding skips those, as the reference does).
    for ((h, e), a) in human.iter().zip(&data).zip(&audit) {
        let (hn, en) = (h["text"].as_str().unwrap().chars().count(), e["text"].as_str().unwrap().chars().count());
        assert!(en <= hn && hn - en <= a["realized"].as_u64().unwrap() as usize, "{hn} → {en} chars, {a}");
    }
    assert!(human.iter().zip(&data).any(|(h, e)| h["text"] != e["text"]), "some token changed");
    let s = stats(&d.join("e1"));
    let t = &s["toedit"];
    let sum = |k: &str| audit.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(t["generations"][0]["eligible"].as_u64().unwrap(), sum("eligible"));
    assert_eq!(t["generations"][0]["realized"].as_u64().unwrap(), sum("realized"));
    assert_eq!(t["generations"][0]["scored"].as_u64().unwrap(), sum("scored"));
    let ef = t["eligible_fraction"].as_f64().unwrap();
    let rf = t["realized_fraction"].as_f64().unwrap();
    assert!(ef > 0.3 && rf > 0.0 && rf <= ef, "{t}");
    assert_eq!(t["dropped_fraction"].as_f64().unwrap(), 0.0);
    // The long document (360 characters) was edited in 64-token windows and kept whole.
    assert_eq!(audit[6]["tokens"].as_u64().unwrap(), 360);
    assert_eq!(audit[6]["scored"].as_u64().unwrap(), 359);

    // Same seed, same bytes, whatever the batch size.
    ok(d, &args("e2"));
    assert_eq!(std::fs::read(d.join("e1/data.jsonl")).unwrap(), std::fs::read(d.join("e2/data.jsonl")).unwrap());
    let mut one = args("e3");
    one.extend(["--set", "batch_size=1"]);
    ok(d, &one);
    assert_eq!(std::fs::read(d.join("e1/data.jsonl")).unwrap(), std::fs::read(d.join("e3/data.jsonl")).unwrap());
}

#[test]
fn low_drop_deletes_truncate_cuts_and_generations_report_each_pass() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // Every token of a random prior is below p = 0.5: low_drop deletes all but position 0.
    ok(d, &["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", "drop", "--headless", "--set", "strategy=low_drop_up_revise", "--set", "drop_threshold=0.5"]);
    let t = stats(&d.join("drop"))["toedit"].clone();
    assert_eq!(t["dropped_fraction"].as_f64().unwrap(), 1.0, "{t}");
    for row in lines(&d.join("drop/data.jsonl")) {
        assert_eq!(row["text"].as_str().unwrap().chars().count(), 1, "only position 0 remains: {row}");
    }

    // truncate: the reference's cut at max_len tokens.
    ok(d, &["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", "cut", "--headless", "--set", "max_len=50", "--set", "truncate=true"]);
    let data = lines(&d.join("cut/data.jsonl"));
    assert_eq!(data[6]["text"].as_str().unwrap().chars().count(), 50);
    assert_eq!(lines(&d.join("cut/audit.jsonl"))[6]["tokens"], 50);

    // Two generations: a table per generation, and the audit rows list both.
    ok(d, &["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", "g2", "--headless", "--set", "threshold=0.005", "--set", "generations=2"]);
    let t = stats(&d.join("g2"))["toedit"].clone();
    assert_eq!(t["generations"].as_array().unwrap().len(), 2, "{t}");
    assert!(t["generations"][1]["eligible_fraction"].as_f64().unwrap() > 0.0);
    assert_eq!(lines(&d.join("g2/audit.jsonl"))[0]["generations"].as_array().unwrap().len(), 2);
}

#[test]
fn the_dry_run_shows_the_edits_of_one_document_and_bad_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out = ok(d, &["synth", "toedit", "--dry-run", "human.jsonl", "--prior", "prior", "--doc", "1", "--set", "threshold=0.005", "--set", "beta=3.0"]);
    assert!(out.contains("human.jsonl:2") && out.contains("eligible") && out.contains("→") && out.contains("(p = "), "{out}");
    assert!(out.contains("--- edited text ---"), "{out}");
    assert!(!d.join("runs").exists() || std::fs::read_dir(d.join("runs")).unwrap().count() == 0, "a dry run makes no run folder");

    let e = err(d, &["synth", "toedit", "human.jsonl", "--out", "o", "--headless"]);
    assert!(e.contains("prior"), "the prior is required: {e}");
    let e = err(d, &["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", "o", "--headless", "--set", "strategy=up_revize"]);
    assert!(e.contains("up_revize") || e.contains("strategy"), "{e}");
    let e = err(d, &["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", "o", "--headless", "--set", "threshold=1.5"]);
    assert!(e.contains("threshold"), "{e}");
    let e = err(d, &["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", "o", "--headless", "--set", "top_kk=3"]);
    assert!(e.contains("top_kk"), "{e}");
    let e = err(d, &["synth", "toedit", "human.jsonl", "--prior", "nowhere", "--out", "o", "--headless"]);
    assert!(e.contains("nowhere"), "{e}");
    assert!(!d.join("o/data.jsonl").exists());
}

#[test]
fn a_killed_batched_toedit_resumes_and_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["model", "init", "--preset", "tiny", "--out", "prior", "--seed", "3"]);
    // Enough documents that the edit takes seconds in a debug build; checkpoints every 10
    // documents fall inside batches of 4, so the resumed run restarts mid-way through the
    // batch grid (whole batches are redone, the draws are per document).
    let corpus: String = (0..1200).map(|i| serde_json::json!({"text": format!("Note {i}: the bees visit the flowers of the meadow at dawn.")}).to_string() + "\n").collect();
    std::fs::write(d.join("human.jsonl"), corpus).unwrap();
    let args = |out: &'static str| vec!["synth", "toedit", "human.jsonl", "--prior", "prior", "--out", out, "--headless", "--set", "threshold=0.005", "--set", "batch_size=4", "--set", "checkpoint_every=10", "--set", "max_len=64"];
    ok(d, &args("whole"));
    kill_after_first_checkpoint(d, &args("killed"), "killed", "data.jsonl");
    ok(d, &args("killed"));
    assert!(all_events(d).contains("resuming after"), "the rerun did not resume");
    for file in ["data.jsonl", "audit.jsonl"] {
        let a = std::fs::read(d.join("whole").join(file)).unwrap();
        let b = std::fs::read(d.join("killed").join(file)).unwrap();
        assert!(a == b, "{file} differs after the resume ({} vs {} bytes)", a.len(), b.len());
    }
    let (a, b) = (stats(&d.join("whole")), stats(&d.join("killed")));
    assert_eq!(a["toedit"]["generations"], b["toedit"]["generations"], "resumed counts differ");
    assert_eq!(a["documents"], b["documents"]);
    // The dashboard's figures: the progress line and the summary carry the eligible rate.
    let events = all_events(d);
    assert!(events.contains("eligible %"), "no eligible rate in the events");
}
