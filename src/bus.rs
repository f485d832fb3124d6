//! The event bus: the one way workers talk to the outside world.
//!
//! Stages run on a worker thread and never print. They send [`Event`]s through an
//! [`Emitter`]; a recorder appends every event to the run's `events.jsonl` and forwards it
//! to a sink (dashboard, headless lines, JSON). Controls ([`Control`]) flow the other way.
//!
//! `events.jsonl` is a contract read by `retort watch`, `retort report` and outside scripts:
//! add event kinds and optional fields, never change the meaning of an existing field.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// One line of `events.jsonl`: a wall-clock timestamp plus the event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Seconds since the Unix epoch.
    pub t: f64,
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    pub fn now(event: Event) -> Self {
        Record { t: unix_now(), event }
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// How a run or stage ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Finished,
    Failed,
    Interrupted,
}

/// What the worker is doing right now, as the dashboard's header shows it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Stopping,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageInfo {
    pub name: String,
    pub kind: String,
}

/// Everything a run reports. Serialized with an `event` tag in snake_case, e.g.
/// `{"t":1764000000.1,"event":"progress","stage":"sft","done":10,"total":200,"unit":"step"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: String,
        profile: String,
        stages: Vec<StageInfo>,
        device: String,
        seed: u64,
        #[serde(default)]
        resumed: bool,
    },
    StageStarted {
        stage: String,
        kind: String,
        /// Zero-based position of the stage in the profile.
        index: usize,
        total_stages: usize,
        /// Units of work the stage expects (steps, instances, files), when known.
        total: Option<u64>,
        unit: String,
    },
    Progress {
        stage: String,
        done: u64,
        total: Option<u64>,
        unit: String,
        /// Sub-step phase, e.g. "generate", "reward", "logprob", "update".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
    },
    Metrics {
        stage: String,
        step: u64,
        values: BTreeMap<String, f64>,
    },
    Sample {
        stage: String,
        step: u64,
        prompt: String,
        response: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reward: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advantage: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correct: Option<bool>,
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        extra: serde_json::Value,
    },
    Log {
        level: Level,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
    },
    CheckpointSaved {
        stage: String,
        step: u64,
        path: String,
    },
    /// Pause, resume and graceful stop as the worker carries them out.
    State {
        state: RunState,
    },
    StageFinished {
        stage: String,
        outcome: Outcome,
        /// Final numbers of the stage (e.g. pass@k for eval, final loss for sft).
        #[serde(default)]
        summary: BTreeMap<String, f64>,
        /// Optional pre-formatted table (e.g. a pass@k or comparison table), one row a line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<String>,
    },
    RunFinished {
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Event {
    /// Display-only updates may be coalesced or dropped on the way to a slow sink;
    /// everything else (logs, samples, stage boundaries) must always arrive.
    pub fn is_droppable(&self) -> bool {
        matches!(self, Event::Progress { .. } | Event::Metrics { .. })
    }
}

/// Requests from the user (dashboard keys, signals, the run's control file) to the worker.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Pause,
    Resume,
    /// Graceful: finish the current unit, checkpoint, exit with status `interrupted`.
    Stop,
    CheckpointNow,
}

/// The worker's handle for sending events. Cheap to clone.
#[derive(Clone)]
pub struct Emitter {
    tx: Sender<Event>,
    stage: String,
}

impl Emitter {
    pub fn new(tx: Sender<Event>) -> Self {
        Emitter { tx, stage: String::new() }
    }

    /// The same channel, with `stage` filled into the events that name one.
    pub fn for_stage(&self, stage: &str) -> Self {
        Emitter { tx: self.tx.clone(), stage: stage.to_string() }
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn send(&self, event: Event) {
        // The recorder outlives every worker; a closed channel means the run is being torn
        // down, and there is nobody left to tell.
        let _ = self.tx.send(event);
    }

    pub fn log(&self, level: Level, message: impl Into<String>) {
        let stage = if self.stage.is_empty() { None } else { Some(self.stage.clone()) };
        self.send(Event::Log { level, message: message.into(), stage });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message)
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.log(Level::Warn, message)
    }

    pub fn progress(&self, done: u64, total: Option<u64>, unit: &str, phase: Option<&str>) {
        self.send(Event::Progress {
            stage: self.stage.clone(),
            done,
            total,
            unit: unit.to_string(),
            phase: phase.map(str::to_string),
        });
    }

    pub fn metrics<I, K>(&self, step: u64, values: I)
    where
        I: IntoIterator<Item = (K, f64)>,
        K: Into<String>,
    {
        let values = values.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self.send(Event::Metrics { stage: self.stage.clone(), step, values });
    }

    pub fn checkpoint(&self, step: u64, path: &std::path::Path) {
        self.send(Event::CheckpointSaved {
            stage: self.stage.clone(),
            step,
            path: path.display().to_string(),
        });
    }
}

/// What a stage sees of pending controls between units of work.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub stop: bool,
    pub checkpoint: bool,
}

/// The worker's end of the control channel. Pausing blocks inside [`ControlRx::poll`], so a
/// stage only has to call `poll` between units of work.
pub struct ControlRx {
    rx: Receiver<Control>,
    emitter: Emitter,
    stop_requested: bool,
}

impl ControlRx {
    pub fn new(rx: Receiver<Control>, emitter: Emitter) -> Self {
        ControlRx { rx, emitter, stop_requested: false }
    }

    /// A receiver that never gets anything (for tests and one-off commands).
    pub fn detached() -> Self {
        let (_tx, rx) = crossbeam_channel::unbounded();
        let (etx, _erx) = crossbeam_channel::unbounded();
        ControlRx { rx, emitter: Emitter::new(etx), stop_requested: false }
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    /// Drain pending controls. While paused, blocks until resume or stop.
    pub fn poll(&mut self) -> Pending {
        let mut pending = Pending { stop: self.stop_requested, checkpoint: false };
        loop {
            match self.rx.try_recv() {
                Ok(Control::Pause) => {
                    self.emitter.send(Event::State { state: RunState::Paused });
                    loop {
                        match self.rx.recv() {
                            Ok(Control::Resume) => {
                                self.emitter.send(Event::State { state: RunState::Running });
                                break;
                            }
                            Ok(Control::Stop) | Err(_) => {
                                pending.stop = true;
                                break;
                            }
                            Ok(Control::CheckpointNow) => pending.checkpoint = true,
                            Ok(Control::Pause) => {}
                        }
                    }
                }
                Ok(Control::Resume) => {}
                Ok(Control::Stop) => pending.stop = true,
                Ok(Control::CheckpointNow) => pending.checkpoint = true,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
            if pending.stop {
                break;
            }
        }
        if pending.stop && !self.stop_requested {
            self.stop_requested = true;
            self.emitter.send(Event::State { state: RunState::Stopping });
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let events = vec![
            Event::Progress { stage: "sft".into(), done: 3, total: Some(10), unit: "step".into(), phase: None },
            Event::Metrics { stage: "rl".into(), step: 2, values: [("loss".to_string(), 0.5)].into() },
            Event::RunFinished { outcome: Outcome::Interrupted, error: None },
        ];
        for e in events {
            let line = serde_json::to_string(&Record { t: 1.5, event: e.clone() }).unwrap();
            let back: Record = serde_json::from_str(&line).unwrap();
            assert_eq!(back.event, e);
        }
        let line = r#"{"t":2.0,"event":"progress","stage":"x","done":1,"total":null,"unit":"step"}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert!(matches!(r.event, Event::Progress { done: 1, .. }));
        // An event kind from a newer retort does not parse; readers skip it.
        assert!(serde_json::from_str::<Record>(r#"{"t":1,"event":"hologram"}"#).is_err());
    }

    #[test]
    fn pause_blocks_until_resume_and_stop_is_sticky() {
        let (ctx, crx) = crossbeam_channel::unbounded();
        let (etx, erx) = crossbeam_channel::unbounded();
        let mut rx = ControlRx::new(crx, Emitter::new(etx));
        ctx.send(Control::Pause).unwrap();
        ctx.send(Control::CheckpointNow).unwrap();
        ctx.send(Control::Resume).unwrap();
        let p = rx.poll();
        assert_eq!(p, Pending { stop: false, checkpoint: true });
        let states: Vec<_> = erx.try_iter().collect();
        assert_eq!(states.len(), 2);
        ctx.send(Control::Stop).unwrap();
        assert!(rx.poll().stop);
        assert!(rx.poll().stop, "a stop is remembered");
    }
}
