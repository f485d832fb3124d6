//! Evaluation: n seeded samples per problem from a model folder, verified, then every metric
//! of docs/METHODS.md §6.1 and §8 per problem and over the set.
//!
//! Problems are a [`ProblemSet`] ([`crate::tasks::problems`]: a built-in task, a tasks
//! stage's `test.jsonl`, a math or a code JSONL). Sampling and grading go through the shared
//! engine, [`crate::generate::grade`], in batches of `batch_size` rows; the rows of all
//! problems are laid end to end (problem 0's n samples, then problem 1's, …) and chunk `c`
//! draws from `Rng::derive(seed, "eval/chunk/c")`, so a seed and a config fix every sample.
//! `generate` reports each token's entropy but not the whole distribution, so the rollout
//! branching factor (RBF, §6.1) comes from a second, teacher-forced forward pass over
//! prompt + response (no KV cache), run on each chunk as it finishes, which leaves
//! `generate` untouched. It runs as many token-forwards as generation's prefill plus
//! decoding did, so it about doubles the sampling time (tiny model, n = 256: 249 → 129
//! samples/s in a debug build); `--no-rbf` / `rbf = false` skips it. A per-step hook in
//! `generate` would make RBF free; this pass keeps `generate` unchanged until one exists.
//! That pass also recomputes the entropies, which a test compares with `generate`'s as a
//! check that both see the same distributions. RBF is measured on softmax(z/T), the
//! distribution sampled from before top-p.

use super::explore::{self, ResponseEntropy};
use crate::generate::grade::{sample_and_grade, Chunk, GradeOptions, Seeds};
use crate::metrics::diversity::{self, NGramUnit};
use crate::metrics::{passk, Sample};
use crate::model::{AttnMask, Decoder, Mode, Model};
use crate::tasks::problems::{ProblemError, ProblemSet};
use crate::text::Tokenizer;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error(
        "k = {k} is larger than n = {n} samples per problem: pass@k needs at least k samples \
         to choose from (the unbiased estimator averages over size-k subsets of the n samples); \
         raise n to at least {k} or drop k = {k}"
    )]
    KExceedsN { k: usize, n: usize },
    #[error("k must be ≥ 1 (got 0); use k from 1 up to n")]
    ZeroK,
    #[error("n must be ≥ 1 samples per problem")]
    ZeroN,
    #[error("sampling temperature must be > 0 (got {0})")]
    BadTemperature(f64),
    #[error("top_p must be in (0, 1] (got {0})")]
    BadTopP(f64),
}

/// How to sample and what to compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Samples per problem.
    pub n: usize,
    /// The k of pass@k and distinct-correct@k; empty = powers of two up to n.
    pub ks: Vec<usize>,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Render prompts with the tokenizer's chat template as one user message.
    pub chat: bool,
    /// Rows per `generate` call.
    pub batch_size: usize,
    /// Compute the rollout branching factor (one extra forward pass per chunk).
    pub rbf: bool,
    /// Bins of the entropy-by-relative-position histogram.
    pub position_bins: usize,
    /// Generate with STILL-3's Python tool (docs/SANDBOX.md); RBF is then not computed (the
    /// rescoring pass would count tool tokens as the model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<crate::generate::tools::ToolsConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            n: 64,
            ks: Vec::new(),
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 24,
            seed: 0,
            chat: false,
            batch_size: 128,
            rbf: true,
            position_bins: 10,
            tools: None,
        }
    }
}

impl EvalConfig {
    /// The ks to report: the configured ones sorted and deduplicated, else powers of two to n.
    pub fn resolved_ks(&self) -> Vec<usize> {
        if self.ks.is_empty() {
            return passk::power_of_two_ks(self.n);
        }
        let set: BTreeSet<usize> = self.ks.iter().copied().collect();
        set.into_iter().collect()
    }

    pub fn check(&self) -> Result<(), EvalError> {
        check_ks(self.n, &self.ks)?;
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(EvalError::BadTemperature(self.temperature));
        }
        if self.top_p.is_nan() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(EvalError::BadTopP(self.top_p));
        }
        Ok(())
    }
}

/// n ≥ 1 and every k in 1..=n.
pub fn check_ks(n: usize, ks: &[usize]) -> Result<(), EvalError> {
    if n == 0 {
        return Err(EvalError::ZeroN);
    }
    for &k in ks {
        if k == 0 {
            return Err(EvalError::ZeroK);
        }
        if k > n {
            return Err(EvalError::KExceedsN { k, n });
        }
    }
    Ok(())
}

/// A model folder ready to sample from.
pub struct EvalModel {
    pub dir: PathBuf,
    pub model: Model,
    pub tok: Tokenizer,
}

impl EvalModel {
    /// Frozen weights in f32 on the CPU (bf16 on a GPU), tokenizer with the model's eos ids.
    pub fn load(dir: &Path, device: &Device) -> Result<EvalModel> {
        let dtype = crate::device::resolve_dtype(None, device);
        let model = Model::load(dir, device, dtype, false).with_context(|| format!("loading the model in {}", dir.display()))?;
        let eos = crate::text::model_eos_ids(dir)?;
        let tok = Tokenizer::load(dir)?.with_model_eos(&eos);
        Ok(EvalModel { dir: dir.to_path_buf(), model, tok })
    }
}

/// Progress while sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub samples_per_s: f64,
}

/// One sampled response, kept for `samples.jsonl` and for the metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub response: String,
    pub correct: bool,
    pub reward: f64,
    pub canonical: Option<String>,
    pub reason: String,
    pub tokens: usize,
    /// Mean token entropy (nats) of this response.
    pub entropy: f64,
    /// Mean RBF of this response; None when RBF was off or the response is empty.
    pub rbf: Option<f64>,
    #[serde(skip)]
    pub entropies: Vec<f32>,
}

/// Per-problem results, one record in `problems` of the JSON document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    pub id: String,
    /// Samples drawn.
    pub n: usize,
    /// Samples judged correct.
    pub correct: usize,
    /// "pass@k" for each k, "avg@n", "maj@n".
    #[serde(flatten)]
    pub scores: BTreeMap<String, f64>,
    /// Distinct correct canonical answers among all n samples.
    pub distinct_correct: usize,
    /// Size of the enumerable solution set, when the task has one.
    pub solutions: Option<usize>,
    pub coverage: Option<f64>,
    /// Normalised entropy over the correct canonical answers (0 with ≤ 1 distinct).
    pub solution_entropy: f64,
    /// The majority answer (maj@n's vote).
    pub majority: Option<String>,
    pub entropy_mean: f64,
    pub rbf_mean: Option<f64>,
    pub mean_tokens: f64,
    /// One response, the first correct one if any.
    pub example: String,
}

/// The JSON document of one model's evaluation (see `retort eval --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: String,
    pub problem_set: String,
    pub config: EvalConfig,
    /// Flat metric map; see [`aggregate_keys_doc`].
    pub aggregate: BTreeMap<String, f64>,
    /// Mean token entropy in each relative-position bin (None where no token fell).
    pub entropy_by_position: Vec<Option<f64>>,
    /// Ids of the problems with no correct sample among n (the n-rollout unsolvable set).
    pub unsolvable: Vec<String>,
    pub problems: Vec<ProblemResult>,
    #[serde(skip)]
    pub samples: Vec<Vec<SampleRecord>>,
}

/// The keys of `aggregate` (documented once, used by the CLI help and the README).
pub fn aggregate_keys_doc() -> &'static str {
    "problems, n; pass@K for each k (unbiased estimator, mean over problems); avg@N, maj@N; \
     entropy/mean, entropy/correct, entropy/incorrect, entropy/top20_threshold (nats, token means); \
     rbf/mean (rollout branching factor at p = 0.95, mean over responses); \
     diversity/distinct_correct (mean over problems of distinct correct answers among n), \
     diversity/distinct_correct@K, diversity/coverage (mean over problems with an enumerable \
     solution set), diversity/solution_entropy (mean over solved problems), diversity/eq14, \
     diversity/distinct_1, diversity/distinct_2 (mean over problems); unsolvable@N (count of \
     problems with no correct sample), response_tokens/mean, samples_per_s, tokens_per_s, seconds"
}

/// Per-step RBF (and entropy) of each response under softmax(z/T), from one teacher-forced
/// forward pass over prompt + response (see the module doc). Rows are right-padded.
pub fn rescore(decoder: &Decoder, rows: &[(&[u32], &[u32])], temperature: f64, top_p: f64) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    // Trainable weights (an RL stage evaluating its policy) must not grow an autograd graph.
    let decoder = &decoder.detached();
    let mut out = Vec::with_capacity(rows.len());
    let width_all = rows.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(1).max(1);
    // Rows per pass: as many as keep the (rows, width, vocab) f32 logits near 64 MiB.
    let per_pass = (16_000_000 / (width_all * decoder.vocab_size()).max(1)).clamp(1, 128);
    for chunk in rows.chunks(per_pass) {
        let width = chunk.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0u32; chunk.len() * width];
        let mut valid = vec![vec![false; width]; chunk.len()];
        for (b, (p, r)) in chunk.iter().enumerate() {
            for (j, &t) in p.iter().chain(r.iter()).enumerate() {
                ids[b * width + j] = t;
                valid[b][j] = true;
            }
        }
        let device = decoder.device();
        let input = Tensor::from_vec(ids, (chunk.len(), width), device)?;
        let mask = AttnMask::new(&valid, width, device)?;
        let hidden = decoder.forward_hidden(&input, &mask, None, Mode::Infer)?;
        let logits = decoder.logits(&hidden)?.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        for (b, (p, r)) in chunk.iter().enumerate() {
            if r.is_empty() {
                out.push((Vec::new(), Vec::new()));
                continue;
            }
            let mut rbf = Vec::with_capacity(r.len());
            let mut ent = Vec::with_capacity(r.len());
            // Position p.len() - 1 + t predicts response token t.
            for step in &logits[b][p.len() - 1..p.len() - 1 + r.len()] {
                let scaled: Vec<f32> = step.iter().map(|&z| (z as f64 / temperature) as f32).collect();
                let s = explore::step_stats(&scaled, top_p);
                rbf.push(s.rbf);
                ent.push(s.entropy as f32);
            }
            out.push((rbf, ent));
        }
    }
    Ok(out)
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut s, mut c) = (0.0, 0usize);
    for v in values {
        s += v;
        c += 1;
    }
    (c > 0).then(|| s / c as f64)
}

/// Samples n responses per problem ([`crate::generate::grade`], chunk `c` drawing from
/// `Rng::derive(seed, "eval/chunk/c")`) and computes every metric. `on_progress` runs after
/// each chunk; an error from it (a stop request) ends the evaluation.
pub fn evaluate(
    m: &EvalModel,
    set: &ProblemSet,
    cfg: &EvalConfig,
    on_progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<EvalReport> {
    cfg.check()?;
    if set.is_empty() {
        return Err(ProblemError::NoProblems(set.describe()).into());
    }
    let opts = GradeOptions {
        n: cfg.n,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        greedy: false,
        max_new_tokens: cfg.max_new_tokens,
        chat: cfg.chat,
        batch_size: cfg.batch_size,
        tools: cfg.tools.clone(),
    };
    let rbf_on = cfg.rbf && cfg.tools.is_none();
    let mut tool_stats = crate::generate::tools::ToolStats::default();
    // (correct, rows) of responses with and without a call.
    let mut by_call = [(0usize, 0usize); 2];
    let started = Instant::now();
    // Per-row RBF of each chunk, in row order (problem-major, as the engine lays rows out).
    let mut rbf_rows: Vec<Option<f64>> = Vec::new();
    let mut on_chunk = |c: &Chunk<'_>| -> Result<()> {
        if rbf_on {
            let pairs: Vec<(&[u32], &[u32])> = c.rows.iter().map(|g| (c.prompts[g.problem].as_slice(), g.completion.tokens.as_slice())).collect();
            let scored = rescore(&m.model.decoder, &pairs, cfg.temperature, explore::RBF_TOP_P)?;
            rbf_rows.extend(scored.iter().map(|(rbf, _)| (!rbf.is_empty()).then(|| explore::mean_rbf(rbf))));
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        on_progress(Progress { done: c.done, total: c.total, samples_per_s: c.done as f64 / secs })
    };
    let graded = sample_and_grade(&m.model.decoder, &m.tok, set, set.len(), &opts, Seeds::PerChunk { seed: cfg.seed, label: "eval/chunk" }, &mut on_chunk)?;
    let eos = m.tok.eos_ids();
    let mut tokens_total = 0usize;
    let mut rbf = rbf_rows.into_iter();
    let samples: Vec<Vec<SampleRecord>> = graded
        .into_iter()
        .map(|rows| {
            rows.into_iter()
                .map(|g| {
                    // The eos token closes the response and tool output is not the model's:
                    // neither is part of what the model said.
                    let spoken = g.completion.tokens.iter().zip(&g.from_tool).filter(|(t, &tool)| !eos.contains(t) && !tool).count();
                    tokens_total += g.completion.tokens.len();
                    if cfg.tools.is_some() {
                        tool_stats.add(&g.calls, &g.from_tool);
                        let side = &mut by_call[g.calls.is_empty() as usize];
                        side.0 += g.verdict.correct as usize;
                        side.1 += 1;
                    }
                    let entropies: Vec<f32> = g.completion.entropies.iter().zip(&g.from_tool).filter(|(_, &tool)| !tool).map(|(&h, _)| h).collect();
                    SampleRecord {
                        response: g.response,
                        correct: g.verdict.correct,
                        reward: g.verdict.reward,
                        canonical: g.verdict.canonical,
                        reason: g.verdict.reason,
                        tokens: spoken,
                        entropy: mean(entropies.iter().map(|&h| h as f64)).unwrap_or(0.0),
                        rbf: rbf.next().flatten(),
                        entropies,
                    }
                })
                .collect()
        })
        .collect();
    let total = (set.len() * cfg.n) as f64;
    let seconds = started.elapsed().as_secs_f64();
    let mut report = summarize(set, cfg, samples)?;
    report.model = m.dir.display().to_string();
    report.aggregate.insert("seconds".into(), seconds);
    report.aggregate.insert("samples_per_s".into(), total / seconds.max(1e-9));
    report.aggregate.insert("tokens_per_s".into(), tokens_total as f64 / seconds.max(1e-9));
    if cfg.tools.is_some() {
        report.aggregate.extend(tool_stats.metrics());
        for ((correct, rows), key) in by_call.iter().zip(["tools/acc_with_call", "tools/acc_without_call"]) {
            if *rows > 0 {
                report.aggregate.insert(key.into(), *correct as f64 / *rows as f64);
            }
        }
    }
    Ok(report)
}

/// Tiny task answers have no spaces, so distinct-n counts characters there; prose and code
/// count whitespace-separated words.
fn ngram_unit(set: &ProblemSet) -> NGramUnit {
    match set {
        ProblemSet::Task { .. } => NGramUnit::Chars,
        _ => NGramUnit::Whitespace,
    }
}

/// Every metric from the verified samples (no model needed; unit-tested on hand-built data).
pub fn summarize(set: &ProblemSet, cfg: &EvalConfig, samples: Vec<Vec<SampleRecord>>) -> Result<EvalReport> {
    let ks = cfg.resolved_ks();
    let n = samples.iter().map(Vec::len).min().unwrap_or(0);
    check_ks(n, &ks)?;
    let as_samples: Vec<Vec<Sample>> =
        samples.iter().map(|s| s.iter().map(|r| Sample { canonical: r.canonical.clone(), correct: r.correct }).collect()).collect();
    let pass = passk::summarize(&as_samples, &ks)?;
    let mut aggregate: BTreeMap<String, f64> = pass.scores.clone();
    aggregate.insert("problems".into(), set.len() as f64);
    aggregate.insert("n".into(), n as f64);

    let unit = ngram_unit(set);
    let mut problems = Vec::with_capacity(set.len());
    let mut unsolvable = Vec::new();
    for (i, (recs, s)) in samples.iter().zip(&as_samples).enumerate() {
        let c = s.iter().filter(|x| x.correct).count();
        let mut scores = BTreeMap::new();
        for &k in &ks {
            scores.insert(format!("pass@{k}"), passk::pass_at_k(s.len(), c, k)?);
        }
        scores.insert(format!("avg@{}", s.len()), passk::avg_at_n(s));
        scores.insert(format!("maj@{}", s.len()), passk::maj_at_n(s));
        let all = set.solutions(i);
        let div = diversity::summarize_problem(s, all.as_deref());
        if c == 0 {
            unsolvable.push(set.id(i).to_string());
        }
        let example = recs.iter().find(|r| r.correct).or(recs.first()).map(|r| r.response.clone()).unwrap_or_default();
        problems.push(ProblemResult {
            id: set.id(i).to_string(),
            n: s.len(),
            correct: c,
            scores,
            distinct_correct: div.distinct_correct,
            solutions: all.as_ref().map(Vec::len),
            coverage: div.coverage,
            solution_entropy: div.solution_entropy,
            majority: passk::majority_vote(s).and_then(|j| s[j].canonical.clone()),
            entropy_mean: mean(recs.iter().flat_map(|r| r.entropies.iter().map(|&h| h as f64))).unwrap_or(0.0),
            rbf_mean: mean(recs.iter().filter_map(|r| r.rbf)),
            mean_tokens: mean(recs.iter().map(|r| r.tokens as f64)).unwrap_or(0.0),
            example,
        });
    }

    // Entropy (§8.2): token means over all responses, split by verdict, by position.
    let flat: Vec<ResponseEntropy> = samples.iter().flatten().map(|r| ResponseEntropy { entropies: &r.entropies, correct: r.correct }).collect();
    let ent = explore::summarize_entropy(&flat, cfg.position_bins);
    aggregate.insert("entropy/mean".into(), ent.mean);
    for (key, v) in [("entropy/correct", ent.mean_correct), ("entropy/incorrect", ent.mean_incorrect), ("entropy/top20_threshold", ent.top20_threshold)] {
        if let Some(v) = v {
            aggregate.insert(key.into(), v);
        }
    }
    if let Some(r) = mean(samples.iter().flatten().filter_map(|r| r.rbf)) {
        aggregate.insert("rbf/mean".into(), r);
    }

    // Diversity (§8.3).
    let count = problems.len() as f64;
    aggregate.insert("diversity/distinct_correct".into(), problems.iter().map(|p| p.distinct_correct as f64).sum::<f64>() / count);
    for &k in &ks {
        let v = as_samples.iter().map(|s| diversity::distinct_correct_at_k(s, k) as f64).sum::<f64>() / count;
        aggregate.insert(format!("diversity/distinct_correct@{k}"), v);
    }
    if let Some(c) = mean(problems.iter().filter_map(|p| p.coverage)) {
        aggregate.insert("diversity/coverage".into(), c);
    }
    if let Some(h) = mean(problems.iter().filter(|p| p.correct > 0).map(|p| p.solution_entropy)) {
        aggregate.insert("diversity/solution_entropy".into(), h);
    }
    if let Some(e) = diversity::eq14_diversity(&as_samples) {
        aggregate.insert("diversity/eq14".into(), e);
    }
    for g in [1usize, 2] {
        let v = samples
            .iter()
            .map(|recs| {
                let texts: Vec<&str> = recs.iter().map(|r| r.response.as_str()).collect();
                diversity::distinct_n(&texts, g, unit)
            })
            .sum::<f64>()
            / count;
        aggregate.insert(format!("diversity/distinct_{g}"), v);
    }
    aggregate.insert(format!("unsolvable@{n}"), unsolvable.len() as f64);
    aggregate.insert("response_tokens/mean".into(), mean(samples.iter().flatten().map(|r| r.tokens as f64)).unwrap_or(0.0));

    Ok(EvalReport {
        model: String::new(),
        problem_set: set.describe(),
        config: EvalConfig { ks, ..cfg.clone() },
        aggregate,
        entropy_by_position: ent.by_position,
        unsolvable,
        problems,
        samples,
    })
}

/// A fixed-width number: three decimals, or "-" when absent.
fn cell(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e9 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "-".to_string(),
    }
}

/// The pass@k table of one model: a row of k, pass@k and distinct-correct@k, then the
/// headline numbers.
pub fn pass_at_k_table(report: &EvalReport) -> String {
    let a = &report.aggregate;
    let ks = &report.config.ks;
    let mut lines = Vec::new();
    let row = |label: &str, f: &dyn Fn(usize) -> String| {
        let cells: Vec<String> = ks.iter().map(|&k| format!("{:>8}", f(k))).collect();
        format!("{label:<20}{}", cells.join(""))
    };
    lines.push(row("k", &|k| k.to_string()));
    lines.push(row("pass@k", &|k| cell(a.get(&format!("pass@{k}")).copied())));
    lines.push(row("distinct correct@k", &|k| cell(a.get(&format!("diversity/distinct_correct@{k}")).copied())));
    let n = report.config.n;
    let get = |k: &str| cell(a.get(k).copied());
    lines.push(format!(
        "avg@{n} {}  maj@{n} {}  unsolvable@{n} {}/{}  coverage {}  solution entropy {}",
        get(&format!("avg@{n}")),
        get(&format!("maj@{n}")),
        get(&format!("unsolvable@{n}")),
        get("problems"),
        get("diversity/coverage"),
        get("diversity/solution_entropy"),
    ));
    lines.push(format!(
        "entropy {} (correct {}, incorrect {})  rbf@0.95 {}  distinct-2 {}  {} samples/s",
        get("entropy/mean"),
        get("entropy/correct"),
        get("entropy/incorrect"),
        get("rbf/mean"),
        get("diversity/distinct_2"),
        a.get("samples_per_s").map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
    ));
    lines.join("\n")
}

/// How the first model's unsolvable set compares with another's (§6.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overlap {
    pub first: String,
    pub other: String,
    /// Unsolvable only for the first model (the other solves them).
    pub only_first: Vec<String>,
    /// Unsolvable only for the other model (the first solves them).
    pub only_other: Vec<String>,
    pub both: Vec<String>,
    pub jaccard: f64,
}

pub fn overlap(first: (&str, &EvalReport), other: (&str, &EvalReport)) -> Overlap {
    let a: BTreeSet<String> = first.1.unsolvable.iter().cloned().collect();
    let b: BTreeSet<String> = other.1.unsolvable.iter().cloned().collect();
    let o = explore::compare_unsolvable(&a, &b);
    Overlap {
        first: first.0.to_string(),
        other: other.0.to_string(),
        jaccard: o.jaccard(),
        only_first: o.only_a.into_iter().collect(),
        only_other: o.only_b.into_iter().collect(),
        both: o.both.into_iter().collect(),
    }
}

/// Side-by-side table of several models (columns) over the headline metrics (rows), with the
/// unsolvable-set overlap against the first model.
pub fn comparison_table(models: &[(String, &EvalReport)]) -> String {
    let Some((_, first)) = models.first() else { return String::new() };
    let n = first.config.n;
    let mut keys: Vec<(String, String)> = Vec::new();
    for &k in &first.config.ks {
        keys.push((format!("pass@{k}"), format!("pass@{k}")));
    }
    for (label, key) in [
        (format!("avg@{n}"), format!("avg@{n}")),
        (format!("maj@{n}"), format!("maj@{n}")),
        ("distinct correct".to_string(), "diversity/distinct_correct".to_string()),
        ("coverage".to_string(), "diversity/coverage".to_string()),
        ("solution entropy".to_string(), "diversity/solution_entropy".to_string()),
        ("distinct-2".to_string(), "diversity/distinct_2".to_string()),
        ("entropy".to_string(), "entropy/mean".to_string()),
        ("entropy correct".to_string(), "entropy/correct".to_string()),
        ("entropy incorrect".to_string(), "entropy/incorrect".to_string()),
        ("rbf@0.95".to_string(), "rbf/mean".to_string()),
        (format!("unsolvable@{n}"), format!("unsolvable@{n}")),
    ] {
        keys.push((label, key));
    }
    let width = models.iter().map(|(l, _)| l.len()).max().unwrap_or(8).max(8) + 2;
    let mut lines = Vec::new();
    let header: String = models.iter().map(|(l, _)| format!("{l:>width$}")).collect();
    lines.push(format!("{:<22}{header}", "metric"));
    for (label, key) in &keys {
        let cells: String = models.iter().map(|(_, r)| format!("{:>width$}", cell(r.aggregate.get(key).copied()))).collect();
        lines.push(format!("{label:<22}{cells}"));
    }
    let overlaps: Vec<Option<Overlap>> =
        models.iter().enumerate().map(|(i, (l, r))| (i > 0).then(|| overlap((&models[0].0, first), (l, r)))).collect();
    for (label, pick) in [
        ("solved only by first", 0usize),
        ("solved only by this", 1),
        ("unsolvable by both", 2),
    ] {
        let cells: String = overlaps
            .iter()
            .map(|o| {
                let v = o.as_ref().map(|o| match pick {
                    0 => o.only_other.len(),
                    1 => o.only_first.len(),
                    _ => o.both.len(),
                });
                format!("{:>width$}", v.map_or("-".to_string(), |v| v.to_string()))
            })
            .collect();
        lines.push(format!("{label:<22}{cells}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, SamplingParams};
    use crate::rng::Rng;
    use crate::tasks::math::MathOptions;
    use crate::tasks::problems::MathRow;

    fn rec(canonical: Option<&str>, correct: bool, entropies: &[f32]) -> SampleRecord {
        SampleRecord {
            response: canonical.unwrap_or("?").to_string(),
            correct,
            reward: f64::from(u8::from(correct)),
            canonical: canonical.map(str::to_string),
            reason: String::new(),
            tokens: entropies.len(),
            entropy: 0.0,
            rbf: Some(entropies.len() as f64),
            entropies: entropies.to_vec(),
        }
    }

    fn math_set(ids: &[&str]) -> ProblemSet {
        let rows = ids.iter().map(|id| MathRow { id: id.to_string(), prompt: "p".into(), answer: "1".into(), source: String::new() }).collect();
        ProblemSet::Math { rows, options: MathOptions::default() }
    }

    #[test]
    fn summary_of_hand_built_samples() {
        let set = math_set(&["a", "b"]);
        let cfg = EvalConfig { n: 4, ks: vec![1, 2, 4], ..Default::default() };
        let samples = vec![
            // a: 2 of 4 correct, distinct correct {x, y}; entropies 1 and 3 on correct tokens.
            vec![rec(Some("x"), true, &[1.0]), rec(Some("y"), true, &[3.0]), rec(Some("z"), false, &[2.0, 2.0]), rec(None, false, &[])],
            // b: unsolved.
            vec![rec(Some("q"), false, &[4.0]); 4],
        ];
        let r = summarize(&set, &cfg, samples).unwrap();
        let a = &r.aggregate;
        // pass@1 = mean(2/4, 0); pass@2 = mean(1 − C(2,2)/C(4,2) = 5/6, 0).
        assert!((a["pass@1"] - 0.25).abs() < 1e-12);
        assert!((a["pass@2"] - 5.0 / 12.0).abs() < 1e-12);
        assert!((a["pass@4"] - 0.5).abs() < 1e-12);
        assert_eq!(a["unsolvable@4"], 1.0);
        assert_eq!(r.unsolvable, vec!["b".to_string()]);
        assert_eq!(a["diversity/distinct_correct"], 1.0); // (2 + 0) / 2
        assert_eq!(a["diversity/distinct_correct@1"], 0.5); // a's first sample only
        // Solution entropy over solved problems only: a has x, y once each → 1.
        assert!((a["diversity/solution_entropy"] - 1.0).abs() < 1e-12);
        // Tokens: correct 1, 3; incorrect 2, 2, 4×4 → mean (4 + 4 + 16) / 8 = 3.
        assert!((a["entropy/mean"] - 3.0).abs() < 1e-9);
        assert!((a["entropy/correct"] - 2.0).abs() < 1e-9);
        assert!((a["entropy/incorrect"] - 20.0 / 6.0).abs() < 1e-9);
        assert_eq!(r.problems[0].correct, 2);
        assert_eq!(r.problems[0].n, 4);
        assert_eq!(r.problems[1].majority.as_deref(), Some("q"));
        assert!(!a.contains_key("diversity/coverage"), "math has no enumerable sets");
    }

    #[test]
    fn k_larger_than_n_is_explained() {
        let cfg = EvalConfig { n: 4, ks: vec![1, 8], ..Default::default() };
        let err = cfg.check().unwrap_err();
        assert_eq!(err, EvalError::KExceedsN { k: 8, n: 4 });
        assert!(err.to_string().contains("raise n to at least 8"), "{err}");
        assert_eq!(EvalConfig { ks: vec![], n: 12, ..Default::default() }.resolved_ks(), vec![1, 2, 4, 8, 12]);
    }

    /// The teacher-forced pass sees the distributions `generate` sampled from: its entropies
    /// equal generate's, and RBF lies between 1 and the vocabulary size.
    #[test]
    fn rescore_matches_generate_entropies() {
        let dir = tempfile::tempdir().unwrap();
        crate::model::init::init_folder("tiny", dir.path(), 3).unwrap();
        let m = EvalModel::load(dir.path(), &Device::Cpu).unwrap();
        let prompts: Vec<Vec<u32>> = vec![m.tok.encode("12+3=", false).unwrap(), m.tok.encode("7\n", false).unwrap()];
        let params = SamplingParams { temperature: 0.7, max_new_tokens: 6, ..Default::default() };
        let outs = generate(&m.model.decoder, &prompts, &params, &mut Rng::new(5), None).unwrap();
        let pairs: Vec<(&[u32], &[u32])> = prompts.iter().zip(&outs).map(|(p, o)| (p.as_slice(), o.tokens.as_slice())).collect();
        let scored = rescore(&m.model.decoder, &pairs, 0.7, 0.95).unwrap();
        let vocab = m.model.decoder.vocab_size();
        for (o, (rbf, ent)) in outs.iter().zip(&scored) {
            assert_eq!(ent.len(), o.entropies.len());
            for (a, b) in ent.iter().zip(&o.entropies) {
                assert!((a - b).abs() < 1e-3, "{a} vs {b}");
            }
            assert!(rbf.iter().all(|&r| r >= 1 && r <= vocab));
        }
    }
}
