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
    Shape { what: &'static str, expected: Vec<usize>, got: Vec<usize> },
    #[error("parameter {name} = {value} is invalid: {why}")]
    InvalidParam { name: &'static str, value: f64, why: &'static str },
}

pub type Result<T> = std::result::Result<T, LossError>;

fn expect_shape(t: &Tensor, expected: &[usize], what: &'static str) -> Result<()> {
    if t.dims() != expected {
        return Err(LossError::Shape { what, expected: expected.to_vec(), got: t.dims().to_vec() });
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
            if !(constant > 0.0) {
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
        PpoClip { clip_low: 0.2, clip_high: 0.2, dual_clip: Some(3.0) }
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
        if !(c > 1.0) {
            return Err(LossError::InvalidParam { name: "ppo.dual_clip", value: c, why: "the dual-clip constant c must be > 1 (verl asserts it; default 3)" });
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
    let pg_clipfrac = scalar(&masked_mean(&loss_clipped.gt(&loss_unclipped)?.to_dtype(DType::F32)?, mask)?)?;

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
    Ok((loss, PolicyLossMetrics { pg_clipfrac, pg_clipfrac_lower, ppo_kl }))
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
    let vf_clipfrac = scalar(&masked_mean(&error_clipped.gt(&error_unclipped)?.to_dtype(DType::F32)?, mask)?)?;

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
    let valid: Vec<(f64, f64)> = r.iter().zip(&v).zip(&m).filter(|(_, &m)| m != 0.0).map(|((&r, &v), _)| (r, v)).collect();
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
        return Err(LossError::Shape { what: "log_z", expected: vec![batch], got: log_z.dims().to_vec() });
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
        Ok(DifferentiableLayerNorm { weight, bias, eps: 1e-5 })
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
            return Err(LossError::InvalidParam { name: "z_head.layers", value: 0.0, why: "the Z head needs at least its output layer (FlowRL uses 3)" });
        }
        let hidden = (0..layers - 1)
            .map(|i| {
                let vb = vb.pp(format!("hidden.{i}"));
                Ok((candle_nn::linear(hidden_size, hidden_size, vb.pp("linear"))?, DifferentiableLayerNorm::new(hidden_size, vb.pp("norm"))?))
            })
            .collect::<Result<Vec<_>>>()?;
        let out_vb = vb.pp("out");
        let weight = out_vb.get_with_hints((1, hidden_size), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bias = out_vb.get_with_hints(1, "bias", Init::Const(0.0))?;
        Ok(ZHead { hidden, out: Linear::new(weight, Some(bias)) })
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
