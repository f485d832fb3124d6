//! Drawing: renders an [`App`] and nothing else (no state changes, no I/O), so a TestBackend
//! snapshot shows exactly what a researcher sees.

use super::app::{App, ChartTab, History, SampleView, Status};
use crate::bus::{Control, Level, Outcome};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Clear, Dataset, GraphType, LineGauge, Paragraph, Tabs, Wrap};
use ratatui::Frame;

pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

const LINE_COLORS: [Color; 4] = [Color::Cyan, Color::Yellow, Color::Magenta, Color::LightBlue];
const BAND_COLOR: Color = Color::DarkGray;
/// Silence longer than this is flagged in the header (a step of a small model takes seconds).
const QUIET_WARN_SECS: f64 = 60.0;
/// Width from which the progress row also shows where the stage's time goes.
const PHASES_MIN_WIDTH: u16 = 120;

/// Draw the whole dashboard into the frame.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let rest = area.height.saturating_sub(2 + 1 + 1 + 1);
    let bottom = (rest / 3).max(7);
    let [header, tabs, chart, gauge, panes, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(8),
        Constraint::Length(1),
        Constraint::Length(bottom),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app);
    draw_tabs(frame, tabs, app);
    match app.tab() {
        ChartTab::Summary => draw_summary(frame, chart, app),
        tab => draw_chart(frame, chart, app, tab),
    }
    draw_progress_row(frame, gauge, app);
    let [samples, log] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(panes);
    draw_samples(frame, samples, app);
    draw_log(frame, log, app);
    draw_footer(frame, footer, app);

    if app.ui.sample_open {
        if let Some(s) = app.selected_sample() {
            draw_sample_detail(frame, area, s, app.ui.detail_scroll);
        }
    }
    if app.ui.help_open {
        draw_help(frame, area);
    }
    if app.ui.quit_confirm {
        draw_quit_confirm(frame, area);
    }
}

fn draw_too_small(frame: &mut Frame, area: Rect) {
    let msg = format!(
        "terminal too small (need {MIN_WIDTH}×{MIN_HEIGHT}, have {}×{})",
        area.width, area.height
    );
    let line_area = area.centered_vertically(Constraint::Length(1));
    frame.render_widget(Paragraph::new(msg).centered().wrap(Wrap { trim: true }), line_area);
}

/// `h:mm:ss`; the header is read at a glance, so no units.
pub fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// About four significant digits; scientific notation for very small or large magnitudes
/// (learning rates, KL early in training).
pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if v.fract() == 0.0 && a < 1e9 {
        // Counts (steps, tokens) read best without decimals.
        return format!("{v:.0}");
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

fn status_style(status: Status) -> Style {
    let color = match status {
        Status::Waiting => Color::Gray,
        Status::Running => Color::Green,
        Status::Paused | Status::Stopping => Color::Yellow,
        Status::Finished => Color::LightBlue,
        Status::Failed => Color::Red,
        Status::Interrupted => Color::Magenta,
    };
    Style::new().fg(Color::Black).bg(color).add_modifier(Modifier::BOLD)
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let sep = || Span::styled(" │ ", dim());
    let mut top = vec![
        Span::styled("retort", Style::new().add_modifier(Modifier::BOLD)),
        sep(),
        Span::styled(
            if app.run.is_empty() { "(no run yet)".to_string() } else { app.run.clone() },
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        sep(),
        Span::raw(format!("profile {}", app.profile)),
        sep(),
        Span::raw(format!("device {}", app.device)),
    ];
    if let Some(seed) = app.seed {
        top.push(sep());
        top.push(Span::raw(format!("seed {seed}")));
    }
    if app.resumed {
        top.push(Span::styled(" (resumed)", dim()));
    }

    let stage = match &app.current {
        Some(c) => format!("stage {}/{} {} ({})", c.index + 1, c.total_stages, c.name, c.kind),
        None => format!("stage 0/{}", app.stages.len()),
    };
    let elapsed = app.elapsed_secs().map(fmt_duration).unwrap_or_else(|| "-".into());
    let eta = app.eta_secs().map(fmt_duration).unwrap_or_else(|| "-".into());
    let mut bottom = vec![
        Span::raw(stage),
        sep(),
        Span::raw(format!("elapsed {elapsed}")),
        sep(),
        Span::raw(format!("ETA {eta}")),
        sep(),
        Span::styled(format!(" {} ", app.status.label()), status_style(app.status)),
    ];
    if let Some(c) = app.ui.requested {
        let pending = match c {
            Control::Pause => " pausing after this unit…",
            Control::Resume => " resuming…",
            Control::Stop => " stopping after this unit…",
            Control::CheckpointNow => " checkpoint requested…",
        };
        bottom.push(Span::styled(pending, Style::new().fg(Color::Yellow)));
    }
    if let Some(q) = app.quiet_secs().filter(|&q| q >= QUIET_WARN_SECS) {
        bottom.push(Span::styled(format!(" no events for {}", fmt_duration(q)), Style::new().fg(Color::Yellow)));
    }
    if app.skipped > 0 {
        bottom.push(Span::styled(format!(" ({} unreadable events skipped)", app.skipped), dim()));
    }
    frame.render_widget(Paragraph::new(vec![Line::from(top), Line::from(bottom)]), area);
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let titles = ChartTab::ALL.iter().map(|t| t.title());
    let tabs = Tabs::new(titles)
        .select(app.ui.tab)
        .style(dim())
        .highlight_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD | Modifier::REVERSED))
        .divider("│");
    frame.render_widget(tabs, area);
}

/// One line of a chart with its colour and latest value.
struct PlotLine<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
    latest: Option<f64>,
    color: Color,
    band: bool,
}

fn chart_lines(app: &App, tab: ChartTab) -> Vec<PlotLine<'_>> {
    let history = app.ui.history;
    let mut out = Vec::new();
    // The tab's fixed metrics, then every metric of the stage under one of its prefixes (a
    // denoise stage's loss components and held-out reconstruction losses, say).
    let stage_metrics = app.chart_stage.as_ref().and_then(|s| app.metrics.get(s));
    let by_prefix = stage_metrics
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| tab.prefixes().iter().any(|p| k.starts_with(p)))
        .map(String::as_str);
    let names: Vec<&str> = tab.lines().iter().copied().chain(by_prefix).collect();
    for name in names {
        if let Some(s) = app.series(name) {
            let color = LINE_COLORS[out.len() % LINE_COLORS.len()];
            out.push(PlotLine { name, points: s.points(history), latest: s.latest, color, band: false });
        }
    }
    if let Some((lo, hi)) = tab.band() {
        for name in [lo, hi] {
            if let Some(s) = app.series(name) {
                out.push(PlotLine { name, points: s.points(history), latest: s.latest, color: BAND_COLOR, band: true });
            }
        }
    }
    out
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<[f64; 2]> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return Some([lo - pad, hi + pad]);
    }
    Some([lo, hi])
}

fn axis_labels(b: [f64; 2], as_steps: bool) -> Vec<Line<'static>> {
    let mid = (b[0] + b[1]) / 2.0;
    let fmt = |v: f64| if as_steps { format!("{}", v.round() as i64) } else { fmt_num(v) };
    vec![Line::from(fmt(b[0])), Line::from(fmt(mid)), Line::from(fmt(b[1]))]
}

fn draw_chart(frame: &mut Frame, area: Rect, app: &App, tab: ChartTab) {
    let stage = app.chart_stage.as_deref().unwrap_or("-");
    let history = match app.ui.history {
        History::Recent => "recent",
        History::Full => "full history",
    };
    let block = Block::bordered()
        .title(Line::from(format!(" {} · {stage} · {history} ", tab.title())))
        .border_style(dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let lines = chart_lines(app, tab);
    let drawable = lines.iter().any(|l| !l.points.is_empty());
    let [legend, plot] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    frame.render_widget(Paragraph::new(legend_line(&lines)), legend);
    if !drawable {
        let msg = format!("no data yet (waiting for {})", tab.lines().join(", "));
        frame.render_widget(Paragraph::new(msg).style(dim()).wrap(Wrap { trim: true }), plot);
        return;
    }
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (Some(xb), Some(yb)) = (bounds(all().map(|p| p.0)), bounds(all().map(|p| p.1))) else {
        return;
    };
    let datasets = lines
        .iter()
        .filter(|l| !l.points.is_empty())
        .map(|l| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(l.color))
                .data(&l.points)
        })
        .collect();
    let chart = Chart::new(datasets)
        .legend_position(None)
        .x_axis(Axis::default().title("step").style(dim()).bounds(xb).labels(axis_labels(xb, true)))
        .y_axis(Axis::default().style(dim()).bounds(yb).labels(axis_labels(yb, false)));
    frame.render_widget(chart, plot);
}

/// The tab already says what family a metric is in; the legend drops the verl-style prefix
/// so that several series fit in 80 columns.
fn short_name(name: &str) -> &str {
    ["actor/", "critic/", "diversity/", "eval/recon/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
}

fn legend_line(lines: &[PlotLine]) -> Line<'static> {
    let mut spans = Vec::new();
    for l in lines {
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        let mark = if l.band { "╌" } else { "━" };
        spans.push(Span::styled(format!("{mark} {}", short_name(l.name)), Style::new().fg(l.color)));
        let value = l.latest.map(fmt_num).unwrap_or_else(|| "-".into());
        spans.push(Span::styled(format!(" {value}"), Style::new().add_modifier(Modifier::BOLD)));
    }
    Line::from(spans)
}

fn outcome_style(outcome: Outcome) -> Style {
    match outcome {
        Outcome::Finished => Style::new().fg(Color::Green),
        Outcome::Failed => Style::new().fg(Color::Red),
        Outcome::Interrupted => Style::new().fg(Color::Magenta),
    }
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Finished => "finished",
        Outcome::Failed => "failed",
        Outcome::Interrupted => "interrupted",
    }
}

fn draw_summary(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Summary ").border_style(dim());
    let mut text: Vec<Line> = Vec::new();
    if let Some(outcome) = app.outcome {
        let elapsed = app.elapsed_secs().map(fmt_duration).unwrap_or_default();
        text.push(Line::from(Span::styled(
            format!("Run {} after {elapsed}", outcome_word(outcome)),
            outcome_style(outcome).add_modifier(Modifier::BOLD),
        )));
    }
    if let Some(err) = &app.error {
        let red = Style::new().fg(Color::Red);
        for (i, l) in err.lines().enumerate() {
            let prefix = if i == 0 { "error: " } else { "       " };
            text.push(Line::from(Span::styled(format!("{prefix}{l}"), red)));
        }
    }
    if app.results.is_empty() {
        text.push(Line::from(Span::styled("no stage has finished yet", dim())));
    }
    // One line per stage (outcome and final numbers) so a three-stage run and its pass@k
    // table fit at 80×24.
    for r in &app.results {
        let mut line = vec![
            Span::styled(format!("{} ({})", r.stage, r.kind), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" "),
            Span::styled(outcome_word(r.outcome), outcome_style(r.outcome)),
        ];
        for (k, v) in &r.summary {
            line.push(Span::raw(format!("   {k} = {}", fmt_num(*v))));
        }
        text.push(Line::from(line));
        if let Some(table) = &r.table {
            text.extend(table.lines().map(|row| Line::from(format!("  {row}"))));
        }
    }
    if let Some(c) = app.checkpoints.last() {
        text.push(Line::from(Span::styled(format!("last checkpoint: {} step {} → {}", c.stage, c.step, c.path), dim())));
    }
    frame.render_widget(Paragraph::new(text).block(block).wrap(Wrap { trim: false }), area);
}

fn draw_progress_row(frame: &mut Frame, area: Rect, app: &App) {
    let shares = app.current_progress().map(|(_, p)| p.phase_shares()).unwrap_or_default();
    if area.width < PHASES_MIN_WIDTH || shares.is_empty() {
        draw_gauge(frame, area, app);
        return;
    }
    let parts: Vec<String> = shares.iter().map(|(name, f)| format!("{name} {:.0}%", f * 100.0)).collect();
    let text = format!(" time: {}", parts.join(" · "));
    let width = u16::try_from(text.chars().count()).unwrap_or(u16::MAX).min(area.width / 2);
    let [gauge, phases] = Layout::horizontal([Constraint::Min(0), Constraint::Length(width)]).areas(area);
    draw_gauge(frame, gauge, app);
    frame.render_widget(Paragraph::new(text).style(dim()), phases);
}

fn draw_gauge(frame: &mut Frame, area: Rect, app: &App) {
    let Some((stage, p)) = app.current_progress() else {
        frame.render_widget(Paragraph::new("waiting for the first stage…").style(dim()), area);
        return;
    };
    let mut label = match p.total {
        Some(total) => format!(
            "{} {}/{} {} {:.0}%",
            stage.name,
            p.done,
            total,
            p.unit,
            p.fraction().unwrap_or(0.0) * 100.0
        ),
        None => format!("{} {} {}", stage.name, p.done, p.unit),
    };
    if let Some(rate) = p.rate() {
        label.push_str(&format!(" · {} {}/s", fmt_num(rate), p.unit));
    }
    if let Some(eta) = app.eta_secs() {
        label.push_str(&format!(" · ETA {}", fmt_duration(eta)));
    }
    if let Some(phase) = &p.phase {
        label.push_str(&format!(" · {phase}"));
    }
    label.push(' ');
    let gauge = LineGauge::default()
        .ratio(p.fraction().unwrap_or(0.0))
        .label(label)
        .filled_symbol("━")
        .unfilled_symbol("─")
        .filled_style(Style::new().fg(Color::Green))
        .unfilled_style(dim());
    frame.render_widget(gauge, area);
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sample_style(s: &SampleView) -> (&'static str, Style) {
    match s.correct {
        Some(true) => ("✓", Style::new().fg(Color::Green)),
        Some(false) => ("✗", Style::new().fg(Color::Red)),
        None => ("·", Style::new()),
    }
}

fn draw_samples(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered()
        .title(format!(" Samples ({}) ", app.samples.len()))
        .border_style(dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = inner.height as usize;
    if rows == 0 {
        return;
    }
    // Newest first; keep the cursor on screen.
    let first = app.ui.sample_cursor.saturating_sub(rows - 1);
    let lines: Vec<Line> = app
        .samples
        .iter()
        .rev()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, s)| {
            let (mark, style) = sample_style(s);
            let reward = s.reward.map(|r| format!("{r:+.2}")).unwrap_or_else(|| "  - ".into());
            let text = format!("{mark} {reward} s{} {} → {}", s.step, one_line(&s.prompt), one_line(&s.response));
            let style = if i == app.ui.sample_cursor { style.add_modifier(Modifier::REVERSED) } else { style };
            Line::from(Span::styled(text, style))
        })
        .collect();
    if lines.is_empty() {
        frame.render_widget(Paragraph::new("no samples yet").style(dim()), inner);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

fn draw_log(frame: &mut Frame, area: Rect, app: &App) {
    let title = if app.ui.log_scroll > 0 {
        format!(" Log (↑{}) ", app.ui.log_scroll)
    } else {
        " Log ".to_string()
    };
    let block = Block::bordered().title(title).border_style(dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = inner.height as usize;
    let end = app.logs.len().saturating_sub(app.ui.log_scroll);
    let start = end.saturating_sub(rows);
    let t0 = app.started_at.unwrap_or(0.0);
    let lines: Vec<Line> = app
        .logs
        .range(start..end)
        .map(|l| {
            let (tag, style) = match l.level {
                Level::Error => ("ERROR", Style::new().fg(Color::Red)),
                Level::Warn => ("WARN ", Style::new().fg(Color::Yellow)),
                Level::Info | Level::Debug => ("info ", Style::new()),
            };
            let stage = l.stage.as_deref().map(|s| format!("[{s}] ")).unwrap_or_default();
            Line::from(vec![
                Span::styled(format!("{} ", fmt_duration(l.t - t0)), dim()),
                Span::styled(format!("{tag} {stage}{}", one_line(&l.message)), style),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let key = |k: &str| Span::styled(k.to_string(), Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD));
    let text = |t: &str| Span::styled(format!(" {t}  "), dim());
    let mut spans = vec![key("q"), text("quit")];
    if app.ui.controllable && app.status.is_live() {
        let pause = if app.status == Status::Paused { "resume" } else { "pause" };
        spans.extend([key("p"), text(pause), key("s"), text("ckpt")]);
    }
    spans.extend([
        key("←→"),
        text("tab"),
        key("h"),
        text("hist"),
        key("↑↓"),
        text("sample"),
        key("⏎"),
        text("open"),
        key("PgUp/Dn"),
        text("log"),
        key("?"),
        text("help"),
    ]);
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn popup(frame: &mut Frame, area: Rect, width: Constraint, height: Constraint, title: &str) -> Rect {
    let rect = area.centered(width, height);
    frame.render_widget(Clear, rect);
    let block = Block::bordered().title(title.to_string()).border_style(Style::new().fg(Color::Yellow));
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    inner
}

fn draw_sample_detail(frame: &mut Frame, area: Rect, s: &SampleView, scroll: usize) {
    let inner = popup(
        frame,
        area,
        Constraint::Percentage(90),
        Constraint::Percentage(80),
        " Sample (PgUp/PgDn scroll · ↑↓ next · esc close) ",
    );
    let (mark, style) = sample_style(s);
    let verdict = match s.correct {
        Some(true) => "correct",
        Some(false) => "incorrect",
        None => "not graded",
    };
    let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "-".into());
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut text = vec![
        Line::from(vec![
            Span::styled(format!("{mark} {verdict}"), style.add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "   stage {}  step {}  reward {}  advantage {}",
                s.stage,
                s.step,
                opt(s.reward),
                opt(s.advantage)
            )),
        ]),
        Line::from(""),
        Line::from(Span::styled("prompt", bold)),
    ];
    text.extend(s.prompt.lines().map(|l| Line::from(l.to_string())));
    text.push(Line::from(""));
    text.push(Line::from(Span::styled("response", bold)));
    text.extend(response_lines(&s.response, style));
    // Keep the end reachable without scrolling far past it.
    let max_scroll = wrapped_height(&text, inner.width).saturating_sub(inner.height as usize);
    let scroll = u16::try_from(scroll.min(max_scroll)).unwrap_or(u16::MAX);
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).scroll((scroll, 0)), inner);
}

/// Which part of a tool-integrated response a line belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Segment {
    Text,
    Code,
    ToolOutput,
}

/// Classifies each line: inside a ```` ```python ```` block, inside a tool's ```` ```output ````
/// (or ```` ```Output ````) block, or the model's text (fences belong to their block).
fn classify_lines(response: &str) -> Vec<(Segment, &str)> {
    let mut block = Segment::Text;
    response
        .lines()
        .map(|line| {
            let fence = line.trim_start();
            let this = match block {
                Segment::Text if fence.starts_with("```python") => Segment::Code,
                Segment::Text if fence.starts_with("```output") || fence.starts_with("```Output") => Segment::ToolOutput,
                other => other,
            };
            // A bare fence closes the block it is in (the opening fence never does).
            block = if block != Segment::Text && fence.trim_end() == "```" { Segment::Text } else { this };
            (this, line)
        })
        .collect()
}

/// The response with code in one colour and tool output in another, so a sample shows what
/// the model wrote and what the tool returned.
fn response_lines(response: &str, text_style: Style) -> Vec<Line<'static>> {
    classify_lines(response)
        .into_iter()
        .map(|(block, line)| {
            let style = match block {
                Segment::Text => text_style,
                Segment::Code => Style::new().fg(Color::Cyan),
                Segment::ToolOutput => Style::new().fg(Color::Yellow).add_modifier(Modifier::ITALIC),
            };
            Line::from(Span::styled(line.to_string(), style))
        })
        .collect()
}

/// Rows the text takes when wrapped to `width`. Word wrapping can need a row more than the
/// character count says, so a wrapped line counts one spare row: over-estimating only lets
/// the user scroll a little past the end, under-estimating would hide it.
fn wrapped_height(text: &[Line], width: u16) -> usize {
    let width = usize::from(width.max(1));
    text.iter()
        .map(|l| match l.width() {
            0 => 1,
            w if w <= width => 1,
            w => w.div_ceil(width) + 1,
        })
        .sum()
}

const HELP: &[(&str, &str)] = &[
    ("q", "quit (asks before stopping a live run)"),
    ("p / space", "pause or resume the run"),
    ("s", "save a checkpoint now"),
    ("← → / tab", "switch chart"),
    ("h", "recent points / full history"),
    ("↑ ↓", "select a sample"),
    ("enter", "open the selected sample"),
    ("PgUp PgDn", "scroll the log"),
    ("esc", "close a popup"),
    ("?", "this help"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let inner = popup(frame, area, Constraint::Length(52), Constraint::Length(HELP.len() as u16 + 2), " Keys ");
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>10}  "), Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_quit_confirm(frame: &mut Frame, area: Rect) {
    let inner = popup(frame, area, Constraint::Length(46), Constraint::Length(4), " Quit ");
    let text = vec![
        Line::from("The run is still going. Stop it and quit?"),
        Line::from(vec![
            Span::styled("y", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
            Span::raw(" stop (checkpoint) and quit   "),
            Span::styled("n", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
            Span::raw(" cancel"),
        ]),
    ];
    frame.render_widget(Paragraph::new(text), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(fmt_num(0.675106), "0.6751");
        assert_eq!(fmt_num(12.345), "12.35");
        assert_eq!(fmt_num(-0.5), "-0.5000");
        assert_eq!(fmt_num(81920.0), "81920");
        assert_eq!(fmt_num(200.0), "200");
        assert_eq!(fmt_num(1e-6), "1.00e-6");
        assert_eq!(fmt_num(123456.7), "1.23e5");
        assert_eq!(fmt_num(f64::NAN), "NaN");
        assert_eq!(fmt_num(0.0), "0");
    }

    #[test]
    fn durations_are_h_mm_ss() {
        assert_eq!(fmt_duration(399.0), "0:06:39");
        assert_eq!(fmt_duration(3600.0 * 26.0 + 61.4), "26:01:01");
        assert_eq!(fmt_duration(-3.0), "0:00:00");
    }

    #[test]
    fn legend_names_drop_the_family_prefix() {
        assert_eq!(short_name("critic/score/mean"), "score/mean");
        assert_eq!(short_name("actor/entropy_incorrect"), "entropy_incorrect");
        assert_eq!(short_name("eval_loss"), "eval_loss");
    }
}

#[cfg(test)]
mod tool_block_tests {
    use super::*;

    #[test]
    fn code_and_tool_output_lines_are_told_apart() {
        let r = "Let me compute.\n```python\nprint(6*7)\n```\n\n```Output\n42\n```\n\n=> 42";
        let kinds: Vec<Segment> = classify_lines(r).into_iter().map(|(b, _)| b).collect();
        use Segment::*;
        assert_eq!(kinds, vec![Text, Code, Code, Code, Text, ToolOutput, ToolOutput, ToolOutput, Text, Text]);
        assert_eq!(response_lines(r, Style::new()).len(), 10);
        // A plain response stays text.
        assert!(classify_lines("13 13 9 => 933").iter().all(|(b, _)| *b == Text));
    }
}
