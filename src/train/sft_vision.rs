//! The `sft` stage on a vision-language model folder (`model_type: qwen2_vl`): multimodal
//! chat rows in the LLaMA-Factory / ShareGPT form
//!
//! ```json
//! {"messages": [{"role": "user", "content": "<image>What is drawn?"},
//!               {"role": "assistant", "content": "A red square."}],
//!  "images": ["imgs/0001.png"]}
//! ```
//!
//! with one `<image>` marker per image (paths relative to the JSONL file), loss on every
//! assistant turn (the chat template's rendering of it, end-of-turn included), and separate
//! learning rates for the vision tower, the projector (Qwen2-VL's patch merger) and the LLM,
//! any of which can be frozen:
//!
//! ```toml
//! [stage.vision]
//! tower_lr = 2e-6          # default: the stage's lr
//! projector_lr = 2e-5
//! llm_lr = 2e-5
//! freeze = ["tower"]       # any of "tower", "projector", "llm"
//! mask = "synthesizer"     # default "assistant"; see below
//! checkpoint_tower = true  # recompute the tower's blocks in backward (memory bound)
//! ```
//!
//! With a `[stage.lora]` table the LLM trains through LoRA adapters on its projections (its
//! base weights frozen, `llm_lr` the adapters' rate) while the tower and projector train fully
//! or stay frozen as `[stage.vision]` says; the adapters are saved to `<stage>/adapter` in
//! PEFT's layout and the output model is merged, as text LoRA does.
//!
//! `mask = "synthesizer"` trains a visual instruction synthesizer (AdaMLLM, synth-spec §2.2):
//! the first round (image, "Describe the image.", caption) is masked and every later token is
//! trained, user turns included, then an EOS ([`super::data::encode_synthesizer_chat`]).
//!
//! The same trainer scaffold as text SFT: AdamW, warmup + decay, clipping, checkpoints with the
//! optimizer moments, and a data order that is a pure function of (seed, example index), so a
//! resumed run continues exactly. Images are decoded and preprocessed once, when the rows are read.

use super::data::{self, Example};
use crate::model::lora::{self, Adapters, LoraConfig};
use super::optim::{AdamW, AdamWConfig, Param};
use super::scaffold::{Scaffold, TrainState};
use super::schedule::{Decay, Schedule};
use crate::model::vision::{family, mrope, prompt, ImagePatches, TowerMode, VisionLanguageModel};
use crate::model::Mode;
use crate::stage::{StageCtx, StageOutput};
use crate::text::{Message, Tokenizer};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// `[stage.vision]`: per-part learning rates and freezing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tower_lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector_lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_lr: Option<f64>,
    /// Parts left as they are: "tower", "projector", "llm".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Which tokens are trained: "assistant" (every assistant turn; the default) or
    /// "synthesizer" (everything after the first round, and an EOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// Gradient checkpointing of the tower's blocks: only each block's input is kept and
    /// backward recomputes the blocks (`model/vision/checkpoint.rs`); one more tower forward
    /// per step for a tower's activations of (depth + 1) × patches × width.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint_tower: bool,
}

/// How the tower runs while training: cut from the graph when frozen (no gradient, nothing kept
/// across blocks), checkpointed when asked, else the whole graph.
pub fn tower_mode(parts: &VisionParts) -> TowerMode {
    if parts.lr(Part::Tower, 1.0).is_none() {
        TowerMode::Frozen
    } else if parts.checkpoint_tower {
        TowerMode::Checkpoint
    } else {
        TowerMode::Graph
    }
}

/// The three parts of a VLM's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Tower,
    Projector,
    Llm,
}

impl Part {
    pub fn of(name: &str) -> Part {
        if name.starts_with("visual.merger.") || name.starts_with("multi_modal_projector.") || name == "image_newline" {
            Part::Projector
        } else if name.starts_with("visual.") || name.starts_with("vision_tower.") {
            Part::Tower
        } else {
            Part::Llm
        }
    }

    fn name(self) -> &'static str {
        match self {
            Part::Tower => "tower",
            Part::Projector => "projector",
            Part::Llm => "llm",
        }
    }
}

impl VisionParts {
    /// Checks the keys; errors are (key, message).
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        for f in &self.freeze {
            if !["tower", "projector", "llm"].contains(&f.as_str()) {
                return Err(("vision.freeze".into(), format!("unknown part \"{f}\"; the parts are \"tower\", \"projector\" and \"llm\"")));
            }
        }
        if let Some(m) = self.mask.as_deref().filter(|m| !["assistant", "synthesizer"].contains(m)) {
            return Err(("vision.mask".into(), format!("unknown mask \"{m}\"; the masks are \"assistant\" (every assistant turn) and \"synthesizer\" (all after the first round)")));
        }
        if self.freeze.len() >= 3 || ["tower", "projector", "llm"].iter().all(|p| self.freeze.iter().any(|f| f == p)) {
            return Err(("vision.freeze".into(), "every part is frozen: nothing would train".into()));
        }
        for (key, lr) in [("vision.tower_lr", self.tower_lr), ("vision.projector_lr", self.projector_lr), ("vision.llm_lr", self.llm_lr)] {
            if lr.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
                return Err((key.into(), "must be a finite learning rate ≥ 0".into()));
            }
        }
        Ok(())
    }

    /// The learning rate of `part` (`None`: frozen), given the stage's `lr`.
    pub fn lr(&self, part: Part, base: f64) -> Option<f64> {
        if self.freeze.iter().any(|f| f == part.name()) {
            return None;
        }
        Some(match part {
            Part::Tower => self.tower_lr,
            Part::Projector => self.projector_lr,
            Part::Llm => self.llm_lr,
        }
        .unwrap_or(base))
    }
}

/// One training example: tokens with image pads expanded, targets, and its images.
#[derive(Clone, Debug)]
pub struct VisionExample {
    pub ids: Vec<u32>,
    pub targets: Vec<bool>,
    pub images: Vec<ImagePatches>,
}

#[derive(Deserialize)]
struct MultimodalRow {
    messages: Vec<Message>,
    #[serde(default)]
    images: Vec<String>,
}

/// Tokens and targets of a conversation: every assistant turn is learned. Each assistant turn
/// is the text between the rendering of the conversation before it (with the generation
/// prompt) and the rendering through it.
pub fn encode_all_assistant_turns(tok: &Tokenizer, messages: &[Message]) -> Result<Example> {
    let turns: Vec<usize> = messages.iter().enumerate().filter(|(_, m)| m.role == "assistant").map(|(i, _)| i).collect();
    if turns.is_empty() {
        bail!("the conversation has no assistant turn to learn from");
    }
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    let mut done = String::new();
    for &i in &turns {
        let prefix = tok.apply_chat_template(&messages[..i], true)?;
        let through = tok.apply_chat_template(&messages[..=i], false)?;
        if !prefix.starts_with(&done) || !through.starts_with(&prefix) {
            bail!("the chat template renders a conversation prefix differently from the whole; cannot locate the assistant turns");
        }
        let context = tok.encode(&prefix[done.len()..], false)?;
        let answer = tok.encode(&through[prefix.len()..], false)?;
        targets.extend(std::iter::repeat_n(false, context.len()).chain(std::iter::repeat_n(true, answer.len())));
        ids.extend(context);
        ids.extend(answer);
        done = through;
    }
    Ok(Example { ids, targets })
}

/// Reads multimodal rows: images decoded and preprocessed with the model's processor, the
/// `<image>` markers turned into image tokens. Errors name the file and line.
pub fn read_multimodal_jsonl(path: &Path, tok: &Tokenizer, model: &dyn VisionLanguageModel, max_len: usize, synthesizer_mask: bool) -> Result<(Vec<VisionExample>, usize)> {
    let base = path.parent().unwrap_or(Path::new("."));
    let placeholder = model.placeholder(tok).map_err(anyhow::Error::msg)?;
    let (mut out, mut skipped) = (Vec::new(), 0);
    for item in crate::text::jsonl::open(path)? {
        let (line_no, line) = item?;
        let at = || format!("{}:{line_no}", path.display());
        let row: MultimodalRow = serde_json::from_str(&line)
            .with_context(|| format!("{}: not a multimodal row (expected {{\"messages\": [{{\"role\", \"content\"}}, ...], \"images\": [paths]}})", at()))?;
        let markers: usize = row.messages.iter().map(|m| prompt::count_markers(&m.content)).sum();
        if markers != row.images.len() {
            bail!("{}: {markers} <image> marker(s) in the messages but {} image(s) listed", at(), row.images.len());
        }
        let images = row
            .images
            .iter()
            .map(|p| model.load_image(&base.join(p)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .with_context(at)?;
        let messages: Vec<Message> = row.messages.iter().map(|m| Message::new(m.role.clone(), prompt::expand_markers(&m.content, &placeholder))).collect();
        let ex = if synthesizer_mask {
            // The end of text, not of a turn: the synthesizer writes many turns, then stops.
            let eos = ["<|endoftext|>", "<|end_of_text|>"].iter().find_map(|t| tok.token_to_id(t));
            let eos = eos.or_else(|| tok.eos_ids().first().copied()).context("the tokenizer defines no end-of-sequence token for the synthesizer's EOS")?;
            super::data::encode_synthesizer_chat(tok, &messages, eos).with_context(at)?
        } else {
            encode_all_assistant_turns(tok, &messages).with_context(at)?
        };
        let counts: Vec<usize> = images.iter().map(|im| model.image_tokens(im)).collect();
        let (ids, targets) = expand_with_targets(&ex, model.image_token_id(), &counts).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        if ids.len() > max_len {
            // An image cannot be cut in half: the row is left out (counted in the log).
            skipped += 1;
            continue;
        }
        out.push(VisionExample { ids, targets, images });
    }
    if out.is_empty() {
        bail!("{} has no usable examples ({skipped} longer than max_len)", path.display());
    }
    Ok((out, skipped))
}

/// Expands each image token to its count, never a target.
fn expand_with_targets(ex: &Example, image_token: u32, counts: &[usize]) -> std::result::Result<(Vec<u32>, Vec<bool>), String> {
    let ids = mrope::expand_image_tokens(&ex.ids, image_token, counts)?;
    let mut targets = Vec::with_capacity(ids.len());
    let mut k = 0;
    for (&id, &t) in ex.ids.iter().zip(&ex.targets) {
        if id == image_token {
            targets.extend(std::iter::repeat_n(false, counts[k]));
            k += 1;
        } else {
            targets.push(t);
        }
    }
    Ok((ids, targets))
}

/// Summed NLL of the batch's target tokens and their number.
fn batch_nll(model: &dyn VisionLanguageModel, examples: &[&VisionExample], pad: u32, mode: Mode) -> Result<(Tensor, usize)> {
    let rows: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
    let images: Vec<Vec<ImagePatches>> = examples.iter().map(|e| e.images.clone()).collect();
    let p = model.inputs(&rows, &images, pad)?;
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    anyhow::ensure!(len >= 2, "examples need at least two tokens");
    let dev = model.decoder().device();
    let mut targets = vec![pad; examples.len() * (len - 1)];
    let mut weights = vec![0f32; examples.len() * (len - 1)];
    let mut n = 0;
    for (r, e) in examples.iter().enumerate() {
        let pad_len = len - e.ids.len();
        for j in 1..e.ids.len() {
            // Position pad_len + j − 1 predicts token j.
            let at = r * (len - 1) + pad_len + j - 1;
            targets[at] = e.ids[j];
            if e.targets[j] {
                weights[at] = 1.0;
                n += 1;
            }
        }
    }
    let hidden = model.decoder().forward_embeds_at(&p.embeds, &p.mask, p.positions.as_ref(), None, mode)?;
    let targets = Tensor::from_vec(targets, (examples.len(), len - 1), dev)?;
    let weights = Tensor::from_vec(weights, (examples.len(), len - 1), dev)?;
    let (logp, _) = model.decoder().token_logprobs(&hidden.narrow(1, 0, len - 1)?, &targets, 1.0)?;
    Ok(((logp * weights)?.sum_all()?.neg()?, n))
}

/// The mean NLL of `examples`; the tower runs cut from the graph (no backward follows), then
/// goes back to `training`'s mode.
fn eval_loss(model: &dyn VisionLanguageModel, examples: &[VisionExample], pad: u32, batch: usize, training: TowerMode) -> Result<f64> {
    model.set_tower_mode(TowerMode::Frozen);
    let (mut nll, mut n) = (0.0, 0);
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&VisionExample> = chunk.iter().collect();
        let (x, k) = batch_nll(model, &refs, pad, Mode::Infer)?;
        nll += x.to_scalar::<f32>()? as f64;
        n += k;
    }
    model.set_tower_mode(training);
    Ok(if n == 0 { f64::NAN } else { nll / n as f64 })
}

#[derive(Serialize, Deserialize)]
struct State {
    step: u64,
    examples_seen: u64,
    last_loss: f64,
}

impl TrainState for State {
    fn step(&self) -> u64 {
        self.step
    }
}

/// The optimizer's parameters: every unfrozen part at its learning rate, as a scale of the
/// stage's peak `lr` (so warmup and decay shape all parts alike).
pub fn part_params(model: &dyn VisionLanguageModel, parts: &VisionParts, base_lr: f64) -> Vec<Param> {
    super::optim::params_with_decay_rule(model.vars())
        .into_iter()
        .filter_map(|mut p| {
            let lr = parts.lr(Part::of(&p.name), base_lr)?;
            // The decay rule above knows `norm.weight`; the towers' LayerNorms are norm1/norm2/ln_q
            // (Qwen2-VL) and layer_norm1/2, pre_layrnorm (CLIP, SigLIP).
            if p.name.ends_with("norm1.weight") || p.name.ends_with("norm2.weight") || p.name.ends_with("ln_q.weight") || p.name.ends_with("layrnorm.weight") {
                p.decay = false;
            }
            p.lr_scale = if base_lr > 0.0 { lr / base_lr } else { 0.0 };
            Some(p)
        })
        .collect()
}

/// Puts LoRA adapters on the LLM's projections when `lora` is set: the LLM's base weights are
/// cut from the graph (they get no gradient), the tower and projector keep theirs.
fn attach_llm_lora(model: &mut dyn VisionLanguageModel, lora: Option<&LoraConfig>, parts: &VisionParts, seed: u64) -> Result<Option<Adapters>> {
    let Some(l) = lora else { return Ok(None) };
    if parts.lr(Part::Llm, 1.0).is_none() {
        bail!("[stage.lora] trains adapters on the LLM, but [stage.vision] freeze lists \"llm\": drop one of the two");
    }
    let detached = model.decoder().detached();
    *model.decoder_mut() = detached;
    Ok(Some(lora::attach_decoder(model.decoder_mut(), l, seed)?))
}

/// What the trainer takes of the `sft` stage's keys (the stage builds it, so this file does
/// not depend on the stage's config type).
pub struct Settings {
    pub parts: VisionParts,
    pub lora: Option<LoraConfig>,
    pub jsonl: Option<String>,
    pub test_jsonl: Option<String>,
    pub steps: u64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Decay,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub max_len: usize,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
}

pub fn train(cfg: &Settings, ctx: &mut StageCtx, model_dir: &Path) -> Result<StageOutput> {
    let parts = cfg.parts.clone();
    parts.check().map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let Some(jsonl) = &cfg.jsonl else {
        bail!("a vision-language model trains on multimodal JSONL rows: set data.jsonl ({{\"messages\", \"images\"}} rows)");
    };
    let device = ctx.device.clone();
    let mut model = family::load(model_dir, &device, DType::F32, true)?;
    let adapters = attach_llm_lora(model.as_mut(), cfg.lora.as_ref(), &parts, ctx.rng("lora").next_u64())?;
    if cfg.max_len > model.text_config().max_position_embeddings {
        bail!("max_len = {} is longer than the model's context of {}", cfg.max_len, model.text_config().max_position_embeddings);
    }
    let tok = Tokenizer::load(model_dir)?;
    let eos = *tok.eos_ids().first().with_context(|| format!("{}: the tokenizer defines no end-of-sequence token", model_dir.display()))?;
    let pad = tok.pad_id().unwrap_or(eos);
    let path = ctx.resolve(jsonl)?;
    let synth_mask = parts.mask.as_deref() == Some("synthesizer");
    let (mut rows, skipped) = read_multimodal_jsonl(&path, &tok, model.as_ref(), cfg.max_len, synth_mask)?;
    let eval = match &cfg.test_jsonl {
        Some(e) => read_multimodal_jsonl(&ctx.resolve(e)?, &tok, model.as_ref(), cfg.max_len, synth_mask)?.0,
        None if rows.len() >= 20 => rows.split_off(rows.len() - rows.len() / 20),
        None => Vec::new(),
    };
    if skipped > 0 {
        ctx.events.warn(format!("{skipped} rows of {} were longer than max_len = {} and were left out", path.display(), cfg.max_len));
    }
    let mut params = part_params(model.as_ref(), &parts, cfg.lr);
    if let Some(a) = &adapters {
        // The LLM trains through its adapters only, at the LLM's rate.
        params.retain(|p| Part::of(&p.name) != Part::Llm);
        let scale = parts.lr(Part::Llm, cfg.lr).map_or(0.0, |lr| lr / cfg.lr);
        params.extend(a.vars.iter().map(|(n, v)| Param { name: n.clone(), var: v.clone(), lr_scale: scale, decay: true }));
    }
    let count = |p: Part| params.iter().filter(|x| Part::of(&x.name) == p).map(|x| x.var.elem_count()).sum::<usize>();
    ctx.events.info(format!(
        "vision-language training{}: {} trainable parameters (tower {}, projector {}, llm {}); {} examples, {} held out",
        if adapters.is_some() { " with LoRA on the LLM" } else { "" },
        params.iter().map(|p| p.var.elem_count()).sum::<usize>(),
        count(Part::Tower),
        count(Part::Projector),
        count(Part::Llm),
        rows.len(),
        eval.len()
    ));
    let mode = tower_mode(&parts);
    model.set_tower_mode(mode);
    let mut opt = AdamW::new(params, AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() });
    let schedule = Schedule { peak_lr: cfg.lr, warmup_steps: cfg.warmup_steps, total_steps: cfg.steps, decay: cfg.schedule, min_ratio: cfg.min_lr_ratio };
    let run = Scaffold::new(&ctx.dir, cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints, "Lower lr or check the data");
    let mut state = run.resume(ctx, &mut [("params", &mut opt)])?.unwrap_or(State { step: 0, examples_seen: 0, last_loss: f64::NAN });
    let eval: Vec<VisionExample> = eval.into_iter().take(256).collect();
    let seed = ctx.rng("data").next_u64();
    while state.step < cfg.steps {
        run.poll(ctx, &state, &[("params", &opt)])?;
        let started = Instant::now();
        let mut micro: Vec<Vec<&VisionExample>> = Vec::with_capacity(cfg.grad_accum);
        for _ in 0..cfg.grad_accum {
            let batch = (0..cfg.batch_size)
                .map(|_| {
                    let (_, i) = data::stream_position(seed, state.examples_seen, rows.len());
                    state.examples_seen += 1;
                    &rows[i]
                })
                .collect();
            micro.push(batch);
        }
        let n_targets: usize = micro.iter().flatten().map(|e| e.targets.iter().filter(|&&t| t).count()).sum();
        let n_tokens: usize = micro.iter().flatten().map(|e| e.ids.len()).sum();
        let mut step_nll = 0.0;
        for (i, batch) in micro.iter().enumerate() {
            // LoRA dropout masks are a function of (seed, step, micro-batch): resumable.
            let mask_seed = crate::rng::Rng::derive(seed, &format!("lora-dropout/{}/{i}", state.step)).next_u64();
            model.decoder().set_lora_dropout_seed(adapters.as_ref().map(|_| mask_seed));
            let nll = batch_nll(model.as_ref(), batch, pad, Mode::Train);
            model.decoder().set_lora_dropout_seed(None);
            let (nll, _) = nll?;
            let loss = (nll / n_targets.max(1) as f64)?;
            step_nll += loss.to_scalar::<f32>()? as f64;
            let mut grads = loss.backward()?;
            model.tower_backward(&mut grads)?;
            opt.accumulate(&grads)?;
        }
        if !step_nll.is_finite() {
            return Err(run.non_finite("loss", step_nll, state.step + 1));
        }
        let lr = schedule.lr(state.step);
        let report = run.apply_update(ctx, &mut opt, lr, cfg.max_grad_norm, state.step + 1)?;
        state.step += 1;
        state.last_loss = step_nll;
        let dt = started.elapsed().as_secs_f64();
        let mut metrics = vec![("loss", step_nll), ("lr", lr), ("grad_norm", report.grad_norm), ("tokens_per_s", n_tokens as f64 / dt.max(1e-9)), ("step_time_s", dt)];
        let last_step = state.step == cfg.steps;
        if !eval.is_empty() && ((cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || last_step) {
            metrics.push(("eval_loss", eval_loss(model.as_ref(), &eval, pad, cfg.batch_size * 2, mode)?));
        }
        ctx.events.metrics(state.step, metrics);
        run.progress(ctx, state.step, None);
        run.after_step(ctx, &state, &[("params", &opt)])?;
    }
    run.save(ctx, &state, &[("params", &opt)])?;
    if let Some(a) = &adapters {
        lora::save_adapters(a, &ctx.dir.join("adapter"), &model_dir.display().to_string())?;
        // The output folder is a plain model of its family: the adapters folded into the LLM.
        let merged = model.decoder().merged()?;
        *model.decoder_mut() = merged;
    }
    let out = run.write_model(model_dir, model.text_config(), |dir| Ok(model.save(dir)?))?;
    let mut summary = BTreeMap::new();
    summary.insert("loss".to_string(), state.last_loss);
    if !eval.is_empty() {
        summary.insert("eval_loss".to_string(), eval_loss(model.as_ref(), &eval, pad, cfg.batch_size * 2, mode)?);
    }
    Ok(StageOutput { output: Some(out), summary, table: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_by_name_and_take_their_rates() {
        assert_eq!(Part::of("visual.merger.mlp.0.weight"), Part::Projector);
        assert_eq!(Part::of("visual.blocks.0.attn.qkv.weight"), Part::Tower);
        assert_eq!(Part::of("model.layers.0.self_attn.q_proj.weight"), Part::Llm);
        assert_eq!(Part::of("lm_head.weight"), Part::Llm);
        assert_eq!(Part::of("multi_modal_projector.linear_1.weight"), Part::Projector);
        assert_eq!(Part::of("vision_tower.encoder.layers.0.mlp.fc1.weight"), Part::Tower);
        let p = VisionParts { tower_lr: Some(2e-6), freeze: vec!["llm".into()], ..Default::default() };
        assert_eq!(p.lr(Part::Tower, 2e-5), Some(2e-6));
        assert_eq!(p.lr(Part::Projector, 2e-5), Some(2e-5));
        assert_eq!(p.lr(Part::Llm, 2e-5), None);
        assert!(p.check().is_ok());
        let all = VisionParts { freeze: vec!["tower".into(), "projector".into(), "llm".into()], ..Default::default() };
        assert!(all.check().unwrap_err().1.contains("nothing would train"));
        let bad = VisionParts { freeze: vec!["vit".into()], ..Default::default() };
        assert!(bad.check().unwrap_err().1.contains("\"vit\""));
    }

    #[test]
    fn image_tokens_expand_and_are_never_targets() {
        let ex = Example { ids: vec![1, 9, 2, 3], targets: vec![false, false, false, true] };
        let (ids, t) = expand_with_targets(&ex, 9, &[3]).unwrap();
        assert_eq!(ids, [1, 9, 9, 9, 2, 3]);
        assert_eq!(t, [false, false, false, false, false, true]);
    }
}
