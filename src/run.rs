//! The run directory: everything a run produces, in one folder that can reproduce it.
//!
//! ```text
//! runs/<name>-<YYYYMMDD-HHMMSS>/
//!   profile.toml      the resolved profile (defaults filled in)
//!   manifest.json     version, seed, device, times, status, per-stage status and outputs
//!   events.jsonl      append-only event log (the contract `retort watch` reads)
//!   control.jsonl     controls sent by `retort watch` (pause, resume, stop, checkpoint)
//!   .lock             held (flock) by the process running the run; see [`RunLock`]
//!   <stage>/          each stage's outputs (data, model folders, checkpoints/, samples)
//! ```
//! Everything except the two append-only logs is written atomically.

use crate::bus::{Control, Outcome, Record};
use crate::fsutil::write_atomic;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const EVENTS: &str = "events.jsonl";
pub const PROFILE: &str = "profile.toml";
pub const CONTROL: &str = "control.jsonl";
pub const LOCK: &str = ".lock";

/// An exclusive advisory lock on a run folder, held by the process that runs it for as long
/// as it runs. The kernel drops it when that process dies (even on `kill -9`), so a stale
/// lock cannot outlive its holder; a second `retort run --resume` of the same folder is
/// refused while the first one lives. The holder's PID is written into the lock file so the
/// refusal can name it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    pub fn acquire(run: &Path) -> Result<RunLock> {
        use std::os::fd::AsRawFd;
        let path = run.join(LOCK);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on an fd we own; LOCK_NB makes it return at once.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
                let who = holder.map_or("another process".to_string(), |pid| format!("process {pid}"));
                bail!(
                    "{} is in use by {who} (a run or a resume of it is live); wait for it to end, or stop it first{}",
                    run.display(),
                    holder.map_or(String::new(), |pid| format!(" (`retort watch {}` then s, or kill {pid})", run.display()))
                );
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        // Only the holder writes, so no one reads a half-written PID for long; a reader that
        // does simply names "another process".
        file.set_len(0).and_then(|_| file.write_all(std::process::id().to_string().as_bytes())).ok();
        Ok(RunLock { _file: file })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Finished,
    Failed,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }
}

impl From<Outcome> for Status {
    fn from(o: Outcome) -> Status {
        match o {
            Outcome::Finished => Status::Finished,
            Outcome::Failed => Status::Failed,
            Outcome::Interrupted => Status::Interrupted,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    pub name: String,
    pub kind: String,
    pub status: Status,
    pub started: Option<String>,
    pub ended: Option<String>,
    /// The stage's main artifact (a data folder, a model folder), relative to the run folder.
    pub output: Option<String>,
    #[serde(default)]
    pub summary: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub retort_version: String,
    pub git_describe: Option<String>,
    pub profile: String,
    pub seed: u64,
    pub device: String,
    pub started: String,
    pub ended: Option<String>,
    pub status: Status,
    /// The process writing this run; lets `retort runs` tell a live run from a killed one.
    pub pid: u32,
    #[serde(default)]
    pub error: Option<String>,
    pub stages: Vec<StageRecord>,
}

pub fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// An open run folder.
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Create `runs_dir/<name>-<YYYYMMDD-HHMMSS>`; two runs started the same second get
    /// `-2`, `-3`, ... because `create_dir` fails on an existing folder (no race).
    pub fn create(runs_dir: &Path, name: &str) -> Result<RunDir> {
        fs::create_dir_all(runs_dir).with_context(|| {
            format!("cannot create the runs folder {} (choose another with --runs-dir)", runs_dir.display())
        })?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        for attempt in 1..1000 {
            let dir_name = if attempt == 1 { format!("{name}-{stamp}") } else { format!("{name}-{stamp}-{attempt}") };
            let path = runs_dir.join(dir_name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a run folder in {} (is it writable? choose another with --runs-dir)", runs_dir.display())
                    })
                }
            }
        }
        bail!("could not find a free run folder name in {}", runs_dir.display())
    }

    /// Open an existing run folder for `--resume`, refusing folders that are not runs.
    pub fn open(path: &Path) -> Result<RunDir> {
        if !path.join(MANIFEST).is_file() || !path.join(PROFILE).is_file() {
            bail!(
                "{} is not a retort run folder (it has no {MANIFEST} and {PROFILE}); `retort runs` lists runs",
                path.display()
            );
        }
        Ok(RunDir { path: path.to_path_buf() })
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.path.join(MANIFEST)
    }

    pub fn events_path(&self) -> PathBuf {
        self.path.join(EVENTS)
    }

    pub fn read_manifest(&self) -> Result<Manifest> {
        read_manifest(&self.path)
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let json = serde_json::to_vec_pretty(m)?;
        write_atomic(&self.manifest_path(), &json).with_context(|| format!("cannot write {}", self.manifest_path().display()))
    }

    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.path.join(stage)
    }
}

pub fn read_manifest(run: &Path) -> Result<Manifest> {
    let p = run.join(MANIFEST);
    let text = fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid retort manifest", p.display()))
}

/// Appends records to `events.jsonl`, one JSON object per line, flushed as written.
pub struct EventLog {
    file: File,
}

impl EventLog {
    pub fn open(path: &Path) -> Result<EventLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        Ok(EventLog { file })
    }

    pub fn append(&mut self, rec: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write call per line so a concurrent reader sees whole lines or a growing tail.
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

/// Read every complete, parseable record of an events file; returns them and how many lines
/// were skipped (unknown event kinds from another retort version, or a torn last line).
pub fn read_events(path: &Path) -> Result<(Vec<Record>, usize)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => out.push(r),
            Err(_) => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// Append a control request for a running process to pick up (how `retort watch` pauses,
/// checkpoints or stops a run started elsewhere).
pub fn send_control(run: &Path, control: Control) -> Result<()> {
    let p = run.join(CONTROL);
    let mut f = OpenOptions::new().create(true).append(true).open(&p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut line = serde_json::to_vec(&control)?;
    line.push(b'\n');
    f.write_all(&line)?;
    Ok(())
}

/// Is the process that wrote a manifest still alive? (A hard-killed run stays `running`
/// in its manifest; this tells the truth.)
pub fn pid_alive(pid: u32) -> bool {
    // kill(pid, 0) checks existence without sending anything.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The status to show: a `running` manifest whose process is gone was killed.
pub fn effective_status(m: &Manifest) -> Status {
    if m.status == Status::Running && !pid_alive(m.pid) {
        Status::Interrupted
    } else {
        m.status
    }
}

/// Run folders under `runs_dir`, newest first.
pub fn list_runs(runs_dir: &Path) -> Vec<(PathBuf, Manifest)> {
    let mut runs: Vec<(PathBuf, Manifest)> = fs::read_dir(runs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            read_manifest(&p).ok().map(|m| (p, m))
        })
        .collect();
    runs.sort_by(|a, b| b.1.started.cmp(&a.1.started).then(b.0.cmp(&a.0)));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_second_runs_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let a = RunDir::create(d.path(), "x").unwrap();
        let b = RunDir::create(d.path(), "x").unwrap();
        assert_ne!(a.path, b.path);
        assert!(a.path.is_dir() && b.path.is_dir());
    }

    #[test]
    fn a_run_folder_is_locked_by_one_holder_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(d.path()).unwrap();
        let e = format!("{:#}", RunLock::acquire(d.path()).unwrap_err());
        assert!(e.contains(&format!("in use by process {}", std::process::id())), "{e}");
        drop(first);
        RunLock::acquire(d.path()).expect("free again once the holder let go");
    }

    #[test]
    fn open_refuses_a_plain_folder() {
        let d = tempfile::tempdir().unwrap();
        let e = RunDir::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("not a retort run folder"), "{e}");
    }
}
