//! The attention softmax with its scale and additive mask fused in, with a backward pass:
//! `softmax(scale · scores + bias)` over the keys.
//!
//! Why: unfused this is a scale, a broadcast add of the mask and candle's differentiable
//! softmax (max, subtract, exp, sum, divide): seven single-threaded ops over the
//! (B, heads, queries, keys) scores per layer, each a fresh copy, and their backward as many
//! again. Here forward and backward are one pass per row, rows in parallel.
//!
//! With `y = softmax(z)`, `z = scale · x + bias`:
//! ```text
//! dx = scale · y ⊙ (g − Σ_j g_j y_j)          (the bias is a constant)
//! ```

use super::{contiguous_f32, fusable, rows_per_task, simd};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

const KERNEL: &str = "masked_softmax";

/// `softmax(scale · scores + bias)` over the last dim. `scores` is (B, H, Lq, S); `bias` is
/// (B, 1, Lq, S), shared by the heads (0 where attention is allowed, a large negative
/// elsewhere). Differentiable in `scores`. Fused on the CPU for f32;
/// [`masked_softmax_reference`] elsewhere.
pub fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, q, s) = scores.dims4()?;
    if bias.dims() != [b, 1, q, s] {
        bail!("masked_softmax: bias is {:?}, expected {:?} for scores {:?}", bias.dims(), [b, 1, q, s], scores.dims());
    }
    if !fusable(&[scores, bias]) {
        return masked_softmax_reference(scores, bias, scale);
    }
    scores.contiguous()?.apply_op2(&bias.contiguous()?, MaskedSoftmax { heads: h, queries: q, scale: scale as f32 })
}

/// The same function from candle primitives.
pub fn masked_softmax_reference(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(bias)?, D::Minus1)
}

struct MaskedSoftmax {
    heads: usize,
    queries: usize,
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (contiguous_f32(s1, l1, KERNEL, "scores")?, contiguous_f32(s2, l2, KERNEL, "bias")?);
        let keys = *l1.dims().last().unwrap_or(&0);
        let (h, q) = (self.heads, self.queries);
        if keys == 0 || x.len() % (h * q * keys) != 0 || bias.len() * h != x.len() {
            bail!("fused masked_softmax: scores {:?} and bias of {} elements do not fit", l1.dims(), bias.len());
        }
        let mut y = vec![0.0f32; x.len()];
        // Score row r is query qi of head hi in batch row bi: r = (bi·H + hi)·Lq + qi.
        y.par_chunks_mut(keys).zip(x.par_chunks(keys)).enumerate().with_min_len(rows_per_task(keys)).for_each(|(r, (y, x))| {
            let (bi, qi) = (r / (h * q), r % q);
            let bias = &bias[(bi * q + qi) * keys..][..keys];
            simd::with_best_isa(|| {
                for ((y, &x), &m) in y.iter_mut().zip(x).zip(bias) {
                    *y = x * self.scale + m;
                }
                let max = simd::max(y);
                // Masked scores sit far below the max; `simd::exp` returns 0 for them.
                y.iter_mut().for_each(|y| *y = simd::exp(*y - max));
                let inv = 1.0 / simd::sum(y);
                y.iter_mut().for_each(|y| *y *= inv);
            })
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, _bias: &Tensor, y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

/// `scale · y ⊙ (g − Σ g·y)` per row, from the forward output `y` and its gradient `g`.
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "masked-softmax-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (contiguous_f32(s1, l1, KERNEL, "output")?, contiguous_f32(s2, l2, KERNEL, "grad")?);
        let keys = *l1.dims().last().unwrap_or(&0);
        if keys == 0 || g.len() != y.len() {
            bail!("fused masked_softmax backward: output {:?}, gradient of {} elements", l1.dims(), g.len());
        }
        let mut dx = vec![0.0f32; y.len()];
        dx.par_chunks_mut(keys).zip(y.par_chunks(keys).zip(g.par_chunks(keys))).with_min_len(rows_per_task(keys)).for_each(
            |(dx, (y, g))| {
                simd::with_best_isa(|| {
                    let dot = simd::dot(y, g);
                    dx.iter_mut().zip(y.iter().zip(g)).for_each(|(d, (&y, &g))| *d = self.scale * y * (g - dot));
                })
            },
        );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{close, uniform};
    use super::*;
    use crate::model::AttnMask;
    use candle_core::{Device, Var};

    #[test]
    fn matches_reference_values_and_gradients_on_a_padded_batch() {
        let mut rng = crate::rng::Rng::new(17);
        let dev = Device::Cpu;
        // A left-padded batch (fully masked pad queries), a decode step (one query over a longer
        // cache) and odd head / key counts.
        let cases: Vec<(AttnMask, usize)> = vec![
            (AttnMask::left_padded(&[5, 2, 4], 5, &dev).unwrap(), 3),
            (AttnMask::new(&[vec![false, true, true, true, true, true, true], vec![true; 7]], 1, &dev).unwrap(), 2),
            (AttnMask::causal(1, 9, &dev).unwrap(), 1),
        ];
        for (mask, heads) in cases {
            let (b, q, s) = (mask.batch(), mask.query_len(), mask.key_len());
            let xs = uniform(&mut rng, b * heads * q * s, -4.0, 4.0);
            let gs = uniform(&mut rng, b * heads * q * s, -1.0, 1.0);
            let run = |fused: bool| {
                let x = Var::from_slice(&xs, (b, heads, q, s), &dev).unwrap();
                let f = if fused { masked_softmax } else { masked_softmax_reference };
                let y = f(x.as_tensor(), mask.bias(), 0.35).unwrap();
                let g = Tensor::from_slice(&gs, (b, heads, q, s), &dev).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(&x).unwrap().clone())
            };
            let (fused, reference) = (run(true), run(false));
            let what = format!("(B {b}, H {heads}, Lq {q}, S {s})");
            close(&fused.0, &reference.0, &format!("{what} y"));
            close(&fused.1, &reference.1, &format!("{what} dx"));
            // Rows sum to one and masked keys get nothing (independent of the reference).
            let y = fused.0.to_dtype(candle_core::DType::F64).unwrap();
            for (row, total) in y.sum(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap().iter().enumerate() {
                assert!((total - 1.0).abs() < 1e-5, "{what} row {row} sums to {total}");
            }
        }
        let mask = AttnMask::left_padded(&[2, 3], 3, &dev).unwrap();
        let y = masked_softmax(&Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &dev).unwrap(), mask.bias(), 1.0).unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Row 0 is one pad then two tokens: its last query sees both real keys equally, the
        // one before only itself.
        assert_eq!(&y[6..9], &[0.0, 0.5, 0.5]);
        assert_eq!(&y[3..6], &[0.0, 1.0, 0.0]);
    }

    #[test]
    fn mismatched_bias_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let bias = Tensor::zeros((2, 1, 4, 5), candle_core::DType::F32, &dev).unwrap();
        let err = masked_softmax(&x, &bias, 1.0).unwrap_err().to_string();
        assert!(err.contains("bias is [2, 1, 4, 5], expected [2, 1, 4, 4]"), "{err}");
    }
}
