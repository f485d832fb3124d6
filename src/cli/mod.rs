//! The command line: the clap definitions of every command and their dispatch. Each command
//! group's glue is in its own file: `run` (run, sft, watch, runs), `setup` (profiles, tasks,
//! doctor, pull), `eval` (eval, reward test, report), `export` (export verl), `model` (model init/info, generate,
//! bench), `embed`, `ood`, `retrieve` (UPRISE) and `synth`.

mod bench_gemm;
mod bench_matmul;
mod bench_mine;
mod bench_vlm;
mod embed;
mod info_memory;
mod eval;
mod export;
mod llava_info;
mod model;
mod ood;
mod retrieve;
mod preflight;
mod run;
mod setup;
mod synth;
mod synth_pairs;
mod synth_stats;

pub use eval::{EvalArgs, ReportArgs, RewardAction, RewardTestArgs};
pub use export::{ExportAction, VerlArgs};
pub use model::{BenchAction, GenerateArgs, ModelAction};
pub use run::{RunArgs, SftArgs, WatchArgs};
pub use setup::{hub_cache_dir, ProfilesAction, PullArgs, TasksAction};

use crate::profile::Profile;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "retort",
    version,
    about = "A terminal lab for LLM post-training research: SFT, GRPO / PPO / FlowRL, evaluation, live dashboard",
    long_about = "retort runs post-training pipelines (\"profiles\") on a local workstation and shows them live.\n\n\
Quick start:\n  retort run                 run the built-in tiny default profile\n  retort profiles            list the presets\n  retort runs                list past runs\n\n\
Every run writes runs/<name>-<YYYYMMDD-HHMMSS>/ with profile.toml, manifest.json and events.jsonl."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a profile (a preset name or a TOML file); with no PROFILE, the tiny default.
    Run(RunArgs),
    /// List the embedded profile presets, or print one fully resolved.
    Profiles {
        #[command(subcommand)]
        action: Option<ProfilesAction>,
    },
    /// List runs: name, profile, status, start, duration, last metrics.
    Runs {
        /// Folder holding run folders.
        #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Report build features, devices, memory and the Hugging Face cache; with --selftest, check a device end to end.
    Doctor(setup::DoctorArgs),
    /// Built-in verifiable tasks: list them or print sample instances with their solutions.
    Tasks {
        #[command(subcommand)]
        action: TasksAction,
    },
    /// Show a run's progress from its events log (live runs are followed like `tail -f`).
    Watch(WatchArgs),
    /// Download a model (or with --dataset a data set) from the Hugging Face hub into the standard cache.
    Pull(PullArgs),
    /// Fine-tune a model folder on a JSONL file or a built-in task (a one-stage run).
    Sft(SftArgs),
    /// Evaluate model folders: pass@k to large k, diversity and exploration metrics.
    Eval(eval::EvalArgs),
    /// Dry-run a verifier over a JSONL of completions.
    Reward {
        #[command(subcommand)]
        action: eval::RewardAction,
    },
    /// The reproduction matrix: each seed paper, its presets, the paper's numbers, the latest tiny result, a status.
    Papers {
        #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
        runs_dir: PathBuf,
        /// Print a Markdown table (the README's, plus the latest-run column).
        #[arg(long)]
        markdown: bool,
        /// Print the README's table (Markdown, without the latest-run column).
        #[arg(long, hide = true)]
        readme: bool,
    },
    /// Export a profile to another engine: `export verl` writes an RL stage as a verl run.
    Export {
        #[command(subcommand)]
        action: export::ExportAction,
    },
    /// Estimate a profile's peak memory per training stage and compare it with the device's (no run).
    Preflight(preflight::PreflightArgs),
    /// Write PNG plots and report.md for a run folder.
    Report(eval::ReportArgs),
    /// Model folders: create one from a preset, or describe one.
    Model {
        #[command(subcommand)]
        action: model::ModelAction,
    },
    /// Print a model's continuation of a prompt (a quick check; sampling with a seed).
    Generate(model::GenerateArgs),
    /// Measure generation throughput or a training step on a model folder.
    Bench {
        #[command(subcommand)]
        action: model::BenchAction,
    },
    /// Sentence embeddings from an encoder folder (BERT, RoBERTa), one line per text.
    Embed(embed::EmbedArgs),
    /// Reconstruction-based OOD detection with a diffusion-fine-tuned encoder: AUROC and FPR95 per ID/OOD pair and t.
    Ood(ood::OodArgs),
    /// UPRISE: the demonstrations a trained prompt retriever returns for a task input (top-K by inner product).
    Retrieve(retrieve::RetrieveArgs),
    /// Synthesize a data set from a corpus (AdaptLLM reading comprehension, …) or from the seed (a one-stage run).
    Synth(synth::SynthArgs),
}

pub fn main_with(cli: Cli) -> Result<i32> {
    use crate::cpu_threads::on_compute_pool;
    // The synth stage's `stats = true` draws its PNGs through report (synth does not depend on it).
    crate::synth::stats::set_plotter(crate::report::corpus_stats_plots_if_fonts);
    match cli.command {
        Command::Run(args) => run::cmd_run(args),
        Command::Profiles { action } => setup::cmd_profiles(action).map(|_| 0),
        Command::Runs { runs_dir } => run::cmd_runs(&runs_dir).map(|_| 0),
        Command::Doctor(args) => setup::cmd_doctor(args),
        Command::Tasks { action } => setup::cmd_tasks(action).map(|_| 0),
        Command::Watch(args) => run::cmd_watch(args),
        Command::Pull(args) => setup::cmd_pull(args).map(|_| 0),
        // The compute commands run on rayon's pool (see `cpu_threads::on_compute_pool`).
        Command::Sft(args) => run::cmd_sft(args),
        Command::Eval(args) => on_compute_pool(|| eval::cmd_eval(args)),
        Command::Reward { action: eval::RewardAction::Test(args) } => eval::cmd_reward_test(args),
        Command::Report(args) => eval::cmd_report(args),
        Command::Papers { runs_dir, markdown, readme } => {
            if readme {
                print!("{}", crate::report::papers::markdown(None));
            } else if markdown {
                print!("{}", crate::report::papers::markdown(Some(&runs_dir)));
            } else {
                print!("{}", crate::report::papers::text(&runs_dir));
            }
            Ok(0)
        }
        Command::Export { action } => export::cmd_export(action),
        Command::Preflight(args) => preflight::cmd_preflight(args),
        Command::Model { action } => model::cmd_model(action).map(|_| 0),
        Command::Generate(args) => on_compute_pool(|| model::cmd_generate(&args)).map(|_| 0),
        Command::Bench { action } => on_compute_pool(|| model::cmd_bench(action)).map(|_| 0),
        Command::Embed(args) => on_compute_pool(|| embed::cmd_embed(&args)).map(|_| 0),
        Command::Synth(args) => on_compute_pool(|| synth::cmd_synth(args)),
        Command::Ood(args) => on_compute_pool(|| ood::cmd_ood(&args)).map(|_| 0),
        Command::Retrieve(args) => on_compute_pool(|| retrieve::cmd_retrieve(&args)).map(|_| 0),
    }
}

pub(crate) fn load_profile(name: &str, sets: &[String]) -> Result<Profile> {
    Ok(Profile::load(name)?.apply_sets(sets)?)
}

pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub(crate) fn outcome_code(o: crate::bus::Outcome) -> i32 {
    match o {
        crate::bus::Outcome::Finished => 0,
        crate::bus::Outcome::Failed => 1,
        crate::bus::Outcome::Interrupted => 130,
    }
}
