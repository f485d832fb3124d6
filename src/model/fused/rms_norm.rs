//! RMSNorm for training: a fused, multi-threaded CPU op with backward.
//!
//! Why: candle's fast `rms_norm` has no backward, and `rms_norm_slow` (the differentiable
//! one) is six single-threaded candle ops whose backward adds a dozen more, each allocating a
//! full activation copy. Here the forward is one pass per row (rows in parallel) and the
//! backward two: one writes dx, one sums dw over fixed row blocks (added in block order, so
//! the result does not depend on the thread count).
//!
//! With `s = sqrt(mean(x²) + ε)`, `x̂ = x / s`, `y = x̂ · w`:
//! ```text
//! dx = (g·w − x̂ · mean(g·w·x̂)) / s          dw = Σ_rows g · x̂
//! ```

use super::{contiguous_f32, fusable, rows_per_task};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const KERNEL: &str = "rms_norm";

/// Rows per block of the dw sum: fixed, so the summation order is the same on any pool.
const DW_BLOCK_ROWS: usize = 32;

/// `x / sqrt(mean(x²) + eps) · weight` over the last dim, differentiable in x and weight.
/// Fused on the CPU for f32; `candle_nn::ops::rms_norm_slow` (the reference) elsewhere.
pub fn rms_norm_train(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    if !fusable(&[x, weight]) {
        return candle_nn::ops::rms_norm_slow(x, weight, eps);
    }
    let h = x.dim(candle_core::D::Minus1)?;
    if weight.dims() != [h] {
        bail!("rms_norm: weight shape {:?} does not match hidden size {h}", weight.dims());
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps })
}

/// `1 / sqrt(mean(x²) + eps)` of one row, the sum in f64.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
    1.0 / ((ss / row.len() as f64) as f32 + eps).sqrt()
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (contiguous_f32(s1, l1, KERNEL, "x")?, contiguous_f32(s2, l2, KERNEL, "weight")?);
        let h = w.len();
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).with_min_len(rows_per_task(h)).for_each(|(y, x)| {
            let r = inv_rms(x, self.eps);
            y.iter_mut().zip(x).zip(w).for_each(|((y, &x), &w)| *y = x * r * w);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &g, &RmsNormDx { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(&g, &RmsNormDw { eps: self.eps, h: w.elem_count() })?;
        Ok((Some(dx), Some(dw)))
    }
}

struct RmsNormDx {
    eps: f32,
}

impl CustomOp3 for RmsNormDx {
    fn name(&self) -> &'static str {
        "rms-norm-train-dx"
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
        let (x, w, g) = (contiguous_f32(s1, l1, KERNEL, "x")?, contiguous_f32(s2, l2, KERNEL, "weight")?, contiguous_f32(s3, l3, KERNEL, "grad")?);
        let h = w.len();
        if g.len() != x.len() {
            bail!("fused rms_norm backward: gradient has {} elements, x {}", g.len(), x.len());
        }
        let mut dx = vec![0.0f32; x.len()];
        dx.par_chunks_mut(h).zip(x.par_chunks(h).zip(g.par_chunks(h))).with_min_len(rows_per_task(h)).for_each(
            |(dx, (x, g))| {
                let r = inv_rms(x, self.eps);
                // mean(g·w·x̂) with x̂ = x·r, summed in f64.
                let dot: f64 = x.iter().zip(g).zip(w).map(|((&x, &g), &w)| (g * w) as f64 * (x * r) as f64).sum();
                let mean = (dot / h as f64) as f32;
                dx.iter_mut().zip(x).zip(g.iter().zip(w)).for_each(|((d, &x), (&g, &w))| *d = (g * w - x * r * mean) * r);
            },
        );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct RmsNormDw {
    eps: f32,
    h: usize,
}

impl CustomOp2 for RmsNormDw {
    fn name(&self) -> &'static str {
        "rms-norm-train-dw"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (contiguous_f32(s1, l1, KERNEL, "x")?, contiguous_f32(s2, l2, KERNEL, "grad")?);
        let h = self.h;
        if g.len() != x.len() || h == 0 || x.len() % h != 0 {
            bail!("fused rms_norm backward: x has {} elements, gradient {}, hidden size {h}", x.len(), g.len());
        }
        let block = DW_BLOCK_ROWS * h;
        let partial: Vec<Vec<f32>> = x
            .par_chunks(block)
            .zip(g.par_chunks(block))
            .map(|(xb, gb)| {
                let mut acc = vec![0.0f32; h];
                for (x, g) in xb.chunks(h).zip(gb.chunks(h)) {
                    let r = inv_rms(x, self.eps);
                    acc.iter_mut().zip(x).zip(g).for_each(|((a, &x), &g)| *a += g * (x * r));
                }
                acc
            })
            .collect();
        let mut dw = vec![0.0f32; h];
        for p in &partial {
            dw.iter_mut().zip(p).for_each(|(d, &p)| *d += p);
        }
        Ok((CpuStorage::F32(dw), Shape::from(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::test_support::{close, uniform};
    use candle_core::{Device, Var};

    #[test]
    fn matches_rms_norm_slow_values_and_gradients() {
        let mut rng = crate::rng::Rng::new(5);
        // Odd hidden sizes, one row, many rows (several dw blocks), a transposed input.
        for &(b, l, h, transpose) in &[(3, 5, 13, false), (1, 1, 7, false), (2, 40, 96, false), (3, 4, 10, true)] {
            let xs = uniform(&mut rng, b * l * h, -2.0, 2.0);
            let ws = uniform(&mut rng, h, 0.5, 1.5);
            let gs = uniform(&mut rng, b * l * h, -1.0, 1.0);
            let dev = Device::Cpu;
            let run = |fused: bool| {
                let x = if transpose {
                    Var::from_slice(&xs, (b, h, l), &dev).unwrap()
                } else {
                    Var::from_slice(&xs, (b, l, h), &dev).unwrap()
                };
                let w = Var::from_slice(&ws, h, &dev).unwrap();
                let xin = if transpose { x.as_tensor().transpose(1, 2).unwrap() } else { x.as_tensor().clone() };
                let y = if fused {
                    rms_norm_train(&xin, w.as_tensor(), 1e-6).unwrap()
                } else {
                    candle_nn::ops::rms_norm_slow(&xin, w.as_tensor(), 1e-6).unwrap()
                };
                let g = Tensor::from_slice(&gs, (b, l, h), &dev).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(&x).unwrap().clone(), grads.get(&w).unwrap().clone())
            };
            let (fused, reference) = (run(true), run(false));
            let what = format!("({b}, {l}, {h}) transpose {transpose}");
            close(&fused.0, &reference.0, &format!("{what} y"));
            close(&fused.1, &reference.1, &format!("{what} dx"));
            close(&fused.2, &reference.2, &format!("{what} dw"));
        }
    }
}
