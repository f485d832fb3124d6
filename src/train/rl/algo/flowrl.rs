//! FlowRL (docs/METHODS.md §4): reward-distribution matching by flow balance. Instead of maximising
//! the advantage, the policy is trained so that `Z(x)·π_θ(y|x) ∝ exp(β·r̂)·π_ref(y|x)`: a
//! length-normalised trajectory-balance loss with a learned log-partition `log Z(x)`, read
//! by a small head ([`ZHead`]) from the prompt's pooled hidden states, and an importance
//! weight for off-policy mini-batches.
//!
//! Top to bottom: the knobs, the loss (§4.2) with its importance-weight clip (§4.3), the
//! prompt pooling that feeds the Z head (§4.4), and the algorithm the stage runs — how the Z
//! head joins the policy's optimizer, the loss of one micro-batch, its weighting and its
//! metrics.
//!
//! Knobs (TOML keys of the `rl` stage): `beta` (reward scale β, 15 in every FlowRL run,
//! §4.2 note c), `z_layers` (depth of the Z head), `z_lr` (its learning-rate multiplier),
//! `is_mode` (importance-weight clip); defaults 15, 3, 1 and `upper` at 10 (`config.rs`).
//! FlowRL always reads reference log-probs.
//! Metrics: `actor/log_z`, `actor/tb_loss`, `actor/importance_weight_raw`,
//! `actor/importance_weight`, `actor/log_prob`, `actor/ref_log_prob`, `actor/ppo_kl`.
//! Checkpoints hold the Z head with the policy, as `z_head.*` in `params.safetensors`.

use super::PolicyInputs;
use crate::model::heads::ZHead;
use crate::model::Model;
use crate::stage::StageCtx;
use crate::train::optim::Param;
use crate::train::rl::advantage::AdvantageEstimator;
use crate::train::rl::config::{invalid, Invalid, IsMode, RlStage};
use crate::train::rl::loss::{self, expect_shape, masked_mean, masked_row_mean, scalar, LossError, MASKED_MEAN_EPS};
use crate::train::rl::metrics::Acc;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};


/// FlowRL's r̂ is the group-normalised GRPO advantage (§4.2 note b).
pub fn default_estimator(cfg: &RlStage) -> AdvantageEstimator {
    AdvantageEstimator::Grpo { norm_by_std: !cfg.dr_grpo }
}

pub fn validate(cfg: &RlStage) -> Result<(), Invalid> {
    if !(cfg.beta > 0.0) {
        return Err(invalid("beta", "FlowRL's reward scale beta must be > 0 (15 in the paper)"));
    }
    if cfg.z_layers == 0 {
        return Err(invalid("z_layers", "the Z head needs at least 1 layer (FlowRL uses 3)"));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// §4.2–§4.4 the loss

impl IsMode {
    fn apply(self, w: &Tensor) -> loss::Result<Tensor> {
        Ok(match self {
            IsMode::None => w.clone(),
            IsMode::TwoSided { eps } => w.clamp(1.0 - eps, 1.0 + eps)?,
            IsMode::Upper { max } => w.minimum(max)?,
        })
    }
}

/// FlowRL diagnostics (§8.4 `actor/…` names); token means are masked over the whole batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowRlMetrics {
    pub log_z: f64,
    /// `mean_b w·δ²`, the loss value.
    pub tb_loss: f64,
    /// Mean of the unclipped sequence weights.
    pub importance_weight_raw: f64,
    /// Mean of the weights actually used.
    pub importance_weight: f64,
    pub log_prob: f64,
    pub ref_log_prob: f64,
    /// `mean_m(old − logp)`.
    pub ppo_kl: f64,
    /// `mean_m(logp − ref)`.
    pub ref_kl: f64,
}

/// FlowRL trajectory-balance loss (§4.2, what the official code computes):
/// ```text
/// ℓ̄_θ = masked_mean_t(logp),  ℓ̄_ref = masked_mean_t(ref)          (B,)
/// δ   = log Z + ℓ̄_θ − β·r̂ − ℓ̄_ref                                 (B,)
/// w   = sg(exp(Σ_t m·(logp − old))), clipped per `is_mode` (§4.3)
/// L   = mean_b(w · δ²)
/// ```
/// `advantages` is r̂ `(B,)`, the scalar group-normalised advantage (§4.2 note b); `log_z` is
/// the Z head output `(B,)` or `(B, 1)` and keeps its gradient; β = 15 in every FlowRL run.
#[allow(clippy::too_many_arguments)]
pub fn flowrl_loss(
    logp: &Tensor,
    old: &Tensor,
    reference: &Tensor,
    mask: &Tensor,
    advantages: &Tensor,
    log_z: &Tensor,
    beta: f64,
    is_mode: IsMode,
) -> loss::Result<(Tensor, FlowRlMetrics)> {
    let (batch, _) = logp.dims2()?;
    for (t, what) in [(old, "old logp"), (reference, "ref logp"), (mask, "mask")] {
        expect_shape(t, logp.dims(), what)?;
    }
    expect_shape(advantages, &[batch], "advantages (scalar r̂ per response)")?;
    if log_z.elem_count() != batch {
        return Err(LossError::Shape {
            what: "log_z",
            expected: vec![batch],
            got: log_z.dims().to_vec(),
        });
    }
    let log_z = log_z.reshape(batch)?;
    let (old, reference, advantages) = (old.detach(), reference.detach(), advantages.detach());

    let mean_logp = masked_row_mean(logp, mask)?;
    let mean_ref = masked_row_mean(&reference, mask)?;
    let delta = (((&log_z + &mean_logp)? - (&advantages * beta)?)? - &mean_ref)?;

    let log_w = ((logp - &old)? * mask)?.sum(1)?.detach();
    let raw_weight = log_w.exp()?;
    let weight = is_mode.apply(&raw_weight)?;
    let loss = (&weight * delta.sqr()?)?.mean_all()?;

    let metrics = FlowRlMetrics {
        log_z: scalar(&log_z.mean_all()?)?,
        tb_loss: scalar(&loss)?,
        importance_weight_raw: scalar(&raw_weight.mean_all()?)?,
        importance_weight: scalar(&weight.mean_all()?)?,
        log_prob: scalar(&masked_mean(&logp.detach(), mask)?)?,
        ref_log_prob: scalar(&masked_mean(&reference, mask)?)?,
        ppo_kl: scalar(&masked_mean(&(&old - logp.detach())?, mask)?)?,
        ref_kl: scalar(&masked_mean(&(logp.detach() - &reference)?, mask)?)?,
    };
    Ok((loss, metrics))
}

/// Masked mean of hidden states over prompt positions: `(B, L, H)`, `(B, L)` → `(B, H)`
/// (§4.2 `hp`). Not detached: FlowRL lets the Z loss reach the LM backbone. Callers that want
/// bit-compatibility with the reference code drop the last prompt position from the mask
/// (§4.2 note a).
pub fn pool_prompt(hidden: &Tensor, prompt_mask: &Tensor) -> loss::Result<Tensor> {
    let (b, l, _) = hidden.dims3()?;
    expect_shape(prompt_mask, &[b, l], "prompt_mask")?;
    let weights = prompt_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let counts = (weights.sum(1)? + MASKED_MEAN_EPS)?;
    Ok(hidden.broadcast_mul(&weights)?.sum(1)?.broadcast_div(&counts)?)
}

// ------------------------------------------------------------------------------------------
// The algorithm

/// FlowRL's knobs and its Z head (whose parameters train in the policy's optimizer).
pub struct FlowRl {
    z_head: ZHead,
    beta: f64,
    is_mode: IsMode,
}

impl FlowRl {
    /// A fresh, seeded Z head on the policy's hidden size; returns it with its parameters
    /// for the policy's optimizer, named `z_head.*`, at `z_lr` × the policy's rate, with
    /// weight decay on the linear weights only.
    pub fn new(cfg: &RlStage, policy: &Model, device: &Device, ctx: &StageCtx) -> Result<(FlowRl, Vec<Param>)> {
        let (z_head, vars) = ZHead::seeded(policy.config.hidden_size, cfg.z_layers, ctx.rng("z-head").next_u64(), device)?;
        let params =
            vars.into_iter().map(|(name, var)| Param { decay: !(name.ends_with(".bias") || name.contains("norm")), name, var, lr_scale: cfg.z_lr }).collect();
        Ok((FlowRl { z_head, beta: cfg.beta, is_mode: cfg.is_mode }, params))
    }

    /// log Z from the pooled prompt states, r̂ as the masked row mean of the (outcome)
    /// advantage, then the trajectory-balance loss.
    pub fn policy_loss(&self, x: &PolicyInputs, acc: &mut Acc) -> Result<Tensor> {
        let scored = x.scored;
        let reference = x.reference.context("FlowRL needs reference log-probs")?;
        let log_z = self.z_head.forward(&pool_prompt(&scored.prompt_hidden.to_dtype(DType::F32)?, &scored.prompt_mask)?)?;
        let r_hat = masked_row_mean(x.advantages, &scored.mask)?;
        let (l, fm) = flowrl_loss(&scored.logp, x.old, reference, &scored.mask, &r_hat, &log_z, self.beta, self.is_mode)?;
        for (k, v) in [
            ("actor/log_z", fm.log_z),
            ("actor/tb_loss", fm.tb_loss),
            ("actor/importance_weight_raw", fm.importance_weight_raw),
            ("actor/importance_weight", fm.importance_weight),
            ("actor/log_prob", fm.log_prob),
            ("actor/ref_log_prob", fm.ref_log_prob),
            ("actor/ppo_kl", fm.ppo_kl),
        ] {
            acc.add(k, v, 1.0);
        }
        Ok(l)
    }

    /// The loss is a mean over responses whatever `loss_agg` says, so a micro-batch carries
    /// its share of the mini-batch's rows.
    pub fn micro_weight(&self, rows: usize, mb_rows: usize) -> f64 {
        rows as f64 / mb_rows as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::rl::advantage::{broadcast_over_tokens, grpo_advantage};
    use crate::train::rl::fixtures::*;
    use crate::train::rl::loss::{mat_to_tensor, ppo_policy_loss, tensor_to_mat, LossAgg, PpoClip};
    use candle_core::Var;
    use candle_nn::VarBuilder;
    use serde_json::Value;
    use std::collections::HashMap;

    fn is_mode_of(v: &Value) -> IsMode {
        serde_json::from_value(v.clone()).expect("IsMode serde matches the fixture's tags")
    }

    #[test]
    fn flowrl_loss_metrics_and_gradients_match_reference_for_each_is_mode() {
        let fx = fixture("loss");
        let f = &fx["flowrl"];
        let (old, reference, mask, adv) = (
            tensor(&f["old"]),
            tensor(&f["ref"]),
            tensor(&f["mask"]),
            tensor(&f["advantages"]),
        );
        for case in f["cases"].as_array().unwrap() {
            let mode = is_mode_of(&case["mode"]);
            let logp = Var::from_tensor(&tensor(&fx["inputs"]["logp"])).unwrap();
            let log_z = Var::from_tensor(&tensor(&f["log_z"])).unwrap();
            let beta = f["beta"].as_f64().unwrap();
            let (loss, m) = flowrl_loss(
                logp.as_tensor(),
                &old,
                &reference,
                &mask,
                &adv,
                log_z.as_tensor(),
                beta,
                mode,
            )
            .unwrap();
            let what = format!("{mode:?}");
            assert_scalar(scalar(&loss).unwrap(), &case["loss"], 1e-5, &what);
            let e = &case["metrics"];
            for (name, got) in [
                ("log_z", m.log_z),
                ("tb_loss", m.tb_loss),
                ("importance_weight_raw", m.importance_weight_raw),
                ("importance_weight", m.importance_weight),
                ("log_prob", m.log_prob),
                ("ref_log_prob", m.ref_log_prob),
                ("ppo_kl", m.ppo_kl),
                ("ref_kl", m.ref_kl),
            ] {
                assert_scalar(got, &e[name], 1e-5, &format!("{what} {name}"));
            }
            let grads = loss.backward().unwrap();
            assert_close(
                &values_of(grads.get(logp.as_tensor()).unwrap()),
                &flat(&case["grad_logp"]),
                1e-5,
                &format!("{what} ∂L/∂logp"),
            );
            assert_close(
                &values_of(grads.get(log_z.as_tensor()).unwrap()),
                &flat(&case["grad_log_z"]),
                1e-5,
                &format!("{what} ∂L/∂logZ"),
            );
        }
    }

    #[test]
    fn flowrl_accepts_a_column_log_z_from_the_head() {
        let fx = fixture("loss");
        let f = &fx["flowrl"];
        let log_z = tensor(&f["log_z"]).unsqueeze(1).unwrap();
        let (loss, _) = flowrl_loss(
            &tensor(&fx["inputs"]["logp"]),
            &tensor(&f["old"]),
            &tensor(&f["ref"]),
            &tensor(&f["mask"]),
            &tensor(&f["advantages"]),
            &log_z,
            15.0,
            IsMode::Upper { max: 10.0 },
        )
        .unwrap();
        assert_scalar(scalar(&loss).unwrap(), &f["cases"][2]["loss"], 1e-5, "upper");
    }

    /// A batch with one all-same group (rows 0..4, every score 1) and one mixed group.
    fn two_group_batch() -> (Tensor, Tensor, Tensor, Tensor, Vec<f32>) {
        let mut rng = Rng::new(5);
        let (b, t) = (8, 6);
        let lengths = [6, 3, 5, 1, 6, 2, 4, 6];
        let mask: Vec<f32> = (0..b * t).map(|i| ((i % t) < lengths[i / t]) as u8 as f32).collect();
        let logp: Vec<f32> = (0..b * t).map(|_| -(rng.f32() * 2.0 + 0.05)).collect();
        let old: Vec<f32> = logp.iter().map(|&l| l - (rng.f32() - 0.5)).collect();
        let reference: Vec<f32> = logp.iter().map(|&l| l + (rng.f32() - 0.5)).collect();
        let scores = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let groups = [0, 0, 0, 0, 1, 1, 1, 1];
        let adv = grpo_advantage(&scores, &groups, true).unwrap();
        let t2 = |v: Vec<f32>| Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap();
        (t2(logp), t2(old), t2(reference), t2(mask), adv)
    }

    #[test]
    fn all_same_group_gets_zero_ppo_gradient_but_nonzero_flowrl_gradient() {
        let (logp0, old, reference, mask, adv) = two_group_batch();
        assert!(adv[..4].iter().all(|&a| a == 0.0) && adv[4..].iter().all(|&a| a != 0.0));
        let (b, t) = mask.dims2().unwrap();
        let mask_mat = tensor_to_mat(&mask).unwrap();
        let adv_tokens = mat_to_tensor(&broadcast_over_tokens(&adv, &mask_mat).unwrap(), &Device::Cpu).unwrap();

        let logp = Var::from_tensor(&logp0).unwrap();
        let clip = PpoClip {
            clip_low: 0.2,
            clip_high: 0.28,
            dual_clip: Some(3.0),
        };
        let (loss, _) = ppo_policy_loss(logp.as_tensor(), &old, &adv_tokens, &mask, clip, LossAgg::TokenMean).unwrap();
        let ppo_grad = grad_of(&loss, &logp);
        assert!(
            ppo_grad[..4 * t].iter().all(|&g| g == 0.0),
            "GRPO must ignore the all-same group"
        );
        assert!(
            ppo_grad[4 * t..].iter().any(|&g| g != 0.0),
            "the mixed group must train"
        );

        let logp = Var::from_tensor(&logp0).unwrap();
        let log_z = Var::from_tensor(&Tensor::zeros(b, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let r_hat = Tensor::from_slice(&adv, b, &Device::Cpu).unwrap();
        let (loss, _) = flowrl_loss(
            logp.as_tensor(),
            &old,
            &reference,
            &mask,
            &r_hat,
            log_z.as_tensor(),
            15.0,
            IsMode::default(),
        )
        .unwrap();
        let grads = loss.backward().unwrap();
        let flow_grad = values_of(grads.get(logp.as_tensor()).unwrap());
        let z_grad = values_of(grads.get(log_z.as_tensor()).unwrap());
        for row in 0..4 {
            let valid = &flow_grad[row * t..row * t + t];
            assert!(
                valid.iter().any(|&g| g.abs() > 1e-6),
                "FlowRL row {row} got no gradient"
            );
            assert!(z_grad[row].abs() > 1e-6, "log Z row {row} got no gradient");
        }
    }

    #[test]
    fn zhead_forward_and_gradient_match_reference() {
        let z = fixture("zhead");
        let weights: HashMap<String, Tensor> = z["weights"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), tensor(v)))
            .collect();
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        let head = ZHead::new(
            vb,
            z["hidden_size"].as_u64().unwrap() as usize,
            z["layers"].as_u64().unwrap() as usize,
        )
        .unwrap();
        let hidden = Var::from_tensor(&tensor(&z["hidden"])).unwrap();
        let pooled = pool_prompt(hidden.as_tensor(), &tensor(&z["prompt_mask"])).unwrap();
        assert_close(&values_of(&pooled), &flat(&z["pooled"]), 1e-5, "pooled");
        let log_z = head.forward(&pooled).unwrap();
        assert_eq!(log_z.dims(), &[3]);
        assert_close(&values_of(&log_z), &flat(&z["log_z"]), 1e-5, "log Z");
        let loss = (log_z * tensor(&z["loss_coeffs"])).unwrap().sum_all().unwrap();
        assert_close(
            &grad_of(&loss, &hidden),
            &flat(&z["grad_hidden"]),
            1e-4,
            "∂(c·logZ)/∂hidden",
        );
    }


    #[test]
    fn is_mode_uses_snake_case_tags() {
        let mode: IsMode = serde_json::from_str(r#"{"kind":"two_sided","eps":0.2}"#).unwrap();
        assert_eq!(mode, IsMode::TwoSided { eps: 0.2 });
        assert_eq!(serde_json::to_string(&IsMode::None).unwrap(), r#"{"kind":"none"}"#);
    }
}
