//! Rendering snapshots: the dashboard drawn into ratatui's TestBackend at 80×24 and 160×48,
//! compared with committed text files in `src/ui/tui/snapshots/`.
//!
//! To accept a deliberate change, run with `RETORT_UPDATE_SNAPSHOTS=1`, read the diff of the
//! snapshot files, and commit them. A missing snapshot is written as `NAME.txt.new` and fails.

use super::app::tests::{metrics, progress, rec, run_started, sample, stage_started};
use super::app::{Action, App, ChartTab};
use super::view::draw;
use crate::bus::{Event, Level, Outcome, Record, RunState};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn render(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal.backend().buffer().clone()
}

fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check_snapshot(name: &str, text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/ui/tui/snapshots");
    let path = dir.join(format!("{name}.txt"));
    if std::env::var_os("RETORT_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) => assert!(
            expected == text,
            "snapshot {name} differs from {}\n--- expected\n{expected}\n--- actual\n{text}\n\
             (rerun with RETORT_UPDATE_SNAPSHOTS=1 if the change is intended)",
            path.display()
        ),
        Err(_) => {
            std::fs::create_dir_all(&dir).unwrap();
            let new = dir.join(format!("{name}.txt.new"));
            std::fs::write(&new, text).unwrap();
            panic!("no snapshot {}; wrote {} for review", path.display(), new.display());
        }
    }
}

fn snapshot_both_sizes(name: &str, app: &App) {
    for (w, h) in [(80, 24), (160, 48)] {
        let text = buffer_text(&render(app, w, h));
        check_snapshot(&format!("{name}_{w}x{h}"), &text);
    }
}

fn fold(records: &[Record]) -> App {
    let mut app = App::new(true);
    for r in records {
        app.apply(r);
    }
    app
}

fn sft_finished(t: f64) -> Vec<Record> {
    let mut recs = vec![run_started(1000.0), stage_started(1000.0, "sft", "sft", 0, 20)];
    for step in 1..=20u64 {
        let x = step as f64;
        recs.push(metrics(1000.0 + x, "sft", step, &[("loss", 2.5 / (1.0 + 0.2 * x)), ("lr", 1e-4)]));
        recs.push(progress(1000.0 + x, "sft", step, 20, None));
    }
    recs.push(rec(
        t,
        Event::StageFinished {
            stage: "sft".into(),
            outcome: Outcome::Finished,
            summary: BTreeMap::from([("final_loss".to_string(), 0.5), ("tokens".to_string(), 81920.0)]),
            table: None,
        },
    ));
    recs
}

/// sft done, rl at step 60 of 200 with reward rising, entropy falling, a few samples.
fn rl_running() -> Vec<Record> {
    let mut recs = sft_finished(1021.0);
    recs.push(stage_started(1030.0, "rl", "grpo", 1, 200));
    for step in 1..=60u64 {
        let x = step as f64;
        let t = 1030.0 + 3.0 * x;
        let mean = 0.2 + 0.5 * (1.0 - (-x / 20.0).exp());
        recs.push(progress(t - 2.0, "rl", step - 1, 200, Some("generate")));
        recs.push(progress(t, "rl", step, 200, Some("update")));
        recs.push(metrics(
            t,
            "rl",
            step,
            &[
                ("critic/score/mean", mean),
                ("critic/score/min", (mean - 0.3).max(0.0)),
                ("critic/score/max", (mean + 0.3).min(1.0)),
                ("actor/entropy", 1.2 * (-x / 40.0).exp()),
                ("actor/entropy_correct", 1.0 * (-x / 40.0).exp()),
                ("actor/entropy_incorrect", 1.4 * (-x / 40.0).exp()),
                ("actor/pg_loss", 0.05 * (x / 5.0).sin()),
                ("actor/grad_norm", 0.8 + 0.2 * (x / 3.0).cos()),
                ("actor/lr", 1e-6),
            ],
        ));
        if step % 10 == 0 {
            let a = step / 10;
            let correct = step % 20 == 0;
            let answer = if correct { a + a } else { a + a + 1 };
            recs.push(sample(t, step, &format!("What is {a} + {a}?"), &format!("{a} + {a} = {answer}"), if correct { 1.0 } else { 0.0 }, correct));
        }
    }
    recs.push(rec(1100.0, Event::Log { level: Level::Warn, message: "12% of groups have zero reward std".into(), stage: Some("rl".into()) }));
    recs.push(rec(1150.0, Event::CheckpointSaved { stage: "rl".into(), step: 50, path: "runs/gsm8k/ckpt/rl-50".into() }));
    recs
}

fn running_app() -> App {
    let mut app = fold(&rl_running());
    app.perform(Action::NextTab);
    assert_eq!(app.tab(), ChartTab::Reward);
    app
}

#[test]
fn running_rl_stage() {
    let app = running_app();
    let text = buffer_text(&render(&app, 80, 24));
    // Independent facts the screen must show, whatever the layout.
    assert!(text.contains("stage 2/3 rl (grpo)"), "{text}");
    assert!(text.contains("RUNNING"), "{text}");
    assert!(text.contains("rl 60/200 step 30%"), "{text}");
    // Rate over the last 20 progress events: steps 50→60 between t=1181 and t=1210,
    // 10/29 step/s; 140 steps left → 406 s.
    assert!(text.contains("ETA 0:06:46"), "{text}");
    // Newest record at t=1210, run started at t=1000.
    assert!(text.contains("elapsed 0:03:30"), "{text}");
    // 0.2 + 0.5·(1 − e^−3) = 0.67511
    assert!(text.contains("score/mean 0.6751"), "{text}");
    // Each step generates for 2 s, then updates for 1 s; the 60th update is still open:
    // 120 s vs 59 s → 67% and 33%.
    let wide = buffer_text(&render(&app, 160, 48));
    assert!(wide.contains("time: generate 67% · update 33%"), "{wide}");
    snapshot_both_sizes("running_rl", &app);
}

#[test]
fn correct_samples_are_green_and_incorrect_red() {
    let app = running_app();
    let buf = render(&app, 160, 48);
    let text = buffer_text(&buf);
    let rows: Vec<&str> = text.lines().collect();
    let find = |needle: &str| rows.iter().position(|r| r.contains(needle)).unwrap();
    let col = |row: usize, ch: char| rows[row].chars().position(|c| c == ch).unwrap() as u16;
    let ok_row = find("What is 6 + 6? → 6 + 6 = 12");
    let bad_row = find("What is 5 + 5? → 5 + 5 = 11");
    assert_eq!(buf[(col(ok_row, '✓'), ok_row as u16)].fg, Color::Green);
    assert_eq!(buf[(col(bad_row, '✗'), bad_row as u16)].fg, Color::Red);
    assert!(ok_row < bad_row, "newest sample first");
}

#[test]
fn paused_run_with_an_open_sample() {
    let mut app = fold(&rl_running());
    app.apply(&rec(1200.0, Event::State { state: RunState::Paused }));
    app.perform(Action::MoveSamples(1));
    app.perform(Action::OpenSample);
    let text = buffer_text(&render(&app, 80, 24));
    assert!(text.contains("PAUSED"), "{text}");
    assert!(text.contains("✗ incorrect"), "{text}");
    assert!(text.contains("What is 5 + 5?"), "{text}");
    snapshot_both_sizes("paused_sample_open", &app);
}

#[test]
fn paused_run_with_help() {
    let mut app = fold(&rl_running());
    app.apply(&rec(1200.0, Event::State { state: RunState::Paused }));
    app.perform(Action::NextTab);
    app.perform(Action::NextTab);
    app.perform(Action::ToggleHelp);
    let text = buffer_text(&render(&app, 80, 24));
    assert!(text.contains("p resume"), "{text}");
    assert!(text.contains("pause or resume the run"), "{text}");
    snapshot_both_sizes("paused_help", &app);
}

#[test]
fn finished_run_shows_summary_and_pass_at_k_table() {
    let mut recs = rl_running();
    recs.push(rec(
        1300.0,
        Event::StageFinished {
            stage: "rl".into(),
            outcome: Outcome::Finished,
            summary: BTreeMap::from([("critic/score/mean".to_string(), 0.7), ("steps".to_string(), 200.0)]),
            table: None,
        },
    ));
    recs.push(stage_started(1300.0, "eval", "eval", 2, 64));
    recs.push(progress(1340.0, "eval", 64, 64, None));
    recs.push(rec(
        1341.0,
        Event::StageFinished {
            stage: "eval".into(),
            outcome: Outcome::Finished,
            summary: BTreeMap::from([("pass@1".to_string(), 0.4375), ("pass@8".to_string(), 0.8125)]),
            table: Some("model     pass@1  pass@8\nbase      0.2500  0.6875\nrl        0.4375  0.8125".into()),
        },
    ));
    recs.push(rec(1342.0, Event::RunFinished { outcome: Outcome::Finished, error: None }));
    let app = fold(&recs);
    let text = buffer_text(&render(&app, 80, 24));
    assert!(text.contains("Run finished after 0:05:42"), "{text}");
    assert!(text.contains("pass@1 = 0.4375"), "{text}");
    assert!(text.contains("rl        0.4375  0.8125"), "{text}");
    assert!(text.contains("ETA -"), "no ETA once the run is over: {text}");
    snapshot_both_sizes("finished_summary", &app);
}

#[test]
fn failed_run_shows_its_error() {
    let mut recs = rl_running();
    let error = "candle: out of memory allocating 1.2 GiB in step 61 (phase logprob); lower rl.micro_batch";
    recs.push(rec(1212.0, Event::StageFinished { stage: "rl".into(), outcome: Outcome::Failed, summary: BTreeMap::new(), table: None }));
    recs.push(rec(1212.5, Event::RunFinished { outcome: Outcome::Failed, error: Some(error.into()) }));
    let app = fold(&recs);
    let text = buffer_text(&render(&app, 160, 48));
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains(&format!("error: {error}")), "{text}");
    snapshot_both_sizes("failed", &app);
}

#[test]
fn too_small_terminal_says_what_it_needs() {
    let app = running_app();
    for (w, h) in [(79, 24), (80, 23), (40, 10)] {
        let text = buffer_text(&render(&app, w, h));
        let msg = format!("terminal too small (need 80×24, have {w}×{h})");
        assert!(text.contains(&msg) || w < msg.chars().count() as u16, "{text}");
    }
    check_snapshot("too_small_60x20", &buffer_text(&render(&app, 60, 20)));
}

#[test]
fn empty_state_draws_without_data() {
    let app = App::new(false);
    let text = buffer_text(&render(&app, 80, 24));
    assert!(text.contains("WAITING"), "{text}");
    assert!(text.contains("no data yet (waiting for loss, eval_loss, actor/pg_loss, actor/tb_loss,"), "{text}");
    assert!(text.contains("waiting for the first stage"), "{text}");
}

#[test]
fn a_long_response_scrolls_inside_the_sample_popup() {
    let mut app = App::new(false);
    app.apply(&run_started(0.0));
    let response: String = (1..=60).map(|i| format!("line {i} of the reasoning\n")).collect();
    app.apply(&sample(1.0, 1, "Prove it.", &response, 1.0, true));
    app.perform(Action::OpenSample);
    let top = buffer_text(&render(&app, 80, 24));
    assert!(top.contains("line 1 of the reasoning") && !top.contains("line 60 of"), "{top}");
    app.perform(Action::ScrollDetail(1000));
    let bottom = buffer_text(&render(&app, 80, 24));
    assert!(bottom.contains("line 60 of the reasoning"), "the end is reachable: {bottom}");
    assert!(!bottom.contains("line 1 of the reasoning"), "{bottom}");
}

#[test]
fn history_toggle_shows_in_the_chart_title() {
    let mut app = running_app();
    assert!(buffer_text(&render(&app, 80, 24)).contains("Reward · rl · recent"));
    app.perform(Action::ToggleHistory);
    assert!(buffer_text(&render(&app, 80, 24)).contains("Reward · rl · full history"));
}

#[test]
fn a_denoise_stage_draws_its_loss_components_and_held_out_losses() {
    let mut recs = vec![run_started(0.0), stage_started(0.0, "diffuse", "denoise", 0, 10)];
    for step in 1..=10u64 {
        let x = step as f64;
        let mut values = vec![("loss", 3.0 / x), ("loss/mse", 1.0 / x), ("loss/t", 0.5), ("loss/round", 1.5 / x), ("lr", 1e-4)];
        if step % 5 == 0 {
            values.extend([("eval/recon/id/recipes", 4.0 / x), ("eval/recon/ood/legal", 6.0 + x)]);
        }
        recs.push(metrics(x, "diffuse", step, &values));
    }
    let text = buffer_text(&render(&fold(&recs), 160, 48));
    for name in ["━ loss ", "━ loss/mse ", "━ loss/t ", "━ loss/round ", "━ id/recipes ", "━ ood/legal "] {
        assert!(text.contains(name), "no {name:?} in the Loss legend:\n{text}");
    }
    assert!(!text.contains("━ lr"), "lr has its own tab");
}
