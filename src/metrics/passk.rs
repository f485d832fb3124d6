//! pass@k, avg@n and maj@n (docs/METHODS.md §8.1).
//!
//! pass@k uses the unbiased estimator of Chen et al. (2021): from n samples with c correct,
//! the probability that a random size-k subset holds at least one correct sample,
//! `1 − C(n−c, k) / C(n, k)`. The binomials overflow long before n = 256, so it is computed
//! in the numerically stable product form `1 − Π_{i=n−c+1}^{n} (1 − k/i)`, which is the same
//! quantity after cancelling factorials (the human-eval reference does the same).

use super::Sample;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassKError {
    #[error(
        "pass@{k} needs at least k samples per problem but a problem has only n = {n}: \
         k must be ≤ n samples; sample more responses per problem or drop k = {k} from the list"
    )]
    KExceedsSamples { k: usize, n: usize },
    #[error("pass@k needs k ≥ 1 (got k = 0); use k from 1 up to the number of samples")]
    ZeroK,
    #[error("a problem reports c = {c} correct out of only n = {n} samples; c must be ≤ n")]
    CorrectExceedsSamples { c: usize, n: usize },
    #[error("no problems to aggregate; evaluate at least one problem with at least one sample")]
    NoProblems,
    #[error("problem {index} has no samples; every problem needs n ≥ 1 samples")]
    NoSamples { index: usize },
}

/// Unbiased pass@k for one problem with `n` samples of which `c` are correct (§8.1).
///
/// Returns 1 when `n − c < k` (every size-k subset must contain a correct sample) and an
/// error when `k > n` (the estimator is undefined: there is no size-k subset).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, PassKError> {
    if k == 0 {
        return Err(PassKError::ZeroK);
    }
    if c > n {
        return Err(PassKError::CorrectExceedsSamples { c, n });
    }
    if k > n {
        return Err(PassKError::KExceedsSamples { k, n });
    }
    if n - c < k {
        return Ok(1.0);
    }
    // Π_{i=n−c+1}^{n} (1 − k/i): the chance that a random k-subset misses all c correct ones.
    let all_wrong: f64 = ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Ok(1.0 - all_wrong)
}

/// avg@n: the fraction of correct samples, i.e. pass@1 estimated from all n samples.
/// An empty slice has no accuracy; it returns 0 so callers never see NaN.
pub fn avg_at_n(samples: &[Sample]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().filter(|s| s.correct).count() as f64 / samples.len() as f64
}

/// The majority answer among samples that produced a canonical answer.
///
/// Tie rule: among answers sharing the highest count, the one whose first occurrence comes
/// earliest in sample order wins. This is deterministic, does not depend on hash order, and
/// matches "first come, first served" when two answers are equally popular. Samples with no
/// canonical answer do not vote. Returns the index of the first sample carrying the winner.
pub fn majority_vote(samples: &[Sample]) -> Option<usize> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new(); // answer → (count, first index)
    for (i, s) in samples.iter().enumerate() {
        if let Some(a) = s.canonical.as_deref() {
            counts.entry(a).or_insert((0, i)).0 += 1;
        }
    }
    counts
        .values()
        .max_by(|(ca, ia), (cb, ib)| ca.cmp(cb).then(ib.cmp(ia)))
        .map(|&(_, first)| first)
}

/// maj@n for one problem: 1 if the majority answer (see [`majority_vote`]) is correct.
/// The verdict of the first sample carrying the winning answer is used; a verifier gives
/// the same verdict to every sample with the same canonical answer. No votes → 0.
pub fn maj_at_n(samples: &[Sample]) -> f64 {
    match majority_vote(samples) {
        Some(i) if samples[i].correct => 1.0,
        _ => 0.0,
    }
}

/// Scores over a problem set, serialised flat, e.g.
/// `{"problems": 30, "samples": 16, "pass@1": 0.4, "pass@4": 0.7, "avg@16": 0.4, "maj@16": 0.5}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    /// Number of problems averaged over.
    pub problems: usize,
    /// Samples per problem n; when problems differ, the smallest (it names avg@n and maj@n).
    pub samples: usize,
    /// "pass@k" for each requested k, plus "avg@n" and "maj@n"; each is a mean over problems.
    #[serde(flatten)]
    pub scores: BTreeMap<String, f64>,
}

impl PassAtK {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.scores.get(key).copied()
    }
}

/// Mean pass@k for each k in `ks`, avg@n and maj@n over problems (dataset score = mean over
/// problems, §8.1). Every problem needs at least max(ks) samples.
pub fn summarize(problems: &[Vec<Sample>], ks: &[usize]) -> Result<PassAtK, PassKError> {
    if problems.is_empty() {
        return Err(PassKError::NoProblems);
    }
    if let Some(index) = problems.iter().position(Vec::is_empty) {
        return Err(PassKError::NoSamples { index });
    }
    let n_min = problems.iter().map(Vec::len).min().unwrap_or(0);
    let count = problems.len() as f64;
    let mut scores = BTreeMap::new();
    for &k in ks {
        let mut total = 0.0;
        for samples in problems {
            let c = samples.iter().filter(|s| s.correct).count();
            total += pass_at_k(samples.len(), c, k)?;
        }
        scores.insert(format!("pass@{k}"), total / count);
    }
    let avg = problems.iter().map(|p| avg_at_n(p)).sum::<f64>() / count;
    let maj = problems.iter().map(|p| maj_at_n(p)).sum::<f64>() / count;
    scores.insert(format!("avg@{n_min}"), avg);
    scores.insert(format!("maj@{n_min}"), maj);
    Ok(PassAtK { problems: problems.len(), samples: n_min, scores })
}

/// k ∈ {1, 2, 4, …} up to n (and n itself), the grid for large-K pass@k curves (§8.1).
pub fn power_of_two_ks(n: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k <= n)
        .collect();
    if n > 0 && ks.last() != Some(&n) {
        ks.push(n);
    }
    ks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(spec: &[(Option<&str>, bool)]) -> Vec<Sample> {
        spec.iter().map(|&(a, c)| Sample::new(a, c)).collect()
    }

    /// Arbitrary-size unsigned integer, little-endian base 2^32, just enough to compute
    /// binomials exactly as an independent reference for the product form.
    #[derive(Clone, Debug)]
    struct BigUint(Vec<u32>);

    impl BigUint {
        fn one() -> Self {
            BigUint(vec![1])
        }
        fn mul_small(&mut self, m: u32) {
            let mut carry = 0u64;
            for limb in &mut self.0 {
                let v = *limb as u64 * m as u64 + carry;
                *limb = v as u32;
                carry = v >> 32;
            }
            if carry > 0 {
                self.0.push(carry as u32);
            }
        }
        /// Exact division; panics if there is a remainder (binomial steps always divide).
        fn div_small_exact(&mut self, d: u32) {
            let mut rem = 0u64;
            for limb in self.0.iter_mut().rev() {
                let v = (rem << 32) | *limb as u64;
                *limb = (v / d as u64) as u32;
                rem = v % d as u64;
            }
            assert_eq!(rem, 0, "inexact division");
            while self.0.len() > 1 && self.0.last() == Some(&0) {
                self.0.pop();
            }
        }
        fn to_f64(&self) -> f64 {
            self.0.iter().rev().fold(0.0, |acc, &l| acc * 4294967296.0 + l as f64)
        }
        fn is_zero(&self) -> bool {
            self.0.iter().all(|&l| l == 0)
        }
    }

    /// C(n, k) exactly: C(n, j) = C(n, j−1) · (n − j + 1) / j, each step an exact division.
    fn binomial(n: u32, k: u32) -> BigUint {
        if k > n {
            return BigUint(vec![0]);
        }
        let mut b = BigUint::one();
        for j in 1..=k {
            b.mul_small(n - j + 1);
            b.div_small_exact(j);
        }
        b
    }

    /// 1 − C(n−c, k)/C(n, k) with exact binomials; the ratio of two huge integers is taken
    /// as a ratio of their f64 approximations (each within 1 ulp-ish relative error).
    fn exact_pass_at_k(n: u32, c: u32, k: u32) -> f64 {
        let num = binomial(n - c, k);
        if num.is_zero() {
            return 1.0;
        }
        1.0 - num.to_f64() / binomial(n, k).to_f64()
    }

    #[test]
    fn hand_computed_values() {
        // n=4, c=1, k=1: 1/4.
        assert!((pass_at_k(4, 1, 1).unwrap() - 0.25).abs() < 1e-15);
        // n=4, c=1, k=2: 1 − C(3,2)/C(4,2) = 1 − 3/6 = 0.5.
        assert!((pass_at_k(4, 1, 2).unwrap() - 0.5).abs() < 1e-15);
        // n=5, c=2, k=2: 1 − C(3,2)/C(5,2) = 1 − 3/10 = 0.7.
        assert!((pass_at_k(5, 2, 2).unwrap() - 0.7).abs() < 1e-15);
        // n=10, c=3, k=5: 1 − C(7,5)/C(10,5) = 1 − 21/252 = 11/12.
        assert!((pass_at_k(10, 3, 5).unwrap() - 11.0 / 12.0).abs() < 1e-14);
        // c = 0 → 0; n − c < k → exactly 1.
        assert_eq!(pass_at_k(8, 0, 3).unwrap(), 0.0);
        assert_eq!(pass_at_k(8, 6, 3).unwrap(), 1.0);
        assert_eq!(pass_at_k(3, 3, 3).unwrap(), 1.0);
        // pass@1 is the plain accuracy c/n.
        assert!((pass_at_k(16, 5, 1).unwrap() - 5.0 / 16.0).abs() < 1e-15);
    }

    #[test]
    fn errors_explain_what_to_do() {
        let err = pass_at_k(4, 1, 8).unwrap_err();
        assert_eq!(err, PassKError::KExceedsSamples { k: 8, n: 4 });
        let msg = err.to_string();
        assert!(msg.contains("k must be ≤ n samples") && msg.contains("n = 4"), "{msg}");
        assert_eq!(pass_at_k(4, 1, 0).unwrap_err(), PassKError::ZeroK);
        assert_eq!(pass_at_k(4, 5, 1).unwrap_err(), PassKError::CorrectExceedsSamples { c: 5, n: 4 });
    }

    #[test]
    fn product_form_matches_exact_binomials_up_to_n_256() {
        let mut checked = 0;
        for &n in &[1u32, 2, 3, 7, 16, 33, 64, 100, 128, 200, 256] {
            let cs: Vec<u32> = (0..=n).step_by(((n / 9).max(1)) as usize).chain([n, n / 2]).collect();
            for &c in &cs {
                let grid = power_of_two_ks(n as usize).into_iter().map(|k| k as u32);
                for k in grid.chain([3, n / 3 + 1, n]) {
                    if k == 0 || k > n {
                        continue;
                    }
                    let got = pass_at_k(n as usize, c as usize, k as usize).unwrap();
                    let want = exact_pass_at_k(n, c, k);
                    assert!((got - want).abs() < 1e-11, "n={n} c={c} k={k}: {got} vs {want}");
                    assert!((0.0..=1.0).contains(&got));
                    checked += 1;
                }
            }
        }
        assert!(checked > 300, "only {checked} cases");
    }

    #[test]
    fn pass_at_k_is_monotone_in_k_and_c() {
        let n = 64;
        for c in 0..=n {
            let mut prev = 0.0;
            for k in 1..=n {
                let v = pass_at_k(n, c, k).unwrap();
                assert!(v + 1e-12 >= prev, "not monotone in k at c={c} k={k}");
                prev = v;
            }
        }
        for k in [1, 5, 20] {
            let vals: Vec<f64> = (0..=n).map(|c| pass_at_k(n, c, k).unwrap()).collect();
            assert!(vals.windows(2).all(|w| w[1] + 1e-12 >= w[0]));
        }
    }

    #[test]
    fn majority_vote_and_tie_rule() {
        // "7" twice, "5" once: 7 wins, and it is correct.
        let s = samples(&[(Some("5"), false), (Some("7"), true), (None, false), (Some("7"), true)]);
        assert_eq!(majority_vote(&s), Some(1));
        assert_eq!(maj_at_n(&s), 1.0);
        // Tie between "5" (first at 0) and "7" (first at 1): the earlier one, "5", wins.
        let s = samples(&[(Some("5"), false), (Some("7"), true), (Some("7"), true), (Some("5"), false)]);
        assert_eq!(majority_vote(&s), Some(0));
        assert_eq!(maj_at_n(&s), 0.0);
        // Unparsed samples never vote, even when they are the most common.
        let s = samples(&[(None, false), (None, false), (Some("3"), true)]);
        assert_eq!(maj_at_n(&s), 1.0);
        assert_eq!(maj_at_n(&samples(&[(None, false)])), 0.0);
    }

    #[test]
    fn summary_over_problems_has_named_keys_and_round_trips() {
        let p1 = samples(&[(Some("1"), true), (Some("2"), false), (Some("2"), false), (Some("3"), false)]);
        let p2 = samples(&[(Some("9"), true), (Some("9"), true), (Some("9"), true), (Some("8"), false)]);
        let summary = summarize(&[p1, p2], &[1, 2, 4]).unwrap();
        assert_eq!(summary.problems, 2);
        assert_eq!(summary.samples, 4);
        // p1: n=4,c=1; p2: n=4,c=3.
        assert!((summary.get("pass@1").unwrap() - (0.25 + 0.75) / 2.0).abs() < 1e-12);
        assert!((summary.get("pass@2").unwrap() - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        assert!((summary.get("pass@4").unwrap() - 1.0).abs() < 1e-12);
        assert!((summary.get("avg@4").unwrap() - 0.5).abs() < 1e-12);
        // p1's majority is the wrong "2"; p2's is the right "9".
        assert!((summary.get("maj@4").unwrap() - 0.5).abs() < 1e-12);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["pass@2"], serde_json::json!(0.75));
        assert_eq!(json["problems"], serde_json::json!(2));
        let back: PassAtK = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn summary_rejects_too_few_samples() {
        let p = samples(&[(Some("1"), true), (Some("2"), false)]);
        let err = summarize(&[p], &[1, 4]).unwrap_err();
        assert_eq!(err, PassKError::KExceedsSamples { k: 4, n: 2 });
        assert_eq!(summarize(&[], &[1]).unwrap_err(), PassKError::NoProblems);
        assert_eq!(summarize(&[vec![]], &[1]).unwrap_err(), PassKError::NoSamples { index: 0 });
    }

    #[test]
    fn power_of_two_grid() {
        assert_eq!(power_of_two_ks(16), vec![1, 2, 4, 8, 16]);
        assert_eq!(power_of_two_ks(12), vec![1, 2, 4, 8, 12]);
        assert_eq!(power_of_two_ks(1), vec![1]);
        assert!(power_of_two_ks(0).is_empty());
    }
}
