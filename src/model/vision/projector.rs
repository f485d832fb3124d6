//! LLaVA's `mlp2x_gelu` projector (`multi_modal_projector.linear_1` → activation →
//! `linear_2`): vision features (tower width) to the LLM's hidden size.

use super::vit::{Dense, VitAct};
use candle_core::Tensor;
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct Projector {
    linear_1: Dense,
    linear_2: Dense,
    act: VitAct,
}

impl Projector {
    /// Built from a `VarBuilder` rooted at `multi_modal_projector`.
    pub fn new(vision: usize, text: usize, bias: bool, act: VitAct, vb: VarBuilder) -> candle_core::Result<Projector> {
        Ok(Projector { linear_1: Dense::load(&vb.pp("linear_1"), text, vision, bias)?, linear_2: Dense::load(&vb.pp("linear_2"), text, text, bias)?, act })
    }

    /// The parameter names and shapes under `multi_modal_projector.`.
    pub fn parameter_shapes(vision: usize, text: usize, bias: bool) -> Vec<(String, Vec<usize>)> {
        let mut out = vec![("multi_modal_projector.linear_1.weight".to_string(), vec![text, vision])];
        if bias {
            out.push(("multi_modal_projector.linear_1.bias".into(), vec![text]));
        }
        out.push(("multi_modal_projector.linear_2.weight".into(), vec![text, text]));
        if bias {
            out.push(("multi_modal_projector.linear_2.bias".into(), vec![text]));
        }
        out
    }

    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (name, d) in [("linear_1", &self.linear_1), ("linear_2", &self.linear_2)] {
            out.push((format!("multi_modal_projector.{name}.weight"), d.weight.clone()));
            if let Some(b) = &d.bias {
                out.push((format!("multi_modal_projector.{name}.bias"), b.clone()));
            }
        }
        out
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.linear_2.forward(&self.act.apply(&self.linear_1.forward(x)?)?)
    }
}
