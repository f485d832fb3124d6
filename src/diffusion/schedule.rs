//! The forward diffusion of research/synth-spec.md §5.2: DDPM's linear β schedule, the
//! noising of a whole embedding sequence, and the sinusoidal timestep embedding.

use candle_core::{bail, Device, Result, Tensor};

/// `β_t = linspace(beta_start, beta_end, T)` and its cumulative products, indices 0…T−1.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    /// `√ᾱ_t`, the weight of x₀ in x_t.
    sqrt_alpha_bar: Vec<f64>,
    /// `√(1 − ᾱ_t)`, the weight of the noise.
    sqrt_one_minus: Vec<f64>,
}

impl NoiseSchedule {
    /// The paper's schedule: T = 1000, β from 1e-4 to 0.02.
    pub fn paper() -> NoiseSchedule {
        NoiseSchedule::linear(1000, 1e-4, 0.02)
    }

    /// A linear schedule of `steps` betas (at least 2). Computed in f64: ᾱ₉₉₉ ≈ 4e-5 is a
    /// product of a thousand factors, and f32 would lose digits the §5.8 vectors check.
    pub fn linear(steps: usize, beta_start: f64, beta_end: f64) -> NoiseSchedule {
        let steps = steps.max(2);
        let mut alpha_bar = 1.0;
        let (mut a, mut b) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
        for i in 0..steps {
            // numpy/torch linspace: start + i·(end − start)/(n − 1).
            let beta = beta_start + i as f64 * (beta_end - beta_start) / (steps - 1) as f64;
            alpha_bar *= 1.0 - beta;
            a.push(alpha_bar.sqrt());
            b.push((1.0 - alpha_bar).sqrt());
        }
        NoiseSchedule { sqrt_alpha_bar: a, sqrt_one_minus: b }
    }

    /// T, the number of timesteps.
    pub fn steps(&self) -> usize {
        self.sqrt_alpha_bar.len()
    }

    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.sqrt_alpha_bar[t].powi(2)
    }

    pub fn sqrt_alpha_bar(&self, t: usize) -> f64 {
        self.sqrt_alpha_bar[t]
    }

    pub fn sqrt_one_minus_alpha_bar(&self, t: usize) -> f64 {
        self.sqrt_one_minus[t]
    }

    /// An error naming the range when `t` is not a timestep of this schedule.
    pub fn check(&self, t: usize) -> Result<()> {
        if t >= self.steps() {
            bail!("timestep {t} is outside the schedule's 0..{} (T = {})", self.steps() - 1, self.steps());
        }
        Ok(())
    }

    /// `x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε` with one `t` per row of x₀ (B, L, d); `noise` has
    /// x₀'s shape. Differentiable in x₀ (the reference does not detach it).
    pub fn q_sample(&self, x0: &Tensor, t: &[usize], noise: &Tensor) -> Result<Tensor> {
        let (b, _, _) = x0.dims3()?;
        if t.len() != b || noise.dims() != x0.dims() {
            bail!("q_sample: {} timesteps and noise {:?} for x0 {:?}", t.len(), noise.dims(), x0.dims());
        }
        for &s in t {
            self.check(s)?;
        }
        let signal = self.per_row(t, |s| self.sqrt_alpha_bar[s], x0.device())?;
        let scale = self.per_row(t, |s| self.sqrt_one_minus[s], x0.device())?;
        x0.broadcast_mul(&signal.to_dtype(x0.dtype())?)? + noise.broadcast_mul(&scale.to_dtype(x0.dtype())?)?
    }

    /// A (B, 1, 1) f32 tensor of `f(t_b)`, to broadcast over a row.
    fn per_row(&self, t: &[usize], f: impl Fn(usize) -> f64, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = t.iter().map(|&s| f(s) as f32).collect();
        Tensor::from_vec(v, (t.len(), 1, 1), device)
    }
}

/// The sinusoidal timestep embedding of size `dim`: `half = dim / 2`,
/// `f_k = exp(−ln(10000) · k / half)`, then `[cos(t·f_0..half), sin(t·f_0..half)]` (the cos
/// half first, as the reference's `timestep_embedding`); an odd `dim` ends with a 0.
pub fn timestep_embedding(t: usize, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let args: Vec<f64> = (0..half).map(|k| t as f64 * (-(10000f64.ln()) * k as f64 / half as f64).exp()).collect();
    let mut out: Vec<f32> = args.iter().map(|a| a.cos() as f32).collect();
    out.extend(args.iter().map(|a| a.sin() as f32));
    if dim % 2 == 1 {
        out.push(0.0);
    }
    out
}

/// The embeddings of a batch's timesteps, (B, 1, dim), to add at every position.
pub fn timestep_embeddings(t: &[usize], dim: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = t.iter().flat_map(|&s| timestep_embedding(s, dim)).collect();
    Tensor::from_vec(v, (t.len(), 1, dim), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_spec_test_vectors() {
        // research/synth-spec.md §5.8: (t, ᾱ, √ᾱ, √(1−ᾱ)), six decimals.
        let s = NoiseSchedule::paper();
        let vectors = [
            (0, 0.999900, 0.999950, 0.010000),
            (500, 0.077797, 0.278921, 0.960314),
            (550, 0.045736, 0.213860, 0.976864),
            (600, 0.025567, 0.159898, 0.987133),
            (700, 0.006868, 0.082875, 0.996560),
            (999, 0.000040, 0.006353, 0.999980),
        ];
        for (t, ab, sa, so) in vectors {
            assert!((s.alpha_bar(t) - ab).abs() < 5e-7, "ᾱ_{t} = {}", s.alpha_bar(t));
            assert!((s.sqrt_alpha_bar(t) - sa).abs() < 5e-7, "√ᾱ_{t} = {}", s.sqrt_alpha_bar(t));
            assert!((s.sqrt_one_minus_alpha_bar(t) - so).abs() < 5e-7, "√(1−ᾱ_{t}) = {}", s.sqrt_one_minus_alpha_bar(t));
        }
        assert_eq!(s.steps(), 1000);
        assert!(s.check(1000).unwrap_err().to_string().contains("0..999"));
    }

    #[test]
    fn timestep_embedding_matches_the_spec_test_vector() {
        let want = [-0.999023, -0.952413, 0.960170, 0.825336, 0.044182, -0.304811, -0.279415, 0.564642];
        let got = timestep_embedding(600, 8);
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 5e-6, "{got:?}");
        }
        assert_eq!(timestep_embedding(3, 5).len(), 5);
        assert_eq!(timestep_embedding(3, 5)[4], 0.0);
    }

    #[test]
    fn q_sample_mixes_signal_and_noise_per_row() {
        let s = NoiseSchedule::paper();
        let x0 = Tensor::from_vec(vec![1f32, 2., 3., 4.], (2, 1, 2), &Device::Cpu).unwrap();
        let noise = Tensor::from_vec(vec![1f32, -1., 0.5, 0.], (2, 1, 2), &Device::Cpu).unwrap();
        let got = s.q_sample(&x0, &[0, 600], &noise).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (a0, b0, a1, b1) = (0.999950, 0.010000, 0.159898, 0.987133);
        let want = [a0 + b0, 2. * a0 - b0, 3. * a1 + 0.5 * b1, 4. * a1];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        assert!(s.q_sample(&x0, &[0], &noise).is_err());
    }
}
