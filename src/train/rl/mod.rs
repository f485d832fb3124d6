//! RL with verifiable rewards: the `rl` stage and the maths of GRPO, PPO, REINFORCE++,
//! FlowRL and the exploration shapings (docs/METHODS.md §0–§8).
//!
//! Where each thing is:
//!
//! | file | holds |
//! | --- | --- |
//! | `stage.rs` | the stage: `StageConfig` for [`config::RlStage`] and the training loop |
//! | `config.rs` | [`config::RlStage`], the `[[stage]]` keys (the `algorithm` and FlowRL `is_mode` enums among them), their defaults and validation |
//! | `algo/` | one algorithm a file — `grpo.rs`, `ppo.rs` (with its critic), `flowrl.rs` (with its Z head's use): knobs, loss, micro-batch weighting, metric names |
//! | `rollout.rs` | one step's data: problems, sampling, rewards, scoring, advantages |
//! | `learner.rs` | the update: epochs, mini- and micro-batches, optimizer steps; the shared entropy and KL terms |
//! | `minibatch.rs` | the rows of one optimizer step and what the update reads (shared by learner and algorithms) |
//! | `metrics.rs` | rollout metrics, the quick eval, sample events |
//! | `rewards.rs` | format rewards and the DAPO overlong penalty (pure functions) |
//! | `advantage.rs` | advantage estimators and shapings on plain data (shared) |
//! | `loss.rs` | loss aggregation, KL estimators, PPO clip, entropy bonus on tensors (shared) |
//! | `batch.rs` | the token layout of a rollout and the shared-prompt scoring forward |
//!
//! The heads the algorithms train (FlowRL's Z head, PPO's value head) are in
//! `model/heads.rs`; checkpoints, resume, controls and the final model folder are the
//! trainer scaffold's (`train/scaffold.rs`).

pub mod advantage;
pub mod algo;
pub mod batch;
pub mod config;
pub mod learner;
pub mod loss;
pub mod metrics;
pub mod minibatch;
pub mod rewards;
pub mod rollout;
pub mod stage;

#[cfg(test)]
mod fixtures;
