//! Stage `kind = "uprise-eval"`: zero-shot evaluation with retrieved prompts, every method
//! side by side (research/synth-spec.md §6.5).
//!
//! For each test row of a `prompt-score` stage's `test.jsonl`, each method picks prompts
//! from the pool (most similar first), the token budget keeps the largest prefix that fits
//! `n_tokens − (max_q_len + max_a_len)` (lengths under the LM's tokenizer; the maxima over
//! the test inputs and options, a completion row's answer standing for its options), capped
//! at `k`, the prompts are joined most-similar-last with `" \n "` before the input, and the
//! frozen LM predicts: by option mean NLL for multiple-choice rows, by greedy generation up to
//! the first `"\n"` for completion rows, scored by token F1 and exact match. Methods:
//!
//! - `zero-shot`: no prompts;
//! - `random`: k pool rows drawn per test row (seeded);
//! - `bm25`: the pool's demos ranked by BM25 against the input;
//! - `untuned`: an encoder that was not trained for this (SBERT-style, `untuned_encoder`,
//!   mean pooling by default), the same encoder for queries and prompts;
//! - `uprise`: the trained retriever (`retriever = "@retrieve"`);
//! - `few-shot` (not in the default list): k random demos of the test row's own task from the
//!   scoring stage's `target.jsonl`, the paper's "vanilla few-shot" (Table 4); it reads the
//!   target task's data, which the other methods never see.
//!
//! Accuracy (F1 and EM for completion tasks) per task, per cluster (F1 standing for a
//! completion task's accuracy), and the means over seen and held-out clusters go to
//! `results.json` and the stage's tables (clusters × methods, tasks × methods); `retrieved-<method>.jsonl` holds each row's
//! `{"qid", "pids", "sims"}` (§6.7; for `few-shot` the ids index `target.jsonl`) and its
//! outcome (`acc`: 1/0, or F1; completion rows also `prediction` and `em`).

use super::biencoder::{build_index, Retriever, Side};
use super::bm25::Bm25;
use super::data::{read_rows, TaskRow};
use super::index::{assemble, budget_keep, Index};
use super::lm::{predict, Prediction};
use super::score_stage::ScoreMeta;
use crate::eval::run::EvalModel;
use crate::model::encoder::Pooling;
use crate::rng::Rng;
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const METHODS: &[&str] = &["zero-shot", "random", "bm25", "untuned", "uprise", "few-shot"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpriseEvalStage {
    /// The frozen decoder (the scorer's, or another one for cross-model transfer).
    pub model: String,
    /// A `prompt-score` stage's folder (pool, test rows, held-out clusters).
    pub data: String,
    /// A `retrieve` stage (its `retriever/` folder), for `uprise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriever: Option<String>,
    /// The encoder of the `untuned` baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untuned_encoder: Option<String>,
    #[serde(default = "d_mean")]
    pub untuned_pooling: String,
    #[serde(default = "d_methods")]
    pub methods: Vec<String>,
    #[serde(default = "d_k")]
    pub k: usize,
    /// The LM's token budget (the reference: 1024).
    #[serde(default = "d_n_tokens")]
    pub n_tokens: usize,
    /// Test rows per task at most (None: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_task: Option<usize>,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
}

fn d_mean() -> String {
    "mean".into()
}
fn d_methods() -> Vec<String> {
    METHODS[..5].iter().map(|s| s.to_string()).collect()
}
fn d_k() -> usize {
    3
}
fn d_n_tokens() -> usize {
    1024
}
fn d_batch() -> usize {
    32
}

impl StageConfig for UpriseEvalStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, [("model", Some(self.model.as_str())), ("retriever", self.retriever.as_deref()), ("untuned_encoder", self.untuned_encoder.as_deref())]);
        r.extend(refs(Artifact::Text, [("data", Some(self.data.as_str()))]));
        r
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Results)
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        // The frozen decoder scores batches of option rows of at most `n_tokens` tokens (the
        // retriever's encoders are small beside it and not counted).
        Some(crate::stage::needs::Needs {
            model: self.model.clone(),
            trainable: crate::stage::needs::Trainable::Frozen,
            forward: Some((self.batch_size, self.n_tokens)),
            knobs: vec![format!("lower `batch_size` (now {}) or `n_tokens` (now {})", self.batch_size, self.n_tokens)],
            ..Default::default()
        })
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for m in &self.methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(("methods".into(), format!("unknown method {m:?}; the methods are {METHODS:?}")));
            }
        }
        if self.methods.iter().any(|m| m == "uprise") && self.retriever.is_none() {
            return Err(("retriever".into(), "method \"uprise\" needs `retriever`, a `retrieve` stage (\"@name\")".into()));
        }
        if self.methods.iter().any(|m| m == "untuned") && self.untuned_encoder.is_none() {
            return Err(("untuned_encoder".into(), "method \"untuned\" needs `untuned_encoder`, an encoder folder (e.g. all-MiniLM-L6-v2)".into()));
        }
        if Pooling::parse(&self.untuned_pooling).is_none() {
            return Err(("untuned_pooling".into(), "use \"mean\" or \"cls\"".into()));
        }
        if self.k == 0 || self.batch_size == 0 {
            return Err(("k".into(), "k and batch_size must be at least 1".into()));
        }
        if self.max_per_task == Some(0) {
            return Err(("max_per_task".into(), "max_per_task must be at least 1 (leave it out to evaluate every test row)".into()));
        }
        Ok(())
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(self.methods.len() as u64), "method")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        run(self, ctx)
    }
}

/// One method's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: String,
    /// Each task's accuracy (multiple choice) or mean token F1 (completion).
    pub per_task: BTreeMap<String, f64>,
    /// Each completion task's exact match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_task_em: BTreeMap<String, f64>,
    pub per_cluster: BTreeMap<String, f64>,
    /// Mean over the seen clusters' accuracies.
    pub seen: Option<f64>,
    /// Mean over the held-out clusters' accuracies.
    pub held_out: Option<f64>,
    /// Mean number of prompts prepended.
    pub mean_prompts: f64,
}

/// Per task the mean of its rows' `acc` (accuracy, or F1 for completion rows) and of their
/// `em` (completion rows); a cluster's figure is the mean of its tasks' (as the paper averages
/// a cluster's columns), then the seen and held-out means over clusters.
pub fn summarize(method: &str, rows: &[&TaskRow], predictions: &[Prediction], held_out: &[String], mean_prompts: f64) -> MethodResult {
    #[derive(Default)]
    struct Sums {
        acc: f64,
        em: f64,
        n: usize,
        completion: bool,
        cluster: String,
    }
    let mut by_task: BTreeMap<String, Sums> = BTreeMap::new();
    for (r, p) in rows.iter().zip(predictions) {
        let e = by_task.entry(r.task.clone()).or_insert_with(|| Sums { cluster: r.cluster.clone(), ..Sums::default() });
        e.acc += p.acc;
        e.em += p.em.unwrap_or(0.0);
        e.completion |= p.em.is_some();
        e.n += 1;
    }
    let per_task: BTreeMap<String, f64> = by_task.iter().map(|(t, s)| (t.clone(), s.acc / s.n as f64)).collect();
    let per_task_em: BTreeMap<String, f64> = by_task.iter().filter(|(_, s)| s.completion).map(|(t, s)| (t.clone(), s.em / s.n as f64)).collect();
    let mut by_cluster: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (t, s) in &by_task {
        by_cluster.entry(s.cluster.clone()).or_default().push(per_task[t]);
    }
    let per_cluster: BTreeMap<String, f64> = by_cluster.into_iter().map(|(c, v)| (c, v.iter().sum::<f64>() / v.len() as f64)).collect();
    let mean = |held: bool| {
        let v: Vec<f64> = per_cluster.iter().filter(|(c, _)| held_out.contains(c) == held).map(|(_, a)| *a).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    MethodResult { method: method.into(), seen: mean(false), held_out: mean(true), per_task, per_task_em, per_cluster, mean_prompts }
}

/// Tasks as rows, methods as columns: accuracy, or `F1/EM` for completion tasks.
pub fn task_table(results: &[MethodResult], held_out_tasks: &[String]) -> String {
    let tasks: Vec<String> = results.first().map(|r| r.per_task.keys().cloned().collect()).unwrap_or_default();
    let width = tasks.iter().map(|t| t.len() + 1).max().unwrap_or(4).max(4) + 2;
    let mut head = format!("{:<width$}", "task");
    for r in results {
        head.push_str(&format!("{:>12}", r.method));
    }
    let mut lines = vec![head];
    for t in &tasks {
        let name = if held_out_tasks.contains(t) { format!("{t}*") } else { t.clone() };
        let mut line = format!("{name:<width$}");
        for r in results {
            let cell = match (r.per_task.get(t), r.per_task_em.get(t)) {
                (Some(f1), Some(em)) => format!("{:.1}/{:.1}", 100.0 * f1, 100.0 * em),
                (Some(acc), None) => format!("{:.1}", 100.0 * acc),
                _ => "-".into(),
            };
            line.push_str(&format!("{cell:>12}"));
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// Methods as rows, clusters (held-out ones marked `*`) and the two means as columns.
pub fn table(results: &[MethodResult], held_out: &[String]) -> String {
    let clusters: Vec<String> = results.first().map(|r| r.per_cluster.keys().cloned().collect()).unwrap_or_default();
    let mut head = format!("{:<12}", "method");
    for c in &clusters {
        let name = if held_out.contains(c) { format!("{c}*") } else { c.clone() };
        head.push_str(&format!("{name:>14}"));
    }
    head.push_str(&format!("{:>10}{:>10}", "seen", "held-out"));
    let mut lines = vec![head];
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
    for r in results {
        let mut line = format!("{:<12}", r.method);
        for c in &clusters {
            line.push_str(&format!("{:>14}", pct(r.per_cluster.get(c).copied())));
        }
        line.push_str(&format!("{:>10}{:>10}", pct(r.seen), pct(r.held_out)));
        lines.push(line);
    }
    lines.join("\n")
}

fn run(cfg: &UpriseEvalStage, ctx: &mut StageCtx) -> Result<StageOutput> {
    let data = ctx.resolve(&cfg.data)?;
    // meta.json first: it is what tells a prompt-score folder from any other.
    let meta_path = data.join("meta.json");
    let meta_text = std::fs::read_to_string(&meta_path).with_context(|| format!("`data` = {}: no meta.json; `data` must be a prompt-score stage (\"@score\")", data.display()))?;
    let meta: ScoreMeta = serde_json::from_str(&meta_text).with_context(|| format!("{}: not a prompt-score stage's meta.json", meta_path.display()))?;
    let pool = read_rows(&data.join("pool.jsonl")).context("the pool of `data`")?;
    let mut test = read_rows(&data.join("test.jsonl")).context("the test rows of `data`")?;
    // The encoders load before any method is evaluated, so a wrong `retriever` or
    // `untuned_encoder` fails now rather than after the methods before it have run.
    let trained = if cfg.methods.iter().any(|m| m == "uprise") {
        let given = ctx.resolve(cfg.retriever.as_deref().context("retriever")?)?;
        let r = Retriever::load(&Retriever::locate(&given).context("`retriever`")?, &ctx.device).context("`retriever`")?;
        if r.pool.len() != pool.len() {
            bail!("the retriever's pool has {} rows but `data`'s has {}; they must come from the same prompt-score stage", r.pool.len(), pool.len());
        }
        Some(r)
    } else {
        None
    };
    let untuned = if cfg.methods.iter().any(|m| m == "untuned") {
        let dir = ctx.resolve(cfg.untuned_encoder.as_deref().context("untuned_encoder")?)?;
        Some(Side::load(&dir, &ctx.device, false, 256).context("`untuned_encoder`")?)
    } else {
        None
    };
    if let Some(cap) = cfg.max_per_task {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        test.retain(|r| {
            let n = seen.entry(r.task.clone()).or_default();
            *n += 1;
            *n <= cap
        });
    }
    let m = EvalModel::load(&ctx.resolve(&cfg.model)?, &ctx.device)?;
    // The budget's maxima: the longest test input and option under the LM's tokenizer.
    let len = |s: &str| -> Result<usize> { Ok(m.tok.encode(s, false)?.len()) };
    let max_q = test.iter().map(|r| len(&r.input)).collect::<Result<Vec<_>>>()?.into_iter().max().unwrap_or(0);
    // A completion row's answer counts as its one option (the room its generation needs).
    let answers = test.iter().flat_map(|r| r.options.clone().unwrap_or_else(|| vec![r.answer.clone()]));
    let max_a = answers.map(|o| len(&o)).collect::<Result<Vec<_>>>()?.into_iter().max().unwrap_or(0);
    let demos: Vec<String> = pool.iter().map(TaskRow::demo).collect();
    let demo_lens: Vec<usize> = demos.iter().map(|d| len(d)).collect::<Result<_>>()?;
    ctx.events.info(format!("{} test rows, pool of {}; budget {} − ({max_q} + {max_a}) tokens, k = {}", test.len(), pool.len(), cfg.n_tokens, cfg.k));
    // A budget no prompt fits turns every method into zero-shot: a comparison of nothing.
    let budget = cfg.n_tokens.saturating_sub(max_q + max_a);
    let shortest = demo_lens.iter().copied().min().unwrap_or(0);
    if cfg.methods.iter().any(|m| m != "zero-shot") && shortest > budget {
        bail!(
            "`n_tokens` = {} leaves {budget} tokens for prompts after the longest test input ({max_q}) and answer ({max_a}), fewer than the shortest pool prompt ({shortest}): every method would run zero-shot; raise `n_tokens` to at least {}",
            cfg.n_tokens,
            max_q + max_a + shortest
        );
    }

    // The few-shot baseline's demos come from the target tasks' own rows, not the pool.
    let target = if cfg.methods.iter().any(|m| m == "few-shot") { read_rows(&data.join("target.jsonl")).context("the target rows of `data`")? } else { Vec::new() };
    let target_index: BTreeMap<&str, usize> = target.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let target_demos: Vec<String> = target.iter().map(TaskRow::demo).collect();
    let target_lens: Vec<usize> = target_demos.iter().map(|d| len(d)).collect::<Result<_>>()?;

    let mut results = Vec::new();
    let mut retrieved_files = Vec::new();
    for (mi, method) in cfg.methods.iter().enumerate() {
        ctx.check_stop()?;
        // Each row's ranked (pool id, similarity), most similar first.
        let ranked: Vec<Vec<(usize, f32)>> = match method.as_str() {
            "zero-shot" => vec![Vec::new(); test.len()],
            "random" => test
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let mut rng = Rng::derive(ctx.seed, &format!("uprise-eval/random/{i}"));
                    let mut ids: Vec<usize> = (0..pool.len()).collect();
                    let take = cfg.k.min(ids.len());
                    for j in 0..take {
                        let s = j + rng.usize(ids.len() - j);
                        ids.swap(j, s);
                    }
                    ids[..take].iter().map(|&p| (p, 0.0)).collect()
                })
                .collect(),
            "few-shot" => {
                test.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut rng = Rng::derive(ctx.seed, &format!("uprise-eval/few-shot/{i}"));
                        let mut same: Vec<&TaskRow> = target.iter().filter(|t| t.task == r.task && t.id != r.id).collect();
                        let take = cfg.k.min(same.len());
                        for j in 0..take {
                            let s = j + rng.usize(same.len() - j);
                            same.swap(j, s);
                        }
                        same[..take].iter().map(|t| (target_index[t.id.as_str()], 0.0)).collect()
                    })
                    .collect()
            }
            "bm25" => {
                let refs: Vec<&str> = demos.iter().map(String::as_str).collect();
                let bm = Bm25::new(&refs);
                test.iter().map(|r| bm.top_k(&r.input, cfg.k).into_iter().map(|(p, s)| (p, s as f32)).collect()).collect()
            }
            "untuned" => {
                let pooling = Pooling::parse(&cfg.untuned_pooling).context("untuned_pooling")?;
                let side = untuned.as_ref().context("untuned_encoder")?;
                let index = build_index(side, &pool, pooling, cfg.batch_size)?;
                let inputs: Vec<&str> = test.iter().map(|r| r.input.as_str()).collect();
                let qs = side.embed(&inputs, pooling, cfg.batch_size)?;
                qs.iter().map(|q| search(&index, q, cfg.k)).collect()
            }
            "uprise" => {
                let r = trained.as_ref().context("retriever")?;
                let inputs: Vec<&str> = test.iter().map(|r| r.input.as_str()).collect();
                let qs = r.query.embed(&inputs, r.pooling, cfg.batch_size)?;
                qs.iter().map(|q| search(&r.index, q, cfg.k)).collect()
            }
            other => bail!("unknown method {other:?}"),
        };
        let (demos, demo_lens) = if method == "few-shot" { (&target_demos, &target_lens) } else { (&demos, &demo_lens) };
        let mut items = Vec::with_capacity(test.len());
        let mut records = Vec::with_capacity(test.len());
        let mut n_prompts = 0usize;
        for (i, (row, ranked)) in test.iter().zip(&ranked).enumerate() {
            let lens: Vec<usize> = ranked.iter().map(|(p, _)| demo_lens[*p]).collect();
            let keep = budget_keep(&lens, cfg.k, cfg.n_tokens, max_q, max_a);
            n_prompts += keep;
            let chosen: Vec<&str> = ranked[..keep].iter().map(|(p, _)| demos[*p].as_str()).collect();
            items.push((assemble(&chosen, &row.input), row));
            let pids: Vec<usize> = ranked[..keep].iter().map(|(p, _)| *p).collect();
            let sims: Vec<f32> = ranked[..keep].iter().map(|(_, s)| *s).collect();
            records.push(serde_json::json!({ "qid": i, "id": row.id, "pids": pids, "sims": sims }));
        }
        let predictions = predict(&m, &items, cfg.batch_size, &mut || Ok(()))?;
        // Each row's outcome beside what was retrieved for it, so a reader can audit both.
        let mut lines = String::new();
        for (mut rec, p) in records.into_iter().zip(&predictions) {
            rec["acc"] = serde_json::json!(p.acc);
            if let (Some(text), Some(em)) = (&p.text, p.em) {
                rec["prediction"] = serde_json::json!(text);
                rec["em"] = serde_json::json!(em);
            }
            lines.push_str(&format!("{rec}\n"));
        }
        let rows: Vec<&TaskRow> = test.iter().collect();
        let res = summarize(method, &rows, &predictions, &meta.held_out, n_prompts as f64 / test.len().max(1) as f64);
        ctx.events.info(format!(
            "{method}: seen {} held-out {} (mean {:.2} prompts)",
            res.seen.map_or("-".into(), |v| format!("{:.3}", v)),
            res.held_out.map_or("-".into(), |v| format!("{:.3}", v)),
            res.mean_prompts
        ));
        let file = format!("retrieved-{method}.jsonl");
        crate::fsutil::write_atomic(&ctx.dir.join(&file), lines.as_bytes())?;
        retrieved_files.push(file);
        results.push(res);
        ctx.events.progress(mi as u64 + 1, Some(cfg.methods.len() as u64), "method", None);
    }
    let held_out_tasks: Vec<String> = test.iter().filter(|r| meta.held_out.contains(&r.cluster)).map(|r| r.task.clone()).collect();
    let table = format!(
        "{}\n\nper task (accuracy; F1/EM for completion tasks; * held out):\n{}",
        table(&results, &meta.held_out),
        task_table(&results, &held_out_tasks)
    );
    let json = serde_json::json!({ "held_out": meta.held_out, "k": cfg.k, "n_tokens": cfg.n_tokens, "test_rows": test.len(), "methods": results });
    crate::fsutil::write_atomic(&ctx.dir.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    crate::fsutil::write_atomic(&ctx.dir.join("table.txt"), format!("{table}\n").as_bytes())?;
    let mut summary = BTreeMap::new();
    for r in &results {
        if let Some(v) = r.seen {
            summary.insert(format!("{}/seen", r.method), v);
        }
        if let Some(v) = r.held_out {
            summary.insert(format!("{}/held_out", r.method), v);
        }
    }
    Ok(StageOutput { output: Some(ctx.dir.clone()), summary, table: Some(table) })
}

fn search(index: &Index, q: &[f32], k: usize) -> Vec<(usize, f32)> {
    index.top_k(q, k).into_iter().map(|(row, s)| (index.ids[row] as usize, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rows_per_task_is_refused() {
        let cfg: UpriseEvalStage = toml::from_str("model = \"@lm\"\ndata = \"@score\"\nmethods = [\"zero-shot\"]\nmax_per_task = 0\n").unwrap();
        assert_eq!(cfg.validate().unwrap_err().0, "max_per_task");
    }

    #[test]
    fn clusters_average_their_tasks_and_held_out_is_apart() {
        let mk = |task: &str, cluster: &str| TaskRow { id: String::new(), task: task.into(), cluster: cluster.into(), input: String::new(), options: None, answer: String::new() };
        let rows = [mk("a", "x"), mk("a", "x"), mk("b", "x"), mk("c", "y"), mk("c", "y"), mk("c", "y"), mk("c", "y")];
        let refs: Vec<&TaskRow> = rows.iter().collect();
        // a: 1/2, b: 1/1 → cluster x 0.75 (task mean, not row mean 2/3); c: 1/4 → y 0.25.
        let p = |acc: f64| Prediction { acc, em: None, nll: Vec::new(), text: None };
        let preds: Vec<Prediction> = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0].into_iter().map(p).collect();
        let r = summarize("m", &refs, &preds, &["y".into()], 2.0);
        assert_eq!(r.per_task["a"], 0.5);
        assert_eq!(r.per_cluster["x"], 0.75);
        assert_eq!((r.seen, r.held_out), (Some(0.75), Some(0.25)));
        let t = table(&[r], &["y".into()]);
        assert!(t.contains("y*") && t.contains("75.0") && t.contains("25.0"), "{t}");
    }

    #[test]
    fn completion_tasks_report_f1_and_exact_match() {
        let mk = |task: &str, cluster: &str| TaskRow { id: String::new(), task: task.into(), cluster: cluster.into(), input: String::new(), options: None, answer: String::new() };
        let rows = [mk("copy", "x"), mk("copy", "x"), mk("yesno", "x")];
        let refs: Vec<&TaskRow> = rows.iter().collect();
        let preds = [
            Prediction { acc: 0.5, em: Some(0.0), nll: Vec::new(), text: Some("a b".into()) },
            Prediction { acc: 1.0, em: Some(1.0), nll: Vec::new(), text: Some("c".into()) },
            Prediction { acc: 1.0, em: None, nll: vec![0.1, 0.2], text: None },
        ];
        let r = summarize("m", &refs, &preds, &[], 0.0);
        // copy: F1 (0.5 + 1) / 2 = 0.75, EM 1/2; the cluster averages copy's F1 with yesno's accuracy.
        assert_eq!((r.per_task["copy"], r.per_task_em["copy"]), (0.75, 0.5));
        assert!(!r.per_task_em.contains_key("yesno"));
        assert_eq!(r.per_cluster["x"], 0.875);
        let t = task_table(&[r], &["copy".into()]);
        assert!(t.contains("copy*") && t.contains("75.0/50.0") && t.contains("100.0"), "{t}");
    }
}
