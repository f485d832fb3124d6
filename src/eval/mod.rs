//! Evaluation metrics: how often, how variously and how exploratively a model solves problems.
//!
//! Definitions follow research/rl-spec.md §8 (pass@k, entropy, diversity) and §6.1
//! (exploration-space metrics). Every metric here works from verifier output, so nothing
//! needs an LLM judge.
//!
//! - [`passk`]: unbiased pass@k, avg@n, maj@n and their summary over a problem set (§8.1).
//! - [`explore`]: token entropy summaries, rollout branching factor, k-rollout unsolvable
//!   sets (§6.1, §8.2).
//! - [`diversity`]: distinct-correct@k, coverage, solution entropy, Eq.-14 diversity,
//!   distinct-n (§4.8, §8.3).
//! - [`math`]: a rule-based verifier for GSM8K/MATH/AIME-style final answers (§7.2).
//! - [`run`]: the engine that samples a model and computes all of the above;
//!   [`stage`]: the `eval` stage kind around it.

pub mod diversity;
pub mod explore;
pub mod math;
pub mod passk;
pub mod run;
pub mod stage;

use serde::{Deserialize, Serialize};

/// One sampled response as the metrics see it: the verifier's canonical answer (if the
/// response parsed) and whether it was judged correct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub canonical: Option<String>,
    pub correct: bool,
}

impl Sample {
    pub fn new(canonical: Option<&str>, correct: bool) -> Self {
        Sample { canonical: canonical.map(str::to_string), correct }
    }
}

impl From<&crate::tasks::Verdict> for Sample {
    fn from(v: &crate::tasks::Verdict) -> Self {
        Sample { canonical: v.canonical.clone(), correct: v.correct }
    }
}
