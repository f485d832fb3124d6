//! Verifiable tasks: instances with exact verifiers and (usually) many valid answers.
//!
//! RL needs rewards it can trust and diversity it can measure without an LLM judge
//! (research/rl-spec.md §10.1). Each task family generates instances from a seeded [`Rng`],
//! renders a prompt, verifies a response into a reward and a canonical solution, and, where
//! it can, enumerates every valid solution so coverage can be measured.

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
}
