//! A model directory's tokenizer: `tokenizer.json` (the `tokenizers` crate
//! does the encoding) plus the special tokens and chat template that
//! `tokenizer_config.json` / `special_tokens_map.json` declare.

use super::chat::{ChatTemplate, Message};
use super::{Result, TextError};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// A special token's text and its id in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    pub text: String,
    pub id: u32,
}

/// Tokenizer of one model directory.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<SpecialToken>,
    eos: Option<SpecialToken>,
    pad: Option<SpecialToken>,
    unk: Option<SpecialToken>,
    /// End-of-sequence ids the model config adds (e.g. Qwen2.5's
    /// generation_config lists both `<|im_end|>` and `<|endoftext|>`).
    model_eos: Vec<u32>,
    chat_template: Option<ChatTemplate>,
    config_path: PathBuf,
}

/// The end-of-turn tokens of the chat formats retort knows (ChatML, Llama 3).
pub const END_OF_TURN: [&str; 2] = ["<|im_end|>", "<|eot_id|>"];

const SPECIAL_KEYS: [&str; 4] = ["bos_token", "eos_token", "pad_token", "unk_token"];

impl Tokenizer {
    /// Load `dir/tokenizer.json`, then the special tokens from
    /// `dir/special_tokens_map.json`, falling back to `dir/tokenizer_config.json`
    /// (transformers lets the map override the config's values), and the
    /// chat template from `tokenizer_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(TextError::NoModelFolder { path: dir.to_path_buf() });
        }
        let tokenizer_path = dir.join("tokenizer.json");
        let text = read_text(&tokenizer_path)?;
        let mut inner = tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|error| TextError::TokenizerJson {
            path: tokenizer_path.clone(),
            message: error.to_string(),
        })?;
        // Some tokenizer.json files carry the truncation / padding their trainer used (e.g.
        // all-MiniLM-L6-v2: truncation at 128). transformers turns both off for a call that
        // does not ask for them; so do we, or every document would silently end at 128 tokens.
        inner.with_truncation(None).map_err(|error| TextError::TokenizerJson { path: tokenizer_path.clone(), message: error.to_string() })?;
        inner.with_padding(None);

        let map_path = dir.join("special_tokens_map.json");
        let config_path = dir.join("tokenizer_config.json");
        let special_map = read_optional_json(&map_path)?;
        let config = read_optional_json(&config_path)?;

        let mut texts: Vec<(String, String)> = Vec::new();
        let mut tokens: [Option<SpecialToken>; 4] = [None, None, None, None];
        for (slot, key) in SPECIAL_KEYS.iter().enumerate() {
            let from_config = config.as_ref().map(|c| (c, &config_path));
            let from_map = special_map.as_ref().map(|m| (m, &map_path));
            for (json, path) in [from_map, from_config].into_iter().flatten() {
                if let Some(token_text) = special_token_text(json, key, path)? {
                    let id = inner.token_to_id(&token_text).ok_or_else(|| TextError::UnknownSpecialToken {
                        path: path.clone(),
                        key: key.to_string(),
                        token: token_text.clone(),
                    })?;
                    texts.push((key.to_string(), token_text.clone()));
                    tokens[slot] = Some(SpecialToken { text: token_text, id });
                    break;
                }
            }
        }
        let [bos, eos, pad, unk] = tokens;

        // transformers ≥ 4.44 saves the template beside the config as chat_template.jinja
        // (and then leaves it out of tokenizer_config.json); the config's own key wins, as in
        // transformers' loading order for older folders that have both.
        let jinja_path = dir.join(CHAT_TEMPLATE_FILE);
        let from_config = config.as_ref().map(|c| chat_template_source(c, &config_path)).transpose()?.flatten();
        let source = match from_config {
            Some(s) => Some(s),
            None if jinja_path.is_file() => Some(read_text(&jinja_path)?),
            None => None,
        };
        let chat_template = match source {
            Some(source) => Some(ChatTemplate::new(&source, texts)?),
            None => None,
        };
        Ok(Tokenizer { inner, bos, eos, pad, unk, model_eos: Vec::new(), chat_template, config_path })
    }

    /// Add end-of-sequence ids declared by the model (`eos_token_id` of
    /// generation_config.json / config.json; see [`model_eos_ids`]).
    pub fn with_model_eos(mut self, ids: &[u32]) -> Self {
        self.model_eos = ids.to_vec();
        self
    }

    /// Token ids of `text`; `add_special` lets the post-processor add BOS etc.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, add_special).map_err(|e| TextError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special` leaves out special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| TextError::Decode(e.to_string()))
    }

    pub fn bos(&self) -> Option<&SpecialToken> {
        self.bos.as_ref()
    }
    pub fn eos(&self) -> Option<&SpecialToken> {
        self.eos.as_ref()
    }
    pub fn pad(&self) -> Option<&SpecialToken> {
        self.pad.as_ref()
    }
    pub fn unk(&self) -> Option<&SpecialToken> {
        self.unk.as_ref()
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|t| t.id)
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|t| t.id)
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad.as_ref().map(|t| t.id)
    }

    /// Every id that ends generation: the tokenizer's eos first, then the
    /// model's, without repeats.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_id().into_iter().collect();
        for &id in &self.model_eos {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The ids that end a chat answer: [`Tokenizer::eos_ids`], then the chat formats'
    /// end-of-turn token (ChatML's `<|im_end|>`, Llama 3's `<|eot_id|>`) when the vocabulary
    /// has it. A chat model's answer is one assistant turn; Qwen2-VL-Instruct's
    /// generation_config lists `<|im_end|>` for that reason, but a folder whose config lists
    /// only `<|endoftext|>` (the `tiny-vlm` preset) would otherwise run on into turns of its own.
    pub fn chat_stop_ids(&self) -> Vec<u32> {
        let mut ids = self.eos_ids();
        for id in END_OF_TURN.iter().filter_map(|t| self.token_to_id(t)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Vocabulary size including added tokens (the embedding needs at least this many rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Render `messages` with the directory's chat template.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or_else(|| TextError::NoChatTemplate { path: self.config_path.clone() })?;
        template.render(messages, add_generation_prompt)
    }

    /// The underlying `tokenizers` tokenizer, for batch encoding and offsets.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TextError::Read { path: path.to_path_buf(), source })
}

/// Parse `path` as JSON, or `None` when the file does not exist.
fn read_optional_json(path: &Path) -> Result<Option<Json>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(path)?;
    let json = serde_json::from_str(&text).map_err(|source| TextError::ConfigJson { path: path.to_path_buf(), source })?;
    Ok(Some(json))
}

/// A special token is written as a string or as an AddedToken object
/// `{"content": "<s>", ...}`; null or missing means none.
fn special_token_text(json: &Json, key: &str, path: &Path) -> Result<Option<String>> {
    match json.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => Ok(Some(text.clone())),
        Some(Json::Object(object)) => match object.get("content") {
            Some(Json::String(text)) => Ok(Some(text.clone())),
            _ => Err(key_error(path, key, "is an object without a string `content`")),
        },
        Some(_) => Err(key_error(path, key, "must be a string, an object with `content`, or null")),
    }
}

/// Where transformers ≥ 4.44 writes a tokenizer's chat template.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// `chat_template` is a string, or a list of `{name, template}` of which
/// transformers uses the one named "default".
fn chat_template_source(config: &Json, path: &Path) -> Result<Option<String>> {
    match config.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(source)) => Ok(Some(source.clone())),
        Some(Json::Array(entries)) => {
            for entry in entries {
                if entry.get("name").and_then(Json::as_str) == Some("default") {
                    return match entry.get("template").and_then(Json::as_str) {
                        Some(source) => Ok(Some(source.to_string())),
                        None => Err(key_error(path, "chat_template", "entry \"default\" has no string `template`")),
                    };
                }
            }
            Err(key_error(path, "chat_template", "is a list without an entry named \"default\""))
        }
        Some(_) => Err(key_error(path, "chat_template", "must be a string or a list of {name, template}")),
    }
}

fn key_error(path: &Path, key: &str, problem: &str) -> TextError {
    TextError::ConfigKey { path: path.to_path_buf(), key: key.to_string(), problem: problem.to_string() }
}

/// `eos_token_id` of a model config: an int, a list of ints, null or absent.
pub fn eos_ids_from_config(config: &Json, path: &Path) -> Result<Vec<u32>> {
    let as_id = |value: &Json| value.as_u64().and_then(|id| u32::try_from(id).ok());
    match config.get("eos_token_id") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| as_id(item).ok_or_else(|| key_error(path, "eos_token_id", "must hold non-negative integers")))
            .collect(),
        Some(value) => match as_id(value) {
            Some(id) => Ok(vec![id]),
            None => Err(key_error(path, "eos_token_id", "must be an integer or a list of integers")),
        },
    }
}

/// The model's end-of-sequence ids: `generation_config.json`'s
/// `eos_token_id` when it names any (generation uses that file), else
/// `config.json`'s; empty when neither file says.
pub fn model_eos_ids(dir: &Path) -> Result<Vec<u32>> {
    for name in ["generation_config.json", "config.json"] {
        let path = dir.join(name);
        if let Some(json) = read_optional_json(&path)? {
            let ids = eos_ids_from_config(&json, &path)?;
            if !ids.is_empty() {
                return Ok(ids);
            }
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod load_tests {
    use super::*;

    #[test]
    fn a_truncation_stored_in_tokenizer_json_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        crate::text::tiny::build_char_tokenizer(dir.path()).unwrap();
        let path = dir.path().join("tokenizer.json");
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0});
        json["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"});
        std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
        // The file as written does truncate (so the test checks what it means to).
        let raw = tokenizers::Tokenizer::from_file(&path).unwrap();
        assert_eq!(raw.encode("the bees visit the flowers", false).unwrap().get_ids().len(), 64, "padding applies as stored");
        let tok = Tokenizer::load(dir.path()).unwrap();
        let text = "the bees visit the flowers";
        assert_eq!(tok.inner().encode(text, false).unwrap().get_ids().len(), text.chars().count(), "one id per character, neither cut at 4 nor padded to 64");
    }

    /// The tiny vocabulary: `<|endoftext|>` 0, `<|im_start|>` 1, `<|im_end|>` 2 (src/text/tiny.rs).
    #[test]
    fn a_chat_answer_also_stops_at_the_end_of_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        crate::text::tiny::build_char_tokenizer(dir.path()).unwrap();
        let tok = Tokenizer::load(dir.path()).unwrap().with_model_eos(&[0]);
        assert_eq!(tok.eos_ids(), vec![0]);
        assert_eq!(tok.chat_stop_ids(), vec![0, 2]);
        // A config that already lists the turn's end (Qwen2-VL-Instruct) gets no repeat.
        let listed = Tokenizer::load(dir.path()).unwrap().with_model_eos(&[2, 0]);
        assert_eq!(listed.chat_stop_ids(), vec![0, 2]);
    }
}
