//! Exploration metrics: token entropy, rollout branching factor, unsolvable sets
//! (docs/METHODS.md §6.1, §6.2, §8.2).
//!
//! The per-step functions take one step's logits or probabilities so the generator can call
//! them while sampling; the summaries fold per-token values of whole responses.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The nucleus mass used for the rollout branching factor in the exploration report (§6.1).
pub const RBF_TOP_P: f64 = 0.95;

/// Softmax probabilities of one step's logits, computed in f64 with the max subtracted so
/// large logits cannot overflow.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// Entropy in nats of a probability vector, `−Σ p ln p` (0·ln 0 = 0). The vector is
/// renormalised by its sum so rounding in the caller does not bias the value.
pub fn entropy_from_probs(probs: &[f32]) -> f64 {
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    if total <= 0.0 {
        return 0.0;
    }
    probs
        .iter()
        .map(|&p| p as f64 / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum()
}

/// Entropy in nats of the softmax of one step's logits (§0 `H_t`), computed stably as
/// `logsumexp(l) − Σ softmax(l)·l` so no probability has to be logged.
pub fn entropy_from_logits(logits: &[f32]) -> f64 {
    if logits.is_empty() {
        return 0.0;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut z = 0.0;
    let mut weighted = 0.0;
    for &l in logits {
        let shifted = l as f64 - max;
        let e = shifted.exp();
        z += e;
        weighted += e * shifted;
    }
    z.ln() - weighted / z
}

/// Rollout branching factor of one step (§6.1): `min{k : Σ_{j≤k} p_(j) ≥ top_p}` with the
/// probabilities sorted in descending order, i.e. the size of the top-p nucleus.
///
/// The target is `top_p` times the vector's own sum, so a vector whose mass is slightly off 1
/// from rounding still yields the nucleus it means. An empty vector has no branches (0).
pub fn rbf_from_probs(probs: &[f32], top_p: f64) -> usize {
    nucleus_size(probs.iter().map(|&p| p as f64).collect(), top_p)
}

/// [`rbf_from_probs`] of the softmax of one step's logits.
pub fn rbf_from_logits(logits: &[f32], top_p: f64) -> usize {
    nucleus_size(softmax(logits), top_p)
}

/// Entropy and branching factor of one generation step, from one softmax.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// `H_t` in nats.
    pub entropy: f64,
    /// `RBF_t` at the requested top-p.
    pub rbf: usize,
}

/// What the generator calls once per sampled token: `H_t` and `RBF_t` of that step's logits.
pub fn step_stats(logits: &[f32], top_p: f64) -> StepStats {
    StepStats { entropy: entropy_from_logits(logits), rbf: rbf_from_logits(logits, top_p) }
}

/// Size of the smallest set of largest probabilities whose mass reaches `top_p` of the total.
///
/// Vocabularies run to 150k entries while nuclei are usually a handful of tokens, so instead
/// of sorting everything this partitions out the top k (k = 16, 64, 256, …) in linear time and
/// sorts only those, growing k until their mass reaches the target.
fn nucleus_size(mut probs: Vec<f64>, top_p: f64) -> usize {
    let n = probs.len();
    if n == 0 {
        return 0;
    }
    let total: f64 = probs.iter().sum();
    // A tiny slack keeps a mass of exactly top_p (e.g. 0.5 + 0.45) from missing by rounding.
    let target = top_p * total - 1e-12;
    let descending = |a: &f64, b: &f64| b.total_cmp(a);
    let mut k = n.min(16);
    loop {
        if k < n {
            probs.select_nth_unstable_by(k - 1, descending); // probs[..k] = the k largest
        }
        let top = &mut probs[..k];
        if top.iter().sum::<f64>() >= target || k == n {
            top.sort_unstable_by(descending);
            return prefix_reaching(top, target);
        }
        k = n.min(k * 4);
    }
}

/// Length of the shortest prefix of descending `sorted` whose sum reaches `target`.
fn prefix_reaching(sorted: &[f64], target: f64) -> usize {
    let mut mass = 0.0;
    for (i, p) in sorted.iter().enumerate() {
        mass += p;
        if mass >= target {
            return i + 1;
        }
    }
    sorted.len()
}

/// Mean RBF over the steps of one response, `RBF(y) = mean_t RBF_t` (§6.1). Empty → 0.
pub fn mean_rbf(per_step: &[usize]) -> f64 {
    if per_step.is_empty() {
        return 0.0;
    }
    per_step.iter().sum::<usize>() as f64 / per_step.len() as f64
}

/// Token entropies of one response and whether the verifier accepted it.
#[derive(Clone, Copy, Debug)]
pub struct ResponseEntropy<'a> {
    pub entropies: &'a [f32],
    pub correct: bool,
}

/// Entropy summaries for a batch (§8.2): token-mean over all tokens, the correct/incorrect
/// split (§6.2) and the mean by relative position in `bins` equal bins (the U-shape, §6.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntropySummary {
    /// Mean over every token of every response (verl's token-mean `actor/entropy`).
    pub mean: f64,
    /// Token-mean over correct / incorrect responses; None when there are no such tokens.
    pub mean_correct: Option<f64>,
    pub mean_incorrect: Option<f64>,
    /// Mean entropy of the tokens whose relative position falls in each bin; None if empty.
    pub by_position: Vec<Option<f64>>,
    /// Token count in each position bin.
    pub position_counts: Vec<usize>,
    /// The entropy above which the top 20% of tokens lie (nearest-rank 80th percentile): the
    /// "forking token" cutoff of §8.2. None without tokens.
    pub top20_threshold: Option<f64>,
    pub tokens: usize,
}

/// Nearest-rank percentile `q` ∈ (0, 1] of `values`; None when empty.
pub fn percentile(values: &[f32], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<f32> = values.to_vec();
    sorted.sort_unstable_by(|a, b| a.total_cmp(b));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64)
}

/// Position bin of token `t` (0-based) in a response of `len` tokens: relative position
/// t/len ∈ [0, 1) mapped to `floor(t·bins/len)`, so each response spreads over all bins.
pub fn position_bin(t: usize, len: usize, bins: usize) -> usize {
    (t * bins / len).min(bins - 1)
}

/// Summarise token entropies; `bins` must be ≥ 1 (0 is treated as 1).
pub fn summarize_entropy(responses: &[ResponseEntropy<'_>], bins: usize) -> EntropySummary {
    let bins = bins.max(1);
    let mut bin_sum = vec![0.0f64; bins];
    let mut bin_count = vec![0usize; bins];
    let (mut sum, mut count) = (0.0f64, 0usize);
    let (mut sum_ok, mut count_ok) = (0.0f64, 0usize);
    let (mut sum_bad, mut count_bad) = (0.0f64, 0usize);
    for r in responses {
        let len = r.entropies.len();
        for (t, &h) in r.entropies.iter().enumerate() {
            let h = h as f64;
            sum += h;
            count += 1;
            if r.correct {
                sum_ok += h;
                count_ok += 1;
            } else {
                sum_bad += h;
                count_bad += 1;
            }
            let b = position_bin(t, len, bins);
            bin_sum[b] += h;
            bin_count[b] += 1;
        }
    }
    let all: Vec<f32> = responses.iter().flat_map(|r| r.entropies.iter().copied()).collect();
    let mean_of = |s: f64, c: usize| if c == 0 { None } else { Some(s / c as f64) };
    EntropySummary {
        mean: mean_of(sum, count).unwrap_or(0.0),
        mean_correct: mean_of(sum_ok, count_ok),
        mean_incorrect: mean_of(sum_bad, count_bad),
        by_position: bin_sum.iter().zip(&bin_count).map(|(&s, &c)| mean_of(s, c)).collect(),
        position_counts: bin_count,
        top20_threshold: percentile(&all, 0.8),
        tokens: count,
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExploreError {
    #[error(
        "problem '{id}' has only {have} rollouts but the {k}-rollout unsolvable set needs at \
         least k = {k}; sample more rollouts or lower k"
    )]
    TooFewRollouts { id: String, have: usize, k: usize },
}

/// The k-rollout unsolvable set (§6.1): ids of problems with no correct answer among their
/// first `k` rollouts. Each entry is (problem id, per-rollout correctness in sample order).
pub fn unsolvable_set(
    results: &[(String, Vec<bool>)],
    k: usize,
) -> Result<BTreeSet<String>, ExploreError> {
    let mut set = BTreeSet::new();
    for (id, correct) in results {
        if correct.len() < k {
            return Err(ExploreError::TooFewRollouts { id: id.clone(), have: correct.len(), k });
        }
        if !correct[..k].iter().any(|&c| c) {
            set.insert(id.clone());
        }
    }
    Ok(set)
}

/// How two models' unsolvable sets overlap (the Venn diagram of §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsolvableOverlap {
    pub only_a: BTreeSet<String>,
    pub only_b: BTreeSet<String>,
    pub both: BTreeSet<String>,
}

impl UnsolvableOverlap {
    /// Whether A's set lies inside B's (the "nested boundary" hypothesis the report rejects).
    pub fn a_within_b(&self) -> bool {
        self.only_a.is_empty()
    }

    /// Jaccard index |A∩B| / |A∪B|; 1 when both sets are empty.
    pub fn jaccard(&self) -> f64 {
        let union = self.only_a.len() + self.only_b.len() + self.both.len();
        if union == 0 {
            1.0
        } else {
            self.both.len() as f64 / union as f64
        }
    }
}

pub fn compare_unsolvable(a: &BTreeSet<String>, b: &BTreeSet<String>) -> UnsolvableOverlap {
    UnsolvableOverlap {
        only_a: a.difference(b).cloned().collect(),
        only_b: b.difference(a).cloned().collect(),
        both: a.intersection(b).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn entropy_of_hand_built_distributions() {
        // Uniform over 4: ln 4. One-hot: 0. (1/2, 1/4, 1/4): 1.5 ln 2.
        assert!(close(entropy_from_probs(&[0.25; 4]), 4f64.ln()));
        assert!(close(entropy_from_probs(&[0.0, 1.0, 0.0]), 0.0));
        assert!(close(entropy_from_probs(&[0.5, 0.25, 0.25]), 1.5 * 2f64.ln()));
        // Logits [0, 0, ln 2] give (1/4, 1/4, 1/2), the same entropy; adding a constant
        // (even a huge one) changes nothing.
        let l2 = 2f32.ln();
        assert!((entropy_from_logits(&[0.0, 0.0, l2]) - 1.5 * 2f64.ln()).abs() < 1e-6);
        assert!((entropy_from_logits(&[1000.0, 1000.0, 1000.0 + l2]) - 1.5 * 2f64.ln()).abs() < 1e-4);
        assert!(close(entropy_from_logits(&[3.0; 8]), 8f64.ln()));
    }

    #[test]
    fn rbf_counts_the_top_p_nucleus() {
        // Sorted: 0.6, 0.3, 0.05, 0.05 → cumulative 0.6, 0.9, 0.95 → 3 tokens reach 0.95.
        assert_eq!(rbf_from_probs(&[0.05, 0.3, 0.6, 0.05], 0.95), 3);
        // One token with 0.96 is enough on its own.
        assert_eq!(rbf_from_probs(&[0.01, 0.96, 0.02, 0.01], 0.95), 1);
        // Uniform over 10: 0.1·k ≥ 0.95 first at k = 10.
        assert_eq!(rbf_from_probs(&[0.1; 10], 0.95), 10);
        // Uniform over 20: k = 19 reaches exactly 0.95.
        assert_eq!(rbf_from_probs(&[0.05; 20], 0.95), 19);
        // Logits of equal value over 4 tokens with p = 0.5: two tokens.
        assert_eq!(rbf_from_logits(&[1.0, 1.0, 1.0, 1.0], 0.5), 2);
        // A dominant logit: softmax([10, 0, 0]) puts 0.99991 on the first token.
        assert_eq!(rbf_from_logits(&[10.0, 0.0, 0.0], RBF_TOP_P), 1);
        assert_eq!(rbf_from_probs(&[], 0.95), 0);
        assert!(close(mean_rbf(&[1, 3, 2, 2]), 2.0));
        assert_eq!(mean_rbf(&[]), 0.0);
    }

    /// The partial-selection nucleus must agree with a full sort on every kind of vector.
    #[test]
    fn nucleus_matches_full_sort_on_random_vectors() {
        let mut rng = crate::rng::Rng::new(11);
        for trial in 0..200 {
            let n = 1 + rng.usize(3000);
            let temperature = [0.1, 1.0, 3.0, 10.0][trial % 4];
            let logits: Vec<f32> = (0..n).map(|_| (rng.normal() * temperature) as f32).collect();
            let probs = softmax(&logits);
            // The total in the vector's own order, as the implementation sums it; at p = 1 the
            // last few tail tokens depend on that rounding.
            let total: f64 = probs.iter().sum();
            let mut sorted = probs;
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            for top_p in [0.5, 0.9, RBF_TOP_P, 1.0] {
                let want = prefix_reaching(&sorted, top_p * total - 1e-12);
                assert_eq!(rbf_from_logits(&logits, top_p), want, "n={n} T={temperature} p={top_p}");
            }
        }
    }

    #[test]
    fn step_stats_combines_entropy_and_rbf() {
        let s = step_stats(&[0.0; 8], 0.95);
        assert!(close(s.entropy, 8f64.ln()));
        assert_eq!(s.rbf, 8);
    }

    #[test]
    fn nearest_rank_percentile() {
        let v = [5.0f32, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.8), Some(4.0)); // rank ceil(4.0) = 4
        assert_eq!(percentile(&v, 1.0), Some(5.0));
        assert_eq!(percentile(&v, 0.01), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn entropy_summary_splits_and_bins() {
        let a = [1.0f32, 2.0, 3.0, 4.0]; // correct, 4 tokens
        let b = [10.0f32, 20.0]; // incorrect, 2 tokens
        let s = summarize_entropy(
            &[ResponseEntropy { entropies: &a, correct: true }, ResponseEntropy { entropies: &b, correct: false }],
            2,
        );
        assert_eq!(s.tokens, 6);
        assert!(close(s.mean, 40.0 / 6.0));
        assert!(close(s.mean_correct.unwrap(), 2.5));
        assert!(close(s.mean_incorrect.unwrap(), 15.0));
        // Bin 0 (first half): a[0], a[1], b[0] → (1+2+10)/3; bin 1: a[2], a[3], b[1] → 27/3.
        assert_eq!(s.position_counts, vec![3, 3]);
        assert!(close(s.by_position[0].unwrap(), 13.0 / 3.0));
        assert!(close(s.by_position[1].unwrap(), 9.0));
        // Sorted 1,2,3,4,10,20: rank ceil(0.8·6) = 5 → 10.
        assert_eq!(s.top20_threshold, Some(10.0));
        // More bins than tokens leaves some bins empty rather than inventing values.
        let s = summarize_entropy(&[ResponseEntropy { entropies: &b, correct: false }], 4);
        assert_eq!(s.position_counts, vec![1, 0, 1, 0]);
        assert_eq!(s.by_position[1], None);
        assert_eq!(s.mean_correct, None);
    }

    #[test]
    fn position_bins_cover_every_bin_once_for_long_responses() {
        let hits: Vec<usize> = (0..10).map(|t| position_bin(t, 10, 5)).collect();
        assert_eq!(hits, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(position_bin(0, 1, 5), 0);
    }

    #[test]
    fn unsolvable_sets_and_overlap() {
        let a = vec![
            ("p1".to_string(), vec![false, false, true]), // solved only at rollout 3
            ("p2".to_string(), vec![false, false, false]),
            ("p3".to_string(), vec![true, false, false]),
        ];
        let u2 = unsolvable_set(&a, 2).unwrap();
        assert_eq!(u2, ["p1", "p2"].iter().map(|s| s.to_string()).collect());
        let u3 = unsolvable_set(&a, 3).unwrap();
        assert_eq!(u3, ["p2"].iter().map(|s| s.to_string()).collect());
        let err = unsolvable_set(&a, 4).unwrap_err();
        assert!(err.to_string().contains("'p1' has only 3 rollouts"), "{err}");

        let b: BTreeSet<String> = ["p2", "p4"].iter().map(|s| s.to_string()).collect();
        let o = compare_unsolvable(&u2, &b);
        assert_eq!(o.only_a, ["p1".to_string()].into_iter().collect());
        assert_eq!(o.only_b, ["p4".to_string()].into_iter().collect());
        assert_eq!(o.both, ["p2".to_string()].into_iter().collect());
        assert!(!o.a_within_b());
        assert!(close(o.jaccard(), 1.0 / 3.0));
        assert!(compare_unsolvable(&u3, &b).a_within_b());
    }
}
