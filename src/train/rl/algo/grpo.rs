//! GRPO (docs/METHODS.md §0.3, §2.1): the PPO-clip policy loss on the group-normalised outcome
//! advantage `A = (score − group mean) / group std` (Dr. GRPO: without the std), no critic.
//! PPO's actor uses the same loss (see `ppo.rs`).
//!
//! Knobs (TOML keys of the `rl` stage): `clip_low`, `clip_high` (clip-higher, DAPO) and
//! `dual_clip` (0 turns it off), plus the shared `loss_agg` / `dr_grpo`.
//! Metrics: `actor/pg_loss`, `actor/pg_clipfrac`, `actor/pg_clipfrac_lower`, `actor/ppo_kl`.

use super::PolicyInputs;
use crate::train::rl::advantage::AdvantageEstimator;
use crate::train::rl::config::{invalid, Invalid, RlStage};
use crate::train::rl::loss::{self, LossAgg, PpoClip};
use crate::train::rl::metrics::Acc;
use anyhow::Result;
use candle_core::Tensor;

/// GRPO's advantage: group-normalised, without the std under Dr. GRPO.
pub fn default_estimator(cfg: &RlStage) -> AdvantageEstimator {
    AdvantageEstimator::Grpo { norm_by_std: !cfg.dr_grpo }
}

/// The clip bounds keep the ratio in `[1 − clip_low, 1 + clip_high]`; checked whatever the
/// algorithm, as they always were.
pub fn validate_clip(cfg: &RlStage) -> Result<(), Invalid> {
    if cfg.clip_low < 0.0 || cfg.clip_low >= 1.0 || cfg.clip_high < 0.0 {
        return Err(invalid("clip_low", "clip bounds must satisfy 0 ≤ clip_low < 1 and clip_high ≥ 0 (ratio kept in [1 − clip_low, 1 + clip_high])"));
    }
    if cfg.dual_clip != 0.0 && !(cfg.dual_clip > 1.0) {
        return Err(invalid("dual_clip", "the dual-clip constant must be > 1 (verl: 3), or 0 to turn it off"));
    }
    Ok(())
}

/// The clip loss and how it aggregates.
pub struct Grpo {
    pub clip: PpoClip,
    pub agg: LossAgg,
}

impl Grpo {
    pub fn new(cfg: &RlStage) -> Grpo {
        let clip = PpoClip { clip_low: cfg.clip_low, clip_high: cfg.clip_high, dual_clip: (cfg.dual_clip > 0.0).then_some(cfg.dual_clip) };
        Grpo { clip, agg: cfg.agg() }
    }

    /// `agg_loss(max(−A·ρ, −A·clip(ρ)), m)` with the dual clip for A < 0 (§2.1).
    pub fn policy_loss(&self, x: &PolicyInputs, acc: &mut Acc) -> Result<Tensor> {
        let (pg, pm) = loss::ppo_policy_loss(&x.scored.logp, x.old, x.advantages, &x.scored.mask, self.clip, self.agg)?;
        acc.add("actor/pg_loss", pg.to_scalar::<f32>()? as f64, 1.0);
        acc.add("actor/pg_clipfrac", pm.pg_clipfrac, 1.0);
        acc.add("actor/pg_clipfrac_lower", pm.pg_clipfrac_lower, 1.0);
        acc.add("actor/ppo_kl", pm.ppo_kl, 1.0);
        Ok(pg)
    }

    /// The aggregation's own share (token-mean: by tokens; seq-mean: by rows).
    pub fn micro_weight(&self, rows: usize, mb_rows: usize, tokens: f64, mb_tokens: f64) -> f64 {
        loss::micro_weight(self.agg, rows, mb_rows, tokens, mb_tokens)
    }
}
