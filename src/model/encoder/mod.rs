//! Bidirectional encoders: BERT and RoBERTa, built from a Hugging Face `config.json` and
//! loaded from `model.safetensors` with or without the task model's prefix.
//!
//! word + position + token-type embeddings → LayerNorm → N post-LayerNorm layers
//! (self-attention with biases over the padding mask, GELU feed-forward), plus the optional
//! pooler (`tanh(dense(h[:, 0]))`) and masked-LM head. The forward takes ids or embeddings
//! (so a noised embedding sequence runs through the same layers) and every op is
//! differentiable; f32 on the CPU is the tested path.
//!
//! - [`config`]: `EncoderConfig` from `config.json`;
//! - [`inputs`]: padding mask and position ids (RoBERTa's count only real tokens);
//! - [`layers`]: embeddings, layers and heads with their tensor names;
//! - [`forward`]: `Encoder::forward` / `forward_embeds` / `pooler_output` / `mlm_logits`;
//! - [`checkpoint`]: tensor names and shapes checked against the config, `EncoderModel::load`;
//! - [`pooling`]: mean / CLS pooling and L2 normalisation;
//! - [`save`]: random initialisation and saving in the Hugging Face layout;
//! - [`tiny`]: a tiny RoBERTa-shaped encoder with a word-level tokenizer built from a corpus;
//! - [`embed`]: texts → tokenized batch → sentence embeddings.

pub mod checkpoint;
pub mod config;
pub mod embed;
pub mod forward;
pub mod inputs;
pub mod layers;
pub mod pooling;
pub mod save;
pub mod tiny;

pub use checkpoint::{inspect, parameter_shapes, CheckpointLayout, EncoderModel};
pub use config::{Activation, EncoderConfig, EncoderType};
pub use embed::{embed_texts, EncoderTokenizer};
pub use forward::{Encoder, Heads};
pub use pooling::{l2_normalize, pool, Pooling};
