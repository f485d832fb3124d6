//! `retort synth visual` end to end on a tiny random vision-language synthesizer: the counts
//! in stats.json agree with the audit file and the post-training files, a killed synthesis
//! resumes to the same bytes, and the errors for a missing image, a synthesizer that is not a
//! VLM and a checker that is not a model. A random model writes no hint-formatted rounds, so
//! every image ends without a task here; the counting of tasks, labels and rows with real
//! triplets is unit-tested in src/synth/visual/method.rs.

use std::path::Path;
#[path = "support/synth_cli.rs"]
mod support;
use support::{all_events, err_with_log as err, kill_when, lines, ok};

fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path.join("stats.json")).unwrap()).unwrap()
}

/// A random tiny VLM and the tiny-visual data with `n` target images.
fn setup(d: &Path, n: usize) {
    ok(d, &["model", "init", "--preset", "tiny-vlm", "--out", "vlm", "--seed", "5"]);
    ok(d, &["model", "init", "--preset", "tiny", "--out", "text", "--seed", "5"]);
    let target = format!("target_images={n}");
    ok(d, &["synth", "tiny-visual", "--out", "data", "--set", "seed_images=2", "--set", &target, "--set", "test_images=1", "--headless"]);
}

fn args(out: &str, batch: usize) -> Vec<String> {
    ["synth", "visual", "data/target_pairs.json", "--synthesizer", "vlm", "--checker", "rule", "--out", out, "--set", "max_new_tokens=24", "--set", &format!("batch_size={batch}"), "--set", "scenes=data/target_scenes.jsonl", "--headless"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn run(d: &Path, a: &[String]) -> String {
    ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn counts_agree_with_the_files_and_a_killed_synthesis_resumes_to_the_same_bytes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d, 12);
    run(d, &args("whole", 2));
    let s = stats(&d.join("whole"));
    let tasks = &s["tasks"];
    let audit = lines(&d.join("whole/triplets.jsonl"));
    assert_eq!(audit.len(), 12);
    assert_eq!(tasks["images"], 12);
    let with_task = audit.iter().filter(|r| !r["triplet"].is_null()).count() as u64;
    assert_eq!(tasks["tasks_parsed"].as_u64().unwrap_or(0), with_task);
    assert_eq!(tasks["no_task"].as_u64().unwrap_or(0), 12 - with_task);
    let kept = audit.iter().filter(|r| r["label"] == "yes").count() as u64;
    assert_eq!(tasks["kept"].as_u64().unwrap_or(0), kept);
    assert_eq!(lines(&d.join("whole/single_stage.jsonl")).len() as u64, with_task);
    assert_eq!(lines(&d.join("whole/tasks.jsonl")).len() as u64, kept);
    assert_eq!(s["rows"]["triplets.jsonl"], 12);
    for (i, r) in audit.iter().enumerate() {
        assert_eq!(r["syn_id"], i as u64, "input order");
        assert!(r["raw"].is_string());
    }
    assert!(!d.join("whole/.visual-partial").join("journal.jsonl").exists(), "the journal is removed once the files are final");

    // Killed once the journal holds a first batch (header + records), then run again.
    let a = args("killed", 2);
    let journal = d.join("killed/.visual-partial/journal.jsonl");
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    kill_when(d, &argv, || std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) >= 3, "no batch journaled");
    assert!(!d.join("killed/stats.json").exists(), "the synthesis finished before the kill");
    assert!(!d.join("killed/triplets.jsonl").exists(), "a killed synthesis leaves no final-looking file");
    let done_before = std::fs::read_to_string(&journal).unwrap().lines().count() - 1;
    run(d, &a);
    assert!(all_events(d).contains(&format!("resuming: {done_before} of 12 images already synthesized")), "the rerun did not resume after {done_before} images");
    for f in ["triplets.jsonl", "single_stage.jsonl", "single_stage_nofilter.jsonl", "captions.jsonl", "tasks.jsonl"] {
        let (x, y) = (std::fs::read(d.join("whole").join(f)).unwrap(), std::fs::read(d.join("killed").join(f)).unwrap());
        assert!(x == y, "{f} differs after the resume");
    }
    assert_eq!(stats(&d.join("killed"))["tasks"], s["tasks"]);
}

#[test]
fn errors_name_the_missing_image_the_non_vlm_and_the_bad_checker() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d, 3);
    let mut pairs: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(d.join("data/target_pairs.json")).unwrap()).unwrap();
    pairs[1]["images"] = serde_json::json!(["images/gone.png"]);
    std::fs::write(d.join("data/broken.json"), serde_json::to_string(&pairs).unwrap()).unwrap();
    let e = err(d, &["synth", "visual", "data/broken.json", "--synthesizer", "vlm", "--checker", "rule", "--out", "x", "--headless"]);
    assert!(e.contains("broken.json: entry 2") && e.contains("gone.png") && e.contains("does not exist"), "{e}");
    let e = err(d, &["synth", "visual", "data/target_pairs.json", "--synthesizer", "text", "--checker", "rule", "--out", "x", "--headless"]);
    assert!(e.contains("is not a vision-language model"), "{e}");
    let e = err(d, &["synth", "visual", "data/target_pairs.json", "--synthesizer", "vlm", "--checker", "nowhere", "--out", "x", "--headless"]);
    assert!(e.contains("options.checker") && e.contains("nowhere") && e.contains("`rule`"), "{e}");
    let e = err(d, &["synth", "visual", "data/target_pairs.json", "--synthesizer", "vlm", "--checker", "vlm", "--out", "x", "--headless"]);
    assert!(e.contains("is a vision-language model") && e.contains("text-only"), "{e}");
    let e = err(d, &["synth", "visual", "data/target_pairs.json", "--synthesizer", "vlm", "--out", "x", "--headless"]);
    assert!(e.contains("checker"), "{e}");
}
