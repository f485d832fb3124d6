//! `retort eval`, `retort reward test` and `retort report` driven through the binary, on tiny
//! models built with retort's own code.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn retort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retort")).args(args).output().expect("the retort binary runs")
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "retort failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A random tiny model folder (config, character tokenizer, weights).
fn tiny_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    retort::model::init::init_folder("tiny", &path, seed).unwrap();
    path
}

/// 1 − C(n−c, k)/C(n, k) as a product of ratios (C(n−c,k)/C(n,k) = Π_{i<k} (n−c−i)/(n−i)),
/// a different factorisation from the library's.
fn pass_at_k_reference(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - (0..k).map(|i| (n - c - i) as f64 / (n - i) as f64).product::<f64>()
}

#[test]
fn eval_json_is_consistent_and_pass_at_k_is_monotone() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m", 1);
    // Single-digit gold answers: a random character model sometimes ends on that digit, so
    // correct counts fall strictly between 0 and n and pass@k has something to show.
    let jsonl = dir.path().join("math.jsonl");
    let rows: Vec<String> = ["7", "3", "1", "5"]
        .iter()
        .enumerate()
        .map(|(i, a)| serde_json::json!({"id": format!("q{i}"), "prompt": format!("{i}+{a}=\n"), "answer": a}).to_string())
        .collect();
    std::fs::write(&jsonl, rows.join("\n") + "\n").unwrap();
    let out = retort(&[
        "eval", model.to_str().unwrap(), "--jsonl", jsonl.to_str().unwrap(), "--verifier", "math",
        "--n", "32", "--k", "1,2,4,8,32", "--seed", "3", "--json",
    ]);
    let doc: Value = serde_json::from_str(&stdout_of(&out)).expect("stdout is one JSON document");
    let agg = &doc["aggregate"];
    let problems = doc["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 4);
    assert_eq!(agg["problems"], 4.0);
    let ks = [1usize, 2, 4, 8, 32];
    let mut total_correct = 0;
    let mut strictly_between = 0;
    for p in problems {
        let n = p["n"].as_u64().unwrap() as usize;
        let c = p["correct"].as_u64().unwrap() as usize;
        assert_eq!(n, 32);
        assert!(c <= n);
        total_correct += c;
        strictly_between += usize::from(c > 0 && c < n);
        for &k in &ks {
            let got = p[format!("pass@{k}")].as_f64().unwrap();
            assert!((got - pass_at_k_reference(n, c, k)).abs() < 1e-9, "problem {} k={k}: {got}", p["id"]);
        }
        assert_eq!(doc["unsolvable"].as_array().unwrap().iter().any(|u| *u == p["id"]), c == 0);
    }
    assert!(strictly_between >= 1, "fixture should give some 0 < correct < n: {problems:?}");
    // avg@n is the pooled accuracy, and equals pass@1.
    let avg = agg["avg@32"].as_f64().unwrap();
    assert!((avg - total_correct as f64 / (4.0 * 32.0)).abs() < 1e-12);
    assert!((agg["pass@1"].as_f64().unwrap() - avg).abs() < 1e-12);
    let curve: Vec<f64> = ks.iter().map(|k| agg[format!("pass@{k}")].as_f64().unwrap()).collect();
    assert!(curve.windows(2).all(|w| w[1] >= w[0] - 1e-12), "pass@k not monotone: {curve:?}");
    // Exploration metrics are present and sane for a near-uniform random model.
    let vocab = retort::text::tiny::VOCAB_SIZE as f64;
    let h = agg["entropy/mean"].as_f64().unwrap();
    assert!(h > 0.0 && h <= vocab.ln() + 1e-6, "entropy {h}");
    let rbf = agg["rbf/mean"].as_f64().unwrap();
    assert!(rbf >= 1.0 && rbf <= vocab, "rbf {rbf}");
    assert_eq!(doc["entropy_by_position"].as_array().unwrap().len(), 10);
    assert!(agg["samples_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_on_a_task_is_seeded_and_reports_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m", 2);
    let args = ["eval", model.to_str().unwrap(), "--task", "countdown", "--n", "4", "--limit", "2", "--seed", "9", "--json"];
    let a: Value = serde_json::from_str(&stdout_of(&retort(&args))).unwrap();
    let b: Value = serde_json::from_str(&stdout_of(&retort(&args))).unwrap();
    assert_eq!(a["problems"], b["problems"], "same seed, same samples and verdicts");
    assert_eq!(a["problems"].as_array().unwrap().len(), 2);
    assert_eq!(a["config"]["ks"], serde_json::json!([1, 2, 4]));
    // Countdown enumerates its solutions, so coverage is defined for every problem.
    for p in a["problems"].as_array().unwrap() {
        assert!(p["solutions"].as_u64().unwrap() >= 1);
        assert!(p["coverage"].as_f64().is_some());
    }
    assert!(a["aggregate"]["diversity/coverage"].as_f64().is_some());
    // The human output is the pass@k table.
    let human = stdout_of(&retort(&args[..args.len() - 1]));
    assert!(human.contains("pass@k") && human.contains("distinct correct@k"), "{human}");
}

#[test]
fn compare_puts_models_side_by_side_with_unsolvable_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_model(dir.path(), "a", 1);
    let b = tiny_model(dir.path(), "b", 2);
    let out = retort(&["eval", "--compare", a.to_str().unwrap(), b.to_str().unwrap(), "--task", "arithmetic", "--n", "2", "--limit", "3", "--json"]);
    let doc: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let models = doc["models"].as_array().unwrap();
    assert_eq!(models.iter().map(|m| m["label"].as_str().unwrap()).collect::<Vec<_>>(), vec!["a", "b"]);
    let o = &doc["overlaps"][0];
    let set = |v: &Value| -> std::collections::BTreeSet<String> { v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    let ua = set(&models[0]["report"]["unsolvable"]);
    let ub = set(&models[1]["report"]["unsolvable"]);
    assert_eq!(set(&o["both"]), ua.intersection(&ub).cloned().collect());
    assert_eq!(set(&o["only_first"]), ua.difference(&ub).cloned().collect());
    assert_eq!(set(&o["only_other"]), ub.difference(&ua).cloned().collect());
    // Several models without --compare is refused.
    let out = retort(&["eval", a.to_str().unwrap(), b.to_str().unwrap(), "--task", "arithmetic"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--compare"));
}

#[test]
fn k_larger_than_n_is_refused_with_an_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m", 1);
    let out = retort(&["eval", model.to_str().unwrap(), "--task", "countdown", "--n", "4", "--k", "1,8"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("k = 8 is larger than n = 4") && err.contains("raise n to at least 8"), "{err}");
    let out = retort(&["eval", model.to_str().unwrap(), "--jsonl", "x.jsonl", "--verifier", "regex"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown verifier `regex`; known verifiers: math, code"));
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("each line is a JSON object")).collect()
}

#[test]
fn reward_test_math_verdicts_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("math.jsonl");
    // (completion, gold, expected correct)
    let cases = [
        ("So the result is \\boxed{\\frac{1}{2}}.", "0.5", true),
        ("Answer: 1,234", "1234", true),
        ("We get \\boxed{x = 3}", "3", true),
        ("The answer is \\boxed{4}", "5", false),
        ("#### 72", "#### 72", true),
        ("I do not know.", "3", false),
        ("\\boxed{\\dfrac{3}{4}}", "\\frac34", true),
    ];
    let text: String = cases
        .iter()
        .map(|(c, g, _)| serde_json::json!({"prompt": "q", "completion": c, "gold": g}).to_string() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    let out = retort(&["reward", "test", path.to_str().unwrap(), "--json"]);
    let lines = json_lines(&stdout_of(&out));
    assert_eq!(lines.len(), cases.len());
    for (i, (line, (c, g, want))) in lines.iter().zip(&cases).enumerate() {
        assert_eq!(line["line"], i + 1);
        assert_eq!(line["correct"], *want, "{c:?} vs {g:?}: {line}");
        assert_eq!(line["reward"], if *want { 1.0 } else { 0.0 });
        assert!(!line["reason"].as_str().unwrap().is_empty());
    }
    // A row without its gold answer is named by file and line.
    std::fs::write(&path, "{\"prompt\":\"q\",\"completion\":\"1\",\"gold\":\"1\"}\n{\"prompt\":\"q\",\"completion\":\"1\"}\n").unwrap();
    let out = retort(&["reward", "test", path.to_str().unwrap(), "--verifier", "math"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2: missing field `gold`", path.display())), "{err}");
}

fn python_available() -> bool {
    Command::new("python3").arg("-c").arg("pass").output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn reward_test_code_reports_status_and_output() {
    if !python_available() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("code.jsonl");
    let tests = "assert add(1, 2) == 3\nassert add(-1, 1) == 0";
    let cases = [
        ("```python\ndef add(a, b):\n    return a + b\n```", "pass", true),
        ("```python\ndef add(a, b):\n    return a - b\n```", "fail", false),
        ("def add(a, b):\n    while True:\n        pass\n", "timeout", false),
        ("```python\ndef add(a, b) return a\n```", "fail", false),
    ];
    let text: String = cases
        .iter()
        .map(|(c, _, _)| serde_json::json!({"prompt": "write add", "completion": c, "tests": tests}).to_string() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    let lines = json_lines(&stdout_of(&retort(&["reward", "test", path.to_str().unwrap(), "--json"])));
    assert_eq!(lines.len(), cases.len());
    for (line, (_, status, ok)) in lines.iter().zip(&cases) {
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["correct"], *ok, "{line}");
        assert!(line["reason"].as_str().unwrap().starts_with(status), "{line}");
    }
    assert!(lines[1]["output"].as_str().unwrap().contains("AssertionError"), "{}", lines[1]);
    assert!(lines[3]["output"].as_str().unwrap().contains("SyntaxError"), "{}", lines[3]);
}

/// The hand-written HumanEval-shaped problems (`tests/fixtures/code/humaneval_style.jsonl`):
/// rows `{"task_id", "prompt", "entry_point", "canonical_solution", "test"}` with a
/// `check(candidate)` test, written for retort, not taken from HumanEval.
fn humaneval_style_rows() -> Vec<serde_json::Map<String, Value>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/code/humaneval_style.jsonl");
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn reward_test_grades_humaneval_style_rows_by_calling_check() {
    if !python_available() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let problems = humaneval_style_rows();
    let solution = |i: usize| problems[i]["canonical_solution"].as_str().unwrap().to_string();
    // (problem, completion, expected pass, what)
    let cases: Vec<(usize, String, bool, &str)> = vec![
        (0, solution(0), true, "the body continues the prompt (HumanEval's own rule)"),
        (1, solution(1), true, "the body continues the prompt"),
        (
            0,
            "Here is the function:\n```python\nfrom itertools import groupby\n\ndef run_lengths(text):\n    return [(k, len(list(g))) for k, g in groupby(text)]\n```\nIt groups equal neighbours.".into(),
            true,
            "a fenced block restating the whole function",
        ),
        (1, "```python\n    values = sorted(set(values))\n    return values[-2] if len(values) > 1 else None\n```".into(), true, "a fenced body"),
        (0, "    return [(c, 1) for c in text]\n".into(), false, "wrong: every run has length 1"),
        (1, "    return sorted(values)[-2]\n".into(), false, "wrong: duplicates and short lists"),
        (1, "    return None\nimport sys\nsys.exit(0)\n".into(), false, "sys.exit(0) before check runs"),
        (0, "    return []\nimport os\nos._exit(0)\n".into(), false, "os._exit(0) before check runs"),
        (1, "    import os\n    os._exit(0)\n".into(), false, "os._exit(0) when check calls the function"),
        (0, "    return []\nx = \"\"\"\n".into(), false, "an unclosed string cannot swallow the test"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("humaneval.jsonl");
    let text: String = cases
        .iter()
        .map(|(i, completion, _, _)| {
            let mut row = problems[*i].clone();
            row.remove("canonical_solution");
            row.insert("completion".into(), completion.clone().into());
            Value::Object(row).to_string() + "\n"
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    let lines = json_lines(&stdout_of(&retort(&["reward", "test", path.to_str().unwrap(), "--json"])));
    assert_eq!(lines.len(), cases.len());
    for (line, (_, _, pass, what)) in lines.iter().zip(&cases) {
        assert_eq!(line["verifier"], "code", "{what}: {line}");
        assert_eq!(line["correct"], *pass, "{what}: {line}");
        assert_eq!(line["status"], if *pass { "pass" } else { "fail" }, "{what}: {line}");
    }
    // A failed check names the assert in the test file.
    let failed = lines[4]["output"].as_str().unwrap();
    assert!(failed.contains("test.py") && failed.contains("assert candidate('aaabcc')"), "{failed}");
    assert!(lines[6]["reason"].as_str().unwrap().contains("exited before its tests finished"), "{}", lines[6]);
    assert!(lines[9]["output"].as_str().unwrap().contains("SyntaxError"), "{}", lines[9]);
}

#[test]
fn malformed_humaneval_style_rows_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    let good = serde_json::json!({"prompt": "def f(x):\n", "completion": "    return x\n", "entry_point": "f",
                                  "test": "def check(candidate):\n    assert candidate(1) == 1\n"});
    let with = |key: &str, value: Value| {
        let mut row = good.clone();
        row[key] = value;
        row
    };
    let without = |key: &str| {
        let mut row = good.clone();
        row.as_object_mut().unwrap().remove(key);
        row
    };
    let cases = [
        (without("entry_point"), "missing field `entry_point`"),
        (with("test", "assert f(1) == 1".into()), "`test` has no `def check(candidate)` function"),
        (with("entry_point", "f(x)".into()), "`entry_point` \"f(x)\" is not a Python function name"),
        (with("entry_point", 3.into()), "`entry_point` must be a string"),
        (without("test"), "missing field `test`"),
        (without("completion"), "missing field `completion`"),
    ];
    for (row, message) in cases {
        std::fs::write(&path, format!("{good}\n{row}\n")).unwrap();
        let out = retort(&["reward", "test", path.to_str().unwrap(), "--json"]);
        assert!(!out.status.success(), "{row} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:2: ", path.display())) && err.contains(message), "{row}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    // A blank 900×540 canvas compresses to a few KB; a drawn plot is far larger.
    assert!(bytes.len() > 10_000, "{} is only {} bytes", path.display(), bytes.len());
    (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()))
}

#[test]
fn eval_stage_in_a_profile_then_report_writes_plots_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        r#"
[run]
name = "evalreport"
seed = 1

[[stage]]
kind = "tasks"
name = "data"
task = "countdown"
train = 10
test = 3

[[stage]]
kind = "model-init"
name = "init"

[[stage]]
kind = "sft"
name = "sft"
model = "@init"
steps = 4
batch_size = 8
eval_every = 2
sample_every = 0
checkpoint_every = 0
eval_samples = 0
max_new_tokens = 8
[stage.data]
task = "countdown"
train = 40
test = 20

[[stage]]
kind = "eval"
name = "eval"
models = ["@init", "@sft"]
from = "@data"
n = 4
max_new_tokens = 12
"#,
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let out = retort(&["run", profile.to_str().unwrap(), "--headless", "--runs-dir", runs.to_str().unwrap()]);
    stdout_of(&out);
    let run_dir = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let results: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval/results.json")).unwrap()).unwrap();
    assert_eq!(results["models"].as_array().unwrap().len(), 2);
    assert_eq!(results["models"][0]["report"]["problems"].as_array().unwrap().len(), 3);
    let samples = std::fs::read_to_string(run_dir.join("eval/samples-sft.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 3 * 4);
    // The saved samples are an input for `retort reward test`: graded again, same verdicts.
    let path = run_dir.join("eval/samples-sft.jsonl");
    let regraded = json_lines(&stdout_of(&retort(&["reward", "test", path.to_str().unwrap(), "--json"])));
    let saved = json_lines(&samples);
    assert_eq!(regraded.len(), saved.len());
    for (again, first) in regraded.iter().zip(&saved) {
        assert_eq!(again["correct"], first["correct"], "{first}");
        assert_eq!(again["reward"], first["reward"], "{first}");
    }

    let listed = stdout_of(&retort(&["report", run_dir.to_str().unwrap()]));
    for name in ["passk-eval.png", "entropy-position-eval.png"] {
        let p = run_dir.join("report").join(name);
        assert!(listed.contains(name), "{listed}");
        assert_eq!(png_size(&p), (900, 540));
    }
    // The training curves are small multiples: sft's `loss` alone in loss.png is one panel
    // (440 × 290) under the title and legend strips (78), at least 600 wide.
    assert!(listed.contains("loss.png"), "{listed}");
    assert_eq!(png_size(&run_dir.join("report/loss.png")), (600, 44 + 34 + 290));
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("| eval | eval | finished |"), "{md}");
    assert!(md.contains("pass@1") && md.contains("solved only by this"), "{md}");
    assert!(md.contains("![pass@k (eval)](report/passk-eval.png)"), "{md}");
}

#[test]
fn eval_and_generate_with_tools_report_tool_metrics_and_check_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m", 3);
    let m = model.to_str().unwrap();
    // A random model never opens a code block: the tool figures are there and say so.
    let out = retort(&["eval", m, "--task", "arithmetic", "--problems", "3", "--n", "2", "--max-new-tokens", "12", "--tools", "python", "--json"]);
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let agg = &report["aggregate"];
    assert_eq!(agg["tools/calls_per_response"], 0.0, "{agg}");
    assert_eq!(agg["tools/call_rate"], 0.0);
    assert!(agg.get("rbf/mean").is_none(), "RBF is skipped with tools: {agg}");

    let out = retort(&["generate", m, "--prompt", "12*3=", "--max-new-tokens", "8", "--tools", "python"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 tool call(s)"), "{}", String::from_utf8_lossy(&out.stderr));

    // --compare with --tools: the model without and with tools, side by side.
    let out = retort(&["eval", m, "--task", "arithmetic", "--problems", "2", "--n", "2", "--max-new-tokens", "8", "--tools", "python", "--compare", "--json"]);
    let doc: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let labels: Vec<&str> = doc["models"].as_array().unwrap().iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, vec!["m", "m+tools"]);
    assert!(doc["models"][0]["report"]["aggregate"].get("tools/call_rate").is_none());
    assert!(doc["models"][1]["report"]["aggregate"].get("tools/call_rate").is_some());

    // Bad tool settings fail before any sampling, naming the flag.
    let out = retort(&["eval", m, "--task", "arithmetic", "--problems", "1", "--n", "1", "--tools", "python", "--tool-format", "xml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tool-format") && err.contains("\"prompt\""), "{err}");
    let out = retort(&["eval", m, "--task", "arithmetic", "--problems", "1", "--n", "1", "--tool-format", "prompt"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--tools"), "a tool flag without --tools is refused");
}
