//! `retort synth instruct` end to end on a tiny random synthesizer: the output files and
//! counts, determinism, texts too long for the synthesizer, a tokenizer with `<s>` / `</s>`
//! special tokens, the dry run, bad options, and kill / resume. A random model writes no
//! parseable pairs; the parse-and-render path is unit-tested with canned outputs in
//! src/synth/instruct/method.rs.

use std::path::Path;
#[path = "support/synth_cli.rs"]
mod support;
use support::{all_events, err_with_log as err, kill_after_first_checkpoint, lines, ok};

fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path.join("stats.json")).unwrap()).unwrap()
}

fn write_corpus(d: &Path, texts: &[String]) {
    let corpus: String = texts.iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect();
    std::fs::write(d.join("raw.jsonl"), corpus).unwrap();
}

/// A tiny random synthesizer (character tokenizer, context 256) and 9 texts, the last one
/// 300 characters: longer than the prompt budget 256 − 24.
fn setup(d: &Path) -> Vec<String> {
    ok(d, &["model", "init", "--preset", "tiny", "--out", "synth", "--seed", "5"]);
    let mut texts: Vec<String> = (0..8).map(|i| format!("Zorvia {i} is a river town founded in 18{i}3.")).collect();
    texts.push("word ".repeat(60));
    write_corpus(d, &texts);
    texts
}

const SMALL: [&str; 8] = ["--set", "max_new_tokens=24", "--set", "batch_size=4", "--set", "generation_batch=3", "--set", "rounds=2"];

#[test]
fn instruct_writes_every_text_counts_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = setup(d);
    let args = |out: &'static str| {
        let mut a = vec!["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", out, "--headless"];
        a.extend(SMALL);
        a
    };
    ok(d, &args("a1"));
    let pairs = lines(&d.join("a1/pairs.jsonl"));
    assert_eq!(pairs.len(), 9, "one pairs row per text");
    for (i, (row, text)) in pairs.iter().zip(&texts).enumerate() {
        assert_eq!(row["origin"], format!("raw.jsonl:{}", i + 1));
        assert_eq!(row["context"], text.as_str());
        assert!(row["qa_list"].is_array() && row["failures"].is_object(), "{row}");
    }
    assert_eq!(pairs[8]["too_long"], true);
    assert!(pairs[..8].iter().all(|r| r.get("too_long").is_none()));
    // A random synthesizer writes no pairs, so every text comes out as raw text (in chain
    // order, the too-long one last in its batch).
    let data = lines(&d.join("a1/data.jsonl"));
    let mut got: Vec<String> = data.iter().map(|r| r["text"].as_str().unwrap().to_string()).collect();
    let mut want = texts.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let s = stats(&d.join("a1"));
    let t = &s["instruct"];
    assert_eq!(t["texts"], 8, "{t}");
    assert_eq!(t["too_long"], 1);
    assert_eq!(t["pairs"], 0);
    assert_eq!(t["pairs_per_text_histogram"], serde_json::json!([8]));
    assert_eq!(t["rounds"], 2);
    assert_eq!(t["max_model_len"], 256);
    let failures: u64 = t["parse_failures"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    let in_rows: u64 = pairs.iter().flat_map(|r| r["failures"].as_object().unwrap().values().map(|v| v.as_u64().unwrap())).sum();
    assert_eq!(failures, in_rows, "stats and pairs.jsonl count the same failures");
    assert_eq!(s["rows"]["pairs.jsonl"], 9);
    // The dashboard's figures.
    let events = all_events(d);
    assert!(events.contains("pairs/text") && events.contains("texts/s"), "no live figures in the events");

    // Greedy: the same bytes again, and whatever the generation batch.
    ok(d, &args("a2"));
    let mut other = args("a3");
    other.extend(["--set", "generation_batch=1"]);
    ok(d, &other);
    for f in ["data.jsonl", "pairs.jsonl"] {
        let a = std::fs::read(d.join("a1").join(f)).unwrap();
        assert_eq!(a, std::fs::read(d.join("a2").join(f)).unwrap(), "{f}");
        assert_eq!(a, std::fs::read(d.join("a3").join(f)).unwrap(), "{f} with generation_batch = 1");
    }
}

#[test]
fn a_synthesizer_with_s_tokens_runs_and_its_prompt_has_one_bos() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // The tiny tokenizer's two chat tokens renamed to `<s>` / `</s>` and declared BOS / EOS:
    // the Mistral synthesizer's special tokens, on a model of the same vocabulary size.
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        let p = d.join("synth").join(f);
        let t = std::fs::read_to_string(&p).unwrap().replace("<|im_start|>", "<s>").replace("<|im_end|>", "</s>");
        std::fs::write(&p, t).unwrap();
    }
    let p = d.join("synth/tokenizer_config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    c["bos_token"] = "<s>".into();
    c["eos_token"] = "</s>".into();
    std::fs::write(&p, c.to_string()).unwrap();
    std::fs::write(d.join("synth/special_tokens_map.json"), r#"{"bos_token": "<s>", "eos_token": "</s>"}"#).unwrap();

    let mut args = vec!["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", "s", "--headless"];
    args.extend(SMALL);
    ok(d, &args);
    assert_eq!(lines(&d.join("s/pairs.jsonl")).len(), 9);
    let out = ok(d, &["synth", "instruct", "--dry-run", "raw.jsonl", "--synthesizer", "synth", "--set", "max_new_tokens=24"]);
    // "<s> <CON> Zorvia 0 is a river town founded in 1803. </CON>\n\n": BOS + 57 characters.
    assert!(out.contains("prompt 58 tokens"), "{out}");
}

#[test]
fn the_dry_run_shows_prompt_output_and_pairs_and_bad_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out = ok(d, &["synth", "instruct", "--dry-run", "raw.jsonl", "--synthesizer", "synth", "--doc", "2", "--set", "max_new_tokens=24"]);
    assert!(out.contains("raw.jsonl:3") && out.contains("prompt 58 tokens"), "{out}");
    assert!(out.contains("--- prompt ---\n<s> <CON> Zorvia 2 is a river town founded in 1823. </CON>"), "{out}");
    assert!(out.contains("--- raw output ---") && out.contains("--- parsed pairs ---") && out.contains("--- rendered"), "{out}");
    let out = ok(d, &["synth", "instruct", "--dry-run", "raw.jsonl", "--synthesizer", "synth", "--doc", "8", "--set", "max_new_tokens=24"]);
    assert!(out.contains("longer than the budget"), "{out}");
    assert!(!d.join("runs").exists() || std::fs::read_dir(d.join("runs")).unwrap().count() == 0, "a dry run makes no run folder");

    let e = err(d, &["synth", "instruct", "raw.jsonl", "--out", "o", "--headless"]);
    assert!(e.contains("synthesizer"), "the synthesizer is required: {e}");
    let e = err(d, &["synth", "instruct", "raw.jsonl", "--synthesizer", "nowhere", "--out", "o", "--headless"]);
    assert!(e.contains("nowhere") && e.contains("synthesizer"), "{e}");
    assert!(!d.join("runs").exists() || std::fs::read_dir(d.join("runs")).unwrap().count() == 0, "a missing synthesizer stops the run before it starts");
    let e = err(d, &["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", "o", "--headless", "--set", "roundz=3"]);
    assert!(e.contains("roundz"), "{e}");
    let e = err(d, &["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", "o", "--headless", "--set", "rounds=0"]);
    assert!(e.contains("rounds"), "{e}");
    // The default max_new_tokens (400) does not fit the tiny synthesizer's 256 positions.
    let e = err(d, &["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", "o", "--headless"]);
    assert!(e.contains("max_new_tokens") && e.contains("256"), "{e}");
    let e = err(d, &["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", "o", "--headless", "--set", "max_model_len=1000"]);
    assert!(e.contains("max_model_len"), "{e}");
    let e = err(d, &["synth", "toedit", "raw.jsonl", "--synthesizer", "synth", "--out", "o", "--headless"]);
    assert!(e.contains("--synthesizer belongs to"), "{e}");
    assert!(!d.join("o/data.jsonl").exists());
}

#[test]
fn a_killed_instruct_resumes_and_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["model", "init", "--preset", "tiny", "--out", "synth", "--seed", "5"]);
    let texts: Vec<String> = (0..160).map(|i| format!("Note {i}: the bees of Zorvia visit the flowers at dawn.")).collect();
    write_corpus(d, &texts);
    // Checkpoints every 6 texts fall inside batches of 4: a resumed run redoes whole batches.
    let args = |out: &'static str| {
        let mut a = vec!["synth", "instruct", "raw.jsonl", "--synthesizer", "synth", "--out", out, "--headless", "--set", "checkpoint_every=6"];
        a.extend(SMALL);
        a
    };
    ok(d, &args("whole"));
    kill_after_first_checkpoint(d, &args("killed"), "killed", "data.jsonl");
    ok(d, &args("killed"));
    assert!(all_events(d).contains("resuming after"), "the rerun did not resume");
    for file in ["data.jsonl", "pairs.jsonl"] {
        let a = std::fs::read(d.join("whole").join(file)).unwrap();
        let b = std::fs::read(d.join("killed").join(file)).unwrap();
        assert!(a == b, "{file} differs after the resume ({} vs {} bytes)", a.len(), b.len());
    }
    let (a, b) = (stats(&d.join("whole")), stats(&d.join("killed")));
    assert_eq!(a["instruct"], b["instruct"], "resumed counts differ");
    assert_eq!(a["documents"], b["documents"]);
}

#[test]
fn the_synth_stage_takes_the_synthesizer_from_an_earlier_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d, &(0..5).map(|i| format!("Text number {i} about the river town.")).collect::<Vec<_>>());
    let profile = r#"
[run]
name = "instruct-stage"
seed = 3

[[stage]]
kind = "model-init"
name = "init"
preset = "tiny"

[[stage]]
kind = "synth"
name = "augmented"
method = "instruct"
input = ["raw.jsonl"]

[stage.options]
synthesizer = "@init"
max_new_tokens = 16
rounds = 3
batch_size = 5
"#;
    std::fs::write(d.join("p.toml"), profile).unwrap();
    ok(d, &["run", "p.toml", "--headless", "--name", "r"]);
    let run = std::fs::read_dir(d.join("runs")).unwrap().next().unwrap().unwrap().path();
    let out = run.join("augmented");
    assert_eq!(lines(&out.join("pairs.jsonl")).len(), 5);
    assert_eq!(lines(&out.join("data.jsonl")).len(), 5, "no pairs: every text raw");
    assert_eq!(stats(&out)["instruct"]["rounds"], 3);
    // A reference to a stage that makes no model is named when the profile loads.
    std::fs::write(d.join("bad.toml"), profile.replace("synthesizer = \"@init\"", "synthesizer = \"@nosuch\"")).unwrap();
    let e = err(d, &["run", "bad.toml", "--headless", "--name", "b"]);
    assert!(e.contains("nosuch") && e.contains("synthesizer"), "{e}");
}

#[test]
fn pair_accuracy_checks_pairs_against_the_encyclopedia_facts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["synth", "tiny-encyclopedia", "--out", "enc", "--headless", "--set", "entities=12", "--set", "seed=4"]);
    // pairs.jsonl rows made from the rule pairs of two texts: the first with one answer
    // spoiled and one question nobody asks, the second as is; a third text of no entity.
    let rules = lines(&d.join("enc/qa_rule.jsonl"));
    let mut first: Vec<serde_json::Value> = rules[0]["qa_list"].as_array().unwrap().clone();
    let n0 = first.len();
    first[0][1] = serde_json::json!("not the fact");
    first.push(serde_json::json!(["What colour is the sky?", "blue"]));
    let second = rules[1]["qa_list"].as_array().unwrap().clone();
    let n1 = second.len();
    let rows = [
        serde_json::json!({"origin": "a:1", "context": rules[0]["context"], "qa_list": first, "failures": {}}),
        serde_json::json!({"origin": "a:2", "context": rules[1]["context"], "qa_list": second, "failures": {}}),
        serde_json::json!({"origin": "a:3", "context": "Nobody is a town.", "qa_list": [], "failures": {}}),
    ];
    std::fs::write(d.join("pairs.jsonl"), rows.iter().map(|r| r.to_string() + "\n").collect::<String>()).unwrap();
    let out = ok(d, &["synth", "pair-accuracy", "pairs.jsonl", "--encyclopedia", "enc", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pairs = (n0 + 1 + n1) as u64;
    let correct = (n0 - 1 + n1) as u64;
    assert_eq!(r["texts"], 3);
    assert_eq!(r["unknown_texts"], 1);
    assert_eq!(r["pairs"].as_u64().unwrap(), pairs);
    assert_eq!(r["correct"].as_u64().unwrap(), correct);
    assert_eq!((r["wrong"].as_u64().unwrap(), r["unrecognised"].as_u64().unwrap()), (1, 1));
    assert!((r["accuracy"].as_f64().unwrap() - correct as f64 / pairs as f64).abs() < 1e-12, "{r}");
    // Bad input is named.
    std::fs::write(d.join("bad.jsonl"), "{\"context\": \"x\", \"qa_list\": [[\"q\"]]}\n").unwrap();
    let e = err(d, &["synth", "pair-accuracy", "bad.jsonl", "--encyclopedia", "enc"]);
    assert!(e.contains("bad.jsonl:1") && e.contains("qa_list[0]"), "{e}");
    let e = err(d, &["synth", "pair-accuracy", "pairs.jsonl", "--encyclopedia", "."]);
    assert!(e.contains("encyclopedia.json"), "{e}");
}
