//! Data synthesis: one file a method (docs/METHODS.md §S1–§S6), plus, to come, the `synth`
//! stage and the corpus readers they share. So far: AdaptLLM's per-document pipeline (adaptllm/).

pub mod adaptllm;
pub mod output;
pub mod tiny_domain;
