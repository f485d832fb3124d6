//! Runs a profile: stages on a worker thread, a recorder that writes `events.jsonl`, and a
//! sink (headless lines, JSON, or the dashboard) on the calling thread.
//!
//! ```text
//!  worker ──Event──▶ recorder ──▶ events.jsonl (every event, flushed)
//!    ▲                  └──────▶ sink (display updates may be dropped under load; logs never)
//!    └──Control── signals (SIGINT/SIGTERM/SIGHUP), control.jsonl (`retort watch`), dashboard keys
//! ```

use crate::bus::{Control, ControlRx, Emitter, Event, Level, Outcome, Record, StageInfo};
use crate::profile::Profile;
use crate::run::{self, EventLog, Manifest, RunDir, RunLock, StageRecord, Status};
use crate::stage::{Interrupted, StageCtx};
use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many display updates may queue for a slow sink before they are dropped.
const SINK_BACKLOG: usize = 4096;

/// Set when a signal (Ctrl-C, SIGTERM, SIGHUP) asked the run to stop. A sink that waits for
/// keys (the dashboard) then leaves by itself once the run has checkpointed and ended,
/// instead of waiting for a key that nobody may be there to press (SIGHUP: the terminal is
/// gone).
pub static SIGNAL_STOP: AtomicBool = AtomicBool::new(false);

/// Where a run's events go besides `events.jsonl`.
pub trait Sink {
    /// Consume records until the run finishes (a `RunFinished` record or a closed channel).
    fn drive(&mut self, records: Receiver<Record>, controls: Sender<Control>) -> Result<()>;
    /// What to do right before the process exits without unwinding (a second Ctrl-C): e.g.
    /// give the terminal back. Called from the signal thread.
    fn hard_exit_hook(&self) -> fn() {
        || {}
    }
}

/// A run ready to start: a new folder or one being resumed.
pub struct Launch {
    pub profile: Profile,
    pub dir: RunDir,
    pub resumed: bool,
    /// Held until the run ends, so no second process runs the same folder.
    pub lock: RunLock,
}

/// Create a run folder for `profile` with its resolved profile and a fresh manifest.
pub fn prepare_new(profile: Profile, runs_dir: &std::path::Path, name: Option<&str>) -> Result<Launch> {
    for s in &profile.stages {
        s.config.preflight().with_context(|| format!("stage `{}`", s.name))?;
    }
    let dir = RunDir::create(runs_dir, name.unwrap_or(&profile.run.name))?;
    let lock = RunLock::acquire(&dir.path)?;
    let toml_text = profile.to_toml();
    crate::fsutil::write_atomic(&dir.path.join(run::PROFILE), toml_text.as_bytes())
        .with_context(|| format!("cannot write {}", dir.path.join(run::PROFILE).display()))?;
    let manifest = Manifest {
        retort_version: env!("CARGO_PKG_VERSION").to_string(),
        git_describe: option_env!("RETORT_GIT_DESCRIBE").map(str::to_string),
        profile: profile.run.name.clone(),
        seed: profile.run.seed,
        device: profile.run.device.clone(),
        started: run::now_rfc3339(),
        ended: None,
        status: Status::Pending,
        pid: std::process::id(),
        error: None,
        stages: profile
            .stages
            .iter()
            .map(|s| StageRecord {
                name: s.name.clone(),
                kind: s.kind.to_string(),
                status: Status::Pending,
                started: None,
                ended: None,
                output: None,
                summary: BTreeMap::new(),
                table: None,
                error: None,
            })
            .collect(),
    };
    dir.write_manifest(&manifest)?;
    Ok(Launch { profile, dir, resumed: false, lock })
}

/// Reopen an interrupted or failed run: finished stages are skipped, the stage that was
/// running restarts (from its last checkpoint when it keeps them).
pub fn prepare_resume(path: &std::path::Path) -> Result<Launch> {
    let dir = RunDir::open(path)?;
    // Lock before reading the status: two resumes started at the same moment both see
    // "interrupted", but only one of them gets the lock.
    let lock = RunLock::acquire(&dir.path)?;
    let manifest = dir.read_manifest()?;
    let status = run::effective_status(&manifest);
    match status {
        Status::Finished => bail!("{} already finished; nothing to resume (start a new run with `retort run`)", path.display()),
        Status::Running => bail!(
            "{} is still running (process {}); stop it first (`retort watch` then q, or kill {})",
            path.display(),
            manifest.pid,
            manifest.pid
        ),
        _ => {}
    }
    let profile_path = dir.path.join(run::PROFILE);
    let profile = Profile::load(&profile_path.display().to_string())?;
    if profile.stages.len() != manifest.stages.len()
        || profile.stages.iter().zip(&manifest.stages).any(|(p, m)| p.name != m.name)
    {
        bail!("{}: profile.toml and manifest.json disagree about the stages; the folder was edited by hand", path.display());
    }
    Ok(Launch { profile, dir, resumed: true, lock })
}

/// Run to the end, feeding `sink`. Returns how the run ended.
pub fn execute(launch: Launch, sink: &mut dyn Sink, echo_json: bool) -> Result<Outcome> {
    let Launch { profile, dir, resumed, lock: _lock } = launch;
    let mut manifest = dir.read_manifest()?;
    let device_spec = crate::device::DeviceSpec::parse(&profile.run.device).map_err(anyhow::Error::msg)?;
    let device = device_spec.open()?;
    let dtype = crate::device::parse_dtype(&profile.run.dtype).map_err(anyhow::Error::msg)?;

    manifest.status = Status::Running;
    manifest.pid = std::process::id();
    manifest.ended = None;
    manifest.error = None;
    manifest.device = crate::device::describe(&device);
    for s in manifest.stages.iter_mut() {
        if s.status != Status::Finished {
            s.status = Status::Pending;
            s.error = None;
        }
    }
    dir.write_manifest(&manifest)?;

    let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<Event>();
    let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded::<Control>();
    let (sink_tx, sink_rx) = crossbeam_channel::bounded::<Record>(SINK_BACKLOG);
    let finished = Arc::new(AtomicBool::new(false));

    let mut log = EventLog::open(&dir.events_path())?;
    let recorder = std::thread::Builder::new().name("recorder".into()).spawn(move || -> Result<()> {
        for event in ev_rx {
            let last = matches!(event, Event::RunFinished { .. });
            let rec = Record::now(event);
            log.append(&rec).context("cannot append to events.jsonl")?;
            if echo_json {
                if let Ok(line) = serde_json::to_string(&rec) {
                    println!("{line}");
                }
            }
            if rec.event.is_droppable() {
                let _ = sink_tx.try_send(rec);
            } else {
                let _ = sink_tx.send(rec);
            }
            if last {
                break;
            }
        }
        Ok(())
    })?;

    let signals = spawn_signal_watcher(ctl_tx.clone(), dir.path.clone(), sink.hard_exit_hook())?;
    let poller = spawn_control_file_poller(dir.path.join(run::CONTROL), ctl_tx.clone(), finished.clone())?;

    let worker_dir = dir.path.clone();
    let emitter = Emitter::new(ev_tx);
    let worker = std::thread::Builder::new().name("worker".into()).spawn(move || {
        let mut control = ControlRx::new(ctl_rx, emitter.clone());
        let dir = RunDir { path: worker_dir };
        crate::cpu_threads::on_compute_pool(|| run_stages(&profile, &dir, &mut manifest, &emitter, &mut control, device, dtype, resumed))
    })?;

    let sink_result = sink.drive(sink_rx, ctl_tx);
    let outcome = worker.join().unwrap_or(Outcome::Failed);
    finished.store(true, Ordering::SeqCst);
    signals.close();
    let _ = poller.join();
    match recorder.join() {
        Ok(r) => r?,
        Err(_) => bail!("the event recorder crashed"),
    }
    sink_result?;
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
fn run_stages(
    profile: &Profile,
    dir: &RunDir,
    manifest: &mut Manifest,
    emitter: &Emitter,
    control: &mut ControlRx,
    device: candle_core::Device,
    dtype: Option<candle_core::DType>,
    resumed: bool,
) -> Outcome {
    emitter.send(Event::RunStarted {
        run: dir.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        profile: profile.run.name.clone(),
        stages: profile.stages.iter().map(|s| StageInfo { name: s.name.clone(), kind: s.kind.to_string() }).collect(),
        device: manifest.device.clone(),
        seed: profile.run.seed,
        resumed,
    });
    let save = |m: &Manifest| {
        if let Err(e) = dir.write_manifest(m) {
            emitter.log(Level::Error, crate::error_text::describe(&e));
        }
    };
    let mut outputs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut outcome = Outcome::Finished;
    let mut error: Option<String> = None;
    let total_stages = profile.stages.len();
    for (i, stage) in profile.stages.iter().enumerate() {
        let record = &manifest.stages[i];
        if record.status == Status::Finished {
            if let Some(o) = &record.output {
                outputs.insert(stage.name.clone(), dir.path.join(o));
            }
            emitter.info(format!("stage {} already finished; skipping", stage.name));
            continue;
        }
        if control.poll().stop {
            outcome = Outcome::Interrupted;
            break;
        }
        let stage_dir = dir.stage_dir(&stage.name);
        let resuming = stage_dir.exists();
        if let Err(e) = crate::fsutil::ensure_dir(&stage_dir) {
            error = Some(crate::error_text::describe(&e));
            outcome = Outcome::Failed;
            break;
        }
        manifest.stages[i].status = Status::Running;
        manifest.stages[i].started = Some(run::now_rfc3339());
        save(manifest);
        let (total, unit) = stage.config.total_units();
        emitter.send(Event::StageStarted {
            stage: stage.name.clone(),
            kind: stage.kind.to_string(),
            index: i,
            total_stages,
            total,
            unit: unit.to_string(),
        });
        let stage_emitter = emitter.for_stage(&stage.name);
        for line in stage.deprecation_lines() {
            stage_emitter.warn(line);
        }
        let mut ctx = StageCtx {
            run_dir: &dir.path,
            dir: stage_dir,
            name: stage.name.clone(),
            seed: profile.run.seed,
            device: device.clone(),
            dtype,
            events: stage_emitter.clone(),
            control: &mut *control,
            outputs: &outputs,
            resuming,
        };
        let result = catch_unwind(AssertUnwindSafe(|| stage.config.run(&mut ctx)))
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("internal error (panic): {}", panic_message(&panic))));
        let rec = &mut manifest.stages[i];
        rec.ended = Some(run::now_rfc3339());
        match result {
            Ok(out) => {
                rec.status = Status::Finished;
                rec.output = out.output.as_ref().map(|p| relative_to(p, &dir.path));
                rec.summary = out.summary.clone();
                rec.table = out.table.clone();
                if let Some(p) = out.output {
                    outputs.insert(stage.name.clone(), p);
                }
                save(manifest);
                emitter.send(Event::StageFinished {
                    stage: stage.name.clone(),
                    outcome: Outcome::Finished,
                    summary: out.summary,
                    table: out.table,
                });
            }
            Err(e) if e.is::<Interrupted>() => {
                rec.status = Status::Interrupted;
                save(manifest);
                emitter.send(Event::StageFinished {
                    stage: stage.name.clone(),
                    outcome: Outcome::Interrupted,
                    summary: BTreeMap::new(),
                    table: None,
                });
                outcome = Outcome::Interrupted;
                break;
            }
            Err(e) => {
                let msg = format!("stage {}: {}", stage.name, crate::error_text::describe(&e));
                rec.status = Status::Failed;
                rec.error = Some(crate::error_text::describe(&e));
                save(manifest);
                stage_emitter.log(Level::Error, crate::error_text::describe(&e));
                emitter.send(Event::StageFinished {
                    stage: stage.name.clone(),
                    outcome: Outcome::Failed,
                    summary: BTreeMap::new(),
                    table: None,
                });
                error = Some(msg);
                outcome = Outcome::Failed;
                break;
            }
        }
    }
    manifest.status = outcome.into();
    manifest.ended = Some(run::now_rfc3339());
    manifest.error = error.clone();
    save(manifest);
    emitter.send(Event::RunFinished { outcome, error });
    outcome
}

fn relative_to(p: &std::path::Path, base: &std::path::Path) -> String {
    p.strip_prefix(base).unwrap_or(p).display().to_string()
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// First SIGINT/SIGTERM/SIGHUP: graceful stop (checkpoint, status `interrupted`). A second
/// one means the user does not want to wait: mark the run interrupted and exit now.
fn spawn_signal_watcher(ctl: Sender<Control>, run_dir: PathBuf, before_exit: fn()) -> Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
    let handle = signals.handle();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut count = 0;
        for _sig in signals.forever() {
            count += 1;
            if count == 1 {
                SIGNAL_STOP.store(true, Ordering::SeqCst);
                let _ = ctl.send(Control::Stop);
            } else {
                if let Ok(mut m) = run::read_manifest(&run_dir) {
                    m.status = Status::Interrupted;
                    m.ended = Some(run::now_rfc3339());
                    let _ = RunDir { path: run_dir.clone() }.write_manifest(&m);
                }
                before_exit();
                eprintln!("retort: second interrupt, exiting without waiting for a checkpoint");
                std::process::exit(130);
            }
        }
    })?;
    Ok(handle)
}

/// Follow `control.jsonl` (appended by `retort watch`) and forward its controls.
fn spawn_control_file_poller(
    path: PathBuf,
    ctl: Sender<Control>,
    finished: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    // Controls written before this run (or attempt) started are stale.
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(std::thread::Builder::new().name("control-file".into()).spawn(move || {
        let mut pending = String::new();
        while !finished.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(mut f) = std::fs::File::open(&path) else { continue };
            if f.seek(SeekFrom::Start(offset)).is_err() {
                continue;
            }
            let mut buf = String::new();
            if let Ok(n) = f.read_to_string(&mut buf) {
                offset += n as u64;
                pending.push_str(&buf);
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    if let Ok(c) = serde_json::from_str::<Control>(line.trim()) {
                        let _ = ctl.send(c);
                    }
                }
            }
        }
    })?)
}
