//! `y = x · Wᵀ` for a handful of rows of x (decoding: one row per sequence of the batch).
//!
//! Why: with 1–16 rows the product is bound by reading W, not by arithmetic (at the
//! Qwen2.5-0.5B shape, 2 GB of f32 weights per decoded token). gemm packs W into blocks
//! before multiplying, which reads it twice and writes it once; here each row of W is read
//! once, straight from memory, and dotted with every row of x (which stays in cache). Rows
//! of W are split over rayon's threads. Measured: see `Linear` and benches/README.md.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod tiled;
pub mod bf16;

/// At most this many rows of x take this path; more go to gemm.
pub const MAX_ROWS: usize = 16;

/// Rows of W per rayon task: 64 rows of a 896-wide W are 229 KB, enough to amortise a task.
const W_ROWS_PER_TASK: usize = 64;

/// `y[r·out + j] = Σ_k x[r·in + k] · w[j·in + k]` for `rows ≤ MAX_ROWS` rows of x.
pub fn matmul_wt(x: &[f32], w: &[f32], rows: usize, in_dim: usize, out_dim: usize) -> Vec<f32> {
    let mut yt = vec![0.0f32; out_dim * rows];
    let mut y = vec![0.0f32; rows * out_dim];
    matmul_wt_into(x, w, rows, in_dim, out_dim, &mut yt, &mut y);
    y
}

/// [`matmul_wt`] into caller-owned buffers (a decoding loop reuses them every token): `yt`
/// (at least out·rows, scratch) and `y` (rows·out, the result).
pub fn matmul_wt_into(x: &[f32], w: &[f32], rows: usize, in_dim: usize, out_dim: usize, yt: &mut [f32], y: &mut [f32]) {
    matmul_wt_with(Kernel::Best, x, w, rows, in_dim, out_dim, yt, y)
}

/// [`matmul_wt_into`] with a chosen kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt_with(kernel: Kernel, x: &[f32], w: &[f32], rows: usize, in_dim: usize, out_dim: usize, yt: &mut [f32], y: &mut [f32]) {
    assert!(rows <= MAX_ROWS && x.len() == rows * in_dim && w.len() == out_dim * in_dim, "skinny matmul: bad sizes");
    assert!(yt.len() >= out_dim * rows && y.len() == rows * out_dim, "skinny matmul: bad buffers");
    if rows == 0 || in_dim == 0 || out_dim == 0 {
        // Nothing to multiply (and zero-sized chunks would panic below).
        y.fill(0.0);
        return;
    }
    let yt = &mut yt[..out_dim * rows]; // (out, rows): each task writes whole rows of it
    yt.par_chunks_mut(rows * W_ROWS_PER_TASK).zip(w.par_chunks(in_dim * W_ROWS_PER_TASK)).for_each(|(yt, w)| dots_with(kernel, x, w, rows, in_dim, yt));
    // Back to (rows, out); `rows` is small, so this is a cheap pass over the output.
    for (j, col) in yt.chunks_exact(rows).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * out_dim + j] = v;
        }
    }
}

/// Up to three products of the same rows of x (q, k and v; gate and up) in one parallel
/// pass: `ys[m] = x · ws[m]ᵀ` with `ws[m]` of `outs[m]` rows (0 for an unused slot). Why: a
/// decoding step of a 30-layer model forks and joins the thread pool ~240 times; each join
/// waits for the slower thread, and these products share their input.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt3(kernel: Kernel, x: &[f32], ws: [&[f32]; 3], outs: [usize; 3], rows: usize, in_dim: usize, yt: &mut [f32], ys: [&mut [f32]; 3]) {
    let total: usize = outs.iter().sum();
    assert!(rows <= MAX_ROWS && x.len() == rows * in_dim, "skinny matmul: bad sizes");
    assert!(yt.len() >= total * rows, "skinny matmul: bad scratch buffer");
    for m in 0..3 {
        assert!(ws[m].len() == outs[m] * in_dim && ys[m].len() == rows * outs[m], "skinny matmul: bad sizes of product {m}");
    }
    if rows == 0 || in_dim == 0 {
        ys.into_iter().for_each(|y| y.fill(0.0));
        return;
    }
    let (yt0, rest) = yt[..total * rows].split_at_mut(outs[0] * rows);
    let (yt1, yt2) = rest.split_at_mut(outs[1] * rows);
    let (cy, cw) = (rows * W_ROWS_PER_TASK, in_dim * W_ROWS_PER_TASK);
    yt0.par_chunks_mut(cy)
        .zip(ws[0].par_chunks(cw))
        .chain(yt1.par_chunks_mut(cy).zip(ws[1].par_chunks(cw)))
        .chain(yt2.par_chunks_mut(cy).zip(ws[2].par_chunks(cw)))
        .for_each(|(yt, w)| dots_with(kernel, x, w, rows, in_dim, yt));
    let mut at = 0;
    for (m, y) in ys.into_iter().enumerate() {
        for (j, col) in yt[at..at + outs[m] * rows].chunks_exact(rows).enumerate() {
            for (r, &v) in col.iter().enumerate() {
                y[r * outs[m] + j] = v;
            }
        }
        at += outs[m] * rows;
    }
}

/// `yt[j·rows + r] = x_r · w_j` for every row j of this block of W (rows ≤ [`MAX_ROWS`]).
/// Dispatches to a body compiled for the best instruction set this CPU has.
pub(crate) fn dots(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    dots_with(Kernel::Best, x, w, rows, in_dim, yt)
}

/// Where the tiled kernel prefetches W ahead of use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheLevel {
    L1,
    L2,
}

/// Prefetch setting of the tiled kernel: (cache level, groups of 4 W rows ahead; 0 = none).
/// Measured with `retort bench matmul`, which tries each (benches/README.md); the default is
/// the fastest there. `RETORT_SKINNY_PREFETCH=l1:1|l2:2|none…` overrides it for experiments.
static PREFETCH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);
const DEFAULT_PREFETCH: (CacheLevel, usize) = (CacheLevel::L1, 1);

fn encode((level, distance): (CacheLevel, usize)) -> u8 {
    (distance.min(15) as u8) << 1 | (level == CacheLevel::L2) as u8
}

/// The prefetch setting in force (see [`set_prefetch`]).
pub fn prefetch() -> (CacheLevel, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut v = PREFETCH.load(Relaxed);
    if v == u8::MAX {
        let set = std::env::var("RETORT_SKINNY_PREFETCH").ok().and_then(|s| parse_prefetch(&s)).unwrap_or(DEFAULT_PREFETCH);
        v = encode(set);
        PREFETCH.store(v, Relaxed);
    }
    (if v & 1 == 1 { CacheLevel::L2 } else { CacheLevel::L1 }, (v >> 1) as usize)
}

/// Sets the tiled kernel's prefetch (the micro-benchmark compares settings).
pub fn set_prefetch(setting: (CacheLevel, usize)) {
    PREFETCH.store(encode(setting), std::sync::atomic::Ordering::Relaxed);
}

/// `l1:N`, `l2:N` (N groups of 4 W rows ahead) or `none`.
pub fn parse_prefetch(s: &str) -> Option<(CacheLevel, usize)> {
    if s == "none" {
        return Some((CacheLevel::L1, 0));
    }
    let (level, n) = s.split_once(':')?;
    let level = match level {
        "l1" => CacheLevel::L1,
        "l2" => CacheLevel::L2,
        _ => return None,
    };
    Some((level, n.parse().ok().filter(|&n: &usize| n <= 15)?))
}

/// Which body computes the dot products (the micro-benchmark and the tests pick one; decoding
/// takes [`Kernel::Best`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// [`Kernel::Tiled`] where the CPU has AVX-512, else [`Kernel::Stream`].
    Best,
    /// One W row (or a pair) against groups of x rows, lanes summed per product.
    Stream,
    /// 4 W rows × 4 x rows per register tile (AVX-512 only; elsewhere the same as `Stream`).
    Tiled,
}

/// [`dots`] with a chosen kernel.
pub fn dots_with(kernel: Kernel, x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    assert!(rows <= MAX_ROWS && x.len() == rows * in_dim && w.len() % in_dim.max(1) == 0, "skinny matmul: bad sizes");
    assert!(yt.len() >= w.len() / in_dim.max(1) * rows, "skinny matmul: bad output buffer");
    #[cfg(target_arch = "x86_64")]
    {
        if kernel != Kernel::Stream && rows > 0 && in_dim > 0 && is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (FMA is part of it on every AVX-512 CPU, and the
            // function enables it); the sizes are checked above.
            return unsafe { tiled::dots_tiled(x, w, rows, in_dim, yt) };
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dots_avx512(x, w, rows, in_dim, yt) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { dots_avx2(x, w, rows, in_dim, yt) };
        }
    }
    dots_body::<false>(x, w, rows, in_dim, yt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn dots_avx512(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    dots_body::<true>(x, w, rows, in_dim, yt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    dots_body::<true>(x, w, rows, in_dim, yt)
}

/// For each row of this block of W: its dot products with every row of x, the rows of x taken
/// 8, 4, 2 or 1 at a time. The W row comes from memory once and from L1 for the later groups.
/// `FMA`: use fused multiply-adds (only where the CPU has them; elsewhere `mul_add` would be
/// a slow library call).
///
/// With 8 or more rows of x (a batch of decoding rows: compute-bound, not bound by reading W),
/// W rows go two at a time through [`dot_pair`], which loads 10 vectors per 16 multiply-adds
/// instead of 9 per 8 and sums its lanes as a tree.
#[inline(always)]
fn dots_body<const FMA: bool>(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    if rows >= 8 {
        let mut pairs = w.chunks_exact(2 * in_dim).zip(yt.chunks_exact_mut(2 * rows));
        for (w2, out2) in &mut pairs {
            let (w0, w1) = w2.split_at(in_dim);
            let (o0, o1) = out2.split_at_mut(rows);
            let mut r = 0;
            while r + 8 <= rows {
                let [a, b] = dot_pair::<FMA>(x, in_dim, r, w0, w1);
                o0[r..r + 8].copy_from_slice(&a);
                o1[r..r + 8].copy_from_slice(&b);
                r += 8;
            }
            while r < rows {
                o0[r] = dot_rows::<1, 64, FMA>(x, in_dim, r, w0)[0];
                o1[r] = dot_rows::<1, 64, FMA>(x, in_dim, r, w1)[0];
                r += 1;
            }
        }
        let done = w.len() / (2 * in_dim) * 2;
        if done * in_dim < w.len() {
            dots_single::<FMA>(x, &w[done * in_dim..], rows, in_dim, &mut yt[done * rows..]);
        }
        return;
    }
    dots_single::<FMA>(x, w, rows, in_dim, yt)
}

/// Dot products of two W rows with rows `first .. first + 8` of x, 16 lanes of partial sums
/// each (16 AVX-512 accumulators), the lanes summed as a tree.
#[inline(always)]
fn dot_pair<const FMA: bool>(x: &[f32], in_dim: usize, first: usize, w0: &[f32], w1: &[f32]) -> [[f32; 8]; 2] {
    const R: usize = 8;
    const L: usize = 16;
    assert!(w0.len() == in_dim && w1.len() == in_dim && x.len() >= (first + R) * in_dim, "skinny matmul: rows out of range");
    let full = in_dim / L * L;
    let mut acc = [[[0.0f32; L]; R]; 2];
    let (xp, p0, p1) = (x[first * in_dim..].as_ptr(), w0.as_ptr(), w1.as_ptr());
    for k in (0..full).step_by(L) {
        let mut a = [0.0f32; L];
        let mut b = [0.0f32; L];
        for i in 0..L {
            // SAFETY: k + i < full ≤ in_dim = w0.len() = w1.len() (asserted).
            unsafe {
                a[i] = *p0.add(k + i);
                b[i] = *p1.add(k + i);
            }
        }
        for r in 0..R {
            for i in 0..L {
                // SAFETY: row r < R of x starts at (first + r)·in_dim with (first + R)·in_dim ≤
                // x.len() (asserted), and k + i < in_dim.
                let xv = unsafe { *xp.add(r * in_dim + k + i) };
                acc[0][r][i] = if FMA { xv.mul_add(a[i], acc[0][r][i]) } else { acc[0][r][i] + xv * a[i] };
                acc[1][r][i] = if FMA { xv.mul_add(b[i], acc[1][r][i]) } else { acc[1][r][i] + xv * b[i] };
            }
        }
    }
    let mut out = [[0.0f32; R]; 2];
    for (wi, w_row) in [w0, w1].into_iter().enumerate() {
        for r in 0..R {
            let mut v = acc[wi][r];
            let mut width = L / 2;
            while width > 0 {
                for i in 0..width {
                    v[i] += v[i + width];
                }
                width /= 2;
            }
            let x_row = &x[(first + r) * in_dim..(first + r + 1) * in_dim];
            let tail: f32 = w_row[full..].iter().zip(&x_row[full..]).map(|(w, x)| w * x).sum();
            out[wi][r] = v[0] + tail;
        }
    }
    out
}

/// One W row at a time, the rows of x taken 8, 4, 2 or 1 at a time.
#[inline(always)]
fn dots_single<const FMA: bool>(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    for (w_row, out) in w.chunks_exact(in_dim).zip(yt.chunks_exact_mut(rows)) {
        let mut r = 0;
        while r + 8 <= rows {
            out[r..r + 8].copy_from_slice(&dot_rows::<8, 16, FMA>(x, in_dim, r, w_row));
            r += 8;
        }
        if r + 4 <= rows {
            out[r..r + 4].copy_from_slice(&dot_rows::<4, 32, FMA>(x, in_dim, r, w_row));
            r += 4;
        }
        if r + 2 <= rows {
            out[r..r + 2].copy_from_slice(&dot_rows::<2, 64, FMA>(x, in_dim, r, w_row));
            r += 2;
        }
        if r < rows {
            out[r] = dot_rows::<1, 64, FMA>(x, in_dim, r, w_row)[0];
        }
    }
}

/// Dot products of `w_row` with rows `first .. first + R` of x. Each keeps L partial sums
/// (R·L/16 independent AVX-512 accumulators: enough to hide the add latency, few enough to
/// stay in registers), then adds the tail past the last full L-chunk.
#[inline(always)]
fn dot_rows<const R: usize, const L: usize, const FMA: bool>(x: &[f32], in_dim: usize, first: usize, w_row: &[f32]) -> [f32; R] {
    assert!(w_row.len() == in_dim && x.len() >= (first + R) * in_dim, "skinny matmul: rows out of range");
    let full = in_dim / L * L;
    let mut acc = [[0.0f32; L]; R];
    let (xp, wp) = (x[first * in_dim..].as_ptr(), w_row.as_ptr());
    for k in (0..full).step_by(L) {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: k + i < full ≤ in_dim, so w_row[k + i] is in bounds, and row r < R of
                // x starts at (first + r)·in_dim with (first + R)·in_dim ≤ x.len() (asserted).
                // Unchecked reads keep the index arithmetic out of the registers the
                // accumulators need (with checks, they spilled to the stack).
                let (xv, wv) = unsafe { (*xp.add(r * in_dim + k + i), *wp.add(k + i)) };
                *a = if FMA { xv.mul_add(wv, *a) } else { *a + xv * wv };
            }
        }
    }
    let mut out = [0.0f32; R];
    for (r, o) in out.iter_mut().enumerate() {
        let x_row = &x[(first + r) * in_dim..(first + r + 1) * in_dim];
        let tail: f32 = w_row[full..].iter().zip(&x_row[full..]).map(|(w, x)| w * x).sum();
        *o = acc[r].iter().sum::<f32>() + tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::uniform;
    use super::*;

    #[test]
    fn matches_a_float64_reference() {
        let mut rng = crate::rng::Rng::new(31);
        // Every row count the decoder can hand over (1..=16: whole, repeated-row and 2- and
        // 1-row x groups of the tiled kernel; 8 + 4 + 2 + 1 groups of the streaming one), widths
        // below / at / off the 16-lane chunks (masked tails), W row counts off the 4-row tile and
        // a W that does not fill the last task.
        let shapes = [(1, 5, 3), (16, 32, 130), (8, 37, 64), (3, 896, 200), (15, 70, 65), (1, 200, 9), (16, 52, 301), (5, 17, 7), (2, 576, 66), (9, 1, 5)];
        let more: Vec<(usize, usize, usize)> = (1..=MAX_ROWS).map(|rows| (rows, 45, 71)).collect();
        for kernel in [Kernel::Best, Kernel::Stream, Kernel::Tiled] {
            for &(rows, inp, out) in shapes.iter().chain(&more) {
                let x = uniform(&mut rng, rows * inp, -1.0, 1.0);
                let w = uniform(&mut rng, out * inp, -1.0, 1.0);
                let mut yt = vec![f32::NAN; out * rows];
                let mut y = vec![f32::NAN; rows * out];
                matmul_wt_with(kernel, &x, &w, rows, inp, out, &mut yt, &mut y);
                for r in 0..rows {
                    for j in 0..out {
                        let want: f64 = (0..inp).map(|k| x[r * inp + k] as f64 * w[j * inp + k] as f64).sum();
                        let got = y[r * out + j] as f64;
                        assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{kernel:?} ({rows}, {inp}, {out}) y[{r}, {j}] = {got}, want {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn prefetch_settings_parse() {
        assert_eq!(parse_prefetch("l2:2"), Some((CacheLevel::L2, 2)));
        assert_eq!(parse_prefetch("l1:1"), Some((CacheLevel::L1, 1)));
        assert_eq!(parse_prefetch("none"), Some((CacheLevel::L1, 0)));
        for bad in ["l3:1", "l1", "l1:x", "l2:16", ""] {
            assert_eq!(parse_prefetch(bad), None, "{bad}");
        }
        assert_eq!(encode((CacheLevel::L2, 4)), 9);
    }

    #[test]
    fn three_products_in_one_pass_equal_three_calls() {
        let mut rng = crate::rng::Rng::new(5);
        for &(rows, inp, outs) in &[(16, 52, [52, 26, 26]), (3, 37, [200, 130, 0]), (1, 64, [9, 0, 0])] {
            let x = uniform(&mut rng, rows * inp, -1.0, 1.0);
            let ws: Vec<Vec<f32>> = outs.iter().map(|&o| uniform(&mut rng, o * inp, -1.0, 1.0)).collect();
            let mut yt = vec![0.0; outs.iter().sum::<usize>() * rows];
            let (mut a, mut b, mut c) = (vec![f32::NAN; rows * outs[0]], vec![f32::NAN; rows * outs[1]], vec![f32::NAN; rows * outs[2]]);
            matmul_wt3(Kernel::Best, &x, [&ws[0], &ws[1], &ws[2]], outs, rows, inp, &mut yt, [&mut a, &mut b, &mut c]);
            for (m, got) in [a, b, c].iter().enumerate() {
                assert_eq!(got, &matmul_wt(&x, &ws[m], rows, inp, outs[m]), "({rows}, {inp}, {outs:?}) product {m}");
            }
        }
    }
}
