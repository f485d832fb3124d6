//! `retort papers`: the reproduction matrix. For each seed paper: its tiny and paper-scale
//! presets, the paper's headline numbers, the result recorded in the README, the latest tiny
//! result read from the newest finished run of its tiny preset (or the command that makes
//! one), and an honest status with its reason. The README carries the same table
//! ([`markdown`] without runs; a test keeps the two in step).

use crate::run::{self, Manifest, Status};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Reproduced,
    Partly,
    NotShown,
    NotBuilt,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Partly => "partly",
            Verdict::NotShown => "not shown",
            Verdict::NotBuilt => "not built",
        }
    }
}

/// One seed paper.
pub struct Paper {
    pub key: &'static str,
    pub title: &'static str,
    /// The tiny preset whose newest finished run is shown (first), then its siblings.
    pub tiny: &'static [&'static str],
    pub paper_scale: &'static [&'static str],
    pub headline: &'static str,
    /// What the README records of the tiny experiment (measured, with seeds).
    pub recorded: &'static str,
    pub verdict: Verdict,
    pub reason: &'static str,
    /// Summary keys of the run's last stage to show (exact names).
    pub show: &'static [&'static str],
}

pub const PAPERS: &[Paper] = &[
    Paper {
        key: "flowrl",
        title: "FlowRL: reward-distribution matching by flow balance",
        tiny: &["flowrl-vs-grpo-tiny", "flowrl-tiny", "rl-compare-tiny"],
        paper_scale: &["flowrl-qwen2.5-7b", "grpo-qwen2.5-7b", "flowrl-qwen2.5-1.5b-80gb", "flowrl-qwen2.5-0.5b-24gb"],
        headline: "math average +10.0 % over GRPO, +5.1 % over PPO",
        recorded: "seed 0: pass@1 sft 0.196, GRPO 0.249, FlowRL 0.248; distinct correct 1.50 / 1.05 / 1.15",
        verdict: Verdict::Partly,
        reason: "tiny: FlowRL matches GRPO's pass@1 with more distinct correct solutions; the paper's math gain needs a paper-scale run, not made",
        show: &["sft/pass@1", "grpo/pass@1", "flowrl/pass@1", "grpo/diversity/distinct_correct", "flowrl/diversity/distinct_correct"],
    },
    Paper {
        key: "rlvr-explore",
        title: "Exploration in RLVR: capability boundary, entropy-performance exchange",
        tiny: &["flowrl-vs-grpo-tiny"],
        paper_scale: &["grpo-qwen2.5-7b"],
        headline: "RLVR raises pass@1, the base model catches up or wins at large k",
        recorded: "seed 0: pass@1 sft 0.196 → GRPO 0.249, pass@64 sft 0.900 vs GRPO 0.800",
        verdict: Verdict::Partly,
        reason: "the pass@k crossing shows at tiny scale; the entropy-by-token analysis is built but not compared with the paper's figures",
        show: &["sft/pass@1", "grpo/pass@1", "sft/pass@64", "grpo/pass@64"],
    },
    Paper {
        key: "entropy-adv",
        title: "Reasoning with exploration: an entropy perspective",
        tiny: &["entropy-adv-tiny"],
        paper_scale: &[],
        headline: "entropy advantage term raises pass@K at large K (figures not transcribed)",
        recorded: "no measured comparison recorded",
        verdict: Verdict::NotShown,
        reason: "the preset runs, but no comparison against grpo-tiny over seeds is recorded; no paper-scale preset",
        show: &["sft/pass@1", "grpo/pass@1", "sft/pass@16", "grpo/pass@16"],
    },
    Paper {
        key: "still3",
        title: "STILL-3: scaling RL for slow thinking, tool manipulation",
        tiny: &["still3-tool-tiny"],
        paper_scale: &["still3-tool-1.5b"],
        headline: "STILL-3-Tool-32B: AIME 2024 86.67 % greedy with tools",
        recorded: "seeds 0-2: pass@1 with tools 0.30-0.41 (sft) → 0.71-0.92 (GRPO with tools); without tools 0",
        verdict: Verdict::Partly,
        reason: "the mechanism shows (the tool helps, GRPO learns to call it); AIME not run",
        show: &["sft/pass@1", "grpo_tools/pass@1", "grpo_plain/pass@1"],
    },
    Paper {
        key: "toedit",
        title: "Synthetic data without model collapse (token editing)",
        tiny: &["toedit-tiny", "toedit-iterated-tiny"],
        paper_scale: &["toedit-qwen2-0.5b"],
        headline: "GPT-2 PPL 21.37 → 49.30 from 0 to 100 % synthetic; token-edited: no degradation",
        recorded: "seeds 0-2: PPL human 3.44-3.83, 100 % synthetic 4.05-5.27, edited +0.009-0.076 over human",
        verdict: Verdict::Partly,
        reason: "collapse with the synthetic share and its absence along the editing chain show; editing costs a little, not nothing",
        show: &[],
    },
    Paper {
        key: "adamllm",
        title: "Domain post-training of multimodal LLMs",
        tiny: &["adamllm-tiny"],
        paper_scale: &["adamllm-qwen2-vl-2b"],
        headline: "Qwen2-VL-2B biomed avg 41.2 → 55.7, food 37.1 → 40.3 (Tables 2, 3)",
        recorded: "seeds 0–2: 102.3 of 120 images get a task; task accuracy 0.159 → 0.317 with the filter (seed spread ±0.12); caption ROUGE-L two-stage 0.573 after captions → 0.120 after tasks, single-stage 0.605; 10–35 of 120 syntheses change with a white image, colour (image-only) accuracy near chance either way",
        verdict: Verdict::Partly,
        reason: "the two-stage pipeline's forgetting reproduces (single-stage keeps captioning); the filter's gain is within the seed spread; blank images show no effect because the tiny synthesizers barely read the image (colour questions near chance with real and white images); the released synthesizer is LLaVA-NeXT (anyres), which retort does not load (plain LLaVA does)",
        show: &["eval_loss"],
    },
    Paper {
        key: "instruct-pt",
        title: "Instruction Pre-Training",
        tiny: &["instruct-pt-tiny"],
        paper_scale: &["instruct-pt-llama3-8b"],
        headline: "Instruct PT beats vanilla PT (tables not transcribed)",
        recorded: "seeds 0-2: held-out QA vanilla 0.296, instruct_pt 0.282, rule pairs 0.250",
        verdict: Verdict::NotShown,
        reason: "at 0.8M parameters no arm beats vanilla on held-out entities",
        show: &[],
    },
    Paper {
        key: "adaptllm",
        title: "Adapting LLMs via reading comprehension",
        tiny: &["adaptllm-tiny"],
        paper_scale: &["adaptllm-llama-7b"],
        headline: "LLaMA-7B biomedicine: general 44.2, DAPT 41.7, AdaptLLM 47.3",
        recorded: "seeds 0-2 domain accuracy: general 0.278, DAPT 0.243, AdaptLLM 0.320",
        verdict: Verdict::Partly,
        reason: "the paper's ordering in the mean, but only AdaptLLM vs DAPT is beyond noise",
        show: &[],
    },
    Paper {
        key: "diffusion-ood",
        title: "Diffusion and OOD robustness of PLMs",
        tiny: &["diffusion-ood-tiny"],
        paper_scale: &["diffusion-ood-roberta-large"],
        headline: "20NG AUROC 99.89 / FPR95 0.18; SST-2 → Multi30K 0.7211 / 0.8188",
        recorded: "seeds 0-2: disjoint sets AUROC 1.0000, the hard set 0.72-0.92",
        verdict: Verdict::Reproduced,
        reason: "qualitatively, at tiny scale: disjoint sets separate perfectly, the hard one less, as in the paper",
        show: &["diffuse/auroc/mean/t600", "diffuse/fpr95/mean/t600", "pretrain/auroc/mean/t600"],
    },
    Paper {
        key: "uprise",
        title: "UPRISE: universal prompt retrieval",
        tiny: &["uprise-tiny"],
        paper_scale: &["uprise-bert-base"],
        headline: "GPT-Neo-2.7B zero-shot → UPRISE: paraphrase 47.0 → 61.6, NLI 38.3 → 43.0",
        recorded: "seeds 0-2, k = 3, exact match, seen / held-out means: 0-shot 14.1 / 15.6, few-shot 51.5 / 52.3, random 19.1 / 16.5, BM25 33.6 / 41.7, untuned 31.4 / 27.9, UPRISE 51.8 / 32.1",
        verdict: Verdict::Partly,
        reason: "the decoder takes its answer words from demos (few-shot 52 vs 0-shot 14); UPRISE finds the task's own demos on seen families (51.8, level with few-shot; BM25 33.6) but on the held-out family stays below BM25 (32.1 vs 41.7, seeds 20.6-46.2), above 0-shot 15.6; the decoder never learnt which statements are true",
        show: &[],
    },
];

/// The newest finished run of `preset` in `runs_dir`: (folder name, manifest).
pub fn newest_finished(runs_dir: &Path, preset: &str) -> Option<(String, Manifest)> {
    run::list_runs(runs_dir)
        .into_iter()
        .filter(|(_, m)| m.profile == preset && run::effective_status(m) == Status::Finished)
        .max_by(|(_, a), (_, b)| a.started.cmp(&b.started))
        .map(|(p, m)| (p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), m))
}

/// The shown keys of the last stage that has a summary, e.g. "grpo/pass@1 0.249".
pub fn result_of(m: &Manifest, keys: &[&str]) -> String {
    let Some(stage) = m.stages.iter().rev().find(|s| !s.summary.is_empty()) else {
        return "finished, no summary".into();
    };
    let shown: Vec<String> = keys.iter().filter_map(|k| stage.summary.get(*k).map(|v| format!("{k} {}", fmt(*v)))).collect();
    if shown.is_empty() {
        format!("finished; see `retort report` (stage `{}`)", stage.name)
    } else {
        shown.join(", ")
    }
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The latest-run column of one paper.
pub fn latest(p: &Paper, runs_dir: Option<&Path>) -> String {
    let Some(preset) = p.tiny.first() else {
        return "-".into();
    };
    match runs_dir.and_then(|d| newest_finished(d, preset)) {
        Some((name, m)) => format!("{name}: {}", result_of(&m, p.show)),
        None => format!("not run yet: `retort run {preset}`"),
    }
}

fn list(xs: &[&str]) -> String {
    if xs.is_empty() {
        "-".into()
    } else {
        xs.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
    }
}

/// The matrix as a Markdown table; without `runs_dir`, the latest-run column is left out (the
/// README's form).
pub fn markdown(runs_dir: Option<&Path>) -> String {
    let mut s = String::from("| paper | tiny presets | paper-scale presets | paper's headline | recorded tiny result (README) |");
    if runs_dir.is_some() {
        s += " latest tiny run |";
    }
    s += " status |\n| --- | --- | --- | --- | --- |";
    if runs_dir.is_some() {
        s += " --- |";
    }
    s += " --- |\n";
    for p in PAPERS {
        s += &format!("| **{}** {} | {} | {} | {} | {} |", p.key, p.title, list(p.tiny), list(p.paper_scale), p.headline, p.recorded);
        if runs_dir.is_some() {
            s += &format!(" {} |", latest(p, runs_dir));
        }
        s += &format!(" **{}**: {} |\n", p.verdict.as_str(), p.reason);
    }
    s
}

/// The matrix for a terminal: one block per paper.
pub fn text(runs_dir: &Path) -> String {
    PAPERS.iter().map(|p| block(p, runs_dir) + "\n").collect()
}

/// One paper's block of [`text`] (`retort report` puts it beside a run's final table).
pub fn block(p: &Paper, runs_dir: &Path) -> String {
    let mut s = format!("{:<14} [{}] {}\n", p.key, p.verdict.as_str(), p.title);
    s += &format!("  tiny          {}\n", if p.tiny.is_empty() { "-".to_string() } else { p.tiny.join(", ") });
    s += &format!("  paper scale   {}\n", if p.paper_scale.is_empty() { "-".to_string() } else { p.paper_scale.join(", ") });
    s += &format!("  paper         {}\n", p.headline);
    s += &format!("  recorded      {}\n", p.recorded);
    s += &format!("  latest run    {}\n", latest(p, Some(runs_dir)));
    s += &format!("  status        {}: {}\n", p.verdict.as_str(), p.reason);
    s
}

/// The papers whose tiny or paper-scale presets include `profile`.
pub fn of_preset(profile: &str) -> impl Iterator<Item = &'static Paper> + '_ {
    PAPERS.iter().filter(move |p| p.tiny.contains(&profile) || p.paper_scale.contains(&profile))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Profile, PRESETS};
    use crate::run::StageRecord;
    use std::collections::BTreeMap;

    #[test]
    fn every_named_preset_exists_and_every_built_paper_has_a_tiny_preset() {
        for p in PAPERS {
            for name in p.tiny.iter().chain(p.paper_scale) {
                assert!(PRESETS.iter().any(|(n, _)| n == name), "{}: no preset `{name}`", p.key);
            }
            for name in p.paper_scale {
                assert!(Profile::load(name).unwrap().run.paper_scale, "{name} is not marked paper_scale");
            }
            assert_eq!(p.tiny.is_empty(), p.verdict == Verdict::NotBuilt, "{}", p.key);
        }
        // The ten papers of DESIGN.md.
        assert_eq!(PAPERS.len(), 10);
    }

    #[test]
    fn the_readme_carries_the_same_table() {
        let readme = include_str!("../../README.md");
        assert!(readme.contains(&markdown(None)), "README.md is out of step with the papers table; paste the output of `retort papers --readme`:\n{}", markdown(None));
    }

    fn manifest(profile: &str, started: &str, status: Status, pass1: f64) -> Manifest {
        let summary: BTreeMap<String, f64> = [("grpo/pass@1".to_string(), pass1), ("other".to_string(), 1.0)].into();
        Manifest {
            retort_version: "0".into(),
            git_describe: None,
            profile: profile.into(),
            seed: 0,
            device: "cpu".into(),
            started: started.into(),
            ended: Some(started.into()),
            status,
            pid: 0,
            error: None,
            stages: vec![StageRecord {
                name: "eval".into(),
                kind: "eval".into(),
                status,
                started: None,
                ended: None,
                output: None,
                summary,
                table: None,
                error: None,
            }],
        }
    }

    #[test]
    fn the_latest_column_reads_the_newest_finished_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = &PAPERS[0];
        assert_eq!(latest(p, Some(dir.path())), "not run yet: `retort run flowrl-vs-grpo-tiny`");
        for (name, started, status, v) in [
            ("a", "2026-12-01T10:00:00+00:00", Status::Finished, 0.111),
            ("b", "2026-12-03T10:00:00+00:00", Status::Finished, 0.222),
            ("c", "2026-12-05T10:00:00+00:00", Status::Failed, 0.333),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let m = manifest("flowrl-vs-grpo-tiny", started, status, v);
            std::fs::write(d.join(crate::run::MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        }
        assert_eq!(latest(p, Some(dir.path())), "b: grpo/pass@1 0.222");
    }
}
