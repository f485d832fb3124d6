//! What an `rl` step reports (docs/METHODS.md §8.4 names, verl's, so a run reads like the papers'
//! logs): score, length, entropy, group and diversity metrics of the rollout, the update's
//! accumulated metrics ([`Acc`]), the quick eval on the test split (avg@n, pass@k,
//! diversity, §8.1, §8.3) and the sample events. Each algorithm's own metric names are in
//! its file under `algo/`.

use crate::bus::Event;
use crate::generate::grade::{sample_and_grade, GradeOptions, Seeds};
use crate::metrics::{diversity, passk, Sample};

use crate::model::Model;
use crate::stage::StageCtx;
use crate::text::Tokenizer;
use crate::train::rl::advantage::Mat;
use crate::train::rl::config::RlStage;
use crate::train::rl::rollout::{Problems, Rollout, Scored};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};

/// Weighted means of the update's per-micro-batch metrics, by name.
#[derive(Default)]
pub struct Acc {
    sums: BTreeMap<&'static str, (f64, f64)>,
}

impl Acc {
    pub fn add(&mut self, key: &'static str, value: f64, weight: f64) {
        let e = self.sums.entry(key).or_insert((0.0, 0.0));
        e.0 += value * weight;
        e.1 += weight;
    }
    pub fn means(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.sums.iter().filter(|(_, (_, w))| *w > 0.0).map(|(k, (s, w))| (*k, s / w))
    }
}

/// Masked mean of the rows `rows` selects, `None` when they hold no valid token.
pub fn masked_stats(m: &Mat, mask: &Mat, rows: impl Fn(usize) -> bool) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0.0);
    for r in (0..m.rows).filter(|&r| rows(r)) {
        for (v, k) in m.row(r).iter().zip(mask.row(r)) {
            s += (*v * *k) as f64;
            n += *k as f64;
        }
    }
    (n > 0.0).then(|| s / n)
}

fn min_mean_max(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let v: Vec<f64> = values.collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (v.iter().copied().fold(f64::INFINITY, f64::min), mean, v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// Score, length, entropy, group and diversity metrics of one rollout (docs/METHODS.md §8.4, §8.3).
pub fn rollout_metrics(cfg: &RlStage, ro: &Rollout, sc: &Scored, adv: &Mat, problems: &Problems, solutions: &mut HashMap<usize, Option<Vec<String>>>) -> Vec<(String, f64)> {
    let mut m: Vec<(String, f64)> = Vec::new();
    let (lo, mean, hi) = min_mean_max(ro.scores.iter().map(|&s| s as f64));
    m.extend([("critic/score/mean".into(), mean), ("critic/score/min".into(), lo), ("critic/score/max".into(), hi)]);
    let valid: Vec<f64> = adv.data.iter().zip(&ro.mask.data).filter(|(_, &k)| k > 0.0).map(|(&a, _)| a as f64).collect();
    let (lo, mean, hi) = min_mean_max(valid.into_iter());
    m.extend([("critic/advantages/mean".into(), mean), ("critic/advantages/min".into(), lo), ("critic/advantages/max".into(), hi)]);
    let (lo, mean, hi) = min_mean_max(ro.responses.iter().map(|r| r.len() as f64));
    m.extend([("response_length/mean".into(), mean), ("response_length/min".into(), lo), ("response_length/max".into(), hi)]);
    let clip = ro.truncated.iter().filter(|&&t| t).count() as f64 / ro.truncated.len().max(1) as f64;
    m.push(("response_length/clip_ratio".into(), clip));
    m.push(("critic/accuracy".into(), ro.verdicts.iter().filter(|v| v.correct).count() as f64 / ro.verdicts.len().max(1) as f64));
    if let Some(e) = masked_stats(&sc.entropy, &ro.mask, |_| true) {
        m.push(("actor/entropy".into(), e));
    }
    if let Some(e) = masked_stats(&sc.entropy, &ro.mask, |r| ro.verdicts[r].correct) {
        m.push(("actor/entropy_correct".into(), e));
    }
    if let Some(e) = masked_stats(&sc.entropy, &ro.mask, |r| !ro.verdicts[r].correct) {
        m.push(("actor/entropy_incorrect".into(), e));
    }
    if let Some(reference) = &sc.reference {
        let diff = Mat { rows: sc.old.rows, cols: sc.old.cols, data: sc.old.data.iter().zip(&reference.data).map(|(a, b)| a - b).collect() };
        if let Some(kl) = masked_stats(&diff, &ro.mask, |_| true) {
            m.push(("actor/ref_kl".into(), kl));
        }
    }
    // Groups: all-same scores and diversity of the correct answers per prompt.
    let mut same = 0usize;
    let (mut distinct, mut entropy, mut cover, mut n_cover) = (0.0, 0.0, 0.0, 0usize);
    for g in 0..cfg.prompts_per_step {
        let rows: Vec<usize> = (0..ro.groups.len()).filter(|&r| ro.groups[r] == g).collect();
        if rows.iter().all(|&r| ro.scores[r] == ro.scores[rows[0]]) {
            same += 1;
        }
        let samples: Vec<Sample> = rows.iter().map(|&r| Sample::from(&ro.verdicts[r])).collect();
        distinct += diversity::distinct_correct_at_k(&samples, usize::MAX) as f64;
        entropy += diversity::normalized_solution_entropy(&samples);
        let i = ro.problem[rows[0]];
        let all = solutions.entry(i).or_insert_with(|| problems.train.solutions(i));
        if let Some(c) = all.as_deref().and_then(|a| diversity::coverage(&samples, a)) {
            cover += c;
            n_cover += 1;
        }
    }
    let groups = cfg.prompts_per_step as f64;
    m.push(("frac_all_same_groups".into(), same as f64 / groups));
    m.push(("diversity/distinct_correct".into(), distinct / groups));
    m.push(("diversity/entropy_correct".into(), entropy / groups));
    if n_cover > 0 {
        m.push(("diversity/coverage".into(), cover / n_cover as f64));
    }
    m
}

/// Quick eval on the first `eval_problems` test problems: avg@n, pass@k, distinct correct,
/// coverage and entropy over correct solutions (docs/METHODS.md §8.1, §8.3).
pub fn quick_eval(cfg: &RlStage, policy: &Model, tok: &Tokenizer, problems: &Problems, seed: u64, step: u64) -> Result<Vec<(String, f64)>> {
    let set = &problems.test;
    let count = set.len().min(cfg.eval_problems);
    if count == 0 {
        return Ok(vec![]);
    }
    // The shared engine, on this stage's own stream: one Rng across chunks of 256 rows.
    let opts = GradeOptions {
        n: cfg.eval_n,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        greedy: false,
        max_new_tokens: cfg.max_new_tokens,
        chat: cfg.source.chat,
        batch_size: 256,
        tools: cfg.tools.clone(),
    };
    let mut rng = crate::rng::Rng::derive(seed, &format!("eval/{step}"));
    let graded = sample_and_grade(&policy.decoder, tok, set, count, &opts, Seeds::Stream(&mut rng), &mut |_| Ok(()))?;
    let per_problem: Vec<Vec<Sample>> = graded.iter().map(|rows| rows.iter().map(|g| Sample::from(&g.verdict)).collect()).collect();
    let summary = passk::summarize(&per_problem, &cfg.eval_k)?;
    let mut m: Vec<(String, f64)> = summary.scores.iter().map(|(k, v)| (format!("eval/{k}"), *v)).collect();
    let n = count as f64;
    let mut cover = (0.0, 0usize);
    let (mut distinct, mut entropy) = (0.0, 0.0);
    for (i, samples) in per_problem.iter().enumerate() {
        let all = set.solutions(i);
        let s = diversity::summarize_problem(samples, all.as_deref());
        distinct += s.distinct_correct as f64;
        entropy += s.solution_entropy;
        if let Some(c) = s.coverage {
            cover.0 += c;
            cover.1 += 1;
        }
    }
    m.push(("eval/distinct_correct".into(), distinct / n));
    m.push(("eval/entropy_correct".into(), entropy / n));
    if cover.1 > 0 {
        m.push(("eval/coverage".into(), cover.0 / cover.1 as f64));
    }
    Ok(m)
}

/// One response (the first) of each of the first `samples_per_step` prompts, as Sample events.
pub fn send_samples(cfg: &RlStage, ro: &Rollout, problems: &Problems, advantages: &Mat, step: u64, ctx: &StageCtx) {
    for g in 0..cfg.samples_per_step.min(cfg.prompts_per_step) {
        let r = g * cfg.group_size;
        let v = &ro.verdicts[r];
        // Outcome advantages are constant over a response; report the first token's value.
        let advantage = advantages.row(r).first().copied().unwrap_or(0.0) as f64;
        ctx.events.send(Event::Sample {
            stage: ctx.events.stage().to_string(),
            step,
            prompt: problems.train.prompt(ro.problem[r]).to_string(),
            response: ro.texts[r].clone(),
            reward: Some(ro.scores[r] as f64),
            advantage: Some(advantage),
            correct: Some(v.correct),
            extra: serde_json::json!({"reason": v.reason, "canonical": v.canonical}),
        });
    }
}

/// Accuracy of the responses that made at least one tool call and of those that made none
/// (absent when a side is empty): does calling the tool help?
pub fn tool_accuracy(ro: &Rollout) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (name, with_call) in [("tools/acc_with_call", true), ("tools/acc_without_call", false)] {
        let side: Vec<bool> = ro.verdicts.iter().zip(&ro.calls).filter(|(_, c)| c.is_empty() != with_call).map(|(v, _)| v.correct).collect();
        if !side.is_empty() {
            out.push((name.to_string(), side.iter().filter(|&&c| c).count() as f64 / side.len() as f64));
        }
    }
    out
}

