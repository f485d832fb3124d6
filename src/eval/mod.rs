//! Evaluation: how often, how variously and how exploratively a model solves problems.
//!
//! Definitions follow docs/METHODS.md §8 (pass@k, entropy, diversity) and §6.1
//! (exploration-space metrics). Every metric here works from verifier output, so nothing
//! needs an LLM judge.
//!
//! - [`run`]: n samples per problem through the shared sampling-and-grading engine
//!   ([`crate::generate::grade`]), then every metric below per problem and over the set;
//!   [`stage`]: the `eval` stage kind around it.
//! - [`explore`]: token entropy summaries, rollout branching factor, k-rollout unsolvable
//!   sets (§6.1, §8.2).
//! - pass@k, avg@n, maj@n and the diversity metrics (§8.1, §8.3) live in [`crate::metrics`],
//!   which the rl stage's quick evals use too.
//!
//! - [`ood_eval`]: the eval stage's `ood` table that scores encoders with AUROC, FPR95 and
//!   the Mahalanobis score ([`crate::metrics::ood`]).
//! - [`text`]: perplexity on held-out text and multiple-choice accuracy by option scoring
//!   (no sampling; teacher-forced log-probs).
//!
//! Problems and their verifiers (math, code, built-in tasks) live in [`crate::tasks`].

pub mod explore;
pub mod ood_eval;
pub mod run;
pub mod stage;
pub mod text;
pub mod vision;
