//! The PPO critic (rl-spec §3.1): a **separate** copy of the starting model with a scalar
//! value head, like verl's `AutoModelForTokenClassification(num_labels = 1)`.
//!
//! Why separate rather than a shared trunk: the value loss and the policy loss then never
//! fight over the same weights, the critic gets its own learning rate and warmup (verl's
//! `critic.optim.lr`, `critic_warmup`), and the policy that is saved is exactly the policy
//! that was trained. The price is a second forward/backward per mini-batch, which on the
//! tiny CPU models is the same order as the policy's own.

use super::batch::SeqBatch;
use crate::model::{Mode, Model};
use crate::train::optim::Param;
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use std::path::Path;

pub struct Critic {
    pub model: Model,
    /// (H, 1) value head and its (1,) bias; both start at 0, so V ≡ 0 before training.
    head: Var,
    bias: Var,
}

impl Critic {
    pub fn load(dir: &Path, device: &Device) -> Result<Critic> {
        let model = Model::load(dir, device, DType::F32, true)?;
        let h = model.config.hidden_size;
        let head = Var::zeros((h, 1), DType::F32, device)?;
        let bias = Var::zeros(1, DType::F32, device)?;
        Ok(Critic { model, head, bias })
    }

    /// Trainable parameters, named `critic.*`.
    pub fn params(&self) -> Vec<Param> {
        let mut out: Vec<Param> = self
            .model
            .vars()
            .into_iter()
            .map(|(n, v)| Param { decay: !(n.ends_with("norm.weight") || n.ends_with(".bias")), name: format!("critic.{n}"), var: v, lr_scale: 1.0 })
            .collect();
        out.push(Param { name: "critic.value_head.weight".into(), var: self.head.clone(), lr_scale: 1.0, decay: true });
        out.push(Param { name: "critic.value_head.bias".into(), var: self.bias.clone(), lr_scale: 1.0, decay: false });
        out
    }

    /// Values `(B, T)`: `V_t` is read at the position before response token t, the same
    /// position whose logits give token t's log-prob (rl-spec §3.1).
    pub fn values(&self, batch: &SeqBatch, mode: Mode) -> Result<Tensor> {
        let hidden = self.model.decoder.forward_hidden(&batch.ids, &batch.attn, None, mode)?;
        let states = hidden.narrow(1, batch.prompt_width - 1, batch.response_width)?.to_dtype(DType::F32)?;
        let (b, t, h) = states.dims3()?;
        let v = states.reshape((b * t, h))?.matmul(self.head.as_tensor())?.broadcast_add(self.bias.as_tensor())?;
        Ok(v.reshape((b, t))?)
    }
}
