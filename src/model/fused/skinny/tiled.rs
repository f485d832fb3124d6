//! The register-tiled AVX-512 body of the skinny matmul (issue 24).
//!
//! Why: the streaming body ([`super::dots_body`]) dots one or two W rows with groups of x rows
//! and sums each product's 16 lanes on its own; at 16 decoding rows that is compute-bound and
//! ran at ~70 GFLOP/s on two cores. Here a tile is 4 W rows × 4 x rows: 16 accumulators,
//! 8 loads per 16 fused multiply-adds (the FMA ports, not the loads, set the pace), and the 16
//! products' lanes are summed together by a transpose-and-add tree (24 shuffles and 14 adds
//! for the tile, instead of 4 shuffles and 4 adds per product). The tail of a row (`in_dim`
//! not a multiple of 16) is a masked load, so odd widths need no scalar loop; a W or x group
//! past the end repeats its last row and the extra products are not stored.

use std::arch::x86_64::*;

/// `yt[j·rows + r] = x_r · w_j` for every row j of this block of W (as [`super::dots`]).
///
/// # Safety
/// The CPU must have AVX-512F; `x.len() == rows·in_dim`, `w.len()` a multiple of `in_dim`,
/// `yt.len() ≥ (w.len() / in_dim)·rows`, `rows ≥ 1`, `in_dim ≥ 1` (the caller checks).
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn dots_tiled(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32]) {
    let (level, distance) = super::prefetch();
    match level {
        super::CacheLevel::L1 => body::<_MM_HINT_T0>(x, w, rows, in_dim, yt, distance),
        super::CacheLevel::L2 => body::<_MM_HINT_T1>(x, w, rows, in_dim, yt, distance),
    }
}

/// [`dots_tiled`] prefetching W `distance` groups of 4 rows ahead (0: none) into cache `HINT`.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn body<const HINT: i32>(x: &[f32], w: &[f32], rows: usize, in_dim: usize, yt: &mut [f32], distance: usize) {
    let out = w.len() / in_dim;
    if out == 0 {
        return;
    }
    let full = in_dim / 16 * 16;
    let mask = ((1u32 << (in_dim - full)) - 1) as __mmask16;
    let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), yt.as_mut_ptr());
    // x groups per W group: 4 rows each, a last one of 1–3.
    let groups = rows.div_ceil(4);
    let mut j = 0;
    while j < out {
        let wr: [*const f32; 4] = std::array::from_fn(|t| wp.add((j + t).min(out - 1) * in_dim));
        // A later W group's rows, fetched into cache while this group computes (without it
        // the kernel waited for memory, then computed: 2× the bandwidth bound of a step). x
        // group g fetches those rows g, g + groups, …: each row once, one line per chunk.
        let ahead = j + 4 * distance;
        let next = if distance == 0 { 0 } else { out.saturating_sub(ahead).min(4) };
        let mut r = 0;
        let mut g = 0;
        while r < rows {
            let xr: [*const f32; 4] = std::array::from_fn(|t| xp.add((r + t).min(rows - 1) * in_dim));
            let mut pf = [std::ptr::null::<f32>(); 4];
            let mut npf = 0;
            for t in (g..next).step_by(groups) {
                pf[npf] = wp.add((ahead + t) * in_dim);
                npf += 1;
            }
            let pf = &pf[..npf];
            // x rows 4 (the last group may repeat a row), 2 or 1 at a time.
            let (s, took) = match rows - r {
                1 => (tile::<1, HINT>(xr, wr, full, mask, pf), 1),
                2 => (tile::<2, HINT>(xr, wr, full, mask, pf), 2),
                left => (tile::<4, HINT>(xr, wr, full, mask, pf), left.min(4)),
            };
            g += 1;
            // s[wj·4 + xi] = x_{r+xi} · w_{j+wj}.
            if took == 4 && j + 4 <= out {
                let at = |wj: usize| yp.add((j + wj) * rows + r);
                _mm_storeu_ps(at(0), _mm512_extractf32x4_ps::<0>(s));
                _mm_storeu_ps(at(1), _mm512_extractf32x4_ps::<1>(s));
                _mm_storeu_ps(at(2), _mm512_extractf32x4_ps::<2>(s));
                _mm_storeu_ps(at(3), _mm512_extractf32x4_ps::<3>(s));
            } else {
                let mut buf = [0.0f32; 16];
                _mm512_storeu_ps(buf.as_mut_ptr(), s);
                for wj in 0..(out - j).min(4) {
                    for xi in 0..took {
                        *yp.add((j + wj) * rows + r + xi) = buf[wj * 4 + xi];
                    }
                }
            }
            r += took;
        }
        j += 4;
    }
}

/// The 4 × `TX` products of W rows `wr` with x rows `xr[..TX]` over `full` lanes plus the
/// masked tail, prefetching the first `full` lanes of the rows `prefetch`; element `wj·4 + xi`
/// of the result is x row xi · W row wj (elements of x rows ≥ TX are 0).
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile<const TX: usize, const HINT: i32>(xr: [*const f32; 4], wr: [*const f32; 4], full: usize, mask: __mmask16, prefetch: &[*const f32]) -> __m512 {
    let mut acc = [_mm512_setzero_ps(); 16];
    let mut k = 0;
    while k < full {
        for &p in prefetch {
            // A hint: never faults; p + k is inside that W row.
            _mm_prefetch::<HINT>(p.add(k) as *const i8);
        }
        let wv = [_mm512_loadu_ps(wr[0].add(k)), _mm512_loadu_ps(wr[1].add(k)), _mm512_loadu_ps(wr[2].add(k)), _mm512_loadu_ps(wr[3].add(k))];
        for (xi, &p) in xr.iter().enumerate().take(TX) {
            let xv = _mm512_loadu_ps(p.add(k));
            for wj in 0..4 {
                acc[xi * 4 + wj] = _mm512_fmadd_ps(xv, wv[wj], acc[xi * 4 + wj]);
            }
        }
        k += 16;
    }
    if mask != 0 {
        // The last in_dim − full lanes; the masked-off lanes load as 0 and add nothing.
        let wv = [
            _mm512_maskz_loadu_ps(mask, wr[0].add(k)),
            _mm512_maskz_loadu_ps(mask, wr[1].add(k)),
            _mm512_maskz_loadu_ps(mask, wr[2].add(k)),
            _mm512_maskz_loadu_ps(mask, wr[3].add(k)),
        ];
        for (xi, &p) in xr.iter().enumerate().take(TX) {
            let xv = _mm512_maskz_loadu_ps(mask, p.add(k));
            for wj in 0..4 {
                acc[xi * 4 + wj] = _mm512_fmadd_ps(xv, wv[wj], acc[xi * 4 + wj]);
            }
        }
    }
    reduce16(acc)
}

/// Sums the 16 lanes of each of 16 vectors: element `l·4 + n` of the result is Σ a[4n + l].
/// Three rounds, each adding pairs after a shuffle: 128-bit lanes (16 → 8 vectors, each
/// holding two inputs' halves), again (8 → 4, each lane one input's quarter), then within
/// the lanes (4 → 1).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn reduce16(a: [__m512; 16]) -> __m512 {
    // c[m]: lanes 0–1 partial sums of a[2m], lanes 2–3 of a[2m + 1].
    let mut c = [_mm512_setzero_ps(); 8];
    for m in 0..8 {
        let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(a[2 * m], a[2 * m + 1]);
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(a[2 * m], a[2 * m + 1]);
        c[m] = _mm512_add_ps(lo, hi);
    }
    // e[n]: lane l holds four partial sums of a[4n + l].
    let mut e = [_mm512_setzero_ps(); 4];
    for n in 0..4 {
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(c[2 * n], c[2 * n + 1]);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(c[2 * n], c[2 * n + 1]);
        e[n] = _mm512_add_ps(lo, hi);
    }
    // Per lane l: u = [e0, e1, e0, e1] and v = [e2, e3, e2, e3] half-summed, then one more add.
    let u = _mm512_add_ps(_mm512_unpacklo_ps(e[0], e[1]), _mm512_unpackhi_ps(e[0], e[1]));
    let v = _mm512_add_ps(_mm512_unpacklo_ps(e[2], e[3]), _mm512_unpackhi_ps(e[2], e[3]));
    _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(u, v), _mm512_shuffle_ps::<0b11_10_11_10>(u, v))
}
