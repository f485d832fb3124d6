//! Rotary position embedding fused with the head transpose: (B, L, n, D) projections in,
//! (B, n, L, D) rotated heads out, with a backward pass.
//!
//! Why: the differentiable expression (two `cat`s of cos/sin, two `narrow`s, a `neg`, a `cat`,
//! two broadcast multiplies and an add, after a transpose copy) is nine single-threaded
//! candle ops per call and as many again in backward, for each of q and k in every layer.
//! Here forward and backward are one pass each, rows in parallel.
//!
//! The transformers convention rotates (first half, second half) pairs of each head:
//! ```text
//! y₁ = x₁·cos − x₂·sin        y₂ = x₂·cos + x₁·sin
//! dx₁ = g₁·cos + g₂·sin       dx₂ = g₂·cos − g₁·sin      (the inverse rotation)
//! ```

use super::{contiguous_f32, fusable, rows_per_task};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

const KERNEL: &str = "rope";

/// Rotates `x` (B, L, n, D) by the per-row tables `cos`, `sin` (B, L, D/2) and returns the
/// heads as (B, n, L, D), contiguous. Differentiable in `x`. Fused on the CPU for f32;
/// [`rope_heads_reference`] elsewhere.
pub fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dims = check(x, cos, sin)?;
    if !fusable(&[x, cos, sin]) {
        return rope_heads_reference(x, cos, sin);
    }
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { dims, inverse: false })
}

/// The same function from candle primitives (differentiable everywhere, slow on the CPU).
pub fn rope_heads_reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.transpose(1, 2)?;
    let half = x.dim(D::Minus1)? / 2;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    (x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.contiguous()
}

/// (B, L, n, D) of the input, after checking the tables match it.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    l: usize,
    n: usize,
    d: usize,
}

impl Dims {
    fn half(&self) -> usize {
        self.d / 2
    }
    fn len(&self) -> usize {
        self.b * self.l * self.n * self.d
    }
    /// Start of (b, l) in the cos/sin tables.
    fn table_row(&self, b: usize, l: usize) -> usize {
        (b * self.l + l) * self.half()
    }
}

fn check(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Dims> {
    let (b, l, n, d) = x.dims4()?;
    if d % 2 != 0 {
        bail!("rope: head dim {d} must be even");
    }
    for (name, t) in [("cos", cos), ("sin", sin)] {
        if t.dims() != [b, l, d / 2] {
            bail!("rope: {name} table is {:?}, expected {:?} for input {:?}", t.dims(), [b, l, d / 2], x.dims());
        }
    }
    Ok(Dims { b, l, n, d })
}

/// Writes the rotation of one head row: `sign = 1` forward, `-1` the inverse (backward).
pub(crate) fn rotate(x: &[f32], cos: &[f32], sin: &[f32], sign: f32, out: &mut [f32]) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        let (c, s) = (cos[i], sign * sin[i]);
        o1[i] = x1[i] * c - x2[i] * s;
        o2[i] = x2[i] * c + x1[i] * s;
    }
}

/// The storages of (x or grad, cos, sin), checked against the dims.
fn inputs<'a>(
    dims: &Dims,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<(&'a [f32], &'a [f32], &'a [f32])> {
    let x = contiguous_f32(s1, l1, KERNEL, "input")?;
    let (cos, sin) = (contiguous_f32(s2, l2, KERNEL, "cos")?, contiguous_f32(s3, l3, KERNEL, "sin")?);
    let table = dims.b * dims.l * dims.half();
    if x.len() != dims.len() || cos.len() != table || sin.len() != table {
        bail!("fused rope: got {} / {} / {} elements for dims {dims:?}", x.len(), cos.len(), sin.len());
    }
    Ok((x, cos, sin))
}

/// The rotation as a kernel. Forward (`inverse: false`): (B, L, n, D) input → (B, n, L, D)
/// rotated heads. Inverse (`inverse: true`, the backward): (B, n, L, D) gradient → (B, L, n, D)
/// gradient of the input, rotated back.
struct Rope {
    dims: Dims,
    inverse: bool,
}

impl Rope {
    /// For output row `r`: (start of the source row, batch index, token index).
    fn source(&self, r: usize) -> (usize, usize, usize) {
        let Dims { l, n, d, .. } = self.dims;
        if self.inverse {
            // Output row r = (bi·L + li)·n + h reads gradient row (bi·n + h)·L + li.
            let (bl, h) = (r / n, r % n);
            let (bi, li) = (bl / l, bl % l);
            (((bi * n + h) * l + li) * d, bi, li)
        } else {
            // Output row r = (bi·n + h)·L + li reads input row (bi·L + li)·n + h.
            let (bh, li) = (r / l, r % l);
            let (bi, h) = (bh / n, bh % n);
            (((bi * l + li) * n + h) * d, bi, li)
        }
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        if self.inverse {
            "rope-heads-backward"
        } else {
            "rope-heads"
        }
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
        let Dims { b, l, n, d } = self.dims;
        let (x, cos, sin) = inputs(&self.dims, (s1, l1), (s2, l2), (s3, l3))?;
        let (half, sign) = (self.dims.half(), if self.inverse { -1.0 } else { 1.0 });
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(d).enumerate().with_min_len(rows_per_task(d)).for_each(|(r, out)| {
            let (src, bi, li) = self.source(r);
            let t = self.dims.table_row(bi, li);
            rotate(&x[src..src + d], &cos[t..t + half], &sin[t..t + half], sign, out);
        });
        let shape = if self.inverse { Shape::from((b, l, n, d)) } else { Shape::from((b, n, l, d)) };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, _x: &Tensor, cos: &Tensor, sin: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.inverse {
            bail!("fused rope: the backward kernel has no backward of its own");
        }
        let dx = g.contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { dims: self.dims, inverse: true })?;
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{close, uniform};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_reference_values_and_gradients() {
        let mut rng = crate::rng::Rng::new(11);
        let dev = Device::Cpu;
        // Odd token counts and head counts, one token, a non-contiguous input.
        for &(b, l, n, d, transposed) in &[(2, 5, 3, 8, false), (1, 1, 2, 4, false), (3, 7, 1, 6, false), (2, 4, 3, 10, true)] {
            let xs = uniform(&mut rng, b * l * n * d, -2.0, 2.0);
            let angles = uniform(&mut rng, b * l * d / 2, 0.0, 6.0);
            let cos = Tensor::from_vec(angles.iter().map(|a| a.cos()).collect::<Vec<_>>(), (b, l, d / 2), &dev).unwrap();
            let sin = Tensor::from_vec(angles.iter().map(|a| a.sin()).collect::<Vec<_>>(), (b, l, d / 2), &dev).unwrap();
            let gs = uniform(&mut rng, b * n * l * d, -1.0, 1.0);
            let run = |fused: bool| {
                let (x, xin) = if transposed {
                    let x = Var::from_slice(&xs, (b, n, l, d), &dev).unwrap();
                    let xin = x.as_tensor().transpose(1, 2).unwrap();
                    (x, xin)
                } else {
                    let x = Var::from_slice(&xs, (b, l, n, d), &dev).unwrap();
                    let xin = x.as_tensor().clone();
                    (x, xin)
                };
                let y = if fused { rope_heads(&xin, &cos, &sin) } else { rope_heads_reference(&xin, &cos, &sin) }.unwrap();
                let g = Tensor::from_slice(&gs, (b, n, l, d), &dev).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(&x).unwrap().clone())
            };
            let (fused, reference) = (run(true), run(false));
            let what = format!("({b}, {l}, {n}, {d}) transposed {transposed}");
            close(&fused.0, &reference.0, &format!("{what} y"));
            close(&fused.1, &reference.1, &format!("{what} dx"));
        }
    }

    #[test]
    fn rotation_preserves_pair_norms_and_inverts() {
        // Independent of the reference: a rotation keeps |(x₁ᵢ, x₂ᵢ)| and the backward kernel
        // applied to y (the inverse rotation) gives x back.
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(3);
        let (b, l, n, d) = (1, 3, 2, 6);
        let xs = uniform(&mut rng, b * l * n * d, -1.0, 1.0);
        let angles = uniform(&mut rng, b * l * d / 2, 0.0, 6.0);
        let cos = Tensor::from_vec(angles.iter().map(|a| a.cos()).collect::<Vec<_>>(), (b, l, d / 2), &dev).unwrap();
        let sin = Tensor::from_vec(angles.iter().map(|a| a.sin()).collect::<Vec<_>>(), (b, l, d / 2), &dev).unwrap();
        let x = Tensor::from_slice(&xs, (b, l, n, d), &dev).unwrap();
        let y = rope_heads(&x, &cos, &sin).unwrap();
        let back = y.apply_op3_no_bwd(&cos, &sin, &Rope { dims: Dims { b, l, n, d }, inverse: true }).unwrap();
        close(&back, &x, "inverse rotation");
        let pair_norms = |t: &Tensor| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut out: Vec<f32> = v.chunks(d).flat_map(|r| (0..d / 2).map(|i| r[i].hypot(r[i + d / 2])).collect::<Vec<_>>()).collect();
            out.sort_by(f32::total_cmp);
            out
        };
        let (nx, ny) = (pair_norms(&x), pair_norms(&y));
        for (a, b) in nx.iter().zip(&ny) {
            assert!((a - b).abs() < 1e-5, "{nx:?} vs {ny:?}");
        }
    }

    #[test]
    fn mismatched_tables_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 2, 4), candle_core::DType::F32, &dev).unwrap();
        let t = Tensor::zeros((1, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let err = rope_heads(&x, &t, &t).unwrap_err().to_string();
        assert!(err.contains("cos table is [1, 2, 2], expected [1, 3, 2]"), "{err}");
    }
}
