//! UPRISE end to end on a miniature of `uprise-tiny`: generated families, a random tiny
//! decoder as the frozen LM, prompt scoring, a few retriever steps, every eval method; the
//! retriever folder through `retort retrieve`; and a scoring run killed midway that resumes
//! to the same scored data as an uninterrupted run.

#[path = "support/synth_cli.rs"]
mod synth_cli;

use std::path::{Path, PathBuf};
use std::process::Command;
use synth_cli::{err_with_log, ok};

const PROFILE: &str = r#"
[run]
name = "mini"
seed = 3

[[stage]]
kind = "synth"
name = "data"
method = "tiny-uprise"
[stage.options]
train = 6
test = 2
lm = 60

[[stage]]
kind = "model-init"
name = "lm"
preset = "tiny"

[[stage]]
kind = "model-init"
name = "enc"
preset = "encoder-tiny"
corpus = "@data/corpus.jsonl"
context = 48

[[stage]]
kind = "prompt-score"
name = "score"
model = "@lm"
train = "@data/train.jsonl"
test = "@data/test.jsonl"
held_out = ["paraphrase"]
max_examples = MAX
candidates = 3
negatives = 2
rounds = 2
batch_size = 16

[[stage]]
kind = "retrieve"
name = "retrieve"
data = "@score"
query_encoder = "@enc"
max_len = 48
steps = 4
batch_size = 3
lr = 1e-3
warmup_steps = 1
eval_every = 2
checkpoint_every = 2

[[stage]]
kind = "uprise-eval"
name = "eval"
model = "@lm"
data = "@score"
retriever = "@retrieve"
untuned_encoder = "@enc"
max_per_task = 1
n_tokens = 256
"#;

fn write_profile(dir: &Path, max_examples: usize) -> PathBuf {
    let p = dir.join("mini.toml");
    std::fs::write(&p, PROFILE.replace("MAX", &max_examples.to_string())).unwrap();
    p
}

fn run_dir(cwd: &Path, name: &str) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(cwd.join("runs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(name)).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

#[test]
fn the_pipeline_runs_and_the_retriever_answers() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(dir.path(), 16);
    ok(dir.path(), &["run", p.to_str().unwrap(), "--headless", "--name", "full"]);
    let run = run_dir(dir.path(), "full");
    let score = run.join("score");
    for f in ["pool.jsonl", "scored.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl", "meta.json"] {
        assert!(score.join(f).is_file(), "{f}");
    }
    // The pool never holds the held-out cluster, and the scored examples point into it.
    let pool = synth_cli::lines(&score.join("pool.jsonl"));
    assert!(pool.iter().all(|r| r["cluster"] != "paraphrase"));
    let scored = synth_cli::lines(&score.join("scored.jsonl"));
    assert_eq!(scored.len(), 16);
    for s in &scored {
        let task = s["task"].as_str().unwrap();
        for c in s["cands"].as_array().unwrap() {
            assert_eq!(pool[c["pid"].as_u64().unwrap() as usize]["task"], task, "candidates come from the example's task");
        }
        for n in s["negatives"].as_array().unwrap() {
            assert_ne!(pool[n.as_u64().unwrap() as usize]["task"], task, "negatives come from other tasks");
        }
    }
    let retriever = run.join("retrieve/retriever");
    for f in ["query/config.json", "prompt/model.safetensors", "index.safetensors", "pool.jsonl", "retriever.json"] {
        assert!(retriever.join(f).is_file(), "{f}");
    }
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval/results.json")).unwrap()).unwrap();
    let methods: Vec<&str> = results["methods"].as_array().unwrap().iter().map(|m| m["method"].as_str().unwrap()).collect();
    assert_eq!(methods, vec!["zero-shot", "random", "bm25", "untuned", "uprise"]);
    for m in results["methods"].as_array().unwrap() {
        assert!(m["held_out"].as_f64().is_some() && m["seen"].as_f64().is_some(), "{m}");
    }
    assert_eq!(results["methods"][0]["mean_prompts"], 0.0);
    // Every test row of every method gets at most k prompts, all from the pool.
    for line in synth_cli::lines(&run.join("eval/retrieved-uprise.jsonl")) {
        let pids = line["pids"].as_array().unwrap();
        assert!(pids.len() <= 3 && pids.iter().all(|p| (p.as_u64().unwrap() as usize) < pool.len()));
    }

    let out = ok(dir.path(), &["retrieve", run.join("retrieve").to_str().unwrap(), "--query", "Q: 12 is even? A:", "-k", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["pids"].as_array().unwrap().len(), 2);
    let sims: Vec<f64> = v["sims"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    assert!(sims[0] >= sims[1], "best first: {sims:?}");
    let err = err_with_log(dir.path(), &["retrieve", dir.path().to_str().unwrap(), "--query", "x"]);
    assert!(err.contains("not a retriever folder"), "{err}");
    hostile_retrieve_inputs(dir.path(), &run);
    hostile_eval_inputs(dir.path(), &run);
}

/// `retort retrieve` on what a user may hand it: the index file itself (accepted), a path that
/// does not exist, an empty query, and retriever folders with a damaged, empty or foreign index.
fn hostile_retrieve_inputs(cwd: &Path, run: &Path) {
    let retriever = run.join("retrieve/retriever");
    let index_file = retriever.join("index.safetensors");
    let by_file = ok(cwd, &["retrieve", index_file.to_str().unwrap(), "--query", "Q: 12 is even? A:", "--json"]);
    let by_dir = ok(cwd, &["retrieve", retriever.to_str().unwrap(), "--query", "Q: 12 is even? A:", "--json"]);
    assert_eq!(by_file, by_dir, "the index file names its folder");
    let missing = cwd.join("no-such-run");
    let err = err_with_log(cwd, &["retrieve", missing.to_str().unwrap(), "--query", "x"]);
    assert!(err.contains(&format!("{}: no such file or folder", missing.display())), "{err}");
    let err = err_with_log(cwd, &["retrieve", retriever.to_str().unwrap(), "--query", "x", "--query", " "]);
    assert!(err.contains("--query number 2 is empty"), "{err}");
    let out = synth_cli::retort(cwd, &["retrieve", retriever.to_str().unwrap(), "--query", "x", "-k", "100000", "--json"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("more than the index's"), "{out:?}");

    let copy = |name: &str| {
        let to = cwd.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for sub in ["", "query"] {
            std::fs::create_dir_all(to.join(sub)).unwrap();
            for e in std::fs::read_dir(retriever.join(sub)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
                }
            }
        }
        to
    };
    let cut = copy("cut");
    let bytes = std::fs::read(cut.join("index.safetensors")).unwrap();
    std::fs::write(cut.join("index.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = err_with_log(cwd, &["retrieve", cut.to_str().unwrap(), "--query", "x"]);
    assert!(err.contains("cut/index.safetensors") && err.contains("damaged or not a safetensors file"), "{err}");
    // An index of another width (another encoder's) and an empty one: errors, not a panic or nothing.
    let narrow = copy("narrow");
    retort::uprise::index::Index::new(vec![vec![1.0; 7]; 3], vec![0, 1, 2]).unwrap().save(&narrow.join("index.safetensors")).unwrap();
    let err = err_with_log(cwd, &["retrieve", narrow.to_str().unwrap(), "--query", "x"]);
    assert!(err.contains("narrow/index.safetensors: the prompt vectors are 7 wide") && !err.contains("panicked"), "{err}");
    let empty = copy("empty");
    let width = retort::uprise::index::Index::load(&index_file).unwrap().dim;
    retort::uprise::index::Index { dim: width, embeddings: vec![], ids: vec![] }.save(&empty.join("index.safetensors")).unwrap();
    let err = err_with_log(cwd, &["retrieve", empty.to_str().unwrap(), "--query", "x"]);
    assert!(err.contains("empty/index.safetensors: the index holds no prompts"), "{err}");
}

/// An `uprise-eval` stage over the run's folders with a wrong `retriever` fails before any
/// method is evaluated (no retrieved-*.jsonl), and a token budget no prompt fits names `n_tokens`.
fn hostile_eval_inputs(cwd: &Path, run: &Path) {
    let profile = |name: &str, retriever: &Path, n_tokens: usize| {
        let text = format!(
            "[run]\nname = \"{name}\"\n\n[[stage]]\nkind = \"uprise-eval\"\nname = \"eval\"\nmodel = \"{}\"\ndata = \"{}\"\nretriever = \"{}\"\nmethods = [\"zero-shot\", \"bm25\", \"uprise\"]\nmax_per_task = 1\nn_tokens = {n_tokens}\n",
            run.join("lm/model").display(),
            run.join("score").display(),
            retriever.display()
        );
        let p = cwd.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let p = profile("wrongret", &run.join("score"), 256);
    let err = err_with_log(cwd, &["run", p.to_str().unwrap(), "--headless"]);
    assert!(err.contains("`retriever`") && err.contains("is not a retriever folder"), "{err}");
    assert!(!run_dir(cwd, "wrongret").join("eval/retrieved-zero-shot.jsonl").exists(), "no method ran before the retriever was found");
    let p = profile("nobudget", &run.join("retrieve"), 8);
    let err = err_with_log(cwd, &["run", p.to_str().unwrap(), "--headless"]);
    assert!(err.contains("`n_tokens` = 8 leaves 0 tokens for prompts") && err.contains("raise `n_tokens` to at least"), "{err}");
}

#[test]
fn an_unknown_held_out_cluster_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(dir.path(), 4);
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap().replace("held_out = [\"paraphrase\"]", "held_out = [\"poetry\"]")).unwrap();
    let err = err_with_log(dir.path(), &["run", p.to_str().unwrap(), "--headless"]);
    assert!(err.contains("held-out cluster \"poetry\" has no rows"), "{err}");
}

#[test]
fn a_killed_scoring_run_resumes_to_the_same_scored_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(dir.path(), 96);
    // One option row per forward: slow enough to be killed midway.
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap().replace("batch_size = 16", "batch_size = 1")).unwrap();
    ok(dir.path(), &["run", p.to_str().unwrap(), "--headless", "--name", "whole"]);
    let whole = std::fs::read_to_string(run_dir(dir.path(), "whole").join("score/scored.jsonl")).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_retort"))
        .args(["run", p.to_str().unwrap(), "--headless", "--name", "killed"])
        .env_remove("RETORT_RUNS_DIR")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let partial = loop {
        assert!(std::time::Instant::now() < deadline, "no scored example within 5 minutes");
        let found = std::fs::read_dir(dir.path().join("runs")).ok().and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("killed")))
                .map(|p| p.join("score/scored.partial.jsonl"))
                .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.lines().count() >= 2))
        });
        if let Some(p) = found {
            break p;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let run = partial.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(!run.join("score/scored.jsonl").exists(), "scoring finished before the kill; score more examples");
    ok(dir.path(), &["run", "--resume", run.to_str().unwrap(), "--headless"]);
    let resumed = std::fs::read_to_string(run.join("score/scored.jsonl")).unwrap();
    assert_eq!(resumed, whole, "the resumed scoring equals the uninterrupted one");
}

/// Completion rows (no options) beside multiple-choice ones: scoring generates greedily and
/// scores by token F1 (the score is the accuracy), and the eval reports F1 and exact match
/// per completion task, each row's generation written beside its retrieval.
#[test]
fn completion_tasks_are_scored_by_generation_and_reported_with_f1_and_em() {
    let dir = tempfile::tempdir().unwrap();
    let words = ["red", "blue", "green", "gold", "teal", "plum"];
    let mut train = String::new();
    let mut test = String::new();
    for i in 0..12 {
        let (a, b) = (words[i % 6], words[(i * 5 + 1) % 6]);
        let copy = serde_json::json!({"id": format!("c{i}"), "task": "copy", "cluster": "echo", "input": format!("Copy: {a} {b} ->"), "answer": format!("{a} {b}")});
        let even = if i % 2 == 0 { "yes" } else { "no" };
        let yn = serde_json::json!({"id": format!("y{i}"), "task": "even", "cluster": "numbers", "input": format!("Q: {i} is even? A:"), "options": ["yes", "no"], "answer": even});
        let out = if i < 9 { &mut train } else { &mut test };
        out.push_str(&format!("{copy}\n{yn}\n"));
    }
    std::fs::write(dir.path().join("train.jsonl"), train).unwrap();
    std::fs::write(dir.path().join("test.jsonl"), test).unwrap();
    let profile = r#"
[run]
name = "completion"
seed = 1

[[stage]]
kind = "model-init"
name = "lm"
preset = "tiny"

[[stage]]
kind = "prompt-score"
name = "score"
model = "@lm"
train = "train.jsonl"
test = "test.jsonl"
candidates = 3
negatives = 1
rounds = 2
batch_size = 8

[[stage]]
kind = "uprise-eval"
name = "eval"
model = "@lm"
data = "@score"
methods = ["zero-shot", "random", "bm25"]
n_tokens = 256
"#;
    let p = dir.path().join("completion.toml");
    std::fs::write(&p, profile).unwrap();
    ok(dir.path(), &["run", p.to_str().unwrap(), "--headless"]);
    let run = run_dir(dir.path(), "completion");
    let scored = synth_cli::lines(&run.join("score/scored.jsonl"));
    assert_eq!(scored.len(), 18);
    for s in scored.iter().filter(|s| s["task"] == "copy") {
        for c in s["cands"].as_array().unwrap() {
            let (score, acc) = (c["score"].as_f64().unwrap(), c["acc"].as_f64().unwrap());
            assert!((0.0..=1.0).contains(&acc) && score == acc, "a completion candidate's score is its F1: {c}");
        }
    }
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval/results.json")).unwrap()).unwrap();
    for m in results["methods"].as_array().unwrap() {
        let method = m["method"].as_str().unwrap();
        assert!(m["per_task_em"]["copy"].is_number() && m["per_task_em"].get("even").is_none(), "{m}");
        // The per-task figures are the means of the rows' outcomes in retrieved-<method>.jsonl.
        let rows = synth_cli::lines(&run.join(format!("eval/retrieved-{method}.jsonl")));
        let copy: Vec<&serde_json::Value> = rows.iter().filter(|r| r["id"].as_str().unwrap().starts_with('c')).collect();
        assert_eq!(copy.len(), 3);
        let mean = |key: &str| copy.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>() / 3.0;
        assert!((mean("acc") - m["per_task"]["copy"].as_f64().unwrap()).abs() < 1e-12, "{m}");
        assert!((mean("em") - m["per_task_em"]["copy"].as_f64().unwrap()).abs() < 1e-12, "{m}");
        for r in &copy {
            let (f1, em) = (r["acc"].as_f64().unwrap(), r["em"].as_f64().unwrap());
            assert!(r["prediction"].is_string() && (em == 0.0 || em == 1.0) && (em == 0.0 || f1 == 1.0), "{r}");
        }
    }
    let table = std::fs::read_to_string(run.join("eval/table.txt")).unwrap();
    assert!(table.contains("F1/EM for completion tasks"), "{table}");
}
