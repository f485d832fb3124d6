//! Weights stored transposed for inference: an (out, in) weight whose storage is Wᵀ, i.e.
//! (in, out) row-major, viewed back as (out, in) with strides (1, out). Same values, same
//! shape, another layout; every candle op reads it through the strides.
//!
//! Why: [`super::linear`] computes x·Wᵀ with gemm, which makes its output column-major
//! internally and so takes W as the operand it loads in vector lanes along `out`. Stored
//! (out, in), W is strided along `out`, and gemm packs it element by element, once per thread
//! and column chunk of every call: at the Qwen2-VL-2B shape that scalar gather was 9 % of the
//! tower's samples (perf, benches/README.md). Stored transposed, the same packing is a
//! contiguous copy. Only frozen weights (generation, eval, `bench vlm`) are re-laid, once at
//! load; trained weights keep candle's contiguous layout.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
use rayon::prelude::*;

/// `w` (out, in) re-laid as transposed storage when it is a frozen f32 CPU matrix, else as
/// it is. The copy is blocked and parallel (candle's strided copy is one thread).
pub fn for_inference(w: &Tensor) -> Result<Tensor> {
    if w.rank() != 2 || w.dtype() != DType::F32 || !w.device().is_cpu() || w.is_variable() || w.track_op() || is_transposed(w) {
        return Ok(w.clone());
    }
    let (out, inp) = w.dims2()?;
    let src = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    // Wᵀ row i (of `out` values) is column i of W; 16 rows a task, so that each W row is read
    // 64 bytes at a time.
    const BLOCK: usize = 16;
    let mut dst = vec![0.0f32; out * inp];
    dst.par_chunks_mut(BLOCK * out).enumerate().for_each(|(b, rows)| {
        let i0 = b * BLOCK;
        let width = rows.len() / out;
        for o in 0..out {
            for (di, &v) in src[o * inp + i0..][..width].iter().enumerate() {
                rows[di * out + o] = v;
            }
        }
    });
    Tensor::from_vec(dst, (inp, out), w.device())?.t()
}

/// Whether `w` is a matrix in transposed storage (and not also contiguous).
pub fn is_transposed(w: &Tensor) -> bool {
    w.rank() == 2 && !w.is_contiguous() && w.t().map(|t| t.is_contiguous()).unwrap_or(false)
}

/// The Wᵀ elements (in × out, row-major) of an (out, in) f32 weight in transposed storage.
pub(crate) fn transposed_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [f32]> {
    let t = l.transpose(0, 1).ok()?;
    match (s, t.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) if l.dims().len() == 2 => Some(&d[a..b]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn relaid_weights_keep_their_values_and_products() {
        let dev = Device::Cpu;
        // 37 input columns: two full blocks of 16 and a tail of 5.
        let (out, inp, rows) = (23, 37, 40);
        let w = Tensor::from_vec((0..out * inp).map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0).collect::<Vec<_>>(), (out, inp), &dev).unwrap();
        let x = Tensor::from_vec((0..rows * inp).map(|i| ((i * 104729 % 97) as f32 - 48.0) / 30.0).collect::<Vec<_>>(), (rows, inp), &dev).unwrap();
        let b = Tensor::from_vec((0..out).map(|i| i as f32 / 10.0).collect::<Vec<_>>(), out, &dev).unwrap();
        let t = for_inference(&w).unwrap();
        assert!(is_transposed(&t) && !is_transposed(&w));
        assert_eq!(t.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // The fused linear on both layouts: the gemm path (40 rows) and the few-row path.
        for r in [rows, 3] {
            let x = x.narrow(0, 0, r).unwrap();
            let want = super::super::linear::linear(&x, &w, Some(&b)).unwrap();
            let got = super::super::linear::linear(&x, &t, Some(&b)).unwrap();
            super::super::test_support::close(&got, &want, &format!("{r} rows"));
        }
        // A trainable weight keeps its layout.
        let v = Var::from_tensor(&w).unwrap();
        assert!(!is_transposed(&for_inference(v.as_tensor()).unwrap()));
    }
}
