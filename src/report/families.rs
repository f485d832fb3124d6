//! Which chart a metric goes to, by exact names and prefixes (never by a word anywhere in the
//! name: `timing/reward` is seconds, not a reward), and how a run's metrics become panels:
//! one panel per metric, one series per stage that logged it, a `…/mean` metric with `…/min`
//! and `…/max` companions drawn as its mean over a min–max band.

use std::collections::BTreeMap;

/// A chart of small multiples: the PNG `<file>.png`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Loss,
    Reward,
    Eval,
    Entropy,
    Diversity,
    Length,
    Policy,
    Optimizer,
    Timing,
    /// An eval stage's OOD detection per model, set and noise level: `<model>/ood/<what>/<set>`
    /// logged at step = t.
    Ood,
    Other,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Loss,
        Family::Reward,
        Family::Eval,
        Family::Entropy,
        Family::Diversity,
        Family::Length,
        Family::Policy,
        Family::Optimizer,
        Family::Timing,
        Family::Ood,
        Family::Other,
    ];

    /// What the x axis is: the training step, or t for the OOD scores.
    pub fn x(self) -> &'static str {
        match self {
            Family::Ood => "noise level t",
            _ => "step",
        }
    }

    pub fn file(self) -> &'static str {
        match self {
            Family::Loss => "loss",
            Family::Reward => "reward",
            Family::Eval => "eval",
            Family::Entropy => "entropy",
            Family::Diversity => "diversity",
            Family::Length => "length",
            Family::Policy => "policy",
            Family::Optimizer => "optimizer",
            Family::Timing => "timing",
            Family::Ood => "ood",
            Family::Other => "other",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Family::Loss => "Losses",
            Family::Reward => "Reward and accuracy of the rollouts",
            Family::Eval => "Evaluations during training",
            Family::Entropy => "Token entropy (nats)",
            Family::Diversity => "Diversity of the rollouts",
            Family::Length => "Response length (tokens)",
            Family::Policy => "Policy update: KL, clipping, advantages, critic",
            Family::Optimizer => "Optimizer: learning rate, gradient norm",
            Family::Timing => "Timing (seconds) and throughput",
            Family::Ood => "OOD detection (AUROC, FPR95, reconstruction loss)",
            Family::Other => "Other metrics",
        }
    }
}

/// The family of a logged metric, or `None` for one another plot draws (a denoise stage's
/// held-out reconstruction losses, `eval/recon/…`, have their own chart).
pub fn family_of(metric: &str) -> Option<Family> {
    let prefixed = |ps: &[&str]| ps.iter().any(|p| metric.starts_with(p));
    let exact = |ns: &[&str]| ns.contains(&metric);
    Some(if prefixed(&["timing/"]) || exact(&["step_time_s", "tokens_per_s", "samples_per_s"]) {
        Family::Timing
    } else if prefixed(&["eval/recon/"]) {
        return None;
    } else if prefixed(&["eval/"]) || exact(&["eval_loss"]) {
        Family::Eval
    } else if exact(&["loss", "actor/loss", "actor/pg_loss", "actor/tb_loss", "actor/kl_loss", "critic/vf_loss"]) || prefixed(&["loss/"]) {
        Family::Loss
    } else if exact(&["critic/accuracy", "frac_all_same_groups"]) || prefixed(&["critic/score/", "critic/returns/", "tools/"]) {
        Family::Reward
    } else if prefixed(&["actor/entropy", "entropy/"]) {
        Family::Entropy
    } else if prefixed(&["diversity/", "rbf/"]) {
        Family::Diversity
    } else if prefixed(&["response_length/"]) {
        Family::Length
    } else if exact(&["lr", "grad_norm", "actor/lr", "actor/grad_norm", "critic/grad_norm", "actor/kl_coef"]) {
        Family::Optimizer
    } else if prefixed(&["actor/", "critic/"]) {
        Family::Policy
    } else if metric.split('/').nth(1) == Some("ood") {
        Family::Ood
    } else {
        Family::Other
    })
}

/// One stage's line in a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub series: String,
    pub points: Vec<(f64, f64)>,
    /// (step, min, max) where the metric has min/max companions.
    pub band: Vec<(f64, f64, f64)>,
}

/// One metric: a panel of small multiples.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The metric's name; for a mean with a band, its base and how it is drawn.
    pub title: String,
    /// Evaluation points (`eval/…`): markers joined by a thin line, not smoothed.
    pub eval_points: bool,
    /// A schedule (the learning rate, the KL coefficient): drawn as it is, never smoothed (an
    /// EMA would move its peak).
    pub schedule: bool,
    pub lines: Vec<Line>,
}

/// The min–max companions of `name`: `X/mean` pairs with `X/min` and `X/max` when both exist.
pub fn companions(name: &str, has: impl Fn(&str) -> bool) -> Option<(String, String)> {
    let base = name.strip_suffix("/mean")?;
    let (lo, hi) = (format!("{base}/min"), format!("{base}/max"));
    (has(&lo) && has(&hi)).then_some((lo, hi))
}

/// The panels of every family with data, from each stage's metrics (stage order kept).
pub fn panels(stages: &[(&str, &BTreeMap<String, Vec<(f64, f64)>>)]) -> Vec<(Family, Vec<Panel>)> {
    // Metric name → its panel, in the order families and names sort.
    let mut by: BTreeMap<(Family, String), Panel> = BTreeMap::new();
    for (stage, metrics) in stages {
        // Companions drawn as a band are not panels of their own.
        let mut banded: Vec<&str> = Vec::new();
        for name in metrics.keys() {
            if let Some((lo, hi)) = companions(name, |n| metrics.get(n).is_some_and(|p| !p.is_empty())) {
                banded.push(metrics.get_key_value(&lo).map(|(k, _)| k.as_str()).unwrap_or_default());
                banded.push(metrics.get_key_value(&hi).map(|(k, _)| k.as_str()).unwrap_or_default());
            }
        }
        for (name, points) in metrics.iter() {
            if points.is_empty() || banded.contains(&name.as_str()) {
                continue;
            }
            let Some(family) = family_of(name) else { continue };
            let band = match companions(name, |n| banded.contains(&n)) {
                Some((lo, hi)) => zip_band(points, &metrics[&lo], &metrics[&hi]),
                None => Vec::new(),
            };
            let title = match name.strip_suffix("/mean") {
                Some(base) if !band.is_empty() => format!("{base} (mean, min–max band)"),
                _ => name.clone(),
            };
            let eval_points = matches!(family, Family::Eval | Family::Ood);
            // OOD results name their model first: the models are the series of one panel.
            let (key, title, series) = match (family, name.split_once('/')) {
                (Family::Ood, Some((model, rest))) => (rest.to_string(), rest.to_string(), model.to_string()),
                _ => (name.clone(), title, stage.to_string()),
            };
            let schedule = ["lr", "actor/lr", "actor/kl_coef"].contains(&name.as_str());
            let panel = by.entry((family, natural_key(&key))).or_insert_with(|| Panel { title, eval_points, schedule, lines: Vec::new() });
            panel.lines.push(Line { series, points: points.clone(), band });
        }
    }
    let mut out: Vec<(Family, Vec<Panel>)> = Vec::new();
    for ((family, _), panel) in by {
        match out.last_mut() {
            Some((f, ps)) if *f == family => ps.push(panel),
            _ => out.push((family, vec![panel])),
        }
    }
    out
}

/// A sort key that orders the numbers inside a name by value: `pass@4` before `pass@16`.
pub fn natural_key(name: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in name.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            // Zero-padded to 12 places: equal-width numbers sort by value.
            out.push_str(&format!("{:0>12}", digits));
            digits.clear();
        }
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// (step, min, max) at the steps all three series have.
fn zip_band(mean: &[(f64, f64)], lo: &[(f64, f64)], hi: &[(f64, f64)]) -> Vec<(f64, f64, f64)> {
    let at = |s: &[(f64, f64)], x: f64| s.iter().find(|p| p.0 == x).map(|p| p.1);
    mean.iter().filter_map(|&(x, _)| Some((x, at(lo, x)?, at(hi, x)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_go_by_exact_names_and_prefixes() {
        // Seconds are never a reward, whatever the word in the name.
        assert_eq!(family_of("timing/reward"), Some(Family::Timing));
        assert_eq!(family_of("timing/generate"), Some(Family::Timing));
        assert_eq!(family_of("tokens_per_s"), Some(Family::Timing));
        // SFT's held-out loss is an evaluation point, not a training loss.
        assert_eq!(family_of("eval_loss"), Some(Family::Eval));
        assert_eq!(family_of("critic/score/mean"), Some(Family::Reward));
        assert_eq!(family_of("critic/accuracy"), Some(Family::Reward));
        assert_eq!(family_of("loss"), Some(Family::Loss));
        assert_eq!(family_of("actor/pg_loss"), Some(Family::Loss));
        assert_eq!(family_of("critic/vf_loss"), Some(Family::Loss));
        assert_eq!(family_of("loss/mse"), Some(Family::Loss));
        // An eval metric about entropy or diversity is an evaluation point, not a rollout's.
        assert_eq!(family_of("eval/entropy_correct"), Some(Family::Eval));
        assert_eq!(family_of("eval/pass@1"), Some(Family::Eval));
        assert_eq!(family_of("actor/entropy_correct"), Some(Family::Entropy));
        assert_eq!(family_of("diversity/distinct_correct"), Some(Family::Diversity));
        assert_eq!(family_of("response_length/clip_ratio"), Some(Family::Length));
        assert_eq!(family_of("actor/grad_norm"), Some(Family::Optimizer));
        assert_eq!(family_of("lr"), Some(Family::Optimizer));
        assert_eq!(family_of("actor/ref_kl"), Some(Family::Policy));
        assert_eq!(family_of("critic/advantages/mean"), Some(Family::Policy));
        // No substring matching: a name that merely contains a family word is "other".
        assert_eq!(family_of("my_loss_ratio"), Some(Family::Other));
        assert_eq!(family_of("reward_hacks"), Some(Family::Other));
        // The denoise stage's held-out losses have their own chart.
        assert_eq!(family_of("eval/recon/id/recipes_test"), None);
        // An eval stage's OOD results: `<model>/ood/<what>/<set>`, against t.
        assert_eq!(family_of("diffuse/ood/auroc/legal"), Some(Family::Ood));
        assert_eq!(Family::Ood.x(), "noise level t");
    }

    #[test]
    fn numbers_in_names_sort_by_value() {
        let mut names = vec!["eval/pass@16", "eval/pass@1", "eval/pass@4", "eval/avg@16"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["eval/avg@16", "eval/pass@1", "eval/pass@4", "eval/pass@16"]);
    }

    #[test]
    fn min_and_max_companions_become_a_band_of_the_mean() {
        let pts = |v: &[f64]| v.iter().enumerate().map(|(i, &y)| (i as f64 + 1.0, y)).collect::<Vec<_>>();
        let mut grpo: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        grpo.insert("critic/score/mean".into(), pts(&[0.2, 0.4]));
        grpo.insert("critic/score/min".into(), pts(&[0.0, 0.0]));
        grpo.insert("critic/score/max".into(), pts(&[1.0, 1.0]));
        // A min without its max is no band: it stays a panel of its own.
        grpo.insert("response_length/mean".into(), pts(&[10.0]));
        grpo.insert("response_length/min".into(), pts(&[3.0]));
        grpo.insert("timing/reward".into(), pts(&[0.5, 0.6]));
        let mut sft: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        sft.insert("loss".into(), pts(&[3.0, 2.0]));
        let out = panels(&[("sft", &sft), ("grpo", &grpo)]);
        let families: Vec<Family> = out.iter().map(|(f, _)| *f).collect();
        assert_eq!(families, [Family::Loss, Family::Reward, Family::Length, Family::Timing]);
        let reward = &out[1].1;
        assert_eq!(reward.len(), 1, "min and max are not panels: {reward:?}");
        assert_eq!(reward[0].title, "critic/score (mean, min–max band)");
        assert_eq!(reward[0].lines[0].band, vec![(1.0, 0.0, 1.0), (2.0, 0.0, 1.0)]);
        let length: Vec<&str> = out[2].1.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(length, ["response_length/mean", "response_length/min"]);
        assert!(out[2].1[0].lines[0].band.is_empty());
        assert!(!out[0].1[0].schedule);
        // The same metric of two stages is one panel with two lines, in stage order.
        let mut ppo = grpo.clone();
        ppo.insert("loss".into(), pts(&[1.0]));
        let out = panels(&[("sft", &sft), ("ppo", &ppo)]);
        let series: Vec<&str> = out[0].1[0].lines.iter().map(|l| l.series.as_str()).collect();
        assert_eq!(series, ["sft", "ppo"]);
        // An eval stage's OOD results: one panel per measure and set, the models its series.
        let mut ood: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        ood.insert("pretrain/ood/auroc/legal".into(), vec![(300.0, 0.4), (600.0, 0.9)]);
        ood.insert("diffuse/ood/auroc/legal".into(), vec![(300.0, 1.0), (600.0, 1.0)]);
        let out = panels(&[("ood", &ood)]);
        assert_eq!(out[0].0, Family::Ood);
        assert_eq!(out[0].1.len(), 1);
        assert_eq!(out[0].1[0].title, "ood/auroc/legal");
        let series: Vec<&str> = out[0].1[0].lines.iter().map(|l| l.series.as_str()).collect();
        assert_eq!(series, ["diffuse", "pretrain"]);
    }
}
