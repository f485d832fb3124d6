//! Data synthesis: the `synth` stage ([`stage`]), the methods it knows ([`methods`]), the
//! resumable output they write ([`output`]), and one home per method: AdaptLLM's per-document
//! pipeline (`adaptllm/`), ToEdit's token editing (`toedit/`), the adaptllm-tiny corpus generator (`tiny_domain`), the toedit-tiny
//! "human" corpus (`tiny_human`), the instruct-pt-tiny encyclopedia (`tiny_encyclopedia`) and text sampled from a model (`sample`). The corpus readers
//! they share are in `crate::text::corpus`.

pub mod adaptllm;
pub mod instruct;
pub mod method;
pub mod methods;
pub mod output;
pub mod sample;
pub mod stage;
pub mod stage_stats;
pub mod stats;
pub mod tiny_domain;
pub mod tiny_encyclopedia;
pub mod tiny_human;
pub mod tiny_ood;
pub mod tiny_uprise;
pub mod tiny_visual;
pub mod toedit;
pub mod visual;
