//! Text in and out of a model: the Hugging Face tokenizer (`tokenizer.json`),
//! the special tokens a model directory declares, and chat templates rendered
//! the way `transformers` renders them.
//!
//! - [`Tokenizer`] loads a model directory (`tokenizer.json` plus
//!   `tokenizer_config.json` / `special_tokens_map.json` when present).
//! - [`ChatTemplate`] renders a Jinja chat template with minijinja, configured
//!   like transformers' sandboxed jinja2 environment.
//! - [`corpus`] reads raw-text corpora (text, JSONL, Parquet) as documents, skipping and
//!   counting bad rows.
//! - [`jsonl`] reads JSONL files line by line with bounded memory (every user JSONL).
//! - [`instruct_format`]: the instruction synthesizer's text format (Instruction
//!   Pre-Training), which the `instruct` synth method writes and the sft stage tokenizes.
//! - [`tiny`] writes a small, real, character-level tokenizer directory for
//!   tests and tiny profiles; [`tiny_word`] a word-level one built from a corpus.

mod chat;
pub mod corpus;
pub mod instruct_format;
pub mod jsonl;
mod pyjson;
pub mod tiny;
pub mod tiny_word;
mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use tokenizer::{eos_ids_from_config, model_eos_ids, SpecialToken, Tokenizer, CHAT_TEMPLATE_FILE};

use std::path::PathBuf;

/// Everything that can go wrong loading a tokenizer or rendering a template.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no such model folder (give a folder with config.json, model.safetensors and tokenizer.json; `retort model init` builds one, `retort pull ORG/NAME` downloads one)")]
    NoModelFolder { path: PathBuf },
    #[error("{path} is not a valid tokenizer.json: {message}; re-download it (`retort pull`) or point at a directory with a tokenizers-format tokenizer.json")]
    TokenizerJson { path: PathBuf, message: String },
    #[error("{path}: invalid JSON: {source}")]
    ConfigJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: key `{key}` {problem}")]
    ConfigKey {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error("{path}: special token {key} = {token:?} is not in the vocabulary of tokenizer.json")]
    UnknownSpecialToken {
        path: PathBuf,
        key: String,
        token: String,
    },
    #[error("cannot encode text: {0}")]
    Encode(String),
    #[error("cannot decode token ids: {0}")]
    Decode(String),
    #[error("{path} has no `chat_template` and there is no chat_template.jinja beside it; use a chat/instruct model or supply a template")]
    NoChatTemplate { path: PathBuf },
    #[error("chat template error{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Template { line: Option<usize>, message: String },
}

pub type Result<T> = std::result::Result<T, TextError>;

#[cfg(test)]
mod tests;
