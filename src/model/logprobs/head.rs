//! The LM head and the token log-probs in one op, in row chunks: the (N, V) logits exist one
//! chunk at a time, forward and backward.
//!
//! Why: at a 152k vocabulary the logits of a batch of 8 × 128 are 622 MB, and autograd keeps
//! them from the forward until the backward, when their gradient (another 622 MB) is made
//! beside them. Here the forward keeps only its (2, N) output; the backward recomputes each
//! chunk's logits (one more LM-head product, ~6 % of a 0.5B-shaped step), turns them into
//! their gradient in place and folds that straight into the two products it feeds:
//! ```text
//! for each chunk c of rows:   Z_c = H_c · Wᵀ          (c × V, recomputed)
//!                             G_c = ∂loss/∂Z_c        (in place, see `fused::row_grad_in_place`)
//!                             dH_c = G_c · W          dW += G_cᵀ · H_c
//! ```
//! The chunk holds up to [`CHUNK_ELEMS`] logits (128 MB), so dW is swept a few times per
//! step rather than once per handful of rows.

use super::fused::{row_grad_in_place, row_logp_entropy};
use crate::model::fused::gemm::MatRef;
use crate::model::fused::gemm_bf16::{gemm, Rhs};
use crate::model::fused::precision::{self, Precision};
use crate::model::fused::{contiguous_f32, rows_per_task};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Logits held at once: 32M f32 (128 MB), e.g. 220 rows of a 152k vocabulary.
pub(super) const CHUNK_ELEMS: usize = 32 << 20;

/// (hidden (N, H), weight (V, H), targets (N) u32) → (2, N): logp then entropy of
/// `softmax(hidden · weightᵀ · inv_t)` at each row's target.
pub(super) struct HeadLogprobs {
    pub inv_t: f32,
    /// Rows per chunk (the tests make it small to cross chunk boundaries).
    pub chunk_rows: usize,
    /// The products' precision (`update_dtype`), taken when the op is built so that the
    /// backward matches the forward.
    pub precision: Precision,
}

impl HeadLogprobs {
    pub fn new(inv_t: f32, vocab: usize) -> HeadLogprobs {
        HeadLogprobs { inv_t, chunk_rows: (CHUNK_ELEMS / vocab.max(1)).max(1), precision: precision::current() }
    }
}

struct Operands<'a> {
    hidden: &'a [f32],
    weight: &'a [f32],
    targets: &'a [u32],
    n: usize,
    h: usize,
    v: usize,
}

const KERNEL: &str = "head_token_logprobs";

fn operands<'a>(
    (sh, lh): (&'a CpuStorage, &Layout),
    (sw, lw): (&'a CpuStorage, &Layout),
    (st, lt): (&'a CpuStorage, &Layout),
) -> Result<Operands<'a>> {
    let (n, h) = lh.shape().dims2()?;
    let (v, hw) = lw.shape().dims2()?;
    if hw != h {
        bail!("fused head_token_logprobs: hidden is {:?}, weight {:?}", lh.dims(), lw.dims());
    }
    let targets = match (st, lt.contiguous_offsets()) {
        (CpuStorage::U32(d), Some((a, b))) if lt.dims() == [n] => &d[a..b],
        _ => bail!("fused head_token_logprobs: targets must be contiguous u32 ({n}), got {:?} {:?}", st.dtype(), lt.dims()),
    };
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
        bail!("fused head_token_logprobs: target {bad} is outside the vocabulary of {v}");
    }
    Ok(Operands { hidden: contiguous_f32(sh, lh, KERNEL, "hidden")?, weight: contiguous_f32(sw, lw, KERNEL, "weight")?, targets, n, h, v })
}

impl Operands<'_> {
    /// Wᵀ as the right operand of the logits, packed once for all chunks at bf16.
    fn wt(&self, precision: Precision) -> Result<Rhs<'_>> {
        // Wᵀ through strides: element (i, j) of Wᵀ is w[j·H + i].
        Rhs::new(precision, MatRef { data: self.weight, rows: self.h, cols: self.v, row_stride: 1, col_stride: self.h })
    }

    /// `z (rows × V) = hidden[rows] · Wᵀ` (`wt` from [`Operands::wt`]).
    fn logits(&self, wt: &Rhs, rows: std::ops::Range<usize>, z: &mut [f32]) -> Result<()> {
        let lhs = MatRef { data: &self.hidden[rows.start * self.h..rows.end * self.h], rows: rows.len(), cols: self.h, row_stride: self.h, col_stride: 1 };
        wt.product(&mut z[..rows.len() * self.v], &lhs, false)
    }

    fn chunks(&self, chunk_rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let (n, c) = (self.n, chunk_rows.max(1));
        (0..n).step_by(c).map(move |s| s..(s + c).min(n))
    }
}

impl CustomOp3 for HeadLogprobs {
    fn name(&self) -> &'static str {
        "head-token-logprobs"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = operands((s1, l1), (s2, l2), (s3, l3))?;
        let mut out = vec![0.0f32; 2 * op.n];
        let (logp, ent) = out.split_at_mut(op.n);
        let mut z = vec![0.0f32; self.chunk_rows.min(op.n) * op.v];
        let wt = op.wt(self.precision)?;
        for rows in op.chunks(self.chunk_rows) {
            op.logits(&wt, rows.clone(), &mut z)?;
            let (lp, h) = (&mut logp[rows.clone()], &mut ent[rows.clone()]);
            let targets = &op.targets[rows.clone()];
            z.par_chunks(op.v.max(1)).zip(lp.par_iter_mut().zip(h.par_iter_mut())).zip(targets.par_iter()).with_min_len(rows_per_task(op.v)).for_each(
                |((row, (lp, h)), &t)| (*lp, *h) = row_logp_entropy(row, t as usize, self.inv_t),
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((2, op.n))))
    }

    fn bwd(&self, hidden: &Tensor, weight: &Tensor, targets: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (dh, dw) = {
            let (sh, lh) = hidden.storage_and_layout();
            let (sw, lw) = weight.storage_and_layout();
            let (st, lt) = targets.storage_and_layout();
            let (sg, lg) = grad.storage_and_layout();
            let (Storage::Cpu(sh), Storage::Cpu(sw), Storage::Cpu(st), Storage::Cpu(sg)) = (&*sh, &*sw, &*st, &*sg) else {
                bail!("fused head_token_logprobs: backward on a non-CPU tensor");
            };
            let op = operands((sh, lh), (sw, lw), (st, lt))?;
            let g = contiguous_f32(sg, lg, KERNEL, "output gradient")?;
            if g.len() != 2 * op.n {
                bail!("fused head_token_logprobs: output gradient has {} elements, expected {}", g.len(), 2 * op.n);
            }
            self.backward(&op, g.split_at(op.n))?
        };
        let dh = Tensor::from_vec(dh, hidden.dims(), hidden.device())?;
        let dw = Tensor::from_vec(dw, weight.dims(), weight.device())?;
        Ok((Some(dh), Some(dw), None))
    }
}

impl HeadLogprobs {
    /// (dH, dW) for the output gradients (of logp, of H), chunk by chunk.
    fn backward(&self, op: &Operands, (g_logp, g_ent): (&[f32], &[f32])) -> Result<(Vec<f32>, Vec<f32>)> {
        let (h, v) = (op.h, op.v);
        let mut dh = vec![0.0f32; op.n * h];
        let mut dw = vec![0.0f32; v * h];
        let mut z = vec![0.0f32; self.chunk_rows.min(op.n) * v];
        // Both right operands packed once for all chunks (bf16): Wᵀ for the logits, W for dH.
        let wt = op.wt(self.precision)?;
        let w = Rhs::new(self.precision, MatRef { data: op.weight, rows: v, cols: h, row_stride: h, col_stride: 1 })?;
        for rows in op.chunks(self.chunk_rows) {
            let c = rows.len();
            op.logits(&wt, rows.clone(), &mut z)?;
            let g = &mut z[..c * v];
            let (gl, gh, targets) = (&g_logp[rows.clone()], &g_ent[rows.clone()], &op.targets[rows.clone()]);
            g.par_chunks_mut(v.max(1)).zip(gl.par_iter().zip(gh.par_iter())).zip(targets.par_iter()).with_min_len(rows_per_task(v)).for_each(
                |((row, (&gl, &gh)), &t)| row_grad_in_place(row, t as usize, (gl, gh), self.inv_t),
            );
            let g = &z[..c * v];
            // dH_c = G_c · W
            let lhs = MatRef { data: g, rows: c, cols: v, row_stride: v, col_stride: 1 };
            w.product(&mut dh[rows.start * h..rows.end * h], &lhs, false)?;
            // dW += G_cᵀ · H_c (Gᵀ through strides)
            let gt = MatRef { data: g, rows: v, cols: c, row_stride: 1, col_stride: v };
            let hc = MatRef { data: &op.hidden[rows.start * h..rows.end * h], rows: c, cols: h, row_stride: h, col_stride: 1 };
            gemm(self.precision, &mut dw, &gt, &hc, true)?;
        }
        Ok((dh, dw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::logprobs::token_logprobs_reference;
    use candle_core::{Device, Var};

    /// (logp, H, dH, dW) of `Σ a·logp + Σ c·H` for hidden (B, L, H) narrowed to `l_used`
    /// positions, weight (V, H): fused with `chunk_rows`, or (None) the unfused reference
    /// (candle's matmul, then the candle-primitive log-softmax).
    fn run(hidden: &[f32], weight: &[f32], targets: &[u32], (b, l, h, v): (usize, usize, usize, usize), l_used: usize, temperature: f64, chunk_rows: Option<usize>, (a, c): (&[f32], &[f32])) -> [Vec<f32>; 4] {
        let dev = Device::Cpu;
        let x = Var::from_slice(hidden, (b, l, h), &dev).unwrap();
        let w = Var::from_slice(weight, (v, h), &dev).unwrap();
        let view = x.as_tensor().narrow(1, 0, l_used).unwrap();
        let t = Tensor::from_slice(targets, (b, l), &dev).unwrap().narrow(1, 0, l_used).unwrap().contiguous().unwrap();
        let (logp, ent) = match chunk_rows {
            Some(c) => {
                let rows = view.contiguous().unwrap().reshape((b * l_used, h)).unwrap();
                let op = HeadLogprobs { inv_t: (1.0 / temperature) as f32, chunk_rows: c, precision: Precision::F32 };
                let out = rows.apply_op3(w.as_tensor(), &t.reshape(b * l_used).unwrap(), op).unwrap();
                (out.get(0).unwrap().reshape((b, l_used)).unwrap(), out.get(1).unwrap().reshape((b, l_used)).unwrap())
            }
            None => {
                let logits = view.broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
                token_logprobs_reference(&logits, &t, temperature).unwrap()
            }
        };
        let wa = Tensor::from_slice(&a[..b * l_used], (b, l_used), &dev).unwrap();
        let wc = Tensor::from_slice(&c[..b * l_used], (b, l_used), &dev).unwrap();
        let loss = ((&logp * &wa).unwrap().sum_all().unwrap() + (&ent * &wc).unwrap().sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        [flat(&logp), flat(&ent), flat(grads.get(&x).unwrap()), flat(grads.get(&w).unwrap())]
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs() + 1e-6 * scale, "{what}[{i}]: fused {g} vs reference {w}");
        }
    }

    #[test]
    fn matches_the_unfused_head_and_log_softmax_across_chunk_boundaries() {
        let mut rng = crate::rng::Rng::new(41);
        // (B, L, H, V, positions used): odd sizes, one row, a vocabulary over 16k (several
        // rows per rayon task below it, one above), the next-token narrow of sft.
        for &(b, l, h, v, l_used) in &[(2, 5, 7, 13, 4), (1, 1, 3, 2, 1), (3, 4, 16, 99, 4), (2, 3, 5, 17_000, 3)] {
            let hidden: Vec<f32> = (0..b * l * h).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let weight: Vec<f32> = (0..v * h).map(|_| (rng.f32() * 2.0 - 1.0) * 1.5).collect();
            let targets: Vec<u32> = (0..b * l).map(|_| (rng.next_u64() % v as u64) as u32).collect();
            let a: Vec<f32> = (0..b * l).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let c: Vec<f32> = (0..b * l).map(|_| rng.f32() * 2.0 - 1.0).collect();
            for temperature in [1.0, 0.6] {
                let want = run(&hidden, &weight, &targets, (b, l, h, v), l_used, temperature, None, (&a, &c));
                // One row per chunk, chunks that do not divide the rows, and one chunk.
                for chunk in [1, 3, b * l_used] {
                    let got = run(&hidden, &weight, &targets, (b, l, h, v), l_used, temperature, Some(chunk), (&a, &c));
                    for (k, name) in ["logp", "entropy", "d hidden", "d weight"].iter().enumerate() {
                        close(&got[k], &want[k], &format!("({b}, {l}, {h}, {v}) T {temperature} chunk {chunk} {name}"));
                    }
                }
            }
        }
    }

    #[test]
    fn chunk_size_follows_the_vocabulary() {
        assert_eq!(HeadLogprobs::new(1.0, 151_936).chunk_rows, CHUNK_ELEMS / 151_936);
        assert_eq!(HeadLogprobs::new(1.0, 99).chunk_rows, CHUNK_ELEMS / 99);
        // A vocabulary larger than the chunk still makes progress, one row at a time.
        assert_eq!(HeadLogprobs::new(1.0, CHUNK_ELEMS * 2).chunk_rows, 1);
    }

    #[test]
    fn bad_targets_are_named() {
        let dev = Device::Cpu;
        let hidden = Tensor::zeros((1, 2, 4), candle_core::DType::F32, &dev).unwrap();
        let weight = Tensor::zeros((5, 4), candle_core::DType::F32, &dev).unwrap();
        let targets = Tensor::new(&[[1u32, 7]], &dev).unwrap();
        let err = crate::model::logprobs::head_token_logprobs(&hidden, &weight, &targets, 1.0).unwrap_err().to_string();
        assert!(err.contains("target 7 is outside the vocabulary of 5"), "{err}");
        let err = crate::model::logprobs::head_token_logprobs(&hidden, &weight, &targets, 0.0).unwrap_err().to_string();
        assert!(err.contains("temperature must be positive"), "{err}");
    }
}
