//! `dst (f32) [+]= lhs · rhs` with the operands rounded to bf16 and f32 sums: the products of
//! `update_dtype = "bf16"` (issue 24), for the same strided operands as [`sgemm`].
//!
//! Why: the update (forward, backward, AdamW) was 60–70 % of an RL step at 135M–0.5B and ran
//! at f32 gemm speed. This CPU class has AMX, whose bf16 tile product does 512× the
//! multiply-adds of one AVX-512 FMA. Each call packs both operands once into bf16 tiles
//! (`pack_a`, `pack_b`; 1 KiB per 16 × 32 tile, contiguous, so the tile loads stream), then
//! splits the output into blocks (64 × 64 by default, [`Blocking`]) over rayon's threads; a
//! block walks k in steps of up to 768 with its 32 × 32 pieces of C in tile registers for
//! the step ([`amx::Tiles::block`]); the first step of a product that does not accumulate
//! starts from zero tiles instead of reading dst.
//!
//! Without AMX (or when Linux refuses the tile state; other architectures) the operands are
//! rounded to bf16 in f32 copies and go through [`sgemm`]: the same products (a product of
//! two bf16 values is exact in f32), summed in another order, so the numerics do not depend on
//! the machine beyond f32 rounding.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;

use super::gemm::{sgemm, MatRef};
use super::precision::Precision;
use candle_core::{bail, Result};
use rayon::prelude::*;

/// `dst [+]= lhs · rhs` at the given precision: [`sgemm`] for f32, [`gemm_bf16`] for bf16.
pub(crate) fn gemm(precision: Precision, dst: &mut [f32], lhs: &MatRef, rhs: &MatRef, accumulate: bool) -> Result<()> {
    match precision {
        Precision::F32 => sgemm(dst, lhs, rhs, accumulate),
        Precision::Bf16 => gemm_bf16(dst, lhs, rhs, accumulate),
    }
}

/// How [`gemm_bf16`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// AMX tiles (`tdpbf16ps`).
    Amx,
    /// Rounded f32 copies through [`sgemm`].
    Rounded,
}

/// The body this machine runs: AMX where present and permitted.
pub(crate) fn body() -> Body {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if amx::available() {
        return Body::Amx;
    }
    Body::Rounded
}

/// `dst (m × n, row-major, contiguous) [+]= bf16(lhs) · bf16(rhs)` with f32 sums.
pub(crate) fn gemm_bf16(dst: &mut [f32], lhs: &MatRef, rhs: &MatRef, accumulate: bool) -> Result<()> {
    gemm_bf16_with(body(), dst, lhs, rhs, accumulate)
}

/// Settles the shapes with nothing to multiply (m, n or k zero: dst is left, or zeroed when
/// not accumulating); true if the product was one of them.
fn empty_product(dst: &mut [f32], (m, k, n): (usize, usize, usize), accumulate: bool) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 && !accumulate {
        dst.fill(0.0);
    }
    k == 0
}

/// [`gemm_bf16`] with a chosen body (tests and the bench compare them; `Amx` falls back to
/// `Rounded` where it is unavailable).
pub(crate) fn gemm_bf16_with(body: Body, dst: &mut [f32], lhs: &MatRef, rhs: &MatRef, accumulate: bool) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.len() != m * n || !lhs.fits() || !rhs.fits() {
        bail!("fused gemm (bf16): operands do not fit ({m}×{k} · {}×{n} into {})", rhs.rows, dst.len());
    }
    if empty_product(dst, (m, k, n), accumulate) {
        return Ok(());
    }
    match body {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        Body::Amx if amx::available() => {
            amx_product(dst, lhs, rhs, accumulate);
            Ok(())
        }
        // The fallback: bf16-rounded f32 copies through sgemm (the same path as a packed rhs).
        _ => gemm_bf16_packed(dst, lhs, &PackedRhs::new(Body::Rounded, rhs)?, accumulate),
    }
}

/// `x` with every element rounded to bf16 (kept in f32): the data and strides of the copy.
/// A view that covers its whole slice (row-major, or transposed like Wᵀ and gᵀ) is rounded
/// in storage order and keeps its strides — one contiguous pass, where a row-major copy of a
/// transposed view gathered every element a row length apart; sgemm reads the strides.
/// Other views get a row-major copy.
fn rounded_copy(x: &MatRef) -> (Vec<f32>, usize, usize) {
    let bf = |v: f32| f32::from_bits((round(v) as u32) << 16);
    let dense = (x.row_stride == x.cols && x.col_stride == 1) || (x.row_stride == 1 && x.col_stride == x.rows);
    if dense && x.data.len() == x.rows * x.cols {
        let mut out = vec![0.0f32; x.data.len()];
        out.par_chunks_mut(1 << 14).zip(x.data.par_chunks(1 << 14)).for_each(|(o, d)| o.iter_mut().zip(d).for_each(|(o, &v)| *o = bf(v)));
        return (out, x.row_stride, x.col_stride);
    }
    let mut out = vec![0.0f32; x.rows * x.cols];
    out.par_chunks_mut(x.cols.max(1)).enumerate().for_each(|(i, row)| row.iter_mut().enumerate().for_each(|(j, o)| *o = bf(x.data[i * x.row_stride + j * x.col_stride])));
    (out, x.cols, 1)
}

/// A right operand packed once for several products (the LM head's W, the same for every row
/// chunk of the forward and of the backward): what [`gemm_bf16_with`] makes of `rhs` at every
/// call, so a product with it is bitwise the per-call one. Why: the head's W is 28M elements
/// at the 135M shape, and packing it per chunk did it 9 times a step (issue 24).
pub(crate) struct PackedRhs {
    k: usize,
    n: usize,
    data: PackedData,
}

enum PackedData {
    /// AMX pair-layout panels ([`pack_b`]) of `chunks` k-chunks each.
    #[cfg_attr(not(all(target_arch = "x86_64", target_os = "linux")), allow(dead_code))]
    Tiles { chunks: usize, tiles: Vec<u16> },
    /// The rounded f32 copy the fallback multiplies with, and its (row, column) strides.
    Rounded(Vec<f32>, usize, usize),
}

impl PackedRhs {
    /// `rhs` packed for `body` (the one [`gemm_bf16_packed`] must then be called with).
    pub(crate) fn new(body: Body, rhs: &MatRef) -> Result<PackedRhs> {
        if !rhs.fits() {
            bail!("fused gemm (bf16): right operand {}×{} does not fit its data", rhs.rows, rhs.cols);
        }
        let (k, n) = (rhs.rows, rhs.cols);
        let data = match body {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Body::Amx if amx::available() => {
                let chunks = k.div_ceil(TILE_K);
                PackedData::Tiles { chunks, tiles: pack_b(rhs, chunks) }
            }
            _ => {
                let (b, rs, cs) = rounded_copy(rhs);
                PackedData::Rounded(b, rs, cs)
            }
        };
        Ok(PackedRhs { k, n, data })
    }
}

/// `dst (m × n) [+]= bf16(lhs) · rhs` for a right operand packed by [`PackedRhs::new`]:
/// bitwise what [`gemm_bf16_with`] gives for the unpacked `rhs` with the same body.
pub(crate) fn gemm_bf16_packed(dst: &mut [f32], lhs: &MatRef, rhs: &PackedRhs, accumulate: bool) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.n);
    if rhs.k != k || dst.len() != m * n || !lhs.fits() {
        bail!("fused gemm (bf16): operands do not fit ({m}×{k} · packed {}×{n} into {})", rhs.k, dst.len());
    }
    if empty_product(dst, (m, k, n), accumulate) {
        return Ok(());
    }
    match &rhs.data {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        PackedData::Tiles { chunks, tiles } => {
            let a = pack_a(lhs, *chunks);
            amx_packed(dst, (m, n, *chunks), &a, tiles, accumulate);
            Ok(())
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        PackedData::Tiles { .. } => unreachable!("AMX tiles are only packed on Linux x86-64"),
        PackedData::Rounded(b, brs, bcs) => {
            let (a, ars, acs) = rounded_copy(lhs);
            let a = MatRef { data: &a, rows: m, cols: k, row_stride: ars, col_stride: acs };
            let b = MatRef { data: b, rows: k, cols: n, row_stride: *brs, col_stride: *bcs };
            sgemm(dst, &a, &b, accumulate)
        }
    }
}

/// A right operand for several products at a precision: as given for f32 (sgemm reads it
/// through its strides), packed once for bf16.
pub(crate) enum Rhs<'a> {
    F32(MatRef<'a>),
    Bf16(PackedRhs),
}

impl<'a> Rhs<'a> {
    pub(crate) fn new(precision: Precision, rhs: MatRef<'a>) -> Result<Rhs<'a>> {
        Ok(match precision {
            Precision::F32 => Rhs::F32(rhs),
            Precision::Bf16 => Rhs::Bf16(PackedRhs::new(body(), &rhs)?),
        })
    }

    /// `dst [+]= lhs · self` at the precision it was made for.
    pub(crate) fn product(&self, dst: &mut [f32], lhs: &MatRef, accumulate: bool) -> Result<()> {
        match self {
            Rhs::F32(rhs) => sgemm(dst, lhs, rhs, accumulate),
            Rhs::Bf16(rhs) => gemm_bf16_packed(dst, lhs, rhs, accumulate),
        }
    }
}

/// Rows and columns of a tile, and k per tile.
const TILE: usize = 16;
const TILE_K: usize = 32;
/// bf16 elements of one packed tile (1 KiB).
const TILE_ELEMS: usize = TILE * TILE_K;

/// The blocking: an output block of `m × n` per rayon task, walked in k-steps of `chunks`
/// chunks of 32 (C stays in tile registers for a step). Measured (benches/README.md): small
/// square blocks with long k-steps were fastest, since every C load or store of a 32 × 32
/// block is 16 scattered rows of dst; `RETORT_AMX_BLOCK=m,n,chunks` overrides for experiments.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    m: usize,
    n: usize,
    chunks: usize,
}

fn blocking() -> Blocking {
    static B: std::sync::OnceLock<Blocking> = std::sync::OnceLock::new();
    *B.get_or_init(|| {
        let default = Blocking { m: 64, n: 64, chunks: 24 };
        let Ok(v) = std::env::var("RETORT_AMX_BLOCK") else { return default };
        let p: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match p[..] {
            [m, n, c] if m > 0 && n > 0 && c > 0 => Blocking { m: m.div_ceil(32) * 32, n: n.div_ceil(32) * 32, chunks: c },
            _ => default,
        }
    })
}

/// Nearest bf16 (ties to even) of `v`, as bits, NaN kept a quiet NaN: `skinny::bf16::to_bf16`
/// written with a select instead of an early return, so the packing loops vectorise.
#[inline(always)]
fn round(v: f32) -> u16 {
    let b = v.to_bits();
    let nearest = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if v.is_nan() {
        ((b >> 16) as u16) | 0x40
    } else {
        nearest
    }
}

/// A packed in 16-row panels: panel `t` holds rows 16t..16t + 16 as k-chunks of 32, each chunk a
/// 16 × 32 row-major bf16 tile. Rows are padded to a multiple of 32 (the kernel takes two
/// tiles), k to a multiple of 32, with zeros.
fn pack_a(a: &MatRef, chunks: usize) -> Vec<u16> {
    let panels = a.rows.div_ceil(2 * TILE) * 2;
    let mut out = vec![0u16; panels * chunks * TILE_ELEMS];
    if a.col_stride == 1 {
        out.par_chunks_mut(chunks * TILE_ELEMS).enumerate().for_each(|(t, panel)| {
            // Row-major: each tile row is 32 consecutive elements of a source row.
            for r in (t * TILE)..((t + 1) * TILE).min(a.rows) {
                let src = &a.data[r * a.row_stride..r * a.row_stride + a.cols];
                for (c, piece) in src.chunks(TILE_K).enumerate() {
                    let dst = &mut panel[c * TILE_ELEMS + (r - t * TILE) * TILE_K..][..piece.len()];
                    dst.iter_mut().zip(piece).for_each(|(d, &v)| *d = round(v));
                }
            }
        });
    } else {
        // A transposed source (gᵀ, Gᵀ of the weight gradients: row stride 1): a task takes
        // A_GROUP panels and walks k outer, so each k reads A_GROUP·16 consecutive elements of
        // the source (one run of whole cache lines) rather than 16 per panel, one page apart.
        out.par_chunks_mut(A_GROUP * chunks * TILE_ELEMS).enumerate().for_each(|(g, group)| {
            let r0 = g * A_GROUP * TILE;
            let r1 = (r0 + A_GROUP * TILE).min(a.rows);
            for k in 0..a.cols {
                let at = (k / TILE_K) * TILE_ELEMS + k % TILE_K;
                for r in r0..r1 {
                    let (t, i) = ((r - r0) / TILE, (r - r0) % TILE);
                    group[t * chunks * TILE_ELEMS + at + i * TILE_K] = round(a.data[r * a.row_stride + k * a.col_stride]);
                }
            }
        });
    }
    out
}

/// Panels of a transposed A packed by one task (see [`pack_a`]): 4 × 16 rows, 256 bytes of a
/// source row per k.
const A_GROUP: usize = 4;

/// B packed in 16-column panels in AMX's pair ("VNNI") layout: in panel `t`, k-chunk c, tile
/// row p holds for each of the 16 columns the pair (k = 32c + 2p, 32c + 2p + 1), so one tile
/// row is 16 dwords. Columns padded to a multiple of 32, k to a multiple of 32, with zeros.
fn pack_b(b: &MatRef, chunks: usize) -> Vec<u16> {
    let panels = b.cols.div_ceil(2 * TILE) * 2;
    let mut out = vec![0u16; panels * chunks * TILE_ELEMS];
    // Where element (k, column j of the panel) goes: chunk, pair row, column, low/high half.
    let at = |k: usize, j: usize| (k / TILE_K) * TILE_ELEMS + (k % TILE_K / 2) * 2 * TILE + j * 2 + k % 2;
    out.par_chunks_mut(chunks * TILE_ELEMS).enumerate().for_each(|(t, panel)| {
        let cols = (t * TILE)..((t + 1) * TILE).min(b.cols);
        if cols.is_empty() {
            return; // a padding panel: zeros
        }
        if b.row_stride == 1 {
            // A source column is contiguous (Wᵀ read through strides): walk it.
            for c in cols {
                let src = &b.data[c * b.col_stride..c * b.col_stride + b.rows];
                for (k, &v) in src.iter().enumerate() {
                    panel[at(k, c - t * TILE)] = round(v);
                }
            }
        } else if b.col_stride == 1 {
            // Row-major: interleave two source rows into one run of pairs.
            let width = cols.len();
            for k in (0..b.rows).step_by(2) {
                let r0 = &b.data[k * b.row_stride + cols.start..][..width];
                let base = at(k, 0);
                let run = &mut panel[base..base + 2 * width];
                if k + 1 < b.rows {
                    let r1 = &b.data[(k + 1) * b.row_stride + cols.start..][..width];
                    run.chunks_exact_mut(2).zip(r0.iter().zip(r1)).for_each(|(d, (&x, &y))| (d[0], d[1]) = (round(x), round(y)));
                } else {
                    run.chunks_exact_mut(2).zip(r0).for_each(|(d, &x)| d[0] = round(x));
                }
            }
        } else {
            for k in 0..b.rows {
                for c in cols.clone() {
                    panel[at(k, c - t * TILE)] = round(b.data[k * b.row_stride + c * b.col_stride]);
                }
            }
        }
    });
    out
}

/// dst's base pointer, shared by tasks that write disjoint blocks.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
// SAFETY: every task writes only its own output block (disjoint rows × columns).
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_product(dst: &mut [f32], lhs: &MatRef, rhs: &MatRef, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let chunks = k.div_ceil(TILE_K);
    let (a, b) = rayon::join(|| pack_a(lhs, chunks), || pack_b(rhs, chunks));
    amx_packed(dst, (m, n, chunks), &a, &b, accumulate);
}

/// The AMX product of operands packed by [`pack_a`] and [`pack_b`] with `chunks` k-chunks.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_packed(dst: &mut [f32], (m, n, chunks): (usize, usize, usize), a: &[u16], b: &[u16], accumulate: bool) {
    let bl = blocking();
    let blocks: Vec<(usize, usize)> = (0..m).step_by(bl.m).flat_map(|i| (0..n).step_by(bl.n).map(move |j| (i, j))).collect();
    let out = DstPtr(dst.as_mut_ptr());
    blocks.par_iter().for_each(|&(i0, j0)| {
        let out = out;
        let tiles = amx::Tiles::load();
        let mut scratch = Scratch([0.0; 32 * 32]);
        let (i1, j1) = ((i0 + bl.m).min(m), (j0 + bl.n).min(n));
        for c0 in (0..chunks).step_by(bl.chunks) {
            let steps = bl.chunks.min(chunks - c0);
            // The first k-step overwrites C unless the product accumulates into dst.
            let fresh = c0 == 0 && !accumulate;
            for i in (i0..i1).step_by(2 * TILE) {
                let ta = |t: usize| a[(t * chunks + c0) * TILE_ELEMS..].as_ptr();
                let pa = [ta(i / TILE), ta(i / TILE + 1)];
                for j in (j0..j1).step_by(2 * TILE) {
                    let tb = |t: usize| b[(t * chunks + c0) * TILE_ELEMS..].as_ptr();
                    let pb = [tb(j / TILE), tb(j / TILE + 1)];
                    let (rows, cols) = ((m - i).min(32), (n - j).min(32));
                    // SAFETY: the panels hold `chunks` tiles per 16 rows / columns, padded to
                    // 32 (pack_a / pack_b), so `steps` chunks from c0 are inside; C is either
                    // a full 32 × 32 block of dst (row stride n) or the 32 × 32 scratch.
                    unsafe {
                        let c = out.0.add(i * n + j);
                        if rows == 32 && cols == 32 {
                            tiles.block(c, n * 4, pa, pb, steps, fresh);
                        } else {
                            if !fresh {
                                scratch.load(c, n, rows, cols);
                            }
                            tiles.block(scratch.0.as_mut_ptr(), 32 * 4, pa, pb, steps, fresh);
                            scratch.store(c, n, rows, cols);
                        }
                    }
                }
            }
        }
    });
}

/// A 32 × 32 f32 block for the ragged edges of C (zeros outside the valid part).
#[repr(C, align(64))]
struct Scratch([f32; 32 * 32]);

impl Scratch {
    /// # Safety
    /// `c` must cover `rows` rows of `cols` valid elements at row stride `n`.
    unsafe fn load(&mut self, c: *const f32, n: usize, rows: usize, cols: usize) {
        self.0.fill(0.0);
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(c.add(r * n), self.0[r * 32..].as_mut_ptr(), cols);
        }
    }

    /// # Safety
    /// As [`Scratch::load`].
    unsafe fn store(&self, c: *mut f32, n: usize, rows: usize, cols: usize) {
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(self.0[r * 32..].as_ptr(), c.add(r * n), cols);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::skinny::bf16::to_bf16;

    #[test]
    fn rounding_is_the_skinny_kernels_rounding() {
        for v in [0.0f32, -0.0, 1.0, 1.00390625, 1.01171875, -3.3e-39, 3.4e38, f32::INFINITY, f32::NAN, f32::MAX, 1.0e-40, 0.1, -7.77] {
            assert_eq!(round(v), to_bf16(v), "{v}");
        }
    }

    /// A (rows × cols) view of `data` stored row-major, or (transposed) stored column-major.
    fn view(data: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_> {
        if transposed {
            MatRef { data, rows, cols, row_stride: 1, col_stride: rows }
        } else {
            MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
        }
    }

    fn at(x: &MatRef, i: usize, j: usize) -> f32 {
        x.data[i * x.row_stride + j * x.col_stride]
    }

    /// Both bodies against a float64 sum over the bf16-rounded operands, and against the
    /// float64 sum over the unrounded ones within the rounding bound: bf16 keeps 8 significant
    /// bits, so each operand is within u = 2⁻⁸ relative of its bf16 value and
    /// |Σ a·b − Σ bf16(a)·bf16(b)| ≤ (2u + u²) Σ |a·b|;
    /// the f32 sums add at most k·2⁻²⁴ Σ |a·b| (a loose bound; we take 2k·2⁻²⁴).
    #[test]
    fn matches_a_float64_reference_within_the_bf16_bound() {
        let mut rng = crate::rng::Rng::new(24);
        // Ragged against the 16 × 16 tiles, the 32-wide k-chunk, the 32 × 32 block and the
        // 128 × 256 task block and the 256-wide k step; one shape larger than a task block.
        let shapes = [(1, 1, 1), (2, 0, 3), (3, 5, 7), (33, 5, 40), (5, 33, 40), (16, 32, 16), (17, 33, 31), (40, 300, 70), (33, 64, 300), (130, 530, 260), (5, 1000, 3)];
        for &(m, k, n) in &shapes {
            for &(ta, tb, accumulate) in &[(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
                let a_data: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
                let b_data: Vec<f32> = (0..k * n).map(|_| rng.f32() * 2.0 - 1.0).collect();
                let init: Vec<f32> = (0..m * n).map(|_| rng.f32() - 0.5).collect();
                let (a, b) = (view(&a_data, m, k, ta), view(&b_data, k, n, tb));
                for body in [Body::Amx, Body::Rounded] {
                    let mut dst = if accumulate { init.clone() } else { vec![f32::NAN; m * n] };
                    gemm_bf16_with(body, &mut dst, &a, &b, accumulate).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let (mut exact, mut rounded, mut size) = (0f64, 0f64, 0f64);
                            for p in 0..k {
                                let (x, y) = (at(&a, i, p), at(&b, p, j));
                                let r = |v: f32| f32::from_bits((to_bf16(v) as u32) << 16) as f64;
                                exact += x as f64 * y as f64;
                                rounded += r(x) * r(y);
                                size += (x as f64 * y as f64).abs();
                            }
                            let base = if accumulate { init[i * n + j] as f64 } else { 0.0 };
                            let got = dst[i * n + j] as f64;
                            let what = format!("{body:?} {m}×{k}·{k}×{n} ta {ta} tb {tb} acc {accumulate} at ({i}, {j})");
                            let sum_err = 2.0 * (k as f64 + 1.0) * 2f64.powi(-24) * (size + base.abs());
                            assert!((got - base - rounded).abs() <= sum_err + 1e-30, "{what}: {got} vs rounded reference {}", base + rounded);
                            let bound = (2.0 * 2f64.powi(-8) + 2f64.powi(-16)) * size + sum_err;
                            assert!((got - base - exact).abs() <= bound + 1e-30, "{what}: {got} vs exact {} (bound {bound})", base + exact);
                        }
                    }
                }
            }
        }
    }

    /// A right operand packed once gives bitwise the per-call product for every left operand
    /// it is used with (the head's row chunks), on both bodies and both layouts of B.
    #[test]
    fn a_rhs_packed_once_gives_the_per_call_product_bitwise() {
        let mut rng = crate::rng::Rng::new(25);
        for &(k, n) in &[(1usize, 1usize), (33, 40), (64, 300), (530, 70)] {
            for tb in [false, true] {
                let b_data: Vec<f32> = (0..k * n).map(|_| rng.f32() * 2.0 - 1.0).collect();
                let b = view(&b_data, k, n, tb);
                for body in [Body::Amx, Body::Rounded] {
                    let packed = PackedRhs::new(body, &b).unwrap();
                    for &(m, ta, accumulate) in &[(1usize, false, false), (17, true, true), (40, false, true), (130, true, false)] {
                        let a_data: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
                        let a = view(&a_data, m, k, ta);
                        let init: Vec<f32> = (0..m * n).map(|_| rng.f32() - 0.5).collect();
                        let (mut once, mut per_call) = (init.clone(), init.clone());
                        gemm_bf16_packed(&mut once, &a, &packed, accumulate).unwrap();
                        gemm_bf16_with(body, &mut per_call, &a, &b, accumulate).unwrap();
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&once), bits(&per_call), "{body:?} {m}×{k}·{k}×{n} ta {ta} tb {tb} acc {accumulate}");
                    }
                }
            }
        }
        let b = [0.0f32; 6];
        let packed = PackedRhs::new(body(), &view(&b, 2, 3, false)).unwrap();
        let err = gemm_bf16_packed(&mut [0.0; 3], &view(&b, 1, 3, false), &packed, false).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }

    /// The transposed path of `pack_a` (task groups of panels, k outer) packs exactly what the
    /// row-major path packs for the same matrix. Runs on every machine (packing is plain code),
    /// so the AMX body's packing is checked where AMX is absent too.
    #[test]
    fn transposed_packing_equals_row_major_packing() {
        let mut rng = crate::rng::Rng::new(26);
        for &(m, k) in &[(1usize, 1usize), (17, 33), (64, 64), (100, 70), (300, 45)] {
            let data: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let mut t = vec![0.0f32; m * k];
            (0..m).for_each(|i| (0..k).for_each(|j| t[j * m + i] = data[i * k + j]));
            let chunks = k.div_ceil(TILE_K);
            assert_eq!(pack_a(&view(&data, m, k, false), chunks), pack_a(&view(&t, m, k, true), chunks), "{m}×{k}");
        }
    }

    #[test]
    fn f32_precision_is_sgemm() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [0.1f32, 0.2, 0.3, 0.4];
        let (va, vb) = (view(&a, 2, 2, false), view(&b, 2, 2, true));
        let (mut x, mut y) = (vec![0.0; 4], vec![0.0; 4]);
        gemm(Precision::F32, &mut x, &va, &vb, false).unwrap();
        sgemm(&mut y, &va, &vb, false).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let a = [0.0f32; 6];
        let mut dst = vec![0.0; 4];
        let err = gemm_bf16(&mut dst, &view(&a, 2, 3, false), &view(&a, 2, 3, false), false).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}
