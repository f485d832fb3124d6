//! Keys → [`Action`]s. A pure function of the state and the key, so every binding is testable
//! without a terminal.

use super::app::{Action, App};
use crate::bus::Control;
use crate::ui::tui::app::Status;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Rows one PgUp/PgDn moves the log.
pub const PAGE: i32 = 5;

/// What `key` means in the current state.
pub fn handle_key(app: &App, key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Nothing;
    }
    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
    if app.ui.quit_confirm {
        return match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Action::StopAndQuit,
            _ if ctrl_c => Action::StopAndQuit,
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => Action::CancelQuit,
            _ => Action::Nothing,
        };
    }
    if ctrl_c {
        return quit(app);
    }
    if app.ui.help_open {
        return match key.code {
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Enter => Action::ToggleHelp,
            KeyCode::Char('q') => quit(app),
            _ => Action::Nothing,
        };
    }
    if app.ui.sample_open {
        match key.code {
            KeyCode::PageDown => return Action::ScrollDetail(PAGE),
            KeyCode::PageUp => return Action::ScrollDetail(-PAGE),
            KeyCode::Char('j') => return Action::ScrollDetail(1),
            KeyCode::Char('k') => return Action::ScrollDetail(-1),
            KeyCode::Enter => return Action::Back,
            _ => {}
        }
    }
    match key.code {
        KeyCode::Char('q') => quit(app),
        KeyCode::Char('p') | KeyCode::Char(' ') => pause_or_resume(app),
        KeyCode::Char('s') if can_control(app) => Action::Control(Control::CheckpointNow),
        KeyCode::Right | KeyCode::Tab => Action::NextTab,
        KeyCode::Left | KeyCode::BackTab => Action::PrevTab,
        KeyCode::Char('h') => Action::ToggleHistory,
        KeyCode::Up => Action::MoveSamples(1),
        KeyCode::Down => Action::MoveSamples(-1),
        KeyCode::PageUp => Action::ScrollLog(PAGE),
        KeyCode::PageDown => Action::ScrollLog(-PAGE),
        KeyCode::Enter => Action::OpenSample,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('?') => Action::ToggleHelp,
        _ => Action::Nothing,
    }
}

/// Leaving a live run asks first: quitting the dashboard stops the run.
fn quit(app: &App) -> Action {
    if can_control(app) && matches!(app.status, Status::Running | Status::Paused) {
        Action::AskQuit
    } else {
        Action::Quit
    }
}

fn pause_or_resume(app: &App) -> Action {
    if !can_control(app) {
        return Action::Nothing;
    }
    match app.status {
        Status::Running => Action::Control(Control::Pause),
        Status::Paused => Action::Control(Control::Resume),
        _ => Action::Nothing,
    }
}

fn can_control(app: &App) -> bool {
    app.ui.controllable && app.status.is_live()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Event, Outcome, Record, RunState};
    use crate::ui::tui::app::tests::run_started;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn live(controllable: bool) -> App {
        let mut app = App::new(controllable);
        app.apply(&run_started(0.0));
        app
    }

    #[test]
    fn quitting_a_live_run_asks_and_yes_stops_it() {
        let mut app = live(true);
        assert_eq!(handle_key(&app, key(KeyCode::Char('q'))), Action::AskQuit);
        app.perform(Action::AskQuit);
        assert_eq!(handle_key(&app, key(KeyCode::Char('x'))), Action::Nothing);
        assert_eq!(handle_key(&app, key(KeyCode::Char('n'))), Action::CancelQuit);
        assert_eq!(handle_key(&app, key(KeyCode::Char('y'))), Action::StopAndQuit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(handle_key(&app, ctrl_c), Action::StopAndQuit, "a second ctrl-c confirms");
    }

    #[test]
    fn quitting_a_finished_run_or_a_watched_file_does_not_ask() {
        let mut app = live(true);
        app.apply(&Record { t: 1.0, event: Event::RunFinished { outcome: Outcome::Finished, error: None } });
        assert_eq!(handle_key(&app, key(KeyCode::Char('q'))), Action::Quit);
        let watched = live(false);
        assert_eq!(handle_key(&watched, key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn pause_toggles_with_the_reported_state_and_needs_a_worker() {
        let mut app = live(true);
        assert_eq!(handle_key(&app, key(KeyCode::Char('p'))), Action::Control(Control::Pause));
        app.apply(&Record { t: 1.0, event: Event::State { state: RunState::Paused } });
        assert_eq!(handle_key(&app, key(KeyCode::Char(' '))), Action::Control(Control::Resume));
        assert_eq!(handle_key(&app, key(KeyCode::Char('s'))), Action::Control(Control::CheckpointNow));
        let watched = live(false);
        assert_eq!(handle_key(&watched, key(KeyCode::Char('p'))), Action::Nothing);
        assert_eq!(handle_key(&watched, key(KeyCode::Char('s'))), Action::Nothing);
    }

    #[test]
    fn navigation_keys() {
        let app = live(false);
        assert_eq!(handle_key(&app, key(KeyCode::Tab)), Action::NextTab);
        assert_eq!(handle_key(&app, key(KeyCode::Right)), Action::NextTab);
        assert_eq!(handle_key(&app, key(KeyCode::Left)), Action::PrevTab);
        assert_eq!(handle_key(&app, key(KeyCode::Char('h'))), Action::ToggleHistory);
        assert_eq!(handle_key(&app, key(KeyCode::Up)), Action::MoveSamples(1));
        assert_eq!(handle_key(&app, key(KeyCode::PageUp)), Action::ScrollLog(PAGE));
        assert_eq!(handle_key(&app, key(KeyCode::Enter)), Action::OpenSample);
        assert_eq!(handle_key(&app, key(KeyCode::Esc)), Action::Back);
        let release = KeyEvent { kind: KeyEventKind::Release, ..key(KeyCode::Char('q')) };
        assert_eq!(handle_key(&app, release), Action::Nothing);
    }

    #[test]
    fn an_open_sample_takes_the_page_keys_and_arrows_still_browse() {
        let mut app = live(false);
        app.apply(&crate::ui::tui::app::tests::sample(1.0, 1, "p", "r", 1.0, true));
        app.perform(handle_key(&app, key(KeyCode::Enter)));
        assert!(app.ui.sample_open);
        assert_eq!(handle_key(&app, key(KeyCode::PageDown)), Action::ScrollDetail(PAGE));
        assert_eq!(handle_key(&app, key(KeyCode::Up)), Action::MoveSamples(1));
        app.perform(Action::ScrollDetail(PAGE));
        assert_eq!(app.ui.detail_scroll, PAGE as usize);
        app.perform(Action::ScrollDetail(-100));
        assert_eq!(app.ui.detail_scroll, 0);
        app.perform(handle_key(&app, key(KeyCode::Esc)));
        assert!(!app.ui.sample_open);
    }

    #[test]
    fn help_popup_swallows_other_keys_and_esc_closes_it() {
        let mut app = live(false);
        app.perform(handle_key(&app, key(KeyCode::Char('?'))));
        assert!(app.ui.help_open);
        assert_eq!(handle_key(&app, key(KeyCode::Right)), Action::Nothing);
        app.perform(handle_key(&app, key(KeyCode::Esc)));
        assert!(!app.ui.help_open);
    }
}
