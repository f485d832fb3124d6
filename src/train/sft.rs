//! Stage `kind = "sft"`: supervised fine-tuning, full or LoRA, with exact resume.
//!
//! One optimizer step = `grad_accum` micro-batches of `batch_size` examples; the loss is the
//! mean negative log-likelihood over all target tokens of the step (prompt and padding
//! masked). AdamW with decoupled weight decay, warmup then cosine/linear/constant decay,
//! clipping by global norm (a non-finite norm skips the step with a warning). Checkpoints
//! hold the trainable weights, the AdamW moments and the step; the data stream is a pure
//! function of (seed, example index), so a resumed run continues bit-identically on the CPU.
//! Controls, checkpoints, resume, the non-finite stop and the final model folder are the
//! trainer scaffold's (`train/scaffold.rs`).
//!
//! ```toml
//! [[stage]]
//! kind = "sft"
//! model = "@init"          # a model folder, a pulled snapshot, or an earlier stage's output
//! steps = 600
//! [stage.data]
//! task = "countdown"       # or: from = "@data" (a tasks stage), or: jsonl = "train.jsonl"
//! ```
//! or a weighted mixture of JSONL sources (text, prompt/response, chat and synthesizer rows
//! together):
//! ```toml
//! [stage.data]
//! mix = [ { jsonl = "@rc/data.jsonl", weight = 1.0 }, { jsonl = "@corpora/general_instruct.jsonl", weight = 1.0 } ]
//! ```
//! A mixture interleaves its sources by a fixed schedule ([`data::MixSchedule`]: every source
//! within one example of its share at every point of the stream), and each source walks its
//! own epoch permutations; example `k` stays a pure function of (seed, k). With `pack = true`
//! each source is packed on its own, so the weights are shares of packed rows.
//! The keys of `[stage.data]` are the problem source the rl and eval stages share
//! ([`crate::tasks::source`]); `train`, `test` and `eval_jsonl` are the old names of
//! `train_problems`, `test_problems` and `test_jsonl`.
//!
//! Task accuracy (pass@1 over `eval_samples` draws, and greedy) and the sample events go
//! through the shared sampling-and-grading engine, [`crate::generate::grade`].

use crate::bus::Event;
use crate::generate::grade::{sample_and_grade, GradeOptions, Seeds};
use crate::generate::{generate, SamplingParams};
use crate::model::lora::{self, Adapters, LoraConfig};
use crate::model::{AttnMask, Mode, Model};
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use crate::tasks::source::{self, ProblemSource};
use crate::tasks::{Instance, ProblemSet, Task};
use crate::text::Tokenizer;
use crate::train::data::{self, Example, LengthLimit, MixSchedule, MixSource, Teacher, TooLongRow};
use crate::train::optim::{AdamW, AdamWConfig, Param};
use crate::train::scaffold::{Scaffold, TrainState};
use crate::train::schedule::{Decay, Schedule};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// Model folder, or `@stage` for an earlier stage's output.
    pub model: String,
    pub data: SftData,
    #[serde(default = "d_steps")]
    pub steps: u64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_one")]
    pub grad_accum: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "d_decay")]
    pub schedule: Decay,
    /// The decay ends at `lr * min_lr_ratio`.
    #[serde(default)]
    pub min_lr_ratio: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_one_f")]
    pub max_grad_norm: f64,
    /// `"f32"` (default) or `"bf16"`: the operands of the training forward's and backward's
    /// matmuls (`model::fused::precision`); weights, gradients, AdamW and the eval loss stay f32.
    #[serde(default)]
    pub update_dtype: crate::model::fused::precision::Precision,
    /// Longest sequence (prompt + response) in tokens.
    #[serde(default = "d_max_len")]
    pub max_len: usize,
    /// What to do with longer JSONL rows: "split" (the default: text rows become consecutive
    /// max_len pieces, other rows are truncated), "truncate" (counted in the log), "skip" (left
    /// out, counted) or "error" (the row is named and the stage stops before training).
    #[serde(default = "d_too_long")]
    pub too_long: TooLongRow,
    /// Concatenate short examples into rows of `max_len` (JSONL data only).
    #[serde(default)]
    pub pack: bool,
    /// Steps between held-out loss evaluations (0: only at the end).
    #[serde(default = "d_every")]
    pub eval_every: u64,
    /// Steps between greedy sample continuations sent to the dashboard (0: never).
    #[serde(default = "d_every")]
    pub sample_every: u64,
    #[serde(default = "d_every")]
    pub checkpoint_every: u64,
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Task data: samples per test problem for the final pass@1 (0: skip).
    #[serde(default = "d_eval_samples")]
    pub eval_samples: usize,
    #[serde(default = "d_one_f")]
    pub eval_temperature: f64,
    #[serde(default = "d_new_tokens")]
    pub max_new_tokens: usize,
    /// Vision-language models: learning rates and freezing of tower, projector and LLM
    /// (`train/sft_vision.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<super::sft_vision::VisionParts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftData {
    /// Where the data comes from (the keys the rl and eval stages use too, see
    /// [`crate::tasks::source`]): `task` (a built-in task generated from the run's seed, with
    /// `options`, `train_problems`, `test_problems`), `from` (a tasks stage: its train.jsonl /
    /// test.jsonl) or `jsonl` (prompt/response, messages, text or synthesizer rows; `test_jsonl` holds the
    /// rows of the eval loss, by default the last 5% of `jsonl`). `chat` renders prompts, and
    /// prompt/response pairs, with the tokenizer's chat template: for training, the eval loss,
    /// the sample events and the task accuracy alike.
    #[serde(flatten, skip_deserializing)]
    pub source: ProblemSource,
    /// Task data: the teacher that writes the training responses.
    #[serde(default)]
    pub teacher: Teacher,
    /// A weighted mixture of JSONL sources, in place of `from`, `task` or `jsonl`
    /// (`test_jsonl` and `chat` still apply; without `test_jsonl` the eval loss holds the last
    /// 5% of each source of 20 rows or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Vec<MixSource>>,
}

impl crate::tasks::source::Sourced for SftStage {
    const SOURCE: &'static source::Spec = &source::SFT;
    fn source_mut(&mut self) -> &mut ProblemSource {
        &mut self.data.source
    }
}

fn d_steps() -> u64 {
    300
}
fn d_batch() -> usize {
    16
}
fn d_one() -> usize {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_lr() -> f64 {
    1e-3
}
fn d_decay() -> Decay {
    Decay::Cosine
}
fn d_wd() -> f64 {
    0.01
}
fn d_max_len() -> usize {
    256
}
fn d_too_long() -> TooLongRow {
    TooLongRow::Split
}
fn d_every() -> u64 {
    100
}
fn d_keep() -> usize {
    2
}
fn d_eval_samples() -> usize {
    8
}
fn d_new_tokens() -> usize {
    48
}

impl StageConfig for SftStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, [("model", Some(self.model.as_str()))]);
        r.extend(refs(Artifact::Data, [("data.from", self.data.source.from.as_deref())]));
        let d = &self.data.source;
        r.extend(refs(Artifact::Text, [("data.jsonl", d.jsonl.as_deref()), ("data.test_jsonl", d.test_jsonl.as_deref())]));
        let mix = self.data.mix.iter().flatten();
        r.extend(refs(Artifact::Text, mix.map(|m| ("data.mix", Some(m.jsonl.as_str())))));
        r
    }

    fn deprecated_keys(&self) -> Vec<(String, String)> {
        self.data.source.deprecated.clone()
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Model)
    }

    fn preflight(&self) -> Result<()> {
        if !self.model.starts_with('@') && !crate::model::vision::is_vlm_folder(Path::new(&self.model)) {
            crate::model::inspect::model_folder_config(Path::new(&self.model)).context("model")?;
        }
        for file in self.data.source.outside_files() {
            data::read_rows(file)?;
        }
        for (i, m) in self.data.mix.iter().flatten().enumerate() {
            if !m.jsonl.starts_with('@') {
                data::read_rows(Path::new(&m.jsonl)).with_context(|| format!("data.mix[{i}].jsonl"))?;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let d = &self.data;
        match &d.mix {
            None => d.source.validate(&source::SFT)?,
            Some(mix) => {
                let s = &d.source;
                if s.from.is_some() || s.task.is_some() || s.jsonl.is_some() {
                    return Err((
                        "data.mix".into(),
                        "`data.mix` takes the place of `data.from`, `data.task` and `data.jsonl`; keep only the mixture \
                         (a single source is a mixture of one)"
                            .into(),
                    ));
                }
                data::check_mix(mix)?;
            }
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(("batch_size".into(), "batch_size and grad_accum must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&d.teacher.wrong) {
            return Err(("data.teacher.wrong".into(), "the wrong-target share must be in [0, 1)".into()));
        }
        if self.steps == 0 {
            return Err(("steps".into(), "steps must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(("lr".into(), format!("the learning rate must be finite and > 0 (got {})", self.lr)));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(("min_lr_ratio".into(), "min_lr_ratio must be in [0, 1]".into()));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(("weight_decay".into(), "weight_decay must be finite and ≥ 0".into()));
        }
        if !(self.max_grad_norm > 0.0) {
            return Err(("max_grad_norm".into(), "max_grad_norm must be > 0 (use a large value such as 1e9 to turn clipping off)".into()));
        }
        if self.max_len < 2 {
            return Err(("max_len".into(), "max_len must be at least 2 tokens".into()));
        }
        if !(self.eval_temperature > 0.0 && self.eval_temperature.is_finite()) {
            return Err(("eval_temperature".into(), "eval_temperature must be finite and > 0".into()));
        }
        if let Some(l) = &self.lora {
            l.check().map_err(|(k, m)| (format!("lora.{k}"), m))?;
        }
        if let Some(v) = &self.vision {
            v.check()?;
        }
        Ok(())
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        use crate::stage::needs::{Needs, Trainable};
        let mut knobs = vec![
            format!("lower `batch_size` (now {}) and raise `grad_accum` (now {}) to keep the step", self.batch_size, self.grad_accum),
            format!("shorter rows: `max_len` (now {})", self.max_len),
        ];
        if self.vision.is_some() {
            knobs.push("fewer patches an image (a vision-language model): a lower `max_pixels` in the model's preprocessor_config.json".into());
        }
        if self.vision.as_ref().is_some_and(|v| !v.checkpoint_tower && !v.freeze.iter().any(|f| f == "tower")) {
            knobs.push("`vision.checkpoint_tower = true`: the tower's blocks recomputed in backward, or `vision.freeze = [\"tower\"]`".into());
        }
        if self.lora.is_none() {
            knobs.push("LoRA: `lora.rank = 16` trains adapters over a frozen base".into());
        } else {
            knobs.push("a lower `lora.rank`".into());
        }
        Some(Needs {
            model: self.model.clone(),
            trainable: match &self.lora {
                Some(l) => Trainable::Lora { rank: l.rank },
                None => Trainable::Full,
            },
            micro_batch: self.batch_size,
            seq: self.max_len,
            accumulates: self.grad_accum > 1,
            reference: false,
            critic: false,
            z_head_layers: None,
            generate: None,
            assumption: None,
            knobs,
            vision_frozen: self.vision.as_ref().map(|v| v.freeze.clone()).unwrap_or_default(),
            vision_checkpoint: self.vision.as_ref().is_some_and(|v| v.checkpoint_tower),
            ..Default::default()
        })
    }

    fn model_origin(&self) -> Option<crate::stage::needs::ModelOrigin> {
        Some(crate::stage::needs::ModelOrigin::SameAs(self.model.clone()))
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(self.steps), "step")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        train(self, ctx)
    }
}

/// Where training examples come from.
enum TrainSource {
    Fixed(Vec<Example>),
    Teacher { task: Box<dyn Task>, instances: Vec<Instance>, teacher: Teacher, chat: bool },
    /// A weighted mixture: each source's examples, interleaved by `schedule`.
    Mix { sources: Vec<Vec<Example>>, schedule: MixSchedule },
}

impl TrainSource {
    fn len(&self) -> usize {
        match self {
            TrainSource::Fixed(v) => v.len(),
            TrainSource::Teacher { instances, .. } => instances.len(),
            TrainSource::Mix { sources, .. } => sources.iter().map(Vec::len).sum(),
        }
    }

    /// Example `k` of the endless stream (a pure function of seed and k; `&mut` only for the
    /// mixture schedule's cursor, which makes consecutive positions cheap).
    fn example(&mut self, seed: u64, k: u64, tok: &Tokenizer, eos: u32) -> Result<Example> {
        if let TrainSource::Mix { sources, schedule } = self {
            let (s, j) = schedule.at(k);
            // Each source has its own permutations, so adding a source leaves the others' orders alone.
            let source_seed = crate::rng::Rng::derive(seed, &format!("mix/{s}")).next_u64();
            let (_, i) = data::stream_position(source_seed, j, sources[s].len());
            return Ok(sources[s][i].clone());
        }
        let (epoch, i) = data::stream_position(seed, k, self.len());
        match self {
            TrainSource::Fixed(v) => Ok(v[i].clone()),
            TrainSource::Mix { .. } => unreachable!("handled above"),
            TrainSource::Teacher { task, instances, teacher, chat } => {
                let inst = &instances[i];
                let mut rng = crate::rng::Rng::derive(seed, &format!("teacher/{epoch}/{i}"));
                let response = data::teacher_response(task.as_ref(), inst, teacher, &mut rng)?;
                data::encode_pair(tok, &inst.prompt, &response, *chat, eos)
            }
        }
    }
}

struct Prepared {
    tok: Tokenizer,
    eos: u32,
    source: TrainSource,
    eval: Vec<Example>,
    /// Task data only: the held-out problems, with their verifier (for samples and pass@1).
    test: Option<ProblemSet>,
}

fn prepare(cfg: &SftStage, ctx: &StageCtx, model_dir: &Path) -> Result<Prepared> {
    let tok = Tokenizer::load(model_dir)?;
    let context = crate::model::ModelConfig::from_file(&crate::model::config::config_path(model_dir))?.max_position_embeddings;
    if cfg.max_len > context {
        bail!(
            "max_len = {} is longer than the model's context of {context} tokens (max_position_embeddings in {}); lower max_len",
            cfg.max_len,
            crate::model::config::config_path(model_dir).display()
        );
    }
    let eos = *tok.eos_ids().first().with_context(|| format!("{}: the tokenizer defines no end-of-sequence token", model_dir.display()))?;
    let d = &cfg.data.source;
    let limit = LengthLimit { max_len: cfg.max_len, policy: cfg.too_long };
    let (source, eval, test) = if let Some(mix) = &cfg.data.mix {
        let (mut sources, mut eval) = (Vec::new(), Vec::new());
        for (i, m) in mix.iter().enumerate() {
            let path = ctx.resolve(&m.jsonl)?;
            let (mut rows, cut) = data::read_jsonl(&path, &tok, d.chat, eos, limit).with_context(|| format!("data.mix[{i}]"))?;
            if cut > 0 {
                let what = match cfg.too_long {
                TooLongRow::Skip => "left out",
                TooLongRow::Split => "split into max_len pieces (text rows) or truncated (the other rows)",
                _ => "truncated",
            };
                ctx.events.warn(format!("{cut} rows of {} were longer than max_len = {} and were {what}", path.display(), cfg.max_len));
            }
            // As for one `jsonl`: without `test_jsonl`, the last 5% of each large enough source.
            if d.test_jsonl.is_none() && rows.len() >= 20 {
                eval.extend(rows.split_off(rows.len() - rows.len() / 20));
            }
            sources.push(rows);
        }
        if let Some(e) = &d.test_jsonl {
            eval = data::read_jsonl(&ctx.resolve(e)?, &tok, d.chat, eos, limit)?.0;
        }
        let schedule = MixSchedule::new(&mix.iter().map(|m| m.weight).collect::<Vec<_>>());
        (TrainSource::Mix { sources, schedule }, eval, None)
    } else if let Some(path) = &d.jsonl {
        let path = ctx.resolve(path)?;
        let (mut all, cut) = data::read_jsonl(&path, &tok, d.chat, eos, limit)?;
        if cut > 0 {
            let what = match cfg.too_long {
                TooLongRow::Skip => "left out",
                TooLongRow::Split => "split into max_len pieces (text rows) or truncated (the other rows)",
                _ => "truncated",
            };
            ctx.events.warn(format!("{cut} rows of {} were longer than max_len = {} and were {what}", path.display(), cfg.max_len));
        }
        let eval = match &d.test_jsonl {
            Some(e) => data::read_jsonl(&ctx.resolve(e)?, &tok, d.chat, eos, limit)?.0,
            None if all.len() >= 20 => all.split_off(all.len() - all.len() / 20),
            None => Vec::new(),
        };
        (TrainSource::Fixed(all), eval, None)
    } else {
        let (train_set, test_set) = d.train_and_test(&|r| ctx.resolve(r), ctx.rng("problems"))?;
        let (task, train) = train_set.into_task().context("task data holds the instances of one built-in task")?;
        let started = std::time::Instant::now();
        let prepared = task.prepare_teacher(&train) + task.prepare_teacher(test_set.instances());
        if prepared > 0 {
            ctx.events.info(format!("teacher: {prepared} tool calls run up front in {:.1} s", started.elapsed().as_secs_f64()));
        }
        // Held-out loss is measured against the same teacher, drawn once with a fixed seed.
        let mut rng = ctx.rng("eval-targets");
        let eval = test_set
            .instances()
            .iter()
            .map(|inst| {
                let r = data::teacher_response(task.as_ref(), inst, &cfg.data.teacher, &mut rng)?;
                data::encode_pair(&tok, &inst.prompt, &r, d.chat, eos)
            })
            .collect::<Result<Vec<_>>>()?;
        let source = TrainSource::Teacher { task, instances: train, teacher: cfg.data.teacher.clone(), chat: d.chat };
        (source, eval, Some(test_set))
    };
    if source.len() == 0 {
        bail!("the training set is empty");
    }
    Ok(Prepared { tok, eos, source, eval, test })
}

/// Padded tensors for a list of examples (right padding).
struct Batch {
    ids: Tensor,
    mask: AttnMask,
    /// (B, L-1) next-token targets and their 0/1 weights.
    targets: Tensor,
    weights: Tensor,
    n_targets: usize,
    n_tokens: usize,
}

fn make_batch(examples: &[Example], pad: u32, device: &Device) -> Result<Batch> {
    let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0).max(2);
    let b = examples.len();
    let mut ids = vec![pad; b * len];
    let mut valid = vec![vec![false; len]; b];
    let mut targets = vec![pad; b * (len - 1)];
    let mut weights = vec![0f32; b * (len - 1)];
    let mut n_targets = 0;
    let mut n_tokens = 0;
    for (r, e) in examples.iter().enumerate() {
        n_tokens += e.ids.len();
        for (j, &t) in e.ids.iter().enumerate() {
            ids[r * len + j] = t;
            valid[r][j] = true;
            if j > 0 {
                targets[r * (len - 1) + j - 1] = t;
                if e.targets[j] {
                    weights[r * (len - 1) + j - 1] = 1.0;
                    n_targets += 1;
                }
            }
        }
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, len), device)?,
        mask: AttnMask::new(&valid, len, device)?,
        targets: Tensor::from_vec(targets, (b, len - 1), device)?,
        weights: Tensor::from_vec(weights, (b, len - 1), device)?,
        n_targets,
        n_tokens,
    })
}

/// Summed negative log-likelihood of the batch's target tokens (a scalar tensor).
fn batch_nll(model: &Model, batch: &Batch, mode: Mode) -> Result<Tensor> {
    let hidden = model.decoder.forward_hidden(&batch.ids, &batch.mask, None, mode)?;
    // Logits for the positions that predict a target only (all but the last).
    let len = hidden.dim(1)?;
    let (logp, _) = model.decoder.token_logprobs(&hidden.narrow(1, 0, len - 1)?, &batch.targets, 1.0)?;
    Ok((logp * &batch.weights)?.sum_all()?.neg()?)
}

/// The per-token cross-entropy of `examples` (no gradients).
fn eval_loss(model: &Model, examples: &[Example], pad: u32, batch_size: usize) -> Result<f64> {
    let (mut nll, mut n) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let b = make_batch(chunk, pad, model.decoder.device())?;
        nll += batch_nll(model, &b, Mode::Infer)?.to_scalar::<f32>()? as f64;
        n += b.n_targets;
    }
    Ok(if n == 0 { f64::NAN } else { nll / n as f64 })
}

/// Sampled pass@1 (mean correctness of `samples` draws per problem) and greedy accuracy, both
/// from one stream (`Rng::derive(seed, "sft-eval")`) through the shared engine.
#[allow(clippy::too_many_arguments)]
pub fn task_accuracy(
    model: &Model,
    tok: &Tokenizer,
    problems: &ProblemSet,
    chat: bool,
    samples: usize,
    temperature: f64,
    max_new_tokens: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    let mut rng = crate::rng::Rng::derive(seed, "sft-eval");
    let mut score = |greedy: bool, n: usize| -> Result<f64> {
        let opts = GradeOptions { n, temperature, top_p: 1.0, greedy, max_new_tokens, chat, batch_size: 64, tools: None };
        let graded = sample_and_grade(&model.decoder, tok, problems, problems.len(), &opts, Seeds::Stream(&mut rng), &mut |_| Ok(()))?;
        let total: usize = graded.iter().map(Vec::len).sum();
        let correct = graded.iter().flatten().filter(|g| g.verdict.correct).count();
        Ok(correct as f64 / total.max(1) as f64)
    };
    let sampled = if samples > 0 { score(false, samples)? } else { f64::NAN };
    let greedy = score(true, 1)?;
    Ok((sampled, greedy))
}

/// What a checkpoint keeps besides the optimizer (`state.json`).
#[derive(Serialize, Deserialize)]
struct SftState {
    step: u64,
    examples_seen: u64,
    last_loss: f64,
}

impl TrainState for SftState {
    fn step(&self) -> u64 {
        self.step
    }
}

fn train(cfg: &SftStage, ctx: &mut StageCtx) -> Result<StageOutput> {
    let model_dir = ctx.resolve(&cfg.model)?;
    if crate::model::vision::is_vlm_folder(&model_dir) {
        let settings = super::sft_vision::Settings {
            parts: cfg.vision.clone().unwrap_or_default(),
            lora: cfg.lora.clone(),
            jsonl: cfg.data.source.jsonl.clone(),
            test_jsonl: cfg.data.source.test_jsonl.clone(),
            steps: cfg.steps,
            batch_size: cfg.batch_size,
            grad_accum: cfg.grad_accum,
            lr: cfg.lr,
            warmup_steps: cfg.warmup_steps,
            schedule: cfg.schedule,
            min_lr_ratio: cfg.min_lr_ratio,
            weight_decay: cfg.weight_decay,
            max_grad_norm: cfg.max_grad_norm,
            max_len: cfg.max_len,
            eval_every: cfg.eval_every,
            checkpoint_every: cfg.checkpoint_every,
            keep_checkpoints: cfg.keep_checkpoints,
        };
        return super::sft_vision::train(&settings, ctx, &model_dir);
    }
    let device = ctx.device.clone();
    let prep = prepare(cfg, ctx, &model_dir)?;
    let pad = prep.tok.pad_id().unwrap_or(prep.eos);
    let (model, adapters): (Model, Option<Adapters>) = match &cfg.lora {
        Some(l) => {
            let dtype = crate::device::resolve_dtype(ctx.dtype, &device);
            let mut m = Model::load(&model_dir, &device, dtype, false)?;
            let a = lora::attach(&mut m, l, ctx.rng("lora").next_u64())?;
            (m, Some(a))
        }
        None => (Model::load(&model_dir, &device, DType::F32, true)?, None),
    };
    let params: Vec<Param> = match &adapters {
        Some(a) => a.vars.iter().map(|(n, v)| Param { name: n.clone(), var: v.clone(), lr_scale: 1.0, decay: true }).collect(),
        None => crate::train::optim::params_with_decay_rule(model.vars()),
    };
    let trainable: usize = params.iter().map(|p| p.var.elem_count()).sum();
    ctx.events.info(format!(
        "{} training: {} trainable parameters of {}; {} training examples/problems, {} held out",
        if adapters.is_some() { "LoRA" } else { "full" },
        trainable,
        model.config.num_parameters(),
        prep.source.len(),
        prep.eval.len()
    ));
    let mut opt = AdamW::new(params, AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() });
    let schedule = Schedule { peak_lr: cfg.lr, warmup_steps: cfg.warmup_steps, total_steps: cfg.steps, decay: cfg.schedule, min_ratio: cfg.min_lr_ratio };
    let run = Scaffold::new(&ctx.dir, cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints, "Lower lr or check the data");
    let mut state = run.resume(ctx, &mut [("params", &mut opt)])?.unwrap_or(SftState { step: 0, examples_seen: 0, last_loss: f64::NAN });

    // Fixed JSONL data can be packed or must fit; task examples are short by construction.
    let mut fixed_cut = 0;
    // Rows were fitted to max_len while reading; this only catches a checkpointed config
    // edited by hand.
    let mut fit = |mut v: Vec<Example>| {
        fixed_cut += data::truncate(&mut v, cfg.max_len);
        if cfg.pack { data::pack(&v, cfg.max_len) } else { v }
    };
    let mut source = match prep.source {
        TrainSource::Fixed(v) => TrainSource::Fixed(fit(v)),
        // Each source is packed on its own, so a packed row never mixes sources and the
        // schedule's shares stay shares of rows.
        TrainSource::Mix { sources, schedule } => TrainSource::Mix { sources: sources.into_iter().map(&mut fit).collect(), schedule },
        other => other,
    };
    if let (TrainSource::Mix { sources, .. }, Some(mix)) = (&source, &cfg.data.mix) {
        let total: f64 = mix.iter().map(|m| m.weight).sum();
        let parts: Vec<String> = mix
            .iter()
            .zip(sources)
            .enumerate()
            .map(|(i, (m, rows))| format!("data.mix[{i}] {} ({} rows, weight {} = {:.1}%)", m.jsonl, rows.len(), m.weight, 100.0 * m.weight / total))
            .collect();
        ctx.events.info(format!("mixture of {} sources: {}", mix.len(), parts.join("; ")));
    }
    if fixed_cut > 0 {
        ctx.events.warn(format!("{fixed_cut} examples were longer than max_len = {} and were truncated", cfg.max_len));
    }
    if let Some(warning) = crate::model::fused::precision::bf16_update_warning(cfg.update_dtype, device.is_cpu()) {
        ctx.events.warn(warning);
    }
    let mut eval_set = prep.eval.clone();
    data::truncate(&mut eval_set, cfg.max_len);
    eval_set.truncate(256);

    let seed = ctx.rng("data").next_u64();
    let mut long_cut = 0usize;
    while state.step < cfg.steps {
        run.poll(ctx, &state, &[("params", &opt)])?;
        let started = Instant::now();
        let mut micro: Vec<Vec<Example>> = Vec::with_capacity(cfg.grad_accum);
        for _ in 0..cfg.grad_accum {
            let mut batch = Vec::with_capacity(cfg.batch_size);
            for _ in 0..cfg.batch_size {
                let mut e = source.example(seed, state.examples_seen, &prep.tok, prep.eos)?;
                state.examples_seen += 1;
                if e.ids.len() > cfg.max_len {
                    if cfg.too_long == TooLongRow::Error {
                        bail!("an example is longer than max_len = {} tokens", cfg.max_len);
                    }
                    long_cut += data::truncate(std::slice::from_mut(&mut e), cfg.max_len);
                }
                batch.push(e);
            }
            micro.push(batch);
        }
        let batches = micro.iter().map(|m| make_batch(m, pad, &device)).collect::<Result<Vec<_>>>()?;
        let n_targets: usize = batches.iter().map(|b| b.n_targets).sum();
        let n_tokens: usize = batches.iter().map(|b| b.n_tokens).sum();
        let mut step_nll = 0.0;
        let precision = crate::model::fused::precision::scoped(cfg.update_dtype);
        for (i, b) in batches.iter().enumerate() {
            // LoRA dropout masks are a function of (seed, step, micro-batch): resumable.
            let mask_seed = crate::rng::Rng::derive(seed, &format!("lora-dropout/{}/{i}", state.step)).next_u64();
            model.decoder.set_lora_dropout_seed(Some(mask_seed));
            let nll = batch_nll(&model, b, Mode::Train);
            model.decoder.set_lora_dropout_seed(None);
            let nll = nll?;
            let loss = (nll / n_targets.max(1) as f64)?;
            step_nll += loss.to_scalar::<f32>()? as f64;
            opt.accumulate(&loss.backward()?)?;
        }
        drop(precision);
        if !step_nll.is_finite() {
            return Err(run.non_finite("loss", step_nll, state.step + 1));
        }
        let lr = schedule.lr(state.step);
        let report = run.apply_update(ctx, &mut opt, lr, cfg.max_grad_norm, state.step + 1)?;
        state.step += 1;
        state.last_loss = step_nll;
        let dt = started.elapsed().as_secs_f64();
        let mut metrics = vec![
            ("loss", step_nll),
            ("lr", lr),
            ("grad_norm", report.grad_norm),
            ("tokens_per_s", n_tokens as f64 / dt.max(1e-9)),
            ("step_time_s", dt),
        ];
        let last_step = state.step == cfg.steps;
        if !eval_set.is_empty() && ((cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || last_step) {
            metrics.push(("eval_loss", eval_loss(&model, &eval_set, pad, cfg.batch_size * 2)?));
        }
        ctx.events.metrics(state.step, metrics);
        run.progress(ctx, state.step, None);
        if cfg.sample_every > 0 && (state.step % cfg.sample_every == 0 || last_step) {
            if let Some(test) = &prep.test {
                send_samples(&model, &prep.tok, test, cfg.data.source.chat, state.step, cfg.max_new_tokens, ctx)?;
            } else {
                send_heldout_samples(&model, &prep.tok, &eval_set[..eval_set.len().min(3)], state.step, cfg.max_new_tokens, ctx)?;
            }
        }
        run.after_step(ctx, &state, &[("params", &opt)])?;
    }
    if long_cut > 0 {
        ctx.events.warn(format!("{long_cut} examples were longer than max_len = {} and were truncated", cfg.max_len));
    }
    run.save(ctx, &state, &[("params", &opt)])?;

    // The final model: a full Hugging Face folder (merged when LoRA), plus the adapters alone.
    if let Some(a) = &adapters {
        lora::save_adapters(a, &ctx.dir.join("adapter"), &model_dir.display().to_string())?;
    }
    let out = run.write_model(&model_dir, &model.config, |dir| {
        match &adapters {
            Some(_) => lora::merged(&model)?.save(dir)?,
            None => model.save(dir)?,
        }
        Ok(())
    })?;

    let mut summary: BTreeMap<String, f64> = BTreeMap::new();
    summary.insert("loss".into(), state.last_loss);
    if let TrainSource::Mix { schedule, .. } = &mut source {
        // The realized shares of the whole run (resumed or not: the schedule is a function of
        // the example counter alone).
        let counts = schedule.counts(state.examples_seen);
        let seen = state.examples_seen.max(1) as f64;
        let parts: Vec<String> = counts.iter().enumerate().map(|(i, &c)| format!("data.mix[{i}] {c} ({:.1}%)", 100.0 * c as f64 / seen)).collect();
        ctx.events.info(format!("mixture over {} examples: {}", state.examples_seen, parts.join("; ")));
        for (i, &c) in counts.iter().enumerate() {
            summary.insert(format!("mix[{i}].share"), c as f64 / seen);
        }
    }
    if !eval_set.is_empty() {
        summary.insert("eval_loss".into(), eval_loss(&model, &eval_set, pad, cfg.batch_size * 2)?);
    }
    if let Some(test) = &prep.test {
        ctx.events.progress(cfg.steps, Some(cfg.steps), "step", Some("pass@1 eval"));
        let chat = cfg.data.source.chat;
        let (pass1, greedy) = task_accuracy(&model, &prep.tok, test, chat, cfg.eval_samples, cfg.eval_temperature, cfg.max_new_tokens, ctx.seed)?;
        if cfg.eval_samples > 0 {
            summary.insert("pass@1".into(), pass1);
        }
        summary.insert("greedy_accuracy".into(), greedy);
    }
    Ok(StageOutput { output: Some(out), summary, table: None })
}

/// Greedy continuations of held-out JSONL examples, beside the reference response, so a
/// watcher sees the model learn on data without a verifier. The prompt is the untrained
/// prefix (for `text` rows, the first half).
fn send_heldout_samples(model: &Model, tok: &Tokenizer, examples: &[Example], step: u64, max_new: usize, ctx: &StageCtx) -> Result<()> {
    let split = |e: &Example| match e.targets.iter().position(|&t| t) {
        Some(i) if i > 1 => i,
        _ => (e.ids.len() / 2).max(1),
    };
    let prompts: Vec<Vec<u32>> = examples.iter().map(|e| e.ids[..split(e)].to_vec()).collect();
    if prompts.is_empty() {
        return Ok(());
    }
    let params = SamplingParams { greedy: true, max_new_tokens: max_new, stop_token_ids: tok.eos_ids(), ..Default::default() };
    let outs = generate(&model.decoder, &prompts, &params, &mut crate::rng::Rng::new(0), None)?;
    for (e, o) in examples.iter().zip(outs) {
        let cut = split(e);
        ctx.events.send(Event::Sample {
            stage: ctx.events.stage().to_string(),
            step,
            prompt: tok.decode(&e.ids[..cut], false)?,
            response: tok.decode(&o.tokens, true)?,
            reward: None,
            advantage: None,
            correct: None,
            extra: serde_json::json!({"reference": tok.decode(&e.ids[cut..], true)?}),
        });
    }
    Ok(())
}

/// Greedy responses to the first three held-out problems, with their verdicts.
fn send_samples(model: &Model, tok: &Tokenizer, problems: &ProblemSet, chat: bool, step: u64, max_new: usize, ctx: &StageCtx) -> Result<()> {
    const SHOWN: usize = 3;
    let opts = GradeOptions { n: 1, temperature: 1.0, top_p: 1.0, greedy: true, max_new_tokens: max_new, chat, batch_size: SHOWN, tools: None };
    let mut rng = crate::rng::Rng::new(0);
    let graded = sample_and_grade(&model.decoder, tok, problems, SHOWN, &opts, Seeds::Stream(&mut rng), &mut |_| Ok(()))?;
    for g in graded.into_iter().flatten() {
        ctx.events.send(Event::Sample {
            stage: ctx.events.stage().to_string(),
            step,
            prompt: problems.prompt(g.problem).to_string(),
            response: g.response,
            reward: Some(g.verdict.reward),
            advantage: None,
            correct: Some(g.verdict.correct),
            extra: serde_json::json!({"reason": g.verdict.reason}),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::precision::{scoped, Precision};
    use crate::model::ModelConfig;

    /// The loss and the gradient of every parameter of one training micro-batch.
    fn loss_and_grads(model: &Model, batch: &Batch, precision: Precision) -> (f64, Vec<(String, Vec<f32>)>) {
        let _p = scoped(precision);
        let loss = (batch_nll(model, batch, Mode::Train).unwrap() / batch.n_targets as f64).unwrap();
        let grads = loss.backward().unwrap();
        let g = model.vars().into_iter().map(|(name, v)| (name, grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
        (loss.to_scalar::<f32>().unwrap() as f64, g)
    }

    #[test]
    fn a_bf16_update_gives_the_f32_loss_and_gradients_within_bf16_rounding() {
        // update_dtype = "bf16": the projections' and the head's products round their operands
        // to bf16 (2⁻⁸ relative each), so the loss and the gradients move by about that much,
        // not more; and they do move (the mode is in effect).
        let dev = Device::Cpu;
        let mut cfg = ModelConfig::preset("tiny", 300).unwrap();
        cfg.num_hidden_layers = 2;
        let model = Model::init_random(cfg, 7, &dev).unwrap();
        let mut rng = crate::rng::Rng::new(11);
        let examples: Vec<Example> = (0..4)
            .map(|i| {
                let len = 20 + 7 * i;
                Example { ids: (0..len).map(|_| (rng.f32() * 299.0) as u32 + 1).collect(), targets: (0..len).map(|j| j >= 5).collect() }
            })
            .collect();
        let batch = make_batch(&examples, 0, &dev).unwrap();
        let (l32, g32) = loss_and_grads(&model, &batch, Precision::F32);
        let (l16, g16) = loss_and_grads(&model, &batch, Precision::Bf16);
        assert!(l32.is_finite() && l16 != l32, "bf16 changes the loss a little: {l16} vs {l32}");
        assert!((l16 - l32).abs() <= 1e-2 * l32.abs(), "loss {l16} (bf16) vs {l32} (f32)");
        for ((name, a), (_, b)) in g16.iter().zip(&g32) {
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            // Relative difference of the gradient as a vector: a few bf16 ulps (2⁻⁸ = 0.4 %)
            // through the layers; 5 % is loose.
            assert!(norm(&diff) <= 5e-2 * norm(b) + 1e-9, "{name}: |Δ grad| {} vs |grad| {}", norm(&diff), norm(b));
        }
    }
}
