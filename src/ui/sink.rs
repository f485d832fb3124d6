//! The dashboard as a run's sink, and `retort watch`: the same dashboard fed from a run's
//! `events.jsonl`, with pause / checkpoint / stop sent back through its `control.jsonl`.

use crate::bus::{Control, Record};
use crate::pipeline::Sink;
use crate::run;
use crate::ui::tui::{run_dashboard, App};
use anyhow::Result;
use crossbeam_channel::{Receiver, Sender};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Full-screen dashboard for a run started in this process.
pub struct TuiSink;

impl Sink for TuiSink {
    fn drive(&mut self, records: Receiver<Record>, controls: Sender<Control>) -> Result<()> {
        crate::ui::tui::TUI_ACTIVE.store(true, Ordering::SeqCst);
        let result = run_dashboard(records, Some(controls), App::new(true));
        crate::ui::tui::TUI_ACTIVE.store(false, Ordering::SeqCst);
        result
    }

    fn hard_exit_hook(&self) -> fn() {
        crate::ui::tui::restore_if_active
    }
}

/// Watch a run folder: replay what is there, then follow the log as it grows. When the run
/// is alive, the dashboard's pause / checkpoint / stop keys reach it via `control.jsonl`.
pub fn watch_dashboard(run_dir: &Path) -> Result<()> {
    let events = run_dir.join(run::EVENTS);
    // A run that has just started may not have written its log yet.
    for _ in 0..50 {
        if events.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = run::read_manifest(run_dir).map(|m| run::effective_status(&m) == run::Status::Running).unwrap_or(false);
    let records = crate::ui::follow::spawn(&events, Duration::from_millis(200))?;
    let controls = if live {
        let (tx, rx) = crossbeam_channel::unbounded::<Control>();
        let dir = run_dir.to_path_buf();
        std::thread::spawn(move || {
            for c in rx {
                if let Err(e) = run::send_control(&dir, c) {
                    eprintln!("retort: cannot send {c:?}: {e:#}");
                }
            }
        });
        Some(tx)
    } else {
        None
    };
    crate::ui::tui::TUI_ACTIVE.store(true, Ordering::SeqCst);
    let result = run_dashboard(records, controls, App::new(live));
    crate::ui::tui::TUI_ACTIVE.store(false, Ordering::SeqCst);
    result
}

/// Headless watch: print the log as lines, following a live run until it finishes.
pub fn watch_lines(run_dir: &Path) -> Result<()> {
    let events = run_dir.join(run::EVENTS);
    let mut follower = crate::ui::follow::Follower::open(&events)?;
    let mut folder = crate::ui::headless::LineFolder::new();
    loop {
        let batch = follower.poll()?;
        let mut finished = false;
        for r in &batch {
            finished |= matches!(r.event, crate::bus::Event::RunFinished { .. });
            for l in folder.fold(r) {
                println!("{l}");
            }
        }
        // A live run may finish a stage and keep going; stop at the end of an attempt unless
        // the process is still writing (a resumed attempt would start a new one).
        let alive = run::read_manifest(run_dir).map(|m| run::effective_status(&m) == run::Status::Running).unwrap_or(false);
        if (finished && !alive) || (batch.is_empty() && !alive) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    if follower.lines_seen() == 0 {
        eprintln!("retort: {} is empty: the run wrote no event (it never started, or was killed before its first event)", events.display());
    }
    for line in follower.skipped_report() {
        eprintln!("retort: {line}");
    }
    Ok(())
}
