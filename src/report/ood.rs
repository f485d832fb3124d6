//! The diffusion-OOD plots of `retort report`:
//! - `recon-<stage>.png`: a `denoise` stage's held-out reconstruction loss per set
//!   (`eval/recon/id/*`, `eval/recon/ood/*`) against the step: ID falling while OOD rises is
//!   the paper's "diffusion degrades OOD reconstruction";
//! - `recon_t-<stage>.png`: an eval stage's mean reconstruction loss per set (and model)
//!   against t, for an `ood` table with several t;
//! - `ood_hist-<stage>-<model>-t<t>.png`: the score histograms of each set at each t,
//!   overlaid, from the stage's `scores-<model>.jsonl`.

use super::{bar_chart, line_chart, safe_name, Bars, Chart, Palette, Series, StageView};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Histogram bins for the score plots.
const BINS: usize = 30;

pub(super) fn plots(run_dir: &Path, stages: &[(String, StageView)], out_dir: &Path, palette: &Palette, images: &mut Vec<(String, String)>) -> Result<()> {
    for (stage, view) in stages {
        match view.kind.as_str() {
            "denoise" => {
                let series: Vec<Series> = view
                    .metrics
                    .iter()
                    .filter_map(|(m, p)| m.strip_prefix("eval/recon/").map(|set| Series { name: set.to_string(), points: p.clone() }))
                    .collect();
                if series.is_empty() {
                    continue;
                }
                let file = format!("recon-{}.png", safe_name(stage));
                let title = format!("held-out reconstruction loss vs step ({stage})");
                line_chart(&out_dir.join(&file), &Chart { title: &title, x_label: "step", y_label: "L_round", series: &series, log2_x: false, palette })?;
                images.push((title, file));
            }
            "eval" => {
                // An eval stage with an `ood` table leaves one score dump per model.
                let dir = run_dir.join(stage);
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut dumps: Vec<(String, std::path::PathBuf)> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter_map(|p| {
                        let name = p.file_name()?.to_str()?;
                        let label = name.strip_prefix("scores-")?.strip_suffix(".jsonl")?.to_string();
                        Some((label, p))
                    })
                    .collect();
                dumps.sort();
                let mut recon_series = Vec::new();
                for (label, path) in &dumps {
                    let scores = ScoreDump::parse(&std::fs::read_to_string(path)?);
                    let tag = format!("{}-{}", safe_name(stage), safe_name(label));
                    histograms(&scores, &tag, &format!("{stage}, {label}"), out_dir, images)?;
                    if scores.by_t.len() > 1 {
                        let prefix = if dumps.len() > 1 { format!("{label} ") } else { String::new() };
                        recon_series.extend(scores.recon_series(&prefix));
                    }
                }
                if !recon_series.is_empty() {
                    let file = format!("recon_t-{}.png", safe_name(stage));
                    let title = format!("mean reconstruction loss vs t ({stage})");
                    line_chart(&out_dir.join(&file), &Chart { title: &title, x_label: "t", y_label: "L_round", series: &recon_series, log2_x: false, palette })?;
                    images.push((title, file));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A score dump (`scores-<model>.jsonl`) grouped: t → set → scores, and set → t → mean
/// reconstruction loss. The set is the id's prefix (`<set>:<line>`).
#[derive(Default)]
struct ScoreDump {
    by_t: BTreeMap<u64, BTreeMap<String, Vec<f64>>>,
    recon: BTreeMap<String, BTreeMap<u64, (f64, usize)>>,
}

impl ScoreDump {
    fn parse(text: &str) -> ScoreDump {
        let mut d = ScoreDump::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let (Some(id), Some(t), Some(score), Some(r)) = (v["id"].as_str(), v["t"].as_u64(), v["score"].as_f64(), v["recon_loss"].as_f64()) else {
                continue;
            };
            let set = id.rsplit_once(':').map_or(id, |(s, _)| s).to_string();
            d.by_t.entry(t).or_default().entry(set.clone()).or_default().push(score);
            let e = d.recon.entry(set).or_default().entry(t).or_insert((0.0, 0));
            e.0 += r;
            e.1 += 1;
        }
        d
    }

    /// Mean reconstruction loss per set against t, each series named `<prefix><set>`.
    fn recon_series(&self, prefix: &str) -> Vec<Series> {
        self.recon
            .iter()
            .map(|(set, ts)| Series { name: format!("{prefix}{set}"), points: ts.iter().map(|(&t, &(s, n))| (t as f64, s / n as f64)).collect() })
            .collect()
    }
}

/// The score histograms of each set at each t, overlaid: `ood_hist-<tag>-t<t>.png`.
fn histograms(d: &ScoreDump, tag: &str, what: &str, out_dir: &Path, images: &mut Vec<(String, String)>) -> Result<()> {
    for (t, sets) in &d.by_t {
        let (lo, hi) = sets.values().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        if !(lo.is_finite() && hi > lo) {
            continue;
        }
        let width = (hi - lo) / BINS as f64;
        let edges: Vec<f64> = (0..=BINS).map(|i| lo + i as f64 * width).collect();
        let series = sets
            .iter()
            .map(|(set, scores)| {
                let mut counts = vec![0.0; BINS];
                for &x in scores {
                    counts[(((x - lo) / width) as usize).min(BINS - 1)] += 100.0 / scores.len() as f64;
                }
                (set.clone(), counts)
            })
            .collect();
        let file = format!("ood_hist-{tag}-t{t}.png");
        let title = format!("OOD scores at t = {t} ({what})");
        bar_chart(&out_dir.join(&file), &Bars { title: &title, x_label: "score", y_label: "% of the set", edges: &edges, series, grouped: false })?;
        images.push((title, file));
    }
    Ok(())
}
