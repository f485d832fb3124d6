//! The causal language model: configuration, decoder, checkpoints and per-token log-probs;
//! the bidirectional encoders (BERT, RoBERTa) in [`encoder`]; [`registry`] says which family
//! a model folder holds.
//!
//! Our own decoder on candle (not candle-transformers): differentiable ops when training,
//! fast ops when sampling, a KV cache owned by the caller, and a causal + left-padding mask
//! with a large finite negative. Why: docs/ENGINE.md §2.

pub mod config;
pub mod decode_batch;
pub mod decoder;
pub mod encoder;
pub mod estimate;
pub mod init;
pub mod inspect;
pub mod stage;
pub mod st_header;
pub mod logprobs;
pub mod lora;
pub mod mask;
pub mod fused;
pub mod heads;
pub mod registry;
pub mod score;
pub mod vision;
pub mod weights;

pub use config::{ModelConfig, ModelType, RopeScaling};
pub use decoder::{distinct_rows, AttnMask, Decoder, ForwardOut, KvCache, Mode, RopePositions};
pub use logprobs::{head_token_logprobs, token_logprobs};
pub use weights::Model;

use std::path::PathBuf;

/// Everything that can go wrong reading a config or a checkpoint. Each message names the
/// file and the key or tensor, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: required key `{key}` is missing; add it to the config")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: key `{key}` should be {expected}, found {found}")]
    BadKey { path: PathBuf, key: String, expected: String, found: String },
    #[error("{path}: model_type `{found}` is not supported; supported model types: {supported}")]
    UnsupportedModelType { path: PathBuf, found: String, supported: String },
    #[error("{path}: {what} is not supported")]
    Unsupported { path: PathBuf, what: String },
    #[error("unknown model preset `{0}`; known presets: tiny, small")]
    UnknownPreset(String),
    #[error("no weights in {dir}: expected model.safetensors or model.safetensors.index.json")]
    MissingWeights { dir: PathBuf },
    #[error("{path} is truncated or corrupt ({detail}); delete it and download or save it again")]
    CorruptSafetensors { path: PathBuf, detail: String },
    #[error("tensor `{name}` is missing from the checkpoint ({files})")]
    MissingTensor { name: String, files: String },
    #[error("unexpected tensor `{name}` in {file}: the config does not describe it (wrong model_type or config?)")]
    UnexpectedTensor { name: String, file: PathBuf },
    #[error("tensor `{name}` in {file} has shape {found:?}, the config expects {expected:?}")]
    ShapeMismatch { name: String, file: PathBuf, expected: Vec<usize>, found: Vec<usize> },
    #[error("image {path}: {detail}")]
    Image { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
