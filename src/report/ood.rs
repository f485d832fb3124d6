//! The diffusion-OOD plots of `retort report`:
//! - `recon-<stage>.png`: a `denoise` stage's held-out reconstruction loss per set
//!   (`eval/recon/id/*`, `eval/recon/ood/*`) against the step: ID falling while OOD rises is
//!   the paper's "diffusion degrades OOD reconstruction";
//! - `recon_t-<stage>.png`: an `ood` stage's mean reconstruction loss per set against t;
//! - `ood_hist-<stage>-t<t>.png`: the score histograms of each set at each t, overlaid, from
//!   the stage's `scores.jsonl`.

use super::{bar_chart, line_chart, safe_name, Bars, Chart, Series, StageView};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Histogram bins for the score plots.
const BINS: usize = 30;

pub(super) fn plots(run_dir: &Path, stages: &[(String, StageView)], out_dir: &Path, images: &mut Vec<(String, String)>, notes: &mut Vec<String>) -> Result<()> {
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
                line_chart(&out_dir.join(&file), &Chart { title: &title, x_label: "step", y_label: "L_round", series: &series, log2_x: false })?;
                images.push((title, file));
            }
            "ood" => {
                let path = run_dir.join(stage).join("scores.jsonl");
                let Ok(text) = std::fs::read_to_string(&path) else {
                    notes.push(format!("{}: missing, so no OOD score plots for stage {stage}", path.display()));
                    continue;
                };
                // t → set → scores; the set is the id's prefix (`<set>:<line>`).
                let mut by_t: BTreeMap<u64, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
                let mut recon: BTreeMap<String, BTreeMap<u64, (f64, usize)>> = BTreeMap::new();
                for line in text.lines() {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                    let (Some(id), Some(t), Some(score), Some(r)) = (v["id"].as_str(), v["t"].as_u64(), v["score"].as_f64(), v["recon_loss"].as_f64()) else {
                        continue;
                    };
                    let set = id.rsplit_once(':').map_or(id, |(s, _)| s).to_string();
                    by_t.entry(t).or_default().entry(set.clone()).or_default().push(score);
                    let e = recon.entry(set).or_default().entry(t).or_insert((0.0, 0));
                    e.0 += r;
                    e.1 += 1;
                }
                for (t, sets) in &by_t {
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
                    let file = format!("ood_hist-{}-t{t}.png", safe_name(stage));
                    let title = format!("OOD scores at t = {t} ({stage})");
                    bar_chart(&out_dir.join(&file), &Bars { title: &title, x_label: "score", y_label: "% of the set", edges: &edges, series, grouped: false })?;
                    images.push((title, file));
                }
                let series: Vec<Series> = recon
                    .into_iter()
                    .map(|(set, ts)| Series { name: set, points: ts.into_iter().map(|(t, (s, n))| (t as f64, s / n as f64)).collect() })
                    .collect();
                if by_t.len() > 1 {
                    let file = format!("recon_t-{}.png", safe_name(stage));
                    let title = format!("mean reconstruction loss vs t ({stage})");
                    line_chart(&out_dir.join(&file), &Chart { title: &title, x_label: "t", y_label: "L_round", series: &series, log2_x: false })?;
                    images.push((title, file));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
