//! Vectorisable building blocks for the row kernels: an `exp` the compiler can unroll into
//! SIMD lanes, sums and dot products with a fixed 16-lane order, and a dispatcher that
//! compiles a closure's body for AVX-512 or AVX2 when the CPU has them.
//!
//! Why: glibc's `expf` is a scalar call (and takes a slow path for arguments below −87, which
//! every masked attention score is), and a running `f64` sum is a serial dependency chain the
//! compiler may not reorder. At the tiny shapes, the attention softmax alone was ~9 % of a
//! training step's samples, most of it in `expf` (issue 8). The lane order here is fixed,
//! so results are the same bits whichever instruction set runs them.

/// Lanes of the partial sums: one AVX-512 register of f32, two AVX2 registers.
const LANES: usize = 16;

/// Below this, `exp` underflows f32's normal range; it returns 0 there.
const EXP_MIN: f32 = -87.336_55;
/// Above this, 2^n would overflow the exponent; the argument is clamped.
const EXP_MAX: f32 = 88.3;
/// 1.5·2^23: a float whose unit in the last place is 1, for rounding to integers.
const ROUND: f32 = 12_582_912.0;

/// `e^x` within 2 ulp on [−87.3, 88.3], 0 below, `e^88.3` above (Cephes' expf scheme:
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-6 polynomial for e^r, 2^n from the
/// exponent bits). Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    // floor(t) in float arithmetic: adding and subtracting 1.5·2^23 rounds t to the nearest
    // integer (|t| < 2^22; the clamp keeps |t| < 130), one down if that passed t. Neither
    // `f32::floor` (a libm call with no vector form on baseline x86-64) nor `as i32` (a
    // saturating conversion, compiled as a scalar compare-and-convert per lane) vectorises:
    // perf at the Qwen2-VL-2B shape found the attention softmax in scalar and SSE code, 14 %
    // of the tower's samples.
    let t = xc * LOG2E + 0.5;
    let i = (t + ROUND) - ROUND;
    let n = if i > t { i - 1.0 } else { i };
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let er = p * r2 + r + 1.0;
    // 2^n from the exponent bits: n + 127 (in 1..=254) sits in the low mantissa bits of
    // ROUND + n + 127, an exact float sum.
    let scale = f32::from_bits((n + (ROUND + 127.0)).to_bits().wrapping_sub(ROUND.to_bits()) << 23);
    if x < EXP_MIN {
        0.0
    } else {
        er * scale
    }
}

/// Σ xs, in 16 interleaved partial sums (vectorises; the order is fixed).
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    for (a, &t) in acc.iter_mut().zip(tail) {
        *a += t;
    }
    acc.iter().sum()
}

/// Σ a·b, in 16 interleaved partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (acc, (&x, &y)) in acc.iter_mut().zip(ta.iter().zip(tb)) {
        *acc += x * y;
    }
    acc.iter().sum()
}

/// max xs (−∞ for an empty slice), in 16 partial maxima.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    for (a, &t) in acc.iter_mut().zip(tail) {
        *a = a.max(t);
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a))
}

/// Runs `f` compiled for AVX-512 or AVX2 where the CPU has them (the closure is inlined into
/// a function built with those features), else as it is. For a row's worth of work: the
/// feature check is a cached load.
#[inline(always)]
pub fn with_best_isa<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the wrapper is compiled for.
            return unsafe { run_avx512(f) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two positive finite f32.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_over_its_range() {
        let mut worst = 0;
        let mut rng = crate::rng::Rng::new(3);
        let mut xs: Vec<f32> = (0..200_000).map(|_| -87.0 + rng.f32() * 175.0).collect();
        // Points where a reduction step changes, and the small arguments softmax sees most.
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, std::f32::consts::LN_2, -std::f32::consts::LN_2, -87.0, 88.0, 10.0, -10.0]);
        for x in xs {
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            worst = worst.max(ulps(got, want));
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, exact {want}");
        }
        assert!(worst >= 1, "the polynomial is not exact; a worst case of 0 ulp means the test compares nothing");
    }

    #[test]
    fn exp_saturates_outside_its_range() {
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        let top = exp(1e9);
        assert!(top.is_finite() && top > 2e38, "exp(1e9) = {top}");
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn sums_dots_and_maxima_match_plain_loops_at_every_tail_length() {
        let mut rng = crate::rng::Rng::new(5);
        for n in [0usize, 1, 7, 15, 16, 17, 33, 100, 1000] {
            let a: Vec<f32> = (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let want_sum: f64 = a.iter().map(|&x| x as f64).sum();
            let want_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let want_max = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert!((sum(&a) as f64 - want_sum).abs() <= 1e-5 * (1.0 + n as f64), "sum n={n}");
            assert!((dot(&a, &b) as f64 - want_dot).abs() <= 1e-5 * (1.0 + n as f64), "dot n={n}");
            assert_eq!(max(&a), want_max, "max n={n}");
            // The dispatched body gives the same bits as the plain one.
            assert_eq!(with_best_isa(|| sum(&a)).to_bits(), sum(&a).to_bits());
        }
    }
}
