//! PPO (docs/METHODS.md §3): GRPO's clip loss for the actor (`grpo.rs`), on GAE advantages whose
//! values come from a critic trained beside it with the clipped value loss (§3.2).
//!
//! The critic is a **separate** copy of the starting model with a scalar value head
//! ([`crate::model::heads::ValueHead`]), like verl's
//! `AutoModelForTokenClassification(num_labels = 1)`. Why separate rather than a shared
//! trunk: the value loss and the policy loss then never fight over the same weights, the
//! critic gets its own learning rate and warmup (verl's `critic.optim.lr`, `critic_warmup`),
//! and the policy that is saved is exactly the policy that was trained. The price is a second
//! forward/backward per mini-batch, which on the tiny CPU models is the same order as the
//! policy's own.
//!
//! Knobs (TOML keys of the `rl` stage): `critic_lr`, `critic_warmup` (steps that train only
//! the critic), `cliprange_value` (ε_v), and GRPO's clip keys for the actor.
//! Metrics: GRPO's `actor/*`, and `critic/vf_loss`, `critic/vf_clipfrac`, `critic/grad_norm`,
//! `critic/vf_explained_var`, `critic/values/mean`, `critic/returns/mean`.
//! Checkpoints hold the critic as `critic.safetensors` / `critic_optimizer.safetensors`.

use super::{grpo::Grpo, PolicyInputs};
use crate::model::heads::ValueHead;
use crate::model::{Mode, Model};
use crate::train::optim::{AdamW, AdamWConfig, Param};
use crate::train::rl::advantage::{AdvantageEstimator, Advantages, Mat};
use crate::train::rl::batch::{self, SeqBatch};
use crate::train::rl::config::RlStage;
use crate::train::rl::minibatch::{Learner, MiniBatch};
use crate::train::rl::loss::{self, agg_loss, expect_shape, masked_mean, scalar, LossAgg};
use crate::train::rl::metrics::{masked_stats, Acc};
use crate::train::rl::rollout::{Rollout, Scored};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::ops::Range;
use std::path::Path;

/// GAE with γ = λ = 1 (verl's defaults for outcome rewards, §3.1).
pub fn default_estimator() -> AdvantageEstimator {
    AdvantageEstimator::Gae { gamma: 1.0, lambda: 1.0 }
}

// ------------------------------------------------------------------------------------------
// The critic

pub struct Critic {
    pub model: Model,
    head: ValueHead,
}

impl Critic {
    pub fn load(dir: &Path, device: &Device) -> Result<Critic> {
        let model = Model::load(dir, device, DType::F32, true)?;
        let head = ValueHead::zeros(model.config.hidden_size, device)?;
        Ok(Critic { model, head })
    }

    /// Trainable parameters, named `critic.*`.
    pub fn params(&self) -> Vec<Param> {
        let mut out: Vec<Param> = self
            .model
            .vars()
            .into_iter()
            .map(|(n, v)| Param { decay: !(n.ends_with("norm.weight") || n.ends_with(".bias")), name: format!("critic.{n}"), var: v, lr_scale: 1.0 })
            .collect();
        out.push(Param { name: "critic.value_head.weight".into(), var: self.head.weight.clone(), lr_scale: 1.0, decay: true });
        out.push(Param { name: "critic.value_head.bias".into(), var: self.head.bias.clone(), lr_scale: 1.0, decay: false });
        out
    }

    /// Values `(B, T)`: `V_t` is read at the position before response token t, the same
    /// position whose logits give token t's log-prob (docs/METHODS.md §3.1).
    pub fn values(&self, batch: &SeqBatch, mode: Mode) -> Result<Tensor> {
        let hidden = self.model.decoder.forward_hidden(&batch.ids, &batch.attn, None, mode)?;
        let states = hidden.narrow(1, batch.prompt_width - 1, batch.response_width)?.to_dtype(DType::F32)?;
        Ok(self.head.forward(&states)?)
    }
}

// ------------------------------------------------------------------------------------------
// §3.2 the value loss

/// Diagnostics of the value loss.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ValueLossMetrics {
    /// Fraction of tokens where the clipped prediction gave the larger error.
    pub vf_clipfrac: f64,
}

/// Clipped value loss (§3.2, verl HEAD `compute_value_loss`):
/// ```text
/// V_clip = clip(V, V_old − ε_v, V_old + ε_v)
/// loss   = ½ · agg_loss(max((V − R)², (V_clip − R)²), m)
/// ```
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip_value: f64,
    agg: LossAgg,
) -> loss::Result<(Tensor, ValueLossMetrics)> {
    for (t, what) in [(old_values, "old values"), (returns, "returns"), (mask, "mask")] {
        expect_shape(t, values.dims(), what)?;
    }
    let old_values = old_values.detach();
    let returns = returns.detach();

    let clipped = values.clamp(&(&old_values - clip_value)?, &(&old_values + clip_value)?)?;
    let error_unclipped = (values - &returns)?.sqr()?;
    let error_clipped = (clipped - &returns)?.sqr()?;
    let token_loss = error_unclipped.maximum(&error_clipped)?;
    let vf_clipfrac = scalar(&masked_mean(
        &error_clipped.gt(&error_unclipped)?.to_dtype(DType::F32)?,
        mask,
    )?)?;

    let loss = (agg_loss(&token_loss, mask, agg)? * 0.5)?;
    Ok((loss, ValueLossMetrics { vf_clipfrac }))
}

/// Explained variance `1 − Var(R − V)/(Var(R) + 1e-5)` over valid tokens, unbiased variances
/// (§3.2, verl `critic/vf_explained_var`). NaN when fewer than two tokens are valid.
pub fn explained_variance(returns: &Tensor, values: &Tensor, mask: &Tensor) -> loss::Result<f64> {
    expect_shape(values, returns.dims(), "values")?;
    expect_shape(mask, returns.dims(), "mask")?;
    let flat = |t: &Tensor| -> loss::Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?) };
    let (r, v, m) = (flat(returns)?, flat(values)?, flat(mask)?);
    let valid: Vec<(f64, f64)> = r
        .iter()
        .zip(&v)
        .zip(&m)
        .filter(|(_, &m)| m != 0.0)
        .map(|((&r, &v), _)| (r, v))
        .collect();
    let unbiased_var = |xs: &[f64]| {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)
    };
    let residual: Vec<f64> = valid.iter().map(|(r, v)| r - v).collect();
    let target: Vec<f64> = valid.iter().map(|(r, _)| *r).collect();
    Ok(1.0 - unbiased_var(&residual) / (unbiased_var(&target) + 1e-5))
}

// ------------------------------------------------------------------------------------------
// The algorithm

/// PPO's knobs, its critic and the critic's optimizer.
pub struct Ppo {
    actor: Grpo,
    critic: Critic,
    pub(super) opt: AdamW,
    critic_lr: f64,
    critic_warmup: u64,
    cliprange_value: f64,
}

impl Ppo {
    pub fn new(cfg: &RlStage, model_dir: &Path, device: &Device) -> Result<Ppo> {
        let critic = Critic::load(model_dir, device)?;
        let opt = AdamW::new(critic.params(), AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() });
        Ok(Ppo { actor: Grpo::new(cfg), critic, opt, critic_lr: cfg.critic_lr, critic_warmup: cfg.critic_warmup, cliprange_value: cfg.cliprange_value })
    }

    pub fn policy_loss(&self, x: &PolicyInputs, acc: &mut Acc) -> Result<Tensor> {
        self.actor.policy_loss(x, acc)
    }

    pub fn micro_weight(&self, rows: usize, mb_rows: usize, tokens: f64, mb_tokens: f64) -> f64 {
        self.actor.micro_weight(rows, mb_rows, tokens, mb_tokens)
    }

    /// The actor waits `critic_warmup` steps for the critic.
    pub fn trains_actor(&self, step: u64) -> bool {
        step > self.critic_warmup
    }

    /// The critic's values of every response `(B, T)`, in chunks of `micro_batch` rows,
    /// without gradients (0 past each response's end).
    pub fn old_values(&self, cfg: &RlStage, ro: &Rollout, pad: u32, device: &Device) -> Result<Mat> {
        let b = ro.prompts.len();
        let mut values = Mat::zeros(b, ro.widths.1);
        for start in (0..b).step_by(cfg.micro_batch) {
            let rows = start..(start + cfg.micro_batch).min(b);
            let sb = batch::build(&ro.prompts, &ro.responses, rows.clone(), ro.widths, pad, device)?;
            batch::put_rows(&mut values, start, &(self.critic.values(&sb, Mode::Infer)? * ro.mask_rows(rows, device)?)?)?;
        }
        Ok(values)
    }

    /// One critic optimizer step on mini-batch `mb`, accumulated over its micro-batches.
    pub fn train_critic(&mut self, learner: &Learner, data: (&Rollout, &Scored, &Advantages), mb: &MiniBatch, step: u64, acc: &mut Acc) -> Result<()> {
        let cfg = learner.cfg;
        for rows in &mb.micro {
            let tokens = MiniBatch::tokens(&data.0.mask, rows);
            let l = self.critic_micro(learner, data, rows.clone(), acc)?;
            let w = loss::micro_weight(cfg.agg(), rows.len(), mb.rows.len(), tokens, mb.tokens);
            learner.scaffold.check_finite("critic/vf_loss", &l, step)?;
            self.opt.accumulate(&(l * w)?.backward()?)?;
        }
        // The schedule counts finished steps, as the policy's does.
        let r = self.opt.apply(cfg.schedule(self.critic_lr).lr(step - 1), cfg.max_grad_norm)?;
        acc.add("critic/grad_norm", r.grad_norm, 1.0);
        Ok(())
    }

    /// Value loss of one micro-batch (unscaled) and its metrics.
    fn critic_micro(&self, learner: &Learner, (ro, sc, a): (&Rollout, &Scored, &Advantages), rows: Range<usize>, acc: &mut Acc) -> Result<Tensor> {
        let dev = learner.device;
        let sb = batch::build(&ro.prompts, &ro.responses, rows.clone(), ro.widths, learner.pad, dev)?;
        let values = self.critic.values(&sb, Mode::Train)?;
        let old_values = batch::rows_tensor(sc.values.as_ref().context("PPO needs old values")?, rows.clone(), dev)?;
        let returns = batch::rows_tensor(&a.returns, rows.clone(), dev)?;
        let (l, vm) = value_loss(&values, &old_values, &returns, &ro.mask_rows(rows, dev)?, self.cliprange_value, learner.cfg.agg())?;
        acc.add("critic/vf_loss", l.to_scalar::<f32>()? as f64, 1.0);
        acc.add("critic/vf_clipfrac", vm.vf_clipfrac, 1.0);
        Ok(l)
    }

    /// The critic's diagnostics over the whole rollout (§8.4).
    pub fn step_metrics(&self, ro: &Rollout, sc: &Scored, a: &Advantages, device: &Device) -> Result<Vec<(String, f64)>> {
        let Some(values) = &sc.values else { return Ok(Vec::new()) };
        let t = |m: &Mat| loss::mat_to_tensor(m, device);
        Ok(vec![
            ("critic/vf_explained_var".into(), explained_variance(&t(&a.returns)?, &t(values)?, &t(&ro.mask)?)?),
            ("critic/values/mean".into(), masked_stats(values, &ro.mask, |_| true).unwrap_or(f64::NAN)),
            ("critic/returns/mean".into(), masked_stats(&a.returns, &ro.mask, |_| true).unwrap_or(f64::NAN)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rl::fixtures::*;
    use candle_core::Var;

    #[test]
    fn value_loss_and_explained_variance_match_reference() {
        let fx = fixture("loss");
        let case = &fx["value"];
        let mask = tensor(&fx["inputs"]["mask"]);
        let values = Var::from_tensor(&tensor(&case["values"])).unwrap();
        let (loss, metrics) = value_loss(
            values.as_tensor(),
            &tensor(&case["old_values"]),
            &tensor(&case["returns"]),
            &mask,
            case["clip"].as_f64().unwrap(),
            LossAgg::TokenMean,
        )
        .unwrap();
        assert_scalar(scalar(&loss).unwrap(), &case["loss"], 1e-5, "value loss");
        assert_scalar(metrics.vf_clipfrac, &case["vf_clipfrac"], 1e-6, "vf_clipfrac");
        assert!(metrics.vf_clipfrac > 0.0, "the fixture must clip some values");
        assert_close(&grad_of(&loss, &values), &flat(&case["grad_values"]), 1e-5, "∂L/∂V");
        let ev = explained_variance(&tensor(&case["returns"]), values.as_tensor(), &mask).unwrap();
        assert_scalar(ev, &case["explained_variance"], 1e-6, "explained variance");
    }

}
