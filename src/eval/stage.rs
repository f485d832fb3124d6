//! Stage `kind = "eval"`: pass@k to large k, diversity and exploration metrics of one or more
//! models on one problem set, side by side.
//!
//! ```toml
//! [[stage]]
//! kind = "eval"
//! name = "eval"
//! models = ["@sft", "@grpo"]   # model folders or earlier stages' outputs
//! from = "@data"               # a tasks stage's test.jsonl; or task = "countdown" (+ options,
//!                              # test_problems); or jsonl = "file.jsonl" + verifier = "math" | "code"
//! n = 64                       # samples per problem
//! k = [1, 4, 16, 64]           # default: powers of two up to n
//! temperature = 1.0
//! top_p = 1.0
//! max_new_tokens = 24
//! limit = 100                  # first problems only
//!
//! # text evaluation (optional; with these the problem keys may be left out)
//! ppl = ["held.jsonl", "@synth/test.jsonl"]   # perplexity on held-out text (JSONL)
//! text_key = "text"            # key of the text in ppl files
//! choice = ["pubmedqa.jsonl"]  # {"input", "options": [...], "gold_index"} rows
//! max_len = 1024               # perplexity window (default: the model's context, ≤ 1024)
//! stride = 512                 # window stride (default: max_len / 2)
//! text_batch_size = 8          # windows / option rows per forward
//! paper = "PubMedQA 0.52 (AdaptLLM-7B, Table 3)"   # printed under the closing table
//!
//! # questions about images for a vision-language model (optional; see [`crate::eval::vision`])
//! images = [{ file = "slake_open.jsonl", metric = "recall" }, { file = "recipes.jsonl", metric = "rouge_l" }]
//! image_batch_size = 4         # rows generated at once (greedy, max_new_tokens each)
//!
//! # OOD detection of encoders (optional; instead of the keys above)
//! ood = { id = "@data/id_test.jsonl", ood = ["@data/other.jsonl"], t = [300, 600] }
//! ```
//! The problem keys (`from`, `task`, `options`, `test_problems`, `jsonl`, `verifier`, `chat`)
//! are the ones the sft and rl stages use too ([`crate::tasks::source`]); `problems` is the
//! old name of `test_problems`. Text evaluation is [`crate::eval::text`]: perplexity over
//! `ppl` files and option-scoring accuracy (macro-F1 for class-label tasks) over `choice`
//! files, each set named by its file stem. The `ood` table ([`super::ood_eval`]) scores
//! encoders by their reconstruction loss instead (AUROC / FPR95 per ID/OOD pair and t); an
//! eval stage does either that or the decoder evaluations, not both. `images` sets
//! ([`super::vision`]) are answered greedily by vision-language models (a `qwen2_vl` folder
//! evaluates only those) and scored with `exact`, `math`, `choice`, `recall` or `rouge_l`.
//!
//! Output: `<run>/<name>/results.json` ([`StageResults`]: each model's [`EvalReport`] and the
//! unsolvable-set overlaps with the first model, and `text`: each model's [`TextResult`]) and
//! `samples-<model>.jsonl` (every response with its verdict), `images-<model>.jsonl` (every
//! image row's response and scores). The stage summary holds the headline metrics
//! (`ppl/<set>`, `acc/<set>`, `macro_f1/<set>` for text sets, `acc|recall|rouge_l/<set>` for
//! image sets,
//! `auroc/mean/t<t>` and `fpr95/mean/t<t>` for OOD sets; prefixed
//! `<model>/` when several models are compared) and its table is the pass@k table or the
//! comparison, then the text table (a row per model), then `paper`.

use super::ood_eval::{self, OodEval, OodResult};
use super::run::{self, EvalConfig, EvalModel, EvalReport, Overlap};
use super::text::{self, TextConfig, TextResult, TextSets};
use super::vision::{self, ImageResult, ImageSetSpec, ImageSets, VisionModel};
use crate::fsutil::write_atomic;
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use crate::tasks::problems::{check_jsonl, fit_models_context, ProblemSet, TooLong};
use crate::tasks::source::{self, ProblemSource};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Model folders or `@stage` references; the first is the reference for overlaps.
    pub models: Vec<String>,
    /// The problems: `from` (a tasks stage's test.jsonl, or a JSONL of instances), `task`
    /// (+ `options`, `test_problems`, generated from the run's seed) or `jsonl` + `verifier`;
    /// `chat` renders prompts with the chat template (see [`crate::tasks::source`]).
    #[serde(flatten, skip_deserializing)]
    pub source: ProblemSource,
    #[serde(default = "d_n")]
    pub n: usize,
    /// ks of pass@k; empty = powers of two up to n.
    #[serde(default)]
    pub k: Vec<usize>,
    #[serde(default = "d_one")]
    pub temperature: f64,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default = "d_new_tokens")]
    pub max_new_tokens: usize,
    /// Evaluate the first `limit` problems.
    #[serde(default = "d_problems")]
    pub limit: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Compute the rollout branching factor (one extra forward pass per batch).
    #[serde(default = "d_true")]
    pub rbf: bool,
    /// Generate with STILL-3's Python tool, e.g. `tools = { max_calls = 4 }` (docs/SANDBOX.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<crate::generate::tools::ToolsConfig>,
    /// A problem whose prompt + max_new_tokens exceeds a model's context: "error" (the
    /// run does not start sampling) or "skip" (left out, counted in the log).
    #[serde(default)]
    pub too_long: TooLong,
    /// Held-out text files (JSONL, or `@stage/file`) to measure perplexity on.
    #[serde(default)]
    pub ppl: Vec<String>,
    /// JSONL key of the text in `ppl` files.
    #[serde(default = "d_text_key")]
    pub text_key: String,
    /// Multiple-choice files (`{"input", "options", "gold_index"}` rows, or `@stage/file`).
    #[serde(default)]
    pub choice: Vec<String>,
    /// Perplexity window in tokens; default: the model's context, at most 1024.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// Perplexity window stride; default: half the window.
    #[serde(default)]
    pub stride: Option<usize>,
    /// Windows (ppl) or option rows (choice) per forward.
    #[serde(default = "d_text_batch")]
    pub text_batch_size: usize,
    /// Free text printed under the closing table (e.g. the paper's own numbers).
    #[serde(default)]
    pub paper: Option<String>,
    /// Reconstruction-based OOD detection of the models (encoders with an MLM head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodEval>,
    /// Questions about images (`{"images", "prompt", "answer"}` rows) for vision-language models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageSetSpec>,
    /// Image rows generated at once.
    #[serde(default = "d_image_batch")]
    pub image_batch_size: usize,
}

impl crate::tasks::source::Sourced for EvalStage {
    const SOURCE: &'static source::Spec = &source::EVAL;
    fn source_mut(&mut self) -> &mut ProblemSource {
        &mut self.source
    }
}

fn d_problems() -> usize {
    100
}
fn d_n() -> usize {
    64
}
fn d_one() -> f64 {
    1.0
}
fn d_new_tokens() -> usize {
    24
}
fn d_batch() -> usize {
    128
}
fn d_true() -> bool {
    true
}
fn d_text_key() -> String {
    "text".into()
}
fn d_text_batch() -> usize {
    8
}
fn d_image_batch() -> usize {
    4
}

/// One model's result in `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResult {
    pub label: String,
    pub report: EvalReport,
}

/// `results.json` of an eval stage (read by `retort report`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageResults {
    pub models: Vec<ModelResult>,
    /// The first model's unsolvable set against each other model's.
    pub overlaps: Vec<Overlap>,
    /// Each model's perplexity and choice results, when the stage has text sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text: Vec<TextResult>,
    /// Each model's OOD detection result, when the stage has an `ood` table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ood: Vec<OodResult>,
    /// Each model's results on the `images` sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageResult>,
}

pub const RESULTS_FILE: &str = "results.json";

/// Short, distinct labels for models: `@sft` → "sft", a path → its folder name (the parent's
/// when the folder is called `model`), with "-2", "-3" appended to repeats.
pub fn model_labels(models: &[String]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for m in models {
        let base = match m.strip_prefix('@') {
            Some(stage) => stage.to_string(),
            None => {
                let p = Path::new(m.trim_end_matches('/'));
                let name = |q: &Path| q.file_name().map(|s| s.to_string_lossy().into_owned());
                match name(p) {
                    Some(n) if n == "model" => p.parent().and_then(name).unwrap_or(n),
                    Some(n) => n,
                    None => m.clone(),
                }
            }
        };
        let mut label = base.clone();
        let mut i = 2;
        while labels.contains(&label) {
            label = format!("{base}-{i}");
            i += 1;
        }
        labels.push(label);
    }
    labels
}

/// The metrics a stage summary carries (the dashboard shows them; the rest is in results.json).
fn headline(report: &EvalReport) -> BTreeMap<String, f64> {
    let n = report.config.n;
    report
        .aggregate
        .iter()
        .filter(|(k, _)| {
            k.starts_with("pass@")
                || ["diversity/distinct_correct", "diversity/coverage", "diversity/solution_entropy", "diversity/distinct_2"].contains(&k.as_str())
                || ["entropy/mean", "entropy/correct", "entropy/incorrect", "rbf/mean"].contains(&k.as_str())
                || **k == format!("avg@{n}")
                || **k == format!("maj@{n}")
                || **k == format!("unsolvable@{n}")
                || k.as_str() == "samples_per_s"
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

impl EvalStage {
    fn eval_config(&self, seed: u64) -> EvalConfig {
        EvalConfig {
            n: self.n,
            ks: self.k.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            seed,
            chat: self.source.chat,
            batch_size: self.batch_size,
            rbf: self.rbf,
            position_bins: 10,
            tools: self.tools.clone(),
        }
    }

    /// Whether problems are to be sampled (else the stage evaluates text sets only).
    fn has_problems(&self) -> bool {
        self.source.from.is_some() || self.source.task.is_some() || self.source.jsonl.is_some()
    }

    fn has_text(&self) -> bool {
        !self.ppl.is_empty() || !self.choice.is_empty()
    }

    fn image_sets(&self, resolve: &dyn Fn(&str) -> Result<PathBuf>) -> Result<ImageSets> {
        let files = self.images.iter().map(|s| resolve(&s.file).context("`images`")).collect::<Result<Vec<_>>>()?;
        ImageSets::open(&self.images, &files)
    }

    fn text_config(&self) -> TextConfig {
        TextConfig { text_key: self.text_key.clone(), max_len: self.max_len, stride: self.stride, batch_size: self.text_batch_size }
    }

    fn text_sets(&self, resolve: &dyn Fn(&str) -> Result<PathBuf>) -> Result<TextSets> {
        let files = |list: &[String], key: &str| list.iter().map(|f| resolve(f).with_context(|| format!("`{key}`"))).collect::<Result<Vec<_>>>();
        TextSets::open(&files(&self.ppl, "ppl")?, &files(&self.choice, "choice")?, &self.text_key)
    }

    fn validate_text(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.max_len.is_some_and(|m| m < 2) {
            return err("max_len", "max_len must be ≥ 2 tokens (a window scores the tokens after its first)".into());
        }
        match (self.stride, self.max_len) {
            (Some(0), _) => return err("stride", "stride must be ≥ 1".into()),
            (Some(s), Some(m)) if s > m => {
                return err("stride", format!("stride = {s} is larger than max_len = {m}: tokens between windows would go unscored; use a stride ≤ max_len"))
            }
            _ => {}
        }
        if self.text_batch_size == 0 {
            return err("text_batch_size", "text_batch_size must be ≥ 1".into());
        }
        if self.text_key.is_empty() {
            return err("text_key", "text_key must name the JSONL key holding the text, e.g. \"text\"".into());
        }
        Ok(())
    }

    fn problem_set(&self, ctx: &StageCtx) -> Result<ProblemSet> {
        let mut set = self.source.evaluated(&|r| ctx.resolve(r), || ctx.rng("problems").next_u64())?;
        set.truncate(self.limit);
        Ok(set)
    }
}

impl StageConfig for EvalStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, self.models.iter().map(|m| ("models", Some(m.as_str()))));
        r.extend(refs(Artifact::Data, [("from", self.source.from.as_deref()), ("jsonl", self.source.jsonl.as_deref())]));
        r.extend(refs(Artifact::Text, self.ppl.iter().map(|f| ("ppl", Some(f.as_str())))));
        r.extend(refs(Artifact::Text, self.choice.iter().map(|f| ("choice", Some(f.as_str())))));
        r.extend(refs(Artifact::Text, self.images.iter().map(|s| ("images", Some(s.file.as_str())))));
        if let Some(ood) = &self.ood {
            r.extend(ood.references());
        }
        r
    }

    fn deprecated_keys(&self) -> Vec<(String, String)> {
        self.source.deprecated.clone()
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Results)
    }

    fn preflight(&self) -> Result<()> {
        // Decoders are checked now; the encoders an `ood` table scores are loaded when it runs.
        for m in self.models.iter().filter(|m| !m.starts_with('@') && self.ood.is_none() && !crate::model::vision::is_vlm_folder(Path::new(m))) {
            crate::model::inspect::model_folder_config(Path::new(m)).context("models")?;
        }
        if let Some(verifier) = &self.source.verifier {
            for file in self.source.outside_files() {
                check_jsonl(file, verifier)?;
            }
        }
        // Text files outside the run are read and checked now; `@stage` ones when the stage runs.
        let outside = |list: &[String]| list.iter().filter(|f| !f.starts_with('@')).map(PathBuf::from).collect::<Vec<_>>();
        TextSets::open(&outside(&self.ppl), &outside(&self.choice), &self.text_key)?;
        let outside_images: Vec<ImageSetSpec> = self.images.iter().filter(|s| !s.file.starts_with('@')).cloned().collect();
        ImageSets::open(&outside_images, &outside_images.iter().map(|s| PathBuf::from(&s.file)).collect::<Vec<_>>()).context("images")?;
        if let Some(ood) = &self.ood {
            ood.preflight().context("ood")?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.models.is_empty() {
            return err("models", "list at least one model folder or `@stage`".into());
        }
        if let Some(ood) = &self.ood {
            if self.has_problems() || self.has_text() || !self.images.is_empty() {
                return err(
                    "ood",
                    "`ood` scores encoders, the other keys evaluate decoders: put the OOD detection in an eval stage of its own".into(),
                );
            }
            return ood.validate();
        }
        if !self.has_problems() && !self.has_text() && self.images.is_empty() {
            return err(
                "from",
                "nothing to evaluate: set one of `from` (a tasks stage), `task` or `jsonl` (problems to sample), `ppl` / `choice` (text sets), `images` (questions about images), or `ood` (OOD detection of encoders)".into(),
            );
        }
        if self.image_batch_size == 0 {
            return err("image_batch_size", "image_batch_size must be ≥ 1".into());
        }
        self.validate_text()?;
        if !self.has_problems() {
            return Ok(());
        }
        self.source.validate(&source::EVAL)?;
        if let Some(t) = &self.tools {
            t.check()?;
        }
        if let Err(e) = self.eval_config(0).check() {
            let key = match e {
                run::EvalError::BadTemperature(_) => "temperature",
                run::EvalError::BadTopP(_) => "top_p",
                run::EvalError::ZeroN => "n",
                _ => "k",
            };
            return err(key, e.to_string());
        }
        if self.batch_size == 0 {
            return err("batch_size", "batch_size must be ≥ 1".into());
        }
        Ok(())
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        use crate::stage::needs::{Needs, Trainable};
        let first = self.models.first()?.clone();
        let mut needs = Needs { model: first, others: self.models[1..].to_vec(), trainable: Trainable::Frozen, ..Default::default() };
        if let Some(ood) = &self.ood {
            // Each text is noised and reconstructed by the encoder, up to its context.
            needs.forward = Some((ood.batch_size, 0));
            needs.knobs.push(format!("lower `ood.batch_size` (now {})", ood.batch_size));
            return Some(needs);
        }
        if self.has_problems() {
            // Prompt lengths are known only once the data is read (as the rl stage sizes them).
            let (prompt, assumption) = if self.source.jsonl.is_some() {
                (1024, "prompts of the JSONL data assumed ≤ 1024 tokens")
            } else {
                (64, "prompts of the built-in task assumed ≤ 64 tokens")
            };
            needs.generate = Some((self.batch_size, prompt + self.max_new_tokens));
            needs.assumption = Some(assumption.to_string());
            needs.knobs.push(format!("lower `batch_size` (now {}): rows sampled at once", self.batch_size));
            needs.knobs.push(format!("shorter responses: `max_new_tokens` (now {})", self.max_new_tokens));
        }
        if !self.images.is_empty() && !self.has_problems() {
            // Image rows' lengths are known once the images are sized by the model's processor.
            needs.generate = Some((self.image_batch_size, 1024 + self.max_new_tokens));
            needs.assumption = Some("image rows assumed ≤ 1024 tokens, image tokens included".to_string());
            needs.knobs.push(format!("lower `image_batch_size` (now {}): image rows answered at once", self.image_batch_size));
        }
        if !self.ppl.is_empty() || !self.choice.is_empty() {
            needs.forward = Some((self.text_batch_size, self.max_len.unwrap_or(0)));
            needs.knobs.push(format!("lower `text_batch_size` (now {}) or `max_len`", self.text_batch_size));
        }
        Some(needs)
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        if self.ood.is_some() {
            return (Some(self.models.len() as u64), "models");
        }
        if !self.has_problems() {
            return (None, "batches");
        }
        let problems = if self.source.task.is_some() { Some(self.source.test_count().min(self.limit)) } else { None };
        (problems.map(|p| (p * self.n * self.models.len()) as u64), "samples")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        if let Some(ood) = &self.ood {
            return self.run_ood(ood, ctx);
        }
        // Everything is read and checked before the first model loads.
        let mut set = if self.has_problems() { Some(self.problem_set(ctx)?) } else { None };
        let sets = self.text_sets(&|r| ctx.resolve(r))?;
        let image_sets = self.image_sets(&|r| ctx.resolve(r))?;
        let dirs = self.models.iter().map(|m| ctx.resolve(m)).collect::<Result<Vec<_>>>()?;
        let text_work = set.is_some() || !sets.is_empty();
        if let Some(d) = dirs.iter().find(|d| text_work && crate::model::vision::is_vlm_folder(d)) {
            anyhow::bail!("{} is a vision-language model: it evaluates `images` sets only; put the problems and text sets in an eval stage of their own", d.display());
        }
        if let Some(set) = set.as_mut() {
            let skipped = fit_models_context(set, &dirs, self.source.chat, self.max_new_tokens, self.too_long)?;
            if skipped > 0 {
                ctx.events.warn(format!("left out {skipped} problem(s) too long for the context (too_long = \"skip\")"));
            }
        }
        let cfg = self.eval_config(ctx.rng("sampling").next_u64());
        let labels = model_labels(&self.models);
        let per_model = set.as_ref().map_or(0, |s| (s.len() * self.n) as u64);
        let total = per_model * self.models.len() as u64;
        if let Some(set) = &set {
            ctx.events.info(format!("evaluating {} model(s) on {}, n = {} samples each", self.models.len(), set.describe(), self.n));
        }
        let mut results: Vec<ModelResult> = Vec::new();
        let mut texts: Vec<TextResult> = Vec::new();
        let mut images: Vec<ImageResult> = Vec::new();
        for (i, ((reference, label), dir)) in self.models.iter().zip(&labels).zip(&dirs).enumerate() {
            if !image_sets.is_empty() {
                images.push(self.run_images(ctx, &image_sets, label, reference, dir)?);
            }
            if !text_work {
                continue;
            }
            let model = EvalModel::load(dir, &ctx.device)?;
            if let Some(set) = &set {
                let offset = i as u64 * per_model;
                let events = ctx.events.clone();
                let control = &mut *ctx.control;
                let mut on_progress = |p: run::Progress| -> Result<()> {
                    events.progress(offset + p.done, Some(total), "samples", Some(label));
                    if control.poll().stop {
                        return Err(crate::stage::Interrupted.into());
                    }
                    Ok(())
                };
                let mut report = run::evaluate(&model, set, &cfg, &mut on_progress)?;
                report.model = reference.clone();
                write_samples(&ctx.dir.join(format!("samples-{label}.jsonl")), set, &report)?;
                ctx.events.info(format!(
                    "{label}: pass@1 {:.3}, {:.1} samples/s",
                    report.aggregate.get("pass@1").copied().unwrap_or(f64::NAN),
                    report.aggregate.get("samples_per_s").copied().unwrap_or(0.0)
                ));
                results.push(ModelResult { label: label.clone(), report });
            }
            if !sets.is_empty() {
                let events = ctx.events.clone();
                let control = &mut *ctx.control;
                let mut batches = 0u64;
                let mut on_batch = || -> Result<()> {
                    batches += 1;
                    events.progress(batches, None, "batches", Some(label));
                    if control.poll().stop {
                        return Err(crate::stage::Interrupted.into());
                    }
                    Ok(())
                };
                let log_events = ctx.events.clone();
                let mut log = |line: String| log_events.info(line);
                texts.push(text::evaluate(&model, label, reference, &sets, &self.text_config(), &mut on_batch, &mut log)?);
            }
        }
        let overlaps: Vec<Overlap> = results
            .iter()
            .skip(1)
            .map(|r| run::overlap((&results[0].label, &results[0].report), (&r.label, &r.report)))
            .collect();
        let several = self.models.len() > 1;
        let mut summary = BTreeMap::new();
        let mut tables: Vec<String> = Vec::new();
        if results.len() == 1 {
            summary = headline(&results[0].report);
            tables.push(run::pass_at_k_table(&results[0].report));
        } else if !results.is_empty() {
            for r in &results {
                for (k, v) in headline(&r.report) {
                    summary.insert(format!("{}/{k}", r.label), v);
                }
            }
            let pairs: Vec<(String, &EvalReport)> = results.iter().map(|r| (r.label.clone(), &r.report)).collect();
            tables.push(run::comparison_table(&pairs));
        }
        for t in &texts {
            for (k, v) in text::headline(t) {
                summary.insert(if several { format!("{}/{k}", t.label) } else { k }, v);
            }
        }
        if !texts.is_empty() {
            tables.push(text::table(&texts));
        }
        for r in &images {
            for (k, v) in vision::headline(r) {
                summary.insert(if several { format!("{}/{k}", r.label) } else { k }, v);
            }
        }
        if !images.is_empty() {
            tables.push(text::headline_table(&images.iter().map(|r| (r.label.as_str(), vision::headline(r))).collect::<Vec<_>>()));
        }
        if let Some(paper) = &self.paper {
            tables.push(format!("paper: {paper}"));
        }
        let doc = StageResults { models: results, overlaps, text: texts, ood: Vec::new(), images };
        let path = ctx.dir.join(RESULTS_FILE);
        write_atomic(&path, serde_json::to_string_pretty(&doc)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(StageOutput { output: Some(ctx.dir.clone()), summary, table: Some(tables.join("\n\n")) })
    }
}

impl EvalStage {
    /// One model's answers to every image set, written to `images-<label>.jsonl` row by row.
    fn run_images(&self, ctx: &mut StageCtx, sets: &ImageSets, label: &str, reference: &str, dir: &Path) -> Result<ImageResult> {
        let model = VisionModel::load(dir, &ctx.device)?;
        let total: usize = sets.sets.iter().map(|s| s.3.len()).sum();
        let events = ctx.events.clone();
        let control = &mut *ctx.control;
        let mut done = 0u64;
        let mut on_batch = |n: usize| -> Result<()> {
            done += n as u64;
            events.progress(done, Some(total as u64), "image rows", Some(label));
            if control.poll().stop {
                return Err(crate::stage::Interrupted.into());
            }
            Ok(())
        };
        let log_events = ctx.events.clone();
        let mut log = |line: String| log_events.info(line);
        let mut outcomes = Vec::new();
        let r = vision::evaluate(&model, label, reference, sets, (self.image_batch_size, self.max_new_tokens), &mut outcomes, &mut on_batch, &mut log)?;
        let path = ctx.dir.join(format!("images-{label}.jsonl"));
        let text: String = outcomes.iter().map(|o| format!("{o}\n")).collect();
        write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(r)
    }

    /// The `ood` table: every model scored in turn, then one table side by side.
    fn run_ood(&self, ood: &OodEval, ctx: &mut StageCtx) -> Result<StageOutput> {
        let labels = model_labels(&self.models);
        let dirs = self.models.iter().map(|m| ctx.resolve(m)).collect::<Result<Vec<_>>>()?;
        let several = self.models.len() > 1;
        let mut results = Vec::new();
        let mut summary = BTreeMap::new();
        for (i, ((reference, label), dir)) in self.models.iter().zip(&labels).zip(&dirs).enumerate() {
            let prefix = if several { format!("{label}/") } else { String::new() };
            let r = ood.score_model(ctx, label, reference, dir, &prefix)?;
            summary.extend(ood_eval::headline(&r).into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
            results.push(r);
            ctx.events.progress(i as u64 + 1, Some(self.models.len() as u64), "models", Some(label));
            if ctx.control.poll().stop {
                return Err(crate::stage::Interrupted.into());
            }
        }
        let mut table = ood_eval::table(&results);
        if let Some(paper) = &self.paper {
            table.push_str(&format!("\n\npaper: {paper}"));
        }
        let doc = StageResults { models: Vec::new(), overlaps: Vec::new(), text: Vec::new(), ood: results, images: Vec::new() };
        let path = ctx.dir.join(RESULTS_FILE);
        write_atomic(&path, serde_json::to_string_pretty(&doc)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(StageOutput { output: Some(ctx.dir.clone()), summary, table: Some(table) })
    }
}

/// Every response with its problem id, verdict and what a verifier needs to grade it again
/// (so the file is an input for `retort reward test`), one JSON object a line.
fn write_samples(path: &Path, set: &ProblemSet, report: &EvalReport) -> Result<()> {
    let mut text = String::new();
    for (i, recs) in report.samples.iter().enumerate() {
        let grading = set.grading_fields(i);
        for r in recs {
            let mut line = serde_json::json!({
                "id": set.id(i), "response": r.response, "correct": r.correct, "reward": r.reward,
                "canonical": r.canonical, "reason": r.reason, "tokens": r.tokens, "entropy": r.entropy, "rbf": r.rbf,
            });
            if let Some(obj) = line.as_object_mut() {
                obj.extend(grading.clone());
            }
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> EvalStage {
        crate::stages::parse_sourced(toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn labels_are_short_and_distinct() {
        let labels = model_labels(&["@sft".into(), "runs/x/grpo/model".into(), "/m/base".into(), "@sft".into()]);
        assert_eq!(labels, vec!["sft", "grpo", "base", "sft-2"]);
    }

    #[test]
    fn validation_names_the_key_and_explains() {
        let s = parse("models = [\"@sft\"]\ntask = \"countdown\"\nn = 8\nk = [1, 16]");
        let (key, msg) = s.validate().unwrap_err();
        assert_eq!(key, "k");
        assert!(msg.contains("k = 16 is larger than n = 8"), "{msg}");
        let s = parse("models = [\"@sft\"]\njsonl = \"x.jsonl\"\nverifier = \"regex\"");
        let (key, msg) = s.validate().unwrap_err();
        assert_eq!(key, "verifier");
        assert!(msg.contains("known verifiers: math, code"), "{msg}");
        let s = parse("models = [\"@sft\"]\ntask = \"countdown\"\nfrom = \"@data\"");
        assert_eq!(s.validate().unwrap_err().0, "from");
        let s = parse("models = [\"@sft\"]\ntask = \"nosuchtask\"");
        assert!(s.validate().unwrap_err().1.contains("unknown task"));
        let s = parse("models = [\"@a\", \"@b\"]\nfrom = \"@data\"");
        assert!(s.validate().is_ok());
        assert_eq!(s.references().iter().map(|r| r.value.as_str()).collect::<Vec<_>>(), vec!["@a", "@b", "@data"]);
        assert_eq!(s.n, 64);
        // `problems` is the old name of `test_problems`: same meaning, remembered for a warning.
        let s = parse("models = [\"@sft\"]\ntask = \"countdown\"\nproblems = 5");
        assert_eq!(s.source.test_problems, Some(5));
        assert_eq!(s.deprecated_keys(), vec![("problems".to_string(), "test_problems".to_string())]);
        assert_eq!(parse("models = [\"@sft\"]\ntask = \"countdown\"").source.test_problems, Some(100));
    }

    #[test]
    fn an_ood_table_evaluates_encoders_alone() {
        let s = parse("models = [\"@pretrain\", \"@diffuse\"]\n[ood]\nid = \"@data/a.jsonl\"\nood = [\"@data/b.jsonl\"]\nt = [300, 600]");
        assert!(s.validate().is_ok());
        assert_eq!(s.total_units(), (Some(2), "models"));
        let keys: Vec<&str> = s.references().iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["models", "models", "ood.id", "ood.ood"]);
        let mixed = parse("models = [\"@m\"]\nppl = [\"x.jsonl\"]\n[ood]\nid = \"a\"\nood = [\"b\"]");
        let (key, msg) = mixed.validate().unwrap_err();
        assert_eq!(key, "ood");
        assert!(msg.contains("eval stage of its own"), "{msg}");
        let bad = parse("models = [\"@m\"]\n[ood]\nid = \"a\"\nood = [\"b\"]\nt = [5000]");
        assert_eq!(bad.validate().unwrap_err().0, "ood.t");
    }
}
