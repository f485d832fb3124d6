//! Headless output: concise human lines for SSH sessions and log files.
//!
//! [`LineFolder`] turns records into lines (pure; throttled by the records' own timestamps so
//! it is testable); [`HeadlessSink`] prints them.

use crate::bus::{Control, Event, Level, Outcome, Record, RunState};
use crate::pipeline::Sink;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, HashMap};

/// Seconds between progress (and metric) lines of one stage.
const PRINT_EVERY_S: f64 = 2.0;

/// Metrics shown first when a stage reports many.
const KEY_METRICS: &[&str] = &[
    "loss",
    "eval_loss",
    "critic/score/mean",
    "actor/entropy",
    "actor/kl_loss",
    "actor/log_z",
    "diversity/distinct_correct",
    "diversity/coverage",
    "pass@1",
    "lr",
    "grad_norm",
    "actor/grad_norm",
    "tokens_per_s",
];
const MAX_METRICS_SHOWN: usize = 6;

#[derive(Default)]
struct StageClock {
    started_t: f64,
    first_done: Option<(f64, u64)>,
    last_print_t: f64,
    last_metrics_t: f64,
}

#[derive(Default)]
pub struct LineFolder {
    stages: HashMap<String, StageClock>,
    total_stages: usize,
    run_started_t: Option<f64>,
    /// Error messages already printed, so the run's closing line need not repeat them.
    errors_shown: Vec<String>,
}

pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// The metrics to show on one line: key ones first, then the rest alphabetically.
pub fn pick_metrics(values: &BTreeMap<String, f64>, max: usize) -> Vec<(&str, f64)> {
    let mut out: Vec<(&str, f64)> = KEY_METRICS.iter().filter_map(|k| values.get(*k).map(|v| (*k, *v))).collect();
    for (k, v) in values {
        if out.len() >= max {
            break;
        }
        if !KEY_METRICS.contains(&k.as_str()) {
            out.push((k, *v));
        }
    }
    out.truncate(max);
    out
}

impl LineFolder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines to print for one record (often none: progress is throttled).
    pub fn fold(&mut self, rec: &Record) -> Vec<String> {
        let t = rec.t;
        let clock = chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
            .unwrap_or_default();
        let line = |s: String| vec![format!("[{clock}] {s}")];
        match &rec.event {
            Event::RunStarted { run, profile, stages, device, seed, resumed } => {
                self.total_stages = stages.len();
                self.run_started_t = Some(t);
                let verb = if *resumed { "resuming" } else { "run" };
                line(format!("{verb} {run} (profile {profile}, {} stages, device {device}, seed {seed})", stages.len()))
            }
            Event::StageStarted { stage, kind, index, total_stages, total, unit } => {
                self.stages.insert(stage.clone(), StageClock { started_t: t, ..Default::default() });
                let size = total.map(|n| format!(", {n} {unit}")).unwrap_or_default();
                line(format!("stage {}/{} {stage} ({kind}{size})", index + 1, total_stages))
            }
            Event::Progress { stage, done, total, unit, phase } => {
                let c = self.stages.entry(stage.clone()).or_insert_with(|| StageClock { started_t: t, ..Default::default() });
                let first = *c.first_done.get_or_insert((t, *done));
                let complete = total.is_some_and(|n| *done >= n);
                if t - c.last_print_t < PRINT_EVERY_S && !complete {
                    return vec![];
                }
                c.last_print_t = t;
                let dt = t - first.0;
                let rate = if dt > 0.0 { (*done - first.1) as f64 / dt } else { 0.0 };
                let mut s = match total {
                    Some(n) => format!("{stage} {done}/{n} {unit} ({:.0}%)", 100.0 * *done as f64 / (*n).max(1) as f64),
                    None => format!("{stage} {done} {unit}"),
                };
                if rate > 0.0 {
                    s.push_str(&format!("  {} {unit}/s", fmt_value(rate)));
                    if let Some(n) = total {
                        s.push_str(&format!("  ETA {}", fmt_duration((*n - (*done).min(*n)) as f64 / rate)));
                    }
                }
                if let Some(p) = phase {
                    s.push_str(&format!("  [{p}]"));
                }
                line(s)
            }
            Event::Metrics { stage, step, values } => {
                let c = self.stages.entry(stage.clone()).or_default();
                if t - c.last_metrics_t < PRINT_EVERY_S {
                    return vec![];
                }
                c.last_metrics_t = t;
                let shown: Vec<String> =
                    pick_metrics(values, MAX_METRICS_SHOWN).into_iter().map(|(k, v)| format!("{k}={}", fmt_value(v))).collect();
                line(format!("{stage} step {step}: {}", shown.join(" ")))
            }
            Event::Sample { .. } => vec![],
            Event::Log { level, message, stage } => {
                let tag = match level {
                    Level::Debug => return vec![],
                    Level::Info => "",
                    Level::Warn => "warning: ",
                    Level::Error => "error: ",
                };
                let who = stage.as_ref().map(|s| format!("{s}: ")).unwrap_or_default();
                if *level == Level::Error {
                    self.errors_shown.push(message.clone());
                }
                line(format!("{tag}{who}{message}"))
            }
            Event::CheckpointSaved { stage, step, path } => line(format!("{stage}: checkpoint at step {step} -> {path}")),
            Event::State { state } => line(
                match state {
                    RunState::Paused => "paused (resume from `retort watch` with p)",
                    RunState::Running => "resumed",
                    RunState::Stopping => "stopping: finishing the current unit and saving a checkpoint",
                }
                .to_string(),
            ),
            Event::StageFinished { stage, outcome, summary, table } => {
                let took = self.stages.get(stage).map(|c| fmt_duration(t - c.started_t)).unwrap_or_default();
                let mut out = line(format!(
                    "stage {stage} {} in {took}{}",
                    outcome_word(*outcome),
                    if summary.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": {}",
                            pick_metrics(summary, 12).into_iter().map(|(k, v)| format!("{k}={}", fmt_value(v))).collect::<Vec<_>>().join(" ")
                        )
                    }
                ));
                if let Some(tbl) = table {
                    out.extend(tbl.lines().map(|l| format!("    {l}")));
                }
                out
            }
            Event::RunFinished { outcome, error } => {
                let took = self.run_started_t.map(|s| fmt_duration(t - s)).unwrap_or_default();
                let mut s = format!("run {} in {took}", outcome_word(*outcome));
                if let Some(e) = error {
                    // "stage X: <message>" whose message was just printed: say where, once.
                    match self.errors_shown.iter().find(|m| e.ends_with(m.as_str())) {
                        Some(m) => s.push_str(&format!(" ({}, error above)", e[..e.len() - m.len()].trim_end_matches([':', ' ']))),
                        None => s.push_str(&format!(": {e}")),
                    }
                }
                line(s)
            }
        }
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Finished => "finished",
        Outcome::Failed => "FAILED",
        Outcome::Interrupted => "interrupted",
    }
}

/// Prints headless lines to stdout (or nothing, with `quiet`, when `--json` prints events).
pub struct HeadlessSink {
    pub quiet: bool,
}

impl Sink for HeadlessSink {
    fn drive(&mut self, records: Receiver<Record>, _controls: Sender<Control>) -> anyhow::Result<()> {
        let mut folder = LineFolder::new();
        for rec in records {
            let last = matches!(rec.event, Event::RunFinished { .. });
            if !self.quiet {
                for l in folder.fold(&rec) {
                    println!("{l}");
                }
            }
            if last {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: f64, event: Event) -> Record {
        Record { t, event }
    }

    #[test]
    fn progress_is_throttled_and_reports_rate_and_eta() {
        let mut f = LineFolder::new();
        let p = |done| Event::Progress { stage: "s".into(), done, total: Some(100), unit: "step".into(), phase: None };
        f.fold(&rec(0.0, Event::StageStarted { stage: "s".into(), kind: "sft".into(), index: 0, total_stages: 1, total: Some(100), unit: "step".into() }));
        assert_eq!(f.fold(&rec(0.0, p(0))).len(), 0, "first progress at t=0 is within the throttle window of t=0");
        assert!(f.fold(&rec(1.0, p(10))).is_empty());
        let l = f.fold(&rec(4.0, p(40)));
        assert_eq!(l.len(), 1);
        assert!(l[0].contains("40/100 step (40%)"), "{}", l[0]);
        assert!(l[0].contains("10.0000 step/s") && l[0].contains("ETA 0:06"), "{}", l[0]);
        // Completion always prints.
        assert_eq!(f.fold(&rec(4.1, p(100))).len(), 1);
    }

    #[test]
    fn key_metrics_come_first() {
        let m: BTreeMap<String, f64> = [("zeta".to_string(), 1.0), ("loss".to_string(), 2.0), ("alpha".to_string(), 3.0)].into();
        let picked: Vec<&str> = pick_metrics(&m, 2).into_iter().map(|(k, _)| k).collect();
        assert_eq!(picked, vec!["loss", "alpha"]);
    }

    #[test]
    fn durations_format() {
        assert_eq!(fmt_duration(65.0), "1:05");
        assert_eq!(fmt_duration(3725.0), "1:02:05");
    }
}
