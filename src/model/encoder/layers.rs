//! The pieces of a BERT-style encoder, each with its Hugging Face tensor names: embeddings,
//! post-LayerNorm transformer layers, the pooler and the MLM heads.
//!
//! Every op has a backward (the fused dense projection and masked softmax of `model::fused`,
//! LayerNorm and the activations from candle primitives), so a loss on the outputs trains
//! every parameter; no separate inference path.

use super::config::{Activation, EncoderConfig, EncoderType};
use crate::model::fused;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

/// `x · Wᵀ + b` with PyTorch's (out, in) weight.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize) -> Result<Dense> {
        Ok(Dense { weight: vb.get((out_dim, in_dim), "weight")?, bias: vb.get(out_dim, "bias")? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        fused::linear::linear(x, &self.weight, Some(&self.bias))
    }
}

/// LayerNorm over the last dim with a biased variance, as torch computes it.
#[derive(Clone, Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

pub(crate) fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Gelu => x.gelu_erf(),
        // candle's `gelu` is the tanh approximation.
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
        Activation::Silu => x.silu(),
    }
}

/// Word + position + token type embeddings, then LayerNorm.
#[derive(Clone, Debug)]
pub(crate) struct Embeddings {
    pub(crate) word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    pub(crate) fn load(cfg: &EncoderConfig, vb: &VarBuilder) -> Result<Embeddings> {
        let h = cfg.hidden_size;
        Ok(Embeddings {
            word: vb.pp("word_embeddings").get((cfg.vocab_size, h), "weight")?,
            position: vb.pp("position_embeddings").get((cfg.max_position_embeddings, h), "weight")?,
            token_type: vb.pp("token_type_embeddings").get((cfg.type_vocab_size, h), "weight")?,
            norm: LayerNorm::load(&vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    /// Rows of `table` for a (B, L) u32 index tensor: (B, L, H).
    fn lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        table.index_select(&ids.flatten_all()?, 0)?.reshape((b, l, table.dim(1)?))
    }

    /// Word embeddings of (B, L) ids: the `inputs_embeds` transformers would build.
    pub(crate) fn words(&self, ids: &Tensor) -> Result<Tensor> {
        Self::lookup(&self.word, ids)
    }

    /// `inputs_embeds` (B, L, H) plus positions and token types (all type 0 when `None`),
    /// normalised.
    pub(crate) fn forward(&self, inputs_embeds: &Tensor, positions: &Tensor, token_types: Option<&Tensor>) -> Result<Tensor> {
        let with_types = match token_types {
            Some(t) => (inputs_embeds + Self::lookup(&self.token_type, t)?)?,
            None => inputs_embeds.broadcast_add(&self.token_type.get(0)?)?,
        };
        self.norm.forward(&(with_types + Self::lookup(&self.position, positions)?)?)
    }
}

/// One post-LayerNorm transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x)).
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    out_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl Layer {
    pub(crate) fn load(cfg: &EncoderConfig, vb: &VarBuilder) -> Result<Layer> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attn = vb.pp("attention");
        let this = attn.pp("self");
        Ok(Layer {
            query: Dense::load(&this.pp("query"), h, h)?,
            key: Dense::load(&this.pp("key"), h, h)?,
            value: Dense::load(&this.pp("value"), h, h)?,
            attn_out: Dense::load(&attn.pp("output").pp("dense"), h, h)?,
            attn_norm: LayerNorm::load(&attn.pp("output").pp("LayerNorm"), h, eps)?,
            intermediate: Dense::load(&vb.pp("intermediate").pp("dense"), i, h)?,
            output: Dense::load(&vb.pp("output").pp("dense"), h, i)?,
            out_norm: LayerNorm::load(&vb.pp("output").pp("LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    /// (B, L, H) → (B, heads, L, d).
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        x.reshape((b, l, self.heads, h / self.heads))?.transpose(1, 2)?.contiguous()
    }

    /// `bias` is the (B, 1, L, L) padding bias of [`super::inputs::attention_bias`].
    pub(crate) fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let d = h / self.heads;
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?;
        let probs = fused::softmax::masked_softmax(&scores.to_dtype(DType::F32)?, bias, 1.0 / (d as f64).sqrt())?
            .to_dtype(x.dtype())?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        let x = self.attn_norm.forward(&(self.attn_out.forward(&context)? + x)?)?;
        let ffn = self.output.forward(&activate(&self.intermediate.forward(&x)?, self.act)?)?;
        self.out_norm.forward(&(ffn + x)?)
    }
}

/// `tanh(dense(h[:, 0]))`: BERT's next-sentence pooler.
#[derive(Clone, Debug)]
pub(crate) struct Pooler {
    dense: Dense,
}

impl Pooler {
    pub(crate) fn load(cfg: &EncoderConfig, vb: &VarBuilder) -> Result<Pooler> {
        Ok(Pooler { dense: Dense::load(&vb.pp("dense"), cfg.hidden_size, cfg.hidden_size)? })
    }

    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        self.dense.forward(&first)?.tanh()
    }
}

/// The masked-LM head: dense → activation → LayerNorm → decoder (+ bias). BERT's
/// `cls.predictions` uses `hidden_act`; RoBERTa's `lm_head` always the erf GELU.
#[derive(Clone, Debug)]
pub(crate) struct MlmHead {
    dense: Dense,
    norm: LayerNorm,
    /// (V, H); the word embeddings when tied.
    decoder: Tensor,
    bias: Tensor,
    act: Activation,
}

impl MlmHead {
    /// `vb` is rooted at the checkpoint's top level; `word` is the word embedding table.
    pub(crate) fn load(cfg: &EncoderConfig, vb: &VarBuilder, word: &Tensor) -> Result<MlmHead> {
        let (h, v, eps) = (cfg.hidden_size, cfg.vocab_size, cfg.layer_norm_eps);
        let (head, dense, norm, act) = match cfg.model_type {
            EncoderType::Bert => {
                let p = vb.pp("cls").pp("predictions");
                let t = p.pp("transform");
                (p, t.pp("dense"), t.pp("LayerNorm"), cfg.hidden_act)
            }
            EncoderType::Roberta => {
                let p = vb.pp("lm_head");
                (p.clone(), p.pp("dense"), p.pp("layer_norm"), Activation::Gelu)
            }
        };
        let decoder = if cfg.tie_word_embeddings { word.clone() } else { head.pp("decoder").get((v, h), "weight")? };
        Ok(MlmHead {
            dense: Dense::load(&dense, h, h)?,
            norm: LayerNorm::load(&norm, h, eps)?,
            decoder,
            bias: head.get(v, "bias")?,
            act,
        })
    }

    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = self.norm.forward(&activate(&self.dense.forward(hidden)?, self.act)?)?;
        fused::linear::linear(&x, &self.decoder, Some(&self.bias))
    }
}
