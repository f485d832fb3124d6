//! `retort run`, `retort sft` (a one-stage run), `retort watch` and `retort runs`: starting,
//! resuming, following and listing runs.

use super::{load_profile, outcome_code, toml_string};
use crate::pipeline::{self, Sink};
use crate::profile::{Profile, DEFAULT_PROFILE};
use crate::run::{self, Status};
use crate::ui::headless::HeadlessSink;
use anyhow::{bail, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A preset name (`retort profiles`) or a path to a profile TOML file.
    pub profile: Option<String>,
    /// Override a profile key, e.g. `--set run.seed=7` or `--set stage.data.train=500`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print progress lines instead of the dashboard (automatic when stdout is not a terminal).
    #[arg(long)]
    pub headless: bool,
    /// Print the raw events as JSON lines instead of human lines.
    #[arg(long)]
    pub json: bool,
    /// Folder for run folders.
    #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Name of the run folder (default: the profile's run.name).
    #[arg(long)]
    pub name: Option<String>,
    /// Continue an interrupted or failed run from its folder.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["profile", "set", "name"])]
    pub resume: Option<PathBuf>,
    /// Run even when the memory preflight estimates that a training stage does not fit.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SftArgs {
    /// Model folder (or a hub snapshot folder from `retort pull`).
    pub model: String,
    /// JSONL of {"prompt","response"}, {"messages"}, {"text"} or {"context","qa_list"} rows.
    #[arg(long, conflicts_with = "task")]
    pub jsonl: Option<String>,
    /// A built-in task (`retort tasks list`), taught by the skewed teacher.
    #[arg(long)]
    pub task: Option<String>,
    /// Any other key of the sft stage, e.g. `--set steps=200 --set lora.rank=8`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long)]
    pub headless: bool,
    #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Run even when the memory preflight estimates that it does not fit.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The run folder; default: the most recent run in --runs-dir.
    pub run: Option<PathBuf>,
    #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Print lines instead of the dashboard.
    #[arg(long)]
    pub headless: bool,
}

pub fn cmd_run(args: RunArgs) -> Result<i32> {
    let launch = match &args.resume {
        Some(dir) => pipeline::prepare_resume(dir)?,
        None => {
            let name = args.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
            let profile = load_profile(name, &args.set)?;
            super::preflight::check_before_run(&profile, args.force)?;
            pipeline::prepare_new(profile, &args.runs_dir, args.name.as_deref())?
        }
    };
    eprintln!("retort: run folder {}", launch.dir.path.display());
    let interactive = !args.headless && !args.json && std::io::stdout().is_terminal();
    let mut sink: Box<dyn Sink> =
        if interactive { Box::new(crate::ui::sink::TuiSink) } else { Box::new(HeadlessSink { quiet: args.json }) };
    let outcome = pipeline::execute(launch, sink.as_mut(), args.json)?;
    Ok(outcome_code(outcome))
}

/// `retort sft MODEL --jsonl F` is a one-stage profile; `--set` keys address the stage.
pub fn cmd_sft(args: SftArgs) -> Result<i32> {
    let data = match (&args.jsonl, &args.task) {
        (Some(j), None) => format!("jsonl = {}", toml_string(j)),
        (None, Some(t)) => format!("task = {}", toml_string(t)),
        _ => bail!("give the training data: --jsonl FILE or --task NAME"),
    };
    let text = format!(
        "[run]\nname = \"sft\"\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {}\n\n[stage.data]\n{data}\n",
        toml_string(&args.model)
    );
    let sets: Vec<String> = args.set.iter().map(|s| format!("stage.sft.{s}")).collect();
    let profile = Profile::parse(&text, "retort sft")?.apply_sets(&sets)?;
    super::preflight::check_before_run(&profile, args.force)?;
    Ok(outcome_code(run_one_stage(profile, &args.runs_dir, args.headless)?))
}

/// Run a one-stage profile built by a command (`retort sft`, `retort synth`): a new run
/// folder, the dashboard on a terminal, headless lines otherwise.
pub(super) fn run_one_stage(profile: Profile, runs_dir: &std::path::Path, headless: bool) -> Result<crate::bus::Outcome> {
    let launch = pipeline::prepare_new(profile, runs_dir, None)?;
    eprintln!("retort: run folder {}", launch.dir.path.display());
    let interactive = !headless && std::io::stdout().is_terminal();
    let mut sink: Box<dyn Sink> = if interactive { Box::new(crate::ui::sink::TuiSink) } else { Box::new(HeadlessSink { quiet: false }) };
    pipeline::execute(launch, sink.as_mut(), false)
}

pub fn cmd_watch(args: WatchArgs) -> Result<i32> {
    let dir = match args.run {
        Some(d) => d,
        None => match run::list_runs(&args.runs_dir).into_iter().next() {
            Some((p, _)) => p,
            None => bail!("no runs in {} to watch", args.runs_dir.display()),
        },
    };
    let dir = run::RunDir::open(&dir)?;
    if !args.headless && std::io::stdout().is_terminal() {
        crate::ui::sink::watch_dashboard(&dir.path)?;
    } else {
        crate::ui::sink::watch_lines(&dir.path)?;
    }
    Ok(0)
}

pub fn cmd_runs(runs_dir: &Path) -> Result<()> {
    let runs = run::list_runs(runs_dir);
    if runs.is_empty() {
        println!("no runs in {} (start one with `retort run`)", runs_dir.display());
        return Ok(());
    }
    println!("{:<40} {:<20} {:<12} {:<20} {:>9}  last metrics", "run", "profile", "status", "started", "duration");
    for (path, m) in runs {
        let status = run::effective_status(&m);
        let started = chrono::DateTime::parse_from_rfc3339(&m.started).ok();
        let ended = m.ended.as_deref().and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok());
        let duration = match (started, ended) {
            (Some(s), Some(e)) => crate::ui::headless::fmt_duration((e - s).num_seconds() as f64),
            (Some(s), None) if status == Status::Running => {
                crate::ui::headless::fmt_duration((chrono::Local::now().fixed_offset() - s).num_seconds() as f64)
            }
            _ => "-".into(),
        };
        let started_s = started.map(|s| s.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default();
        let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let last = match (&m.error, status) {
            (Some(e), Status::Failed) => format!("error: {}", e.lines().next().unwrap_or_default()),
            _ => last_metrics_line(&path),
        };
        println!("{name:<40} {:<20} {:<12} {started_s:<20} {duration:>9}  {last}", m.profile, status.as_str());
    }
    Ok(())
}

/// The last metrics event of a run, as `stage step N: k=v ...`.
fn last_metrics_line(run_dir: &Path) -> String {
    let Ok((records, _)) = run::read_events(&run_dir.join(run::EVENTS)) else { return String::new() };
    records
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            crate::bus::Event::Metrics { stage, step, values } => Some(format!(
                "{stage} step {step}: {}",
                crate::ui::headless::pick_metrics(values, 4)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", crate::ui::headless::fmt_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            crate::bus::Event::StageFinished { stage, summary, .. } if !summary.is_empty() => Some(format!(
                "{stage}: {}",
                crate::ui::headless::pick_metrics(summary, 4)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", crate::ui::headless::fmt_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            _ => None,
        })
        .unwrap_or_default()
}

