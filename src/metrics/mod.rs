//! Metrics over verified samples that training and evaluation both report: pass@k and its
//! kin ([`passk`], docs/METHODS.md §8.1) and the diversity of correct answers
//! ([`diversity`], §4.8, §8.3). They are pure functions of [`Sample`]s, so the rl stage's
//! quick evals and the eval stage compute them alike without one importing the other. The
//! OOD detection metrics of the diffusion-OOD method ([`ood`]: AUROC, FPR95, the Mahalanobis
//! score) are pure functions of scores, used by `diffusion` and the eval stage alike.

pub mod answer_match;
pub mod diversity;
pub mod ood;
pub mod open_answer;
pub mod passk;

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

impl From<&crate::tasks::math::MathVerdict> for Sample {
    fn from(v: &crate::tasks::math::MathVerdict) -> Self {
        Sample { canonical: v.canonical(), correct: v.correct }
    }
}
