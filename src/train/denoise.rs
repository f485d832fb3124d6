//! Stage `kind = "denoise"`: diffusion fine-tuning of an encoder with its MLM head
//! (research/synth-spec.md §5.2–5.3), and the MLM pre-training that gives the tiny
//! experiment its starting encoder (`objective = "mlm"`).
//!
//! - `objective = "diffusion"` (the default): each sequence draws one `t ~ U{0..T−1}` and its
//!   own noise; the loss is L_mse + L_T + L_round of [`crate::diffusion::loss`]. `padding =
//!   "masked"` (the default) pads with the model's pad id and masks it; `"reference"` pads
//!   with `<s>` and attends to everything, as the paper's code does.
//! - `objective = "mlm"`: BERT's masked-LM objective (15% of the real, non-special tokens
//!   chosen; of those 80% become `<mask>`, 10% a random token, 10% stay; cross-entropy on the
//!   chosen ones).
//!
//! Every `eval_every` steps (and at the end) the held-out ID set and each OOD set get their
//! mean reconstruction loss at `eval_t` (the OOD score of §5.4, the same seeded noise every
//! time), sent as `eval/recon/<set>` metrics so the dashboard and `retort report` show ID
//! and OOD reconstruction over training. Controls, checkpoints, exact resume (the data, t,
//! noise and masks are functions of (seed, step)) and the non-finite stop are the trainer
//! scaffold's. The reference trains with dropout 0.1; retort's encoder has no dropout.
//!
//! ```toml
//! [[stage]]
//! kind = "denoise"
//! model = "@pretrain"                      # an encoder folder with its MLM head
//! steps = 400
//! lr = 5e-5
//! [stage.data]
//! train = "@data/recipes_train.jsonl"      # {"text"} rows
//! id_eval = "@data/recipes_test.jsonl"     # optional
//! ood_eval = ["@data/legal.jsonl"]         # optional
//! ```

use crate::diffusion::loss::{losses, row_noise, DenoiseBatch, Padding};
use crate::diffusion::score::{score_rows, ScoreOptions, TextSet};
use crate::diffusion::NoiseSchedule;
use crate::model::encoder::{EncoderModel, Encoder};
use crate::rng::Rng;
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use crate::text::Tokenizer;
use crate::train::optim::{AdamW, AdamWConfig, Param};
use crate::train::scaffold::{Scaffold, TrainState};
use crate::train::schedule::{Decay, Schedule};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Diffusion,
    Mlm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiseStage {
    /// An encoder folder (BERT or RoBERTa with its MLM head), or `@stage`.
    pub model: String,
    pub data: DenoiseData,
    #[serde(default = "d_objective")]
    pub objective: Objective,
    #[serde(default = "d_steps")]
    pub steps: u64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_one")]
    pub grad_accum: usize,
    /// The paper: 5e-5, linear decay, no warm-up, weight decay 0.01 on every parameter.
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "d_decay")]
    pub schedule: Decay,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub max_grad_norm: f64,
    /// Tokens a text keeps (special tokens included); longer texts are cut.
    #[serde(default = "d_max_len")]
    pub max_len: usize,
    #[serde(default)]
    pub padding: Padding,
    /// Diffusion: the number of timesteps T and the β range of the linear schedule.
    #[serde(default = "d_t")]
    pub diffusion_steps: usize,
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    /// MLM: the share of tokens chosen.
    #[serde(default = "d_mask_prob")]
    pub mask_prob: f64,
    /// The timestep of the held-out reconstruction loss.
    #[serde(default = "d_eval_t")]
    pub eval_t: usize,
    /// Texts of each held-out set used for the reconstruction loss.
    #[serde(default = "d_eval_max")]
    pub eval_max: usize,
    #[serde(default = "d_every")]
    pub eval_every: u64,
    #[serde(default = "d_every")]
    pub checkpoint_every: u64,
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiseData {
    /// JSONL of `{"text"}` rows (the ID training text).
    pub train: String,
    /// Held-out ID texts for the reconstruction metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_eval: Option<String>,
    /// Held-out OOD sets for the reconstruction metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ood_eval: Vec<String>,
}

fn d_objective() -> Objective {
    Objective::Diffusion
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
fn d_lr() -> f64 {
    5e-5
}
fn d_decay() -> Decay {
    Decay::Linear
}
fn d_wd() -> f64 {
    0.01
}
fn d_clip() -> f64 {
    1.0
}
fn d_max_len() -> usize {
    128
}
fn d_t() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    1e-4
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_mask_prob() -> f64 {
    0.15
}
fn d_eval_t() -> usize {
    600
}
fn d_eval_max() -> usize {
    200
}
fn d_every() -> u64 {
    100
}
fn d_keep() -> usize {
    2
}

impl StageConfig for DenoiseStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, [("model", Some(self.model.as_str()))]);
        r.extend(refs(Artifact::Text, [("data.train", Some(self.data.train.as_str())), ("data.id_eval", self.data.id_eval.as_deref())]));
        r.extend(refs(Artifact::Text, self.data.ood_eval.iter().map(|s| ("data.ood_eval", Some(s.as_str())))));
        r
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Model)
    }

    fn preflight(&self) -> Result<()> {
        let d = &self.data;
        for (key, f) in [("data.train", Some(&d.train)), ("data.id_eval", d.id_eval.as_ref())].into_iter().chain(d.ood_eval.iter().map(|f| ("data.ood_eval", Some(f)))) {
            if let Some(f) = f.filter(|f| !f.starts_with('@')) {
                TextSet::read(Path::new(f)).with_context(|| format!("`{key}`"))?;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.steps == 0 {
            return Err(("steps".into(), "steps must be at least 1".into()));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(("batch_size".into(), "batch_size and grad_accum must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(("lr".into(), format!("the learning rate must be finite and > 0 (got {})", self.lr)));
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm <= 0.0 {
            return Err(("max_grad_norm".into(), "max_grad_norm must be > 0".into()));
        }
        if self.max_len < 3 {
            return Err(("max_len".into(), "max_len must leave room for the two special tokens and a word".into()));
        }
        if self.diffusion_steps < 2 {
            return Err(("diffusion_steps".into(), "T must be at least 2".into()));
        }
        if !(0.0 < self.beta_start && self.beta_start <= self.beta_end && self.beta_end < 1.0) {
            return Err(("beta_start".into(), "the βs must satisfy 0 < beta_start ≤ beta_end < 1".into()));
        }
        if self.eval_t >= self.diffusion_steps {
            return Err(("eval_t".into(), format!("eval_t = {} is not a timestep of 0..{}", self.eval_t, self.diffusion_steps - 1)));
        }
        if !(0.0 < self.mask_prob && self.mask_prob < 1.0) {
            return Err(("mask_prob".into(), "mask_prob must be in (0, 1)".into()));
        }
        Ok(())
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        Some(crate::stage::needs::Needs {
            model: self.model.clone(),
            trainable: crate::stage::needs::Trainable::Full,
            micro_batch: self.batch_size,
            seq: self.max_len,
            accumulates: self.grad_accum > 1,
            reference: false,
            critic: false,
            z_head_layers: None,
            generate: None,
            assumption: None,
            knobs: vec![
                format!("lower `batch_size` (now {}) and raise `grad_accum` (now {}) to keep the step", self.batch_size, self.grad_accum),
                format!("shorter rows: `max_len` (now {})", self.max_len),
            ],
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

#[derive(Serialize, Deserialize)]
struct DenoiseState {
    step: u64,
    examples_seen: u64,
    last_loss: f64,
}

impl TrainState for DenoiseState {
    fn step(&self) -> u64 {
        self.step
    }
}

/// What the objective needs from the tokenizer.
struct Specials {
    pad: u32,
    bos: u32,
    mask: Option<u32>,
    /// Ids never chosen for MLM (the special tokens).
    special: Vec<u32>,
}

fn specials(tok: &Tokenizer, model: &EncoderModel) -> Specials {
    let pad = model.config.pad_token_id;
    let bos = tok.bos_id().or_else(|| tok.token_to_id("<s>")).or_else(|| tok.token_to_id("[CLS]")).unwrap_or(pad);
    let mask = tok.token_to_id("<mask>").or_else(|| tok.token_to_id("[MASK]"));
    let mut special: Vec<u32> = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]
        .iter()
        .filter_map(|t| tok.token_to_id(t))
        .collect();
    special.push(pad);
    Specials { pad, bos, mask, special }
}

/// Reads a text set and tokenizes it, cutting rows at `max_len` (training data is cut, not
/// refused; scoring refuses long texts).
fn read_rows(path: &Path, tok: &Tokenizer, max_len: usize) -> Result<(TextSet, Vec<Vec<u32>>)> {
    let set = TextSet::read(path)?;
    let rows = set.tokenize(tok, max_len, true)?;
    Ok((set, rows))
}

/// One MLM batch: corrupted ids and the (B, L) targets/weights of the chosen positions.
fn mlm_loss(enc: &Encoder, rows: &[Vec<u32>], sp: &Specials, prob: f64, vocab: usize, rng: &mut Rng) -> Result<(Tensor, usize)> {
    let Some(mask_id) = sp.mask else { bail!("the tokenizer has no `<mask>` / `[MASK]` token, which the MLM objective needs") };
    let width = rows.iter().map(Vec::len).max().unwrap_or(1);
    let b = rows.len();
    let (mut ids, mut attn, mut target, mut weight) = (vec![sp.pad; b * width], vec![0u32; b * width], vec![0u32; b * width], vec![0f32; b * width]);
    let mut chosen = 0;
    for (r, row) in rows.iter().enumerate() {
        for (j, &id) in row.iter().enumerate() {
            let k = r * width + j;
            attn[k] = 1;
            target[k] = id;
            ids[k] = id;
            if sp.special.contains(&id) || rng.f64() >= prob {
                continue;
            }
            weight[k] = 1.0;
            chosen += 1;
            let u = rng.f64();
            ids[k] = if u < 0.8 { mask_id } else if u < 0.9 { rng.below(vocab as u64) as u32 } else { id };
        }
    }
    let dev = enc.device();
    let ids = Tensor::from_vec(ids, (b, width), dev)?;
    let attn = Tensor::from_vec(attn, (b, width), dev)?;
    let hidden = enc.forward(&ids, &attn, None)?;
    let logp = candle_nn::ops::log_softmax(&enc.mlm_logits(&hidden)?, D::Minus1)?;
    let target = Tensor::from_vec(target, (b, width), dev)?;
    let nll = logp.gather(&target.unsqueeze(2)?, 2)?.squeeze(2)?.neg()?;
    let weight = Tensor::from_vec(weight, (b, width), dev)?;
    Ok(((nll * weight)?.sum_all()?, chosen))
}

/// Mean reconstruction loss of each held-out set at `t` (fixed noise: the same every eval).
fn held_out_recon(enc: &Encoder, schedule: &NoiseSchedule, sets: &[(String, Vec<Vec<u32>>)], pad: u32, t: usize, batch: usize) -> Result<Vec<(String, f64)>> {
    let opts = ScoreOptions { t, batch_size: batch, seed: 0, features: false };
    sets.iter()
        .map(|(name, rows)| {
            let scores = score_rows(enc, schedule, rows, pad, name, &opts)?;
            Ok((name.clone(), scores.iter().map(|s| s.recon).sum::<f64>() / scores.len().max(1) as f64))
        })
        .collect()
}

fn train(cfg: &DenoiseStage, ctx: &mut StageCtx) -> Result<StageOutput> {
    let model_dir = ctx.resolve(&cfg.model)?;
    let device = ctx.device.clone();
    let model = EncoderModel::load(&model_dir, &device, DType::F32, true).with_context(|| format!("model {}", model_dir.display()))?;
    if !model.layout.heads.mlm {
        bail!("{}: the encoder has no masked-LM head, which the denoiser's L_round and the MLM objective need", model_dir.display());
    }
    let tok = Tokenizer::load(&model_dir)?;
    let sp = specials(&tok, &model);
    let max_len = cfg.max_len.min(model.config.max_tokens());
    let (_, train_rows) = read_rows(&ctx.resolve(&cfg.data.train)?, &tok, max_len).context("data.train")?;
    let mut held: Vec<(String, Vec<Vec<u32>>)> = Vec::new();
    for (key, f) in cfg.data.id_eval.iter().map(|f| ("data.id_eval", f)).chain(cfg.data.ood_eval.iter().map(|f| ("data.ood_eval", f))) {
        let (set, mut rows) = read_rows(&ctx.resolve(f)?, &tok, max_len).with_context(|| format!("`{key}`"))?;
        rows.truncate(cfg.eval_max);
        let name = if key == "data.id_eval" { format!("id/{}", set.name) } else { format!("ood/{}", set.name) };
        held.push((name, rows));
    }
    let schedule = NoiseSchedule::linear(cfg.diffusion_steps, cfg.beta_start, cfg.beta_end);

    // The paper decays every parameter (AdamW weight decay 0.01 on all).
    let params: Vec<Param> = model.vars().into_iter().map(|(name, var)| Param { name, var, lr_scale: 1.0, decay: true }).collect();
    let n_params: usize = params.iter().map(|p| p.var.elem_count()).sum();
    ctx.events.info(format!(
        "{:?} training of a {} encoder ({} parameters) on {} texts; {} held-out sets; padding {:?}",
        cfg.objective,
        model.config.model_type.as_str(),
        n_params,
        train_rows.len(),
        held.len(),
        cfg.padding
    ));
    let mut opt = AdamW::new(params, AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() });
    let lr_schedule = Schedule { peak_lr: cfg.lr, warmup_steps: cfg.warmup_steps, total_steps: cfg.steps, decay: cfg.schedule, min_ratio: 0.0 };
    let run = Scaffold::new(&ctx.dir, cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints, "Lower lr or check the data");
    let mut state = run.resume(ctx, &mut [("params", &mut opt)])?.unwrap_or(DenoiseState { step: 0, examples_seen: 0, last_loss: f64::NAN });
    let seed = ctx.rng("data").next_u64();
    let hidden = model.config.hidden_size;
    let vocab = model.config.vocab_size;

    let eval = |enc: &Encoder| held_out_recon(enc, &schedule, &held, sp.pad, cfg.eval_t, cfg.batch_size * 4);
    if state.step == 0 && !held.is_empty() {
        let values: Vec<(String, f64)> = eval(&model.encoder)?.into_iter().map(|(n, v)| (format!("eval/recon/{n}"), v)).collect();
        ctx.events.metrics(0, values);
    }
    while state.step < cfg.steps {
        run.poll(ctx, &state, &[("params", &opt)])?;
        let started = Instant::now();
        let (mut sum_loss, mut sum_mse, mut sum_t, mut sum_round, mut tokens) = (0.0, 0.0, 0.0, 0.0, 0usize);
        for micro in 0..cfg.grad_accum {
            let rows: Vec<Vec<u32>> = (0..cfg.batch_size)
                .map(|_| {
                    let (_, i) = crate::train::data::stream_position(seed, state.examples_seen, train_rows.len());
                    state.examples_seen += 1;
                    train_rows[i].clone()
                })
                .collect();
            tokens += rows.iter().map(Vec::len).sum::<usize>();
            let label = format!("{}/{micro}", state.step);
            let loss = match cfg.objective {
                Objective::Diffusion => {
                    let batch = DenoiseBatch::new(&rows, sp.pad, sp.bos, cfg.padding, &device)?;
                    let mut trng = Rng::derive(seed, &format!("t/{label}"));
                    let t: Vec<usize> = (0..rows.len()).map(|_| trng.usize(cfg.diffusion_steps)).collect();
                    // The reference noises padding too; masked padding never reaches the loss.
                    let noised = match cfg.padding {
                        Padding::Masked => batch.lengths.clone(),
                        Padding::Reference => vec![batch.width(); batch.len()],
                    };
                    let noise = row_noise(&noised, batch.width(), hidden, |r| Rng::derive(seed, &format!("noise/{label}/{r}")), &device)?;
                    let (l, _) = losses(&model.encoder, &schedule, &batch, &t, &noise)?;
                    sum_mse += l.mse.mean_all()?.to_scalar::<f32>()? as f64 / cfg.grad_accum as f64;
                    sum_t += l.t_loss.mean_all()?.to_scalar::<f32>()? as f64 / cfg.grad_accum as f64;
                    sum_round += l.round.to_scalar::<f32>()? as f64 / cfg.grad_accum as f64;
                    (l.total / cfg.grad_accum as f64)?
                }
                Objective::Mlm => {
                    let mut mrng = Rng::derive(seed, &format!("mlm/{label}"));
                    let (nll, chosen) = mlm_loss(&model.encoder, &rows, &sp, cfg.mask_prob, vocab, &mut mrng)?;
                    (nll / (chosen.max(1) * cfg.grad_accum) as f64)?
                }
            };
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(run.non_finite("loss", value, state.step + 1));
            }
            sum_loss += value;
            opt.accumulate(&loss.backward()?)?;
        }
        let lr = lr_schedule.lr(state.step);
        let report = run.apply_update(ctx, &mut opt, lr, cfg.max_grad_norm, state.step + 1)?;
        state.step += 1;
        state.last_loss = sum_loss;
        let dt = started.elapsed().as_secs_f64();
        let mut metrics: Vec<(String, f64)> = vec![
            ("loss".into(), sum_loss),
            ("lr".into(), lr),
            ("grad_norm".into(), report.grad_norm),
            ("tokens_per_s".into(), tokens as f64 / dt.max(1e-9)),
            ("step_time_s".into(), dt),
        ];
        if cfg.objective == Objective::Diffusion {
            metrics.extend([("loss/mse".into(), sum_mse), ("loss/t".into(), sum_t), ("loss/round".into(), sum_round)]);
        }
        let last = state.step == cfg.steps;
        if !held.is_empty() && ((cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || last) {
            metrics.extend(eval(&model.encoder)?.into_iter().map(|(n, v)| (format!("eval/recon/{n}"), v)));
        }
        ctx.events.metrics(state.step, metrics);
        run.progress(ctx, state.step, None);
        run.after_step(ctx, &state, &[("params", &opt)])?;
    }
    run.save(ctx, &state, &[("params", &opt)])?;
    let out = write_encoder(&ctx.dir, &model_dir, &model)?;
    let mut summary: BTreeMap<String, f64> = BTreeMap::new();
    summary.insert("loss".into(), state.last_loss);
    for (n, v) in eval(&model.encoder)? {
        summary.insert(format!("recon/{n}"), v);
    }
    Ok(StageOutput { output: Some(out), summary, table: None })
}

/// `<stage>/model`: the weights and config written into a hidden sibling with the source's
/// tokenizer files, then renamed into place (complete or absent).
pub fn write_encoder(stage_dir: &Path, source: &Path, model: &EncoderModel) -> Result<PathBuf> {
    let out = stage_dir.join("model");
    let tmp = stage_dir.join(".model.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = model
        .save(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|()| crate::model::init::copy_side_files(source, &tmp))
        .and_then(|()| crate::fsutil::replace_dir(&tmp, &out));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("cannot write the model folder {}", out.display())));
    }
    Ok(out)
}
