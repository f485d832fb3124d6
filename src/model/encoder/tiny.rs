//! A tiny RoBERTa-shaped encoder built from a corpus: a word-level tokenizer over the
//! corpus's lower-cased words (RoBERTa's specials `<s> <pad> </s> <unk> <mask>` first, and
//! `<s> … </s>` added around every text) and random weights with an MLM head. The tiny
//! diffusion-OOD experiment pre-trains it with MLM, as RoBERTa was, before denoising.

use super::config::{Activation, EncoderConfig, EncoderType};
use crate::model::encoder::EncoderModel;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// RoBERTa's special tokens at its ids: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, `<mask>` 4.
pub const SPECIALS: [&str; 5] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/// The shape of the tiny encoder.
#[derive(Clone, Copy, Debug)]
pub struct TinyEncoderShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    /// Tokens a text may have, specials included.
    pub max_tokens: usize,
}

impl Default for TinyEncoderShape {
    fn default() -> Self {
        TinyEncoderShape { hidden: 64, layers: 2, heads: 4, max_tokens: 128 }
    }
}

/// Words as the tokenizer's `Whitespace` pre-tokenizer splits them (`\w+|[^\w\s]+`), lower-cased.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word: Option<bool> = None;
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur_word = None;
            continue;
        }
        let w = c.is_alphanumeric() || c == '_';
        if cur_word.is_some_and(|k| k != w) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur_word = Some(w);
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The `tokenizer.json` of a word-level tokenizer over `vocab` (after the specials).
fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (i, w) in SPECIALS.iter().map(|s| s.to_string()).chain(vocab.iter().cloned()).enumerate() {
        map.insert(w, json!(i));
    }
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": true, "add_prefix_space": false},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "<unk>"}
    })
}

/// The vocabulary of a tiny encoder built from `corpus`: every word of its `{"text"}` rows
/// seen at least twice (the specials apart), sorted.
pub fn vocabulary(corpus: &Path) -> Result<Vec<String>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for item in crate::text::jsonl::open(corpus)? {
        let (line, raw) = item?;
        let v: serde_json::Value = serde_json::from_str(&raw).with_context(|| format!("{}:{line}: not JSON", corpus.display()))?;
        let text = v.get("text").and_then(|t| t.as_str()).with_context(|| format!("{}:{line}: no string `text`", corpus.display()))?;
        for w in words(text) {
            *counts.entry(w).or_default() += 1;
        }
    }
    Ok(counts.into_iter().filter(|(w, n)| *n >= 2 && !SPECIALS.contains(&w.as_str())).map(|(w, _)| w).collect())
}

/// The config of a tiny encoder of `shape` over `words` vocabulary words (the specials added).
pub fn tiny_config(words: usize, shape: TinyEncoderShape) -> EncoderConfig {
    EncoderConfig {
        model_type: EncoderType::Roberta,
        vocab_size: SPECIALS.len() + words,
        hidden_size: shape.hidden,
        num_hidden_layers: shape.layers,
        num_attention_heads: shape.heads,
        intermediate_size: 4 * shape.hidden,
        hidden_act: Activation::Gelu,
        // RoBERTa's positions start after the pad id (1).
        max_position_embeddings: shape.max_tokens + 2,
        type_vocab_size: 1,
        layer_norm_eps: 1e-5,
        pad_token_id: 1,
        tie_word_embeddings: true,
        architecture: Some("RobertaForMaskedLM".into()),
    }
}

/// Writes `out/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json}`: the
/// vocabulary is every word of the `{"text"}` rows of `corpus` seen at least twice.
pub fn init_tiny_encoder(out: &Path, corpus: &Path, shape: TinyEncoderShape, seed: u64) -> Result<EncoderConfig> {
    let vocab = vocabulary(corpus)?;
    if vocab.is_empty() {
        bail!("{}: no word occurs twice; the tiny encoder needs a corpus to build its vocabulary", corpus.display());
    }
    if shape.heads == 0 || !shape.hidden.is_multiple_of(shape.heads) {
        bail!("the hidden size {} must be a multiple of the {} heads", shape.hidden, shape.heads);
    }
    let config = tiny_config(vocab.len(), shape);
    let model = EncoderModel::init_random(&config, seed, &candle_core::Device::Cpu)?;
    let existed = out.exists();
    let written = (|| -> Result<()> {
        model.save(out)?;
        let tok = serde_json::to_string(&tokenizer_json(&vocab))?;
        crate::fsutil::write_atomic(&out.join("tokenizer.json"), tok.as_bytes())?;
        let tc = json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                        "cls_token": "<s>", "sep_token": "</s>", "model_max_length": shape.max_tokens});
        crate::fsutil::write_atomic(&out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tc)?.as_bytes())?;
        Ok(())
    })();
    if let Err(e) = written {
        if !existed {
            let _ = std::fs::remove_dir_all(out);
        }
        return Err(e);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Tokenizer;

    #[test]
    fn the_tiny_encoder_tokenizes_with_roberta_specials_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.jsonl");
        std::fs::write(&corpus, "{\"text\": \"Chop the onions, then stir.\"}\n{\"text\": \"chop the garlic, then stir!\"}\n").unwrap();
        let out = dir.path().join("m");
        let cfg = init_tiny_encoder(&out, &corpus, TinyEncoderShape { hidden: 16, layers: 1, heads: 2, max_tokens: 16 }, 1).unwrap();
        // Twice-seen: chop the , then stir  → 5 words after the 5 specials.
        assert_eq!(cfg.vocab_size, 10);
        let tok = Tokenizer::load(&out).unwrap();
        let ids = tok.encode("Chop the garlic", true).unwrap();
        let id = |w: &str| tok.token_to_id(w).unwrap();
        assert_eq!(ids, vec![0, id("chop"), id("the"), 3, 2]);
        assert_eq!((tok.pad_id(), tok.token_to_id("<mask>")), (Some(1), Some(4)));
        let m = EncoderModel::load(&out, &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
        assert!(m.layout.heads.mlm);
        assert_eq!(words("a,b  c!?"), vec!["a", ",", "b", "c", "!?"]);
    }
}
