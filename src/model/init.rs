//! Build a complete model folder from a preset: config, tokenizer and random weights, laid out
//! like a hub download so every other command loads it the same way.

use crate::model::{Model, ModelConfig};
use crate::text::{tiny, tiny_word};
use anyhow::{Context, Result};
use std::path::Path;

/// Files a model folder may carry besides its weights; copied along when a trained model is saved.
pub const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// Write `out/{config.json, generation_config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json}` for preset `tiny` or `small` with a character tokenizer (a word-level
/// one: [`init_folder_with_vocab`]).
pub fn init_folder(preset: &str, out: &Path, seed: u64) -> Result<ModelConfig> {
    init_folder_with_context(preset, out, seed, None)
}

/// [`init_folder`] with the preset's context length (`max_position_embeddings`) replaced:
/// the models are rotary, so any length works; tasks with long rows need more than `tiny`'s 256.
pub fn init_folder_with_context(preset: &str, out: &Path, seed: u64, context: Option<usize>) -> Result<ModelConfig> {
    init_folder_shaped(preset, out, seed, context, &Shape::default())
}

/// Overrides of a preset's shape (`retort model init --arch llama --hidden 576 …`): random
/// models of a real model's shape for benchmarks (the tokenizer stays the character one, so
/// ids past its vocabulary are never produced by encoding, only by sampling).
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// `llama` (no attention biases, rms eps 1e-5) or `qwen2` (q/k/v biases).
    pub arch: Option<crate::model::ModelType>,
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub heads: Option<usize>,
    pub kv_heads: Option<usize>,
    pub intermediate: Option<usize>,
    pub vocab: Option<usize>,
    pub untied: bool,
}

impl Shape {
    pub fn apply(&self, c: &mut ModelConfig) -> Result<()> {
        match self.arch {
            None => {}
            Some(crate::model::ModelType::Llama) => {
                c.model_type = crate::model::ModelType::Llama;
                c.qkv_bias = false;
                c.rms_norm_eps = 1e-5;
            }
            Some(crate::model::ModelType::Qwen2) => {
                c.model_type = crate::model::ModelType::Qwen2;
                c.qkv_bias = true;
            }
            Some(other) => anyhow::bail!("--arch {}: give llama or qwen2", other.as_str()),
        }
        let set = |slot: &mut usize, v: Option<usize>| v.map(|v| *slot = v);
        set(&mut c.hidden_size, self.hidden);
        set(&mut c.num_hidden_layers, self.layers);
        set(&mut c.num_attention_heads, self.heads);
        set(&mut c.num_key_value_heads, self.kv_heads);
        set(&mut c.intermediate_size, self.intermediate);
        set(&mut c.vocab_size, self.vocab);
        if self.untied {
            c.tie_word_embeddings = false;
        }
        let (h, n, kv) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads);
        anyhow::ensure!(h > 0 && n > 0 && kv > 0 && c.num_hidden_layers > 0 && c.intermediate_size > 0, "every size of the shape must be at least 1");
        anyhow::ensure!(h % n == 0 && (h / n) % 2 == 0, "--hidden {h} must be a multiple of --heads {n} with an even head size (RoPE rotates pairs)");
        anyhow::ensure!(n % kv == 0, "--heads {n} must be a multiple of --kv-heads {kv} (grouped-query attention)");
        anyhow::ensure!(c.vocab_size >= tiny::VOCAB_SIZE, "--vocab {} is below the character tokenizer's {} tokens", c.vocab_size, tiny::VOCAB_SIZE);
        c.head_dim = h / n;
        Ok(())
    }
}

/// [`init_folder_with_context`] with the shape of `preset` changed by `shape`.
pub fn init_folder_shaped(preset: &str, out: &Path, seed: u64, context: Option<usize>, shape: &Shape) -> Result<ModelConfig> {
    init_folder_full(preset, out, seed, context, shape, None)
}

/// [`init_folder_with_context`] with the word-level tokenizer of `merges` (see
/// [`crate::text::tiny_word`]) instead of the character one when `merges` is given.
pub fn init_folder_with_vocab(preset: &str, out: &Path, seed: u64, context: Option<usize>, merges: Option<&[(String, String)]>) -> Result<ModelConfig> {
    init_folder_full(preset, out, seed, context, &Shape::default(), merges)
}

fn init_folder_full(preset: &str, out: &Path, seed: u64, context: Option<usize>, shape: &Shape, merges: Option<&[(String, String)]>) -> Result<ModelConfig> {
    let vocab_size = merges.map_or(tiny::VOCAB_SIZE, tiny_word::vocab_size);
    let mut config = ModelConfig::preset(preset, vocab_size)?;
    shape.apply(&mut config)?;
    if let Some(n) = context {
        anyhow::ensure!((16..=1 << 20).contains(&n), "context {n} is out of range: give 16 to 1048576 tokens");
        config.max_position_embeddings = n;
    }
    let eos = tiny::vocabulary().iter().position(|t| t == tiny::EOS_TOKEN).context("tiny vocabulary has no eos")? as u32;
    config.eos_token_ids = vec![eos];
    let existed = out.exists();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tokenizer = match merges {
        Some(m) => tiny_word::build_word_tokenizer(out, m).map(|_| ()),
        None => tiny::build_char_tokenizer(out),
    };
    let written = tokenizer
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(Model::init_random(config.clone(), seed, &candle_core::Device::Cpu)?.save(out)?));
    if let Err(e) = written {
        // A folder with a tokenizer and no weights would look like a model; remove what we made.
        if !existed {
            let _ = std::fs::remove_dir_all(out);
        }
        return Err(e);
    }
    Ok(config)
}

/// Copy tokenizer and generation files from one model folder to another.
pub fn copy_side_files(from: &Path, to: &Path) -> Result<()> {
    crate::fsutil::copy_files(from, to, SIDE_FILES)?;
    Ok(())
}
