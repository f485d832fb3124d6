//! The live terminal dashboard: folds records into [`App`], draws it with [`view::draw`],
//! turns keys into controls with [`input::handle_key`].
//!
//! The loop never blocks the producer: it drains whatever is pending each frame from an
//! unbounded channel (producers may also drop display-only events, `Event::is_droppable`).
//! Signals belong to the caller; this returns when the user quits, or when a signal stopped
//! the run (`crate::pipeline::SIGNAL_STOP`) and the run has ended. When the terminal itself goes away
//! (end of file, an I/O error, a hang-up), the dashboard stops the run (it checkpoints),
//! waits for it to end without drawing, and returns.

pub mod app;
pub mod input;
pub mod terminal_input;
pub mod view;

#[cfg(test)]
mod render_tests;

pub use app::{Action, App};

use crate::bus::{unix_now, Control, Record};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use crossterm::event::Event as TermEvent;
use terminal_input::Input;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};
use std::sync::Once;
use std::time::{Duration, Instant};

/// At most ten frames a second: smooth enough to watch, cheap enough to leave running.
const FRAME: Duration = Duration::from_millis(100);

/// Set while the full-screen dashboard owns the terminal.
pub static TUI_ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Give the terminal back (raw mode off, main screen) if the dashboard has it. For paths that
/// exit without unwinding (a second Ctrl-C, an error in `main`).
pub fn restore_if_active() {
    if TUI_ACTIVE.swap(false, std::sync::atomic::Ordering::SeqCst) {
        restore_terminal();
    }
}

/// Puts the terminal back (cooked mode, main screen, visible cursor). Safe to call twice.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped, so every exit path (return, `?`, panic unwind)
/// leaves the user's shell usable.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        // From here on the guard exists, so a failure below still restores raw mode.
        let guard = TerminalGuard;
        execute!(stdout(), EnterAlternateScreen, Clear(ClearType::All), cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// A panic message printed inside the alternate screen in raw mode is lost; restore first,
/// then let the previous hook print. Installed once per process.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

/// Run the dashboard until the user quits (or a signal stopped the run and it has ended).
///
/// `controls` is `None` when watching a file: then pause/stop/checkpoint keys are inert and
/// quitting never asks. On "stop and quit" a [`Control::Stop`] is sent before returning.
pub fn run_dashboard(
    records: Receiver<Record>,
    controls: Option<Sender<Control>>,
    initial: App,
) -> anyhow::Result<()> {
    let mut app = initial;
    app.ui.controllable = controls.is_some();
    app.ui.quit = false;
    let _guard = TerminalGuard::enter()?;
    // No `terminal.clear()`: it asks the terminal for the cursor position, which some
    // terminals and pty wrappers never answer; the guard already cleared the screen.
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    let reader = terminal_input::spawn_reader()?;
    let tty = terminal_input::tty_fd();
    let mut producer_open = true;
    let mut lost: Option<String> = None;
    loop {
        if producer_open {
            producer_open = drain(&records, &mut app);
        }
        if lost.is_none() && tty.is_some_and(terminal_input::hung_up) {
            lost = Some("the terminal hung up".into());
            send_controls(Action::StopAndQuit, controls.as_ref());
        }
        if lost.is_none() {
            app.tick(unix_now());
            if let Err(e) = terminal.draw(|f| view::draw(f, &app)) {
                lost = Some(format!("cannot draw on the terminal: {e}"));
                send_controls(Action::StopAndQuit, controls.as_ref());
            }
        }
        if lost.is_none() {
            lost = handle_input_until(Instant::now() + FRAME, &reader.keys, &mut terminal, &mut app, controls.as_ref())?;
            if lost.is_some() {
                // Nobody is there to press a key: stop the run so it checkpoints and ends.
                send_controls(Action::StopAndQuit, controls.as_ref());
            }
        } else {
            std::thread::sleep(FRAME);
        }
        let stopped_without_keys = lost.is_some() || crate::pipeline::SIGNAL_STOP.load(std::sync::atomic::Ordering::SeqCst);
        if app.ui.quit || (!producer_open && stopped_without_keys) || (lost.is_some() && controls.is_none()) {
            if lost.is_some() {
                // ratatui's Terminal restores the cursor on drop and `eprintln!`s when it
                // cannot, which panics on a dead terminal: there is nothing to restore.
                std::mem::forget(terminal);
            }
            return Ok(());
        }
    }
}

/// Fold the records pending at the start of the tick. Returns false once the producer is
/// gone for good. Only what was already queued is taken, so a producer faster than the fold
/// cannot keep the loop from drawing and reading keys.
fn drain(records: &Receiver<Record>, app: &mut App) -> bool {
    for _ in 0..records.len().max(1) {
        match records.try_recv() {
            Ok(rec) => app.apply(&rec),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Handle keys and resizes until `deadline` (the next frame) or until the user quits.
/// Returns why the terminal was lost, if it was.
fn handle_input_until(
    deadline: Instant,
    keys: &Receiver<Input>,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    controls: Option<&Sender<Control>>,
) -> anyhow::Result<Option<String>> {
    loop {
        let input = match keys.recv_deadline(deadline) {
            Ok(input) => input,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok(None),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(Some("the key reader ended".into())),
        };
        match input {
            Input::Lost(reason) => return Ok(Some(reason)),
            Input::Event(TermEvent::Key(key)) => {
                let action = input::handle_key(app, key);
                send_controls(action, controls);
                app.perform(action);
                if app.ui.quit {
                    return Ok(None);
                }
            }
            Input::Event(TermEvent::Resize(..)) => {
                if let Err(e) = terminal.autoresize() {
                    return Ok(Some(format!("cannot resize: {e}")));
                }
            }
            Input::Event(_) => {}
        }
    }
}

fn send_controls(action: Action, controls: Option<&Sender<Control>>) {
    let Some(tx) = controls else { return };
    let control = match action {
        Action::Control(c) => c,
        Action::StopAndQuit => Control::Stop,
        _ => return,
    };
    // A closed channel means the worker already ended; the header shows how.
    let _ = tx.send(control);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::tui::app::tests::{run_started, stage_started};

    #[test]
    fn drain_folds_everything_pending_and_notices_a_finished_producer() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut app = App::new(false);
        tx.send(run_started(1.0)).unwrap();
        tx.send(stage_started(2.0, "sft", "sft", 0, 10)).unwrap();
        assert!(drain(&rx, &mut app), "producer still there");
        assert_eq!(app.current.as_ref().map(|c| c.name.as_str()), Some("sft"));
        assert!(rx.is_empty(), "everything pending was folded");
        assert!(drain(&rx, &mut app), "an empty channel does not block");
        tx.send(run_started(3.0)).unwrap();
        drop(tx);
        assert!(drain(&rx, &mut app), "the last record is folded first");
        assert_eq!(app.now, 3.0);
        assert!(!drain(&rx, &mut app));
    }

    #[test]
    fn only_control_actions_reach_the_worker() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for a in [Action::NextTab, Action::Quit, Action::Control(Control::Pause), Action::StopAndQuit] {
            send_controls(a, Some(&tx));
        }
        send_controls(Action::Control(Control::Resume), None);
        let sent: Vec<Control> = rx.try_iter().collect();
        assert_eq!(sent, vec![Control::Pause, Control::Stop]);
    }
}
