//! Fused, multi-threaded CPU kernels with backward passes for the decoder's hot elementwise
//! paths: the dense projection, RMSNorm, RoPE (with the head transpose), the masked attention
//! softmax and SwiGLU; [`transposed`] re-lays frozen weights for the dense projection.
//!
//! Why: candle's CPU elementwise, unary, binary and reduce ops run on one thread and each
//! allocates a full activation; its fast RMSNorm / softmax / RoPE kernels have no backward.
//! A training step through the differentiable primitives is a few thousand such ops, and
//! their backward adds as many again (docs/ENGINE.md §5, issue 8). Each kernel here is one
//! pass per row (rows in parallel) forward and one backward, and each has a reference
//! expression built from candle primitives that it is tested against (values and gradients).
//!
//! The kernels run for contiguous f32 tensors on the CPU; every public function falls back to
//! the reference expression elsewhere (GPU devices, bf16/f16), so callers need not care.

pub(crate) mod gemm;
pub(crate) mod gemm_bf16;
pub mod linear;
pub mod precision;
pub mod rms_norm;
pub mod rope;
pub mod simd;
pub mod skinny;
pub mod softmax;
pub mod swiglu;
pub mod transposed;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Tensor};

/// Elements per rayon task at least: hidden sizes of 64–896 would otherwise be one row a
/// task, and on a loaded machine a task hand-off costs more than the row.
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

/// Rows of `row_len` elements that make one rayon task at least.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (MIN_ELEMS_PER_TASK / row_len.max(1)).max(1)
}

/// The elements of a contiguous f32 storage, or an error naming the kernel and the argument.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, kernel: &str, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
        (CpuStorage::F32(_), None) => bail!("fused {kernel}: {what} must be contiguous"),
        _ => bail!("fused {kernel}: {what} must be f32, got {:?}", s.dtype()),
    }
}

/// Whether the fused kernels can take these tensors (CPU, f32).
pub(crate) fn fusable(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::Tensor;

    /// Asserts `got ≈ want` elementwise (abs 1e-5 + rel 1e-4), naming the first bad index.
    pub fn close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{what}[{i}]: fused {a} vs reference {b}");
        }
    }

    /// `n` values uniform in [lo, hi) from a seeded generator.
    pub fn uniform(rng: &mut crate::rng::Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + rng.f32() * (hi - lo)).collect()
    }
}
