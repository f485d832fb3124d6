//! Stage `kind = "ood"`: reconstruction-based OOD detection of one model (research/synth-spec.md
//! §5.4), the stage form of `retort ood`. Writes `results.json` (AUROC, FPR95 and the mean ID
//! and OOD reconstruction loss per pair and t) and `scores.jsonl` (every score, §5.7), sends
//! each pair as metrics (`ood/auroc/<ood>/t<t>`, …) and ends with the table.
//!
//! ```toml
//! [[stage]]
//! kind = "ood"
//! model = "@diffuse"
//! id = "@data/recipes_test.jsonl"
//! ood = ["@data/legal.jsonl", "@data/captions.jsonl"]
//! t = [300, 500, 600, 700]
//! # maha = 0.99, id_train = "@data/recipes_train.jsonl"   # the diffusion + Maha variant
//! ```

use crate::diffusion::detect::{detect, DetectRequest};
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodStage {
    pub model: String,
    /// ID test texts (JSONL {"text", "source"?}).
    pub id: String,
    pub ood: Vec<String>,
    #[serde(default = "d_t")]
    pub t: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_train: Option<String>,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// The noise seed (the paper's scripts: 42); not the run's seed, so that models trained
    /// with different seeds are scored with the same noise.
    #[serde(default = "d_seed")]
    pub noise_seed: u64,
    #[serde(default)]
    pub truncate: bool,
}

fn d_t() -> Vec<usize> {
    vec![600]
}
fn d_batch() -> usize {
    32
}
fn d_seed() -> u64 {
    42
}

impl StageConfig for OodStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, [("model", Some(self.model.as_str()))]);
        r.extend(refs(Artifact::Text, [("id", Some(self.id.as_str())), ("id_train", self.id_train.as_deref())]));
        r.extend(refs(Artifact::Text, self.ood.iter().map(|s| ("ood", Some(s.as_str())))));
        r
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Results)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.ood.is_empty() {
            return Err(("ood".into(), "give at least one OOD set (AUROC needs both classes)".into()));
        }
        if self.t.is_empty() || self.t.iter().any(|&t| t >= 1000) {
            return Err(("t".into(), "give timesteps in 0..999".into()));
        }
        if let Some(l) = self.maha {
            if !(0.0..=1.0).contains(&l) {
                return Err(("maha".into(), "λ must be in [0, 1] (the paper: 0.99)".into()));
            }
            if self.id_train.is_none() {
                return Err(("id_train".into(), "`maha` needs `id_train`, the ID training texts to fit the mean and covariance on".into()));
            }
        }
        if self.batch_size == 0 {
            return Err(("batch_size".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(self.t.len() as u64), "t")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        let req = DetectRequest {
            model: ctx.resolve(&self.model)?,
            id: ctx.resolve(&self.id)?,
            ood: self.ood.iter().map(|o| ctx.resolve(o)).collect::<Result<_>>()?,
            ts: self.t.clone(),
            maha: match (self.maha, &self.id_train) {
                (Some(l), Some(f)) => Some((l, ctx.resolve(f)?)),
                _ => None,
            },
            batch_size: self.batch_size,
            seed: self.noise_seed,
            truncate: self.truncate,
        };
        let events = ctx.events.clone();
        let report = detect(&req, &ctx.device, &mut |m| events.info(m))?;
        std::fs::create_dir_all(&ctx.dir)?;
        report.write_dump(&ctx.dir.join("scores.jsonl"))?;
        let results = serde_json::json!({"pairs": report.pairs, "texts_scored": report.texts_scored, "seconds": report.seconds,
                                         "texts_per_s": report.texts_per_s()});
        crate::fsutil::write_atomic(&ctx.dir.join("results.json"), serde_json::to_string_pretty(&results)?.as_bytes())
            .context("cannot write results.json")?;
        let mut summary = BTreeMap::new();
        for (i, &t) in self.t.iter().enumerate() {
            let values: Vec<(String, f64)> = report
                .pairs
                .iter()
                .filter(|p| p.t == t)
                .flat_map(|p| {
                    [
                        (format!("ood/auroc/{}", p.ood), p.auroc),
                        (format!("ood/fpr95/{}", p.ood), p.fpr95),
                        (format!("ood/recon/{}", p.ood), p.ood_recon),
                        (format!("ood/recon/{}", p.id), p.id_recon),
                    ]
                })
                .collect();
            // Metrics "steps" are the timesteps, so the dashboard and report plot over t.
            ctx.events.metrics(t as u64, values);
            ctx.events.progress(i as u64 + 1, Some(self.t.len() as u64), "t", None);
        }
        for p in &report.pairs {
            summary.insert(format!("auroc/{}/t{}", p.ood, p.t), p.auroc);
            summary.insert(format!("fpr95/{}/t{}", p.ood, p.t), p.fpr95);
        }
        summary.insert("texts_per_s".into(), report.texts_per_s());
        Ok(StageOutput { output: Some(ctx.dir.clone()), summary, table: Some(report.table()) })
    }
}
