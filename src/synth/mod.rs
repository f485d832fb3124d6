//! Data synthesis: the `synth` stage ([`stage`]), the methods it knows ([`methods`]), the
//! resumable output they write ([`output`]), and one home per method: AdaptLLM's per-document
//! pipeline (`adaptllm/`) and the adaptllm-tiny corpus generator (`tiny_domain`). The corpus
//! readers they share are in `crate::text::corpus`.

pub mod adaptllm;
pub mod methods;
pub mod output;
pub mod stage;
pub mod stats;
pub mod tiny_domain;
