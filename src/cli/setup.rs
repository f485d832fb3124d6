//! `retort profiles`, `retort tasks`, `retort doctor` and `retort pull`: looking at what
//! retort has and setting up a machine.

use super::load_profile;
use crate::profile::{Profile, DEFAULT_PROFILE, PRESETS};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
retort pull Qwen/Qwen2.5-0.5B-Instruct --include '*.json' --include '*.safetensors'\n  \
retort pull --dataset AdaptLLM/finance-tasks --include 'FiQA_SA/*'\n\n\
Prints the snapshot folder. Files land in the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub), \
shared with Python's huggingface_hub; HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE=1 apply.")]
pub struct PullArgs {
    /// `org/name` or `org/name@revision`.
    pub repo: String,
    /// A data set repository instead of a model (`datasets--org--name` in the cache), e.g.
    /// `retort pull --dataset AdaptLLM/finance-tasks --include 'FiQA_SA/*'`.
    #[arg(long)]
    pub dataset: bool,
    /// Only files matching these globs (`*`, `?`, `**`), e.g. `--include '*.json'`.
    #[arg(long)]
    pub include: Vec<String>,
    /// Resolve from the cache only (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

pub fn cmd_profiles(action: Option<ProfilesAction>) -> Result<()> {
    match action {
        None => {
            for (name, text) in PRESETS {
                let p = Profile::parse(text, &format!("preset {name}"))?;
                let mark = match (p.run.paper_scale, p.run.gpu.as_str()) {
                    (false, _) => String::new(),
                    (true, "") => " [paper scale: needs a GPU and hub checkpoints]".to_string(),
                    (true, gpu) => format!(" [paper scale, GPU: {gpu}]"),
                };
                let default = if *name == DEFAULT_PROFILE { " (default)" } else { "" };
                println!("{name:<24} {}{default}{mark}", p.run.description);
            }
            Ok(())
        }
        Some(ProfilesAction::Show { name, set }) => {
            let profile = load_profile(&name, &set)?;
            for line in profile.deprecations() {
                eprintln!("retort: warning: {line}");
            }
            print!("{}", profile.to_toml());
            Ok(())
        }
    }
}

pub fn cmd_tasks(action: TasksAction) -> Result<()> {
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

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Check a device end to end with built-in tiny models: decoder and encoder forward against
    /// the CPU (f32 and bf16), sampling, SFT / GRPO / FlowRL steps (finite losses, SFT's loss
    /// falling), and generation and training speed. One PASS / FAIL line per check; exit code 1
    /// on any failure. The first command to run on a new machine.
    #[arg(long)]
    pub selftest: bool,
    /// The device the self-test runs on: cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu", requires = "selftest")]
    pub device: String,
}

pub fn cmd_doctor(args: DoctorArgs) -> Result<i32> {
    cmd_doctor_report()?;
    if !args.selftest {
        return Ok(0);
    }
    println!("
self-test on {} (tiny models, seeded):", args.device);
    let checks = crate::cpu_threads::on_compute_pool(|| crate::selftest::run_on(&args.device))?;
    let mut failed = 0;
    for c in &checks {
        println!("{}", c.line());
        failed += usize::from(c.pass == Some(false));
    }
    let judged = checks.iter().filter(|c| c.pass.is_some()).count();
    println!("{} of {judged} checks passed on {}", judged - failed, args.device);
    Ok(if failed == 0 { 0 } else { 1 })
}

fn cmd_doctor_report() -> Result<()> {
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

pub fn cmd_pull(args: PullArgs) -> Result<()> {
    use crate::hub::{PullProgress, PullRequest, RepoKind};
    let mut req = PullRequest::parse(&args.repo)?;
    req.kind = if args.dataset { RepoKind::Dataset } else { RepoKind::Model };
    req.include = args.include;
    req.offline = args.offline;
    let config = crate::hub::HubConfig::from_env();
    let show_bar = std::io::stderr().is_terminal();
    // Where the rate of the current file is measured from: the first event with bytes on
    // disk, so that bytes resumed from an earlier run do not count as downloaded now.
    let mut rate_base: Option<(Instant, u64)> = None;
    let mut on_progress = |p: PullProgress| match p {
        PullProgress::Resolved { repo, commit, files } => eprintln!("{} {repo} at {commit}: {} files", req.kind.noun(), files.len()),
        PullProgress::FileStarted { file, index, count } => {
            rate_base = None;
            eprintln!("[{}/{count}] {file}", index + 1);
        }
        PullProgress::FileBytes { done, total, .. } if show_bar => {
            if done > 0 && rate_base.is_none() {
                rate_base = Some((Instant::now(), done));
            }
            let rate = rate_base.and_then(|(since, base)| {
                let secs = since.elapsed().as_secs_f64();
                (secs >= 0.5).then(|| done.saturating_sub(base) as f64 / secs)
            });
            eprint!("\r  {}  ", transfer_line(done, total, rate));
        }
        PullProgress::FileBytes { .. } => {}
        PullProgress::FileDone { cached, .. } => {
            if show_bar && !cached {
                eprintln!();
            }
        }
    };
    let snapshot = crate::hub::pull(&config, &req, &mut on_progress)?;
    println!("{}", snapshot.display());
    Ok(())
}

/// One file's transfer: a bar, percent, MB done of total, and, once a rate is known, the
/// rate and the time left at that rate.
fn transfer_line(done: u64, total: u64, bytes_per_sec: Option<f64>) -> String {
    let fraction = if total > 0 { (done as f64 / total as f64).min(1.0) } else { 1.0 };
    let filled = (fraction * 20.0) as usize;
    let mut line = format!(
        "[{}{}] {:5.1}% {:.1}/{:.1} MB",
        "#".repeat(filled),
        " ".repeat(20 - filled),
        100.0 * fraction,
        done as f64 / 1e6,
        total as f64 / 1e6
    );
    if let Some(rate) = bytes_per_sec.filter(|r| *r > 0.0) {
        let left = total.saturating_sub(done) as f64 / rate;
        line.push_str(&format!("  {:.1} MB/s  ETA {}", rate / 1e6, crate::ui::headless::fmt_duration(left)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::transfer_line;

    #[test]
    fn transfer_line_shows_bytes_rate_and_time_left() {
        // 30 of 120 MB at 2.5 MB/s: a quarter (5 of 20 marks), 90 MB left = 36 s.
        assert_eq!(
            transfer_line(30_000_000, 120_000_000, Some(2_500_000.0)),
            "[#####               ]  25.0% 30.0/120.0 MB  2.5 MB/s  ETA 0:36"
        );
        // No rate yet: no ETA. An empty file is complete.
        assert_eq!(transfer_line(0, 1_000_000, None), "[                    ]   0.0% 0.0/1.0 MB");
        assert_eq!(transfer_line(0, 0, Some(0.0)), "[####################] 100.0% 0.0/0.0 MB");
    }
}
