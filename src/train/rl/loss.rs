//! RL losses on candle tensors (research/rl-spec.md §0.1, §0.2, §2.1, §3.2, §4.2–§4.4).
//!
//! Every loss is one readable top-to-bottom function in the style of verl's `core_algos`.
//! Inputs are f32 tensors with shapes from §0: `logp`, `old`, `ref`, `advantages`, `mask` are
//! `(B, T)`; per-response inputs are `(B,)`. Only `logp` (and `log_z`, `values`, hidden states)
//! carry gradients; `old`, `ref`, advantages and returns are detached here so that a caller
//! cannot leak gradient into them by accident. Metrics come back as f64 for logging (§8.4).

use crate::train::rl::advantage::Mat;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// verl's masked-mean epsilon (§0).
const MASKED_MEAN_EPS: f64 = 1e-8;
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

fn expect_shape(t: &Tensor, expected: &[usize], what: &'static str) -> Result<()> {
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
fn scalar(t: &Tensor) -> Result<f64> {
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
// §3.2 critic

/// Diagnostics of the value loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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
) -> Result<(Tensor, ValueLossMetrics)> {
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
pub fn explained_variance(returns: &Tensor, values: &Tensor, mask: &Tensor) -> Result<f64> {
    expect_shape(values, returns.dims(), "values")?;
    expect_shape(mask, returns.dims(), "mask")?;
    let flat = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?) };
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
// §4 FlowRL

/// Importance-weight clipping of the FlowRL loss (§4.3); the weight is always detached.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IsMode {
    /// Unclipped `w` (verl 0.4.0 "paper reproduction" code). Can overflow to inf far off-policy.
    None,
    /// `clip(w, 1−ε, 1+ε)` (the paper's text).
    TwoSided { eps: f64 },
    /// `min(w, W_max)` (the author's current recipe; W_max = 10 is the lab default).
    Upper { max: f64 },
}

impl Default for IsMode {
    fn default() -> Self {
        IsMode::Upper { max: 10.0 }
    }
}

impl IsMode {
    fn apply(self, w: &Tensor) -> Result<Tensor> {
        Ok(match self {
            IsMode::None => w.clone(),
            IsMode::TwoSided { eps } => w.clamp(1.0 - eps, 1.0 + eps)?,
            IsMode::Upper { max } => w.minimum(max)?,
        })
    }
}

/// FlowRL diagnostics (§8.4 `actor/…` names); token means are masked over the whole batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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
) -> Result<(Tensor, FlowRlMetrics)> {
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
pub fn pool_prompt(hidden: &Tensor, prompt_mask: &Tensor) -> Result<Tensor> {
    let (b, l, _) = hidden.dims3()?;
    expect_shape(prompt_mask, &[b, l], "prompt_mask")?;
    let weights = prompt_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let counts = (weights.sum(1)? + MASKED_MEAN_EPS)?;
    Ok(hidden.broadcast_mul(&weights)?.sum(1)?.broadcast_div(&counts)?)
}

/// LayerNorm written with plain tensor ops: candle_nn's fused CPU kernel has no backward
/// pass, and the Z head must be trained.
#[derive(Clone, Debug)]
struct DifferentiableLayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl DifferentiableLayerNorm {
    fn new(size: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", Init::Const(0.0))?;
        Ok(DifferentiableLayerNorm {
            weight,
            bias,
            eps: 1e-5,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// The partition-function network Z_φ of §4.4 (FlowRL `ProjZModule`):
/// `[Linear(H,H) → GELU → LayerNorm(H)] × (layers − 1) → Linear(H, 1)`, last bias initialised
/// to 0 so that log Z starts near 0. Dropout (0.1 in the reference) is omitted: the lab's
/// runs are small and deterministic. Parameter names: `hidden.{i}.linear.{weight,bias}`,
/// `hidden.{i}.norm.{weight,bias}`, `out.{weight,bias}`.
#[derive(Clone, Debug)]
pub struct ZHead {
    hidden: Vec<(Linear, DifferentiableLayerNorm)>,
    out: Linear,
}

impl ZHead {
    pub fn new(vb: VarBuilder, hidden_size: usize, layers: usize) -> Result<Self> {
        if layers == 0 {
            return Err(LossError::InvalidParam {
                name: "z_head.layers",
                value: 0.0,
                why: "the Z head needs at least its output layer (FlowRL uses 3)",
            });
        }
        let hidden = (0..layers - 1)
            .map(|i| {
                let vb = vb.pp(format!("hidden.{i}"));
                Ok((
                    candle_nn::linear(hidden_size, hidden_size, vb.pp("linear"))?,
                    DifferentiableLayerNorm::new(hidden_size, vb.pp("norm"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let out_vb = vb.pp("out");
        let weight = out_vb.get_with_hints((1, hidden_size), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bias = out_vb.get_with_hints(1, "bias", Init::Const(0.0))?;
        Ok(ZHead {
            hidden,
            out: Linear::new(weight, Some(bias)),
        })
    }

    /// `pooled (B, H)` → `log Z (B,)`.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let mut x = pooled.clone();
        for (linear, norm) in &self.hidden {
            x = norm.forward(&linear.forward(&x)?.gelu_erf()?)?;
        }
        Ok(self.out.forward(&x)?.squeeze(1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::rl::advantage::{broadcast_over_tokens, grpo_advantage};
    use candle_core::Var;
    use candle_nn::VarMap;
    use serde_json::Value;
    use std::collections::HashMap;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/rl/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture written by tools/rl_reference.py");
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    /// A nested JSON array of numbers as an f32 tensor of the same shape.
    fn tensor(v: &Value) -> Tensor {
        fn collect(v: &Value, shape: &mut Vec<usize>, data: &mut Vec<f32>, depth: usize) {
            match v {
                Value::Array(items) => {
                    if shape.len() == depth {
                        shape.push(items.len());
                    }
                    items.iter().for_each(|x| collect(x, shape, data, depth + 1));
                }
                x => data.push(x.as_f64().expect("number") as f32),
            }
        }
        let (mut shape, mut data) = (vec![], vec![]);
        collect(v, &mut shape, &mut data, 0);
        Tensor::from_vec(data, shape, &Device::Cpu).expect("rectangular")
    }

    fn flat(v: &Value) -> Vec<f64> {
        match v {
            Value::Array(items) => items.iter().flat_map(flat).collect(),
            x => vec![x.as_f64().expect("number")],
        }
    }

    fn values_of(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= tol * e.abs().max(1.0),
                "{what}[{i}]: got {a}, expected {e}"
            );
        }
    }

    fn assert_scalar(actual: f64, expected: &Value, tol: f64, what: &str) {
        assert_close(&[actual], &[expected.as_f64().expect("number")], tol, what);
    }

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

    fn grad_of(loss: &Tensor, var: &Var) -> Vec<f64> {
        let grads = loss.backward().unwrap();
        values_of(grads.get(var.as_tensor()).expect("the variable is on the loss graph"))
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

    #[test]
    fn entropy_from_logits_matches_reference() {
        let e = &fixture("loss")["entropy"];
        let h = entropy_from_logits(&tensor(&e["logits"])).unwrap();
        assert_close(&values_of(&h), &flat(&e["entropy"]), 1e-5, "entropy");
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
    fn fresh_zhead_trains_and_starts_with_zero_output_bias() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let head = ZHead::new(vb, 8, 3).unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(values_of(data["out.bias"].as_tensor()), vec![0.0]);
        assert_eq!(
            data.len(),
            2 * 4 + 2,
            "two hidden blocks (linear + norm) and the output layer"
        );
        let out_weight = data["out.weight"].clone();
        let first_linear = data["hidden.0.linear.weight"].clone();
        drop(data);
        let pooled = Tensor::randn(0f32, 1.0, (4, 8), &Device::Cpu).unwrap();
        let loss = head.forward(&pooled).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in [("out.weight", out_weight), ("hidden.0.linear.weight", first_linear)] {
            let g = values_of(
                grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name} got no gradient")),
            );
            assert!(g.iter().any(|&x| x != 0.0), "{name} gradient is all zero");
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
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        assert!(ZHead::new(vb, 4, 0).is_err());
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
        let mode: IsMode = serde_json::from_str(r#"{"kind":"two_sided","eps":0.2}"#).unwrap();
        assert_eq!(mode, IsMode::TwoSided { eps: 0.2 });
        assert_eq!(serde_json::to_string(&IsMode::None).unwrap(), r#"{"kind":"none"}"#);
    }
}
