//! The skinny matmul over bf16 copies of W (`rollout_dtype = "bf16"`, issue 24).
//!
//! Why: at 16 decoding rows the product is bound by reading W (benches/README.md, "decode
//! matmul kernel"); bf16 halves the bytes. Only W is rounded: x stays f32 and every product
//! and sum is f32, so the result is the f32 product of x with the rounded W (each W element
//! within 2⁻⁹ relative of the original), not a bf16 product. On AVX-512 the widening is two
//! integer ops per 32 weights: a 32-bit lane holds bf16 elements 2i (low half) and 2i + 1
//! (high half) of W in memory order, so `lane << 16` is element 2i as an f32 and `lane & 0xffff0000`
//! element 2i + 1. x is stored once per product in the matching order ([`pack_x`]: per chunk
//! of 32, its even elements then its odd ones), so the kernel needs no shuffle.
//!
//! Where the CPU has AVX512-BF16, [`Variant::Dot`] is the other body: x is rounded to bf16
//! too and `vdpbf16ps` multiplies 32 pairs per instruction into f32 sums (no widening, half
//! the instructions of the FMA loop). Measured (benches/README.md, change 7) it was no faster
//! than the widening body — the loop waits for W, not for arithmetic — and it is less exact
//! (x within 2⁻⁹ relative as well), so widening is the default; `RETORT_BF16_KERNEL=dot`
//! selects it for experiments.

use rayon::prelude::*;

/// Nearest bf16 (ties to even) of `v`, as bits; NaN stays a (quiet) NaN.
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 of bf16 bits (exact).
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// bf16 copies of `w`, converted on rayon's threads.
pub fn convert(w: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; w.len()];
    out.par_chunks_mut(1 << 16).zip(w.par_chunks(1 << 16)).for_each(|(o, w)| o.iter_mut().zip(w).for_each(|(o, &v)| *o = to_bf16(v)));
    out
}

/// The two bodies (see the module note).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// bf16 W widened to f32, f32 x, FMA (AVX-512 F, BW, VL).
    Widen,
    /// bf16 W and bf16 x through `vdpbf16ps`, f32 sums (AVX512-BF16).
    Dot,
}

/// Whether this CPU has `vdpbf16ps`.
pub fn has_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available() && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The variant decoding uses (0: not chosen yet; 1 + the variant's index).
static CHOICE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The variant decoding uses: `Widen`, unless `RETORT_BF16_KERNEL=dot` (where the CPU has it)
/// or [`set_variant`] says otherwise.
pub fn variant() -> Variant {
    use std::sync::atomic::Ordering::Relaxed;
    match CHOICE.load(Relaxed) {
        1 => Variant::Widen,
        2 => Variant::Dot,
        _ => {
            let v = variant_default();
            set_variant(v);
            v
        }
    }
}

/// `Widen`, or `Dot` with `RETORT_BF16_KERNEL=dot` on a CPU that has it.
pub fn variant_default() -> Variant {
    match std::env::var("RETORT_BF16_KERNEL").as_deref() {
        Ok("dot") if has_dot() => Variant::Dot,
        _ => Variant::Widen,
    }
}

/// Chooses the variant decoding uses (tests; `Dot` without the instructions runs the scalar
/// reference body).
pub fn set_variant(v: Variant) {
    CHOICE.store(if v == Variant::Widen { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

/// Groups of 4 W rows the kernels prefetch ahead (0: none); `RETORT_BF16_PREFETCH=N` or
/// [`set_prefetch`] changes it (the micro-benchmark compares settings). u8::MAX: not read yet.
static PREFETCH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// The prefetch distance in force (default 1).
pub fn prefetch() -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let v = PREFETCH.load(Relaxed);
    if v != u8::MAX {
        return v as usize;
    }
    let d = std::env::var("RETORT_BF16_PREFETCH").ok().and_then(|s| s.parse::<u8>().ok()).filter(|&d| d <= 15).unwrap_or(1);
    PREFETCH.store(d, Relaxed);
    d as usize
}

/// Sets the prefetch distance (groups of 4 W rows; at most 15).
pub fn set_prefetch(distance: usize) {
    PREFETCH.store(distance.min(15) as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this CPU runs the AVX-512 kernel (F for the arithmetic, BW and VL for the masked
/// 16-bit loads of a row's tail). Without it, `rollout_dtype = "bf16"` falls back to the f32
/// weights (the decoder checks this before it makes bf16 copies).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Where element k of a row of `in_dim` sits in [`pack_x`]'s layout: within each whole chunk
/// of 32, even elements first, then odd ones; the tail past the last whole chunk as it is.
fn packed_index(k: usize, in_dim: usize) -> usize {
    let full = in_dim / 32 * 32;
    if k >= full {
        return k;
    }
    let (c, i) = (k / 32, k % 32);
    c * 32 + (i % 2) * 16 + i / 2
}

/// `rows` rows of x (`in_dim` each) into the order of [`variant`]'s kernel (see
/// [`pack_x_with`]).
pub fn pack_x(x: &[f32], rows: usize, in_dim: usize, out: &mut [f32]) {
    pack_x_with(variant(), x, rows, in_dim, out)
}

/// `rows` rows of x into a variant's order, row r at `out[r·in_dim..]`: `Widen`, f32 in the
/// even/odd order of the module note; `Dot`, bf16 pairs in memory order, a pair's bits as
/// one f32 slot (the first `in_dim.div_ceil(2)` slots of the row; an odd row's last pair
/// ends in a 0).
pub fn pack_x_with(variant: Variant, x: &[f32], rows: usize, in_dim: usize, out: &mut [f32]) {
    assert!(x.len() == rows * in_dim && out.len() >= rows * in_dim, "bf16 skinny matmul: bad sizes of x");
    for (src, dst) in x.chunks_exact(in_dim).zip(out.chunks_exact_mut(in_dim)) {
        match variant {
            Variant::Widen => {
                for (k, &v) in src.iter().enumerate() {
                    dst[packed_index(k, in_dim)] = v;
                }
            }
            Variant::Dot => {
                for (d, pair) in dst.iter_mut().zip(src.chunks(2)) {
                    let hi = pair.get(1).map_or(0, |&v| to_bf16(v));
                    *d = f32::from_bits(to_bf16(pair[0]) as u32 | (hi as u32) << 16);
                }
            }
        }
    }
}

/// `yt[j·rows + r] = x_r · w_j` for every row j of this block of bf16 W, with x already in
/// [`pack_x`]'s order (as [`super::dots`] for f32 W).
pub fn dots(xp: &[f32], w: &[u16], rows: usize, in_dim: usize, yt: &mut [f32]) {
    dots_with(variant(), xp, w, rows, in_dim, yt)
}

/// [`dots`] with x packed for `variant` ([`pack_x_with`]).
pub fn dots_with(variant: Variant, xp: &[f32], w: &[u16], rows: usize, in_dim: usize, yt: &mut [f32]) {
    assert!(rows <= super::MAX_ROWS && xp.len() >= rows * in_dim && w.len() % in_dim.max(1) == 0, "bf16 skinny matmul: bad sizes");
    assert!(yt.len() >= w.len() / in_dim.max(1) * rows, "bf16 skinny matmul: bad output buffer");
    if rows == 0 || in_dim == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if variant == Variant::Dot && has_dot() {
            // SAFETY: the CPU has AVX-512 F, BW, VL and BF16; the sizes are checked above.
            return unsafe { avx512::dots::<true>(&xp[..rows * in_dim], w, rows, in_dim, yt) };
        }
        if variant == Variant::Widen && available() {
            // SAFETY: the CPU has AVX-512 F, BW and VL; the sizes are checked above.
            return unsafe { avx512::dots::<false>(&xp[..rows * in_dim], w, rows, in_dim, yt) };
        }
    }
    // The reference body (a CPU without the instructions does not get here from the decoder).
    for (j, w_row) in w.chunks_exact(in_dim).enumerate() {
        for r in 0..rows {
            let x = &xp[r * in_dim..(r + 1) * in_dim];
            let xk = |k: usize| match variant {
                Variant::Widen => x[packed_index(k, in_dim)],
                Variant::Dot => from_bf16((x[k / 2].to_bits() >> (16 * (k % 2))) as u16),
            };
            yt[j * rows + r] = w_row.iter().enumerate().map(|(k, &b)| xk(k) * from_bf16(b)).sum();
        }
    }
}

/// Up to three products of the same x with bf16 weights in one parallel pass (as
/// [`super::matmul_wt3`]); `xp` is scratch for the packed x (at least rows·in_dim).
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt3(x: &[f32], ws: [&[u16]; 3], outs: [usize; 3], rows: usize, in_dim: usize, xp: &mut [f32], yt: &mut [f32], ys: [&mut [f32]; 3]) {
    matmul_wt3_with(variant(), x, ws, outs, rows, in_dim, xp, yt, ys)
}

/// [`matmul_wt3`] with a chosen variant.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt3_with(variant: Variant, x: &[f32], ws: [&[u16]; 3], outs: [usize; 3], rows: usize, in_dim: usize, xp: &mut [f32], yt: &mut [f32], ys: [&mut [f32]; 3]) {
    let total: usize = outs.iter().sum();
    assert!(rows <= super::MAX_ROWS && x.len() == rows * in_dim, "bf16 skinny matmul: bad sizes");
    assert!(yt.len() >= total * rows, "bf16 skinny matmul: bad scratch buffer");
    for m in 0..3 {
        assert!(ws[m].len() == outs[m] * in_dim && ys[m].len() == rows * outs[m], "bf16 skinny matmul: bad sizes of product {m}");
    }
    if rows == 0 || in_dim == 0 {
        ys.into_iter().for_each(|y| y.fill(0.0));
        return;
    }
    pack_x_with(variant, x, rows, in_dim, xp);
    let xp = &xp[..rows * in_dim];
    let (yt0, rest) = yt[..total * rows].split_at_mut(outs[0] * rows);
    let (yt1, yt2) = rest.split_at_mut(outs[1] * rows);
    let (cy, cw) = (rows * super::W_ROWS_PER_TASK, in_dim * super::W_ROWS_PER_TASK);
    yt0.par_chunks_mut(cy)
        .zip(ws[0].par_chunks(cw))
        .chain(yt1.par_chunks_mut(cy).zip(ws[1].par_chunks(cw)))
        .chain(yt2.par_chunks_mut(cy).zip(ws[2].par_chunks(cw)))
        .for_each(|(yt, w)| dots_with(variant, xp, w, rows, in_dim, yt));
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

/// One product with bf16 weights (see [`matmul_wt3`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt_into(x: &[f32], w: &[u16], rows: usize, in_dim: usize, out_dim: usize, xp: &mut [f32], yt: &mut [f32], y: &mut [f32]) {
    matmul_wt_into_with(variant(), x, w, rows, in_dim, out_dim, xp, yt, y)
}

/// [`matmul_wt_into`] with a chosen variant.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt_into_with(variant: Variant, x: &[f32], w: &[u16], rows: usize, in_dim: usize, out_dim: usize, xp: &mut [f32], yt: &mut [f32], y: &mut [f32]) {
    matmul_wt3_with(variant, x, [w, &[], &[]], [out_dim, 0, 0], rows, in_dim, xp, yt, [y, &mut [], &mut []])
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The tiled body: 4 W rows × 4 x rows per tile as [`super::super::tiled`], W read as bf16;
    /// `DOT`: the `vdpbf16ps` tile (x packed as bf16 pairs), else the widening one.
    ///
    /// # Safety
    /// AVX-512 F, BW and VL, and BF16 with `DOT`; sizes as [`super::dots_with`] checks them,
    /// rows ≥ 1, in_dim ≥ 1.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub(super) unsafe fn dots<const DOT: bool>(xp: &[f32], w: &[u16], rows: usize, in_dim: usize, yt: &mut [f32]) {
        let out = w.len() / in_dim;
        let (xq, wp, yp) = (xp.as_ptr(), w.as_ptr(), yt.as_mut_ptr());
        let groups = rows.div_ceil(4);
        let distance = super::prefetch();
        let mut j = 0;
        while j < out {
            let wr: [*const u16; 4] = std::array::from_fn(|t| wp.add((j + t).min(out - 1) * in_dim));
            // A later W group, fetched while this one computes (one row per x group, as the
            // f32 kernel does; a 64-byte line is one chunk of 32 weights).
            let ahead = j + 4 * distance;
            let next = if distance == 0 { 0 } else { out.saturating_sub(ahead).min(4) };
            let mut r = 0;
            let mut g = 0;
            while r < rows {
                let xr: [*const f32; 4] = std::array::from_fn(|t| xq.add((r + t).min(rows - 1) * in_dim));
                let mut pf = [std::ptr::null::<u16>(); 4];
                let mut npf = 0;
                for t in (g..next).step_by(groups) {
                    pf[npf] = wp.add((ahead + t) * in_dim);
                    npf += 1;
                }
                let pf = &pf[..npf];
                let (s, took) = match (rows - r, DOT) {
                    (1, false) => (tile::<1>(xr, wr, in_dim, pf), 1),
                    (2, false) => (tile::<2>(xr, wr, in_dim, pf), 2),
                    (left, false) => (tile::<4>(xr, wr, in_dim, pf), left.min(4)),
                    (1, true) => (tile_dot::<1>(xr, wr, in_dim, pf), 1),
                    (2, true) => (tile_dot::<2>(xr, wr, in_dim, pf), 2),
                    (left, true) => (tile_dot::<4>(xr, wr, in_dim, pf), left.min(4)),
                };
                g += 1;
                let mut buf = [0.0f32; 16];
                _mm512_storeu_ps(buf.as_mut_ptr(), s);
                for wj in 0..(out - j).min(4) {
                    for xi in 0..took {
                        *yp.add((j + wj) * rows + r + xi) = buf[wj * 4 + xi];
                    }
                }
                r += took;
            }
            j += 4;
        }
    }

    /// The 4 × `TX` products of bf16 W rows `wr` with packed x rows `xr[..TX]`; element
    /// `wj·4 + xi` of the result is x row xi · W row wj; the rows `prefetch` are fetched into
    /// L1 along the way.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn tile<const TX: usize>(xr: [*const f32; 4], wr: [*const u16; 4], in_dim: usize, prefetch: &[*const u16]) -> __m512 {
        let mut acc = [_mm512_setzero_ps(); 16];
        let full = in_dim / 32 * 32;
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let mut k = 0;
        while k < full {
            for &p in prefetch {
                // A hint: never faults; p + k is inside that W row.
                _mm_prefetch::<_MM_HINT_T0>(p.add(k) as *const i8);
            }
            let mut lo = [_mm512_setzero_ps(); 4];
            let mut hi = [_mm512_setzero_ps(); 4];
            for t in 0..4 {
                let v = _mm512_loadu_si512(wr[t].add(k) as *const _);
                lo[t] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                hi[t] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
            }
            for (xi, &p) in xr.iter().enumerate().take(TX) {
                let (xe, xo) = (_mm512_loadu_ps(p.add(k)), _mm512_loadu_ps(p.add(k + 16)));
                for t in 0..4 {
                    acc[xi * 4 + t] = _mm512_fmadd_ps(xe, lo[t], acc[xi * 4 + t]);
                    acc[xi * 4 + t] = _mm512_fmadd_ps(xo, hi[t], acc[xi * 4 + t]);
                }
            }
            k += 32;
        }
        // The tail (in_dim − full < 32 elements, in memory order in both): ≤ 2 masked pieces.
        while k < in_dim {
            let n = (in_dim - k).min(16);
            let mask = ((1u32 << n) - 1) as __mmask16;
            let mut wv = [_mm512_setzero_ps(); 4];
            for t in 0..4 {
                let h = _mm256_maskz_loadu_epi16(mask, wr[t].add(k) as *const i16);
                wv[t] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
            }
            for (xi, &p) in xr.iter().enumerate().take(TX) {
                let xv = _mm512_maskz_loadu_ps(mask, p.add(k));
                for t in 0..4 {
                    acc[xi * 4 + t] = _mm512_fmadd_ps(xv, wv[t], acc[xi * 4 + t]);
                }
            }
            k += n;
        }
        super::super::tiled::reduce16(acc)
    }

    /// [`tile`] with `vdpbf16ps`: x rows `xr` hold bf16 pairs (one pair per f32 slot). (Not
    /// inlined into `dots`, which is compiled without BF16 for the widening variant; a call
    /// per tile is small next to its loop.)
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    unsafe fn tile_dot<const TX: usize>(xr: [*const f32; 4], wr: [*const u16; 4], in_dim: usize, prefetch: &[*const u16]) -> __m512 {
        let mut acc = [_mm512_setzero_ps(); 16];
        let full = in_dim / 32 * 32;
        let mut k = 0;
        while k < full {
            for &p in prefetch {
                // A hint: never faults; p + k is inside that W row.
                _mm_prefetch::<_MM_HINT_T0>(p.add(k) as *const i8);
            }
            let wv: [__m512bh; 4] = std::array::from_fn(|t| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wr[t].add(k) as *const _)));
            for (xi, &p) in xr.iter().enumerate().take(TX) {
                let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.add(k / 2) as *const _));
                for t in 0..4 {
                    acc[xi * 4 + t] = _mm512_dpbf16_ps(acc[xi * 4 + t], xv, wv[t]);
                }
            }
            k += 32;
        }
        if k < in_dim {
            // The tail: n < 32 weights, (n + 1) / 2 pairs of x (an odd row's last pair ends in
            // 0, and the masked-off weights load as 0).
            let n = in_dim - k;
            let wmask = ((1u64 << n) - 1) as __mmask32;
            let xmask = ((1u32 << n.div_ceil(2)) - 1) as __mmask16;
            let wv: [__m512bh; 4] = std::array::from_fn(|t| std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(wmask, wr[t].add(k) as *const i16)));
            for (xi, &p) in xr.iter().enumerate().take(TX) {
                let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(xmask, p.add(k / 2) as *const i32));
                for t in 0..4 {
                    acc[xi * 4 + t] = _mm512_dpbf16_ps(acc[xi * 4 + t], xv, wv[t]);
                }
            }
        }
        super::super::tiled::reduce16(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::uniform;
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        // By hand: bf16 keeps 7 fraction bits; 1 + 2⁻⁸ is halfway between 1 (0x3f80, even)
        // and 1 + 2⁻⁷ (0x3f81): to 0x3f80; 1 + 3·2⁻⁸ is halfway between 0x3f81 and 0x3f82: to
        // the even 0x3f82; just above a half rounds up.
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(from_bf16(0x3f81), 1.0 + 2f32.powi(-7));
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(convert(&[1.0, -2.0, 0.0]), vec![0x3f80, 0xc000, 0]);
    }

    #[test]
    fn matches_a_float64_reference_within_the_bf16_bound() {
        // Against two float64 sums: x · bf16(W) (what the kernel computes: only f32
        // accumulation error, 1e-4 relative) and x · W (the f32 weights: each W element is
        // within 2⁻⁹ relative after rounding, so |error| ≤ 2⁻⁹ · Σ|x_k w_k|, plus accumulation).
        let mut rng = crate::rng::Rng::new(47);
        let shapes = [(1, 5, 3), (16, 32, 130), (8, 37, 64), (3, 896, 200), (15, 70, 65), (16, 52, 301), (5, 17, 7), (2, 576, 66), (9, 1, 5), (4, 63, 9), (16, 96, 17)];
        let more: Vec<(usize, usize, usize)> = (1..=super::super::MAX_ROWS).map(|rows| (rows, 45, 71)).collect();
        // `Dot` rounds x too: x·bf16(W) becomes bf16(x)·bf16(W), and the bound against x·W is
        // (1 + 2⁻⁹)² − 1 ≤ 2⁻⁸ + 2⁻¹⁸ relative per product. On a CPU without the instructions
        // each variant runs its scalar reference body (the same arithmetic).
        for variant in [Variant::Widen, Variant::Dot] {
            let rel = if variant == Variant::Dot { 2f64.powi(-8) + 2f64.powi(-18) } else { 2f64.powi(-9) };
            for &(rows, inp, out) in shapes.iter().chain(&more) {
                let x = uniform(&mut rng, rows * inp, -1.0, 1.0);
                let w = uniform(&mut rng, out * inp, -1.0, 1.0);
                let wb = convert(&w);
                let (mut xp, mut yt, mut y) = (vec![0.0; rows * inp], vec![f32::NAN; out * rows], vec![f32::NAN; rows * out]);
                matmul_wt_into_with(variant, &x, &wb, rows, inp, out, &mut xp, &mut yt, &mut y);
                for r in 0..rows {
                    for j in 0..out {
                        let xr: Vec<f32> = x[r * inp..(r + 1) * inp].iter().map(|&v| if variant == Variant::Dot { from_bf16(to_bf16(v)) } else { v }).collect();
                        let (wr, br) = (&w[j * inp..(j + 1) * inp], &wb[j * inp..(j + 1) * inp]);
                        let rounded: f64 = xr.iter().zip(br).map(|(&a, &b)| a as f64 * from_bf16(b) as f64).sum();
                        let xr = &x[r * inp..(r + 1) * inp];
                        let exact: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let abs: f64 = xr.iter().zip(wr).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                        let got = y[r * out + j] as f64;
                        assert!((got - rounded).abs() < 1e-4 * (1.0 + rounded.abs()), "{variant:?} ({rows}, {inp}, {out}) y[{r}, {j}] = {got}, rounded product {rounded}");
                        assert!((got - exact).abs() <= rel * abs + 1e-4 * (1.0 + abs), "{variant:?} ({rows}, {inp}, {out}) y[{r}, {j}] = {got}, x·W = {exact}");
                    }
                }
            }
        }
    }

    #[test]
    fn three_products_in_one_pass_equal_three_calls() {
        let mut rng = crate::rng::Rng::new(8);
        let (rows, inp, outs) = (16, 64, [64, 32, 32]);
        let x = uniform(&mut rng, rows * inp, -1.0, 1.0);
        let ws: Vec<Vec<u16>> = outs.iter().map(|&o| convert(&uniform(&mut rng, o * inp, -1.0, 1.0))).collect();
        let (mut xp, mut yt) = (vec![0.0; rows * inp], vec![0.0; 128 * rows]);
        let (mut a, mut b, mut c) = (vec![f32::NAN; rows * 64], vec![f32::NAN; rows * 32], vec![f32::NAN; rows * 32]);
        matmul_wt3(&x, [&ws[0], &ws[1], &ws[2]], outs, rows, inp, &mut xp, &mut yt, [&mut a, &mut b, &mut c]);
        for (m, got) in [a, b, c].iter().enumerate() {
            let mut want = vec![0.0; rows * outs[m]];
            matmul_wt_into(&x, &ws[m], rows, inp, outs[m], &mut xp, &mut yt, &mut want);
            assert_eq!(got, &want, "product {m}");
        }
    }
}
