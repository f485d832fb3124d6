//! Verifiable tasks: instances with exact verifiers and (usually) many valid answers.
//!
//! RL needs rewards it can trust and diversity it can measure without an LLM judge
//! (docs/METHODS.md §10.1). Each task family generates instances from a seeded [`Rng`],
//! renders a prompt, verifies a response into a reward and a canonical solution, and, where
//! it can, enumerates every valid solution so coverage can be measured.
//!
//! Built-in families: [`countdown`], [`arithmetic`], [`subset_sum`]. Build one by name with
//! [`build`] and draw non-overlapping train/test splits with [`generate_split`]. Prompts end
//! in `\n`; responses carry no trailing newline (the trainer appends its end token).
//!
//! This module is the home of problems and verifiers:
//! - [`math`]: the rule-based verifier of final answers (GSM8K, MATH, AIME);
//!   [`code`]: the unit-test verifier of programs, run in the [`crate::sandbox`].
//! - [`problems`]: [`ProblemSet`] (task instances, math or code JSONL rows, each with its
//!   verifier), the JSONL readers, and the context-length check of prompts.
//! - [`source`]: [`ProblemSource`], the one set of profile keys by which the sft, rl and eval
//!   stages say where their problems come from.
//! - [`stage`]: the `tasks` stage kind, which writes train/test splits as JSONL.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// One problem. `data` holds the task-specific facts (numbers, target, ...) so that the
/// verifier needs nothing but the instance; instances round-trip through JSONL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub task: String,
    pub id: String,
    pub prompt: String,
    pub data: serde_json::Value,
}

/// The verifier's judgement of one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub correct: bool,
    pub reward: f64,
    /// The canonical form of the solution the response gave, when it parsed.
    pub canonical: Option<String>,
    /// Why: "ok", "wrong target", "reused number 3", "parse error at ...".
    pub reason: String,
}

pub trait Task: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line for `retort tasks list` and errors.
    fn describe(&self) -> &'static str;
    fn generate(&self, rng: &mut Rng) -> Instance;
    fn verify(&self, instance: &Instance, response: &str) -> Verdict;
    /// Every valid solution in canonical form, sorted, when the task can enumerate them.
    fn solutions(&self, instance: &Instance) -> Option<Vec<String>>;
    /// The full response text a teacher writes for one canonical solution (used for SFT).
    fn render_solution(&self, instance: &Instance, canonical: &str) -> String;
    /// A well-formed but wrong response (the skewed teacher's noise share).
    fn wrong_response(&self, instance: &Instance, rng: &mut Rng) -> String;
    /// Work the teacher will need for these instances, done up front and in parallel (the
    /// arithmetic teacher's tool calls); returns how many pieces of work it did.
    fn prepare_teacher(&self, _instances: &[Instance]) -> usize {
        0
    }
}

pub mod arithmetic;
pub mod code;
pub mod countdown;
pub mod math;
pub mod problems;
pub mod registry;
pub mod source;
pub mod stage;
pub mod subset_sum;

pub use problems::{read_instances, ProblemSet};
pub use registry::{build, generate_split, names};
pub use source::ProblemSource;

/// Why a task could not be built or could not produce what was asked.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskError {
    #[error("unknown task `{name}`; known tasks: {known}")]
    UnknownTask { name: String, known: String },
    #[error("task `{task}`: bad options: {message}")]
    BadOptions { task: String, message: String },
    #[error(
        "task `{task}`: only {got} distinct instances (wanted {wanted}) after {attempts} draws; \
         the instance space is too small - widen the task options or ask for fewer"
    )]
    SpaceTooSmall { task: String, wanted: usize, got: usize, attempts: usize },
}

impl Verdict {
    /// A correct response: reward 1.
    pub fn correct(canonical: String) -> Self {
        Verdict { correct: true, reward: 1.0, canonical: Some(canonical), reason: "ok".to_string() }
    }

    /// A wrong response: reward 0, with the reason and, when it parsed, its canonical form.
    pub fn wrong(reason: impl Into<String>, canonical: Option<String>) -> Self {
        Verdict { correct: false, reward: 0.0, canonical, reason: reason.into() }
    }
}

/// Reads an instance's task-specific facts; a mismatch means the instance came from another
/// task or a hand-edited JSONL line, which the verifier reports instead of panicking.
pub(crate) fn instance_data<T: serde::de::DeserializeOwned>(instance: &Instance) -> Result<T, String> {
    serde_json::from_value(instance.data.clone())
        .map_err(|e| format!("malformed instance data for `{}` ({}): {e}", instance.task, instance.id))
}

/// Deserializes a task's options table; unknown keys are rejected by the options structs
/// (`deny_unknown_fields`) and the serde message names the key.
pub(crate) fn parse_options<T: serde::de::DeserializeOwned>(task: &str, options: &toml::Table) -> Result<T, TaskError> {
    options
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| TaskError::BadOptions { task: task.to_string(), message: e.to_string().trim().to_string() })
}

/// Number of decimal digits of a non-negative number (for prompt-length budgets).
pub(crate) fn decimal_len(n: i64) -> usize {
    n.unsigned_abs().to_string().len() + usize::from(n < 0)
}
