//! Advantage estimators and advantage shapings, as pure functions over plain Rust data.
//!
//! Shapes follow docs/METHODS.md §0: `B` responses, `T` response positions.
//! - per-response vectors (scores, scalar advantages): `&[f32]` of length `B`;
//! - per-token matrices (masks, token rewards, values, advantages, entropies): [`Mat`],
//!   row-major `(B, T)`; masks hold 1.0 for valid response tokens and 0.0 for padding;
//! - `groups`: one group id per response (`B`); responses with the same id answered the
//!   same prompt (verl's `uid`).
//!
//! Statistics are accumulated in f64 and stored back as f32, so results do not depend on
//! summation order beyond f32 rounding. Every output matrix is 0 at masked positions (verl
//! leaves whitened garbage there and relies on the loss mask; zero is easier to inspect).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The epsilon verl adds to every masked-mean denominator (§0 `masked_mean`).
pub const MASKED_MEAN_EPS: f64 = 1e-8;
/// The epsilon inside `rsqrt(var + eps)` of `masked_whiten` (§0).
pub const WHITEN_EPS: f64 = 1e-8;
/// The epsilon added to the group std in GRPO and pass@k advantages (§0.3, §6.5).
pub const GROUP_STD_EPS: f64 = 1e-6;

/// Errors from advantage computations. Messages say which input is wrong and how to fix it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdvantageError {
    #[error("{what}: expected shape {expected}, got {got}; every per-token input must be (B, T) and every per-response input (B,)")]
    Shape {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("masked variance needs at least 2 valid tokens, the mask has {valid}; whitening a batch that small is meaningless, use a larger batch")]
    TooFewTokens { valid: usize },
    #[error("response {row} has no valid token, so its score cannot be placed at the last valid token; a response keeps at least its EOS token in the mask")]
    EmptyResponse { row: usize },
    #[error("the GAE estimator needs critic values (B, T); pass `values` in AdvantageBatch or pick an outcome estimator (grpo, rloo, ...)")]
    MissingValues,
    #[error("pass@k with k = {k} needs at least k responses per group, group {group} has {size}; lower k or raise rollout.n")]
    GroupTooSmall { group: usize, size: usize, k: usize },
    #[error("parameter {name} = {value} is invalid: {why}")]
    InvalidParam {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, AdvantageError>;

/// A dense row-major f32 matrix, shape `(rows, cols)` = `(B, T)` for per-token data.
/// Build it with [`Mat::new`] or [`Mat::from_rows`], which check `data.len() == rows·cols`;
/// the accessors index by that invariant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Mat {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(AdvantageError::Shape {
                what: "Mat::new data",
                expected: format!("{} elements ({rows} x {cols})", rows * cols),
                got: format!("{} elements", data.len()),
            });
        }
        Ok(Mat { rows, cols, data })
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Builds a matrix from equally long rows (the `&[Vec<f32>]` form used by callers).
    pub fn from_rows(rows: &[Vec<f32>]) -> Result<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (r, row) in rows.iter().enumerate() {
            if row.len() != cols {
                return Err(AdvantageError::Shape {
                    what: "Mat::from_rows row",
                    expected: format!("{cols} columns (as row 0)"),
                    got: format!("{} columns in row {r}", row.len()),
                });
            }
            data.extend_from_slice(row);
        }
        Ok(Mat {
            rows: rows.len(),
            cols,
            data,
        })
    }

    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        (0..self.rows).map(|r| self.row(r).to_vec()).collect()
    }

    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    fn shape_string(&self) -> String {
        format!("({}, {})", self.rows, self.cols)
    }

    /// Errors unless `other` has this matrix's shape; `what` names `other` in the message.
    fn expect_same_shape(&self, other: &Mat, what: &'static str) -> Result<()> {
        if self.rows != other.rows || self.cols != other.cols {
            return Err(AdvantageError::Shape {
                what,
                expected: self.shape_string(),
                got: other.shape_string(),
            });
        }
        Ok(())
    }

    /// Elementwise map over (value, mask) pairs; masked positions become 0.
    fn map_masked(&self, mask: &Mat, f: impl Fn(usize, usize, f32) -> f32) -> Mat {
        let mut out = Mat::zeros(self.rows, self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                if mask.get(r, c) != 0.0 {
                    out.data[r * self.cols + c] = f(r, c, self.get(r, c));
                }
            }
        }
        out
    }
}

fn expect_len(len: usize, expected: usize, what: &'static str) -> Result<()> {
    if len != expected {
        return Err(AdvantageError::Shape {
            what,
            expected: format!("({expected},)"),
            got: format!("({len},)"),
        });
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// §0 masked statistics

/// `Σ v·m / (Σ m + 1e-8)` over the whole batch (§0 `masked_mean`).
pub fn masked_mean(values: &Mat, mask: &Mat) -> Result<f64> {
    values.expect_same_shape(mask, "mask")?;
    let (sum, count) = masked_sum_count(values.data.iter().zip(&mask.data));
    Ok(sum / (count + MASKED_MEAN_EPS))
}

/// Per-row `Σ_t v·m / (Σ_t m + 1e-8)`, shape `(B,)` (§0 `masked_mean(…, axis=1)`; FlowRL's
/// length-normalised log-probs and r̂ in §4.2 use it).
pub fn masked_row_means(values: &Mat, mask: &Mat) -> Result<Vec<f32>> {
    values.expect_same_shape(mask, "mask")?;
    Ok((0..values.rows)
        .map(|r| {
            let (sum, count) = masked_sum_count(values.row(r).iter().zip(mask.row(r)));
            (sum / (count + MASKED_MEAN_EPS)) as f32
        })
        .collect())
}

fn masked_sum_count<'a>(pairs: impl Iterator<Item = (&'a f32, &'a f32)>) -> (f64, f64) {
    pairs.fold((0.0, 0.0), |(s, n), (&v, &m)| (s + v as f64 * m as f64, n + m as f64))
}

/// Unbiased (Bessel-corrected) variance over all masked elements of the batch (§0
/// `masked_var`): `masked_mean((v − μ)², m) · Σm / (Σm − 1)`. Needs at least two valid tokens.
pub fn masked_var(values: &Mat, mask: &Mat) -> Result<f64> {
    let mean = masked_mean(values, mask)?;
    let count: f64 = mask.data.iter().map(|&m| m as f64).sum();
    if count < 2.0 {
        return Err(AdvantageError::TooFewTokens { valid: count as usize });
    }
    let (sq_sum, _) = values.data.iter().zip(&mask.data).fold((0.0, 0.0), |(s, n), (&v, &m)| {
        (s + (v as f64 - mean).powi(2) * m as f64, n)
    });
    Ok(sq_sum / (count + MASKED_MEAN_EPS) * count / (count - 1.0))
}

/// `(v − masked_mean) · rsqrt(masked_var + 1e-8)` over the whole batch (§0 `masked_whiten`);
/// masked positions are 0 in the output.
pub fn masked_whiten(values: &Mat, mask: &Mat) -> Result<Mat> {
    let mean = masked_mean(values, mask)?;
    let inv_std = 1.0 / (masked_var(values, mask)? + WHITEN_EPS).sqrt();
    Ok(values.map_masked(mask, |_, _, v| ((v as f64 - mean) * inv_std) as f32))
}

// ------------------------------------------------------------------------------------------
// §0 / §1 rewards and groups

/// Token rewards `r_t = score · 1[t = last valid index]` (§0, verl `NaiveRewardManager`).
pub fn token_rewards_from_scores(scores: &[f32], mask: &Mat) -> Result<Mat> {
    expect_len(scores.len(), mask.rows, "scores")?;
    let mut out = Mat::zeros(mask.rows, mask.cols);
    for (r, &score) in scores.iter().enumerate() {
        let last = mask
            .row(r)
            .iter()
            .rposition(|&m| m != 0.0)
            .ok_or(AdvantageError::EmptyResponse { row: r })?;
        out.row_mut(r)[last] = score;
    }
    Ok(out)
}

/// `s_i = Σ_t r_{i,t}` (§0.3): the scalar score of each response, from token rewards.
pub fn sequence_scores(token_rewards: &Mat) -> Vec<f32> {
    (0..token_rewards.rows)
        .map(|r| token_rewards.row(r).iter().map(|&v| v as f64).sum::<f64>() as f32)
        .collect()
}

/// Response indices per group id, in ascending id order.
fn group_members(groups: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(i);
    }
    members
}

/// Mean and unbiased std (torch.std) of the scores of one group; a group of one gets
/// `μ = 0, σ = 1` as in verl (§0.3), so its advantage is its raw score.
fn group_mean_std(scores: &[f32], members: &[usize]) -> (f64, f64) {
    let n = members.len();
    if n == 1 {
        return (0.0, 1.0);
    }
    let mean = members.iter().map(|&i| scores[i] as f64).sum::<f64>() / n as f64;
    let var = members.iter().map(|&i| (scores[i] as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// Broadcasts a per-response value over its valid tokens: `A_{i,t} = A_i · m_{i,t}` (§0.3).
pub fn broadcast_over_tokens(per_response: &[f32], mask: &Mat) -> Result<Mat> {
    expect_len(per_response.len(), mask.rows, "per-response values")?;
    Ok(mask.map_masked(mask, |r, _, m| per_response[r] * m))
}

// ------------------------------------------------------------------------------------------
// Outcome estimators (per-response)

/// GRPO group-normalised advantage (§0.3, verl `compute_grpo_outcome_advantage`):
/// `A_i = (s_i − μ_g)/(σ_g + 1e-6)` with σ the unbiased std, or `s_i − μ_g` when
/// `norm_by_std` is false (Dr. GRPO). Groups of one use μ = 0, σ = 1.
/// All-same groups get exactly 0.
pub fn grpo_advantage(scores: &[f32], groups: &[usize], norm_by_std: bool) -> Result<Vec<f32>> {
    expect_len(groups.len(), scores.len(), "groups")?;
    let mut out = vec![0.0f32; scores.len()];
    for members in group_members(groups).values() {
        let (mean, std) = group_mean_std(scores, members);
        for &i in members {
            let centred = scores[i] as f64 - mean;
            out[i] = if norm_by_std {
                centred / (std + GROUP_STD_EPS)
            } else {
                centred
            } as f32;
        }
    }
    Ok(out)
}

/// RLOO (§3.3): `A_i = n/(n−1) · (s_i − μ_g)`, i.e. the score minus the mean of the other
/// n−1 responses. A group of one keeps its raw score (verl skips the baseline there).
pub fn rloo_advantage(scores: &[f32], groups: &[usize]) -> Result<Vec<f32>> {
    expect_len(groups.len(), scores.len(), "groups")?;
    let mut out = scores.to_vec();
    for members in group_members(groups).values() {
        let n = members.len();
        if n < 2 {
            continue;
        }
        let (mean, _) = group_mean_std(scores, members);
        let scale = n as f64 / (n - 1) as f64;
        for &i in members {
            out[i] = (scale * (scores[i] as f64 - mean)) as f32;
        }
    }
    Ok(out)
}

/// Pass@k-training advantage for binary rewards (§6.5, RUCAIBox/Passk_Training): with
/// `N` responses per group and `N_neg` failures, `R̄ = 1 − C(N_neg,k)/C(N,k)`,
/// `σ = sqrt(R̄(1−R̄))`, `A_pos = (1−R̄)/(σ+1e-6)`,
/// `A_neg = (1 − R̄ − C(N_neg−1,k−1)/C(N−1,k−1))/(σ+1e-6)`.
/// A response passes when its score is > 0, which fits both the {0,1} and the ±1 verifiers.
pub fn pass_at_k_advantage(scores: &[f32], groups: &[usize], k: usize) -> Result<Vec<f32>> {
    expect_len(groups.len(), scores.len(), "groups")?;
    if k == 0 {
        return Err(AdvantageError::InvalidParam {
            name: "pass_at_k.k",
            value: 0.0,
            why: "k must be at least 1",
        });
    }
    let mut out = vec![0.0f32; scores.len()];
    for (&group, members) in &group_members(groups) {
        let n = members.len();
        if n < k {
            return Err(AdvantageError::GroupTooSmall { group, size: n, k });
        }
        let n_neg = members.iter().filter(|&&i| scores[i] <= 0.0).count();
        let mean_reward = 1.0 - binomial_ratio(n_neg, n, k);
        let std = (mean_reward * (1.0 - mean_reward)).max(0.0).sqrt();
        let a_pos = (1.0 - mean_reward) / (std + GROUP_STD_EPS);
        // C(N_neg−1, k−1)/C(N−1, k−1): the chance that a k-subset containing this failure
        // holds only failures. It is 0 when there are no failures at all.
        let all_fail_given_this = if n_neg == 0 {
            0.0
        } else {
            binomial_ratio(n_neg - 1, n - 1, k - 1)
        };
        let a_neg = (1.0 - mean_reward - all_fail_given_this) / (std + GROUP_STD_EPS);
        for &i in members {
            out[i] = if scores[i] > 0.0 { a_pos } else { a_neg } as f32;
        }
    }
    Ok(out)
}

/// `C(a, k) / C(b, k)` for `a ≤ b`, as the stable product `Π_{i<k} (a−i)/(b−i)`; it is 0 when
/// `a < k` (no k-subset exists).
fn binomial_ratio(a: usize, b: usize, k: usize) -> f64 {
    if a < k {
        return 0.0;
    }
    (0..k).map(|i| (a - i) as f64 / (b - i) as f64).product()
}

// ------------------------------------------------------------------------------------------
// Token-level estimators

/// REINFORCE++ (§3.3): discounted return `G_t = r_t + γ G_{t+1}`, reset after each valid
/// token's end (verl multiplies the running return by `m_t`), then `masked_whiten` over the
/// batch. No critic. Returns `(advantages, returns)`.
pub fn reinforce_plus_plus(token_rewards: &Mat, mask: &Mat, gamma: f32) -> Result<(Mat, Mat)> {
    token_rewards.expect_same_shape(mask, "mask")?;
    let mut returns = Mat::zeros(mask.rows, mask.cols);
    for r in 0..mask.rows {
        let mut running = 0.0f64;
        for t in (0..mask.cols).rev() {
            running = token_rewards.get(r, t) as f64 + gamma as f64 * running;
            returns.row_mut(r)[t] = running as f32;
            running *= mask.get(r, t) as f64;
        }
    }
    let advantages = masked_whiten(&returns, mask)?;
    Ok((advantages, returns.map_masked(mask, |_, _, v| v)))
}

/// REINFORCE++-baseline (§3.3): `s_i − μ_g` broadcast over tokens, then `masked_whiten` over
/// the batch. Groups of one use μ = 0 (verl).
pub fn reinforce_plus_plus_baseline(scores: &[f32], groups: &[usize], mask: &Mat) -> Result<Mat> {
    let centred = grpo_advantage(scores, groups, false)?;
    masked_whiten(&broadcast_over_tokens(&centred, mask)?, mask)
}

/// GAE (§3.1, verl `compute_gae_advantage_return` at HEAD). Backwards over t with
/// `V_T = 0`: `δ_t = r_t + γ V_{t+1} − V_t`, `Â_t = δ_t + γλ Â_{t+1}`; at masked positions
/// the next value and the running Â are carried through unchanged. Returns are the
/// un-whitened `R_t = Â_t + V_t`; advantages are `masked_whiten(Â)`. `values` is the critic's
/// `(B, T)` output and `token_rewards` holds the score at the last valid token (plus any
/// KL-in-reward penalty). Returns `(advantages, returns)`.
pub fn gae(token_rewards: &Mat, values: &Mat, mask: &Mat, gamma: f32, lambda: f32) -> Result<(Mat, Mat)> {
    token_rewards.expect_same_shape(mask, "mask")?;
    token_rewards.expect_same_shape(values, "values")?;
    let raw = gae_unwhitened(token_rewards, values, mask, gamma as f64, lambda as f64);
    let returns = raw.map_masked(mask, |r, t, a| a + values.get(r, t));
    let advantages = masked_whiten(&raw, mask)?;
    Ok((advantages, returns))
}

/// The backward GAE recursion of §3.1 before whitening (0 at masked positions).
pub fn gae_unwhitened(token_rewards: &Mat, values: &Mat, mask: &Mat, gamma: f64, lambda: f64) -> Mat {
    let mut out = Mat::zeros(mask.rows, mask.cols);
    for r in 0..mask.rows {
        let (mut next_value, mut last_gae) = (0.0f64, 0.0f64);
        for t in (0..mask.cols).rev() {
            if mask.get(r, t) == 0.0 {
                continue; // carry next_value and last_gae through masked positions
            }
            let value = values.get(r, t) as f64;
            let delta = token_rewards.get(r, t) as f64 + gamma * next_value - value;
            last_gae = delta + gamma * lambda * last_gae;
            next_value = value;
            out.row_mut(r)[t] = last_gae as f32;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Dispatch

fn default_true() -> bool {
    true
}
fn default_one() -> f32 {
    1.0
}

/// Which advantage estimator to run; serialises as `{"kind": "grpo", "norm_by_std": true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdvantageEstimator {
    /// §0.3; `norm_by_std = false` is Dr. GRPO.
    Grpo {
        #[serde(default = "default_true")]
        norm_by_std: bool,
    },
    /// §3.3 leave-one-out baseline.
    Rloo,
    /// §3.3 discounted return, whitened.
    ReinforcePlusPlus {
        #[serde(default = "default_one")]
        gamma: f32,
    },
    /// §3.3 group-mean baseline, whitened.
    ReinforcePlusPlusBaseline,
    /// §3.1 critic-based GAE (needs values).
    Gae {
        #[serde(default = "default_one")]
        gamma: f32,
        #[serde(default = "default_one")]
        lambda: f32,
    },
    /// §6.5 analytic pass@k advantage (binary rewards).
    PassAtK { k: usize },
}

/// Inputs of one advantage computation, all for the same `B` responses.
#[derive(Clone, Copy, Debug)]
pub struct AdvantageBatch<'a> {
    /// `(B, T)`: the score at the last valid token, minus any KL-in-reward penalty (§1 step 5).
    pub token_rewards: &'a Mat,
    /// `(B, T)` response mask.
    pub mask: &'a Mat,
    /// `(B,)` group (prompt) id of each response.
    pub groups: &'a [usize],
    /// `(B, T)` critic values; only GAE reads them.
    pub values: Option<&'a Mat>,
}

/// Per-token advantages and returns `(B, T)`, 0 at masked positions. Outcome estimators
/// return the advantages as returns, as verl does.
#[derive(Clone, Debug, PartialEq)]
pub struct Advantages {
    pub advantages: Mat,
    pub returns: Mat,
}

/// Runs the chosen estimator (§0.3, §3.1, §3.3, §6.5). Scores for outcome estimators are the
/// row sums of the token rewards (§0.3 `s_i = Σ_t r_{i,t}`).
pub fn compute_advantages(estimator: &AdvantageEstimator, batch: &AdvantageBatch) -> Result<Advantages> {
    let AdvantageBatch {
        token_rewards,
        mask,
        groups,
        values,
    } = *batch;
    mask.expect_same_shape(token_rewards, "token_rewards")?;
    expect_len(groups.len(), mask.rows, "groups")?;
    let scores = sequence_scores(token_rewards);
    let outcome = |per_response: Vec<f32>| -> Result<Advantages> {
        let advantages = broadcast_over_tokens(&per_response, mask)?;
        Ok(Advantages {
            returns: advantages.clone(),
            advantages,
        })
    };
    match *estimator {
        AdvantageEstimator::Grpo { norm_by_std } => outcome(grpo_advantage(&scores, groups, norm_by_std)?),
        AdvantageEstimator::Rloo => outcome(rloo_advantage(&scores, groups)?),
        AdvantageEstimator::PassAtK { k } => outcome(pass_at_k_advantage(&scores, groups, k)?),
        AdvantageEstimator::ReinforcePlusPlus { gamma } => {
            let (advantages, returns) = reinforce_plus_plus(token_rewards, mask, gamma)?;
            Ok(Advantages { advantages, returns })
        }
        AdvantageEstimator::ReinforcePlusPlusBaseline => {
            let advantages = reinforce_plus_plus_baseline(&scores, groups, mask)?;
            Ok(Advantages {
                returns: advantages.clone(),
                advantages,
            })
        }
        AdvantageEstimator::Gae { gamma, lambda } => {
            let values = values.ok_or(AdvantageError::MissingValues)?;
            let (advantages, returns) = gae(token_rewards, values, mask, gamma, lambda)?;
            Ok(Advantages { advantages, returns })
        }
    }
}

// ------------------------------------------------------------------------------------------
// Exploration shapings of A (§5, §6.4) and the STILL-3 KL schedule (§7.1)

/// Entropy-based advantage (§5.1, Cheng et al.): `A' = A + min(α·H, |A|/κ)` per token, with
/// `H` the detached token entropy `(B, T)`. Because ψ ≤ |A|/κ and κ > 1, the sign of A never
/// flips, and A = 0 stays 0. Negative entropies (float noise from logsumexp − Σpz) are
/// treated as 0 so that ψ ≥ 0 always holds.
pub fn entropy_shaped_advantage(advantages: &Mat, entropy: &Mat, mask: &Mat, alpha: f32, kappa: f32) -> Result<Mat> {
    advantages.expect_same_shape(entropy, "entropy")?;
    advantages.expect_same_shape(mask, "mask")?;
    if alpha.is_nan() || alpha <= 0.0 {
        return Err(AdvantageError::InvalidParam {
            name: "entropy.alpha",
            value: alpha as f64,
            why: "α must be > 0 (§5.1)",
        });
    }
    if kappa.is_nan() || kappa <= 1.0 {
        return Err(AdvantageError::InvalidParam {
            name: "entropy.kappa",
            value: kappa as f64,
            why: "κ must be > 1, otherwise ψ can flip the sign of a negative advantage (§5.1)",
        });
    }
    Ok(advantages.map_masked(mask, |r, t, a| {
        a + entropy_bonus_psi(a, entropy.get(r, t), alpha, kappa)
    }))
}

/// `ψ(H) = min(α·max(H,0), |A|/κ)` (§5.1).
pub fn entropy_bonus_psi(advantage: f32, entropy: f32, alpha: f32, kappa: f32) -> f32 {
    (alpha * entropy.max(0.0)).min(advantage.abs() / kappa)
}

/// Per-response log-perplexity `−Σ_t m·logp_old / Σ_t m` (§6.4 `logPPL_i`), shape `(B,)`.
pub fn log_perplexity(old_logp: &Mat, mask: &Mat) -> Result<Vec<f32>> {
    Ok(masked_row_means(old_logp, mask)?.into_iter().map(|v| -v).collect())
}

/// PPL z-scores per response (§6.4): within each group keep the values inside
/// `[Q1 − 1.5·IQR, Q3 + 1.5·IQR]` (linear-interpolated quartiles, as torch/numpy), take their
/// mean μ and population std σ (σ < 1e-6 → 1), and return `z_i = (logPPL_i − μ)/σ` for every
/// response, outliers included (they are only left out of the statistics).
pub fn ppl_z_scores(log_ppl: &[f32], groups: &[usize]) -> Result<Vec<f32>> {
    expect_len(groups.len(), log_ppl.len(), "groups")?;
    let mut z = vec![0.0f32; log_ppl.len()];
    for members in group_members(groups).values() {
        let values: Vec<f64> = members.iter().map(|&i| log_ppl[i] as f64).collect();
        let (mean, std) = iqr_filtered_mean_std(&values);
        for (&i, &v) in members.iter().zip(&values) {
            z[i] = ((v - mean) / std) as f32;
        }
    }
    Ok(z)
}

fn iqr_filtered_mean_std(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (q1, q3) = (linear_quantile(&sorted, 0.25), linear_quantile(&sorted, 0.75));
    let (lo, hi) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
    let mut kept: Vec<f64> = values.iter().copied().filter(|&v| v >= lo && v <= hi).collect();
    if kept.is_empty() {
        kept = values.to_vec(); // only NaNs can empty the filter; then fall back to all values
    }
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let std = (kept.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / kept.len() as f64).sqrt();
    (mean, if std < 1e-6 { 1.0 } else { std })
}

/// Quantile with linear interpolation between order statistics (numpy's default method).
fn linear_quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// PPL-based shaping, the lab's recommended form (§6.4):
/// `A'_{i,t} = A_{i,t} · clamp(1 − α·z_i, 0.8, 1.2)` with `z` from [`ppl_z_scores`] on the
/// rollout-time log-probs. Low-perplexity responses get a larger |A|. For the code's
/// `use_ppl_high` ablation (`1 + α·z`), pass a negative α.
pub fn ppl_shaped_advantage(advantages: &Mat, old_logp: &Mat, mask: &Mat, groups: &[usize], alpha: f32) -> Result<Mat> {
    advantages.expect_same_shape(mask, "mask")?;
    let z = ppl_z_scores(&log_perplexity(old_logp, mask)?, groups)?;
    Ok(advantages.map_masked(mask, |r, _, a| a * (1.0 - alpha * z[r]).clamp(0.8, 1.2)))
}

/// Position-based bonus (§6.4, RUC `add_loaction_bonus`): relative position
/// `p_t = (cumsum(m)_t − 1)/max(Σm, 1)`, `bonus_t = α·sigmoid(k(p_t − 0.5))`,
/// `ψ_t = min(bonus_t, cap·|A_t|)` (cap = 0.5 in the code, i.e. κ = 2) and
/// `A'_t = A_t + sign(A_t)·ψ_t`: |A| grows toward the end of the response, the sign is kept.
pub fn position_shaped_advantage(advantages: &Mat, mask: &Mat, alpha: f32, steepness: f32, cap: f32) -> Result<Mat> {
    advantages.expect_same_shape(mask, "mask")?;
    let mut out = Mat::zeros(mask.rows, mask.cols);
    for r in 0..mask.rows {
        let length = mask.row(r).iter().map(|&m| m as f64).sum::<f64>().max(1.0);
        let mut cumulative = 0.0f64;
        for t in 0..mask.cols {
            let m = mask.get(r, t) as f64;
            cumulative += m;
            if m == 0.0 {
                continue;
            }
            let position = (cumulative - 1.0) / length;
            let bonus = alpha as f64 / (1.0 + (-(steepness as f64) * (position - 0.5)).exp());
            let a = advantages.get(r, t) as f64;
            let psi = bonus.min(cap as f64 * a.abs());
            out.row_mut(r)[t] = (a + a.signum() * psi) as f32;
        }
    }
    Ok(out)
}

/// A half-open window of global steps `start < step < end` in which a shaping is active. The
/// RUC trainer hard-codes 200 < step < 300 for the position bonus (§6.4); here it is config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepWindow {
    pub start: u64,
    pub end: u64,
}

impl StepWindow {
    pub fn contains(&self, step: u64) -> bool {
        self.start < step && step < self.end
    }
}

/// STILL-3 dynamic KL annealing (§7.1): cosine decay
/// `β(step) = β_min + (β_0 − β_min)·½(1 + cos(π·step/horizon))` for `step < horizon`,
/// `β_min` afterwards (β_0 = 1e-3, β_min = 0, horizon = 500 in STILL-3).
pub fn cosine_kl_coef(step: u64, beta_start: f64, beta_min: f64, horizon: u64) -> f64 {
    if step >= horizon {
        return beta_min;
    }
    let progress = step as f64 / horizon as f64;
    beta_min + (beta_start - beta_min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
#[path = "advantage_tests.rs"]
mod tests;
