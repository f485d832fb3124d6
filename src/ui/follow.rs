//! Read a run's `events.jsonl` like `tail -f`, for `retort watch` and replay.
//!
//! The writer appends one JSON object per line. A reader can catch it mid-line, so the
//! unterminated tail is held back until its newline arrives. Lines that do not parse (an
//! event kind from a newer retort, a damaged line) are skipped and counted, never fatal:
//! the log is a contract that only grows (bus.rs).

use crate::bus::Record;
use crate::ui::tui::App;
use crossbeam_channel::{Receiver, Sender};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot open events log {path}: {source} (is this a run directory? events.jsonl appears when the run starts)")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot read events log {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// A line that could not be read, kept for diagnostics.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// One-based line number in the file.
    pub line: usize,
    pub reason: String,
}

/// Incremental reader of an `events.jsonl` file.
pub struct Follower {
    path: PathBuf,
    file: File,
    /// Bytes consumed so far (complete lines plus the held partial line).
    offset: u64,
    partial: Vec<u8>,
    lines_seen: usize,
    skipped: usize,
    /// The first [`KEEP_SKIPPED`] lines that could not be read, for the message.
    first_skipped: Vec<Skipped>,
}

/// How many unreadable lines are remembered with their numbers.
const KEEP_SKIPPED: usize = 5;

impl Follower {
    pub fn open(path: &Path) -> Result<Self, FollowError> {
        let file = File::open(path).map_err(|source| FollowError::Open { path: path.to_path_buf(), source })?;
        Ok(Follower {
            path: path.to_path_buf(),
            file,
            offset: 0,
            partial: Vec::new(),
            lines_seen: 0,
            skipped: 0,
            first_skipped: Vec::new(),
        })
    }

    /// Lines that failed to parse so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The first few unreadable lines, with their numbers and why.
    pub fn first_skipped(&self) -> &[Skipped] {
        &self.first_skipped
    }

    /// Lines read so far (parsed or not).
    pub fn lines_seen(&self) -> usize {
        self.lines_seen
    }

    /// What to tell a user about the unreadable lines, one line per problem (empty if none).
    pub fn skipped_report(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.first_skipped.iter().map(|s| format!("{}:{}: skipped: {}", self.path.display(), s.line, s.reason)).collect();
        if self.skipped > self.first_skipped.len() {
            out.push(format!("{}: … and {} more unreadable lines", self.path.display(), self.skipped - self.first_skipped.len()));
        }
        out
    }

    /// Every complete record appended since the last call (possibly none).
    pub fn poll(&mut self) -> Result<Vec<Record>, FollowError> {
        let read_err = |source| FollowError::Read { path: self.path.clone(), source };
        let len = self.file.metadata().map_err(read_err)?.len();
        if len < self.offset {
            // The file was truncated or replaced: start over rather than read garbage.
            self.offset = 0;
            self.partial.clear();
            self.lines_seen = 0;
            self.skipped = 0;
            self.first_skipped.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        let read_err = |source| FollowError::Read { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(self.offset)).map_err(read_err)?;
        let mut fresh = Vec::new();
        let n = (&mut self.file).take(len - self.offset).read_to_end(&mut fresh).map_err(|source| {
            FollowError::Read { path: self.path.clone(), source }
        })?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&fresh);
        Ok(self.take_complete_lines())
    }

    fn take_complete_lines(&mut self) -> Vec<Record> {
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::new();
        // `complete` ends with a newline, so the last piece of the split is empty, not a line.
        let pieces = complete.split(|&b| b == b'\n');
        let count = complete.iter().filter(|&&b| b == b'\n').count();
        for raw in pieces.take(count) {
            self.lines_seen += 1;
            if raw.is_empty() || raw == b"\r" {
                continue;
            }
            match parse_line(raw) {
                Ok(rec) => out.push(rec),
                Err(reason) => {
                    self.skipped += 1;
                    if self.first_skipped.len() < KEEP_SKIPPED {
                        self.first_skipped.push(Skipped { line: self.lines_seen, reason });
                    }
                }
            }
        }
        out
    }
}

fn parse_line(raw: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8 ({e}); the log is damaged"))?;
    let text = text.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Err("blank line".into());
    }
    serde_json::from_str(text).map_err(|e| match serde_json::from_str::<serde_json::Value>(text) {
        // Valid JSON that is no record this version knows: written by a newer retort.
        Ok(_) => format!("an event this version of retort does not know ({e}); a newer retort wrote it"),
        Err(_) => format!("not valid JSON ({e}); the log is damaged"),
    })
}

/// Fold a whole events log into a dashboard state, as it stands now.
/// Returns the state and how many lines were skipped.
pub fn replay(path: &Path) -> Result<(App, usize), FollowError> {
    let mut follower = Follower::open(path)?;
    let mut app = App::new(false);
    for rec in follower.poll()? {
        app.apply(&rec);
    }
    app.skipped = follower.skipped();
    Ok((app, follower.skipped()))
}

/// Follow `path` on a background thread, sending records as they appear, polling every
/// `interval`. The thread ends when the run reports `run_finished`, when the receiver is
/// dropped, or on a read error (sent as nothing: the dashboard keeps what it has).
pub fn spawn(path: &Path, interval: Duration) -> Result<Receiver<Record>, FollowError> {
    let mut follower = Follower::open(path)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("retort-follow".into())
        .spawn(move || follow_loop(&mut follower, &tx, interval))
        .map_err(|source| FollowError::Read { path: path.to_path_buf(), source })?;
    Ok(rx)
}

fn follow_loop(follower: &mut Follower, tx: &Sender<Record>, interval: Duration) {
    loop {
        let Ok(records) = follower.poll() else { return };
        let mut finished = false;
        for rec in records {
            finished |= matches!(rec.event, crate::bus::Event::RunFinished { .. });
            if tx.send(rec).is_err() {
                return;
            }
        }
        if finished {
            return;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Event, Outcome};
    use crate::ui::tui::app::tests::{metrics, progress, run_started, sample, stage_started};
    use std::io::Write;

    fn line(rec: &Record) -> String {
        let mut s = serde_json::to_string(rec).unwrap();
        s.push('\n');
        s
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.flush().unwrap();
    }

    fn recorded_run() -> Vec<Record> {
        let mut recs = vec![run_started(100.0), stage_started(100.0, "rl", "grpo", 1, 40)];
        for step in 1..=30u64 {
            let t = 100.0 + step as f64 * 2.0;
            recs.push(progress(t, "rl", step, 40, Some("update")));
            // Dyadic values: serde_json's default float parser may be off by one ulp, and this
            // test is about the fold, not the parser.
            let x = step as f64;
            recs.push(metrics(t, "rl", step, &[("critic/score/mean", x / 32.0), ("actor/entropy", 1.0 / (1u64 << (step % 10)) as f64)]));
            if step % 7 == 0 {
                recs.push(sample(t, step, "2+2?", "4", 1.0, step % 2 == 0));
            }
        }
        recs.push(Record { t: 170.0, event: Event::RunFinished { outcome: Outcome::Finished, error: None } });
        recs
    }

    #[test]
    fn a_partial_line_is_held_until_its_newline_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let first = line(&run_started(1.0));
        let second = line(&stage_started(2.0, "sft", "sft", 0, 10));
        let (head, tail) = second.split_at(second.len() / 2);
        append(&path, &format!("{first}{head}"));
        let mut f = Follower::open(&path).unwrap();
        let got = f.poll().unwrap();
        assert_eq!(got, vec![run_started(1.0)]);
        assert!(f.poll().unwrap().is_empty(), "half a line is not a record");
        append(&path, tail);
        assert_eq!(f.poll().unwrap(), vec![stage_started(2.0, "sft", "sft", 0, 10)]);
        assert_eq!(f.skipped(), 0);
    }

    #[test]
    fn appending_while_following_yields_only_the_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "").unwrap();
        let mut f = Follower::open(&path).unwrap();
        assert!(f.poll().unwrap().is_empty());
        let recs = recorded_run();
        for chunk in recs.chunks(9) {
            let text: String = chunk.iter().map(line).collect();
            append(&path, &text);
            assert_eq!(f.poll().unwrap(), chunk.to_vec());
        }
    }

    #[test]
    fn unknown_event_kinds_and_broken_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let text = format!(
            "{}{}\n{}\n\n{}",
            line(&run_started(1.0)),
            r#"{"t":2.0,"event":"hologram","intensity":3}"#,
            "{not json",
            line(&stage_started(3.0, "rl", "grpo", 1, 5)),
        );
        std::fs::write(&path, text).unwrap();
        let mut f = Follower::open(&path).unwrap();
        let got = f.poll().unwrap();
        assert_eq!(got, vec![run_started(1.0), stage_started(3.0, "rl", "grpo", 1, 5)]);
        assert_eq!(f.skipped(), 2, "blank lines are not counted as skipped");
        let lines: Vec<usize> = f.first_skipped().iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3], "line numbers count every non-blank line");
        let report = f.skipped_report().join("\n");
        assert!(report.contains("events.jsonl:2: skipped: an event this version of retort does not know"), "{report}");
        assert!(report.contains("events.jsonl:3: skipped: not valid JSON"), "{report}");
        let (app, skipped) = replay(&path).unwrap();
        assert_eq!(skipped, 2);
        assert_eq!(app.skipped, 2);
        assert_eq!(app.current.as_ref().unwrap().name, "rl");
    }

    #[test]
    fn replay_equals_folding_the_same_records_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let recs = recorded_run();
        std::fs::write(&path, recs.iter().map(line).collect::<String>()).unwrap();
        let (replayed, skipped) = replay(&path).unwrap();
        assert_eq!(skipped, 0);
        let mut live = App::new(false);
        for r in &recs {
            live.apply(r);
        }
        assert_eq!(replayed, live);
        assert_eq!(replayed.series("critic/score/mean").unwrap().count, 30);
        assert_eq!(replayed.samples.len(), 4);
    }

    #[test]
    fn a_truncated_file_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, line(&run_started(1.0)) + &line(&stage_started(2.0, "a", "sft", 0, 1))).unwrap();
        let mut f = Follower::open(&path).unwrap();
        assert_eq!(f.poll().unwrap().len(), 2);
        std::fs::write(&path, line(&run_started(5.0))).unwrap();
        assert_eq!(f.poll().unwrap(), vec![run_started(5.0)]);
    }

    #[test]
    fn the_follow_thread_delivers_appended_records_and_ends_with_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &line(&run_started(1.0)));
        let rx = spawn(&path, Duration::from_millis(5)).unwrap();
        let timeout = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(timeout).unwrap(), run_started(1.0));
        let done = Record { t: 2.0, event: Event::RunFinished { outcome: Outcome::Finished, error: None } };
        append(&path, &line(&done));
        assert_eq!(rx.recv_timeout(timeout).unwrap(), done);
        // The thread ends after run_finished, which disconnects the channel.
        assert!(matches!(rx.recv_timeout(timeout), Err(crossbeam_channel::RecvTimeoutError::Disconnected)));
    }

    #[test]
    fn opening_a_missing_log_names_the_file() {
        let err = Follower::open(Path::new("/nonexistent/run/events.jsonl")).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/run/events.jsonl"), "{msg}");
        assert!(msg.contains("run directory"), "{msg}");
    }
}
