//! The fused CPU kernel behind [`super::token_logprobs`]: one pass per row of the logits for the
//! log-probability of the target and the entropy, and one for the gradient, rows in parallel.
//!
//! Why: the unfused version (`token_logprobs_reference`) materialises several (B, L, V)
//! tensors (z, exp, probs, probs·z) and keeps them for backward, each made by a
//! single-threaded candle op. At a 152k vocabulary one copy is 622 MB for batch 8 × 128.
//! Here the forward keeps nothing but its (2, B, L) output, and the backward recomputes the
//! row statistics (two cheap reads of the row) and writes the (B, L, V) gradient once.
//!
//! With `z = x / T` per row, `S = Σ exp(z − m)` (m the row max), `A = Σ exp(z − m)(z − m) / S`:
//! ```text
//! logp = (z_t − m) − ln S           H = ln S − A
//! ∂logp/∂z_j = [j = t] − p_j        ∂H/∂z_j = −p_j ((z_j − m) − A)      ∂z/∂x = 1/T
//! ```
//! Sums run in 16 f32 lanes over blocks of 1024 entries and add the blocks in f64, so a long
//! row (V ≈ 152k) loses no precision to one long f32 running sum.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use crate::model::fused::simd;

/// Rows handed to one rayon task at least: small vocabularies (tiny presets) would otherwise
/// pay a task hand-off per row, which on a loaded machine costs more than the row.
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

/// Where the B·L rows of a (B, L, V) logits tensor with unit stride along V live in storage.
#[derive(Debug, Clone, Copy)]
struct Rows {
    b: usize,
    l: usize,
    v: usize,
    offset: usize,
    stride_b: usize,
    stride_l: usize,
}

impl Rows {
    fn of(layout: &Layout) -> Result<Rows> {
        let (dims, stride) = (layout.dims(), layout.stride());
        if dims.len() != 3 || stride[2] != 1 {
            bail!("fused token_logprobs: logits need shape (B, L, V) with unit stride along V, got {dims:?} / {stride:?}");
        }
        Ok(Rows { b: dims[0], l: dims[1], v: dims[2], offset: layout.start_offset(), stride_b: stride[0], stride_l: stride[1] })
    }

    fn count(&self) -> usize {
        self.b * self.l
    }

    /// The logits of row `r` (row-major over (B, L)).
    fn row<'a>(&self, data: &'a [f32], r: usize) -> &'a [f32] {
        let start = self.offset + (r / self.l) * self.stride_b + (r % self.l) * self.stride_l;
        &data[start..start + self.v]
    }

    fn min_rows_per_task(&self) -> usize {
        (MIN_ELEMS_PER_TASK / self.v.max(1)).max(1)
    }
}

/// Targets (B, L) u32 with any strides, read in row order, each checked against V.
fn targets_of(storage: &CpuStorage, layout: &Layout, rows: &Rows) -> Result<Vec<usize>> {
    let data = match storage {
        CpuStorage::U32(d) => d,
        _ => bail!("fused token_logprobs: targets must be u32, got {:?}", storage.dtype()),
    };
    let (dims, stride) = (layout.dims(), layout.stride());
    if dims != [rows.b, rows.l] {
        bail!("fused token_logprobs: targets shape {dims:?} does not match logits rows ({}, {})", rows.b, rows.l);
    }
    let mut out = Vec::with_capacity(rows.count());
    for bi in 0..rows.b {
        for ti in 0..rows.l {
            let t = data[layout.start_offset() + bi * stride[0] + ti * stride[1]] as usize;
            if t >= rows.v {
                bail!("fused token_logprobs: target {t} at ({bi}, {ti}) is outside the vocabulary of {}", rows.v);
            }
            out.push(t);
        }
    }
    Ok(out)
}

fn f32_data<'a>(storage: &'a CpuStorage, what: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(d) => Ok(d),
        _ => bail!("fused token_logprobs: {what} must be f32, got {:?}", storage.dtype()),
    }
}

/// Per-row statistics of `z = x · inv_t`: the max m, ln S and A (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(super) struct RowStats {
    pub max: f32,
    pub ln_s: f64,
    pub mean_shifted: f64,
}

pub(super) fn row_stats(x: &[f32], inv_t: f32) -> RowStats {
    simd::with_best_isa(|| {
        // The max of z = x·inv_t is max(x)·inv_t for inv_t > 0 (the temperature is positive).
        let max = simd::max(x) * inv_t;
        // S = Σ e^d and A·S = Σ e^d·d with d = z − m, in 16-lane partial sums per block of
        // the row, the blocks summed in f64 (vocabularies reach 150k entries).
        const BLOCK: usize = 1024;
        let (mut s, mut a) = (0.0f64, 0.0f64);
        let mut e = [0.0f32; BLOCK];
        let mut d = [0.0f32; BLOCK];
        for block in x.chunks(BLOCK) {
            let (e, d) = (&mut e[..block.len()], &mut d[..block.len()]);
            for ((e, d), &xi) in e.iter_mut().zip(d.iter_mut()).zip(block) {
                *d = xi * inv_t - max;
                *e = simd::exp(*d);
            }
            s += simd::sum(e) as f64;
            a += simd::dot(e, d) as f64;
        }
        RowStats { max, ln_s: s.ln(), mean_shifted: a / s }
    })
}

/// (logp, H) of one row of logits `x` for target `t`.
pub(super) fn row_logp_entropy(x: &[f32], t: usize, inv_t: f32) -> (f32, f32) {
    let st = row_stats(x, inv_t);
    let zt_shifted = (x[t] * inv_t - st.max) as f64;
    ((zt_shifted - st.ln_s) as f32, (st.ln_s - st.mean_shifted) as f32)
}

/// Replaces one row of logits (target `t`) by the gradient of `gl·logp + gh·H` with respect
/// to it (the row statistics are taken first).
pub(super) fn row_grad_in_place(row: &mut [f32], t: usize, (gl, gh): (f32, f32), inv_t: f32) {
    let st = row_stats(row, inv_t);
    let a = st.mean_shifted as f32;
    // p_j = exp(z_j − m − ln S); folding ln S into the shift keeps one exp per element.
    let shift = st.max + st.ln_s as f32;
    simd::with_best_isa(|| {
        for o in row.iter_mut() {
            let z = *o * inv_t;
            let p = simd::exp(z - shift);
            let d = z - st.max;
            *o = (-gl * p - gh * p * (d - a)) * inv_t;
        }
    });
    row[t] += gl * inv_t;
}

/// Forward: (logits (B, L, V) f32, targets (B, L) u32) → (2, B, L) f32 holding logp then H.
pub(super) struct TokenLogprobs {
    pub inv_t: f32,
}

impl CustomOp2 for TokenLogprobs {
    fn name(&self) -> &'static str {
        "token-logprobs"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let rows = Rows::of(l1)?;
        let x = f32_data(s1, "logits")?;
        let targets = targets_of(s2, l2, &rows)?;
        let n = rows.count();
        let mut out = vec![0.0f32; 2 * n];
        let (logp, ent) = out.split_at_mut(n);
        logp.par_iter_mut()
            .zip(ent.par_iter_mut())
            .enumerate()
            .with_min_len(rows.min_rows_per_task())
            .for_each(|(r, (lp, h))| {
                (*lp, *h) = row_logp_entropy(rows.row(x, r), targets[r], self.inv_t);
            });
        Ok((CpuStorage::F32(out), Shape::from((2, rows.b, rows.l))))
    }

    fn bwd(&self, logits: &Tensor, targets: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let g = logits.apply_op3_no_bwd(targets, &grad, &TokenLogprobsBackward { inv_t: self.inv_t })?;
        Ok((Some(g), None))
    }
}

/// Backward: (logits, targets, grad of the (2, B, L) output) → the (B, L, V) logits gradient.
struct TokenLogprobsBackward {
    inv_t: f32,
}

impl CustomOp3 for TokenLogprobsBackward {
    fn name(&self) -> &'static str {
        "token-logprobs-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let rows = Rows::of(l1)?;
        let x = f32_data(s1, "logits")?;
        let targets = targets_of(s2, l2, &rows)?;
        let n = rows.count();
        if l3.dims() != [2, rows.b, rows.l] || !l3.is_contiguous() {
            bail!("fused token_logprobs backward: output gradient must be contiguous (2, {}, {}), got {:?}", rows.b, rows.l, l3.dims());
        }
        let g_out = &f32_data(s3, "output gradient")?[l3.start_offset()..l3.start_offset() + 2 * n];
        let (g_logp, g_ent) = g_out.split_at(n);
        let mut dx = vec![0.0f32; n * rows.v];
        let inv_t = self.inv_t;
        dx.par_chunks_mut(rows.v.max(1)).enumerate().with_min_len(rows.min_rows_per_task()).for_each(|(r, out)| {
            out.copy_from_slice(rows.row(x, r));
            row_grad_in_place(out, targets[r], (g_logp[r], g_ent[r]), inv_t);
        });
        Ok((CpuStorage::F32(dx), Shape::from((rows.b, rows.l, rows.v))))
    }
}
