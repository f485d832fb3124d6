//! The policy-optimisation algorithms, one file each, read top to bottom:
//!
//! - [`grpo`] — the PPO-clip loss on the group-normalised advantage (docs/METHODS.md §0.3, §2.1);
//! - [`ppo`] — GRPO's clip loss on GAE advantages from a separately trained critic (§3);
//! - [`flowrl`] — the trajectory-balance loss with a learned log Z (§4).
//!
//! Each file holds that algorithm's knobs (the TOML keys it reads from [`RlStage`]), its
//! loss, its micro-batch weighting, its metric names and anything it trains besides the
//! policy. The rest of the stage reaches them through two enums, as verl's registries map
//! a name to its functions: [`Algorithm`] is the `algorithm = "…"` key (what the config
//! knows before any model is loaded), [`Algo`] the built algorithm with its state.

pub mod flowrl;
pub mod grpo;
pub mod ppo;

use crate::model::Model;
use crate::stage::StageCtx;
use crate::train::optim::{AdamW, Param};
use crate::train::rl::advantage::{AdvantageEstimator, Advantages, Mat};
use crate::model::score::SharedScore;
use crate::train::rl::config::{Algorithm, Invalid, RlStage};
use crate::train::rl::minibatch::{Learner, MiniBatch};
use crate::train::rl::metrics::Acc;
use crate::train::rl::rollout::{Rollout, Scored};
use anyhow::Result;
use candle_core::{Device, Tensor};

use std::path::Path;

impl Algorithm {
    /// The advantage estimator when `advantage` is not set.
    pub fn default_estimator(self, cfg: &RlStage) -> AdvantageEstimator {
        match self {
            Algorithm::Grpo => grpo::default_estimator(cfg),
            Algorithm::Ppo => ppo::default_estimator(),
            Algorithm::Flowrl => flowrl::default_estimator(cfg),
        }
    }

    /// Whether the loss itself reads reference log-probs (KL terms aside).
    pub fn needs_reference(self) -> bool {
        matches!(self, Algorithm::Flowrl)
    }

    /// Checks of this algorithm's own knobs.
    pub fn validate(self, cfg: &RlStage) -> Result<(), Invalid> {
        match self {
            Algorithm::Grpo | Algorithm::Ppo => Ok(()),
            Algorithm::Flowrl => flowrl::validate(cfg),
        }
    }
}

/// What the policy loss of one micro-batch reads.
pub struct PolicyInputs<'a> {
    /// The current policy's log-probs and entropies of the rows `(b, T)` (with gradients),
    /// their response mask and the prompt states.
    pub scored: &'a SharedScore,
    /// The rollout policy's log-probs `(b, T)`.
    pub old: &'a Tensor,
    /// Per-token advantages `(b, T)`, shaped.
    pub advantages: &'a Tensor,
    /// Reference log-probs `(b, T)`, when the stage computes them.
    pub reference: Option<&'a Tensor>,
}

/// A built algorithm: its knobs and what it trains besides the policy.
pub enum Algo {
    Grpo(grpo::Grpo),
    Ppo(ppo::Ppo),
    Flowrl(flowrl::FlowRl),
}

impl Algo {
    /// Builds `cfg.algorithm` for `policy` (loaded from `model_dir`). Returns it and the
    /// parameters it adds to the policy's optimizer (FlowRL's Z head).
    pub fn build(cfg: &RlStage, policy: &Model, model_dir: &Path, device: &Device, ctx: &StageCtx) -> Result<(Algo, Vec<Param>)> {
        Ok(match cfg.algorithm {
            Algorithm::Grpo => (Algo::Grpo(grpo::Grpo::new(cfg)), Vec::new()),
            Algorithm::Ppo => (Algo::Ppo(ppo::Ppo::new(cfg, model_dir, device)?), Vec::new()),
            Algorithm::Flowrl => {
                let (f, params) = flowrl::FlowRl::new(cfg, policy, device, ctx)?;
                (Algo::Flowrl(f), params)
            }
        })
    }

    /// The policy loss of one micro-batch (before its micro-batch weight); its metrics go
    /// into `acc`.
    pub fn policy_loss(&self, x: &PolicyInputs, acc: &mut Acc) -> Result<Tensor> {
        match self {
            Algo::Grpo(a) => a.policy_loss(x, acc),
            Algo::Ppo(a) => a.policy_loss(x, acc),
            Algo::Flowrl(a) => a.policy_loss(x, acc),
        }
    }

    /// Share of a mini-batch's policy loss carried by a micro-batch of `rows` responses and
    /// `tokens` valid tokens.
    pub fn micro_weight(&self, rows: usize, mb_rows: usize, tokens: f64, mb_tokens: f64) -> f64 {
        match self {
            Algo::Grpo(a) => a.micro_weight(rows, mb_rows, tokens, mb_tokens),
            Algo::Ppo(a) => a.micro_weight(rows, mb_rows, tokens, mb_tokens),
            Algo::Flowrl(a) => a.micro_weight(rows, mb_rows),
        }
    }

    /// Whether the policy trains at `step` (PPO's critic may warm up first).
    pub fn trains_actor(&self, step: u64) -> bool {
        match self {
            Algo::Ppo(a) => a.trains_actor(step),
            Algo::Grpo(_) | Algo::Flowrl(_) => true,
        }
    }

    /// Values `(B, T)` of the rollout before the update, for GAE (PPO), without gradients.
    pub fn old_values(&self, cfg: &RlStage, ro: &Rollout, pad: u32, device: &Device) -> Result<Option<Mat>> {
        match self {
            Algo::Ppo(a) => Ok(Some(a.old_values(cfg, ro, pad, device)?)),
            Algo::Grpo(_) | Algo::Flowrl(_) => Ok(None),
        }
    }

    /// One optimizer step of whatever the algorithm trains besides the policy on mini-batch
    /// `mb`, before the policy's (PPO's critic).
    pub fn train_others(&mut self, learner: &Learner, data: (&Rollout, &Scored, &Advantages), mb: &MiniBatch, step: u64, acc: &mut Acc) -> Result<()> {
        match self {
            Algo::Ppo(a) => a.train_critic(learner, data, mb, step, acc),
            Algo::Grpo(_) | Algo::Flowrl(_) => Ok(()),
        }
    }

    /// The algorithm's own metrics of a finished step (PPO's critic diagnostics).
    pub fn step_metrics(&self, ro: &Rollout, sc: &Scored, a: &Advantages, device: &Device) -> Result<Vec<(String, f64)>> {
        match self {
            Algo::Ppo(p) => p.step_metrics(ro, sc, a, device),
            Algo::Grpo(_) | Algo::Flowrl(_) => Ok(Vec::new()),
        }
    }

    /// Optimizers of the algorithm's own trainers, by checkpoint name (the policy's, which
    /// also holds FlowRL's Z head, is the stage's `params`).
    pub fn optimizers(&self) -> Vec<(&'static str, &AdamW)> {
        match self {
            Algo::Ppo(a) => vec![("critic", &a.opt)],
            Algo::Grpo(_) | Algo::Flowrl(_) => Vec::new(),
        }
    }

    pub fn optimizers_mut(&mut self) -> Vec<(&'static str, &mut AdamW)> {
        match self {
            Algo::Ppo(a) => vec![("critic", &mut a.opt)],
            Algo::Grpo(_) | Algo::Flowrl(_) => Vec::new(),
        }
    }
}
