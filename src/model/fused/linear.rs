//! The dense projection `y = x · Wᵀ (+ b)` as one autograd node.
//!
//! Why: candle's backward allocates a zeroed gradient and adds into it for every node of the
//! graph, views included, so the unfused expression (reshape, transpose, matmul, broadcast,
//! add, reshape) costs five or six full-size copies of the activation gradient in backward
//! besides the two matmuls. Measured (perf, `bench train` on `tiny`): gradient accumulation
//! (`Tensor::add` and the zeroing in `GradStore::or_insert`) was about 40 % of the main
//! thread's backward time. The upstream fix would be to move the first gradient of a node
//! into the store instead of adding it to zeros; until then, fewer nodes is the lever.
//!
//! Forward is one gemm call (W read transposed through its strides, no copy; the bias
//! pre-filled into the output), or for up to 16 rows (decoding) the streaming kernel in
//! [`super::skinny`]. Backward is the textbook
//! ```text
//! dx = g · W        dW = gᵀ · x        db = Σ_rows g
//! ```
//! with candle's matmul on detached tensors (db as a product with a row of ones).
//!
//! With [`Precision::Bf16`] (`update_dtype = "bf16"`, read from [`precision::current`] when
//! the op is built) the forward and both backward products run on bf16-rounded operands with
//! f32 sums ([`super::gemm_bf16`]); x, W, the gradients and db stay f32.

use super::gemm::{sgemm, MatRef};
use super::gemm_bf16::gemm_bf16;
use super::precision::{self, Precision};
use super::{contiguous_f32, fusable, skinny, transposed};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor, D};

const KERNEL: &str = "linear";

/// `x · weightᵀ + bias` over the last dim of `x` (any leading dims); `weight` is (out, in) like
/// PyTorch's. Differentiable in all three. Fused on the CPU for f32; [`linear_reference`]
/// elsewhere.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    if x.dim(D::Minus1)? != in_dim {
        bail!("linear: input {:?} does not end in the weight's input size {in_dim} (weight {:?})", x.dims(), weight.dims());
    }
    if let Some(b) = bias {
        if b.dims() != [out_dim] {
            bail!("linear: bias {:?} does not match the weight's output size {out_dim}", b.dims());
        }
    }
    let all: Vec<&Tensor> = [Some(x), Some(weight), bias].into_iter().flatten().collect();
    if !fusable(&all) {
        return linear_reference(x, weight, bias);
    }
    let op = Linear { precision: precision::current() };
    // A weight in transposed storage (frozen towers) is read through its strides by the f32
    // products; the bf16 backward reads W contiguous.
    let weight = if transposed::is_transposed(weight) && op.precision == Precision::F32 { weight.clone() } else { weight.contiguous()? };
    let x = x.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, op),
        None => x.apply_op2(&weight, op),
    }
}

/// The same function from candle primitives.
pub fn linear_reference(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("x has a last dim: checked by the caller") = weight.dim(0)?;
    y.reshape(out_dims)
}

struct Linear {
    precision: Precision,
}

impl Linear {
    /// The forward on storages: `bias`, when given, is pre-filled into every output row.
    fn forward(&self, (sx, lx): (&CpuStorage, &Layout), (sw, lw): (&CpuStorage, &Layout), bias: Option<(&CpuStorage, &Layout)>) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(sx, lx, KERNEL, "input")?;
        let (out_dim, in_dim) = lw.shape().dims2()?;
        let rows = x.len() / in_dim.max(1);
        let bias = bias.map(|(sb, lb)| contiguous_f32(sb, lb, KERNEL, "bias")).transpose()?;
        // W as stored: (out, in) contiguous, or Wᵀ contiguous (see `transposed`).
        let (w, w_transposed) = match transposed::transposed_f32(sw, lw) {
            Some(wt) if !lw.is_contiguous() => (wt, true),
            _ => (contiguous_f32(sw, lw, KERNEL, "weight")?, false),
        };
        let y = if rows <= skinny::MAX_ROWS && !w_transposed && self.precision == Precision::F32 {
            // Decoding: a few rows, bound by reading W once (see `skinny`).
            let mut y = skinny::matmul_wt(x, w, rows, in_dim, out_dim);
            if let Some(b) = bias {
                y.chunks_exact_mut(out_dim).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
            }
            y
        } else {
            let mut y = match bias {
                Some(b) => b.repeat(rows),
                None => vec![0.0f32; rows * out_dim],
            };
            let lhs = MatRef { data: x, rows, cols: in_dim, row_stride: in_dim, col_stride: 1 };
            // Wᵀ: element (i, j) is w[j·in + i] in the (out, in) storage, wt[i·out + j] in the
            // transposed one.
            let rhs = if w_transposed {
                MatRef { data: w, rows: in_dim, cols: out_dim, row_stride: out_dim, col_stride: 1 }
            } else {
                MatRef { data: w, rows: in_dim, cols: out_dim, row_stride: 1, col_stride: in_dim }
            };
            match self.precision {
                Precision::F32 => sgemm(&mut y, &lhs, &rhs, bias.is_some())?,
                Precision::Bf16 => gemm_bf16(&mut y, &lhs, &rhs, bias.is_some())?,
            }
            y
        };
        let mut dims = lx.dims().to_vec();
        *dims.last_mut().expect("linear input has a last dim") = out_dim;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    /// (dx, dW, db) from the output gradient, with candle matmuls on detached tensors; db only
    /// `with_bias`.
    fn backward(&self, x: &Tensor, w: &Tensor, g: &Tensor, with_bias: bool) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (out_dim, in_dim) = w.dims2()?;
        let rows = x.elem_count() / in_dim.max(1);
        let g = g.detach().contiguous()?.reshape((rows, out_dim))?;
        let (dx, dw) = match self.precision {
            Precision::F32 => {
                let x2 = x.detach().reshape((rows, in_dim))?;
                (g.matmul(&w.detach())?.reshape(x.shape())?, g.t()?.matmul(&x2)?)
            }
            Precision::Bf16 => Linear::products_bf16(x, w, &g)?,
        };
        // Σ_rows g as a (1 × rows)·g product: candle's `sum(0)` walks the rows with a
        // division per element on one thread (it was 7 % of a tiny training step).
        let db = if with_bias { Some(Tensor::ones((1, rows), g.dtype(), g.device())?.matmul(&g)?.reshape(out_dim)?) } else { None };
        Ok((dx, dw, db))
    }
}

impl Linear {
    /// (dx = g · W, dW = gᵀ · x) with the bf16 products, on the storages (g: rows × out,
    /// contiguous; x and W contiguous: `linear` made them so).
    fn products_bf16(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
        let (out_dim, in_dim) = w.dims2()?;
        let rows = x.elem_count() / in_dim.max(1);
        let (dx, dw) = {
            let (sx, lx) = x.storage_and_layout();
            let (sw, lw) = w.storage_and_layout();
            let (sg, lg) = g.storage_and_layout();
            let (Storage::Cpu(sx), Storage::Cpu(sw), Storage::Cpu(sg)) = (&*sx, &*sw, &*sg) else {
                bail!("fused linear: backward on a non-CPU tensor");
            };
            let (xs, ws, gs) = (contiguous_f32(sx, lx, KERNEL, "input")?, contiguous_f32(sw, lw, KERNEL, "weight")?, contiguous_f32(sg, lg, KERNEL, "output gradient")?);
            let gm = MatRef { data: gs, rows, cols: out_dim, row_stride: out_dim, col_stride: 1 };
            let wm = MatRef { data: ws, rows: out_dim, cols: in_dim, row_stride: in_dim, col_stride: 1 };
            let mut dx = vec![0.0f32; rows * in_dim];
            gemm_bf16(&mut dx, &gm, &wm, false)?;
            // gᵀ through strides: element (i, j) of gᵀ is g[j·out + i].
            let gt = MatRef { data: gs, rows: out_dim, cols: rows, row_stride: 1, col_stride: out_dim };
            let xm = MatRef { data: xs, rows, cols: in_dim, row_stride: in_dim, col_stride: 1 };
            let mut dw = vec![0.0f32; out_dim * in_dim];
            gemm_bf16(&mut dw, &gt, &xm, false)?;
            (dx, dw)
        };
        Ok((Tensor::from_vec(dx, x.shape(), x.device())?, Tensor::from_vec(dw, w.shape(), w.device())?))
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, g, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear-bias"
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
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, g, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{close, uniform};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_reference_values_and_gradients() {
        let mut rng = crate::rng::Rng::new(29);
        let dev = Device::Cpu;
        // 3-D and 2-D inputs, odd sizes, one row, with and without bias, a transposed input.
        for &(lead, inp, out, bias, transposed) in
            &[(&[2usize, 5][..], 7, 3, true, false), (&[1][..], 4, 9, false, false), (&[3, 4][..], 33, 17, false, true), (&[64][..], 96, 40, true, false)]
        {
            let rows: usize = lead.iter().product();
            let xs = uniform(&mut rng, rows * inp, -1.0, 1.0);
            let ws = uniform(&mut rng, out * inp, -0.5, 0.5);
            let bs = uniform(&mut rng, out, -0.5, 0.5);
            let gs = uniform(&mut rng, rows * out, -1.0, 1.0);
            let run = |fused: bool| {
                let mut dims = lead.to_vec();
                dims.push(inp);
                let (x, xin) = if transposed {
                    // Stored (in, rows) and viewed (rows, in): a non-contiguous input.
                    let x = Var::from_slice(&xs, (inp, rows), &dev).unwrap();
                    let xin = x.as_tensor().t().unwrap().reshape(dims).unwrap();
                    (x, xin)
                } else {
                    let x = Var::from_slice(&xs, dims, &dev).unwrap();
                    let xin = x.as_tensor().clone();
                    (x, xin)
                };
                let w = Var::from_slice(&ws, (out, inp), &dev).unwrap();
                let b = Var::from_slice(&bs, out, &dev).unwrap();
                let bias_t = bias.then(|| b.as_tensor().clone());
                let f = if fused { linear } else { linear_reference };
                let y = f(&xin, w.as_tensor(), bias_t.as_ref()).unwrap();
                let g = Tensor::from_slice(&gs, y.shape(), &dev).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let db = grads.get(&b).cloned();
                (y, grads.get(&x).unwrap().clone(), grads.get(&w).unwrap().clone(), db)
            };
            let (fused, reference) = (run(true), run(false));
            let what = format!("({lead:?}, {inp}) → {out} bias {bias} transposed {transposed}");
            close(&fused.0, &reference.0, &format!("{what} y"));
            close(&fused.1, &reference.1, &format!("{what} dx"));
            close(&fused.2, &reference.2, &format!("{what} dw"));
            assert_eq!(fused.3.is_some(), bias, "{what}: a bias gradient exactly when there is a bias");
            if let (Some(a), Some(b)) = (&fused.3, &reference.3) {
                close(a, b, &format!("{what} db"));
            }
        }
    }

    #[test]
    fn bf16_products_stay_within_the_rounding_bound_of_f32() {
        // Precision::Bf16 rounds both operands of each product to bf16 (u = 2⁻⁸ relative each),
        // so every element of y, dx and dW is within (2u + u²)·Σ|a·b| (plus f32 sums) of the
        // f32 op's, where Σ|a·b| is the same product over absolute values. Rows above and
        // below the skinny path's 16; db is f32 in both.
        let mut rng = crate::rng::Rng::new(31);
        let dev = Device::Cpu;
        for &(rows, inp, out) in &[(5usize, 40usize, 33usize), (70, 96, 130)] {
            let xs = uniform(&mut rng, rows * inp, -1.0, 1.0);
            let ws = uniform(&mut rng, out * inp, -0.5, 0.5);
            let bs = uniform(&mut rng, out, -0.5, 0.5);
            let gs = uniform(&mut rng, rows * out, -1.0, 1.0);
            let run = |p: Precision| {
                let _scope = precision::scoped(p);
                let x = Var::from_slice(&xs, (rows, inp), &dev).unwrap();
                let w = Var::from_slice(&ws, (out, inp), &dev).unwrap();
                let b = Var::from_slice(&bs, out, &dev).unwrap();
                let y = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap();
                let g = Tensor::from_slice(&gs, y.shape(), &dev).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                [v(&y), v(grads.get(&x).unwrap()), v(grads.get(&w).unwrap()), v(grads.get(&b).unwrap())]
            };
            let (f32s, bf16s) = (run(Precision::F32), run(Precision::Bf16));
            // Σ|a·b| of each product: |x|·|W|ᵀ, |g|·|W|, |g|ᵀ·|x| (f32 reference matmuls).
            let abs = |v: &[f32], shape: (usize, usize)| Tensor::from_slice(v, shape, &dev).unwrap().abs().unwrap();
            let (ax, aw, ag) = (abs(&xs, (rows, inp)), abs(&ws, (out, inp)), abs(&gs, (rows, out)));
            let sizes = [ax.matmul(&aw.t().unwrap()).unwrap(), ag.matmul(&aw).unwrap(), ag.t().unwrap().matmul(&ax).unwrap()];
            let (mut moved, unit) = (false, 2.0 * 2f32.powi(-8) + 2f32.powi(-16));
            for (i, what) in ["y", "dx", "dW"].iter().enumerate() {
                let size = sizes[i].flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bias = if i == 0 { 1.0 } else { 0.0 };
                for (j, ((a, b), s)) in bf16s[i].iter().zip(&f32s[i]).zip(&size).enumerate() {
                    let bound = unit * s + 1e-5 * (s + bias);
                    assert!((a - b).abs() <= bound, "{rows}×{inp}→{out} {what}[{j}]: bf16 {a} vs f32 {b} (bound {bound})");
                    moved |= a != b;
                }
            }
            assert!(moved, "{rows}×{inp}→{out}: the bf16 products differ from f32 somewhere");
            assert_eq!(bf16s[3], f32s[3], "db stays an f32 sum");
        }
    }

    #[test]
    fn matches_a_hand_computed_product() {
        // Independent of candle's matmul: [[1, 2], [3, 4]] · [[1, 0], [1, 1], [0, 2]]ᵀ + [1, 2, 3].
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap();
        let w = Tensor::new(&[[1f32, 0.], [1., 1.], [0., 2.]], &dev).unwrap();
        let b = Tensor::new(&[1f32, 2., 3.], &dev).unwrap();
        let y = linear(&x, &w, Some(&b)).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![2.0, 5.0, 7.0], vec![4.0, 9.0, 11.0]]);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, None).unwrap_err().to_string().contains("input size 5"));
        let w = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(5, candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, Some(&b)).unwrap_err().to_string().contains("output size 4"));
    }
}
