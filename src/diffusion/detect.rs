//! OOD detection end to end (research/synth-spec.md §5.4): score an ID test set and OOD sets
//! with a diffusion-fine-tuned encoder at one or more timesteps, optionally mix in the
//! Mahalanobis distance fitted on ID training texts, and report AUROC and FPR95 per
//! (ID, OOD, t), with a JSONL dump of every score (§5.7). `retort ood` and the eval stage's
//! `ood` table both run [`detect`].

use super::score::{score_rows, ScoreOptions, Scored, TextSet};
use super::NoiseSchedule;
use crate::metrics::ood::{auroc, fpr_at_95_tpr, mixed_score, Mahalanobis};
use crate::model::encoder::EncoderModel;
use crate::text::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to score.
#[derive(Clone, Debug)]
pub struct DetectRequest {
    pub model: PathBuf,
    pub id: PathBuf,
    pub ood: Vec<PathBuf>,
    pub ts: Vec<usize>,
    /// `Some((λ, ID training texts))`: score = λ · recon + (1 − λ) · maha.
    pub maha: Option<(f64, PathBuf)>,
    pub batch_size: usize,
    /// The seed of the noise draws (the paper's global seed is 42).
    pub seed: u64,
    /// Cut texts longer than the position table instead of refusing them.
    pub truncate: bool,
}

/// One (ID, OOD, t) comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairResult {
    pub id: String,
    pub ood: String,
    pub t: usize,
    pub auroc: f64,
    pub fpr95: f64,
    /// Mean reconstruction loss of each side.
    pub id_recon: f64,
    pub ood_recon: f64,
}

/// One line of the score dump.
#[derive(Clone, Debug, Serialize)]
pub struct ScoreRow {
    /// `<set>:<line>`.
    pub id: String,
    pub source: String,
    pub ood: u8,
    pub t: usize,
    pub recon_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maha: Option<f64>,
    pub score: f64,
}

pub struct DetectReport {
    pub pairs: Vec<PairResult>,
    pub rows: Vec<ScoreRow>,
    pub texts_scored: usize,
    pub seconds: f64,
}

impl DetectReport {
    /// Texts scored per second (every t counted).
    pub fn texts_per_s(&self) -> f64 {
        self.texts_scored as f64 / self.seconds.max(1e-9)
    }

    /// The table: one line per pair and t, with the means per t.
    pub fn table(&self) -> String {
        let mut out = format!("{:<18} {:<18} {:>5} {:>8} {:>8} {:>10} {:>10}\n", "ID", "OOD", "t", "AUROC", "FPR95", "ID recon", "OOD recon");
        for p in &self.pairs {
            out.push_str(&format!(
                "{:<18} {:<18} {:>5} {:>8.4} {:>8.4} {:>10.4} {:>10.4}\n",
                p.id, p.ood, p.t, p.auroc, p.fpr95, p.id_recon, p.ood_recon
            ));
        }
        out
    }

    /// JSONL of [`ScoreRow`]s, written atomically.
    pub fn write_dump(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for r in &self.rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        crate::fsutil::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
    }
}

struct Loaded {
    set: TextSet,
    rows: Vec<Vec<u32>>,
}

fn load(path: &Path, tok: &Tokenizer, max_tokens: usize, truncate: bool, what: &str) -> Result<Loaded> {
    let set = TextSet::read(path).with_context(|| format!("the {what} set"))?;
    let rows = set.tokenize(tok, max_tokens, truncate)?;
    Ok(Loaded { set, rows })
}

pub fn detect(req: &DetectRequest, device: &Device, progress: &mut dyn FnMut(&str)) -> Result<DetectReport> {
    if req.ood.is_empty() {
        bail!("no OOD set: give at least one --ood FILE (AUROC needs both classes)");
    }
    if req.ts.is_empty() {
        bail!("no timestep: give at least one --t");
    }
    let model = EncoderModel::load(&req.model, device, DType::F32, false).with_context(|| format!("model {}", req.model.display()))?;
    if !model.layout.heads.mlm {
        bail!("{}: the encoder has no masked-LM head; the reconstruction loss needs it (a denoise stage's output has one)", req.model.display());
    }
    let schedule = NoiseSchedule::paper();
    for &t in &req.ts {
        schedule.check(t).with_context(|| format!("--t {t}"))?;
    }
    let tok = Tokenizer::load(&req.model)?;
    let max_tokens = model.config.max_tokens();
    let pad = model.config.pad_token_id;
    let id = load(&req.id, &tok, max_tokens, req.truncate, "ID")?;
    let oods = req.ood.iter().map(|p| load(p, &tok, max_tokens, req.truncate, "OOD")).collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut scored_count = 0;
    let mut pairs = Vec::new();
    let mut rows = Vec::new();
    for &t in &req.ts {
        let opts = ScoreOptions { t, batch_size: req.batch_size, seed: req.seed, features: req.maha.is_some() };
        let maha = match &req.maha {
            None => None,
            Some((_, train)) => {
                progress(&format!("t = {t}: fitting the Mahalanobis bank on {}", train.display()));
                let bank = load(train, &tok, max_tokens, true, "ID training")?;
                let feats = score_rows(&model.encoder, &schedule, &bank.rows, pad, "maha-bank", &opts)?;
                scored_count += feats.len();
                Some(Mahalanobis::fit(&feats.into_iter().filter_map(|s| s.feature).collect::<Vec<_>>())?)
            }
        };
        let lambda = req.maha.as_ref().map(|(l, _)| *l);
        // A set's scores and its mean reconstruction loss.
        let mut score_set = |l: &Loaded, ood: u8| -> Result<(Vec<f64>, f64)> {
            progress(&format!("t = {t}: scoring {} ({} texts)", l.set.name, l.rows.len()));
            let scored: Vec<Scored> = score_rows(&model.encoder, &schedule, &l.rows, pad, &l.set.name, &opts)?;
            scored_count += scored.len();
            let mut out = Vec::with_capacity(scored.len());
            for (row, s) in l.set.rows.iter().zip(&scored) {
                let m = match (&maha, &s.feature) {
                    (Some(m), Some(f)) => Some(m.distance(f)),
                    _ => None,
                };
                let score = match (lambda, m) {
                    (Some(lam), Some(m)) => mixed_score(s.recon, m, lam),
                    _ => s.recon,
                };
                rows.push(ScoreRow {
                    id: format!("{}:{}", l.set.name, row.line),
                    source: row.source.clone().unwrap_or_else(|| l.set.name.clone()),
                    ood,
                    t,
                    recon_loss: s.recon,
                    maha: m,
                    score,
                });
                out.push(score);
            }
            let mean = scored.iter().map(|s| s.recon).sum::<f64>() / scored.len().max(1) as f64;
            Ok((out, mean))
        };
        let (id_scores, id_recon) = score_set(&id, 0)?;
        for o in &oods {
            let (ood_scores, ood_recon) = score_set(o, 1)?;
            pairs.push(PairResult {
                id: id.set.name.clone(),
                ood: o.set.name.clone(),
                t,
                auroc: auroc(&id_scores, &ood_scores).with_context(|| format!("{} vs {}", id.set.name, o.set.name))?,
                fpr95: fpr_at_95_tpr(&id_scores, &ood_scores)?,
                id_recon,
                ood_recon,
            });
        }
    }
    Ok(DetectReport { pairs, rows, texts_scored: scored_count, seconds: started.elapsed().as_secs_f64() })
}
