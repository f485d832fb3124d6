//! The command line: clap definitions and the small glue behind each command.

use crate::headless::HeadlessSink;
use crate::pipeline::{self, Sink};
use crate::profile::{Profile, DEFAULT_PROFILE, PRESETS};
use crate::run::{self, Status};
use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
    /// Report build features, devices, memory and the Hugging Face cache.
    Doctor,
    /// Built-in verifiable tasks: list them or print sample instances with their solutions.
    Tasks {
        #[command(subcommand)]
        action: TasksAction,
    },
    /// Show a run's progress from its events log (live runs are followed like `tail -f`).
    Watch(WatchArgs),
    /// Download a model from the Hugging Face hub into the standard cache.
    Pull(PullArgs),
    /// Fine-tune a model folder on a JSONL file or a built-in task (a one-stage run).
    Sft(SftArgs),
    /// Evaluate model folders: pass@k to large k, diversity and exploration metrics.
    Eval(crate::cli_eval::EvalArgs),
    /// Dry-run a verifier over a JSONL of completions.
    Reward {
        #[command(subcommand)]
        action: crate::cli_eval::RewardAction,
    },
    /// Write PNG plots and report.md for a run folder.
    Report(crate::cli_eval::ReportArgs),
    /// Model folders: create one from a preset, or describe one.
    Model {
        #[command(subcommand)]
        action: crate::cli_model::ModelAction,
    },
    /// Print a model's continuation of a prompt (a quick check; sampling with a seed).
    Generate(crate::cli_model::GenerateArgs),
    /// Measure generation throughput or a training step on a model folder.
    Bench {
        #[command(subcommand)]
        action: crate::cli_model::BenchAction,
    },
    /// Sentence embeddings from an encoder folder (BERT, RoBERTa), one line per text.
    Embed(crate::cli_embed::EmbedArgs),
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// `org/name` or `org/name@revision`.
    pub repo: String,
    /// Only files matching these globs (`*`, `?`, `**`), e.g. `--include '*.json'`.
    #[arg(long)]
    pub include: Vec<String>,
    /// Resolve from the cache only (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Args, Debug)]
pub struct SftArgs {
    /// Model folder (or a hub snapshot folder from `retort pull`).
    pub model: String,
    /// JSONL of {"prompt","response"}, {"messages"} or {"text"} rows.
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
}

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

#[derive(Subcommand, Debug)]
pub enum ProfilesAction {
    /// Print a profile with every default filled in.
    Show {
        /// Preset name or TOML path.
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TasksAction {
    /// List task families.
    List,
    /// Print example instances with their full solution sets.
    Sample {
        /// Task name (`retort tasks list`).
        name: String,
        #[arg(short = 'n', long, default_value_t = 5)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Generator option, e.g. `--option min_solutions=4`.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
}

pub fn main_with(cli: Cli) -> Result<i32> {
    use crate::cpu_threads::on_compute_pool;
    match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Profiles { action } => cmd_profiles(action).map(|_| 0),
        Command::Runs { runs_dir } => cmd_runs(&runs_dir).map(|_| 0),
        Command::Doctor => cmd_doctor().map(|_| 0),
        Command::Tasks { action } => cmd_tasks(action).map(|_| 0),
        Command::Watch(args) => cmd_watch(args),
        Command::Pull(args) => cmd_pull(args).map(|_| 0),
        // The compute commands run on rayon's pool (see `cpu_threads::on_compute_pool`).
        Command::Sft(args) => cmd_sft(args),
        Command::Eval(args) => on_compute_pool(|| crate::cli_eval::cmd_eval(args)),
        Command::Reward { action: crate::cli_eval::RewardAction::Test(args) } => crate::cli_eval::cmd_reward_test(args),
        Command::Report(args) => crate::cli_eval::cmd_report(args),
        Command::Model { action } => crate::cli_model::cmd_model(action).map(|_| 0),
        Command::Generate(args) => on_compute_pool(|| crate::cli_model::cmd_generate(&args)).map(|_| 0),
        Command::Bench { action } => on_compute_pool(|| crate::cli_model::cmd_bench(action)).map(|_| 0),
        Command::Embed(args) => on_compute_pool(|| crate::cli_embed::cmd_embed(&args)).map(|_| 0),
    }
}

fn load_profile(name: &str, sets: &[String]) -> Result<Profile> {
    Ok(Profile::load(name)?.apply_sets(sets)?)
}

fn cmd_run(args: RunArgs) -> Result<i32> {
    let launch = match &args.resume {
        Some(dir) => pipeline::prepare_resume(dir)?,
        None => {
            let name = args.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
            let profile = load_profile(name, &args.set)?;
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

fn cmd_profiles(action: Option<ProfilesAction>) -> Result<()> {
    match action {
        None => {
            for (name, text) in PRESETS {
                let p = Profile::parse(text, &format!("preset {name}"))?;
                let mark = if p.run.paper_scale { " [paper scale: needs a GPU and hub checkpoints]" } else { "" };
                let default = if *name == DEFAULT_PROFILE { " (default)" } else { "" };
                println!("{name:<24} {}{default}{mark}", p.run.description);
            }
            Ok(())
        }
        Some(ProfilesAction::Show { name, set }) => {
            print!("{}", load_profile(&name, &set)?.to_toml());
            Ok(())
        }
    }
}

fn cmd_runs(runs_dir: &Path) -> Result<()> {
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
            (Some(s), Some(e)) => crate::headless::fmt_duration((e - s).num_seconds() as f64),
            (Some(s), None) if status == Status::Running => {
                crate::headless::fmt_duration((chrono::Local::now().fixed_offset() - s).num_seconds() as f64)
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
                crate::headless::pick_metrics(values, 4)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", crate::headless::fmt_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            crate::bus::Event::StageFinished { stage, summary, .. } if !summary.is_empty() => Some(format!(
                "{stage}: {}",
                crate::headless::pick_metrics(summary, 4)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", crate::headless::fmt_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            _ => None,
        })
        .unwrap_or_default()
}

fn cmd_doctor() -> Result<()> {
    println!("retort {}{}", env!("CARGO_PKG_VERSION"), option_env!("RETORT_GIT_DESCRIBE").map(|g| format!(" ({g})")).unwrap_or_default());
    let features: Vec<&str> = [("cuda", cfg!(feature = "cuda")), ("metal", cfg!(feature = "metal"))]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
    println!("build features: {}", if features.is_empty() { "cpu only (default)".to_string() } else { features.join(", ") });
    println!("cpu: {} threads (rayon), {} logical cores", rayon::current_num_threads(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if cfg!(feature = "cuda") {
        match candle_core::Device::new_cuda(0) {
            Ok(_) => println!("cuda: device 0 available"),
            Err(e) => println!("cuda: compiled in, but no device: {e}"),
        }
    } else {
        println!("cuda: not compiled in (build with --features cuda)");
    }
    if cfg!(feature = "metal") {
        match candle_core::Device::new_metal(0) {
            Ok(_) => println!("metal: device 0 available"),
            Err(e) => println!("metal: compiled in, but no device: {e}"),
        }
    } else {
        println!("metal: not compiled in (build with --features metal)");
    }
    if let Some((total, avail)) = meminfo() {
        println!("memory: {:.1} GiB total, {:.1} GiB available", total / 1024.0 / 1024.0, avail / 1024.0 / 1024.0);
    }
    let cache = hub_cache_dir();
    let writable = probe_writable(&cache);
    println!("hugging face cache: {} ({})", cache.display(), if writable { "writable" } else { "NOT writable: set HF_HOME or HF_HUB_CACHE" });
    println!("offline mode (HF_HUB_OFFLINE): {}", if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") { "on" } else { "off" });
    Ok(())
}

/// The standard Hugging Face hub cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.
pub fn hub_cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache").join("huggingface").join("hub")
}

fn probe_writable(dir: &Path) -> bool {
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    let probe = dir.join(format!(".retort-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// (total, available) in KiB from /proc/meminfo.
fn meminfo() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok())
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

fn cmd_tasks(action: TasksAction) -> Result<()> {
    match action {
        TasksAction::List => {
            for (name, about) in crate::tasks::names() {
                println!("{name:<14} {about}");
            }
            Ok(())
        }
        TasksAction::Sample { name, n, seed, options } => {
            let table = crate::profile::parse_key_values(&options, "--option").map_err(anyhow::Error::msg)?;
            let task = crate::tasks::build(&name, &table)?;
            let mut rng = crate::rng::Rng::derive(seed, "tasks-sample");
            let items = crate::tasks::generate_split(task.as_ref(), &mut rng, n, &Default::default())?;
            for inst in items {
                println!("{} {}", inst.id, serde_json::to_string(&inst.data)?);
                println!("  prompt:   {:?}", inst.prompt);
                match task.solutions(&inst) {
                    Some(sols) => {
                        let shown: Vec<String> = sols.iter().take(12).map(|s| format!("{:?}", task.render_solution(&inst, s))).collect();
                        let more = if sols.len() > 12 { format!(" ... ({} more)", sols.len() - 12) } else { String::new() };
                        println!("  {} solutions: {}{more}", sols.len(), shown.join(", "));
                    }
                    None => println!("  (solutions not enumerable)"),
                }
            }
            Ok(())
        }
    }
}

fn cmd_watch(args: WatchArgs) -> Result<i32> {
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

fn cmd_pull(args: PullArgs) -> Result<()> {
    let mut req = crate::hub::PullRequest::parse(&args.repo)?;
    req.include = args.include;
    req.offline = args.offline;
    let config = crate::hub::HubConfig::from_env();
    let show_bar = std::io::stderr().is_terminal();
    let mut on_progress = |p: crate::hub::PullProgress| match p {
        crate::hub::PullProgress::Resolved { repo, commit, files } => eprintln!("{repo} at {commit}: {} files", files.len()),
        crate::hub::PullProgress::FileStarted { file, index, count } => eprintln!("[{}/{count}] {file}", index + 1),
        crate::hub::PullProgress::FileBytes { done, total, .. } if show_bar => {
            let pct = if total > 0 { 100.0 * done as f64 / total as f64 } else { 100.0 };
            let filled = (pct / 5.0) as usize;
            eprint!("\r  [{}{}] {pct:5.1}% {:.1}/{:.1} MB", "#".repeat(filled), " ".repeat(20 - filled.min(20)), done as f64 / 1e6, total as f64 / 1e6);
        }
        crate::hub::PullProgress::FileBytes { .. } => {}
        crate::hub::PullProgress::FileDone { cached, .. } => {
            if show_bar && !cached {
                eprintln!();
            }
        }
    };
    let snapshot = crate::hub::pull(&config, &req, &mut on_progress)?;
    println!("{}", snapshot.display());
    Ok(())
}

/// `retort sft MODEL --jsonl F` is a one-stage profile; `--set` keys address the stage.
fn cmd_sft(args: SftArgs) -> Result<i32> {
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
    let launch = pipeline::prepare_new(profile, &args.runs_dir, None)?;
    eprintln!("retort: run folder {}", launch.dir.path.display());
    let interactive = !args.headless && std::io::stdout().is_terminal();
    let mut sink: Box<dyn Sink> = if interactive { Box::new(crate::ui::sink::TuiSink) } else { Box::new(HeadlessSink { quiet: false }) };
    let outcome = pipeline::execute(launch, sink.as_mut(), false)?;
    Ok(outcome_code(outcome))
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn outcome_code(o: crate::bus::Outcome) -> i32 {
    match o {
        crate::bus::Outcome::Finished => 0,
        crate::bus::Outcome::Failed => 1,
        crate::bus::Outcome::Interrupted => 130,
    }
}
