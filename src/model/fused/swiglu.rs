//! The SwiGLU gate `silu(gate) ⊙ up` with a backward pass that writes both gradients in one
//! pass.
//!
//! Why: unfused it is candle's silu and a multiply forward and about six single-threaded ops
//! backward over the (B·L, intermediate) activations, the widest in the block.
//!
//! With `σ = sigmoid(a)`, `silu(a) = a·σ`:
//! ```text
//! d gate = g ⊙ up ⊙ σ(1 + a(1 − σ))          d up = g ⊙ silu(a)
//! ```

use super::{contiguous_f32, fusable, simd, MIN_ELEMS_PER_TASK};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const KERNEL: &str = "swiglu";

/// `silu(gate) ⊙ up`, both the same shape. Differentiable in both. Fused on the CPU for f32;
/// [`swiglu_reference`] elsewhere.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        bail!("swiglu: gate is {:?}, up {:?}; they must match", gate.dims(), up.dims());
    }
    if !fusable(&[gate, up]) {
        return swiglu_reference(gate, up);
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// The same function from candle primitives.
pub fn swiglu_reference(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(gate)? * up
}

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + simd::exp(-a))
}

fn two_inputs<'a>(s1: &'a CpuStorage, l1: &Layout, s2: &'a CpuStorage, l2: &Layout) -> Result<(&'a [f32], &'a [f32])> {
    let (a, b) = (contiguous_f32(s1, l1, KERNEL, "gate")?, contiguous_f32(s2, l2, KERNEL, "up")?);
    if a.len() != b.len() {
        bail!("fused swiglu: gate has {} elements, up {}", a.len(), b.len());
    }
    Ok((a, b))
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = two_inputs(s1, l1, s2, l2)?;
        let mut y = vec![0.0f32; gate.len()];
        // Chunks of one task's size, each one vectorised loop.
        let c = MIN_ELEMS_PER_TASK;
        y.par_chunks_mut(c).zip(gate.par_chunks(c).zip(up.par_chunks(c))).for_each(|(y, (gate, up))| {
            simd::with_best_isa(|| {
                for (y, (&a, &b)) in y.iter_mut().zip(gate.iter().zip(up)) {
                    *y = a * sigmoid(a) * b;
                }
            })
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = gate.apply_op3_no_bwd(up, &g.contiguous()?, &SwiGluBackward)?; // (2, …)
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// (gate, up, grad) → (2, …): the gradients of gate and up stacked, so one pass writes both.
struct SwiGluBackward;

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "swiglu-backward"
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
        let (gate, up) = two_inputs(s1, l1, s2, l2)?;
        let g = contiguous_f32(s3, l3, KERNEL, "grad")?;
        if g.len() != gate.len() {
            bail!("fused swiglu backward: gradient has {} elements, gate {}", g.len(), gate.len());
        }
        let n = gate.len();
        let mut out = vec![0.0f32; 2 * n];
        let (d_gate, d_up) = out.split_at_mut(n);
        let c = MIN_ELEMS_PER_TASK;
        d_gate.par_chunks_mut(c).zip(d_up.par_chunks_mut(c)).zip(gate.par_chunks(c).zip(up.par_chunks(c)).zip(g.par_chunks(c))).for_each(
            |((d_gate, d_up), ((gate, up), g))| {
                simd::with_best_isa(|| {
                    for ((da, db), ((&a, &b), &g)) in d_gate.iter_mut().zip(d_up.iter_mut()).zip(gate.iter().zip(up).zip(g)) {
                        let s = sigmoid(a);
                        *da = g * b * s * (1.0 + a * (1.0 - s));
                        *db = g * a * s;
                    }
                })
            },
        );
        let mut dims = vec![2];
        dims.extend_from_slice(l1.dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{close, uniform};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_reference_values_and_gradients() {
        let mut rng = crate::rng::Rng::new(23);
        let dev = Device::Cpu;
        // Odd sizes, one element, and one large enough to split over several rayon tasks.
        for &(rows, cols) in &[(3, 7), (1, 1), (40, 1000)] {
            let (a, b, gs) = (uniform(&mut rng, rows * cols, -6.0, 6.0), uniform(&mut rng, rows * cols, -2.0, 2.0), uniform(&mut rng, rows * cols, -1.0, 1.0));
            let run = |fused: bool| {
                let (ga, up) = (Var::from_slice(&a, (rows, cols), &dev).unwrap(), Var::from_slice(&b, (rows, cols), &dev).unwrap());
                let f = if fused { swiglu } else { swiglu_reference };
                let y = f(ga.as_tensor(), up.as_tensor()).unwrap();
                let g = Tensor::from_slice(&gs, (rows, cols), &dev).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(&ga).unwrap().clone(), grads.get(&up).unwrap().clone())
            };
            let (fused, reference) = (run(true), run(false));
            let what = format!("({rows}, {cols})");
            close(&fused.0, &reference.0, &format!("{what} y"));
            close(&fused.1, &reference.1, &format!("{what} d gate"));
            close(&fused.2, &reference.2, &format!("{what} d up"));
        }
    }

    #[test]
    fn gate_gradient_matches_finite_differences() {
        // Independent of candle's silu backward: central differences in f64 of silu(a)·b.
        let silu = |a: f64| a / (1.0 + (-a).exp());
        let dev = Device::Cpu;
        let a = [-5.0f32, -1.3, -0.2, 0.0, 0.7, 2.5, 8.0];
        let ga = Var::from_slice(&a, a.len(), &dev).unwrap();
        let up = Tensor::from_slice(&[1.5f32; 7], 7, &dev).unwrap();
        let grads = swiglu(ga.as_tensor(), &up).unwrap().sum_all().unwrap().backward().unwrap();
        let got = grads.get(&ga).unwrap().to_vec1::<f32>().unwrap();
        for (&x, &g) in a.iter().zip(&got) {
            let h = 1e-4;
            let want = 1.5 * (silu(x as f64 + h) - silu(x as f64 - h)) / (2.0 * h);
            assert!((g as f64 - want).abs() < 1e-4, "d gate at {x}: {g} vs {want}");
        }
    }
}
