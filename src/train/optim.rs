//! AdamW with its state in plain vectors, so a checkpoint can save and restore it exactly.
//!
//! The update is the decoupled-weight-decay form of Loshchilov & Hutter (the same as
//! `torch.optim.AdamW`):
//! ```text
//! m ← β1·m + (1−β1)·g        v ← β2·v + (1−β2)·g²
//! θ ← θ·(1 − lr·wd) − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)
//! ```
//! Each parameter is updated element-wise on all cores (rayon), in place in the variable's
//! own storage and reading the gradient tensor backward produced ([`kernel`]); every
//! element's arithmetic is independent, so the result does not depend on the thread count
//! (bit-exact resume).

mod kernel;

use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// One named trainable tensor with its own learning-rate multiplier and weight decay switch.
pub struct Param {
    pub name: String,
    pub var: Var,
    pub lr_scale: f64,
    pub decay: bool,
}

/// Every variable of a model as a parameter, with the usual transformers rule: no weight
/// decay on norm weights and biases.
pub fn params_with_decay_rule(vars: Vec<(String, Var)>) -> Vec<Param> {
    vars.into_iter()
        .map(|(n, v)| Param { decay: !(n.ends_with("norm.weight") || n.ends_with(".bias")), name: n, var: v, lr_scale: 1.0 })
        .collect()
}

pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Param>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Gradients of the current step, per parameter (gradient accumulation).
    g: Vec<Accumulated>,
    /// Updates applied so far (t in the bias corrections).
    pub step: u64,
}

/// One parameter's gradient so far this step. A single micro-batch keeps backward's own
/// tensor (no copy, no extra 4 bytes per parameter); a second one starts a host sum.
enum Accumulated {
    None,
    Tensor(Tensor),
    Host(Vec<f32>),
}

impl Accumulated {
    fn sum_squares(&self) -> Result<f64> {
        Ok(match self {
            Accumulated::None => 0.0,
            Accumulated::Tensor(t) => kernel::with_f32(t, kernel::sum_squares)?,
            Accumulated::Host(h) => kernel::sum_squares(h),
        })
    }

    fn as_grad(&self) -> kernel::Grad<'_> {
        match self {
            Accumulated::None => kernel::Grad::Zero,
            Accumulated::Tensor(t) => kernel::Grad::Tensor(t),
            Accumulated::Host(h) => kernel::Grad::Host(h),
        }
    }
}

/// `acc[i] += x[i]` with x read from a tensor (in place when it is contiguous f32 on the CPU).
fn add_into(acc: &mut [f32], x: &Tensor) -> Result<()> {
    if x.elem_count() != acc.len() {
        bail!("gradient has {} elements, the parameter {}", x.elem_count(), acc.len());
    }
    kernel::with_f32(x, |x| acc.par_iter_mut().zip(x.par_iter()).for_each(|(a, &x)| *a += x))?;
    Ok(())
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// False when the norm was not finite and the update was skipped.
    pub applied: bool,
}

impl AdamW {
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> AdamW {
        let m = params.iter().map(|p| vec![0.0; p.var.elem_count()]).collect();
        let v = params.iter().map(|p| vec![0.0; p.var.elem_count()]).collect();
        let g = params.iter().map(|_| Accumulated::None).collect();
        AdamW { config, params, m, v, g, step: 0 }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Add one micro-batch's gradients (parameters the loss did not reach get none).
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<()> {
        for (p, acc) in self.params.iter().zip(self.g.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            if g.elem_count() != p.var.elem_count() {
                bail!("{}: gradient has {} elements, the parameter {}", p.name, g.elem_count(), p.var.elem_count());
            }
            // Detached so a kept gradient cannot hold an autograd graph alive.
            let g = g.detach();
            *acc = match std::mem::replace(acc, Accumulated::None) {
                Accumulated::None => Accumulated::Tensor(g),
                // 0 + a + b, the order of the plain host sum this replaced (bit-compatible).
                Accumulated::Tensor(first) => {
                    let mut host = vec![0.0f32; p.var.elem_count()];
                    add_into(&mut host, &first)?;
                    add_into(&mut host, &g)?;
                    Accumulated::Host(host)
                }
                Accumulated::Host(mut host) => {
                    add_into(&mut host, &g)?;
                    Accumulated::Host(host)
                }
            };
        }
        Ok(())
    }

    /// `accumulate` then `apply`: the usual one-micro-batch step.
    pub fn step(&mut self, grads: &GradStore, lr: f64, max_norm: f64) -> Result<StepReport> {
        self.accumulate(grads)?;
        self.apply(lr, max_norm)
    }

    /// Clip the accumulated gradients by global norm (`max_norm > 0`), update with learning
    /// rate `lr`, and clear the accumulator. A non-finite norm skips the update (and does not
    /// advance `step`), as verl and torch's GradScaler do.
    pub fn apply(&mut self, lr: f64, max_norm: f64) -> Result<StepReport> {
        let g: Vec<Accumulated> = std::mem::replace(&mut self.g, self.params.iter().map(|_| Accumulated::None).collect());
        let mut sq = 0.0f64;
        for gi in &g {
            sq += gi.sum_squares()?;
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Ok(StepReport { grad_norm, applied: false });
        }
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
        let grad_scale = if max_norm > 0.0 && grad_norm > max_norm { (max_norm / (grad_norm + 1e-6)) as f32 } else { 1.0 };
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (i, p) in self.params.iter().enumerate() {
            let lr_p = lr * p.lr_scale;
            let decay = if p.decay { 1.0 - lr_p * c.weight_decay } else { 1.0 };
            let coeffs = kernel::Coeffs {
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                eps: c.eps as f32,
                lr: lr_p as f32,
                decay: decay as f32,
                bc1: bc1 as f32,
                bc2_sqrt: (bc2 as f32).sqrt(),
                grad_scale,
            };
            kernel::apply(&p.var, &mut self.m[i], &mut self.v[i], g[i].as_grad(), coeffs)
                .with_context(|| format!("AdamW update of {}", p.name))?;
        }
        Ok(StepReport { grad_norm, applied: true })
    }

    /// Save the moments and step counter (safetensors, names `m.<param>` / `v.<param>`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            let dev = candle_core::Device::Cpu;
            tensors.insert(format!("m.{}", p.name), Tensor::from_slice(&self.m[i], self.m[i].len(), &dev)?);
            tensors.insert(format!("v.{}", p.name), Tensor::from_slice(&self.v[i], self.v[i].len(), &dev)?);
        }
        tensors.insert("step".into(), Tensor::from_slice(&[self.step as i64], 1, &candle_core::Device::Cpu)?);
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?;
        for (i, p) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{}", p.name);
                let t = tensors.get(&key).with_context(|| format!("{}: missing `{key}`", path.display()))?;
                let values = t.to_vec1::<f32>()?;
                if values.len() != slot.len() {
                    bail!("{}: `{key}` has {} values, the parameter has {}", path.display(), values.len(), slot.len());
                }
                *slot = values;
            }
        }
        let step = tensors.get("step").with_context(|| format!("{}: missing `step`", path.display()))?;
        self.step = step.to_vec1::<i64>()?[0] as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The AdamW formula written out in f64 for one scalar parameter, as a reference.
    fn reference(theta0: f64, grads: &[f64], lr: f64, c: AdamWConfig) -> f64 {
        let (mut th, mut m, mut v) = (theta0, 0.0, 0.0);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            m = c.beta1 * m + (1.0 - c.beta1) * g;
            v = c.beta2 * v + (1.0 - c.beta2) * g * g;
            th *= 1.0 - lr * c.weight_decay;
            th -= lr * (m / (1.0 - c.beta1.powi(t))) / ((v / (1.0 - c.beta2.powi(t))).sqrt() + c.eps);
        }
        th
    }

    #[test]
    fn matches_the_adamw_formula_over_many_steps() {
        // Loss = Σ a_i · θ_i² so the gradient 2·a_i·θ_i changes every step.
        let dev = Device::Cpu;
        let init = [0.5f32, -1.5, 2.0];
        let a = [1.0f64, 0.3, -0.2];
        let var = Var::from_tensor(&Tensor::new(&init, &dev).unwrap()).unwrap();
        let cfg = AdamWConfig { weight_decay: 0.1, ..Default::default() };
        let mut opt = AdamW::new(vec![Param { name: "w".into(), var: var.clone(), lr_scale: 1.0, decay: true }], cfg);
        let coeff = Tensor::new(&[1.0f32, 0.3, -0.2], &dev).unwrap();
        let mut grads_hist: Vec<Vec<f64>> = vec![vec![]; 3];
        let mut theta: Vec<f64> = init.iter().map(|&x| x as f64).collect();
        let lr = 0.05;
        for _ in 0..50 {
            let loss = (var.as_tensor().sqr().unwrap() * &coeff).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            // Reference: replay the same gradients through the f64 formula.
            for i in 0..3 {
                grads_hist[i].push(2.0 * a[i] * theta[i]);
            }
            opt.step(&grads, lr, 0.0).unwrap();
            for i in 0..3 {
                theta[i] = reference(init[i] as f64, &grads_hist[i], lr, cfg);
            }
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for i in 0..3 {
                assert!((got[i] as f64 - theta[i]).abs() < 1e-4, "step {}: {} vs {}", opt.step, got[i], theta[i]);
                theta[i] = got[i] as f64; // follow the f32 trajectory so gradients agree
            }
        }
    }

    /// The host-vector AdamW this in-place version replaced, kept verbatim in its arithmetic
    /// (sequential loops, same f32 expressions) as the bit-exact reference.
    struct HostAdamW {
        theta: Vec<Vec<f32>>,
        m: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
        step: u64,
    }

    impl HostAdamW {
        fn step(&mut self, grads: &[Option<Vec<f32>>], params: &[(f64, bool)], lr: f64, max_norm: f64, c: AdamWConfig) {
            let mut g: Vec<Vec<f32>> =
                self.theta.iter().zip(grads).map(|(th, g)| g.clone().unwrap_or_else(|| vec![0.0; th.len()])).collect();
            let sq: f64 = g.iter().map(|gi| gi.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).sum();
            let grad_norm = sq.sqrt();
            if max_norm > 0.0 && grad_norm > max_norm {
                let scale = (max_norm / (grad_norm + 1e-6)) as f32;
                g.iter_mut().for_each(|gi| gi.iter_mut().for_each(|x| *x *= scale));
            }
            self.step += 1;
            let t = self.step as i32;
            let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
            for (i, &(lr_scale, decays)) in params.iter().enumerate() {
                let lr_p = lr * lr_scale;
                let decay = if decays { 1.0 - lr_p * c.weight_decay } else { 1.0 };
                let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
                let (lr_f, decay_f, bc1_f, bc2_sqrt) = (lr_p as f32, decay as f32, bc1 as f32, (bc2 as f32).sqrt());
                for j in 0..self.theta[i].len() {
                    let (th, m, v, gr) = (&mut self.theta[i][j], &mut self.m[i][j], &mut self.v[i][j], g[i][j]);
                    *m = b1 * *m + (1.0 - b1) * gr;
                    *v = b2 * *v + (1.0 - b2) * gr * gr;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *th = *th * decay_f - lr_f * (*m / bc1_f) / denom;
                }
            }
        }
    }

    fn random_vec(rng: &mut crate::rng::Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect()
    }

    /// Runs `steps` AdamW steps on three parameters — a large one (more than one norm chunk
    /// and many rayon tasks), a small one without weight decay and lr × 0.5, and one the loss
    /// never reaches — with loss Σ a·θ² (so gradients change every step), two micro-batches
    /// on odd steps and clipping on every third step. Returns the in-place optimizer's final
    /// (θ, m, v) and the host reference's.
    fn run_against_host_reference(steps: usize) -> ((Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>), HostAdamW) {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(7);
        let sizes = [150_001usize, 37, 5];
        let init: Vec<Vec<f32>> = sizes.iter().map(|&n| random_vec(&mut rng, n, 1.0)).collect();
        let coeff: Vec<Vec<f32>> = sizes[..2].iter().map(|&n| random_vec(&mut rng, n, 1.0)).collect();
        let vars: Vec<Var> = init.iter().map(|x| Var::from_slice(x, x.len(), &dev).unwrap()).collect();
        let meta = [(1.0, true), (0.5, false), (1.0, true)];
        let params = vars
            .iter()
            .zip(meta)
            .enumerate()
            .map(|(i, (var, (lr_scale, decay)))| Param { name: format!("p{i}"), var: var.clone(), lr_scale, decay })
            .collect();
        let cfg = AdamWConfig { weight_decay: 0.1, ..Default::default() };
        let mut opt = AdamW::new(params, cfg);
        let mut host = HostAdamW {
            theta: init.clone(),
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            step: 0,
        };
        let coeff_t: Vec<Tensor> = coeff.iter().map(|c| Tensor::from_slice(c, c.len(), &dev).unwrap()).collect();
        let loss_grads = |scale: f64| {
            let mut loss = Tensor::zeros((), candle_core::DType::F32, &dev).unwrap();
            for (var, c) in vars.iter().zip(&coeff_t) {
                let term = (var.as_tensor().sqr().unwrap() * c).unwrap().sum_all().unwrap();
                loss = (loss + (term * scale).unwrap()).unwrap();
            }
            loss.backward().unwrap()
        };
        let host_grad = |grads: &GradStore| -> Vec<Option<Vec<f32>>> {
            vars.iter().map(|v| grads.get(v.as_tensor()).map(|g| g.to_vec1::<f32>().unwrap())).collect()
        };
        for step in 0..steps {
            let max_norm = if step % 3 == 2 { 0.5 } else { 0.0 };
            let lr = 0.01;
            let g1 = loss_grads(1.0);
            let mut want = host_grad(&g1);
            opt.accumulate(&g1).unwrap();
            if step % 2 == 1 {
                // A second micro-batch: the host reference sums 0 + g1 + g2 like the old code.
                let g2 = loss_grads(0.5);
                for (w, g) in want.iter_mut().zip(host_grad(&g2)) {
                    if let (Some(w), Some(g)) = (w.as_mut(), g) {
                        let mut sum = vec![0.0f32; w.len()];
                        sum.iter_mut().zip(w.iter()).for_each(|(s, &a)| *s += a);
                        sum.iter_mut().zip(&g).for_each(|(s, &b)| *s += b);
                        *w = sum;
                    }
                }
                opt.accumulate(&g2).unwrap();
            }
            assert!(opt.apply(lr, max_norm).unwrap().applied);
            host.step(&want, &meta, lr, max_norm, cfg);
        }
        let theta = vars.iter().map(|v| v.as_tensor().to_vec1::<f32>().unwrap()).collect();
        ((theta, opt.m.clone(), opt.v.clone()), host)
    }

    #[test]
    fn in_place_update_is_bit_identical_to_the_host_vector_version() {
        let ((theta, m, v), host) = run_against_host_reference(24);
        assert_eq!(host.step, 24);
        for i in 0..3 {
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same(&theta[i], &host.theta[i]), "theta of p{i} differs");
            assert!(same(&m[i], &host.m[i]) && same(&v[i], &host.v[i]), "moments of p{i} differ");
        }
        // The parameters did move (a no-op optimizer would also be "identical").
        assert!(host.theta[0].iter().zip(run_against_host_reference(0).1.theta[0].iter()).any(|(a, b)| a != b));
    }

    #[test]
    fn in_place_update_does_not_depend_on_the_thread_count() {
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| run_against_host_reference(6).0)
        };
        let (one, three) = (run(1), run(3));
        let bits = |x: &(Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>)| {
            [&x.0, &x.1, &x.2].iter().flat_map(|vs| vs.iter().flatten().map(|f| f.to_bits())).collect::<Vec<u32>>()
        };
        assert_eq!(bits(&one), bits(&three));
    }

    #[test]
    fn strided_gradient_goes_through_a_host_copy_with_the_same_result() {
        // A (3, 4) parameter whose gradient is handed over as a transposed (non-contiguous) view.
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
        let grad: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.1).collect();
        let mut results = vec![];
        for strided in [false, true] {
            let var = Var::from_slice(&init, (3, 4), &dev).unwrap();
            // The same logical (3, 4) values, either contiguous or as the transpose of their
            // (4, 3) transpose (strides (1, 3)).
            let g = if strided {
                let transposed: Vec<f32> = (0..12).map(|k| grad[(k % 3) * 4 + k / 3]).collect();
                Tensor::from_slice(&transposed, (4, 3), &dev).unwrap().t().unwrap()
            } else {
                Tensor::from_slice(&grad, (3, 4), &dev).unwrap()
            };
            assert_eq!(g.is_contiguous(), !strided);
            let mut store = var.as_tensor().sum_all().unwrap().backward().unwrap();
            store.insert(var.as_tensor(), g);
            let mut opt = AdamW::new(vec![Param { name: "w".into(), var: var.clone(), lr_scale: 1.0, decay: true }], AdamWConfig::default());
            for _ in 0..3 {
                opt.step(&store, 0.05, 0.0).unwrap();
            }
            results.push(var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        assert_eq!(results[0], results[1]);
        assert_ne!(results[0], init);
    }

    #[test]
    fn clipping_and_nonfinite_skip() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![Param { name: "w".into(), var: var.clone(), lr_scale: 1.0, decay: false }], AdamWConfig::default());
        let loss = (var.as_tensor() * 1.0).unwrap().sum_all().unwrap(); // grad = [1, 1]
        let r = opt.step(&loss.backward().unwrap(), 0.1, 0.5).unwrap();
        assert!((r.grad_norm - 2f64.sqrt()).abs() < 1e-6 && r.applied);
        let nan = (var.as_tensor() * f64::NAN).unwrap().sum_all().unwrap();
        let before = var.as_tensor().to_vec1::<f32>().unwrap();
        let r = opt.step(&nan.backward().unwrap(), 0.1, 1.0).unwrap();
        assert!(!r.applied);
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), before);
        assert_eq!(opt.step, 1);
    }

    #[test]
    fn state_round_trips_exactly() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &dev).unwrap()).unwrap();
        let mut a = AdamW::new(vec![Param { name: "w".into(), var: var.clone(), lr_scale: 1.0, decay: true }], AdamWConfig::default());
        let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
        a.step(&loss.backward().unwrap(), 0.01, 1.0).unwrap();
        let d = tempfile::tempdir().unwrap();
        a.save(&d.path().join("opt.safetensors")).unwrap();
        let mut b = AdamW::new(vec![Param { name: "w".into(), var: var.clone(), lr_scale: 1.0, decay: true }], AdamWConfig::default());
        b.load(&d.path().join("opt.safetensors")).unwrap();
        assert_eq!((a.m.clone(), a.v.clone(), a.step), (b.m.clone(), b.v.clone(), b.step));
    }
}
