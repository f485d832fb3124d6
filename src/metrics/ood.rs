//! OOD detection metrics and the Mahalanobis score of research/synth-spec.md §5.4.
//!
//! Labels: ID = 0, OOD = 1, and a higher score means "more OOD". AUROC is the probability
//! that a random OOD text outscores a random ID text (ties count one half), which equals
//! scikit-learn's `roc_auc_score`. FPR95 is the share of ID texts flagged at the largest
//! threshold that still flags at least 95% of the OOD texts (§5.8's definition).

use anyhow::{bail, Result};

/// Why a pair of score sets cannot be compared.
fn check_sets(id: &[f64], ood: &[f64]) -> Result<()> {
    if id.is_empty() || ood.is_empty() {
        bail!(
            "AUROC needs both classes: {} ID and {} OOD scores (a single class has no ROC curve)",
            id.len(),
            ood.len()
        );
    }
    if let Some(x) = id.iter().chain(ood).find(|x| !x.is_finite()) {
        bail!("a score is {x}; OOD scores must be finite");
    }
    Ok(())
}

/// Area under the ROC curve by counting ordered pairs: O((n + m) log(n + m)).
pub fn auroc(id: &[f64], ood: &[f64]) -> Result<f64> {
    check_sets(id, ood)?;
    let mut sorted_id = id.to_vec();
    sorted_id.sort_by(f64::total_cmp);
    let mut wins = 0.0;
    for &s in ood {
        // ID scores strictly below s win a whole pair; equal ones half.
        let below = sorted_id.partition_point(|&x| x < s);
        let not_above = sorted_id.partition_point(|&x| x <= s);
        wins += below as f64 + 0.5 * (not_above - below) as f64;
    }
    Ok(wins / (id.len() as f64 * ood.len() as f64))
}

/// The false-positive rate at the largest threshold `τ` whose true-positive rate
/// (`#{ood ≥ τ} / #ood`) is at least 0.95: `#{id ≥ τ} / #id`.
pub fn fpr_at_95_tpr(id: &[f64], ood: &[f64]) -> Result<f64> {
    check_sets(id, ood)?;
    let mut sorted_ood = ood.to_vec();
    // Descending: the k-th largest OOD score is the largest threshold flagging k of them.
    sorted_ood.sort_by(|a, b| b.total_cmp(a));
    let needed = (0.95 * ood.len() as f64 - 1e-9).ceil().max(1.0) as usize;
    let tau = sorted_ood[needed - 1];
    Ok(id.iter().filter(|&&x| x >= tau).count() as f64 / id.len() as f64)
}

/// The Mahalanobis distance of §5.4: one class-agnostic mean and the pseudo-inverse of the
/// maximum-likelihood covariance (scikit-learn's `EmpiricalCovariance().precision_`), fitted
/// on ID training features.
#[derive(Clone, Debug)]
pub struct Mahalanobis {
    mean: Vec<f64>,
    /// d × d, row-major.
    precision: Vec<f64>,
    dim: usize,
}

impl Mahalanobis {
    /// Fits on `bank` (n vectors of one dimension d).
    pub fn fit(bank: &[Vec<f32>]) -> Result<Mahalanobis> {
        let Some(first) = bank.first() else { bail!("the Mahalanobis bank is empty: no ID training texts") };
        let d = first.len();
        if bank.iter().any(|v| v.len() != d) {
            bail!("the Mahalanobis bank mixes feature sizes");
        }
        let n = bank.len() as f64;
        let mut mean = vec![0.0; d];
        for v in bank {
            for (m, &x) in mean.iter_mut().zip(v) {
                *m += x as f64 / n;
            }
        }
        let mut cov = vec![0.0; d * d];
        for v in bank {
            let c: Vec<f64> = v.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect();
            for i in 0..d {
                for j in i..d {
                    cov[i * d + j] += c[i] * c[j] / n;
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                cov[i * d + j] = cov[j * d + i];
            }
        }
        Ok(Mahalanobis { mean, precision: pinv_symmetric(&cov, d), dim: d })
    }

    /// `(h − μ)ᵀ Σ⁺ (h − μ)`.
    pub fn distance(&self, h: &[f32]) -> f64 {
        let c: Vec<f64> = h.iter().zip(&self.mean).map(|(&x, m)| x as f64 - m).collect();
        let d = self.dim;
        (0..d).map(|i| c[i] * (0..d).map(|j| self.precision[i * d + j] * c[j]).sum::<f64>()).sum()
    }
}

/// The §5.4 mix: `λ · recon + (1 − λ) · maha`.
pub fn mixed_score(recon: f64, maha: f64, lambda: f64) -> f64 {
    lambda * recon + (1.0 - lambda) * maha
}

/// Moore–Penrose pseudo-inverse of a symmetric d × d matrix by cyclic Jacobi rotations:
/// eigenvalues below `d · ε · max|λ|` count as zero, as `scipy.linalg.pinvh` does, so a bank
/// with fewer texts than dimensions still gets a precision.
fn pinv_symmetric(a: &[f64], d: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d).flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| m[i * d + j].powi(2)).sum();
        let diag: f64 = (0..d).map(|i| m[i * d + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * d + q] - m[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (mkp, mkq) = (m[k * d + p], m[k * d + q]);
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let (mpk, mqk) = (m[p * d + k], m[q * d + k]);
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let eig: Vec<f64> = (0..d).map(|i| m[i * d + i]).collect();
    let cutoff = d as f64 * f64::EPSILON * eig.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
    let mut out = vec![0.0; d * d];
    for (k, &lam) in eig.iter().enumerate() {
        if lam.abs() <= cutoff {
            continue;
        }
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] += v[i * d + k] * v[j * d + k] / lam;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_sets() -> (Vec<f64>, Vec<f64>) {
        let id: Vec<f64> = (1..=10).map(|i| i as f64 / 10.0).collect();
        let ood = vec![0.35, 0.55, 0.75, 0.95, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6];
        (id, ood)
    }

    #[test]
    fn auroc_and_fpr95_match_the_spec_test_vector() {
        let (id, ood) = spec_sets();
        assert!((auroc(&id, &ood).unwrap() - 0.84).abs() < 1e-12);
        assert!((fpr_at_95_tpr(&id, &ood).unwrap() - 0.70).abs() < 1e-12);
    }

    #[test]
    fn auroc_by_brute_force_with_ties() {
        // An independent count over every pair, ties as halves.
        let mut rng = crate::rng::Rng::new(3);
        let id: Vec<f64> = (0..37).map(|_| (rng.below(20) as f64) / 4.0).collect();
        let ood: Vec<f64> = (0..23).map(|_| (rng.below(24) as f64) / 4.0).collect();
        let mut pairs = 0.0;
        for &o in &ood {
            for &i in &id {
                pairs += if o > i { 1.0 } else if o == i { 0.5 } else { 0.0 };
            }
        }
        assert!((auroc(&id, &ood).unwrap() - pairs / (37.0 * 23.0)).abs() < 1e-12);
        // Perfect separation and its mirror.
        assert_eq!(auroc(&[0.0, 1.0], &[2.0, 3.0]).unwrap(), 1.0);
        assert_eq!(auroc(&[2.0, 3.0], &[0.0, 1.0]).unwrap(), 0.0);
        assert_eq!(fpr_at_95_tpr(&[0.0, 1.0], &[2.0, 3.0]).unwrap(), 0.0);
    }

    #[test]
    fn a_single_class_or_nan_is_an_error() {
        let err = auroc(&[], &[1.0]).unwrap_err().to_string();
        assert!(err.contains("0 ID and 1 OOD"), "{err}");
        assert!(fpr_at_95_tpr(&[1.0], &[]).is_err());
        assert!(auroc(&[1.0], &[f64::NAN]).unwrap_err().to_string().contains("NaN"));
    }

    #[test]
    fn mahalanobis_of_a_known_gaussian_bank() {
        // Bank: (±1, 0) and (0, ±2), mean 0, covariance diag(0.5, 2) (MLE, divide by n).
        let bank = vec![vec![1.0, 0.0], vec![-1.0, 0.0], vec![0.0, 2.0], vec![0.0, -2.0]];
        let m = Mahalanobis::fit(&bank).unwrap();
        // (1, 1): 1²/0.5 + 1²/2 = 2.5.
        assert!((m.distance(&[1.0, 1.0]) - 2.5).abs() < 1e-9);
        // A rotated, correlated bank: check Σ⁺ against the 2×2 inverse by hand.
        let bank = vec![vec![1.0, 1.0], vec![-1.0, -1.0], vec![1.0, -0.5], vec![-1.0, 0.5]];
        // Σ = [[1, 0.25], [0.25, 0.625]]; det = 0.5625; Σ⁻¹ = [[0.625, -0.25], [-0.25, 1]] / 0.5625.
        let m = Mahalanobis::fit(&bank).unwrap();
        let want = (0.625 * 4.0 - 2.0 * 0.25 * 2.0 * 1.0 + 1.0) / 0.5625;
        assert!((m.distance(&[2.0, 1.0]) - want).abs() < 1e-9, "{}", m.distance(&[2.0, 1.0]));
        // A singular bank (all on a line) gets the pseudo-inverse: distance along the line only.
        let line = vec![vec![1.0, 1.0], vec![-1.0, -1.0]];
        let m = Mahalanobis::fit(&line).unwrap();
        // Σ = [[1,1],[1,1]] = 2·uuᵀ with u = (1,1)/√2; Σ⁺ = uuᵀ/2; (2, 0): (2/√2)²/2 = 1.
        assert!((m.distance(&[2.0, 0.0]) - 1.0).abs() < 1e-9);
        assert!(Mahalanobis::fit(&[]).is_err());
        assert!((mixed_score(2.0, 10.0, 0.99) - (1.98 + 0.1)).abs() < 1e-12);
    }
}
