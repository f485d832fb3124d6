//! A Hugging Face `llava` folder: `config.json` with a `vision_config` (CLIP or SigLIP tower,
//! [`super::vit`]) and a `text_config` (a llama, mistral or qwen2 decoder), a
//! `preprocessor_config.json` ([`super::clip_image`]), and sharded or single safetensors under
//! the names transformers saves (`vision_tower.*`, `multi_modal_projector.*`,
//! `language_model.model.*`, `language_model.lm_head.*`) or the hub's older and in-memory
//! spellings (`vision_tower.vision_model.*`, `model.language_model.*`, ...). The forward pass:
//! the tower's hidden states at `vision_feature_layer` (the class token dropped under the
//! `default` strategy), the `mlp2x_gelu` projector, and the features replacing the image
//! tokens' embeddings in order; the decoder runs with plain positions.

use super::super::config::{json_object, parameter_shapes, ModelConfig};
use super::super::decoder::{AttnMask, Decoder, ForwardOut, Mode};
use super::super::weights::{random_tensors, read_vision_language, write_atomic, write_json};
use super::super::{ModelError, Result};
use super::clip_image::{load_and_preprocess, ClipProcessorConfig};
use super::image::ImagePatches;
use super::projector::Projector;
use super::vlm::place_image_features;
use super::vit::{VitAct, VitConfig, VitTower};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Which tower positions feed the projector (`vision_feature_select_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// Drop the first position (CLIP's class token).
    Default,
    /// Keep every position.
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlavaConfig {
    pub text: ModelConfig,
    pub vision: VitConfig,
    pub image_token_id: u32,
    pub vision_feature_layer: i64,
    pub select: Select,
    pub projector_act: VitAct,
    pub projector_bias: bool,
}

/// LlamaConfig's defaults, which older hub configs (llava-1.5) leave out of `text_config`.
const LLAMA_DEFAULTS: [(&str, i64); 5] =
    [("hidden_size", 4096), ("intermediate_size", 11008), ("num_hidden_layers", 32), ("num_attention_heads", 32), ("vocab_size", 32000)];

impl LlavaConfig {
    pub fn from_file(path: &Path) -> Result<LlavaConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        LlavaConfig::from_hf_json(&text, path)
    }

    pub fn from_hf_json(text: &str, path: &Path) -> Result<LlavaConfig> {
        let obj = json_object(text, path)?;
        let bad = |key: &str, expected: &str, found: &Value| ModelError::BadKey { path: path.to_path_buf(), key: key.into(), expected: expected.into(), found: found.to_string() };
        match obj.get("model_type").and_then(Value::as_str) {
            Some("llava") => {}
            other => return Err(bad("model_type", "\"llava\"", &json!(other))),
        }
        let mut llm: Map<String, Value> = match obj.get("text_config") {
            Some(Value::Object(t)) => t.clone(),
            other => return Err(bad("text_config", "an object", &json!(other))),
        };
        let llm_type = llm.get("model_type").and_then(Value::as_str).unwrap_or("llama").to_string();
        llm.insert("model_type".into(), json!(llm_type));
        if llm_type == "llama" {
            for (key, v) in LLAMA_DEFAULTS {
                llm.entry(key.to_string()).or_insert(json!(v));
            }
        }
        if let Some(v) = obj.get("tie_word_embeddings") {
            llm.insert("tie_word_embeddings".into(), v.clone());
        }
        let text = ModelConfig::from_hf_json(&Value::Object(llm).to_string(), path)?;
        let vision = match obj.get("vision_config") {
            Some(Value::Object(v)) => VitConfig::from_json(v, path)?,
            other => return Err(bad("vision_config", "an object", &json!(other))),
        };
        let vision_feature_layer = match obj.get("vision_feature_layer") {
            None | Some(Value::Null) => -2,
            Some(v) => match v.as_i64() {
                Some(x) => x,
                None if v.is_array() => {
                    return Err(ModelError::Unsupported { path: path.to_path_buf(), what: format!("vision_feature_layer as a list of layers ({v})") })
                }
                None => return Err(bad("vision_feature_layer", "a layer index", v)),
            },
        };
        vision.resolve_layer(vision_feature_layer).map_err(|e| bad("vision_feature_layer", &e, &json!(vision_feature_layer)))?;
        let select = match obj.get("vision_feature_select_strategy").and_then(Value::as_str).unwrap_or("default") {
            "default" => Select::Default,
            "full" => Select::Full,
            other => return Err(bad("vision_feature_select_strategy", "\"default\" or \"full\"", &json!(other))),
        };
        let act_name = obj.get("projector_hidden_act").and_then(Value::as_str).unwrap_or("gelu");
        let projector_act = VitAct::parse(act_name).ok_or_else(|| bad("projector_hidden_act", "gelu, gelu_pytorch_tanh or quick_gelu", &json!(act_name)))?;
        let token = ["image_token_index", "image_token_id"].iter().find_map(|k| obj.get(*k).filter(|v| !v.is_null()));
        let image_token_id = match token {
            None => 32000,
            Some(v) => v.as_u64().map(|x| x as u32).ok_or_else(|| bad("image_token_index", "a token id", v))?,
        };
        let projector_bias = match obj.get("multimodal_projector_bias") {
            None | Some(Value::Null) => true,
            Some(v) => v.as_bool().ok_or_else(|| bad("multimodal_projector_bias", "true or false", v))?,
        };
        Ok(LlavaConfig { text, vision, image_token_id, vision_feature_layer, select, projector_act, projector_bias })
    }

    /// A `config.json` that transformers opens as `LlavaForConditionalGeneration`.
    pub fn to_hf_json(&self) -> Value {
        let mut text = self.text.to_hf_json();
        let t = text.as_object_mut().expect("ModelConfig::to_hf_json is an object");
        for key in ["architectures", "torch_dtype"] {
            t.remove(key);
        }
        let act = match self.projector_act {
            VitAct::QuickGelu => "quick_gelu",
            VitAct::GeluTanh => "gelu_pytorch_tanh",
            VitAct::Gelu => "gelu",
        };
        json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "text_config": text,
            "vision_config": self.vision.to_json(),
            "image_token_index": self.image_token_id,
            "image_seq_length": self.image_tokens(),
            "vision_feature_layer": self.vision_feature_layer,
            "vision_feature_select_strategy": match self.select { Select::Default => "default", Select::Full => "full" },
            "projector_hidden_act": act,
            "multimodal_projector_bias": self.projector_bias,
            "tie_word_embeddings": self.text.tie_word_embeddings,
            "torch_dtype": "float32",
        })
    }

    /// Image tokens per image: the tower's positions, less the class token under `default`.
    pub fn image_tokens(&self) -> usize {
        self.vision.num_positions() - usize::from(self.select == Select::Default)
    }

    /// The hidden-states index the projector reads.
    pub fn feature_layer(&self) -> usize {
        self.vision.resolve_layer(self.vision_feature_layer).expect("checked when parsed")
    }

    /// Every parameter (tower, projector, LLM) with its canonical name and shape.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = self.vision.parameter_shapes();
        out.extend(Projector::parameter_shapes(self.vision.hidden_size, self.text.hidden_size, self.projector_bias));
        out.extend(parameter_shapes(&self.text));
        out
    }
}

/// Canonical names: `vision_tower.<clip/siglip names without vision_model.>`,
/// `multi_modal_projector.*`, and the decoder's `model.*` / `lm_head.*`.
pub fn canonical_name(name: &str) -> String {
    let name = name.strip_prefix("model.").filter(|r| !r.starts_with("layers.") && !r.starts_with("embed_tokens") && !r.starts_with("norm.")).unwrap_or(name);
    if let Some(rest) = name.strip_prefix("language_model.model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.lm_head.") {
        format!("lm_head.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.") {
        // transformers 5 in memory: model.language_model.layers.* (the `model.` already gone).
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("vision_tower.vision_model.") {
        format!("vision_tower.{rest}")
    } else {
        name.to_string()
    }
}

/// The name transformers saves a canonical name under.
fn saved_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.") {
        format!("language_model.model.{rest}")
    } else if let Some(rest) = name.strip_prefix("lm_head.") {
        format!("language_model.lm_head.{rest}")
    } else {
        name.to_string()
    }
}

/// A loaded LLaVA model.
pub struct Llava {
    pub config: LlavaConfig,
    pub processor: ClipProcessorConfig,
    pub tower: VitTower,
    pub projector: Projector,
    pub decoder: Decoder,
    /// `Some` when the parameters the forward pass reads are trainable `Var`s.
    pub varmap: Option<VarMap>,
    /// Tower tensors past the selected layer (and the post-layernorm, SigLIP's head): never
    /// read, saved back unchanged so the folder stays whole.
    pub unused: Vec<(String, Tensor)>,
}

impl Llava {
    /// Loads a `llava` folder. Without `preprocessor_config.json` the processor is CLIP's at the
    /// tower's image size.
    pub fn load(dir: &Path, device: &Device, dtype: DType, trainable: bool) -> Result<Llava> {
        let config = LlavaConfig::from_file(&dir.join("config.json"))?;
        let pp = dir.join("preprocessor_config.json");
        let processor = if pp.is_file() { ClipProcessorConfig::from_file(&pp)? } else { ClipProcessorConfig::clip(config.vision.image_size) };
        let side = config.vision.image_size;
        let (oh, ow) = processor.output_size(side, side);
        if (oh, ow) != (side, side) {
            return Err(ModelError::BadKey {
                path: pp,
                key: "size / crop_size".into(),
                expected: format!("images of the vision tower's image_size {side}×{side}"),
                found: format!("{ow}×{oh}"),
            });
        }
        let mut shapes = config.vision.parameter_shapes();
        shapes.extend(Projector::parameter_shapes(config.vision.hidden_size, config.text.hidden_size, config.projector_bias));
        let is_vision = |n: &str| n.starts_with("vision_tower.") || n.starts_with("multi_modal_projector.");
        let tensors = read_vision_language(dir, device, dtype, canonical_name, is_vision, shapes, &config.text)?;
        Llava::from_named_tensors(config, processor, tensors, device, dtype, trainable)
    }

    /// Fresh weights as transformers initialises them: N(0, 0.02²) for projections and
    /// embeddings, norm weights 1, biases 0; each tensor from `Rng::derive(seed, name)`.
    pub fn init_random(config: LlavaConfig, processor: ClipProcessorConfig, seed: u64, device: &Device) -> Result<Llava> {
        let is_norm = |name: &str| name.ends_with("norm.weight") || name.ends_with("norm1.weight") || name.ends_with("norm2.weight") || name.ends_with("layrnorm.weight");
        let tensors = random_tensors(config.parameter_shapes(), seed, device, is_norm)?;
        Llava::from_named_tensors(config, processor, tensors, device, DType::F32, true)
    }

    fn from_named_tensors(
        config: LlavaConfig,
        processor: ClipProcessorConfig,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
        dtype: DType,
        trainable: bool,
    ) -> Result<Llava> {
        let upto = config.feature_layer();
        let (used, unused): (Vec<(String, Tensor)>, Vec<(String, Tensor)>) =
            tensors.into_iter().partition(|(n, _)| !n.starts_with("vision_tower.") || config.vision.is_used(n, upto));
        let (vb, varmap) = if trainable {
            let varmap = VarMap::new();
            {
                let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
                for (name, tensor) in used {
                    data.insert(name, Var::from_tensor(&tensor)?);
                }
            }
            (VarBuilder::from_varmap(&varmap, dtype, device), Some(varmap))
        } else {
            let map: HashMap<String, Tensor> = used.into_iter().collect();
            (VarBuilder::from_tensors(map, dtype, device), None)
        };
        let tower = VitTower::new(&config.vision, upto, vb.pp("vision_tower"))?;
        let projector = Projector::new(config.vision.hidden_size, config.text.hidden_size, config.projector_bias, config.projector_act, vb.pp("multi_modal_projector"))?;
        let decoder = Decoder::new(&config.text, vb)?;
        Ok(Llava { config, processor, tower, projector, decoder, varmap, unused })
    }

    /// Trainable parameters in model order (empty for a frozen model).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let Some(varmap) = &self.varmap else { return vec![] };
        let Ok(data) = varmap.data().lock() else { return vec![] };
        self.config.parameter_shapes().into_iter().filter_map(|(name, _)| data.get(&name).map(|v| (name, v.clone()))).collect()
    }

    /// Saves `config.json`, `generation_config.json`, `preprocessor_config.json` and
    /// `model.safetensors` under the names transformers writes, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Write { path: dir.to_path_buf(), source })?;
        let mut named = self.tower.named_tensors();
        named.extend(self.unused.iter().cloned());
        named.extend(self.projector.named_tensors());
        named.extend(self.decoder.named_tensors());
        let tensors: BTreeMap<String, Tensor> =
            named.into_iter().map(|(n, t)| Ok((saved_name(&n), t.detach().contiguous()?))).collect::<Result<_>>()?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_atomic(&dir.join("model.safetensors"), |tmp| {
            safetensors::serialize_to_file(&tensors, Some(metadata), tmp).map_err(std::io::Error::other)
        })?;
        write_json(&dir.join("config.json"), &self.config.to_hf_json())?;
        write_json(&dir.join("generation_config.json"), &self.config.text.generation_config_json())?;
        write_json(&dir.join("preprocessor_config.json"), &self.processor.to_json())
    }

    /// Preprocesses one image file for this model.
    pub fn load_image(&self, path: &Path) -> Result<ImagePatches> {
        load_and_preprocess(path, &self.processor, self.config.vision.patch_size, self.config.vision.image_size)
    }

    /// Image features (images · tokens, LLM hidden) of `images`, in order.
    pub fn image_features(&self, images: &[&ImagePatches]) -> Result<Tensor> {
        let dev = self.decoder.device();
        let mut values = Vec::new();
        for im in images {
            values.extend_from_slice(&im.values);
        }
        let rows: usize = images.iter().map(|im| im.rows).sum();
        let dim = self.config.vision.patch_dim();
        if values.len() != rows * dim {
            return Err(candle_core::Error::Msg(format!("image patches of the wrong width ({rows} rows, {} values, {dim} per row)", values.len())).into());
        }
        let hidden = self.tower.forward(&Tensor::from_vec(values, (rows, dim), dev)?)?;
        let hidden = match self.config.select {
            Select::Default => {
                let t = hidden.dim(1)?;
                hidden.narrow(1, 1, t - 1)?
            }
            Select::Full => hidden,
        };
        let (b, t, e) = hidden.dims3()?;
        Ok(self.projector.forward(&hidden.contiguous()?.reshape((b * t, e))?)?)
    }

    /// Embeddings and mask of a batch of prompts (image tokens already expanded, each image
    /// [`LlavaConfig::image_tokens`] consecutive tokens), left-padded with `pad_id`.
    pub fn prepare(&self, rows: &[Vec<u32>], images: &[Vec<ImagePatches>], pad_id: u32) -> Result<(Tensor, AttnMask)> {
        let dev = self.decoder.device();
        let (b, len) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0));
        if b == 0 || len == 0 || images.len() != b {
            return Err(candle_core::Error::Msg(format!("prepare: {b} rows of at most {len} tokens with {} image lists", images.len())).into());
        }
        let image = self.config.image_token_id;
        let per = self.config.image_tokens();
        for (k, (row, imgs)) in rows.iter().zip(images).enumerate() {
            let found = row.iter().filter(|&&t| t == image).count();
            if found != per * imgs.len() {
                return Err(candle_core::Error::Msg(format!("row {k} has {found} image tokens for {} image(s) of {per} tokens each", imgs.len())).into());
            }
        }
        let mut ids = Vec::with_capacity(b * len);
        let mut valid = Vec::with_capacity(b);
        for row in rows {
            let pad = len - row.len();
            ids.extend(std::iter::repeat_n(pad_id, pad).chain(row.iter().copied()));
            valid.push((0..len).map(|j| j >= pad).collect::<Vec<bool>>());
        }
        let ids_t = Tensor::from_vec(ids.clone(), (b, len), dev)?;
        let mut embeds = self.decoder.embed_tokens(&ids_t)?;
        let all: Vec<&ImagePatches> = images.iter().flatten().collect();
        if !all.is_empty() {
            let feats = self.image_features(&all)?.to_dtype(embeds.dtype())?;
            embeds = place_image_features(&embeds, &ids, &valid, image, &feats)?;
        }
        Ok((embeds, AttnMask::new(&valid, len, dev)?))
    }

    /// Logits at every position of a prompt batch with its images.
    pub fn forward(&self, rows: &[Vec<u32>], images: &[Vec<ImagePatches>], pad_id: u32, mode: Mode) -> Result<ForwardOut> {
        let (embeds, mask) = self.prepare(rows, images, pad_id)?;
        let hidden = self.decoder.forward_embeds(&embeds, &mask, None, mode)?;
        let logits = self.decoder.logits(&hidden)?;
        Ok(ForwardOut { logits, hidden })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llava-hf/llava-1.5-7b-hf's config.json (text_config relies on LlamaConfig's defaults).
    const LLAVA_15: &str = r#"{
        "architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": 32000,
        "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
        "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                        "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                        "torch_dtype": "float16", "vocab_size": 32064},
        "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version": "4.36.0.dev0",
        "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
                          "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
                          "vocab_size": 32000},
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064
    }"#;

    #[test]
    fn the_llava_15_config_parses_with_llama_defaults_and_round_trips() {
        let path = Path::new("config.json");
        let c = LlavaConfig::from_hf_json(LLAVA_15, path).unwrap();
        assert_eq!((c.text.hidden_size, c.text.num_hidden_layers, c.text.vocab_size, c.text.max_position_embeddings), (4096, 32, 32064, 4096));
        assert_eq!((c.image_token_id, c.vision_feature_layer, c.select, c.image_tokens(), c.feature_layer()), (32000, -2, Select::Default, 576, 23));
        // transformers' count for LlavaForConditionalGeneration of this config: 7,063,427,072.
        let total: usize = c.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, 7_063_427_072);
        let back = LlavaConfig::from_hf_json(&c.to_hf_json().to_string(), path).unwrap();
        assert_eq!(back.to_hf_json(), c.to_hf_json());
        assert_eq!((back.text, back.image_token_id, back.select), (c.text.clone(), c.image_token_id, c.select));
    }

    #[test]
    fn names_from_every_layout_become_canonical_and_save_as_transformers_does() {
        for (from, to) in [
            ("language_model.model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight"),
            ("language_model.lm_head.weight", "lm_head.weight"),
            ("model.language_model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight"),
            ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
            ("lm_head.weight", "lm_head.weight"),
            ("vision_tower.vision_model.encoder.layers.3.mlp.fc1.bias", "vision_tower.encoder.layers.3.mlp.fc1.bias"),
            ("model.vision_tower.embeddings.class_embedding", "vision_tower.embeddings.class_embedding"),
            ("model.multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.weight"),
        ] {
            assert_eq!(canonical_name(from), to, "{from}");
        }
        assert_eq!(saved_name("model.norm.weight"), "language_model.model.norm.weight");
        assert_eq!(saved_name("lm_head.weight"), "language_model.lm_head.weight");
        assert_eq!(canonical_name(&saved_name("model.layers.1.self_attn.q_proj.weight")), "model.layers.1.self_attn.q_proj.weight");
    }

    #[test]
    fn bad_llava_configs_name_the_key() {
        let path = Path::new("config.json");
        let err = LlavaConfig::from_hf_json(&LLAVA_15.replace("\"vision_feature_layer\": -2", "\"vision_feature_layer\": -30"), path).unwrap_err().to_string();
        assert!(err.contains("vision_feature_layer") && err.contains("25 hidden states"), "{err}");
        let err = LlavaConfig::from_hf_json(&LLAVA_15.replace("\"default\"", "\"cls\""), path).unwrap_err().to_string();
        assert!(err.contains("vision_feature_select_strategy"), "{err}");
        let err = LlavaConfig::from_hf_json(&LLAVA_15.replace("\"vision_feature_layer\": -2", "\"vision_feature_layer\": [-2, -5]"), path).unwrap_err().to_string();
        assert!(err.contains("list of layers"), "{err}");
    }
}
