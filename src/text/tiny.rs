//! A tiny, real tokenizer directory for tests and tiny profiles.
//!
//! `build_char_tokenizer(dir)` writes a `tokenizer.json` in the format of the
//! `tokenizers` library (a BPE model with no merges, so every character is
//! one token; no normalizer or pre-tokenizer; a `Fuse` decoder so decoding
//! concatenates and is lossless) and a `tokenizer_config.json` naming the
//! special tokens and a ChatML chat template. The same directory loads in
//! Python with `transformers.AutoTokenizer.from_pretrained(dir)`
//! (`PreTrainedTokenizerFast`), so both sides can share fixtures.
//!
//! Vocabulary (ids in this order): `<|endoftext|>`, `<|im_start|>`,
//! `<|im_end|>`, then `'\n'`, then the printable ASCII characters 32..=126.
//! Characters outside it (tabs, non-ASCII) have no token and are dropped by
//! encode: the tokenizer is meant for synthetic ASCII tasks.

use super::{Result, TextError};
use std::path::Path;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::BPE;
use tokenizers::AddedToken;

/// The special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// `<|endoftext|>`: end of sequence and padding.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Printable ASCII characters in the vocabulary.
const PRINTABLE: std::ops::RangeInclusive<u8> = 32..=126;
/// 3 specials + '\n' + 95 printable characters.
pub const VOCAB_SIZE: usize = SPECIAL_TOKENS.len() + 1 + (126 - 32 + 1);

/// ChatML without a default system prompt (Qwen2.5's template minus tools
/// and its default system message), written with whitespace control so that
/// trim_blocks/lstrip_blocks matter.
pub const CHATML_TEMPLATE: &str = include_str!("../../assets/tiny-chatml.jinja");

/// Every token string in id order.
pub fn vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
    tokens.push("\n".to_string());
    tokens.extend(PRINTABLE.map(|byte| char::from(byte).to_string()));
    tokens
}

/// Write `tokenizer.json`, `tokenizer_config.json` and
/// `special_tokens_map.json` into `dir` (created if missing).
pub fn build_char_tokenizer(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| TextError::Write { path: dir.to_path_buf(), source })?;
    write_tokenizer_json(dir)?;
    write_json(&dir.join("tokenizer_config.json"), &tokenizer_config())?;
    write_json(&dir.join("special_tokens_map.json"), &special_tokens_map())?;
    Ok(())
}

fn write_tokenizer_json(dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let as_error = |error: tokenizers::Error| TextError::TokenizerJson { path: path.clone(), message: error.to_string() };
    // The model goes through serde because the BPE builder wants tokenizers'
    // internal hash map type; the library then writes its canonical file.
    let vocab: serde_json::Map<String, serde_json::Value> =
        vocabulary().into_iter().zip(0u32..).map(|(token, id)| (token, id.into())).collect();
    let model_json = serde_json::json!({"type": "BPE", "vocab": vocab, "merges": []});
    let model: BPE = serde_json::from_str(&model_json.to_string()).map_err(|e| as_error(e.into()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_decoder(Some(Fuse::new()));
    let specials = SPECIAL_TOKENS.iter().map(|token| AddedToken::from(*token, true));
    tokenizer.add_special_tokens(specials.collect::<Vec<_>>()).map_err(as_error)?;
    tokenizer.save(&path, true).map_err(as_error)
}

fn tokenizer_config() -> serde_json::Value {
    let added_tokens_decoder: serde_json::Map<String, serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, token)| {
            let entry = serde_json::json!({
                "content": token, "lstrip": false, "normalized": false,
                "rstrip": false, "single_word": false, "special": true
            });
            (id.to_string(), entry)
        })
        .collect();
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": null,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": null,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 4096,
        "chat_template": CHATML_TEMPLATE,
    })
}

fn special_tokens_map() -> serde_json::Value {
    serde_json::json!({
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    // Serializing a serde_json::Value cannot fail (all keys are strings).
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(|source| TextError::Write { path: path.to_path_buf(), source })
}
