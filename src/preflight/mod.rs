//! The memory preflight: before a run downloads or computes anything, estimate the peak memory
//! of every training stage (sft, rl, denoise, retrieve) from its model's config, the trained
//! weights (full or LoRA), the micro-batch and its length, the reference / critic / Z head and
//! AdamW's state, and of every eval stage (its biggest model, the sampling KV cache, the text
//! or OOD-scoring forward), and compare it with the device's memory (on the CPU: the available
//! RAM). A stage that
//! does not fit stops the run with the figures and the ways out; `--force` runs it anyway.
//! `retort preflight PROFILE` prints the same table without running, also for a card this
//! machine does not have (`--device cuda:0 --device-memory 80GiB`).
//!
//! One job a file: [`needs`] (what a stage says about itself), [`resolve`] (its model's
//! architecture before download, with [`known`] configs), [`plan`] (the arithmetic),
//! [`budget`] (the memory there is).

pub mod budget;
pub mod known;
pub use crate::stage::needs;
pub mod plan;
pub mod resolve;
pub mod vision;

use crate::model::estimate::human_bytes;
use crate::profile::Profile;
use budget::Budget;
use plan::{Part, Place};

/// One stage's verdict.
#[derive(Clone, Debug)]
pub struct StageCheck {
    pub stage: String,
    pub kind: &'static str,
    /// The model's parameters and where the config came from, or why it could not be sized.
    pub model: Result<(usize, String), String>,
    pub parts: Vec<Part>,
    /// Peak on the device (GPU only) and in host RAM (on the CPU: the one memory).
    pub device_peak: Option<f64>,
    pub host_peak: f64,
    pub assumption: Option<String>,
    pub knobs: Vec<String>,
    /// Which memories are too small: (what, needed, available).
    pub short: Vec<(String, f64, f64)>,
}

impl StageCheck {
    pub fn fits(&self) -> bool {
        self.short.is_empty()
    }
}

/// Check every training and evaluation stage of `profile` against `budget`.
pub fn check(profile: &Profile, budget: &Budget) -> Vec<StageCheck> {
    let mut out = Vec::new();
    for s in &profile.stages {
        let Some(mut needs) = s.config.memory_needs() else { continue };
        if let Some(per) = needs.contexts_from.as_deref().and_then(|r| contexts_of(profile, r)) {
            // Each example is its query and `per` contexts, encoded in the same step.
            needs.micro_batch *= 1 + per;
        }
        let mut c = StageCheck {
            stage: s.name.clone(),
            kind: s.kind,
            model: Err(String::new()),
            parts: Vec::new(),
            device_peak: None,
            host_peak: 0.0,
            assumption: needs.assumption.clone(),
            knobs: needs.knobs.clone(),
            short: Vec::new(),
        };
        // An eval stage loads its models one after another: the biggest is the peak.
        let mut sized: Option<(plan::Arch, String)> = None;
        for m in std::iter::once(&needs.model).chain(&needs.others) {
            match resolve::arch_of(profile, m) {
                Err(why) => {
                    c.model = Err(why);
                    sized = None;
                    break;
                }
                Ok((arch, from)) => {
                    if sized.as_ref().is_none_or(|(a, _)| arch.parameters() > a.parameters()) {
                        sized = Some((arch, from));
                    }
                }
            }
        }
        if let Some((arch, from)) = sized {
            c.model = Ok((arch.parameters(), from));
            c.parts = plan::parts(&needs, &arch, budget.target);
            if budget.target.gpu {
                let d = plan::peak(&c.parts, Some(Place::Device));
                c.device_peak = Some(d);
                c.host_peak = plan::peak(&c.parts, Some(Place::Host));
                if let Some(m) = &budget.device {
                    if d > m.bytes {
                        c.short.push((format!("{} memory", budget.device_name), d, m.bytes));
                    }
                }
            } else {
                c.host_peak = plan::peak(&c.parts, None);
            }
            if let Some(m) = &budget.host {
                if c.host_peak > m.bytes {
                    c.short.push(("host RAM".into(), c.host_peak, m.bytes));
                }
            }
        }
        out.push(c);
    }
    out
}

/// Contexts per example of the stage `reference` (`@score`) names, when it says; of a folder
/// of scored data, the most its `train.jsonl` rows carry (positive, hard and other negatives).
fn contexts_of(profile: &Profile, reference: &str) -> Option<usize> {
    let Some(rest) = reference.strip_prefix('@') else {
        let text = std::fs::read_to_string(std::path::Path::new(reference).join("train.jsonl")).ok()?;
        let count = |v: &serde_json::Value| {
            let n = |k: &str| v.get(k).and_then(|x| x.as_array()).map_or(0, |a| a.len());
            usize::from(v.get("positive").is_some_and(|p| !p.is_null())) + n("hard") + n("negatives")
        };
        return text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).map(|v| count(&v)).max();
    };
    let name = rest.split('/').next()?;
    profile.stages.iter().find(|s| s.name == name)?.config.contexts_per_example()
}

/// The printout: one block per checked stage, its parts, peaks and verdict.
pub fn render(checks: &[StageCheck], budget: &Budget) -> String {
    let mut s = String::new();
    let mem = |m: &Option<budget::Memory>| match m {
        Some(m) => format!("{} ({})", human_bytes(m.bytes), m.source),
        None => "unknown".to_string(),
    };
    if budget.target.gpu {
        s += &format!("device {}: {}; host: {}\n", budget.device_name, mem(&budget.device), mem(&budget.host));
        if budget.device.is_none() {
            s += "  (the device's memory is unknown: only host RAM is checked; give it with --device-memory)\n";
        }
    } else {
        s += &format!("device cpu: {}\n", mem(&budget.host));
    }
    if checks.is_empty() {
        s += "no training or eval stage: nothing to check\n";
    }
    for c in checks {
        s += &format!("\nstage `{}` ({})", c.stage, c.kind);
        match &c.model {
            Err(why) => {
                s += &format!(": not sized: {why}\n");
                continue;
            }
            Ok((p, from)) => s += &format!(": {:.3} B parameters, {from}\n", *p as f64 / 1e9),
        }
        if let Some(a) = &c.assumption {
            s += &format!("  ({a})\n");
        }
        for part in &c.parts {
            let place = match (budget.target.gpu, part.place) {
                (false, _) => "",
                (true, Place::Device) => "device",
                (true, Place::Host) => "host",
            };
            let phase = match part.phase {
                plan::Phase::Resident => "",
                plan::Phase::Sample => "sampling",
                plan::Phase::Train => "training",
            };
            s += &format!("  {:<58} {:>12}  {place:<6} {phase}\n", part.name, human_bytes(part.bytes));
        }
        match c.device_peak {
            Some(d) => s += &format!("  peak: device {}, host RAM {}\n", human_bytes(d), human_bytes(c.host_peak)),
            None => s += &format!("  peak: {}\n", human_bytes(c.host_peak)),
        }
        if c.fits() {
            s += "  fits\n";
        } else {
            for (what, need, have) in &c.short {
                s += &format!("  DOES NOT FIT: {what} needs {} of {} ({:.1}×, {} short)\n", human_bytes(*need), human_bytes(*have), need / have, human_bytes(need - have));
            }
        }
    }
    s += "\n(estimates: weights, gradients and AdamW state are exact counts; activations are a coarse count of retort's unfused training forward)\n";
    s
}

/// What to try when a stage does not fit.
pub fn ways_out(checks: &[StageCheck]) -> String {
    let mut s = String::from("ways out:\n");
    for c in checks.iter().filter(|c| !c.fits()) {
        for k in &c.knobs {
            s += &format!("  - stage `{}`: {k}\n", c.stage);
        }
    }
    s += "  - a smaller model of the same family (`--set stage.NAME.repo=...` on the pull stage), or a bigger card\n";
    s += "  - `retort preflight PROFILE --device cuda:0 --device-memory 80GiB` checks another card without running\n";
    s += "  - `--force` runs anyway (the estimate may be pessimistic; the run then fails when memory runs out)\n";
    s
}

/// The error `retort run` stops with when a stage does not fit, or `None`.
pub fn refusal(checks: &[StageCheck], budget: &Budget) -> Option<String> {
    if checks.iter().all(StageCheck::fits) {
        return None;
    }
    Some(format!("memory preflight: the run does not fit\n{}\n{}", render(checks, budget), ways_out(checks)))
}

#[cfg(test)]
mod tests;
