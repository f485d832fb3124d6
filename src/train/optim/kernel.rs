//! The AdamW element update, applied in place to a `Var`'s own CPU storage.
//!
//! Why: the straightforward path copied θ and g to host vectors, built a new tensor and copied
//! it back with `Var::set` — three full passes and two allocations per parameter per step.
//! Here the update writes into the variable's storage through candle's `inplace_op*`, reading
//! the gradient straight from the tensor backward produced when it is contiguous f32.
//!
//! Every element's arithmetic is the same f32 expression in the same order whatever the
//! thread count (elements are independent), so resuming from a checkpoint stays bit-exact.

use candle_core::{bail, CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
use std::cell::RefCell;

/// Elements per rayon task at least: norm weights (a few hundred elements) stay on one thread.
const MIN_ELEMS_PER_TASK: usize = 8 * 1024;

/// Chunk of the fixed-order sum of squares: partial sums are taken over these chunks in
/// parallel and added in chunk order, so the norm does not depend on the thread count.
/// A tensor of at most this many elements is summed exactly as one sequential loop.
const NORM_CHUNK: usize = 64 * 1024;

/// The per-parameter constants of one update, already rounded to f32.
#[derive(Debug, Clone, Copy)]
pub struct Coeffs {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub lr: f32,
    /// `1 − lr·wd` for decayed parameters, 1 otherwise.
    pub decay: f32,
    /// `1 − β1^t`.
    pub bc1: f32,
    /// `sqrt(1 − β2^t)`.
    pub bc2_sqrt: f32,
    /// Gradient clipping factor (1 when not clipping; `x · 1 = x` exactly in IEEE arithmetic).
    pub grad_scale: f32,
}

/// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`, `θ ← θ·decay − lr·(m/bc1)/(sqrt(v)/sqrt(bc2) + ε)`
/// over slices of one parameter; a missing gradient counts as zero.
pub fn update(theta: &mut [f32], m: &mut [f32], v: &mut [f32], grad: Option<&[f32]>, c: Coeffs) -> candle_core::Result<()> {
    let n = theta.len();
    if m.len() != n || v.len() != n || grad.is_some_and(|g| g.len() != n) {
        bail!("adamw: parameter has {n} elements, moments {} / {}, gradient {:?}", m.len(), v.len(), grad.map(<[f32]>::len));
    }
    let step = |th: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
        let gr = g * c.grad_scale;
        *m = c.beta1 * *m + (1.0 - c.beta1) * gr;
        *v = c.beta2 * *v + (1.0 - c.beta2) * gr * gr;
        let denom = v.sqrt() / c.bc2_sqrt + c.eps;
        *th = *th * c.decay - c.lr * (*m / c.bc1) / denom;
    };
    let state = theta.par_iter_mut().zip(m.par_iter_mut()).zip(v.par_iter_mut()).with_min_len(MIN_ELEMS_PER_TASK);
    match grad {
        Some(g) => state.zip(g.par_iter()).for_each(|(((th, m), v), &g)| step(th, m, v, g)),
        None => state.for_each(|((th, m), v)| step(th, m, v, 0.0)),
    }
    Ok(())
}

/// Σ x² in f64 over fixed chunks (see [`NORM_CHUNK`]).
pub fn sum_squares(x: &[f32]) -> f64 {
    let partial: Vec<f64> =
        x.par_chunks(NORM_CHUNK).map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).collect();
    partial.iter().sum()
}

/// Calls `f` with the elements of `t` in row-major order as f32: borrowed from the tensor's
/// own storage when it is a contiguous f32 CPU tensor, otherwise from a host copy.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(f(&data[a..b]));
        }
    }
    let host = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&host))
}

fn is_cpu_contiguous_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// Where the gradient of one parameter comes from in [`apply`].
pub enum Grad<'a> {
    /// The loss did not reach the parameter.
    Zero,
    /// A tensor as backward produced it (read in place when contiguous f32 on the CPU).
    Tensor(&'a Tensor),
    /// A host sum over micro-batches.
    Host(&'a [f32]),
}

/// Update `var` in place (CPU f32 contiguous) or through a host copy and `Var::set` (other
/// devices and dtypes), with the same element arithmetic either way.
pub fn apply(var: &Var, m: &mut [f32], v: &mut [f32], grad: Grad<'_>, c: Coeffs) -> candle_core::Result<()> {
    let theta = var.as_tensor();
    if theta.elem_count() != m.len() {
        bail!("adamw: parameter has {} elements, its moments {}", theta.elem_count(), m.len());
    }
    if !is_cpu_contiguous_f32(theta) {
        return apply_via_host(var, m, v, grad, c);
    }
    let op = |m, v, grad| InPlace { m: RefCell::new(m), v: RefCell::new(v), grad, c };
    match grad {
        Grad::Tensor(g) if is_cpu_contiguous_f32(g) => {
            if g.elem_count() != theta.elem_count() {
                bail!("adamw: gradient has {} elements, the parameter {}", g.elem_count(), theta.elem_count());
            }
            // inplace_op2 locks θ for writing and g for reading, and refuses (rather than
            // deadlocks on) a gradient that shares θ's storage.
            theta.inplace_op2(g, &op(m, v, None))
        }
        Grad::Tensor(g) => {
            let host = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            theta.inplace_op1(&op(m, v, Some(&host)))
        }
        Grad::Host(h) => theta.inplace_op1(&op(m, v, Some(h))),
        Grad::Zero => theta.inplace_op1(&op(m, v, None)),
    }
}

fn apply_via_host(var: &Var, m: &mut [f32], v: &mut [f32], grad: Grad<'_>, c: Coeffs) -> candle_core::Result<()> {
    let mut theta = var.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    match grad {
        Grad::Tensor(g) => with_f32(g, |g| update(&mut theta, m, v, Some(g), c))??,
        Grad::Host(h) => update(&mut theta, m, v, Some(h), c)?,
        Grad::Zero => update(&mut theta, m, v, None, c)?,
    }
    let new = Tensor::from_vec(theta, var.shape().clone(), var.device())?.to_dtype(var.dtype())?;
    var.set(&new)
}

/// The in-place op: θ is the destination storage; the gradient is either the op's second
/// operand (`InplaceOp2`) or a host slice (`InplaceOp1`). The moments are borrowed mutably
/// through `RefCell` because candle's op traits take `&self`; each op runs once.
struct InPlace<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    grad: Option<&'a [f32]>,
    c: Coeffs,
}

fn theta_slice<'s>(storage: &'s mut CpuStorage, layout: &Layout) -> candle_core::Result<&'s mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((a, b))) => Ok(&mut data[a..b]),
        _ => bail!("adamw in place: the parameter must be contiguous f32"),
    }
}

impl InPlace<'_> {
    fn run(&self, theta: &mut [f32], grad: Option<&[f32]>) -> candle_core::Result<()> {
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        update(theta, &mut m, &mut v, grad, self.c)
    }
}

impl InplaceOp1 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "adamw-inplace"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        self.run(theta_slice(storage, layout)?, self.grad)
    }
}

impl InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "adamw-inplace-grad"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let grad = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((a, b))) => &data[a..b],
            _ => bail!("adamw in place: the gradient must be contiguous f32"),
        };
        self.run(theta_slice(s1, l1)?, Some(grad))
    }
}
