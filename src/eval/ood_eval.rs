//! The eval stage's `ood` table: reconstruction-based OOD detection (research/synth-spec.md
//! §5.4) of each of the stage's models, the stage form of `retort ood`. With several models
//! (the MLM encoder before diffusion fine-tuning and the fine-tuned one, say) the table and
//! the plots put them side by side.
//!
//! ```toml
//! [[stage]]
//! kind = "eval"
//! name = "ood"
//! models = ["@pretrain", "@diffuse"]      # encoders with their MLM head
//! [stage.ood]
//! id = "@data/recipes_test.jsonl"           # ID test texts, JSONL {"text", "source"?}
//! ood = ["@data/legal.jsonl", "@data/captions.jsonl"]
//! t = [300, 500, 600, 700]                  # default [600]
//! # maha = 0.99, id_train = "@data/recipes_train.jsonl"   # the diffusion + Maha variant
//! # batch_size = 32, noise_seed = 42, truncate = false
//! ```
//!
//! Per model: `scores-<model>.jsonl` (every score, §5.7), an [`OodResult`] in the stage's
//! `results.json`, and metrics with the timestep as the step (`ood/auroc/<set>`,
//! `ood/fpr95/<set>`, `ood/recon/<set>`; prefixed `<model>/` when there are several), so the
//! dashboard and `retort report` plot them over t.

use crate::diffusion::detect::{detect, DetectRequest, PairResult};
use crate::stage::{refs, Artifact, Reference, StageCtx};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodEval {
    /// ID test texts (JSONL {"text", "source"?}).
    pub id: String,
    /// OOD sets, each compared with `id`.
    pub ood: Vec<String>,
    #[serde(default = "d_t")]
    pub t: Vec<usize>,
    /// λ of the diffusion + Mahalanobis score (the paper: 0.99); needs `id_train`.
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
    /// Cut texts longer than the position table instead of refusing them.
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

/// One model's OOD result in the eval stage's `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OodResult {
    pub label: String,
    pub model: String,
    pub pairs: Vec<PairResult>,
    pub texts_scored: usize,
    pub seconds: f64,
    pub texts_per_s: f64,
}

/// The score dump of one model in the stage folder.
pub fn scores_file(label: &str) -> String {
    format!("scores-{label}.jsonl")
}

impl OodEval {
    pub fn references(&self) -> Vec<Reference> {
        let mut r = refs(
            Artifact::Text,
            [
                ("ood.id", Some(self.id.as_str())),
                ("ood.id_train", self.id_train.as_deref()),
            ],
        );
        r.extend(refs(
            Artifact::Text,
            self.ood.iter().map(|s| ("ood.ood", Some(s.as_str()))),
        ));
        r
    }

    /// Errors name the key as `ood.<key>`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("ood.{k}"), m.to_string()));
        if self.ood.is_empty() {
            return err(
                "ood",
                "give at least one OOD set (AUROC needs both classes)",
            );
        }
        if self.t.is_empty() || self.t.iter().any(|&t| t >= 1000) {
            return err("t", "give timesteps in 0..999");
        }
        if let Some(l) = self.maha {
            if !(0.0..=1.0).contains(&l) {
                return err("maha", "λ must be in [0, 1] (the paper: 0.99)");
            }
            if self.id_train.is_none() {
                return err("id_train", "`maha` needs `id_train`, the ID training texts to fit the mean and covariance on");
            }
        }
        if self.batch_size == 0 {
            return err("batch_size", "must be at least 1");
        }
        Ok(())
    }

    /// The text files given outside the run (not `@stage` outputs), read now so that a bad
    /// file stops the run before any stage works.
    pub fn preflight(&self) -> Result<()> {
        let outside = [Some(&self.id), self.id_train.as_ref()]
            .into_iter()
            .flatten()
            .chain(&self.ood)
            .filter(|f| !f.starts_with('@'));
        for f in outside {
            crate::diffusion::score::TextSet::read(Path::new(f))?;
        }
        Ok(())
    }

    fn request(
        &self,
        model: PathBuf,
        resolve: &dyn Fn(&str) -> Result<PathBuf>,
    ) -> Result<DetectRequest> {
        Ok(DetectRequest {
            model,
            id: resolve(&self.id)?,
            ood: self.ood.iter().map(|o| resolve(o)).collect::<Result<_>>()?,
            ts: self.t.clone(),
            maha: match (self.maha, &self.id_train) {
                (Some(l), Some(f)) => Some((l, resolve(f)?)),
                _ => None,
            },
            batch_size: self.batch_size,
            seed: self.noise_seed,
            truncate: self.truncate,
        })
    }

    /// Scores one model: writes its score dump, sends its metrics (step = t, keys prefixed with
    /// `prefix`) and returns its result.
    pub fn score_model(
        &self,
        ctx: &mut StageCtx,
        label: &str,
        reference: &str,
        dir: &Path,
        prefix: &str,
    ) -> Result<OodResult> {
        let req = self.request(dir.to_path_buf(), &|r| ctx.resolve(r))?;
        let events = ctx.events.clone();
        let report = detect(&req, &ctx.device, &mut |m| {
            events.info(format!("{label}: {m}"))
        })?;
        std::fs::create_dir_all(&ctx.dir)?;
        report.write_dump(&ctx.dir.join(scores_file(label)))?;
        for &t in &self.t {
            let values: Vec<(String, f64)> = report
                .pairs
                .iter()
                .filter(|p| p.t == t)
                .flat_map(|p| {
                    [
                        (format!("{prefix}ood/auroc/{}", p.ood), p.auroc),
                        (format!("{prefix}ood/fpr95/{}", p.ood), p.fpr95),
                        (format!("{prefix}ood/recon/{}", p.ood), p.ood_recon),
                        (format!("{prefix}ood/recon/{}", p.id), p.id_recon),
                    ]
                })
                .collect();
            ctx.events.metrics(t as u64, values);
        }
        ctx.events.info(format!(
            "{label}: {} texts scored in {:.1} s ({:.0} texts/s)",
            report.texts_scored,
            report.seconds,
            report.texts_per_s()
        ));
        Ok(OodResult {
            label: label.to_string(),
            model: reference.to_string(),
            texts_per_s: report.texts_per_s(),
            pairs: report.pairs,
            texts_scored: report.texts_scored,
            seconds: report.seconds,
        })
    }
}

/// The stage summary's entries of one model: the mean AUROC and FPR95 over the OOD sets at
/// each t (`auroc/mean/t<t>`, `fpr95/mean/t<t>`, as the paper averages over its OOD sets), and
/// the scoring rate. Every pair is in `results.json` and the table.
pub fn headline(r: &OodResult) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    for p in &r.pairs {
        let e = sums.entry(p.t).or_default();
        e.0 += p.auroc;
        e.1 += p.fpr95;
        e.2 += 1;
    }
    let mut out = BTreeMap::new();
    for (t, (auroc, fpr, n)) in sums {
        out.insert(format!("auroc/mean/t{t}"), auroc / n as f64);
        out.insert(format!("fpr95/mean/t{t}"), fpr / n as f64);
    }
    out.insert("texts_per_s".into(), r.texts_per_s);
    out
}

/// One line per model, pair and t (the model column only when there are several).
pub fn table(results: &[OodResult]) -> String {
    let several = results.len() > 1;
    let mut out = String::new();
    if several {
        out.push_str(&format!("{:<12} ", "model"));
    }
    out.push_str(&format!(
        "{:<16} {:<16} {:>5} {:>8} {:>8} {:>10} {:>10}\n",
        "ID", "OOD", "t", "AUROC", "FPR95", "ID recon", "OOD recon"
    ));
    for r in results {
        for p in &r.pairs {
            if several {
                out.push_str(&format!("{:<12} ", r.label));
            }
            out.push_str(&format!(
                "{:<16} {:<16} {:>5} {:>8.4} {:>8.4} {:>10.4} {:>10.4}\n",
                p.id, p.ood, p.t, p.auroc, p.fpr95, p.id_recon, p.ood_recon
            ));
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> OodEval {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn validation_names_the_key_under_ood() {
        let ok = parse("id = \"a.jsonl\"\nood = [\"b.jsonl\"]");
        assert_eq!(ok.t, vec![600]);
        assert!(ok.validate().is_ok());
        assert_eq!(
            parse("id = \"a.jsonl\"\nood = []")
                .validate()
                .unwrap_err()
                .0,
            "ood.ood"
        );
        assert_eq!(
            parse("id = \"a.jsonl\"\nood = [\"b\"]\nt = [1000]")
                .validate()
                .unwrap_err()
                .0,
            "ood.t"
        );
        let (key, msg) = parse("id = \"a.jsonl\"\nood = [\"b\"]\nmaha = 0.99")
            .validate()
            .unwrap_err();
        assert_eq!(key, "ood.id_train");
        assert!(
            msg.contains("Mahalanobis") || msg.contains("mean and covariance"),
            "{msg}"
        );
        assert_eq!(
            parse("id = \"a\"\nood = [\"b\"]\nmaha = 1.5\nid_train = \"c\"")
                .validate()
                .unwrap_err()
                .0,
            "ood.maha"
        );
        assert!(
            toml::from_str::<OodEval>("id = \"a\"\nood = [\"b\"]\nlambda = 0.9").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn references_are_the_at_stage_files() {
        let e = parse("id = \"@data/a.jsonl\"\nood = [\"@data/b.jsonl\", \"c.jsonl\"]\nid_train = \"@data/t.jsonl\"\nmaha = 0.99");
        let refs = e.references();
        let r: Vec<(&str, &str)> = refs.iter().map(|r| (r.key, r.value.as_str())).collect();
        assert_eq!(
            r,
            vec![
                ("ood.id", "@data/a.jsonl"),
                ("ood.id_train", "@data/t.jsonl"),
                ("ood.ood", "@data/b.jsonl")
            ]
        );
    }

    #[test]
    fn the_table_has_a_model_column_only_for_several_models() {
        let pair = PairResult {
            id: "recipes".into(),
            ood: "legal".into(),
            t: 600,
            auroc: 0.75,
            fpr95: 0.5,
            id_recon: 3.0,
            ood_recon: 9.0,
        };
        let r = |label: &str| OodResult {
            label: label.into(),
            model: format!("@{label}"),
            pairs: vec![pair.clone()],
            texts_scored: 2,
            seconds: 1.0,
            texts_per_s: 2.0,
        };
        let one = table(&[r("after")]);
        assert!(
            !one.contains("model") && one.contains("0.7500") && one.contains("legal"),
            "{one}"
        );
        let two = table(&[r("before"), r("after")]);
        assert!(
            two.lines().next().unwrap().starts_with("model")
                && two.contains("before")
                && two.contains("after"),
            "{two}"
        );
        let mut two_sets = r("x");
        two_sets.pairs.push(PairResult {
            ood: "menus".into(),
            auroc: 0.25,
            fpr95: 1.0,
            ..pair.clone()
        });
        let h = headline(&two_sets);
        assert_eq!((h["auroc/mean/t600"], h["fpr95/mean/t600"]), (0.5, 0.75));
    }
}
