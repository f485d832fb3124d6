//! The vision towers' attention: bidirectional inside each image's window of patch rows, with
//! Qwen2-VL's 2D rotary positions on q and k, from the fused qkv projection (n, 3·heads·d)
//! to the heads side by side (n, heads·d), ready for the output projection.
//!
//! Two paths. [`attention_ops`] is candle ops (rotary, per-window batched matmuls, the fused
//! softmax), so it trains. Without a gradient (generation, eval, `bench vlm`) [`attention`]
//! runs one kernel instead: the rotary in one parallel pass, then tasks of a window's query
//! block each doing every head with two single-threaded gemm calls on strided views
//! (scale·Q·Kᵀ into a block of scores, its softmax in place, P·V straight into the block's
//! rows of the output at the head's columns).
//!
//! Why: at the Qwen2-VL-2B shape (32 blocks, 16 heads, 1,024 patches) the candle path spent
//! most of the tower's time outside its dense matmuls: `contiguous` copies of q, kᵀ and v
//! and the transpose back, all on one thread; per-head products through candle's batched
//! matmul, a rayon gemm per head whose 80-wide operands split poorly over two threads; a
//! zeroed mask; a `cat` (benches/README.md, issue 21). Here the threads split the query
//! blocks, each gemm runs alone on its core, and nothing but the rotated q and k is copied.

use super::super::fused;
use super::super::fused::gemm::{sgemm_view, MatRef, Product};
use super::super::fused::{contiguous_f32, rows_per_task, simd};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Tensor};
use rayon::prelude::*;

/// Query rows per task: 2 × the 64-row tile of gemm's AVX-512 f32 microkernel (`x4x6`), so a
/// block is whole tiles; at 1,024 patches, 8 tasks a window for 2 threads, and a task's
/// (rows × keys) scores (512 KiB at 1,024 keys) stay in L2 between the two products.
const QUERY_BLOCK: usize = 128;

const KERNEL: &str = "vision attention";

/// Attention of `qkv` (n, 3·heads·d: q, k, v, each head-major) inside the consecutive
/// windows `lengths` (Σ = n), with the rotary tables `rope` = (cos, sin), each (1, n, d/2),
/// applied to q and k when given. Returns (n, heads·d). The kernel when nothing wants a
/// gradient, else [`attention_ops`].
pub fn attention(qkv: &Tensor, rope: Option<(&Tensor, &Tensor)>, heads: usize, lengths: &[usize]) -> Result<Tensor> {
    let mut operands = vec![qkv];
    if let Some((cos, sin)) = rope {
        operands.extend([cos, sin]);
    }
    if super::infer_ops::frozen(&operands) {
        fused_attention(qkv, rope, heads, lengths)
    } else {
        attention_ops(qkv, rope, heads, lengths)
    }
}

/// The same function from candle ops (differentiable; the reference the kernel is tested
/// against).
pub fn attention_ops(qkv: &Tensor, rope: Option<(&Tensor, &Tensor)>, heads: usize, lengths: &[usize]) -> Result<Tensor> {
    let (n, d, dtype, dev) = (qkv.dim(0)?, qkv.dim(1)? / (3 * heads), qkv.dtype(), qkv.device());
    let scale = 1.0 / (d as f64).sqrt();
    let qkv = qkv.reshape((1, n, 3, heads, d))?;
    let part = |i: usize| qkv.narrow(2, i, 1).and_then(|t| t.squeeze(2));
    let (q, k) = match rope {
        Some((cos, sin)) => (fused::rope::rope_heads(&part(0)?, cos, sin)?, fused::rope::rope_heads(&part(1)?, cos, sin)?),
        None => (part(0)?.transpose(1, 2)?.contiguous()?, part(1)?.transpose(1, 2)?.contiguous()?),
    };
    let v = part(2)?.transpose(1, 2)?.contiguous()?;
    let mut outs = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &len in lengths {
        let (qi, ki, vi) = (q.narrow(2, start, len)?, k.narrow(2, start, len)?, v.narrow(2, start, len)?);
        let scores = qi.contiguous()?.matmul(&ki.t()?.contiguous()?)?.to_dtype(DType::F32)?;
        let zero = Tensor::zeros((1, 1, len, len), DType::F32, dev)?;
        let probs = fused::softmax::masked_softmax(&scores, &zero, scale)?.to_dtype(dtype)?;
        outs.push(probs.matmul(&vi.contiguous()?)?);
        start += len;
    }
    Tensor::cat(&outs, 2)?.transpose(1, 2)?.reshape((n, heads * d))
}

/// The kernel on f32 CPU tensors with no gradient (a custom op, to read the storages in
/// place).
fn fused_attention(qkv: &Tensor, rope: Option<(&Tensor, &Tensor)>, heads: usize, lengths: &[usize]) -> Result<Tensor> {
    let (n, width) = qkv.dims2()?;
    if heads == 0 || width % (3 * heads) != 0 || lengths.iter().sum::<usize>() != n {
        bail!("vision attention: qkv {:?} does not split into 3 × {heads} heads, or windows {lengths:?} do not sum to its rows", qkv.dims());
    }
    let e = width / 3;
    let op = Kernel { shape: Shape { e, d: e / heads, heads }, lengths: lengths.to_vec() };
    let qkv = qkv.contiguous()?;
    match rope {
        Some((cos, sin)) => qkv.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &op),
        None => qkv.apply_op1_no_bwd(&op),
    }
}

struct Kernel {
    shape: Shape,
    lengths: Vec<usize>,
}

impl Kernel {
    fn run(&self, qkv: &[f32], rope: Option<(&[f32], &[f32])>) -> Result<(CpuStorage, candle_core::Shape)> {
        let Shape { e, d, .. } = self.shape;
        let n = qkv.len() / (3 * e);
        // q and k rotated into (n, 2e) rows [q | k]; without rotary they are read from qkv.
        let rotated = match rope {
            Some((cos, sin)) => {
                if cos.len() != n * d / 2 || sin.len() != n * d / 2 {
                    bail!("vision attention: rotary tables of {} / {} values for {n} rows of head size {d}", cos.len(), sin.len());
                }
                Some(rotate_qk(qkv, cos, sin, self.shape))
            }
            None => None,
        };
        let (qk, qk_stride) = match &rotated {
            Some(r) => (r.as_slice(), 2 * e),
            None => (qkv, 3 * e),
        };
        let mut out = vec![0.0f32; n * e];
        // One task per (window, block of its queries), each owning its rows of the output.
        let mut tasks = Vec::new();
        let (mut rest, mut start) = (out.as_mut_slice(), 0);
        for &len in &self.lengths {
            for q0 in (0..len).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(len - q0);
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows * e);
                tasks.push((Window { start, len, q0, rows }, mine));
                rest = tail;
            }
            start += len;
        }
        let views = Views { qk, qk_stride, v: qkv, shape: self.shape };
        tasks.into_par_iter().try_for_each(|(w, out)| views.block(w, out))?;
        Ok((CpuStorage::F32(out), candle_core::Shape::from((n, e))))
    }
}

impl CustomOp1 for Kernel {
    fn name(&self) -> &'static str {
        "vision-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, candle_core::Shape)> {
        self.run(contiguous_f32(s, l, KERNEL, "qkv")?, None)
    }
}

impl CustomOp3 for Kernel {
    fn name(&self) -> &'static str {
        "vision-attention-rope"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, candle_core::Shape)> {
        let (cos, sin) = (contiguous_f32(s2, l2, KERNEL, "cos")?, contiguous_f32(s3, l3, KERNEL, "sin")?);
        self.run(contiguous_f32(s1, l1, KERNEL, "qkv")?, Some((cos, sin)))
    }
}

#[derive(Clone, Copy, Debug)]
struct Shape {
    /// heads · d.
    e: usize,
    d: usize,
    heads: usize,
}

/// A task: query rows `q0 .. q0 + rows` of the window of `len` rows from `start`.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: usize,
    len: usize,
    q0: usize,
    rows: usize,
}

/// (n, 2e) rows [rotated q | rotated k] in one parallel pass over the patch rows.
fn rotate_qk(qkv: &[f32], cos: &[f32], sin: &[f32], Shape { e, d, .. }: Shape) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0.0f32; qkv.len() / 3 * 2];
    out.par_chunks_mut(2 * e).zip(qkv.par_chunks(3 * e)).enumerate().with_min_len(rows_per_task(2 * e)).for_each(|(t, (dst, src))| {
        let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
        // q's heads then k's: the first 2e values of the source row, head after head.
        for (x, y) in src[..2 * e].chunks_exact(d).zip(dst.chunks_exact_mut(d)) {
            fused::rope::rotate(x, c, s, 1.0, y);
        }
    });
    out
}

/// Where a task reads q, k (rotated or not) and v.
struct Views<'a> {
    qk: &'a [f32],
    /// Row stride of `qk`: 2e rotated, 3e when read from qkv itself.
    qk_stride: usize,
    /// The qkv rows (v is their last third).
    v: &'a [f32],
    shape: Shape,
}

impl Views<'_> {
    /// Every head of one query block into its `out` rows (rows × e).
    ///
    /// The scores are kept column-major (key j's scores of the block's queries at j·rows):
    /// gemm then packs the query block (rows × d) instead of every key of the window (len × d,
    /// gathered element by element from rows 2e apart, once per task and head), and the
    /// softmax over the keys runs down the columns with the queries in the vector lanes.
    fn block(&self, w: Window, out: &mut [f32]) -> Result<()> {
        let Shape { e, d, heads } = self.shape;
        let (rows, len, s) = (w.rows, w.len, self.qk_stride);
        let one = Product { accumulate: false, scale: 1.0, threads: 1 };
        let scaled = Product { scale: 1.0 / (d as f32).sqrt(), ..one };
        let mut scores = vec![0.0f32; rows * len];
        let (mut max, mut sum) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        for h in 0..heads {
            let q = MatRef { data: &self.qk[(w.start + w.q0) * s + h * d..], rows, cols: d, row_stride: s, col_stride: 1 };
            // Kᵀ (d × len) through strides: element (c, j) is key row j's value c.
            let kt = MatRef { data: &self.qk[w.start * s + e + h * d..], rows: d, cols: len, row_stride: 1, col_stride: s };
            sgemm_view(&mut scores, (1, rows), &q, &kt, scaled)?;
            exp_columns(&mut scores, &mut max, &mut sum);
            // P·V with the unnormalised P, then each query's row divided by its sum.
            let p = MatRef { data: &scores, rows, cols: len, row_stride: 1, col_stride: rows };
            let v = MatRef { data: &self.v[w.start * 3 * e + 2 * e + h * d..], rows: len, cols: d, row_stride: 3 * e, col_stride: 1 };
            sgemm_view(&mut out[h * d..], (e, 1), &p, &v, one)?;
            for (row, total) in out.chunks_exact_mut(e).zip(&sum) {
                let inv = 1.0 / total;
                row[h * d..][..d].iter_mut().for_each(|y| *y *= inv);
            }
        }
        Ok(())
    }
}

/// `scores` (column-major, `max.len()` rows) ← e^(scores − the row's max), `sum` ← each row's
/// total: the softmax but for the division, which the caller applies to P·V.
fn exp_columns(scores: &mut [f32], max: &mut [f32], sum: &mut [f32]) {
    let rows = max.len();
    // `inline(always)`: a closure that is not inlined into the AVX-512 wrapper is compiled for
    // baseline x86-64 (SSE), which is what perf found the earlier row softmax running.
    simd::with_best_isa(
        #[inline(always)]
        || {
            max.fill(f32::NEG_INFINITY);
            for col in scores.chunks_exact(rows) {
                max.iter_mut().zip(col).for_each(|(m, &x)| *m = m.max(x));
            }
            sum.fill(0.0);
            for col in scores.chunks_exact_mut(rows) {
                for ((x, &m), s) in col.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
                    *x = simd::exp(*x - m);
                    *s += *x;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::super::fused::test_support::uniform;
    use super::*;
    use candle_core::{Device, Var};

    /// Rotary tables (1, n, half) of random angles.
    fn tables(rng: &mut crate::rng::Rng, n: usize, half: usize) -> (Tensor, Tensor) {
        let angles = uniform(rng, n * half, 0.0, 6.0);
        let t = |f: fn(f32) -> f32| Tensor::from_vec(angles.iter().map(|&a| f(a)).collect::<Vec<_>>(), (1, n, half), &Device::Cpu).unwrap();
        (t(f32::cos), t(f32::sin))
    }

    /// max |got − want| ≤ 1e-5 · max |want|, and the same shape.
    fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        let (g, w) = (got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{what}: an all-zero reference proves nothing");
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{what}[{i}]: kernel {a} vs ops {b} (max |ops| {scale})");
        }
    }

    #[test]
    fn the_kernel_matches_the_candle_ops() {
        let mut rng = crate::rng::Rng::new(21);
        // Odd head counts; windows that are not multiples of the query block (97, 193), one
        // row, two and three images; head sizes 8 (2D rotary's minimum of 4 pairs) and 20.
        for (heads, d, lengths) in [(3, 8, vec![97]), (1, 20, vec![1]), (5, 8, vec![193, 40]), (2, 20, vec![16, 1, 130])] {
            let n: usize = lengths.iter().sum();
            // Scores of several units, so the softmax is neither flat nor one-hot.
            let qkv = Tensor::from_vec(uniform(&mut rng, n * 3 * heads * d, -1.5, 1.5), (n, 3 * heads * d), &Device::Cpu).unwrap();
            let (cos, sin) = tables(&mut rng, n, d / 2);
            let what = format!("heads {heads}, d {d}, windows {lengths:?}");
            let want = attention_ops(&qkv, Some((&cos, &sin)), heads, &lengths).unwrap();
            assert_close(&attention(&qkv, Some((&cos, &sin)), heads, &lengths).unwrap(), &want, &format!("{what}, rotary"));
            let want = attention_ops(&qkv, None, heads, &lengths).unwrap();
            assert_close(&attention(&qkv, None, heads, &lengths).unwrap(), &want, &format!("{what}, no rotary"));
        }
    }

    #[test]
    fn windows_do_not_see_each_other() {
        // Independent of the ops path: with two windows, changing the second's rows leaves the
        // first's outputs bit-identical.
        let mut rng = crate::rng::Rng::new(4);
        let (heads, d, lengths) = (2, 8, [100usize, 30]);
        let width = 3 * heads * d;
        let mut values = uniform(&mut rng, 130 * width, -1.0, 1.0);
        let (cos, sin) = tables(&mut rng, 130, d / 2);
        let run = |v: &[f32]| {
            let qkv = Tensor::from_slice(v, (130, width), &Device::Cpu).unwrap();
            attention(&qkv, Some((&cos, &sin)), heads, &lengths).unwrap().narrow(0, 0, 100).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let before = run(&values);
        values[100 * width..].iter_mut().for_each(|x| *x = -*x * 2.0);
        assert_eq!(before, run(&values));
    }

    #[test]
    fn a_gradient_takes_the_candle_ops() {
        let mut rng = crate::rng::Rng::new(8);
        let qkv = Var::from_vec(uniform(&mut rng, 10 * 24, -1.0, 1.0), (10, 24), &Device::Cpu).unwrap();
        let (cos, sin) = tables(&mut rng, 10, 2);
        let y = attention(qkv.as_tensor(), Some((&cos, &sin)), 2, &[6, 4]).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(qkv.as_tensor()).is_some(), "no gradient reached qkv");
    }
}
