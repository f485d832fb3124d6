//! retort: a terminal lab for LLM post-training research.
//!
//! See DESIGN.md in the shared folder for the map; each module's doc says its one job.

pub mod bench;
pub mod bus;
pub mod cli;
pub mod cli_embed;
pub mod cli_eval;
pub mod cli_model;
pub mod cpu_threads;
pub mod device;
pub mod eval;
pub mod eval_code;
pub mod fsutil;
pub mod generate;
pub mod headless;
pub mod hub;
pub mod malloc_tuning;
pub mod model;
pub mod pipeline;
pub mod profile;
pub mod report;
pub mod rng;
pub mod run;
pub mod sandbox;
pub mod stage;
pub mod stages;
pub mod tasks;
pub mod text;
pub mod train;
pub mod ui;

use std::sync::atomic::{AtomicBool, Ordering};

/// Set while the full-screen dashboard owns the terminal.
pub static TUI_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Set when a signal (Ctrl-C, SIGTERM, SIGHUP) asked the run to stop. The dashboard then
/// leaves by itself once the run has checkpointed and ended, instead of waiting for a key
/// that nobody may be there to press (SIGHUP: the terminal is gone).
pub static SIGNAL_STOP: AtomicBool = AtomicBool::new(false);

/// Give the terminal back (raw mode off, main screen) if the dashboard had it. Called on
/// paths that exit without unwinding (a second Ctrl-C).
pub fn ui_restore_terminal() {
    if TUI_ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = crossterm::terminal::disable_raw_mode();
        let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::LeaveAlternateScreen, crossterm::cursor::Show);
    }
}
