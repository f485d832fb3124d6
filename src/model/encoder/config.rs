//! `EncoderConfig`: a BERT or RoBERTa shape, read from a Hugging Face `config.json`.

use crate::model::config::{json_object, Keys};
use crate::model::{ModelError, Result};
use serde_json::json;
use std::path::Path;

/// The encoder architectures. They share the layers; they differ in position ids, the MLM
/// head's tensor names and the MLM head's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderType {
    Bert,
    Roberta,
}

impl EncoderType {
    pub const ALL: [EncoderType; 2] = [EncoderType::Bert, EncoderType::Roberta];

    pub fn as_str(self) -> &'static str {
        match self {
            EncoderType::Bert => "bert",
            EncoderType::Roberta => "roberta",
        }
    }

    pub fn parse(s: &str) -> Option<EncoderType> {
        EncoderType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The attribute transformers' task models keep the base model under, which prefixes its
    /// tensor names in their checkpoints (`bert.embeddings...`); bare base models have none.
    pub fn base_prefix(self) -> &'static str {
        match self {
            EncoderType::Bert => "bert.",
            EncoderType::Roberta => "roberta.",
        }
    }

    /// The transformers class of the base model.
    pub fn base_architecture(self) -> &'static str {
        match self {
            EncoderType::Bert => "BertModel",
            EncoderType::Roberta => "RobertaModel",
        }
    }
}

/// The feed-forward activation (`hidden_act`), by transformers' `ACT2FN` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf: `gelu`, `gelu_python`.
    Gelu,
    /// The tanh approximation: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    Relu,
    /// `silu`, `swish`.
    Silu,
}

impl Activation {
    const NAMES: [(&'static str, Activation); 8] = [
        ("gelu", Activation::Gelu),
        ("gelu_python", Activation::Gelu),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("gelu_fast", Activation::GeluTanh),
        ("relu", Activation::Relu),
        ("silu", Activation::Silu),
        ("swish", Activation::Silu),
    ];

    pub fn parse(s: &str) -> Option<Activation> {
        Activation::NAMES.into_iter().find(|(n, _)| *n == s).map(|(_, a)| a)
    }

    pub fn supported_list() -> String {
        Activation::NAMES.map(|(n, _)| n).join(", ")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_new",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub model_type: EncoderType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// The MLM decoder shares the word embeddings (transformers' default for both types).
    pub tie_word_embeddings: bool,
    /// `architectures[0]` as written in the config, for display.
    pub architecture: Option<String>,
}

impl EncoderConfig {
    pub fn from_file(path: &Path) -> Result<EncoderConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        EncoderConfig::from_hf_json(&text, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn from_hf_json(text: &str, path: &Path) -> Result<EncoderConfig> {
        let obj = json_object(text, path)?;
        let keys = Keys { obj: &obj, path };
        let found = keys
            .present("model_type")
            .ok_or_else(|| ModelError::MissingKey { path: path.to_path_buf(), key: "model_type".into() })?;
        let model_type = found.as_str().and_then(EncoderType::parse).ok_or_else(|| ModelError::UnsupportedModelType {
            path: path.to_path_buf(),
            found: found.as_str().map(str::to_string).unwrap_or_else(|| found.to_string()),
            supported: EncoderType::ALL.map(|t| t.as_str()).join(", "),
        })?;
        let unsupported = |what: String| ModelError::Unsupported { path: path.to_path_buf(), what };
        // Features of these classes that this encoder does not implement: refuse rather than
        // compute something else.
        if keys.opt_bool("is_decoder")?.unwrap_or(false) {
            return Err(unsupported("is_decoder = true (a causal BERT/RoBERTa)".into()));
        }
        if keys.opt_bool("add_cross_attention")?.unwrap_or(false) {
            return Err(unsupported("add_cross_attention = true".into()));
        }
        if let Some(p) = keys.present("position_embedding_type") {
            if p.as_str() != Some("absolute") {
                return Err(unsupported(format!("position_embedding_type = {p} (only \"absolute\")")));
            }
        }
        let act = match keys.present("hidden_act") {
            None => Activation::Gelu,
            Some(v) => v.as_str().and_then(Activation::parse).ok_or_else(|| {
                keys.bad("hidden_act", &format!("one of {}", Activation::supported_list()), v)
            })?,
        };

        let hidden_size = keys.usize("hidden_size")?;
        let num_attention_heads = keys.usize("num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(keys.bad("num_attention_heads", "a positive divisor of hidden_size", &json!(num_attention_heads)));
        }
        // transformers' defaults when a key is absent.
        let (default_pad, default_eps) = match model_type {
            EncoderType::Bert => (0, 1e-12),
            EncoderType::Roberta => (1, 1e-12),
        };
        let pad_token_id = keys.token_ids("pad_token_id")?.first().copied().unwrap_or(default_pad);
        let cfg = EncoderConfig {
            model_type,
            vocab_size: keys.usize("vocab_size")?,
            hidden_size,
            num_hidden_layers: keys.usize("num_hidden_layers")?,
            num_attention_heads,
            intermediate_size: keys.usize("intermediate_size")?,
            hidden_act: act,
            max_position_embeddings: keys.opt_usize("max_position_embeddings")?.unwrap_or(512),
            type_vocab_size: keys.opt_usize("type_vocab_size")?.unwrap_or(2),
            layer_norm_eps: keys.opt_f64("layer_norm_eps")?.unwrap_or(default_eps),
            pad_token_id,
            tie_word_embeddings: keys.opt_bool("tie_word_embeddings")?.unwrap_or(true),
            architecture: keys
                .present("architectures")
                .and_then(|a| a.as_array())
                .and_then(|a| a.first())
                .and_then(|a| a.as_str())
                .map(str::to_string),
        };
        if cfg.type_vocab_size == 0 {
            return Err(keys.bad("type_vocab_size", "at least 1", &json!(0)));
        }
        if cfg.model_type == EncoderType::Roberta && cfg.pad_token_id as usize + 1 >= cfg.max_position_embeddings {
            return Err(keys.bad(
                "pad_token_id",
                "below max_position_embeddings - 1 (RoBERTa positions start at pad_token_id + 1)",
                &json!(cfg.pad_token_id),
            ));
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest sequence the position table covers: all of it for BERT; for RoBERTa the
    /// rows after `pad_token_id` (positions start at `pad_token_id + 1`).
    pub fn max_tokens(&self) -> usize {
        match self.model_type {
            EncoderType::Bert => self.max_position_embeddings,
            EncoderType::Roberta => self.max_position_embeddings - self.pad_token_id as usize - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EncoderConfig> {
        EncoderConfig::from_hf_json(text, Path::new("x/config.json"))
    }

    const MINILM: &str = r#"{"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384,
        "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
        "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
        "type_vocab_size": 2, "vocab_size": 30522}"#;

    #[test]
    fn parses_a_sentence_transformers_bert_config() {
        let c = parse(MINILM).unwrap();
        assert_eq!(c.model_type, EncoderType::Bert);
        assert_eq!((c.hidden_size, c.num_attention_heads, c.head_dim()), (384, 12, 32));
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.max_tokens(), 512);
        assert_eq!(c.architecture.as_deref(), Some("BertModel"));
    }

    #[test]
    fn roberta_positions_leave_room_for_the_pad_offset() {
        let text = MINILM.replace("\"bert\"", "\"roberta\"").replace("\"pad_token_id\": 0", "\"pad_token_id\": 1");
        let c = parse(&text.replace("512", "514")).unwrap();
        assert_eq!(c.max_tokens(), 512);
    }

    #[test]
    fn unsupported_features_are_named() {
        let err = parse(&MINILM.replace("\"gelu\"", "\"gelu_10\"")).unwrap_err().to_string();
        assert!(err.contains("hidden_act") && err.contains("gelu_new"), "{err}");
        let err = parse(&MINILM.replace("\"absolute\"", "\"relative_key\"")).unwrap_err().to_string();
        assert!(err.contains("relative_key"), "{err}");
        let err = parse(&MINILM.replace("\"bert\"", "\"qwen2\"")).unwrap_err().to_string();
        assert!(err.contains("qwen2") && err.contains("bert, roberta"), "{err}");
        let err = parse(&MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7")).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads"), "{err}");
        let err = parse(&MINILM.replace("\"num_hidden_layers\": 6,", "")).unwrap_err().to_string();
        assert!(err.contains("`num_hidden_layers` is missing"), "{err}");
    }
}
