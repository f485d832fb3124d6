//! The bi-encoder's loss and retrieval metrics (research/synth-spec.md §6.4).
//!
//! Each query brings its contexts (1 positive, B hard negatives, B other-task negatives);
//! the contexts of the whole batch are stacked and every query's softmax runs over all of
//! them, so the other queries' contexts are in-batch negatives:
//!
//! `L = −mean_i log( exp(q_i·p_i⁺) / Σ_{c ∈ batch contexts} exp(q_i·c) )`
//!
//! [`BatchLayout`] stacks the contexts (each query's negatives shuffled per step, as the
//! reference does); [`info_nce`] is the loss over a (B, C) similarity matrix; [`ranks`]
//! gives accuracy@1 and the positive's rank for the dashboard and the best checkpoint.

use super::scoring::Scored;
use crate::rng::Rng;
use candle_core::{Result, Tensor, D};

/// The contexts of a batch of queries, stacked: `contexts[positive[i]]` is query i's positive.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchLayout {
    /// Pool ids of every context, in stacking order.
    pub contexts: Vec<usize>,
    /// Index of each query's positive in `contexts`.
    pub positive: Vec<usize>,
}

/// Stacks each example's positive, then its hard negatives and other negatives in an order
/// shuffled by `rng`. Examples without a positive are skipped by the caller (they never
/// reach the training split).
pub fn layout(batch: &[&Scored], rng: &mut Rng) -> BatchLayout {
    let mut contexts = Vec::new();
    let mut positive = Vec::new();
    for s in batch {
        let Some(p) = s.positive else { continue };
        positive.push(contexts.len());
        contexts.push(p);
        let mut negs: Vec<usize> = s.hard.iter().chain(&s.negatives).copied().collect();
        rng.shuffle(&mut negs);
        contexts.extend(negs);
    }
    BatchLayout { contexts, positive }
}

/// Similarities (B, C) = queries (B, H) · contexts (C, H)ᵀ.
pub fn similarities(queries: &Tensor, contexts: &Tensor) -> Result<Tensor> {
    queries.matmul(&contexts.t()?)
}

/// Mean InfoNCE over the rows of `sim` (B, C), row i's positive at column `positive[i]`.
pub fn info_nce(sim: &Tensor, positive: &[usize]) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(sim, D::Minus1)?;
    let idx = Tensor::from_vec(positive.iter().map(|&p| p as u32).collect::<Vec<_>>(), (positive.len(), 1), sim.device())?;
    logp.gather(&idx, 1)?.neg()?.mean_all()
}

/// Each row's positive rank among its columns (1 = the top; ties count against the
/// positive, so a constant row ranks it last), from a (B, C) similarity matrix.
pub fn ranks(sim: &[Vec<f32>], positive: &[usize]) -> Vec<usize> {
    sim.iter()
        .zip(positive)
        .map(|(row, &p)| {
            let s = row[p];
            1 + row.iter().enumerate().filter(|&(j, &x)| j != p && x >= s).count()
        })
        .collect()
}

/// (accuracy@1, mean rank) of a list of ranks.
pub fn acc_and_mean_rank(ranks: &[usize]) -> (f64, f64) {
    let n = ranks.len().max(1) as f64;
    (ranks.iter().filter(|&&r| r == 1).count() as f64 / n, ranks.iter().sum::<usize>() as f64 / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn info_nce_matches_a_hand_computation() {
        let dev = Device::Cpu;
        // q0 = (1, 0), q1 = (0, 1); contexts (1, 0), (0, 1), (1, 1).
        // Row 0: logits (1, 0, 1), positive 0: −log(e / (2e + 1)) = ln(2e + 1) − 1; row 1 alike.
        let q = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
        let c = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.]], &dev).unwrap();
        let loss = info_nce(&similarities(&q, &c).unwrap(), &[0, 1]).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss as f64 - 0.861994804058251).abs() < 1e-6, "{loss}");

        // Asymmetric: q0 = (1, 2), q1 = (0.5, −1); contexts (1,0), (0,1), (1,1), (−1,2).
        // Logits row 0: (1, 2, 3, 3), positive 2; row 1: (0.5, −1, −0.5, −2.5), positive 0.
        let q = Tensor::new(&[[1f32, 2.], [0.5, -1.]], &dev).unwrap();
        let c = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.], [-1., 2.]], &dev).unwrap();
        let e = f64::exp;
        let l0 = -(e(3.0) / (e(1.0) + e(2.0) + 2.0 * e(3.0))).ln();
        let l1 = -(e(0.5) / (e(0.5) + e(-1.0) + e(-0.5) + e(-2.5))).ln();
        let loss = info_nce(&similarities(&q, &c).unwrap(), &[2, 0]).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss as f64 - (l0 + l1) / 2.0).abs() < 1e-6, "{loss} vs {}", (l0 + l1) / 2.0);
    }

    #[test]
    fn ranks_count_ties_against_the_positive() {
        let sim = vec![vec![3.0, 1.0, 2.0], vec![1.0, 1.0, 0.0], vec![0.0, 5.0, 4.0]];
        let r = ranks(&sim, &[0, 0, 2]);
        assert_eq!(r, vec![1, 2, 2]);
        assert_eq!(acc_and_mean_rank(&r), (1.0 / 3.0, 5.0 / 3.0));
    }

    #[test]
    fn the_layout_stacks_every_query_s_contexts() {
        let mk = |qid, positive: Option<usize>, hard: Vec<usize>, negatives: Vec<usize>| Scored { qid, task: "t".into(), input: String::new(), answer: String::new(), cands: vec![], positive, hard, negatives, rounds: 1 };
        let a = mk(0, Some(5), vec![6, 7], vec![20]);
        let b = mk(1, Some(9), vec![8], vec![21, 22]);
        let l = layout(&[&a, &b], &mut Rng::new(0));
        assert_eq!(l.positive, vec![0, 4]);
        assert_eq!((l.contexts[0], l.contexts[4]), (5, 9));
        let mut first: Vec<usize> = l.contexts[1..4].to_vec();
        first.sort();
        assert_eq!(first, vec![6, 7, 20]);
        let mut second: Vec<usize> = l.contexts[5..].to_vec();
        second.sort();
        assert_eq!(second, vec![8, 21, 22]);
    }
}
