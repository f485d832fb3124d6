//! `ModelConfig`: the decoder's shape, read from (and written as) a Hugging Face `config.json`.
//!
//! Parsing is tolerant of both transformers 4.x and 5.x layouts: `rope_theta` at top level or
//! inside `rope_parameters`, `rope_scaling` or `rope_parameters` carrying the rope type,
//! `sliding_window: null`, and token ids given as an int or a list (docs/ENGINE.md §2.9).

use super::{ModelError, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The architectures this decoder implements. They differ only in which biases and norms exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    Qwen2,
    Qwen3,
    Llama,
    Mistral,
}

impl ModelType {
    pub const ALL: [ModelType; 4] = [ModelType::Qwen2, ModelType::Qwen3, ModelType::Llama, ModelType::Mistral];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
        }
    }

    /// The transformers class name written into `architectures`.
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::Qwen2 => "Qwen2ForCausalLM",
            ModelType::Qwen3 => "Qwen3ForCausalLM",
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Mistral => "MistralForCausalLM",
        }
    }

    fn parse(s: &str) -> Option<ModelType> {
        ModelType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    fn supported_list() -> String {
        ModelType::ALL.map(|t| t.as_str()).join(", ")
    }
}

/// Llama-3 style frequency-dependent RoPE rescaling (transformers `rope_type: "llama3"`).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (always for qwen2; `attention_bias` for llama/qwen3).
    pub qkv_bias: bool,
    /// Bias on o_proj (llama/qwen3 `attention_bias`; never for qwen2/mistral).
    pub o_bias: bool,
    /// Per-head RMSNorm on queries and keys before RoPE (qwen3).
    pub qk_norm: bool,
    /// Attention window, when the architecture actually uses one.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Preset name of the Qwen2.5-0.5B shape.
pub const QWEN25_05B: &str = "qwen2.5-0.5b";

/// Every name `ModelConfig::preset` accepts.
pub const PRESETS: [&str; 3] = ["tiny", "small", QWEN25_05B];

/// Reads typed keys from a JSON object and turns absence/mistyping into errors naming the file.
pub(crate) struct Keys<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) path: &'a Path,
}

impl<'a> Keys<'a> {
    pub(crate) fn present(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn bad(&self, key: &str, expected: &str, found: &Value) -> ModelError {
        ModelError::BadKey {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| self.bad(key, "a non-negative integer", v)),
        }
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| ModelError::MissingKey { path: self.path.to_path_buf(), key: key.to_string() })
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(key, "a number", v)),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.bad(key, "true or false", v)),
        }
    }

    /// Token ids appear as `2`, `[2, 3]` or `null` depending on the model.
    pub(crate) fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.present(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|x| x as u32).ok_or_else(|| self.bad(key, "a list of token ids", v)))
                .collect(),
            Some(v) => v.as_u64().map(|x| vec![x as u32]).ok_or_else(|| self.bad(key, "a token id or a list", v)),
        }
    }
}

/// The top-level object of a `config.json`'s text (decoder and encoder configs alike); `path`
/// only names the file in errors.
pub(crate) fn json_object(text: &str, path: &Path) -> Result<serde_json::Map<String, Value>> {
    let value: Value = serde_json::from_str(text).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(ModelError::BadKey { path: path.to_path_buf(), key: "(top level)".into(), expected: "a JSON object".into(), found: other.to_string() }),
    }
}

impl ModelConfig {
    /// Reads `config.json` from a file.
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            // A training stage's folder holds its model in `model/`: say so instead of "not found".
            let inner = path.parent().map(|d| d.join("model"));
            let source = match inner.filter(|m| source.kind() == std::io::ErrorKind::NotFound && m.join("config.json").is_file()) {
                Some(m) => std::io::Error::new(source.kind(), format!("{source}; this is a training stage's folder, its model is {}", m.display())),
                None => source,
            };
            ModelError::Io { path: path.to_path_buf(), source }
        })?;
        ModelConfig::from_hf_json(&text, path)
    }

    /// Parses the text of a Hugging Face `config.json`; `path` is only used in error messages.
    pub fn from_hf_json(text: &str, path: &Path) -> Result<ModelConfig> {
        let obj = json_object(text, path)?;
        let keys = Keys { obj: &obj, path };
        let model_type_str = keys
            .present("model_type")
            .ok_or_else(|| ModelError::MissingKey { path: path.to_path_buf(), key: "model_type".into() })?;
        let model_type = model_type_str.as_str().and_then(ModelType::parse).ok_or_else(|| {
            ModelError::UnsupportedModelType {
                path: path.to_path_buf(),
                found: model_type_str.as_str().map(str::to_string).unwrap_or_else(|| model_type_str.to_string()),
                supported: ModelType::supported_list(),
            }
        })?;

        let hidden_size = keys.usize("hidden_size")?;
        let num_attention_heads = keys.usize("num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 && keys.opt_usize("head_dim")?.is_none() {
            return Err(keys.bad("num_attention_heads", "a positive divisor of hidden_size", &json!(num_attention_heads)));
        }
        let num_key_value_heads = keys.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(keys.bad(
                "num_key_value_heads",
                "a positive divisor of num_attention_heads",
                &json!(num_key_value_heads),
            ));
        }
        let head_dim = keys.opt_usize("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        if head_dim % 2 != 0 {
            return Err(keys.bad("head_dim", "an even number (RoPE rotates pairs)", &json!(head_dim)));
        }

        let (rope_theta, rope_scaling) = parse_rope(&keys)?;
        let attention_bias = keys.opt_bool("attention_bias")?.unwrap_or(false);
        if keys.opt_bool("mlp_bias")?.unwrap_or(false) {
            return Err(ModelError::Unsupported { path: path.to_path_buf(), what: "mlp_bias = true".into() });
        }
        let (qkv_bias, o_bias) = match model_type {
            ModelType::Qwen2 => (true, false),
            ModelType::Mistral => (false, false),
            ModelType::Llama | ModelType::Qwen3 => (attention_bias, attention_bias),
        };
        // Qwen configs carry a `sliding_window` size that is inactive unless `use_sliding_window`.
        let sliding_window = match model_type {
            ModelType::Qwen2 | ModelType::Qwen3 if !keys.opt_bool("use_sliding_window")?.unwrap_or(false) => None,
            ModelType::Llama => None,
            _ => keys.opt_usize("sliding_window")?,
        };
        let eos_token_ids = keys.token_ids("eos_token_id")?;
        let bos_token_id = keys.token_ids("bos_token_id")?.first().copied();

        Ok(ModelConfig {
            model_type,
            vocab_size: keys.usize("vocab_size")?,
            hidden_size,
            intermediate_size: keys.usize("intermediate_size")?,
            num_hidden_layers: keys.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: keys.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: keys.opt_usize("max_position_embeddings")?.unwrap_or(32768),
            tie_word_embeddings: keys.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm: model_type == ModelType::Qwen3,
            sliding_window,
            bos_token_id,
            eos_token_ids,
        })
    }

    /// A `config.json` that transformers loads into the matching `*ForCausalLM`.
    /// Written in the transformers 4.x layout (top-level `rope_theta`, `rope_scaling`), which
    /// transformers 5 still reads.
    pub fn to_hf_json(&self) -> Value {
        let mut obj = json!({
            "architectures": [self.model_type.architecture()],
            "model_type": self.model_type.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let map = obj.as_object_mut().expect("json! of an object literal is an object");
        match self.model_type {
            ModelType::Llama | ModelType::Qwen3 => {
                map.insert("attention_bias".into(), json!(self.qkv_bias));
            }
            ModelType::Qwen2 | ModelType::Mistral => {}
        }
        map.insert("sliding_window".into(), json!(self.sliding_window));
        if matches!(self.model_type, ModelType::Qwen2 | ModelType::Qwen3) {
            map.insert("use_sliding_window".into(), json!(self.sliding_window.is_some()));
        }
        if let Some(s) = &self.rope_scaling {
            map.insert(
                "rope_scaling".into(),
                json!({
                    "rope_type": "llama3",
                    "factor": s.factor,
                    "low_freq_factor": s.low_freq_factor,
                    "high_freq_factor": s.high_freq_factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                }),
            );
        }
        if let Some(bos) = self.bos_token_id {
            map.insert("bos_token_id".into(), json!(bos));
        }
        map.insert("eos_token_id".into(), token_ids_json(&self.eos_token_ids));
        obj
    }

    /// `generation_config.json`: the token ids transformers' `generate()` needs.
    pub fn generation_config_json(&self) -> Value {
        let mut obj = json!({ "eos_token_id": token_ids_json(&self.eos_token_ids) });
        if let Some(bos) = self.bos_token_id {
            obj["bos_token_id"] = json!(bos);
        }
        obj
    }

    /// Built-in shapes for models retort trains from scratch. `tiny` has about 1M parameters
    /// with a small vocabulary; `small` is the next step up. Both are tied qwen2.
    ///
    /// `qwen2.5-0.5b` is the exact shape of Qwen/Qwen2.5-0.5B (494,032,768 parameters) for
    /// benchmarks with random weights; it keeps its own vocabulary of 151,936 whatever
    /// `vocab_size` says (a smaller tokenizer simply never produces the high ids).
    pub fn preset(name: &str, vocab_size: usize) -> Result<ModelConfig> {
        let (hidden, layers, heads, kv_heads, inter, max_pos) = match name {
            "tiny" => (128, 4, 4, 2, 384, 256),
            "small" => (256, 6, 8, 4, 768, 512),
            QWEN25_05B => (896, 24, 14, 2, 4864, 32768),
            other => return Err(ModelError::UnknownPreset(other.to_string())),
        };
        let is_qwen = name == QWEN25_05B;
        Ok(ModelConfig {
            model_type: ModelType::Qwen2,
            vocab_size: if is_qwen { 151936 } else { vocab_size },
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: hidden / heads,
            rms_norm_eps: 1e-6,
            rope_theta: if is_qwen { 1_000_000.0 } else { 10000.0 },
            rope_scaling: None,
            max_position_embeddings: max_pos,
            tie_word_embeddings: true,
            qkv_bias: true,
            o_bias: false,
            qk_norm: false,
            sliding_window: None,
            bos_token_id: None,
            eos_token_ids: vec![],
        })
    }

    /// Number of scalar parameters the decoder holds for this config.
    pub fn num_parameters(&self) -> usize {
        parameter_shapes(self).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

fn token_ids_json(ids: &[u32]) -> Value {
    match ids {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}

/// RoPE base and optional llama3 scaling, from either `rope_scaling` (4.x) or
/// `rope_parameters` (5.x). Types other than default/llama3 are rejected rather than ignored,
/// because ignoring them silently changes every logit.
fn parse_rope(keys: &Keys) -> Result<(f64, Option<RopeScaling>)> {
    let params = keys.present("rope_parameters");
    let scaling = keys.present("rope_scaling");
    let mut theta = keys.opt_f64("rope_theta")?;
    let mut spec: Option<(&Map<String, Value>, String)> = None;
    for (key, v) in [("rope_parameters", params), ("rope_scaling", scaling)] {
        let Some(v) = v else { continue };
        let obj = v.as_object().ok_or_else(|| keys.bad(key, "an object", v))?;
        let inner = Keys { obj, path: keys.path };
        if theta.is_none() {
            theta = inner.opt_f64("rope_theta")?;
        }
        let rope_type = inner.present("rope_type").or_else(|| inner.present("type"));
        let rope_type = match rope_type {
            None => "default".to_string(),
            Some(t) => t.as_str().ok_or_else(|| keys.bad(key, "a rope_type string", t))?.to_string(),
        };
        if spec.is_none() || rope_type != "default" {
            spec = Some((obj, rope_type));
        }
    }
    let theta = theta.unwrap_or(10000.0);
    let Some((obj, rope_type)) = spec else { return Ok((theta, None)) };
    match rope_type.as_str() {
        "default" => Ok((theta, None)),
        "llama3" => {
            let inner = Keys { obj, path: keys.path };
            let need = |k: &str| -> Result<f64> {
                inner.opt_f64(k)?.ok_or_else(|| ModelError::MissingKey {
                    path: keys.path.to_path_buf(),
                    key: format!("rope_scaling.{k}"),
                })
            };
            Ok((
                theta,
                Some(RopeScaling {
                    factor: need("factor")?,
                    low_freq_factor: need("low_freq_factor")?,
                    high_freq_factor: need("high_freq_factor")?,
                    original_max_position_embeddings: need("original_max_position_embeddings")? as usize,
                }),
            ))
        }
        other => Err(ModelError::Unsupported {
            path: keys.path.to_path_buf(),
            what: format!("rope_type `{other}` (supported: default, llama3)"),
        }),
    }
}

/// Path of `config.json` inside a model folder.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

/// Every parameter the config implies, with its Hugging Face name and shape, in model order.
pub fn parameter_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, d, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let q_out = cfg.num_attention_heads * d;
    let kv_out = cfg.num_key_value_heads * d;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, h])];
    for n in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{n}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        for (name, rows, cols, bias) in [
            ("q_proj", q_out, h, cfg.qkv_bias),
            ("k_proj", kv_out, h, cfg.qkv_bias),
            ("v_proj", kv_out, h, cfg.qkv_bias),
            ("o_proj", h, q_out, cfg.o_bias),
        ] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, cols]));
            if bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows]));
            }
        }
        if cfg.qk_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), vec![d]));
            out.push((format!("{p}.self_attn.k_norm.weight"), vec![d]));
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_stage_folder_given_for_a_model_names_the_model_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("model")).unwrap();
        std::fs::write(dir.path().join("model/config.json"), "{}").unwrap();
        let e = ModelConfig::from_file(&config_path(dir.path())).unwrap_err().to_string();
        assert!(e.contains("its model is") && e.contains(&dir.path().join("model").display().to_string()), "{e}");
        // An empty folder keeps the plain error.
        let empty = tempfile::tempdir().unwrap();
        let e = ModelConfig::from_file(&config_path(empty.path())).unwrap_err().to_string();
        assert!(!e.contains("its model is"), "{e}");
    }
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_hf_json(text, Path::new("test/config.json"))
    }

    const QWEN25_05B: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
      "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
      "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.40.1", "use_cache": true, "use_mrope": false,
      "use_sliding_window": false, "vocab_size": 151936 }"#;

    #[test]
    fn parses_qwen25_config() {
        let c = parse(QWEN25_05B).unwrap();
        assert_eq!(c.model_type, ModelType::Qwen2);
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.qkv_bias && !c.o_bias && !c.qk_norm && c.tie_word_embeddings);
        assert_eq!(c.sliding_window, None, "use_sliding_window=false disables the window");
        assert_eq!(c.eos_token_ids, vec![151643]);
        assert_eq!(c.bos_token_id, Some(151643));
        // 494,032,768 parameters for Qwen2.5-0.5B (its model card; also docs/ENGINE.md §5).
        assert_eq!(c.num_parameters(), 494_032_768);
    }

    #[test]
    fn parses_transformers5_rope_parameters_and_null_window() {
        let text = r#"{"model_type": "qwen3", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "sliding_window": null, "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0},
            "eos_token_id": [1, 2], "attention_bias": false}"#;
        let c = parse(text).unwrap();
        assert_eq!(c.head_dim, 32, "qwen3 head_dim is explicit, not hidden/heads");
        assert_eq!(c.rope_theta, 5000.0);
        assert_eq!(c.rope_scaling, None);
        assert!(c.qk_norm && !c.qkv_bias);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert_eq!(c.rms_norm_eps, 1e-6);
    }

    #[test]
    fn parses_llama3_rope_scaling_both_layouts() {
        let old = r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 1, "num_attention_heads": 4, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#;
        let new = r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 1, "num_attention_heads": 4,
            "rope_parameters": {"rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#;
        let a = parse(old).unwrap();
        let b = parse(new).unwrap();
        assert_eq!(a, b);
        let s = a.rope_scaling.unwrap();
        assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings), (8.0, 1.0, 4.0, 8192));
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.num_key_value_heads, 4, "kv heads default to attention heads");
    }

    #[test]
    fn unsupported_model_type_lists_supported() {
        let err = parse(r#"{"model_type": "gpt2", "vocab_size": 10}"#).unwrap_err().to_string();
        assert!(err.contains("gpt2") && err.contains("qwen2, qwen3, llama, mistral"), "{err}");
        assert!(err.contains("test/config.json"), "{err}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let err = parse(r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4}"#)
        .unwrap_err()
        .to_string();
        assert!(err.contains("`intermediate_size`") && err.contains("test/config.json"), "{err}");
    }

    #[test]
    fn unsupported_rope_type_is_an_error() {
        let err = parse(r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 9,
            "num_hidden_layers": 1, "num_attention_heads": 4, "rope_scaling": {"type": "yarn", "factor": 4.0}}"#)
        .unwrap_err()
        .to_string();
        assert!(err.contains("yarn"), "{err}");
    }

    #[test]
    fn mistyped_key_is_named() {
        let err = parse(r#"{"model_type": "llama", "vocab_size": "ten", "hidden_size": 64, "intermediate_size": 9,
            "num_hidden_layers": 1, "num_attention_heads": 4}"#).unwrap_err().to_string();
        assert!(err.contains("`vocab_size`") && err.contains("\"ten\""), "{err}");
    }

    #[test]
    fn hf_json_round_trips_for_every_type() {
        for model_type in ModelType::ALL {
            let mut c = ModelConfig::preset("tiny", 300).unwrap();
            c.model_type = model_type;
            c.qkv_bias = model_type == ModelType::Qwen2;
            c.qk_norm = model_type == ModelType::Qwen3;
            c.eos_token_ids = vec![3, 4];
            c.bos_token_id = Some(1);
            if model_type == ModelType::Llama {
                c.rope_scaling = Some(RopeScaling {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 64,
                });
            }
            let back = parse(&c.to_hf_json().to_string()).unwrap();
            assert_eq!(back, c, "{model_type:?}");
        }
    }

    #[test]
    fn presets_have_the_documented_shapes() {
        let t = ModelConfig::preset("tiny", 512).unwrap();
        assert_eq!((t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads), (128, 4, 4, 2));
        // embed 512*128 + 4 layers * (q 128*128+128, k/v 2*(64*128+64), o 128*128, mlp 3*128*384, 2 norms) + final norm
        let per_layer = 128 * 128 + 128 + 2 * (64 * 128 + 64) + 128 * 128 + 3 * 128 * 384 + 2 * 128;
        assert_eq!(t.num_parameters(), 512 * 128 + 4 * per_layer + 128);
        let s = ModelConfig::preset("small", 512).unwrap();
        assert_eq!((s.hidden_size, s.num_hidden_layers, s.intermediate_size, s.max_position_embeddings), (256, 6, 768, 512));
        assert!(ModelConfig::preset("huge", 10).unwrap_err().to_string().contains("tiny, small"));
        // Qwen/Qwen2.5-0.5B's published size: 494,032,768 parameters (tied head).
        let q = ModelConfig::preset("qwen2.5-0.5b", 99).unwrap();
        assert_eq!((q.vocab_size, q.head_dim, q.rope_theta, q.max_position_embeddings), (151936, 64, 1e6, 32768));
        assert_eq!(q.num_parameters(), 494_032_768);
    }
}
