//! AdamW with its state in plain vectors, so a checkpoint can save and restore it exactly.
//!
//! The update is the decoupled-weight-decay form of Loshchilov & Hutter (the same as
//! `torch.optim.AdamW`):
//! ```text
//! m ← β1·m + (1−β1)·g        v ← β2·v + (1−β2)·g²
//! θ ← θ·(1 − lr·wd) − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)
//! ```
//! Each parameter is updated element-wise on all cores (rayon) with no temporaries beyond one
//! host copy of θ and g; every element's arithmetic is independent, so the result does not
//! depend on the thread count (bit-exact resume). This sits behind [`Optimizer`] so a fused
//! in-place version can replace it.

use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, DType, Tensor, Var};
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
    /// Gradients summed over the micro-batches of the current step (gradient accumulation).
    g: Vec<Vec<f32>>,
    /// Updates applied so far (t in the bias corrections).
    pub step: u64,
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
        let g = params.iter().map(|p| vec![0.0; p.var.elem_count()]).collect();
        AdamW { config, params, m, v, g, step: 0 }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Add one micro-batch's gradients (parameters the loss did not reach get none).
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<()> {
        for (p, acc) in self.params.iter().zip(self.g.iter_mut()) {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                let host = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                acc.par_iter_mut().zip(host.par_iter()).for_each(|(a, &x)| *a += x);
            }
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
        let mut g = std::mem::take(&mut self.g);
        self.g = self.params.iter().map(|p| vec![0.0; p.var.elem_count()]).collect();
        let sq: f64 = g.iter().map(|gi| gi.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).sum();
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Ok(StepReport { grad_norm, applied: false });
        }
        if max_norm > 0.0 && grad_norm > max_norm {
            // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
            let scale = (max_norm / (grad_norm + 1e-6)) as f32;
            g.par_iter_mut().for_each(|gi| gi.iter_mut().for_each(|x| *x *= scale));
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (i, p) in self.params.iter().enumerate() {
            let lr_p = lr * p.lr_scale;
            let decay = if p.decay { 1.0 - lr_p * c.weight_decay } else { 1.0 };
            let mut theta = p.var.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
            let (lr_f, decay_f, bc1_f, bc2_sqrt) = (lr_p as f32, decay as f32, bc1 as f32, (bc2 as f32).sqrt());
            theta
                .par_iter_mut()
                .zip(self.m[i].par_iter_mut())
                .zip(self.v[i].par_iter_mut())
                .zip(g[i].par_iter())
                .for_each(|(((th, m), v), &gr)| {
                    *m = b1 * *m + (1.0 - b1) * gr;
                    *v = b2 * *v + (1.0 - b2) * gr * gr;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *th = *th * decay_f - lr_f * (*m / bc1_f) / denom;
                });
            let shape = p.var.shape().clone();
            let new = Tensor::from_vec(theta, shape, p.var.device())?.to_dtype(p.var.dtype())?;
            p.var.set(&new)?;
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
