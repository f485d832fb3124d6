//! Stage `kind = "retrieve"`: contrastive training of UPRISE's bi-encoder on a
//! `prompt-score` stage's data (research/synth-spec.md §6.4), then the pool's index.
//!
//! Each step takes `batch_size` scored examples (an epoch-shuffled stream, a pure function
//! of the seed and the step), stacks their contexts (positive, hard negatives, other-task
//! negatives, shuffled per step) and minimises the InfoNCE over all of them. Every
//! `eval_every` steps and at the end the validation split is scored the same way (batches of
//! `batch_size`): accuracy@1 and the positive's mean rank go to the dashboard (`eval/acc@1`,
//! `eval/mean_rank`), and the best accuracy (ties: the lower rank) is kept as the final
//! model, as the reference keeps its best checkpoint. Controls, checkpoints, exact resume and
//! the non-finite stop are the trainer scaffold's.
//!
//! Output: `<stage>/retriever/` (see [`super::biencoder`]): both encoders, `index.safetensors`
//! of the pool's prompts under the best prompt encoder, `pool.jsonl`, `retriever.json`.
//!
//! ```toml
//! [[stage]]
//! kind = "retrieve"
//! data = "@score"
//! query_encoder = "@enc"   # BERT-base-uncased at paper scale
//! steps = 3000             # the paper: 3 epochs at batch 16
//! ```

use super::biencoder::{build_index, RetrieverMeta, Side};
use super::data::read_rows;
use super::retriever::{acc_and_mean_rank, info_nce, layout, ranks, similarities};
use super::scoring::{read_jsonl, Scored};
use crate::model::encoder::Pooling;
use crate::rng::Rng;
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use crate::train::optim::{AdamW, AdamWConfig, Param};
use crate::train::scaffold::{Scaffold, TrainState};
use crate::train::schedule::{Decay, Schedule};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveStage {
    /// A `prompt-score` stage's folder (`@score`).
    pub data: String,
    /// The query encoder's starting weights (a BERT / RoBERTa folder).
    pub query_encoder: String,
    /// The prompt encoder's starting weights (default: the query encoder's; the two are
    /// trained as independent copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_encoder: Option<String>,
    /// `cls` (the paper) or `mean`.
    #[serde(default = "d_pooling")]
    pub pooling: String,
    #[serde(default = "d_max_len")]
    pub max_len: usize,
    #[serde(default = "d_steps")]
    pub steps: u64,
    /// The paper: 16 queries a step (2 per GPU × 8).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// The paper: 1e-5, Adam (0.9, 0.999, 1e-8), no weight decay, 1000 warm-up steps then
    /// linear decay, gradient clipping at 2.0.
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_warmup")]
    pub warmup_steps: u64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub max_grad_norm: f64,
    #[serde(default = "d_every")]
    pub eval_every: u64,
    #[serde(default = "d_every")]
    pub checkpoint_every: u64,
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
}

fn d_pooling() -> String {
    "cls".into()
}
fn d_max_len() -> usize {
    256
}
fn d_steps() -> u64 {
    3000
}
fn d_batch() -> usize {
    16
}
fn d_lr() -> f64 {
    1e-5
}
fn d_warmup() -> u64 {
    1000
}
fn d_clip() -> f64 {
    2.0
}
fn d_every() -> u64 {
    500
}
fn d_keep() -> usize {
    2
}

impl StageConfig for RetrieveStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Text, [("data", Some(self.data.as_str()))]);
        r.extend(refs(Artifact::Model, [("query_encoder", Some(self.query_encoder.as_str())), ("prompt_encoder", self.prompt_encoder.as_deref())]));
        r
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Model)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if Pooling::parse(&self.pooling).is_none() {
            return Err(("pooling".into(), format!("unknown pooling {:?}; use \"cls\" or \"mean\"", self.pooling)));
        }
        if self.steps == 0 || self.batch_size == 0 {
            return Err(("steps".into(), "steps and batch_size must be at least 1".into()));
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
        Ok(())
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        // Two encoders trained as independent copies (when the prompt encoder starts from
        // other weights, the query encoder's shape is assumed for both), one optimizer over both.
        Some(crate::stage::needs::Needs {
            model: self.query_encoder.clone(),
            copies: 2,
            micro_batch: self.batch_size,
            seq: self.max_len,
            no_token_head: true,
            contexts_from: Some(self.data.clone()),
            knobs: vec![
                format!("lower `batch_size` (now {}): each query brings its positive and negatives", self.batch_size),
                format!("shorter rows: `max_len` (now {})", self.max_len),
                "fewer negatives per query (`negatives` of the prompt-score stage)".into(),
            ],
            ..Default::default()
        })
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(self.steps), "step")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        train(self, ctx)
    }
}

#[derive(Serialize, Deserialize)]
struct RetrieveState {
    step: u64,
    examples_seen: u64,
    last_loss: f64,
    /// Best validation (accuracy@1, mean rank) so far and its step.
    best: Option<(f64, f64, u64)>,
}

impl TrainState for RetrieveState {
    fn step(&self) -> u64 {
        self.step
    }
}

/// Loss, (sim rows, positives) of one batch of scored examples.
fn batch_forward(q: &Side, p: &Side, pool: &[super::data::TaskRow], batch: &[&Scored], pooling: Pooling, rng: &mut Rng) -> Result<(candle_core::Tensor, Vec<Vec<f32>>, Vec<usize>)> {
    let lay = layout(batch, rng);
    let queries: Vec<&str> = batch.iter().filter(|s| s.positive.is_some()).map(|s| s.input.as_str()).collect();
    let demos: Vec<String> = lay.contexts.iter().map(|&pid| pool[pid].demo()).collect();
    let demo_refs: Vec<&str> = demos.iter().map(String::as_str).collect();
    let qv = q.encode(&queries, pooling)?;
    let pv = p.encode(&demo_refs, pooling)?;
    let sim = similarities(&qv, &pv)?;
    let loss = info_nce(&sim, &lay.positive)?;
    let rows = sim.detach().to_vec2::<f32>()?;
    Ok((loss, rows, lay.positive))
}

fn validate_on(q: &Side, p: &Side, pool: &[super::data::TaskRow], valid: &[Scored], pooling: Pooling, batch: usize, seed: u64) -> Result<(f64, f64, f64)> {
    let mut all_ranks = Vec::new();
    let mut loss_sum = 0.0;
    let mut batches = 0usize;
    for (i, chunk) in valid.chunks(batch.max(1)).enumerate() {
        let refs: Vec<&Scored> = chunk.iter().collect();
        // The same shuffles every validation, so the numbers compare across steps.
        let mut rng = Rng::derive(seed, &format!("valid/{i}"));
        let (loss, rows, pos) = batch_forward(q, p, pool, &refs, pooling, &mut rng)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        batches += 1;
        all_ranks.extend(ranks(&rows, &pos));
    }
    let (acc, rank) = acc_and_mean_rank(&all_ranks);
    Ok((acc, rank, loss_sum / batches.max(1) as f64))
}

/// Saves both encoders (with their tokenizers) into `dir/{query,prompt}`, replacing a
/// previous pair whole.
fn save_pair(dir: &Path, q: &Side, p: &Side) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| -> Result<()> {
        for (name, side) in [("query", q), ("prompt", p)] {
            let out = tmp.join(name);
            side.model.save(&out)?;
            crate::model::init::copy_side_files(&side.dir, &out)?;
        }
        crate::fsutil::replace_dir(&tmp, dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written.with_context(|| format!("cannot write the encoders to {}", dir.display()))
}

fn train(cfg: &RetrieveStage, ctx: &mut StageCtx) -> Result<StageOutput> {
    let data = ctx.resolve(&cfg.data)?;
    let pool = read_rows(&data.join("pool.jsonl")).context("the pool of `data`")?;
    let mut train_set = read_jsonl(&data.join("train.jsonl")).context("`data`")?;
    let valid = read_jsonl(&data.join("valid.jsonl")).context("`data`")?;
    train_set.retain(|s| s.positive.is_some());
    if train_set.is_empty() {
        bail!("{}: no scored example has a positive prompt; score more examples or more candidates (L)", data.join("train.jsonl").display());
    }
    for s in train_set.iter().chain(&valid) {
        if let Some(bad) = s.positive.iter().chain(&s.hard).chain(&s.negatives).find(|&&p| p >= pool.len()) {
            bail!("{}: example {} names pool id {bad}, past the pool's {} rows", data.display(), s.qid, pool.len());
        }
    }
    let pooling = Pooling::parse(&cfg.pooling).context("pooling")?;
    let qdir = ctx.resolve(&cfg.query_encoder)?;
    let pdir = match &cfg.prompt_encoder {
        Some(p) => ctx.resolve(p)?,
        None => qdir.clone(),
    };
    let device = ctx.device.clone();
    let q = Side::load(&qdir, &device, true, cfg.max_len)?;
    let p = Side::load(&pdir, &device, true, cfg.max_len)?;
    // One optimizer over both encoders, so the gradient clipping sees the whole bi-encoder.
    let params: Vec<Param> = q
        .model
        .vars()
        .into_iter()
        .map(|(n, var)| Param { name: format!("query.{n}"), var, lr_scale: 1.0, decay: true })
        .chain(p.model.vars().into_iter().map(|(n, var)| Param { name: format!("prompt.{n}"), var, lr_scale: 1.0, decay: true }))
        .collect();
    let n_params: usize = params.iter().map(|p| p.var.elem_count()).sum();
    ctx.events.info(format!(
        "bi-encoder of {n_params} parameters ({} pooling); {} training and {} validation examples; pool of {}",
        pooling.as_str(),
        train_set.len(),
        valid.len(),
        pool.len()
    ));
    let mut opt = AdamW::new(params, AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() });
    let schedule = Schedule { peak_lr: cfg.lr, warmup_steps: cfg.warmup_steps, total_steps: cfg.steps, decay: Decay::Linear, min_ratio: 0.0 };
    let run = Scaffold::new(&ctx.dir, cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints, "Lower lr or check the scored data");
    let mut state = run.resume(ctx, &mut [("params", &mut opt)])?.unwrap_or(RetrieveState { step: 0, examples_seen: 0, last_loss: f64::NAN, best: None });
    let seed = ctx.rng("data").next_u64();
    let best_dir = ctx.dir.join("best");

    let evaluate = |state: &mut RetrieveState, metrics: &mut Vec<(String, f64)>| -> Result<()> {
        if valid.is_empty() {
            return Ok(());
        }
        let (acc, rank, loss) = validate_on(&q, &p, &pool, &valid, pooling, cfg.batch_size, seed)?;
        metrics.extend([("eval/acc@1".to_string(), acc), ("eval/mean_rank".to_string(), rank), ("eval/loss".to_string(), loss)]);
        let better = match state.best {
            None => true,
            Some((a, r, _)) => acc > a || (acc == a && rank < r),
        };
        if better || !best_dir.exists() {
            save_pair(&best_dir, &q, &p)?;
            state.best = Some((acc, rank, state.step));
        }
        Ok(())
    };
    if state.step == 0 {
        let mut m = Vec::new();
        evaluate(&mut state, &mut m)?;
        if !m.is_empty() {
            ctx.events.metrics(0, m);
        }
    }
    while state.step < cfg.steps {
        run.poll(ctx, &state, &[("params", &opt)])?;
        let started = Instant::now();
        let batch: Vec<&Scored> = (0..cfg.batch_size)
            .map(|_| {
                let (_, i) = crate::train::data::stream_position(seed, state.examples_seen, train_set.len());
                state.examples_seen += 1;
                &train_set[i]
            })
            .collect();
        let mut rng = Rng::derive(seed, &format!("shuffle/{}", state.step));
        let (loss, rows, pos) = batch_forward(&q, &p, &pool, &batch, pooling, &mut rng)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(run.non_finite("loss", value, state.step + 1));
        }
        opt.accumulate(&loss.backward()?)?;
        let lr = schedule.lr(state.step);
        let report = run.apply_update(ctx, &mut opt, lr, cfg.max_grad_norm, state.step + 1)?;
        state.step += 1;
        state.last_loss = value;
        let (acc, rank) = acc_and_mean_rank(&ranks(&rows, &pos));
        let dt = started.elapsed().as_secs_f64();
        let mut metrics: Vec<(String, f64)> = vec![
            ("loss".into(), value),
            ("acc@1".into(), acc),
            ("mean_rank".into(), rank),
            ("contexts".into(), rows.first().map_or(0, Vec::len) as f64),
            ("lr".into(), lr),
            ("grad_norm".into(), report.grad_norm),
            ("step_time_s".into(), dt),
        ];
        if (cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || state.step == cfg.steps {
            evaluate(&mut state, &mut metrics)?;
        }
        ctx.events.metrics(state.step, metrics);
        run.progress(ctx, state.step, None);
        run.after_step(ctx, &state, &[("params", &opt)])?;
    }
    run.save(ctx, &state, &[("params", &opt)])?;
    // No validation split: the last weights are the result.
    if valid.is_empty() {
        save_pair(&best_dir, &q, &p)?;
    }
    let out = write_retriever(&ctx.dir, &best_dir, &data, pooling, cfg.max_len, &device, cfg.batch_size * 4)?;
    let mut summary: BTreeMap<String, f64> = BTreeMap::new();
    summary.insert("loss".into(), state.last_loss);
    if let Some((acc, rank, step)) = state.best {
        ctx.events.info(format!("best validation accuracy@1 {acc:.3} (mean rank {rank:.2}) at step {step}"));
        summary.insert("valid/acc@1".into(), acc);
        summary.insert("valid/mean_rank".into(), rank);
        summary.insert("best_step".into(), step as f64);
    }
    Ok(StageOutput { output: Some(out), summary, table: None })
}

/// `<stage>/retriever`: the best encoders, the pool, its index and `retriever.json`, written
/// into a hidden sibling and renamed into place.
fn write_retriever(stage_dir: &Path, best: &Path, data: &Path, pooling: Pooling, max_len: usize, device: &candle_core::Device, batch: usize) -> Result<PathBuf> {
    let out = stage_dir.join("retriever");
    let tmp = stage_dir.join(".retriever.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| -> Result<()> {
        crate::fsutil::ensure_dir(&tmp)?;
        for name in ["query", "prompt"] {
            copy_dir(&best.join(name), &tmp.join(name))?;
        }
        std::fs::copy(data.join("pool.jsonl"), tmp.join("pool.jsonl"))?;
        let pool = read_rows(&tmp.join("pool.jsonl"))?;
        let prompt = Side::load(&tmp.join("prompt"), device, false, max_len)?;
        build_index(&prompt, &pool, pooling, batch)?.save(&tmp.join("index.safetensors"))?;
        let meta = RetrieverMeta { pooling: pooling.as_str().into(), max_len };
        crate::fsutil::write_atomic(&tmp.join("retriever.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
        crate::fsutil::replace_dir(&tmp, &out)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("cannot write the retriever {}", out.display())));
    }
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    crate::fsutil::ensure_dir(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
