//! Dashboard state folded from [`Record`]s. Pure: no terminal, no clock of its own.
//!
//! The same fold serves the live dashboard (records from the bus), `retort watch` (records
//! tailed from `events.jsonl`) and replay of a finished run, so what a researcher sees never
//! depends on how the events arrived. The view only renders this state.

use crate::bus::{Control, Event, Level, Outcome, Record, RunState, StageInfo};
use std::collections::{BTreeMap, VecDeque};

/// Points kept at full resolution for the "recent" chart view (burn keeps 1000 too).
pub const RECENT_POINTS: usize = 1000;
/// Buckets kept for the "full history" view; each bucket draws as its min and max point.
pub const FULL_BUCKETS: usize = 256;
/// Samples kept for the samples pane (full dumps live on disk, not here).
pub const SAMPLE_RING: usize = 200;
/// Log lines kept for the log pane.
pub const LOG_RING: usize = 500;
/// Progress observations used to estimate the rate (a sliding window smooths phases).
const RATE_WINDOW: usize = 20;

/// The run's status as the header shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Status {
    /// No `run_started` seen yet (e.g. watching a file that is still empty).
    #[default]
    Waiting,
    Running,
    Paused,
    Stopping,
    Finished,
    Failed,
    Interrupted,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Waiting => "WAITING",
            Status::Running => "RUNNING",
            Status::Paused => "PAUSED",
            Status::Stopping => "STOPPING",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Interrupted => "INTERRUPTED",
        }
    }

    /// True while the worker may still act on controls.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Stopping)
    }

    /// True once the run reported how it ended.
    pub fn is_over(self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Interrupted)
    }
}

/// One group of charts, shown as one tab. Series names follow verl/TRL (DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartTab {
    Loss,
    Reward,
    Entropy,
    Diversity,
    Kl,
    Lr,
    GradNorm,
    /// End-of-stage summaries, tables, outcome and error.
    Summary,
}

impl ChartTab {
    pub const ALL: [ChartTab; 8] = [
        ChartTab::Loss,
        ChartTab::Reward,
        ChartTab::Entropy,
        ChartTab::Diversity,
        ChartTab::Kl,
        ChartTab::Lr,
        ChartTab::GradNorm,
        ChartTab::Summary,
    ];

    pub fn title(self) -> &'static str {
        match self {
            ChartTab::Loss => "Loss",
            ChartTab::Reward => "Reward",
            ChartTab::Entropy => "Entropy",
            ChartTab::Diversity => "Diversity",
            ChartTab::Kl => "KL",
            ChartTab::Lr => "LR",
            ChartTab::GradNorm => "Grad norm",
            ChartTab::Summary => "Summary",
        }
    }

    /// The metric names drawn as lines in this tab, in legend order.
    pub fn lines(self) -> &'static [&'static str] {
        match self {
            ChartTab::Loss => &["loss", "eval_loss", "actor/pg_loss", "actor/tb_loss", "critic/vf_loss"],
            ChartTab::Reward => &["critic/score/mean"],
            ChartTab::Entropy => &["actor/entropy", "actor/entropy_correct", "actor/entropy_incorrect"],
            ChartTab::Diversity => &["diversity/distinct_correct", "diversity/coverage"],
            ChartTab::Kl => &["actor/kl_loss", "actor/ref_kl"],
            ChartTab::Lr => &["lr", "actor/lr"],
            ChartTab::GradNorm => &["actor/grad_norm", "grad_norm"],
            ChartTab::Summary => &[],
        }
    }

    /// Metric-name prefixes whose every metric this tab draws too, after [`Self::lines`].
    pub fn prefixes(self) -> &'static [&'static str] {
        match self {
            ChartTab::Loss => &["loss/", "eval/recon/"],
            _ => &[],
        }
    }

    /// Metrics drawn as a dim band around the lines (min and max of the group's scores).
    pub fn band(self) -> Option<(&'static str, &'static str)> {
        match self {
            ChartTab::Reward => Some(("critic/score/min", "critic/score/max")),
            _ => None,
        }
    }
}

/// Which slice of a metric's history the charts draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum History {
    /// The last [`RECENT_POINTS`] points at full resolution.
    #[default]
    Recent,
    /// Everything since the stage began, downsampled to min/max per bucket.
    Full,
}

/// A bucket of consecutive points, remembered by its extremes so spikes survive downsampling.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    count: usize,
    first_x: f64,
    low: (f64, f64),
    high: (f64, f64),
}

impl Bucket {
    fn new(x: f64, y: f64) -> Self {
        Bucket { count: 1, first_x: x, low: (x, y), high: (x, y) }
    }

    fn absorb(&mut self, other: &Bucket) {
        self.count += other.count;
        if other.low.1 < self.low.1 {
            self.low = other.low;
        }
        if other.high.1 > self.high.1 {
            self.high = other.high;
        }
    }
}

/// One metric's history: (step, value) points with bounded memory.
///
/// Recent points are kept exactly; the full history is a list of at most [`FULL_BUCKETS`]
/// buckets. When the list overflows, neighbouring buckets merge (each then covers twice the
/// points), and each bucket draws as its lowest and highest point, so the curve keeps its
/// envelope (spikes, dips) at any length.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    recent: VecDeque<(f64, f64)>,
    buckets: Vec<Bucket>,
    points_per_bucket: usize,
    /// The last value reported, even when not finite (a NaN loss must show up as NaN).
    pub latest: Option<f64>,
    /// How many finite points were ever pushed.
    pub count: u64,
}

impl Series {
    pub fn push(&mut self, x: f64, y: f64) {
        self.latest = Some(y);
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        self.rewind_to(x);
        self.count += 1;
        self.recent.push_back((x, y));
        if self.recent.len() > RECENT_POINTS {
            self.recent.pop_front();
        }
        self.push_bucketed(x, y);
    }

    /// A resumed run repeats steps from its last checkpoint: forget points at or after `x`
    /// so the chart shows the timeline that actually continued.
    fn rewind_to(&mut self, x: f64) {
        while self.recent.back().is_some_and(|p| p.0 >= x) {
            self.recent.pop_back();
        }
        while self.buckets.last().is_some_and(|b| b.first_x >= x) {
            self.buckets.pop();
        }
    }

    fn push_bucketed(&mut self, x: f64, y: f64) {
        if self.points_per_bucket == 0 {
            self.points_per_bucket = 1;
        }
        match self.buckets.last_mut() {
            Some(last) if last.count < self.points_per_bucket => last.absorb(&Bucket::new(x, y)),
            _ => self.buckets.push(Bucket::new(x, y)),
        }
        if self.buckets.len() > FULL_BUCKETS {
            self.merge_pairs();
        }
    }

    fn merge_pairs(&mut self) {
        let merged = self
            .buckets
            .chunks(2)
            .map(|pair| {
                let mut b = pair[0];
                if let Some(second) = pair.get(1) {
                    b.absorb(second);
                }
                b
            })
            .collect();
        self.buckets = merged;
        self.points_per_bucket *= 2;
    }

    /// Points to draw, in step order.
    pub fn points(&self, history: History) -> Vec<(f64, f64)> {
        match history {
            History::Recent => self.recent.iter().copied().collect(),
            History::Full => {
                let mut out = Vec::with_capacity(self.buckets.len() * 2);
                for b in &self.buckets {
                    let (a, c) = if b.low.0 <= b.high.0 { (b.low, b.high) } else { (b.high, b.low) };
                    out.push(a);
                    if c != a {
                        out.push(c);
                    }
                }
                out
            }
        }
    }
}

/// Progress of one stage, with a rate estimated from recent progress events.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StageProgress {
    pub done: u64,
    pub total: Option<u64>,
    pub unit: String,
    pub phase: Option<String>,
    /// Seconds spent in each phase so far (closed spans only). Generation usually dominates
    /// an RL step; this shows by how much (docs/METHODS.md §A2, rows 2–3).
    pub phase_secs: BTreeMap<String, f64>,
    /// When the current phase span began; `None` while paused or between phases.
    phase_since: Option<f64>,
    /// (time, done) observations, oldest first, for the rate.
    window: VecDeque<(f64, u64)>,
}

impl StageProgress {
    /// A progress event names the phase the worker is in now: the time since the previous
    /// event belongs to the previous phase.
    fn enter_phase(&mut self, t: f64, phase: Option<String>) {
        self.close_phase_span(t);
        self.phase = phase;
        self.phase_since = self.phase.as_ref().map(|_| t);
    }

    fn close_phase_span(&mut self, t: f64) {
        if let (Some(p), Some(t0)) = (&self.phase, self.phase_since) {
            *self.phase_secs.entry(p.clone()).or_default() += (t - t0).max(0.0);
        }
        self.phase_since = None;
    }

    /// Pausing stops the phase clock; resuming restarts it in the same phase.
    fn set_paused(&mut self, t: f64, paused: bool) {
        if paused {
            self.close_phase_span(t);
        } else if self.phase.is_some() && self.phase_since.is_none() {
            self.phase_since = Some(t);
        }
    }

    /// Each phase's share of the measured time, largest first.
    pub fn phase_shares(&self) -> Vec<(&str, f64)> {
        let total: f64 = self.phase_secs.values().sum();
        if total <= 0.0 {
            return Vec::new();
        }
        let mut shares: Vec<(&str, f64)> = self.phase_secs.iter().map(|(k, v)| (k.as_str(), v / total)).collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        shares
    }

    fn observe(&mut self, t: f64, done: u64) {
        if self.window.back().is_some_and(|&(_, d)| done < d) {
            // The counter went backwards (a resumed stage): old observations say nothing.
            self.window.clear();
        }
        self.window.push_back((t, done));
        if self.window.len() > RATE_WINDOW {
            self.window.pop_front();
        }
    }

    /// Units per second over the observation window, if it spans time and work.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, d0), &(t1, d1)) = (self.window.front()?, self.window.back()?);
        let dt = t1 - t0;
        if dt <= 0.0 || d1 <= d0 {
            return None;
        }
        Some((d1 - d0) as f64 / dt)
    }

    /// Seconds until `total` at the current rate.
    pub fn eta_secs(&self) -> Option<f64> {
        let total = self.total?;
        let remaining = total.saturating_sub(self.done) as f64;
        if remaining == 0.0 {
            return Some(0.0);
        }
        Some(remaining / self.rate()?)
    }

    pub fn fraction(&self) -> Option<f64> {
        let total = self.total.filter(|&t| t > 0)?;
        Some((self.done as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// One generation as the samples pane shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleView {
    pub stage: String,
    pub step: u64,
    pub prompt: String,
    pub response: String,
    pub reward: Option<f64>,
    pub advantage: Option<f64>,
    pub correct: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub t: f64,
    pub level: Level,
    pub stage: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub t: f64,
    pub stage: String,
    pub step: u64,
    pub path: String,
}

/// What a finished stage reported: final numbers and an optional preformatted table.
#[derive(Clone, Debug, PartialEq)]
pub struct StageResult {
    pub stage: String,
    pub kind: String,
    pub outcome: Outcome,
    pub summary: BTreeMap<String, f64>,
    pub table: Option<String>,
}

/// The stage currently running (or last run).
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentStage {
    pub name: String,
    pub kind: String,
    /// Zero-based.
    pub index: usize,
    pub total_stages: usize,
    pub started_at: f64,
}

/// Everything the dashboard shows. Fold records in with [`App::apply`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct App {
    // What the run said.
    pub run: String,
    pub profile: String,
    pub device: String,
    pub seed: Option<u64>,
    pub resumed: bool,
    pub stages: Vec<StageInfo>,
    pub current: Option<CurrentStage>,
    pub status: Status,
    /// Time of the first record (the run's start when `run_started` comes first).
    pub started_at: Option<f64>,
    /// Latest time known: the newest record, or the wall clock via [`App::tick`].
    pub now: f64,
    pub finished_at: Option<f64>,
    /// Time of the newest record, to notice a worker that went quiet.
    pub last_event_at: f64,
    pub progress: BTreeMap<String, StageProgress>,
    /// stage → metric name → series.
    pub metrics: BTreeMap<String, BTreeMap<String, Series>>,
    /// The stage whose metrics the charts draw: the one that reported metrics last.
    pub chart_stage: Option<String>,
    /// Newest last.
    pub samples: VecDeque<SampleView>,
    /// Newest last.
    pub logs: VecDeque<LogLine>,
    pub checkpoints: Vec<Checkpoint>,
    pub results: Vec<StageResult>,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// Records that could not be read (e.g. event kinds from a newer retort).
    pub skipped: usize,

    // What the user is looking at.
    pub ui: UiState,
}

/// Selection and popups; changed only by [`App::perform`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UiState {
    pub tab: usize,
    pub history: History,
    /// Position of the selected sample counted from the newest (0 = newest).
    pub sample_cursor: usize,
    pub sample_open: bool,
    /// Lines scrolled down inside the open sample (long chains of thought).
    pub detail_scroll: usize,
    /// Lines scrolled up from the newest log line (0 = follow the tail).
    pub log_scroll: usize,
    pub help_open: bool,
    pub quit_confirm: bool,
    /// Whether controls reach a worker (false when watching a file).
    pub controllable: bool,
    /// A control sent but not yet acknowledged by a `state` event.
    pub requested: Option<Control>,
    /// Set once the user moved off the default tab, so the end of the run does not
    /// yank the view away from what they chose.
    pub tab_chosen: bool,
    pub quit: bool,
}

/// What a key asks for. Produced by `input::handle_key`, carried out by [`App::perform`]
/// (state) and the dashboard loop (controls and quitting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    /// Ask the worker to stop gracefully, then leave the dashboard.
    StopAndQuit,
    AskQuit,
    CancelQuit,
    Control(Control),
    NextTab,
    PrevTab,
    ToggleHistory,
    /// Move the sample selection towards older (positive) or newer (negative) samples.
    MoveSamples(i32),
    /// Scroll the log up (positive, towards older lines) or down.
    ScrollLog(i32),
    /// Scroll the open sample down (positive) or up.
    ScrollDetail(i32),
    OpenSample,
    Back,
    ToggleHelp,
}

impl App {
    /// A fresh state; `controllable` says whether pause/stop keys reach a worker.
    pub fn new(controllable: bool) -> Self {
        let mut app = App::default();
        app.ui.controllable = controllable;
        app
    }

    /// Fold one record into the state.
    pub fn apply(&mut self, rec: &Record) {
        if self.started_at.is_none() {
            self.started_at = Some(rec.t);
        }
        if rec.t > self.now {
            self.now = rec.t;
        }
        self.last_event_at = self.last_event_at.max(rec.t);
        match &rec.event {
            Event::RunStarted { run, profile, stages, device, seed, resumed } => {
                self.run = run.clone();
                self.profile = profile.clone();
                self.stages = stages.clone();
                self.device = device.clone();
                self.seed = Some(*seed);
                self.resumed = *resumed;
                self.status = Status::Running;
                self.outcome = None;
                self.error = None;
                self.finished_at = None;
                if !*resumed {
                    self.started_at = Some(rec.t);
                }
            }
            Event::StageStarted { stage, kind, index, total_stages, total, unit } => {
                self.current = Some(CurrentStage {
                    name: stage.clone(),
                    kind: kind.clone(),
                    index: *index,
                    total_stages: *total_stages,
                    started_at: rec.t,
                });
                let p = self.progress.entry(stage.clone()).or_default();
                p.total = *total;
                p.unit = unit.clone();
                p.phase = None;
                p.phase_since = None;
                p.phase_secs.clear();
                // Setup (loading a model, building a dataset) is not part of the work rate.
                p.window.clear();
                if self.status == Status::Waiting {
                    self.status = Status::Running;
                }
            }
            Event::Progress { stage, done, total, unit, phase } => {
                let p = self.progress.entry(stage.clone()).or_default();
                p.done = *done;
                p.total = *total;
                p.unit = unit.clone();
                p.enter_phase(rec.t, phase.clone());
                p.observe(rec.t, *done);
            }
            Event::Metrics { stage, step, values } => {
                let per_stage = self.metrics.entry(stage.clone()).or_default();
                for (name, &v) in values {
                    per_stage.entry(name.clone()).or_default().push(*step as f64, v);
                }
                self.chart_stage = Some(stage.clone());
            }
            Event::Sample { stage, step, prompt, response, reward, advantage, correct, .. } => {
                self.push_sample(SampleView {
                    stage: stage.clone(),
                    step: *step,
                    prompt: prompt.clone(),
                    response: response.clone(),
                    reward: *reward,
                    advantage: *advantage,
                    correct: *correct,
                });
            }
            Event::Log { level, message, stage } => {
                if *level >= Level::Info {
                    self.push_log(LogLine { t: rec.t, level: *level, stage: stage.clone(), message: message.clone() });
                }
            }
            Event::CheckpointSaved { stage, step, path } => {
                if self.ui.requested == Some(Control::CheckpointNow) {
                    self.ui.requested = None;
                }
                self.checkpoints.push(Checkpoint { t: rec.t, stage: stage.clone(), step: *step, path: path.clone() });
                self.push_log(LogLine {
                    t: rec.t,
                    level: Level::Info,
                    stage: Some(stage.clone()),
                    message: format!("checkpoint saved at step {step}: {path}"),
                });
            }
            Event::State { state } => {
                self.ui.requested = None;
                if let Some(c) = &self.current {
                    if let Some(p) = self.progress.get_mut(&c.name) {
                        p.set_paused(rec.t, *state == RunState::Paused);
                    }
                }
                if !self.status.is_over() {
                    self.status = match state {
                        RunState::Running => Status::Running,
                        RunState::Paused => Status::Paused,
                        RunState::Stopping => Status::Stopping,
                    };
                }
            }
            Event::StageFinished { stage, outcome, summary, table } => {
                let kind = self.kind_of(stage);
                self.results.retain(|r| &r.stage != stage);
                self.results.push(StageResult {
                    stage: stage.clone(),
                    kind,
                    outcome: *outcome,
                    summary: summary.clone(),
                    table: table.clone(),
                });
            }
            Event::RunFinished { outcome, error } => {
                self.outcome = Some(*outcome);
                self.error = error.clone();
                self.finished_at = Some(rec.t);
                self.ui.requested = None;
                self.status = match outcome {
                    Outcome::Finished => Status::Finished,
                    Outcome::Failed => Status::Failed,
                    Outcome::Interrupted => Status::Interrupted,
                };
                if let Some(e) = error {
                    self.push_log(LogLine { t: rec.t, level: Level::Error, stage: None, message: e.clone() });
                }
                if !self.ui.tab_chosen {
                    self.ui.tab = ChartTab::ALL.len() - 1;
                }
            }
        }
    }

    /// Advance the clock between records so elapsed time moves while a step runs.
    pub fn tick(&mut self, now: f64) {
        if self.finished_at.is_none() && now > self.now {
            self.now = now;
        }
    }

    fn kind_of(&self, stage: &str) -> String {
        self.stages
            .iter()
            .find(|s| s.name == stage)
            .map(|s| s.kind.clone())
            .or_else(|| self.current.as_ref().filter(|c| c.name == stage).map(|c| c.kind.clone()))
            .unwrap_or_default()
    }

    fn push_sample(&mut self, s: SampleView) {
        self.samples.push_back(s);
        if self.samples.len() > SAMPLE_RING {
            self.samples.pop_front();
        }
        // Keep the selection on the sample the user was reading.
        if self.ui.sample_cursor > 0 || self.ui.sample_open {
            self.ui.sample_cursor = (self.ui.sample_cursor + 1).min(self.samples.len().saturating_sub(1));
        }
    }

    fn push_log(&mut self, line: LogLine) {
        self.logs.push_back(line);
        if self.logs.len() > LOG_RING {
            self.logs.pop_front();
        }
        if self.ui.log_scroll > 0 {
            self.ui.log_scroll = (self.ui.log_scroll + 1).min(self.logs.len().saturating_sub(1));
        }
    }

    /// Seconds since the run started.
    pub fn elapsed_secs(&self) -> Option<f64> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or(self.now);
        Some((end - start).max(0.0))
    }

    /// Seconds since the last record while the run should be busy: a step can legitimately
    /// take minutes, but a long silence is worth showing (a hang looks exactly like this).
    pub fn quiet_secs(&self) -> Option<f64> {
        if self.status != Status::Running {
            return None;
        }
        Some((self.now - self.last_event_at).max(0.0))
    }

    /// Progress of the current stage.
    pub fn current_progress(&self) -> Option<(&CurrentStage, &StageProgress)> {
        let c = self.current.as_ref()?;
        Some((c, self.progress.get(&c.name)?))
    }

    /// Seconds left in the current stage, while the run is live.
    pub fn eta_secs(&self) -> Option<f64> {
        if !self.status.is_live() {
            return None;
        }
        self.current_progress()?.1.eta_secs()
    }

    pub fn tab(&self) -> ChartTab {
        ChartTab::ALL[self.ui.tab.min(ChartTab::ALL.len() - 1)]
    }

    /// The series of the chart stage, by metric name.
    pub fn series(&self, name: &str) -> Option<&Series> {
        self.metrics.get(self.chart_stage.as_ref()?)?.get(name)
    }

    /// The sample under the cursor (cursor 0 = newest).
    pub fn selected_sample(&self) -> Option<&SampleView> {
        let n = self.samples.len();
        let idx = n.checked_sub(1 + self.ui.sample_cursor)?;
        self.samples.get(idx)
    }

    /// Carry out the state part of an action. Controls and quitting are the loop's job;
    /// here they only update what the screen says about them.
    pub fn perform(&mut self, action: Action) {
        let ui = &mut self.ui;
        match action {
            Action::Nothing => {}
            Action::Quit | Action::StopAndQuit => {
                ui.quit_confirm = false;
                ui.quit = true;
            }
            Action::AskQuit => ui.quit_confirm = true,
            Action::CancelQuit => ui.quit_confirm = false,
            Action::Control(c) => ui.requested = Some(c),
            Action::NextTab => {
                ui.tab = (ui.tab + 1) % ChartTab::ALL.len();
                ui.tab_chosen = true;
            }
            Action::PrevTab => {
                ui.tab = (ui.tab + ChartTab::ALL.len() - 1) % ChartTab::ALL.len();
                ui.tab_chosen = true;
            }
            Action::ToggleHistory => {
                ui.history = match ui.history {
                    History::Recent => History::Full,
                    History::Full => History::Recent,
                }
            }
            Action::MoveSamples(d) => {
                let max = self.samples.len().saturating_sub(1);
                ui.sample_cursor = offset(ui.sample_cursor, d, max);
                ui.detail_scroll = 0;
            }
            Action::ScrollDetail(d) => {
                // The view clamps to the text's height, which only it knows.
                ui.detail_scroll = offset(ui.detail_scroll, d, usize::from(u16::MAX));
            }
            Action::ScrollLog(d) => {
                let max = self.logs.len().saturating_sub(1);
                ui.log_scroll = offset(ui.log_scroll, d, max);
            }
            Action::OpenSample => {
                ui.sample_open = !self.samples.is_empty();
                ui.detail_scroll = 0;
            }
            Action::Back => {
                if ui.quit_confirm {
                    ui.quit_confirm = false;
                } else if ui.help_open {
                    ui.help_open = false;
                } else {
                    ui.sample_open = false;
                }
            }
            Action::ToggleHelp => ui.help_open = !ui.help_open,
        }
    }
}

fn offset(current: usize, delta: i32, max: usize) -> usize {
    let moved = current as i64 + delta as i64;
    moved.clamp(0, max as i64) as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::StageInfo;

    pub fn rec(t: f64, event: Event) -> Record {
        Record { t, event }
    }

    pub fn run_started(t: f64) -> Record {
        rec(
            t,
            Event::RunStarted {
                run: "gsm8k-grpo-0425".into(),
                profile: "grpo-tiny".into(),
                stages: vec![
                    StageInfo { name: "sft".into(), kind: "sft".into() },
                    StageInfo { name: "rl".into(), kind: "grpo".into() },
                    StageInfo { name: "eval".into(), kind: "eval".into() },
                ],
                device: "cpu".into(),
                seed: 7,
                resumed: false,
            },
        )
    }

    pub fn stage_started(t: f64, name: &str, kind: &str, index: usize, total: u64) -> Record {
        rec(
            t,
            Event::StageStarted {
                stage: name.into(),
                kind: kind.into(),
                index,
                total_stages: 3,
                total: Some(total),
                unit: "step".into(),
            },
        )
    }

    pub fn progress(t: f64, stage: &str, done: u64, total: u64, phase: Option<&str>) -> Record {
        rec(
            t,
            Event::Progress {
                stage: stage.into(),
                done,
                total: Some(total),
                unit: "step".into(),
                phase: phase.map(str::to_string),
            },
        )
    }

    pub fn metrics(t: f64, stage: &str, step: u64, values: &[(&str, f64)]) -> Record {
        rec(
            t,
            Event::Metrics {
                stage: stage.into(),
                step,
                values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            },
        )
    }

    pub fn sample(t: f64, step: u64, prompt: &str, response: &str, reward: f64, correct: bool) -> Record {
        rec(
            t,
            Event::Sample {
                stage: "rl".into(),
                step,
                prompt: prompt.into(),
                response: response.into(),
                reward: Some(reward),
                advantage: Some(reward - 0.5),
                correct: Some(correct),
                extra: serde_json::Value::Null,
            },
        )
    }

    fn fold(records: &[Record]) -> App {
        let mut app = App::new(true);
        for r in records {
            app.apply(r);
        }
        app
    }

    #[test]
    fn run_and_stage_events_set_header_fields() {
        let app = fold(&[run_started(100.0), stage_started(101.0, "sft", "sft", 0, 50)]);
        assert_eq!(app.run, "gsm8k-grpo-0425");
        assert_eq!(app.profile, "grpo-tiny");
        assert_eq!(app.device, "cpu");
        assert_eq!(app.status, Status::Running);
        let c = app.current.as_ref().unwrap();
        assert_eq!((c.name.as_str(), c.kind.as_str(), c.index, c.total_stages), ("sft", "sft", 0, 3));
        assert_eq!(app.elapsed_secs(), Some(1.0));
    }

    #[test]
    fn eta_follows_the_progress_rate() {
        // 10 steps in 5 s = 2 steps/s; 90 steps left → 45 s.
        let app = fold(&[
            run_started(100.0),
            stage_started(100.0, "rl", "grpo", 1, 100),
            progress(110.0, "rl", 0, 100, Some("generate")),
            progress(115.0, "rl", 10, 100, Some("update")),
        ]);
        let (_, p) = app.current_progress().unwrap();
        assert_eq!(p.rate(), Some(2.0));
        assert_eq!(app.eta_secs(), Some(45.0));
        assert_eq!(p.phase.as_deref(), Some("update"));
        assert_eq!(p.fraction(), Some(0.1));
        assert_eq!(app.elapsed_secs(), Some(15.0));
    }

    #[test]
    fn eta_is_unknown_without_progress_over_time_and_after_the_end() {
        let mut app = fold(&[run_started(1.0), stage_started(1.0, "rl", "grpo", 1, 100), progress(1.0, "rl", 5, 100, None)]);
        assert_eq!(app.eta_secs(), None, "no time has passed, so no rate");
        app.apply(&progress(3.0, "rl", 9, 100, None));
        assert_eq!(app.eta_secs(), Some(91.0 / 2.0));
        app.apply(&rec(4.0, Event::RunFinished { outcome: Outcome::Interrupted, error: None }));
        assert_eq!(app.eta_secs(), None);
        assert_eq!(app.status, Status::Interrupted);
        app.tick(50.0);
        assert_eq!(app.elapsed_secs(), Some(3.0), "the clock stops when the run ends");
    }

    #[test]
    fn phase_time_is_attributed_to_the_phase_in_progress_and_pause_stops_the_clock() {
        let mut app = fold(&[
            run_started(0.0),
            stage_started(0.0, "rl", "grpo", 1, 10),
            progress(10.0, "rl", 0, 10, Some("generate")),
            progress(16.0, "rl", 0, 10, Some("update")),
            progress(18.0, "rl", 1, 10, Some("generate")),
        ]);
        // generate 10→16, update 16→18: 6 s and 2 s.
        app.apply(&rec(20.0, Event::State { state: RunState::Paused }));
        app.apply(&rec(100.0, Event::State { state: RunState::Running }));
        app.apply(&progress(101.0, "rl", 1, 10, Some("update")));
        // generate also 18→20 and 100→101 (the pause 20→100 is not counted): 9 s in all.
        let (_, p) = app.current_progress().unwrap();
        assert_eq!(p.phase_secs["generate"], 9.0);
        assert_eq!(p.phase_secs["update"], 2.0);
        assert_eq!(p.phase_shares(), vec![("generate", 9.0 / 11.0), ("update", 2.0 / 11.0)]);
    }

    #[test]
    fn a_quiet_worker_is_noticed_only_while_running() {
        let mut app = fold(&[run_started(0.0), stage_started(5.0, "rl", "grpo", 1, 10)]);
        app.tick(95.0);
        assert_eq!(app.quiet_secs(), Some(90.0));
        app.apply(&rec(96.0, Event::State { state: RunState::Paused }));
        app.tick(500.0);
        assert_eq!(app.quiet_secs(), None, "a paused run is quiet on purpose");
    }

    #[test]
    fn metrics_become_series_per_stage_and_chart_follows_latest_stage() {
        let app = fold(&[
            run_started(0.0),
            metrics(1.0, "sft", 1, &[("loss", 2.0)]),
            metrics(2.0, "sft", 2, &[("loss", 1.5)]),
            metrics(3.0, "rl", 1, &[("critic/score/mean", 0.25), ("critic/score/min", 0.0), ("critic/score/max", 1.0)]),
        ]);
        assert_eq!(app.chart_stage.as_deref(), Some("rl"));
        assert_eq!(app.series("critic/score/max").unwrap().points(History::Recent), vec![(1.0, 1.0)]);
        assert!(app.series("loss").is_none(), "sft's loss is not drawn on rl's charts");
        let sft_loss = &app.metrics["sft"]["loss"];
        assert_eq!(sft_loss.points(History::Recent), vec![(1.0, 2.0), (2.0, 1.5)]);
        assert_eq!(sft_loss.latest, Some(1.5));
    }

    #[test]
    fn nan_is_reported_as_latest_but_not_drawn() {
        let mut s = Series::default();
        s.push(1.0, 0.5);
        s.push(2.0, f64::NAN);
        assert!(s.latest.unwrap().is_nan());
        assert_eq!(s.points(History::Recent), vec![(1.0, 0.5)]);
        assert_eq!(s.count, 1);
    }

    #[test]
    fn full_history_is_bounded_and_keeps_extremes() {
        let mut s = Series::default();
        let n = 10_000;
        for i in 0..n {
            // A slow decay with one spike and one dip far from the ends.
            let y = match i {
                3_333 => 50.0,
                6_667 => -50.0,
                _ => 1.0 / (1.0 + i as f64 / 1000.0),
            };
            s.push(i as f64, y);
        }
        let full = s.points(History::Full);
        assert!(full.len() <= 2 * FULL_BUCKETS, "{} points", full.len());
        assert!(full.contains(&(3_333.0, 50.0)), "the spike survives downsampling");
        assert!(full.contains(&(6_667.0, -50.0)), "the dip survives downsampling");
        assert_eq!(full.first().unwrap().0, 0.0);
        assert_eq!(full.last().unwrap().0, (n - 1) as f64);
        assert!(full.windows(2).all(|w| w[0].0 < w[1].0), "points stay in step order");
        let recent = s.points(History::Recent);
        assert_eq!(recent.len(), RECENT_POINTS);
        assert_eq!(recent[0], (9_000.0, 1.0 / 10.0));
    }

    #[test]
    fn a_resumed_run_rewinds_series_to_the_repeated_step() {
        let mut s = Series::default();
        for i in 1..=10 {
            s.push(i as f64, i as f64);
        }
        s.push(6.0, 60.0);
        let xs: Vec<f64> = s.points(History::Recent).iter().map(|p| p.0).collect();
        assert_eq!(xs, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(s.points(History::Recent).last(), Some(&(6.0, 60.0)));
        assert!(s.points(History::Full).iter().all(|p| p.0 <= 6.0));
    }

    #[test]
    fn pause_resume_and_stop_come_from_state_events() {
        let mut app = fold(&[run_started(0.0)]);
        app.perform(Action::Control(Control::Pause));
        assert_eq!(app.ui.requested, Some(Control::Pause));
        assert_eq!(app.status, Status::Running, "a request is not a state");
        app.apply(&rec(1.0, Event::State { state: RunState::Paused }));
        assert_eq!(app.status, Status::Paused);
        assert_eq!(app.ui.requested, None);
        app.apply(&rec(2.0, Event::State { state: RunState::Stopping }));
        assert_eq!(app.status, Status::Stopping);
    }

    #[test]
    fn failure_keeps_the_error_and_switches_to_summary() {
        let app = fold(&[
            run_started(0.0),
            stage_started(0.0, "sft", "sft", 0, 10),
            rec(5.0, Event::StageFinished { stage: "sft".into(), outcome: Outcome::Failed, summary: BTreeMap::new(), table: None }),
            rec(5.0, Event::RunFinished { outcome: Outcome::Failed, error: Some("out of memory in step 3".into()) }),
        ]);
        assert_eq!(app.status, Status::Failed);
        assert_eq!(app.error.as_deref(), Some("out of memory in step 3"));
        assert_eq!(app.tab(), ChartTab::Summary);
        assert_eq!(app.results[0].kind, "sft");
        assert_eq!(app.results[0].outcome, Outcome::Failed);
        assert_eq!(app.logs.back().unwrap().level, Level::Error);
    }

    #[test]
    fn samples_ring_is_bounded_and_selection_sticks_to_a_sample() {
        let mut app = fold(&[run_started(0.0)]);
        for i in 0..5 {
            app.apply(&sample(1.0, i, &format!("p{i}"), "r", 1.0, i % 2 == 0));
        }
        assert_eq!(app.selected_sample().unwrap().prompt, "p4", "cursor 0 is the newest");
        app.perform(Action::MoveSamples(2));
        assert_eq!(app.selected_sample().unwrap().prompt, "p2");
        app.apply(&sample(2.0, 5, "p5", "r", 0.0, false));
        assert_eq!(app.selected_sample().unwrap().prompt, "p2", "a new sample does not move the selection");
        app.perform(Action::MoveSamples(100));
        assert_eq!(app.selected_sample().unwrap().prompt, "p0");
        for i in 0..(SAMPLE_RING as u64 + 10) {
            app.apply(&sample(3.0, i, "x", "y", 0.0, true));
        }
        assert_eq!(app.samples.len(), SAMPLE_RING);
    }

    #[test]
    fn logs_keep_info_and_above_and_checkpoints() {
        let app = fold(&[
            run_started(0.0),
            rec(1.0, Event::Log { level: Level::Debug, message: "noise".into(), stage: None }),
            rec(2.0, Event::Log { level: Level::Warn, message: "all groups have zero std".into(), stage: Some("rl".into()) }),
            rec(3.0, Event::CheckpointSaved { stage: "rl".into(), step: 50, path: "ckpt/50".into() }),
        ]);
        let msgs: Vec<&str> = app.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, vec!["all groups have zero std", "checkpoint saved at step 50: ckpt/50"]);
        assert_eq!(app.checkpoints.len(), 1);
    }

    #[test]
    fn tabs_wrap_and_the_user_choice_survives_the_end_of_the_run() {
        let mut app = fold(&[run_started(0.0)]);
        app.perform(Action::PrevTab);
        assert_eq!(app.tab(), ChartTab::Summary);
        app.perform(Action::NextTab);
        app.perform(Action::NextTab);
        assert_eq!(app.tab(), ChartTab::Reward);
        app.apply(&rec(1.0, Event::RunFinished { outcome: Outcome::Finished, error: None }));
        assert_eq!(app.tab(), ChartTab::Reward);
    }
}
