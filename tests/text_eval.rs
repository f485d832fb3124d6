//! Text evaluation (`src/eval/text`): option scoring and strided perplexity checked against a
//! hand computation from the decoder's plain full-sequence logits (log-softmax done here, in
//! f64), `retort eval --ppl / --choice --json` end to end, an eval stage with text sets only,
//! and a cross-check with transformers through tools/hf_text_scores.py (skipped without
//! Python with torch + transformers; a failure under `CI=true`).

#[path = "support/python_tool.rs"]
mod python_tool;
use python_tool::run_python_tool;
use candle_core::{DType, Device, Tensor};
use retort::eval::run::EvalModel;
use retort::eval::text::choice::{self, ChoiceRow};
use retort::eval::text::ppl::{self, PplConfig};
use retort::model::{AttnMask, Mode, Model};
use retort::rng::Rng;
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

/// A tiny model folder (`retort model init`'s character tokenizer, context 256) whose weights
/// are widened ×4 so that the next-token distributions are far from uniform: option scores
/// then differ by much more than float noise, and argmins are stable.
fn tiny_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    retort::model::init::init_folder("tiny", &path, seed).unwrap();
    let dev = Device::Cpu;
    let model = Model::load(&path, &dev, DType::F32, true).unwrap();
    let mut rng = Rng::new(seed + 100);
    for (pname, var) in model.vars() {
        let t = var.as_tensor();
        let new = if pname.ends_with("norm.weight") || pname.ends_with(".bias") {
            let noise: Vec<f32> = (0..t.elem_count()).map(|_| rng.normal() as f32).collect();
            (t + (Tensor::from_vec(noise, t.dims(), &dev).unwrap() * 0.2).unwrap()).unwrap()
        } else {
            (t * 4.0).unwrap()
        };
        var.set(&new).unwrap();
    }
    model.save(&path).unwrap();
    path
}

/// The same folder with a BOS (`<|im_start|>`) that the tokenizer puts in front of every text
/// encoded with special tokens (a TemplateProcessing post-processor, as Llama tokenizers do).
fn with_bos(dir: &Path) -> u32 {
    let p = dir.join("tokenizer.json");
    let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let bos = "<|im_start|>";
    let id = tok["added_tokens"].as_array().unwrap().iter().find(|t| t["content"] == bos).unwrap()["id"].as_u64().unwrap();
    tok["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}},
    });
    std::fs::write(&p, serde_json::to_string_pretty(&tok).unwrap()).unwrap();
    id as u32
}

fn load(dir: &Path) -> EvalModel {
    EvalModel::load(dir, &Device::Cpu).unwrap()
}

/// log p(ids[t] | ids[..t]) for t = 1..n, from ONE plain forward over the whole sequence
/// (no mask tricks, no padding) and a log-softmax computed here in f64.
fn hand_logprobs(m: &EvalModel, ids: &[u32]) -> Vec<f64> {
    let dev = Device::Cpu;
    let n = ids.len();
    let input = Tensor::from_vec(ids.to_vec(), (1, n), &dev).unwrap();
    let logits = m.model.decoder.forward(&input, &AttnMask::causal(1, n, &dev).unwrap(), None, Mode::Train).unwrap().logits;
    let rows = logits.get(0).unwrap().to_vec2::<f32>().unwrap();
    (1..n)
        .map(|t| {
            let row = &rows[t - 1];
            let max = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
            let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            row[ids[t] as usize] as f64 - lse
        })
        .collect()
}

/// The mean NLL of `" " + option` after `input`, by hand: the tokens of `input + " " +
/// option` past those of `input` (the character tokenizer never merges across the boundary),
/// after the BOS when there is one; an input too long for `context` loses tokens on the left.
fn hand_option_nll(m: &EvalModel, bos: Option<u32>, input: &str, option: &str, context: usize) -> f64 {
    let ctx = m.tok.encode(input, false).unwrap();
    let whole = m.tok.encode(&format!("{input} {option}"), false).unwrap();
    assert_eq!(&whole[..ctx.len()], &ctx[..], "the character tokenizer keeps the input's tokens");
    let cont = &whole[ctx.len()..];
    let mut seq: Vec<u32> = bos.into_iter().chain(ctx.iter().copied()).collect();
    if seq.len() + cont.len() > context {
        seq.drain(..seq.len() + cont.len() - context);
    }
    let prompt = seq.len();
    seq.extend_from_slice(cont);
    let lp = hand_logprobs(m, &seq);
    -lp[prompt - 1..].iter().sum::<f64>() / cont.len() as f64
}

/// (NLL sum, scored tokens) of one document by the transformers perplexity guide's loop,
/// written out here: windows start at 0, stride, 2·stride, …, end max_len later (or at the
/// end), each scores the tokens after where the previous window ended; each window is its
/// own plain forward. Token 0 is never scored (nothing before it). Needs stride < max_len.
fn hand_strided(m: &EvalModel, ids: &[u32], max_len: usize, stride: usize) -> (f64, usize) {
    assert!(stride < max_len);
    let n = ids.len();
    let (mut sum, mut count, mut prev_end, mut begin) = (0.0, 0, 0, 0);
    if n < 2 {
        return (sum, count);
    }
    loop {
        let end = (begin + max_len).min(n);
        let lp = hand_logprobs(m, &ids[begin..end]);
        for t in prev_end.max(begin + 1)..end {
            sum -= lp[t - begin - 1];
            count += 1;
        }
        prev_end = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    (sum, count)
}

fn library_ppl(m: &EvalModel, docs: &[Vec<u32>], max_len: usize, stride: usize, batch_size: usize) -> Vec<(f64, usize)> {
    let cfg = PplConfig { max_len, stride, batch_size };
    ppl::perplexity(&m.model.decoder, docs.iter().map(|d| Ok(d.clone())), &cfg, &mut || Ok(())).unwrap()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b} (diff {})", (a - b).abs());
}

fn rows_from(spec: &[(&str, &[&str], usize)]) -> Vec<ChoiceRow> {
    spec.iter()
        .enumerate()
        .map(|(i, (input, options, gold))| ChoiceRow { line: i + 1, input: input.to_string(), options: options.iter().map(|s| s.to_string()).collect(), gold: *gold })
        .collect()
}

const CONTEXT: usize = 256;

#[test]
fn option_mean_nll_equals_a_hand_log_softmax_over_full_sequence_logits() {
    let dir = tempfile::tempdir().unwrap();
    let long_input = "the quick brown fox jumps over the lazy dog; ".repeat(7); // 315 chars > context
    let spec: Vec<(&str, &[&str], usize)> = vec![
        ("Is the sky blue?", &["yes", "no", "maybe"], 0),
        ("Q: 2+2=", &["4", "five hundred and twelve", "22"], 0),
        ("A longer question whose options differ a lot in length, to exercise padding:", &["x", "a much longer option text here", "mid length"], 2),
        ("x", &["y"], 0),
        ("Trailing space ", &["a", "bb"], 1),
        (long_input.as_str(), &["end", "stop here"], 1),
    ];
    let rows = rows_from(&spec);
    for bos in [false, true] {
        let path = tiny_model(dir.path(), if bos { "bos" } else { "plain" }, 3);
        let bos_id = bos.then(|| with_bos(&path));
        let m = load(&path);
        assert_eq!(retort::eval::text::bos_prefix(&m.tok).unwrap(), bos_id, "the tokenizer's BOS is found");
        let hand: Vec<Vec<f64>> = rows.iter().map(|r| r.options.iter().map(|o| hand_option_nll(&m, bos_id, &r.input, o, CONTEXT)).collect()).collect();
        // Scores are far apart for this model (not a near-uniform random init).
        let spread = hand[0].iter().fold(0f64, |a, &x| a.max((x - hand[0][0]).abs()));
        assert!(spread > 0.05, "options should score differently: {:?}", hand[0]);
        for batch in [1, 3, 64] {
            let mut forwards = 0;
            let r = choice::evaluate(&m.model.decoder, &m.tok, "task.jsonl", &rows, (CONTEXT, batch), &mut || {
                forwards += 1;
                Ok(())
            })
            .unwrap();
            let options: usize = rows.iter().map(|r| r.options.len()).sum();
            assert_eq!(forwards, options.div_ceil(batch), "one on_batch per forward of {batch} option rows");
            assert_eq!(r.rows, rows.len());
            assert_eq!(r.truncated, 1, "only the long input is cut");
            let mut correct = 0;
            for ((p, h), row) in r.predictions.iter().zip(&hand).zip(&rows) {
                assert_eq!((p.line, p.gold), (row.line, row.gold));
                assert_eq!(p.nll.len(), h.len());
                for (i, (got, want)) in p.nll.iter().zip(h).enumerate() {
                    close(*got, *want, 1e-4, &format!("bos {bos} batch {batch} line {} option {i}", row.line));
                }
                assert_eq!(p.pred, choice::argmin(h), "line {}: {:?}", row.line, h);
                correct += usize::from(choice::argmin(h) == row.gold);
            }
            close(r.accuracy, correct as f64 / rows.len() as f64, 1e-12, "accuracy");
            // Mixed option lists: no class labels, no macro-F1.
            assert_eq!((r.macro_f1, r.classes.clone()), (None, None));
            let gold_mean = hand.iter().zip(&rows).map(|(h, r)| h[r.gold]).sum::<f64>() / rows.len() as f64;
            close(r.gold_nll.unwrap().mean, gold_mean, 1e-4, "gold NLL mean");
        }
    }
}

#[test]
fn an_empty_input_is_scored_after_the_bos_and_refused_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows_from(&[("", &["alpha", "beta"], 1)]);
    let path = tiny_model(dir.path(), "m", 5);
    let m = load(&path);
    let err = choice::evaluate(&m.model.decoder, &m.tok, "t.jsonl", &rows, (CONTEXT, 4), &mut || Ok(())).unwrap_err().to_string();
    assert!(err.contains("t.jsonl:1: the input is empty and the tokenizer adds no BOS"), "{err}");
    let bos = with_bos(&path);
    let m = load(&path);
    let r = choice::evaluate(&m.model.decoder, &m.tok, "t.jsonl", &rows, (CONTEXT, 4), &mut || Ok(())).unwrap();
    for (i, o) in ["alpha", "beta"].iter().enumerate() {
        // " alpha" after the BOS alone.
        close(r.predictions[0].nll[i], hand_option_nll(&m, Some(bos), "", o, CONTEXT), 1e-4, o);
    }
}

#[test]
fn class_label_tasks_report_macro_f1_over_the_hand_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let m = load(&tiny_model(dir.path(), "m", 7));
    let labels: &[&str] = &["yes", "no", "maybe"];
    let inputs = ["Does it rain?", "Is water wet?", "Can fish fly?", "Is 7 prime?", "Will it work?", "Are cats dogs?", "Is it Monday?"];
    let spec: Vec<(&str, &[&str], usize)> = inputs.iter().enumerate().map(|(i, q)| (*q, labels, i % 3)).collect();
    let rows = rows_from(&spec);
    let r = choice::evaluate(&m.model.decoder, &m.tok, "pubmedqa.jsonl", &rows, (CONTEXT, 5), &mut || Ok(())).unwrap();
    let pred: Vec<usize> = rows.iter().map(|row| choice::argmin(&labels.iter().map(|o| hand_option_nll(&m, None, &row.input, o, CONTEXT)).collect::<Vec<_>>())).collect();
    let gold: Vec<usize> = rows.iter().map(|r| r.gold).collect();
    assert_eq!(r.predictions.iter().map(|p| p.pred).collect::<Vec<_>>(), pred);
    // Macro-F1 written out: classes that occur among gold or predictions.
    let mut f1s = Vec::new();
    for c in 0..3 {
        if !gold.contains(&c) && !pred.contains(&c) {
            continue;
        }
        let tp = (0..gold.len()).filter(|&i| gold[i] == c && pred[i] == c).count() as f64;
        let fp = (0..gold.len()).filter(|&i| gold[i] != c && pred[i] == c).count() as f64;
        let fneg = (0..gold.len()).filter(|&i| gold[i] == c && pred[i] != c).count() as f64;
        f1s.push(2.0 * tp / (2.0 * tp + fp + fneg));
    }
    close(r.macro_f1.unwrap(), f1s.iter().sum::<f64>() / f1s.len() as f64, 1e-12, "macro-F1");
    assert_eq!(r.classes, Some(labels.iter().map(|s| s.to_string()).collect()));
}

fn doc_ids(m: &EvalModel, bos: Option<u32>, text: &str) -> Vec<u32> {
    bos.into_iter().chain(m.tok.encode(text, false).unwrap()).collect()
}

#[test]
fn a_document_inside_one_window_scores_the_same_whatever_the_stride() {
    let dir = tempfile::tempdir().unwrap();
    for bos in [false, true] {
        let path = tiny_model(dir.path(), if bos { "bos" } else { "plain" }, 11);
        let bos_id = bos.then(|| with_bos(&path));
        let m = load(&path);
        let doc = doc_ids(&m, bos_id, "Perplexity of a short held-out document, well under the window.");
        let n = doc.len();
        let max_len = 96;
        assert!(n < max_len);
        // By hand: every token after the first, conditioned on the whole prefix.
        let lp = hand_logprobs(&m, &doc);
        let want = -lp.iter().sum::<f64>() / lp.len() as f64;
        let mut seen = Vec::new();
        for stride in [max_len, 48, 7, 1] {
            let got = library_ppl(&m, std::slice::from_ref(&doc), max_len, stride, 2);
            assert_eq!(got[0].1, n - 1, "bos {bos} stride {stride}: tokens scored");
            close(got[0].0 / got[0].1 as f64, want, 1e-4, &format!("bos {bos} stride {stride}"));
            seen.push(got[0].0 / got[0].1 as f64);
        }
        assert!(seen.iter().all(|s| (s - seen[0]).abs() < 1e-6), "{seen:?}");
        // A window exactly the document's length is still one window.
        let got = library_ppl(&m, std::slice::from_ref(&doc), n, 3, 1);
        close(got[0].0 / got[0].1 as f64, want, 1e-4, "max_len = n");
    }
}

#[test]
fn strided_perplexity_of_long_documents_equals_the_hand_windows() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "A longer held-out document that spans several windows of sixteen tokens, so that strides matter.",
        "short",
        "x",
        "",
        "Another one, of a different length: 0123456789 abcdefghij ABCDEFGHIJ.",
    ];
    for bos in [false, true] {
        let path = tiny_model(dir.path(), if bos { "bos" } else { "plain" }, 13);
        let bos_id = bos.then(|| with_bos(&path));
        let m = load(&path);
        let docs: Vec<Vec<u32>> = texts.iter().map(|t| doc_ids(&m, bos_id, t)).collect();
        for (max_len, stride) in [(16, 5), (16, 15), (8, 3), (24, 12)] {
            let hand: Vec<(f64, usize)> = docs.iter().map(|d| hand_strided(&m, d, max_len, stride)).collect();
            for batch in [1, 3, 100] {
                let got = library_ppl(&m, &docs, max_len, stride, batch);
                assert_eq!(got.len(), docs.len());
                for (i, ((gs, gn), (hs, hn))) in got.iter().zip(&hand).enumerate() {
                    let what = format!("bos {bos} max_len {max_len} stride {stride} batch {batch} doc {i}");
                    assert_eq!(gn, hn, "{what}: tokens scored");
                    assert_eq!(*gn, docs[i].len().saturating_sub(1), "{what}: every token after the first, once");
                    if *gn > 0 {
                        close(gs / *gn as f64, hs / *hn as f64, 1e-4, &what);
                    }
                }
                // The file's figure is token-weighted over documents.
                let r = ppl::summarize("f", &got, &PplConfig { max_len, stride, batch_size: batch }, bos);
                let (s, n) = hand.iter().fold((0.0, 0), |(s, n), (hs, hn)| (s + hs, n + hn));
                close(r.nll, s / n as f64, 1e-4, "token-weighted NLL");
                close(r.ppl.ln(), s / n as f64, 1e-4, "ppl = exp(nll)");
                let empty = usize::from(!bos) * 2; // "x" and "" score nothing without a BOS
                assert_eq!((r.documents, r.unscored_documents), (5, empty + usize::from(bos)), "bos {bos}");
            }
        }
        // stride = max_len: the next window starts one token early, so its first scored
        // token still has one token of context; the same windows as stride max_len − 1.
        let long = &docs[0];
        let got = library_ppl(&m, std::slice::from_ref(long), 16, 16, 3);
        let hand = hand_strided(&m, long, 16, 15);
        assert_eq!(got[0].1, hand.1);
        close(got[0].0 / got[0].1 as f64, hand.0 / hand.1 as f64, 1e-4, "stride = max_len");
        // Shorter context makes a real difference on the long document (so the checks above
        // would notice windows taken wrongly).
        let full = hand_logprobs(&m, long);
        let full = -full.iter().sum::<f64>() / full.len() as f64;
        let narrow = hand_strided(&m, long, 4, 3);
        assert!((full - narrow.0 / narrow.1 as f64).abs() > 1e-3, "{full} vs {}", narrow.0 / narrow.1 as f64);
    }
}

const HELD: [&str; 4] = [
    "A held-out document long enough to need several windows of sixteen tokens each, at least.",
    "Second document.",
    "z",
    "Third: numbers 42 and 7, and punctuation!?",
];

fn write_held(dir: &Path) -> PathBuf {
    let p = dir.join("held.jsonl");
    let lines: Vec<String> = HELD.iter().map(|t| serde_json::json!({"text": t, "id": 1}).to_string()).collect();
    std::fs::write(&p, lines.join("\n") + "\n\n").unwrap();
    p
}

type Spec = (&'static str, &'static [&'static str], usize);

const TASK: [Spec; 5] = [
    ("Is the sky blue?", &["yes", "no"], 0),
    ("Q: 2+2=", &["4", "five", "22"], 2),
    ("Capital of France:", &["Paris", "a long wrong answer"], 1),
    ("Pick one", &["a", "b", "c", "d"], 3),
    ("Last row", &["ok"], 0),
];

fn write_task(dir: &Path) -> PathBuf {
    let p = dir.join("task.jsonl");
    let lines: Vec<String> = TASK.iter().map(|(i, o, g)| serde_json::json!({"input": i, "options": o, "gold_index": g}).to_string()).collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect();
    k.sort();
    k
}

fn sorted<'a>(k: &[&'a str]) -> Vec<&'a str> {
    let mut k = k.to_vec();
    k.sort();
    k
}

#[test]
fn cli_json_has_the_documented_keys_and_numbers_equal_the_hand_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), "m", 17);
    let held = write_held(dir.path());
    let task = write_task(dir.path());
    let out = retort(&[
        "eval", path.to_str().unwrap(), "--ppl", held.to_str().unwrap(), "--choice", task.to_str().unwrap(),
        "--max-len", "16", "--stride", "6", "--text-batch-size", "3", "--json",
    ]);
    let doc: Value = serde_json::from_str(&stdout_of(&out)).expect("stdout is one JSON document");
    assert_eq!(keys(&doc), sorted(&["models", "overlaps", "text"]));
    assert_eq!(doc["models"], serde_json::json!([]));
    assert_eq!(doc["overlaps"], serde_json::json!([]));
    let text = doc["text"].as_array().unwrap();
    assert_eq!(text.len(), 1);
    let t = &text[0];
    assert_eq!(keys(t), sorted(&["label", "model", "ppl", "choice"]));
    assert_eq!(t["label"], "m");
    assert_eq!(t["model"], path.to_str().unwrap());
    let dist = ["count", "p10", "p25", "median", "p75", "p90", "mean"];

    let p = &t["ppl"]["held"];
    assert_eq!(keys(&t["ppl"]), vec!["held"]);
    assert_eq!(keys(p), sorted(&["file", "documents", "unscored_documents", "tokens", "nll", "ppl", "per_document", "max_len", "stride", "bos"]));
    assert_eq!(keys(&p["per_document"]), sorted(&dist));
    assert_eq!(p["file"], held.to_str().unwrap());
    assert_eq!((p["max_len"].as_u64(), p["stride"].as_u64(), p["bos"].as_bool()), (Some(16), Some(6), Some(false)));
    let m = load(&path);
    let docs: Vec<Vec<u32>> = HELD.iter().map(|t| doc_ids(&m, None, t)).collect();
    let hand: Vec<(f64, usize)> = docs.iter().map(|d| hand_strided(&m, d, 16, 6)).collect();
    let (s, n) = hand.iter().fold((0.0, 0), |(s, n), (hs, hn)| (s + hs, n + hn));
    assert_eq!(p["documents"], 4);
    assert_eq!(p["unscored_documents"], 1, "\"z\" is one token");
    assert_eq!(p["tokens"].as_u64().unwrap() as usize, n);
    close(p["nll"].as_f64().unwrap(), s / n as f64, 1e-4, "nll");
    close(p["ppl"].as_f64().unwrap().ln(), s / n as f64, 1e-4, "ppl");
    assert_eq!(p["per_document"]["count"], 3);
    let doc_ppl: Vec<f64> = hand.iter().filter(|h| h.1 > 0).map(|h| (h.0 / h.1 as f64).exp()).collect();
    close(p["per_document"]["mean"].as_f64().unwrap(), doc_ppl.iter().sum::<f64>() / 3.0, 1e-3, "per-document mean");

    let c = &t["choice"]["task"];
    assert_eq!(keys(&t["choice"]), vec!["task"]);
    assert_eq!(keys(c), sorted(&["file", "rows", "accuracy", "macro_f1", "classes", "truncated", "gold_nll", "predictions"]));
    assert_eq!(keys(&c["gold_nll"]), sorted(&dist));
    assert_eq!((c["rows"].as_u64(), c["truncated"].as_u64()), (Some(5), Some(0)));
    assert_eq!((&c["macro_f1"], &c["classes"]), (&Value::Null, &Value::Null));
    let preds = c["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), TASK.len());
    let mut correct = 0;
    for (i, (pr, (input, options, gold))) in preds.iter().zip(TASK).enumerate() {
        assert_eq!(keys(pr), sorted(&["line", "gold", "pred", "nll"]));
        assert_eq!((pr["line"].as_u64(), pr["gold"].as_u64()), (Some(i as u64 + 1), Some(gold as u64)));
        let h: Vec<f64> = options.iter().map(|o| hand_option_nll(&m, None, input, o, CONTEXT)).collect();
        let got: Vec<f64> = pr["nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(got.len(), h.len());
        for (g, w) in got.iter().zip(&h) {
            close(*g, *w, 1e-4, &format!("row {i}"));
        }
        assert_eq!(pr["pred"].as_u64().unwrap() as usize, choice::argmin(&h), "row {i}: {h:?}");
        correct += usize::from(choice::argmin(&h) == gold);
    }
    close(c["accuracy"].as_f64().unwrap(), correct as f64 / TASK.len() as f64, 1e-12, "accuracy");
    // The summary lines go to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("m: held: perplexity") && err.contains("m: task: accuracy"), "{err}");

    // Without --json: the table, one row per model and a column per headline key.
    let human = stdout_of(&retort(&["eval", path.to_str().unwrap(), "--ppl", held.to_str().unwrap(), "--choice", task.to_str().unwrap(), "--max-len", "16", "--stride", "6"]));
    assert!(human.contains("ppl/held") && human.contains("acc/task"), "{human}");
    assert!(human.contains(&format!("{:.3}", p["ppl"].as_f64().unwrap())), "{human}");
}

#[test]
fn cli_bad_text_files_are_named_by_file_and_line_before_any_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), "m", 19);
    let held = write_held(dir.path());
    let task = write_task(dir.path());
    let good_row = serde_json::json!({"input": "q", "options": ["a", "b"], "gold_index": 0}).to_string();
    let bad = dir.path().join("bad.jsonl");
    let cases: Vec<(String, String)> = vec![
        (format!("{good_row}\n{}\n", serde_json::json!({"input": "q", "gold_index": 0})), "bad.jsonl:2: missing key `options`".into()),
        (format!("{good_row}\n\n{}\n", serde_json::json!({"input": "q", "options": ["a", "b"], "gold_index": 2})), "bad.jsonl:3: gold_index 2 is out of range for 2 option(s)".into()),
        (format!("{}\n", serde_json::json!({"input": "q", "options": "a", "gold_index": 0})), "bad.jsonl:1: `options` must be a list of strings".into()),
        (format!("{good_row}\n{{\"input\": \"q\", \n"), "bad.jsonl:2: not a JSON object".into()),
        (String::new(), format!("{}: no rows", bad.display())),
        ("\n\n".into(), format!("{}: no rows", bad.display())),
    ];
    for (content, want) in &cases {
        std::fs::write(&bad, content).unwrap();
        // The good ppl file comes first: had anything been scored, its line would be logged.
        let out = retort(&["eval", path.to_str().unwrap(), "--ppl", held.to_str().unwrap(), "--choice", bad.to_str().unwrap(), "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{content:?} was accepted");
        assert!(err.contains(want), "{content:?}: {err}");
        assert!(err.contains(&bad.display().to_string()), "{content:?}: the error names the file: {err}");
        assert!(!err.contains("perplexity"), "{content:?}: scored before refusing: {err}");
        assert!(out.stdout.is_empty(), "{content:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // A bad ppl file is refused before the (good) choice file is scored, too.
    let ppl_cases: Vec<(String, String)> = vec![
        ("{\"text\": \"fine\"}\n{\"body\": \"no text key\"}\n".into(), "bad.jsonl:2: no key `text`".into()),
        ("{\"text\": \"fine\"}\n{\"text\": 5}\n".into(), "bad.jsonl:2: `text` is a number, not a string".into()),
        ("{\"text\": \"fine\"}\nnot json\n".into(), "bad.jsonl:2: not json".into()),
        (String::new(), format!("input {} yielded no document", bad.display())),
    ];
    for (content, want) in &ppl_cases {
        std::fs::write(&bad, content).unwrap();
        let out = retort(&["eval", path.to_str().unwrap(), "--choice", task.to_str().unwrap(), "--ppl", bad.to_str().unwrap(), "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{content:?} was accepted: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains(want), "{content:?}: {err}");
        assert!(!err.contains("accuracy"), "{content:?}: scored before refusing: {err}");
    }
    // --text-key picks another key.
    std::fs::write(&bad, "{\"body\": \"some text here\"}\n").unwrap();
    let out = retort(&["eval", path.to_str().unwrap(), "--ppl", bad.to_str().unwrap(), "--text-key", "body", "--json"]);
    let doc: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(doc["text"][0]["ppl"]["bad"]["tokens"], "some text here".len() - 1);
    // Window flags are checked before loading anything.
    for (args, want) in [
        (vec!["--max-len", "8", "--stride", "9"], "--stride 9 is larger than --max-len 8"),
        (vec!["--stride", "0"], "--stride must be ≥ 1"),
        (vec!["--max-len", "1"], "--max-len must be ≥ 2"),
        (vec!["--text-batch-size", "0"], "--text-batch-size must be ≥ 1"),
    ] {
        let mut a = vec!["eval", path.to_str().unwrap(), "--ppl", held.to_str().unwrap()];
        a.extend(args);
        let out = retort(&a);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{want}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn eval_stage_with_only_text_sets_writes_them_and_matches_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let held = write_held(dir.path());
    let task = write_task(dir.path());
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        format!(
            r#"
[run]
name = "textonly"
seed = 1

[[stage]]
kind = "model-init"
name = "init"

[[stage]]
kind = "eval"
name = "eval"
models = ["@init"]
ppl = [{held:?}]
choice = [{task:?}]
max_len = 16
stride = 8
text_batch_size = 2
"#,
            held = held.to_str().unwrap(),
            task = task.to_str().unwrap()
        ),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    stdout_of(&retort(&["run", profile.to_str().unwrap(), "--headless", "--runs-dir", runs.to_str().unwrap()]));
    let run_dir = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let results: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval/results.json")).unwrap()).unwrap();
    assert_eq!(results["models"], serde_json::json!([]), "no problems were sampled");
    let text = results["text"].as_array().unwrap();
    assert_eq!(text.len(), 1);
    let t = &text[0];
    assert_eq!((t["ppl"]["held"]["max_len"].as_u64(), t["ppl"]["held"]["stride"].as_u64()), (Some(16), Some(8)));
    assert_eq!(t["choice"]["task"]["rows"], 5);
    // The same numbers as `retort eval` on the stage's model.
    assert_eq!(t["model"], "@init");
    let model_dir = run_dir.join("init/model");
    assert!(model_dir.join("config.json").is_file(), "{}", model_dir.display());
    let out = retort(&[
        "eval", model_dir.to_str().unwrap(), "--ppl", held.to_str().unwrap(), "--choice", task.to_str().unwrap(),
        "--max-len", "16", "--stride", "8", "--json",
    ]);
    let cli: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let c = &cli["text"][0];
    close(c["ppl"]["held"]["ppl"].as_f64().unwrap(), t["ppl"]["held"]["ppl"].as_f64().unwrap(), 1e-6, "stage vs CLI ppl");
    assert_eq!(c["ppl"]["held"]["tokens"], t["ppl"]["held"]["tokens"]);
    assert_eq!(c["choice"]["task"]["accuracy"], t["choice"]["task"]["accuracy"]);
    for (a, b) in c["choice"]["task"]["predictions"].as_array().unwrap().iter().zip(t["choice"]["task"]["predictions"].as_array().unwrap()) {
        assert_eq!(a["pred"], b["pred"]);
        for (x, y) in a["nll"].as_array().unwrap().iter().zip(b["nll"].as_array().unwrap()) {
            close(x.as_f64().unwrap(), y.as_f64().unwrap(), 1e-6, "stage vs CLI option NLL");
        }
    }
}

/// Python with torch + transformers: $RETORT_PYTHON, else .venv/bin/python, else `python3`.
fn python_with_transformers() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("RETORT_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python").display().to_string(), "python3".into()],
    };
    candidates.into_iter().find(|py| Command::new(py).args(["-c", "import torch, transformers"]).output().is_ok_and(|o| o.status.success()))
}

/// Skips with a reason; under `CI=true`, where `.ci/run` installs Python with transformers, a
/// skip would hide a broken setup, so it fails instead.
fn skip(reason: &str) {
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI must run this check, but: {reason}");
    eprintln!("SKIPPED: {reason}");
}

/// tools/hf_text_scores.py on `model_dirs` (one Python start-up): one result per folder.
fn hf_text_scores(python: &str, model_dirs: &[&Path], request: &Value) -> Vec<Value> {
    run_python_tool(python, "hf_text_scores.py", model_dirs, request, "hf_text_scores.py")["models"].as_array().unwrap().clone()
}

fn rel_close(a: f64, b: f64, rel: f64, what: &str) {
    assert!((a - b).abs() <= rel * b.abs().max(1e-9), "{what}: retort {a} vs transformers {b}");
}

#[test]
fn option_scores_and_perplexity_match_transformers() {
    let Some(python) = python_with_transformers() else {
        skip("no python with torch+transformers (set RETORT_PYTHON)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let held = write_held(dir.path());
    let task = write_task(dir.path());
    let (max_len, stride) = (16, 6);
    // Without a BOS, and with one the tokenizer adds (transformers follows the same
    // tokenizer.json post-processor): the first token of each document is then scored.
    let plain = tiny_model(dir.path(), "plain", 23);
    let with = tiny_model(dir.path(), "bos", 23);
    with_bos(&with);
    let request = serde_json::json!({
        "choice": TASK.iter().map(|(i, o, _)| serde_json::json!({"input": i, "options": o})).collect::<Vec<_>>(),
        "documents": HELD,
        "max_len": max_len,
        "stride": stride,
    });
    let reference = hf_text_scores(&python, &[&plain, &with], &request);
    for ((bos, path), theirs) in [(false, &plain), (true, &with)].into_iter().zip(reference) {
        let out = retort(&[
            "eval", path.to_str().unwrap(), "--ppl", held.to_str().unwrap(), "--choice", task.to_str().unwrap(),
            "--max-len", &max_len.to_string(), "--stride", &stride.to_string(), "--json",
        ]);
        let ours: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
        let p = &ours["text"][0]["ppl"]["held"];
        assert_eq!((&p["bos"], &theirs["bos"]), (&Value::Bool(bos), &Value::Bool(bos)));
        assert_eq!(p["tokens"], theirs["tokens"], "bos {bos}: tokens scored");
        let chars: usize = HELD.iter().map(|t| t.len()).sum();
        assert_eq!(p["tokens"].as_u64().unwrap() as usize, if bos { chars } else { chars - HELD.len() });
        rel_close(p["nll"].as_f64().unwrap(), theirs["nll"].as_f64().unwrap(), 1e-3, &format!("bos {bos}: nll"));
        rel_close(p["ppl"].as_f64().unwrap(), theirs["ppl"].as_f64().unwrap(), 1e-3, &format!("bos {bos}: ppl"));
        let preds = ours["text"][0]["choice"]["task"]["predictions"].as_array().unwrap();
        for (i, (pr, th)) in preds.iter().zip(theirs["choice_nll"].as_array().unwrap()).enumerate() {
            let a = pr["nll"].as_array().unwrap();
            let b = th.as_array().unwrap();
            assert_eq!(a.len(), b.len());
            for (j, (x, y)) in a.iter().zip(b).enumerate() {
                rel_close(x.as_f64().unwrap(), y.as_f64().unwrap(), 1e-3, &format!("bos {bos}: row {i} option {j}"));
            }
        }
    }
}

#[test]
fn cli_windows_default_to_the_model_context_and_are_capped_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), "m", 29);
    let held = write_held(dir.path());
    let m = load(&path);
    // Every document fits the tiny model's 256-token context: one window each, so the file's
    // NLL is that of plain full-sequence forwards.
    let hand: Vec<f64> = HELD.iter().flat_map(|t| hand_logprobs(&m, &doc_ids(&m, None, t))).collect();
    let want = -hand.iter().sum::<f64>() / hand.len() as f64;
    for (extra, window) in [(vec![], (256, 128)), (vec!["--max-len", "1000", "--stride", "600"], (256, 256)), (vec!["--max-len", "40"], (40, 20))] {
        let mut args = vec!["eval", path.to_str().unwrap(), "--ppl", held.to_str().unwrap(), "--json"];
        args.extend(extra.iter().copied());
        let doc: Value = serde_json::from_str(&stdout_of(&retort(&args))).unwrap();
        let p = &doc["text"][0]["ppl"]["held"];
        assert_eq!((p["max_len"].as_u64().unwrap() as usize, p["stride"].as_u64().unwrap() as usize), window, "{extra:?}");
        assert_eq!(p["tokens"].as_u64().unwrap() as usize, hand.len());
        if window.0 == 256 {
            close(p["nll"].as_f64().unwrap(), want, 1e-4, &format!("{extra:?}"));
        } else {
            // The 90-character document needs windows of 40 (stride 20).
            let docs: Vec<Vec<u32>> = HELD.iter().map(|t| doc_ids(&m, None, t)).collect();
            let (s, n) = docs.iter().map(|d| hand_strided(&m, d, 40, 20)).fold((0.0, 0), |(s, n), (hs, hn)| (s + hs, n + hn));
            close(p["nll"].as_f64().unwrap(), s / n as f64, 1e-4, "max_len 40");
            assert!((s / n as f64 - want).abs() > 1e-4, "the windows should change the figure");
        }
    }
}

#[test]
fn eval_stage_refuses_bad_text_files_before_any_stage_runs() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"input\": \"q\", \"options\": [\"a\"], \"gold_index\": 0}\n{\"input\": \"q\", \"options\": [\"a\"], \"gold_index\": 1}\n").unwrap();
    for (key, file, want) in [("ppl", &empty, format!("input {} yielded no document", empty.display())), ("choice", &bad, format!("{}:2: gold_index 1 is out of range", bad.display()))] {
        let profile = dir.path().join("p.toml");
        std::fs::write(
            &profile,
            format!(
                "[run]\nname = \"bad\"\nseed = 1\n\n[[stage]]\nkind = \"model-init\"\nname = \"init\"\n\n[[stage]]\nkind = \"eval\"\nname = \"eval\"\nmodels = [\"@init\"]\n{key} = [{:?}]\n",
                file.to_str().unwrap()
            ),
        )
        .unwrap();
        let runs = dir.path().join(format!("runs-{key}"));
        let out = retort(&["run", profile.to_str().unwrap(), "--headless", "--runs-dir", runs.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}: accepted");
        assert!(err.contains(&want), "{key}: {err}");
        // Nothing ran: no model was initialised.
        let made_model = std::fs::read_dir(&runs).map(|d| d.flatten().any(|r| r.path().join("init/model").exists())).unwrap_or(false);
        assert!(!made_model, "{key}: a stage ran before the check");
    }
}
