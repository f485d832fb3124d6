//! A tiny, real tokenizer directory for tests and tiny profiles.
//!
//! `build_char_tokenizer(dir)` writes a `tokenizer.json` in the format of the
//! `tokenizers` library and a `tokenizer_config.json` naming the special tokens and a
//! ChatML chat template. The tokenizer is Qwen2's pipeline with a character vocabulary: an
//! NFC normalizer, Qwen2's split regex and a byte-level pre-tokenizer, a BPE model with no
//! merges (so every character is one token) and a byte-level decoder (decoding is lossless).
//!
//! Why Qwen2's pipeline: the tiny presets are `model_type = "qwen2"`, and transformers 5
//! builds a `Qwen2Tokenizer` for such a folder from the vocabulary and merges alone, with
//! its own normalizer and pre-tokenizer, whatever `tokenizer.json` says. With any other
//! pipeline, transformers (and TRL, vLLM…) would tokenize text differently from retort —
//! with a plain character model it dropped every space and newline.
//!
//! Vocabulary (ids in this order): `<|endoftext|>`, `<|im_start|>`,
//! `<|im_end|>`, then `'\n'`, then the printable ASCII characters 32..=126, each written in
//! the byte-level alphabet (`Ċ` for the newline, `Ġ` for the space; the printable
//! characters from `!` to `~` are themselves).
//! Characters outside it (tabs, non-ASCII) have no token and are dropped by
//! encode: the tokenizer is meant for synthetic ASCII tasks.

use super::{Result, TextError};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// Qwen2's pre-tokenizer split (transformers' `PRETOKENIZE_REGEX`).
const QWEN2_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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
    tokens.push(byte_level_char(b'\n').to_string());
    tokens.extend(PRINTABLE.map(|byte| byte_level_char(byte).to_string()));
    tokens
}

/// The character GPT-2's byte-level alphabet writes `byte` as, for the bytes the vocabulary
/// holds: printable ASCII but the space is itself; the space and the control bytes are
/// shifted to U+0100 + their rank among the unprintable bytes (space → `Ġ`, `\n` → `Ċ`).
fn byte_level_char(byte: u8) -> char {
    match byte {
        b'!'..=b'~' => char::from(byte),
        // Bytes 0..=32 are the first 33 unprintable bytes, in order.
        0..=32 => char::from_u32(0x100 + byte as u32).expect("U+0100..U+0120 are characters"),
        _ => unreachable!("the tiny vocabulary holds only '\\n' and printable ASCII"),
    }
}

/// Write `tokenizer.json`, `tokenizer_config.json` and
/// `special_tokens_map.json` into `dir` (created if missing).
pub fn build_char_tokenizer(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| TextError::Write { path: dir.to_path_buf(), source })?;
    write_tokenizer_json(dir)?;
    write_side_files(dir)
}

/// `tokenizer_config.json` and `special_tokens_map.json` of the tiny tokenizers.
pub(crate) fn write_side_files(dir: &Path) -> Result<()> {
    write_json(&dir.join("tokenizer_config.json"), &tokenizer_config())?;
    write_json(&dir.join("special_tokens_map.json"), &special_tokens_map())?;
    Ok(())
}

fn write_tokenizer_json(dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let tokenizer = qwen2_tokenizer(&path, &[])?;
    tokenizer.save(&path, true).map_err(|error| TextError::TokenizerJson { path: path.clone(), message: error.to_string() })
}

/// The pre-tokenizer of the tiny tokenizers (Qwen2's split regex, then byte level).
pub(crate) fn pre_tokenizer(path: &Path) -> Result<Sequence> {
    let split = Split::new(SplitPattern::Regex(QWEN2_SPLIT_REGEX.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|error| TextError::TokenizerJson { path: path.to_path_buf(), message: error.to_string() })?;
    // As transformers' Qwen2Tokenizer: no prefix space, the regex split done above.
    let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, false);
    Ok(Sequence::new(vec![split.into(), byte_level.into()]))
}

/// Qwen2's pipeline over the character [`vocabulary`] plus `merges` (each merge's result
/// appended to the vocabulary in order, unless already in it); `path` names the file in errors.
pub(crate) fn qwen2_tokenizer(path: &Path, merges: &[(String, String)]) -> Result<tokenizers::Tokenizer> {
    let as_error = |error: tokenizers::Error| TextError::TokenizerJson { path: path.to_path_buf(), message: error.to_string() };
    let mut tokens = vocabulary();
    let mut known: std::collections::HashSet<String> = tokens.iter().cloned().collect();
    for (a, b) in merges {
        let t = format!("{a}{b}");
        if known.insert(t.clone()) {
            tokens.push(t);
        }
    }
    // The model goes through serde because the BPE builder wants tokenizers'
    // internal hash map type; the library then writes its canonical file.
    let vocab: serde_json::Map<String, serde_json::Value> = tokens.into_iter().zip(0u32..).map(|(token, id)| (token, id.into())).collect();
    let merges: Vec<[&str; 2]> = merges.iter().map(|(a, b)| [a.as_str(), b.as_str()]).collect();
    let model_json = serde_json::json!({"type": "BPE", "vocab": vocab, "merges": merges});
    let model: BPE = serde_json::from_str(&model_json.to_string()).map_err(|e| as_error(e.into()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_normalizer(Some(NFC)).map_err(as_error)?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(path)?));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials = SPECIAL_TOKENS.iter().map(|token| AddedToken::from(*token, true));
    tokenizer.add_special_tokens(specials.collect::<Vec<_>>()).map_err(as_error)?;
    Ok(tokenizer)
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
        "tokenizer_class": "Qwen2Tokenizer",
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
