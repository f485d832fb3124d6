//! Small trainable heads that sit on a decoder's hidden states: FlowRL's partition-function
//! head ([`ZHead`], docs/METHODS.md §4.4) and the PPO critic's scalar value head ([`ValueHead`],
//! docs/METHODS.md §3.1). The algorithms that train them live in `train/rl/algo/{flowrl,ppo}.rs`.
//!
//! Both are written with plain, differentiable tensor ops (candle_nn's fused CPU LayerNorm has
//! no backward pass) and start from values that a seed fixes, so a run is reproducible.

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{Init, Linear, VarBuilder};

/// LayerNorm written with plain tensor ops: candle_nn's fused CPU kernel has no backward
/// pass, and the Z head must be trained.
#[derive(Clone, Debug)]
struct DifferentiableLayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl DifferentiableLayerNorm {
    fn new(size: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", Init::Const(0.0))?;
        Ok(DifferentiableLayerNorm { weight, bias, eps: 1e-5 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// The partition-function network Z_φ of docs/METHODS.md §4.4 (FlowRL `ProjZModule`):
/// `[Linear(H,H) → GELU → LayerNorm(H)] × (layers − 1) → Linear(H, 1)`, last bias initialised
/// to 0 so that log Z starts near 0. Dropout (0.1 in the reference) is omitted: the lab's
/// runs are small and deterministic. Parameter names: `hidden.{i}.linear.{weight,bias}`,
/// `hidden.{i}.norm.{weight,bias}`, `out.{weight,bias}`.
#[derive(Clone, Debug)]
pub struct ZHead {
    hidden: Vec<(Linear, DifferentiableLayerNorm)>,
    out: Linear,
}

impl ZHead {
    pub fn new(vb: VarBuilder, hidden_size: usize, layers: usize) -> Result<Self> {
        if layers == 0 {
            candle_core::bail!("parameter z_head.layers = 0 is invalid: the Z head needs at least its output layer (FlowRL uses 3)");
        }
        let hidden = (0..layers - 1)
            .map(|i| {
                let vb = vb.pp(format!("hidden.{i}"));
                Ok((candle_nn::linear(hidden_size, hidden_size, vb.pp("linear"))?, DifferentiableLayerNorm::new(hidden_size, vb.pp("norm"))?))
            })
            .collect::<Result<Vec<_>>>()?;
        let out_vb = vb.pp("out");
        let weight = out_vb.get_with_hints((1, hidden_size), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bias = out_vb.get_with_hints(1, "bias", Init::Const(0.0))?;
        Ok(ZHead { hidden, out: Linear::new(weight, Some(bias)) })
    }

    /// A fresh head whose values are a function of `seed` (candle's own initialisers draw
    /// from an unseeded RNG, which would break run-to-run reproducibility): Kaiming-normal
    /// linear weights, LayerNorm 1/0, zero biases so that log Z starts near 0 (docs/METHODS.md §10.5).
    /// Returns the head and its variables named `z_head.*`, sorted by name.
    pub fn seeded(hidden_size: usize, layers: usize, seed: u64, device: &Device) -> Result<(ZHead, Vec<(String, Var)>)> {
        let varmap = candle_nn::VarMap::new();
        let head = ZHead::new(VarBuilder::from_varmap(&varmap, DType::F32, device), hidden_size, layers)?;
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("Z head VarMap lock poisoned".into()))?
            .iter()
            .map(|(n, v)| (format!("z_head.{n}"), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, var) in &vars {
            let shape = var.shape().clone();
            let n = shape.elem_count();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let fan_in = *shape.dims().last().unwrap_or(&1) as f64;
                let mut rng = crate::rng::Rng::derive(seed, name);
                (0..n).map(|_| (rng.normal() * (1.0 / fan_in).sqrt()) as f32).collect()
            };
            var.set(&Tensor::from_vec(values, shape, var.device())?)?;
        }
        Ok((head, vars))
    }

    /// `pooled (B, H)` → `log Z (B,)`.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let mut x = pooled.clone();
        for (linear, norm) in &self.hidden {
            x = norm.forward(&linear.forward(&x)?.gelu_erf()?)?;
        }
        self.out.forward(&x)?.squeeze(1)
    }
}

/// A scalar value head `(H, 1)` plus bias `(1,)` over hidden states, like transformers'
/// `AutoModelForTokenClassification(num_labels = 1)`. Both start at 0, so V ≡ 0 before
/// training.
pub struct ValueHead {
    pub weight: Var,
    pub bias: Var,
}

impl ValueHead {
    pub fn zeros(hidden_size: usize, device: &Device) -> Result<ValueHead> {
        Ok(ValueHead { weight: Var::zeros((hidden_size, 1), DType::F32, device)?, bias: Var::zeros(1, DType::F32, device)? })
    }

    /// `states (B, T, H)` → values `(B, T)`.
    pub fn forward(&self, states: &Tensor) -> Result<Tensor> {
        let (b, t, h) = states.dims3()?;
        let v = states.reshape((b * t, h))?.matmul(self.weight.as_tensor())?.broadcast_add(self.bias.as_tensor())?;
        v.reshape((b, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn values_of(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn fresh_zhead_trains_and_starts_with_zero_output_bias() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let head = ZHead::new(vb, 8, 3).unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(values_of(data["out.bias"].as_tensor()), vec![0.0]);
        assert_eq!(data.len(), 2 * 4 + 2, "two hidden blocks (linear + norm) and the output layer");
        let out_weight = data["out.weight"].clone();
        let first_linear = data["hidden.0.linear.weight"].clone();
        drop(data);
        let pooled = Tensor::randn(0f32, 1.0, (4, 8), &Device::Cpu).unwrap();
        let loss = head.forward(&pooled).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in [("out.weight", out_weight), ("hidden.0.linear.weight", first_linear)] {
            let g = values_of(grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} got no gradient")));
            assert!(g.iter().any(|&x| x != 0.0), "{name} gradient is all zero");
        }
    }

    #[test]
    fn a_zhead_needs_its_output_layer() {
        let err = ZHead::new(VarBuilder::zeros(DType::F32, &Device::Cpu), 4, 0).unwrap_err();
        assert!(err.to_string().contains("needs at least its output layer"), "{err}");
    }

    #[test]
    fn seeded_zhead_is_a_function_of_the_seed() {
        let names = |v: &[(String, Var)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let (_, a) = ZHead::seeded(6, 2, 11, &Device::Cpu).unwrap();
        let (_, b) = ZHead::seeded(6, 2, 11, &Device::Cpu).unwrap();
        assert_eq!(names(&a), ["z_head.hidden.0.linear.bias", "z_head.hidden.0.linear.weight", "z_head.hidden.0.norm.bias", "z_head.hidden.0.norm.weight", "z_head.out.bias", "z_head.out.weight"]);
        for ((n, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(values_of(x.as_tensor()), values_of(y.as_tensor()), "{n}");
        }
        assert_eq!(values_of(a[3].1.as_tensor()), vec![1.0; 6]);
        assert!(values_of(a[0].1.as_tensor()).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn value_head_starts_at_zero_and_reads_every_position() {
        let head = ValueHead::zeros(3, &Device::Cpu).unwrap();
        let states = Tensor::ones((2, 4, 3), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(head.forward(&states).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0.0; 4]; 2]);
        head.weight.set(&Tensor::new(&[[1f32], [2.0], [3.0]], &Device::Cpu).unwrap()).unwrap();
        head.bias.set(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(head.forward(&states).unwrap().to_vec2::<f32>().unwrap(), vec![vec![6.5; 4]; 2]);
    }
}
