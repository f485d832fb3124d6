//! Inference-only fast paths of the towers' LayerNorm and quick_gelu: one parallel pass each
//! where the differentiable versions (candle primitives, so they have a backward) make 4 to 9
//! passes, several of them on one thread (candle's unary maps and reductions). Taken only when
//! no operand tracks a gradient (frozen weights and input: generation, evaluation, `bench vlm`);
//! training and the checkpointed recompute keep the primitives, so forward and recompute agree.
//!
//! Why: at the Qwen2-VL-2B shape the tower (32 blocks over 1,024 patches) took 10.2 s of a
//! 13.7 s prefill while its matmuls need about 5 s at gemm's rate (benches/README.md).

use super::super::fused::{contiguous_f32, rows_per_task, simd};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether the fast path applies: f32 on the CPU and no gradient wanted.
pub(super) fn frozen(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32 && t.device().is_cpu() && !t.track_op())
}

/// LayerNorm over the last dim (`None`: a gradient is wanted; use the primitives).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Option<Result<Tensor>> {
    frozen(&[x, weight, bias]).then(|| candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32))
}

/// `x · sigmoid(1.702 x)` (`None`: a gradient is wanted).
pub fn quick_gelu(x: &Tensor) -> Option<Result<Tensor>> {
    frozen(&[x]).then(|| x.contiguous()?.apply_op1_no_bwd(&QuickGelu))
}

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "quick_gelu", "input")?;
        let mut y = vec![0.0f32; x.len()];
        const ROW: usize = 4096;
        y.par_chunks_mut(ROW).zip(x.par_chunks(ROW)).with_min_len(rows_per_task(ROW)).for_each(|(y, x)| {
            simd::with_best_isa(|| y.iter_mut().zip(x).for_each(|(y, &x)| *y = x / (1.0 + simd::exp(-1.702 * x))))
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0) * if i % 3 == 0 { 4.0 } else { 1.0 }).collect()
    }

    #[test]
    fn fast_paths_match_the_primitives_and_step_aside_for_gradients() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(data(6 * 40), (2, 3, 40), &dev).unwrap();
        let w = Tensor::from_vec(data(40).iter().map(|v| v / 5.0).collect::<Vec<_>>(), 40, &dev).unwrap();
        let b = Tensor::from_vec(data(41)[1..].to_vec(), 40, &dev).unwrap();
        // The primitives as the towers spell them.
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let want = centred.broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap();
        let got = layer_norm(&x, &w, &b, 1e-6).unwrap().unwrap();
        let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "layer_norm differs by {diff}");
        let want = (&x / ((&x * -1.702).unwrap().exp().unwrap() + 1.0).unwrap()).unwrap();
        let got = quick_gelu(&x).unwrap().unwrap();
        let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "quick_gelu differs by {diff}");
        // A trainable operand: no fast path (it has no backward).
        let v = Var::from_tensor(&x).unwrap();
        assert!(quick_gelu(v.as_tensor()).is_none() && layer_norm(&x, Var::from_tensor(&w).unwrap().as_tensor(), &b, 1e-6).is_none());
    }
}
