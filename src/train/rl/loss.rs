//! The loss math the RL algorithms share, on candle tensors (docs/METHODS.md §0.1, §0.2,
//! §2.1): masked means, loss aggregation, KL estimators, the PPO-clip policy loss (GRPO's and
//! PPO's actor), the entropy bonus and the micro-batch weighting of gradient accumulation.
//! An algorithm's own loss lives in its file: FlowRL's trajectory balance in
//! `algo/flowrl.rs`, PPO's value loss in `algo/ppo.rs`.
//!
//! Every loss is one readable top-to-bottom function in the style of verl's `core_algos`.
//! Inputs are f32 tensors with shapes from §0: `logp`, `old`, `ref`, `advantages`, `mask` are
//! `(B, T)`; per-response inputs are `(B,)`. Only `logp` (and `log_z`, `values`, hidden states)
//! carry gradients; `old`, `ref`, advantages and returns are detached here so that a caller
//! cannot leak gradient into them by accident. Metrics come back as f64 for logging (§8.4).

use crate::train::rl::advantage::Mat;
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

/// verl's masked-mean epsilon (§0).
pub(crate) const MASKED_MEAN_EPS: f64 = 1e-8;
/// Clamp on the log-ratio before `exp` in the PPO ratio and the k3 estimator (verl HEAD, §0.2/§2.1).
const LOG_RATIO_CLAMP: f64 = 20.0;
/// Clamp on the k3 value (verl HEAD, §0.2).
const K3_CLAMP: f64 = 10.0;

/// Errors from the loss functions. Messages name the bad input and what to pass instead.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{what}: expected shape {expected:?}, got {got:?}; per-token inputs are (B, T), per-response inputs (B,)")]
    Shape {
        what: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("parameter {name} = {value} is invalid: {why}")]
    InvalidParam {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, LossError>;

pub(crate) fn expect_shape(t: &Tensor, expected: &[usize], what: &'static str) -> Result<()> {
    if t.dims() != expected {
        return Err(LossError::Shape {
            what,
            expected: expected.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(())
}

/// The value of a scalar (0-d) tensor as f64, for metrics.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A `(B, T)` [`Mat`] as an f32 tensor (e.g. advantages or rewards computed on plain data).
pub fn mat_to_tensor(mat: &Mat, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(&mat.data, (mat.rows, mat.cols), device)?)
}

/// A `(B, T)` tensor as a [`Mat`] (e.g. KL-penalised rewards going into an advantage estimator).
pub fn tensor_to_mat(t: &Tensor) -> Result<Mat> {
    let (rows, cols) = t.dims2()?;
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    // `data` has rows·cols elements because it is the flattened (rows, cols) tensor.
    Ok(Mat { rows, cols, data })
}

/// `Σ v·m / (Σ m + 1e-8)` as a 0-d tensor (§0 `masked_mean`), differentiable in `v`.
pub fn masked_mean(v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let count = scalar(&mask.sum_all()?)?;
    Ok(((v * mask)?.sum_all()? * (1.0 / (count + MASKED_MEAN_EPS)))?)
}

/// Per-row `Σ_t v·m / (Σ_t m + 1e-8)`, shape `(B,)` (§0 `masked_mean(…, axis=1)`).
pub fn masked_row_mean(v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let counts = (mask.sum(1)? + MASKED_MEAN_EPS)?;
    Ok((v * mask)?.sum(1)?.div(&counts)?)
}

// ------------------------------------------------------------------------------------------
// §0.1 aggregation

/// How a per-token loss matrix becomes a scalar (§0.1, verl `agg_loss`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossAgg {
    /// `Σ m·ℓ / Σ m` (verl default, DAPO).
    TokenMean,
    /// `(1/B') Σ_b Σ_t m·ℓ`.
    SeqMeanTokenSum,
    /// `(1/B') Σ_b (Σ_t m·ℓ / Σ_t m)` (original GRPO).
    SeqMeanTokenMean,
    /// `Σ_b Σ_t m·ℓ / C` with a constant C, e.g. the max response length (Dr. GRPO).
    SeqMeanTokenSumNorm { constant: f64 },
}

/// Aggregates `loss (B, T)` under `mask (B, T)` (§0.1). `B'` is the number of sequences with
/// at least one valid token (verl HEAD); an all-padding batch gives 0.
pub fn agg_loss(loss: &Tensor, mask: &Tensor, mode: LossAgg) -> Result<Tensor> {
    expect_shape(mask, loss.dims(), "mask")?;
    let masked = (loss * mask)?;
    let valid_sequences = scalar(&mask.sum(1)?.gt(0.0)?.to_dtype(DType::F32)?.sum_all()?)?.max(1.0);
    Ok(match mode {
        LossAgg::TokenMean => masked_mean(loss, mask)?,
        LossAgg::SeqMeanTokenSum => (masked.sum_all()? * (1.0 / valid_sequences))?,
        LossAgg::SeqMeanTokenMean => (masked_row_mean(loss, mask)?.sum_all()? * (1.0 / valid_sequences))?,
        LossAgg::SeqMeanTokenSumNorm { constant } => {
            if constant.is_nan() || constant <= 0.0 {
                return Err(LossError::InvalidParam {
                    name: "seq_mean_token_sum_norm.constant",
                    value: constant,
                    why: "C must be > 0; use the max response length and keep it fixed over training",
                });
            }
            (masked.sum_all()? * (1.0 / constant))?
        }
    })
}

// ------------------------------------------------------------------------------------------
// §0.2 KL estimators

/// KL estimators of §0.2 (verl `kl_penalty`); serde accepts verl's names as aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `d = logp − ref`.
    #[serde(alias = "kl")]
    K1,
    /// `|d|`.
    Abs,
    /// `½ d²`.
    #[serde(alias = "mse")]
    K2,
    /// `exp(−d) + d − 1` with `−d` clamped to ±20 and the result to ±10.
    #[serde(alias = "low_var_kl")]
    K3,
    /// Straight-through: forward k1, gradient of k2.
    K1Plus,
    /// Straight-through: forward k3, gradient of k2.
    K3Plus,
}

/// Per-token KL estimate `k(logp, ref)`, `(B, T)` (§0.2), differentiable in `logp`.
pub fn kl_penalty(logp: &Tensor, reference: &Tensor, estimator: KlEstimator) -> Result<Tensor> {
    expect_shape(reference, logp.dims(), "ref logp")?;
    let d = (logp - reference.detach())?;
    let k2 = || -> Result<Tensor> { Ok((d.sqr()? * 0.5)?) };
    let k3 = || -> Result<Tensor> {
        let neg_d = d.neg()?.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)?;
        Ok(((neg_d.exp()? - &neg_d)? - 1.0)?.clamp(-K3_CLAMP, K3_CLAMP)?)
    };
    // k − sg(k2) + k2: the value of k, the gradient of k2 (§0.2 "k1+", "k3+").
    let straight_through = |value: Tensor| -> Result<Tensor> {
        let k2 = k2()?;
        Ok(((k2.detach() * -1.0)? + value.detach())?.add(&k2)?)
    };
    match estimator {
        KlEstimator::K1 => Ok(d.clone()),
        KlEstimator::Abs => Ok(d.abs()?),
        KlEstimator::K2 => k2(),
        KlEstimator::K3 => k3(),
        KlEstimator::K1Plus => straight_through(d.clone()),
        KlEstimator::K3Plus => straight_through(k3()?),
    }
}

/// KL-in-reward (§1 step 5, §3.1, verl `apply_kl_penalty`):
/// `rewards = token_scores − β·k(old, ref)·m`. Returns the rewards `(B, T)` and the batch KL
/// `mean_b masked_mean_t(k·m)` that an adaptive KL controller would consume.
pub fn kl_in_reward(
    token_scores: &Tensor,
    old: &Tensor,
    reference: &Tensor,
    mask: &Tensor,
    beta: f64,
    estimator: KlEstimator,
) -> Result<(Tensor, f64)> {
    expect_shape(old, token_scores.dims(), "old logp")?;
    expect_shape(mask, token_scores.dims(), "mask")?;
    let kld = (kl_penalty(&old.detach(), reference, estimator)? * mask)?;
    let rewards = (token_scores - (&kld * beta)?)?;
    let current_kl = scalar(&masked_row_mean(&kld, mask)?.mean_all()?)?;
    Ok((rewards, current_kl))
}

// ------------------------------------------------------------------------------------------
// §2.1 PPO-clip policy loss

/// Clip settings of §2.1: clip-higher bounds `1 − ε_low ≤ ρ ≤ 1 + ε_high` and the optional
/// dual-clip constant `c > 1` for negative advantages.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PpoClip {
    pub clip_low: f64,
    pub clip_high: f64,
    pub dual_clip: Option<f64>,
}

impl Default for PpoClip {
    /// verl's defaults: ε = 0.2 both sides, c = 3 (§2.3).
    fn default() -> Self {
        PpoClip {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: Some(3.0),
        }
    }
}

/// Diagnostics of §2.1, masked token means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyLossMetrics {
    /// Fraction of tokens where the clipped term was the larger loss.
    pub pg_clipfrac: f64,
    /// Fraction of tokens where the dual clip bound the loss (A < 0 only).
    pub pg_clipfrac_lower: f64,
    /// `mean_m[−(logp − old)]`, with the ±20 clamp.
    pub ppo_kl: f64,
}

/// PPO-clip loss with clip-higher and dual-clip (§2.1, verl `compute_policy_loss_vanilla`):
/// ```text
/// ρ  = exp(clamp(logp − old, −20, 20))
/// L1 = −A·ρ,  L2 = −A·clip(ρ, 1−ε_low, 1+ε_high),  Lc = max(L1, L2)
/// ℓ  = min(Lc, −A·c) where A < 0 (dual clip), else Lc
/// loss = agg_loss(ℓ, m)
/// ```
pub fn ppo_policy_loss(
    logp: &Tensor,
    old: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: PpoClip,
    agg: LossAgg,
) -> Result<(Tensor, PolicyLossMetrics)> {
    for (t, what) in [(old, "old logp"), (advantages, "advantages"), (mask, "mask")] {
        expect_shape(t, logp.dims(), what)?;
    }
    if let Some(c) = clip.dual_clip {
        if c.is_nan() || c <= 1.0 {
            return Err(LossError::InvalidParam {
                name: "ppo.dual_clip",
                value: c,
                why: "the dual-clip constant c must be > 1 (verl asserts it; default 3)",
            });
        }
    }
    let adv = advantages.detach();
    let neg_adv = adv.neg()?;

    let log_ratio = (logp - old.detach())?.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)?;
    let ratio = log_ratio.exp()?;
    let ppo_kl = scalar(&masked_mean(&log_ratio.neg()?.detach(), mask)?)?;

    let loss_unclipped = (&neg_adv * &ratio)?;
    let loss_clipped = (&neg_adv * ratio.clamp(1.0 - clip.clip_low, 1.0 + clip.clip_high)?)?;
    let loss_ppo = loss_unclipped.maximum(&loss_clipped)?;
    let pg_clipfrac = scalar(&masked_mean(
        &loss_clipped.gt(&loss_unclipped)?.to_dtype(DType::F32)?,
        mask,
    )?)?;

    let (token_loss, pg_clipfrac_lower) = match clip.dual_clip {
        None => (loss_ppo, 0.0),
        Some(c) => {
            let loss_dual = (&neg_adv * c)?;
            let negative = adv.lt(0.0)?;
            let dual_bound = (loss_ppo.gt(&loss_dual)?.to_dtype(DType::F32)? * negative.to_dtype(DType::F32)?)?;
            let lower = scalar(&masked_mean(&dual_bound, mask)?)?;
            (negative.where_cond(&loss_ppo.minimum(&loss_dual)?, &loss_ppo)?, lower)
        }
    };

    let loss = agg_loss(&token_loss, mask, agg)?;
    Ok((
        loss,
        PolicyLossMetrics {
            pg_clipfrac,
            pg_clipfrac_lower,
            ppo_kl,
        },
    ))
}

// ------------------------------------------------------------------------------------------
// Entropy (§0, §2.1)

/// Token entropy `H = logsumexp(z) − Σ softmax(z)·z` of logits `(B, T, V)` → `(B, T)` (§0),
/// differentiable; detach it for the entropy-shaped advantage (§5).
pub fn entropy_from_logits(logits: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok((log_probs.exp()? * &log_probs)?.sum(D::Minus1)?.neg()?)
}

/// The entropy bonus `agg_loss(H, m)` of §2.1; the actor loss subtracts
/// `entropy_coeff · entropy_bonus`.
pub fn entropy_bonus(entropy: &Tensor, mask: &Tensor, agg: LossAgg) -> Result<Tensor> {
    agg_loss(entropy, mask, agg)
}

/// The actor objective of §2.1: `pg_loss − entropy_coeff·entropy_bonus + kl_loss_coef·kl_loss`.
/// Each optional term is `(aggregated term, coefficient)`; pass `None` when it is off
/// (verl's defaults: entropy_coeff = 0, use_kl_loss = false).
pub fn actor_loss(pg_loss: &Tensor, entropy: Option<(&Tensor, f64)>, kl: Option<(&Tensor, f64)>) -> Result<Tensor> {
    let mut total = pg_loss.clone();
    if let Some((bonus, coeff)) = entropy {
        total = (total - (bonus * coeff)?)?;
    }
    if let Some((kl_loss, coeff)) = kl {
        total = (total + (kl_loss * coeff)?)?;
    }
    Ok(total)
}

// ------------------------------------------------------------------------------------------
// Gradient accumulation

/// Share of a mini-batch's aggregate loss carried by one micro-batch of `rows` responses and
/// `tokens` valid tokens, so that accumulating the weighted micro losses gives the
/// mini-batch aggregate of §0.1 (the `agg_loss` of the whole mini-batch).
pub fn micro_weight(agg: LossAgg, rows: usize, mb_rows: usize, tokens: f64, mb_tokens: f64) -> f64 {
    match agg {
        LossAgg::TokenMean => tokens / mb_tokens.max(1.0),
        LossAgg::SeqMeanTokenSum | LossAgg::SeqMeanTokenMean => rows as f64 / mb_rows as f64,
        LossAgg::SeqMeanTokenSumNorm { .. } => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rl::fixtures::*;
    use candle_core::Var;
    use serde_json::Value;

    fn mode_of(case: &Value) -> LossAgg {
        match case["mode"].as_str().unwrap() {
            "token_mean" => LossAgg::TokenMean,
            "seq_mean_token_sum" => LossAgg::SeqMeanTokenSum,
            "seq_mean_token_mean" => LossAgg::SeqMeanTokenMean,
            "seq_mean_token_sum_norm" => LossAgg::SeqMeanTokenSumNorm {
                constant: case["constant"].as_f64().unwrap(),
            },
            other => panic!("unknown mode {other}"),
        }
    }

    #[test]
    fn agg_loss_matches_reference_in_every_mode() {
        let fx = fixture("loss");
        let (values, mask) = (tensor(&fx["agg"]["values"]), tensor(&fx["inputs"]["mask"]));
        for case in fx["agg"]["cases"].as_array().unwrap() {
            let loss = agg_loss(&values, &mask, mode_of(case)).unwrap();
            assert_scalar(
                scalar(&loss).unwrap(),
                &case["loss"],
                1e-5,
                case["mode"].as_str().unwrap(),
            );
        }
    }

    #[test]
    fn ppo_loss_metrics_and_gradient_match_reference() {
        let fx = fixture("loss");
        let inputs = &fx["inputs"];
        let (old, adv, mask) = (
            tensor(&inputs["old"]),
            tensor(&inputs["advantages"]),
            tensor(&inputs["mask"]),
        );
        for case in fx["ppo"].as_array().unwrap() {
            let what = case["mode"].as_str().unwrap();
            let logp = Var::from_tensor(&tensor(&inputs["logp"])).unwrap();
            let clip = PpoClip {
                clip_low: case["clip_low"].as_f64().unwrap(),
                clip_high: case["clip_high"].as_f64().unwrap(),
                dual_clip: case["dual_clip"].as_f64(),
            };
            let (loss, metrics) = ppo_policy_loss(logp.as_tensor(), &old, &adv, &mask, clip, mode_of(case)).unwrap();
            assert_scalar(scalar(&loss).unwrap(), &case["loss"], 1e-5, what);
            assert_scalar(
                metrics.pg_clipfrac,
                &case["metrics"]["pg_clipfrac"],
                1e-6,
                "pg_clipfrac",
            );
            assert_scalar(
                metrics.pg_clipfrac_lower,
                &case["metrics"]["pg_clipfrac_lower"],
                1e-6,
                "pg_clipfrac_lower",
            );
            assert_scalar(metrics.ppo_kl, &case["metrics"]["ppo_kl"], 1e-5, "ppo_kl");
            assert_close(
                &grad_of(&loss, &logp),
                &flat(&case["grad_logp"]),
                1e-5,
                &format!("{what} ∂L/∂logp"),
            );
        }
        // the fixture must exercise both clip bounds and the dual clip
        let first = &fx["ppo"][0]["metrics"];
        assert!(first["pg_clipfrac"].as_f64().unwrap() > 0.0 && first["pg_clipfrac_lower"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn kl_estimators_and_gradients_match_reference() {
        let fx = fixture("loss");
        let (mask, reference) = (tensor(&fx["inputs"]["mask"]), tensor(&fx["kl"]["ref"]));
        for case in fx["kl"]["cases"].as_array().unwrap() {
            let name = case["kind"].as_str().unwrap();
            let estimator: KlEstimator = serde_json::from_value(case["kind"].clone()).unwrap();
            let logp = Var::from_tensor(&tensor(&fx["inputs"]["logp"])).unwrap();
            let kl = kl_penalty(logp.as_tensor(), &reference, estimator).unwrap();
            assert_close(&values_of(&kl), &flat(&case["values"]), 1e-5, name);
            let loss = agg_loss(&kl, &mask, LossAgg::TokenMean).unwrap();
            assert_scalar(scalar(&loss).unwrap(), &case["token_mean"], 1e-5, name);
            assert_close(
                &grad_of(&loss, &logp),
                &flat(&case["grad_logp"]),
                1e-5,
                &format!("{name} ∂/∂logp"),
            );
        }
    }

    #[test]
    fn kl_in_reward_matches_reference() {
        let fx = fixture("loss");
        let case = &fx["kl_in_reward"];
        let (rewards, current_kl) = kl_in_reward(
            &tensor(&case["token_scores"]),
            &tensor(&fx["inputs"]["old"]),
            &tensor(&fx["kl"]["ref"]),
            &tensor(&fx["inputs"]["mask"]),
            case["beta"].as_f64().unwrap(),
            KlEstimator::K1,
        )
        .unwrap();
        assert_close(&values_of(&rewards), &flat(&case["rewards"]), 1e-5, "rewards");
        assert_scalar(current_kl, &case["current_kl"], 1e-5, "current_kl");
        let mat = tensor_to_mat(&rewards).unwrap();
        assert_eq!(
            values_of(&mat_to_tensor(&mat, &Device::Cpu).unwrap()),
            values_of(&rewards)
        );
    }

    #[test]
    fn entropy_from_logits_matches_reference() {
        let e = &fixture("loss")["entropy"];
        let h = entropy_from_logits(&tensor(&e["logits"])).unwrap();
        assert_close(&values_of(&h), &flat(&e["entropy"]), 1e-5, "entropy");
    }

    #[test]
    fn micro_weights_accumulate_to_the_mini_batch_aggregate() {
        // Two micro-batches (rows 0..2 and 2..3) of a three-row mini-batch: the weighted sum
        // of their aggregates equals the aggregate of the whole mini-batch in every mode.
        let lengths = [3usize, 1, 2];
        let mask: Vec<f32> = (0..9).map(|i| ((i % 3) < lengths[i / 3]) as u8 as f32).collect();
        let loss: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = |v: &[f32], rows: usize| Tensor::from_slice(v, (rows, 3), &Device::Cpu).unwrap();
        let tokens = |m: &[f32]| m.iter().map(|&x| x as f64).sum::<f64>();
        for agg in [LossAgg::TokenMean, LossAgg::SeqMeanTokenSum, LossAgg::SeqMeanTokenMean, LossAgg::SeqMeanTokenSumNorm { constant: 3.0 }] {
            let whole = scalar(&agg_loss(&t(&loss, 3), &t(&mask, 3), agg).unwrap()).unwrap();
            let parts: f64 = [(0..6, 2usize), (6..9, 1)]
                .into_iter()
                .map(|(r, rows)| {
                    let part = scalar(&agg_loss(&t(&loss[r.clone()], rows), &t(&mask[r.clone()], rows), agg).unwrap()).unwrap();
                    part * micro_weight(agg, rows, 3, tokens(&mask[r]), tokens(&mask))
                })
                .sum();
            assert!((whole - parts).abs() < 1e-6, "{agg:?}: {whole} vs {parts}");
        }
    }

    #[test]
    fn actor_loss_combines_terms_with_their_signs() {
        let t = |x: f32| Tensor::new(x, &Device::Cpu).unwrap();
        let (pg, ent, kl) = (t(1.5), t(2.0), t(0.3));
        let total = actor_loss(&pg, Some((&ent, 0.01)), Some((&kl, 0.1))).unwrap();
        assert_close(&[scalar(&total).unwrap()], &[1.5 - 0.02 + 0.03], 1e-6, "actor loss");
        assert_eq!(scalar(&actor_loss(&pg, None, None).unwrap()).unwrap(), 1.5);
    }

    #[test]
    fn invalid_settings_are_reported() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let err = ppo_policy_loss(
            &x,
            &x,
            &x,
            &x,
            PpoClip {
                dual_clip: Some(1.0),
                ..PpoClip::default()
            },
            LossAgg::TokenMean,
        )
        .unwrap_err();
        assert!(err.to_string().contains("dual-clip constant c must be > 1"), "{err}");
        let y = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let err = ppo_policy_loss(&x, &y, &x, &x, PpoClip::default(), LossAgg::TokenMean).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("old logp: expected shape [2, 3], got [2, 4]"),
            "{err}"
        );
        let err = agg_loss(&x, &x, LossAgg::SeqMeanTokenSumNorm { constant: 0.0 }).unwrap_err();
        assert!(err.to_string().contains("C must be > 0"), "{err}");
    }

    #[test]
    fn config_enums_use_snake_case_and_verl_aliases() {
        let k: KlEstimator = serde_json::from_str(r#""low_var_kl""#).unwrap();
        assert_eq!(k, KlEstimator::K3);
        let k: KlEstimator = serde_json::from_str(r#""mse""#).unwrap();
        assert_eq!(k, KlEstimator::K2);
        assert_eq!(serde_json::to_string(&KlEstimator::K3Plus).unwrap(), r#""k3_plus""#);
        let agg: LossAgg = serde_json::from_str(r#"{"kind":"seq_mean_token_sum_norm","constant":512.0}"#).unwrap();
        assert_eq!(agg, LossAgg::SeqMeanTokenSumNorm { constant: 512.0 });
    }
}
