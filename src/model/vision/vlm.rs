//! A Qwen2-VL model folder: `config.json` (`model_type: qwen2_vl`, the LLM's keys flat as in
//! the hub's files or under `text_config` as transformers 5 writes them, and `vision_config`),
//! `preprocessor_config.json`, sharded or single safetensors with `visual.*` and
//! `model.*`/`lm_head.*` names (or transformers 5's in-memory `model.visual.*` /
//! `model.language_model.*`), and the forward pass: image features from the tower replace the
//! image-pad tokens' embeddings, and the decoder runs with M-RoPE positions.

use super::super::config::{json_object, parameter_shapes, ModelConfig};
use super::super::decoder::{AttnMask, Decoder, ForwardOut, KvCache, Mode, RopePositions};
use super::super::weights::{random_tensors, read_vision_language, write_atomic, write_json};
use super::super::{ModelError, Result};
use super::image::{ImagePatches, ImageProcessorConfig};
use super::mrope::rope_index;
use super::qwen2_vl::{VisionConfig, VisionTower};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The default `mrope_section` (Qwen2-VL-2B/7B: 128-wide heads).
pub const DEFAULT_MROPE_SECTION: [usize; 3] = [16, 24, 24];

#[derive(Clone, Debug, PartialEq)]
pub struct Qwen2VlConfig {
    /// The LLM, a qwen2 decoder.
    pub text: ModelConfig,
    pub vision: VisionConfig,
    /// Frequencies rotated by the temporal, height and width positions (sums to head_dim / 2).
    pub mrope_section: Vec<usize>,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

impl Qwen2VlConfig {
    pub fn from_file(path: &Path) -> Result<Qwen2VlConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        Qwen2VlConfig::from_hf_json(&text, path)
    }

    pub fn from_hf_json(text: &str, path: &Path) -> Result<Qwen2VlConfig> {
        let obj = json_object(text, path)?;
        let bad = |key: &str, expected: &str, found: &Value| ModelError::BadKey { path: path.to_path_buf(), key: key.into(), expected: expected.into(), found: found.to_string() };
        match obj.get("model_type").and_then(Value::as_str) {
            Some("qwen2_vl") => {}
            other => return Err(bad("model_type", "\"qwen2_vl\"", &json!(other))),
        }
        let mut llm: Map<String, Value> = match obj.get("text_config") {
            Some(Value::Object(t)) => t.clone(),
            Some(v) if !v.is_null() => return Err(bad("text_config", "an object", v)),
            _ => obj.iter().filter(|(k, _)| k.as_str() != "vision_config").map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        // Keys transformers keeps at the top level win over (or fill) the text part's.
        for key in ["tie_word_embeddings", "bos_token_id", "eos_token_id"] {
            match obj.get(key) {
                Some(v) if key == "tie_word_embeddings" => {
                    llm.insert(key.into(), v.clone());
                }
                Some(v) if !llm.contains_key(key) => {
                    llm.insert(key.into(), v.clone());
                }
                _ => {}
            }
        }
        let mut mrope_section = None;
        for key in ["rope_parameters", "rope_scaling"] {
            if let Some(Value::Object(rope)) = llm.get_mut(key) {
                if let Some(s) = rope.remove("mrope_section") {
                    let xs: Option<Vec<usize>> = s.as_array().map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect());
                    match xs {
                        Some(xs) if xs.len() == 3 => mrope_section = Some(xs),
                        _ => return Err(bad(&format!("{key}.mrope_section"), "a list of three integers", &s)),
                    }
                }
                // `type: mrope` is the plain RoPE frequencies split by section.
                let is_mrope = |k: &str| rope.get(k).and_then(Value::as_str) == Some("mrope");
                if is_mrope("type") || is_mrope("rope_type") {
                    rope.remove("type");
                    rope.insert("rope_type".into(), json!("default"));
                }
            }
        }
        llm.insert("model_type".into(), json!("qwen2"));
        let text = ModelConfig::from_hf_json(&Value::Object(llm).to_string(), path)?;
        if text.head_dim * text.num_attention_heads != text.hidden_size {
            return Err(ModelError::Unsupported { path: path.to_path_buf(), what: "a head_dim other than hidden_size / num_attention_heads in qwen2_vl".into() });
        }
        let mrope_section = mrope_section.unwrap_or_else(|| DEFAULT_MROPE_SECTION.to_vec());
        if mrope_section.iter().sum::<usize>() * 2 != text.head_dim {
            return Err(bad("rope_scaling.mrope_section", &format!("sections summing to head_dim / 2 = {}", text.head_dim / 2), &json!(mrope_section)));
        }
        let vision = match obj.get("vision_config") {
            Some(Value::Object(v)) => VisionConfig::from_json(v, path)?,
            other => return Err(bad("vision_config", "an object", &json!(other))),
        };
        if vision.hidden_size != text.hidden_size {
            return Err(bad("vision_config.hidden_size", &format!("the LLM's hidden_size {}", text.hidden_size), &json!(vision.hidden_size)));
        }
        let token = |key: &str, default: u32| -> Result<u32> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().map(|x| x as u32).ok_or_else(|| bad(key, "a token id", v)),
            }
        };
        Ok(Qwen2VlConfig {
            text,
            vision,
            mrope_section,
            image_token_id: token("image_token_id", 151655)?,
            video_token_id: token("video_token_id", 151656)?,
            vision_start_token_id: token("vision_start_token_id", 151652)?,
            vision_end_token_id: token("vision_end_token_id", 151653)?,
        })
    }

    /// A `config.json` that transformers opens as `Qwen2VLForConditionalGeneration`.
    pub fn to_hf_json(&self) -> Value {
        let mut text = self.text.to_hf_json();
        let t = text.as_object_mut().expect("ModelConfig::to_hf_json is an object");
        for key in ["architectures", "head_dim", "rope_theta", "torch_dtype", "tie_word_embeddings"] {
            t.remove(key);
        }
        t.insert("model_type".into(), json!("qwen2_vl_text"));
        t.insert("rope_parameters".into(), json!({"rope_type": "default", "rope_theta": self.text.rope_theta, "mrope_section": self.mrope_section}));
        json!({
            "architectures": ["Qwen2VLForConditionalGeneration"],
            "model_type": "qwen2_vl",
            "text_config": text,
            "vision_config": self.vision.to_json(),
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": self.text.tie_word_embeddings,
            "torch_dtype": "float32",
        })
    }

    /// Every parameter (tower first, then the LLM) with its checkpoint name and shape.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = self.vision.parameter_shapes();
        out.extend(parameter_shapes(&self.text));
        out
    }
}

/// transformers 5 names the parts `model.visual.*` and `model.language_model.*` in memory; the
/// hub's files (and what it saves) use `visual.*` and `model.*`. Both load.
fn canonical_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else {
        name.to_string()
    }
}

/// A loaded Qwen2-VL: the processor settings, the vision tower with its merger, the decoder.
pub struct Qwen2Vl {
    pub config: Qwen2VlConfig,
    pub processor: ImageProcessorConfig,
    pub vision: VisionTower,
    pub decoder: Decoder,
    /// `Some` when the parameters are trainable `Var`s.
    pub varmap: Option<VarMap>,
}

/// A batch ready for the decoder: embeddings with the image features in place, the M-RoPE
/// positions, the mask, and per row the rope delta later decoding steps add.
pub struct Prepared {
    pub embeds: Tensor,
    pub mask: AttnMask,
    pub positions: RopePositions,
    pub deltas: Vec<i64>,
}

impl Qwen2Vl {
    /// Loads a `qwen2_vl` folder. Without `preprocessor_config.json` the processor takes the
    /// Qwen2-VL defaults with the tower's patch, merge and temporal sizes.
    pub fn load(dir: &Path, device: &Device, dtype: DType, trainable: bool) -> Result<Qwen2Vl> {
        let config = Qwen2VlConfig::from_file(&dir.join("config.json"))?;
        let processor = match dir.join("preprocessor_config.json") {
            p if p.is_file() => ImageProcessorConfig::from_file(&p)?,
            _ => ImageProcessorConfig {
                patch_size: config.vision.patch_size,
                merge_size: config.vision.spatial_merge_size,
                temporal_patch_size: config.vision.temporal_patch_size,
                ..ImageProcessorConfig::qwen2_vl()
            },
        };
        let pp = dir.join("preprocessor_config.json");
        if (processor.patch_size, processor.merge_size, processor.temporal_patch_size)
            != (config.vision.patch_size, config.vision.spatial_merge_size, config.vision.temporal_patch_size)
        {
            return Err(ModelError::BadKey {
                path: pp,
                key: "patch_size / merge_size / temporal_patch_size".into(),
                expected: format!(
                    "the vision_config's {} / {} / {}",
                    config.vision.patch_size, config.vision.spatial_merge_size, config.vision.temporal_patch_size
                ),
                found: format!("{} / {} / {}", processor.patch_size, processor.merge_size, processor.temporal_patch_size),
            });
        }
        let shapes = config.vision.parameter_shapes();
        let tensors = read_vision_language(dir, device, dtype, canonical_name, |n| n.starts_with("visual."), shapes, &config.text)?;
        Qwen2Vl::from_named_tensors(config, processor, tensors, device, dtype, trainable)
    }

    /// Fresh weights as transformers initialises them: N(0, 0.02²) for projections and
    /// embeddings, norm weights 1, biases 0; each tensor from `Rng::derive(seed, name)`.
    pub fn init_random(config: Qwen2VlConfig, processor: ImageProcessorConfig, seed: u64, device: &Device) -> Result<Qwen2Vl> {
        let is_norm = |name: &str| name.ends_with("norm.weight") || name.ends_with("norm1.weight") || name.ends_with("norm2.weight") || name.ends_with("ln_q.weight");
        let tensors = random_tensors(config.parameter_shapes(), seed, device, is_norm)?;
        Qwen2Vl::from_named_tensors(config, processor, tensors, device, DType::F32, true)
    }

    fn from_named_tensors(
        config: Qwen2VlConfig,
        processor: ImageProcessorConfig,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
        dtype: DType,
        trainable: bool,
    ) -> Result<Qwen2Vl> {
        let (vb, varmap) = if trainable {
            let varmap = VarMap::new();
            {
                let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
                for (name, tensor) in tensors {
                    data.insert(name, Var::from_tensor(&tensor)?);
                }
            }
            (VarBuilder::from_varmap(&varmap, dtype, device), Some(varmap))
        } else {
            // Frozen: the tower's matrices in transposed storage (`fused::transposed`: gemm
            // then packs them by contiguous copies), re-laid one at a time so the peak grows by
            // one matrix, not the tower.
            let relaid = |(name, t): (String, Tensor)| -> Result<(String, Tensor)> {
                let t = if name.starts_with("visual.") { crate::model::fused::transposed::for_inference(&t)? } else { t };
                Ok((name, t))
            };
            let map: HashMap<String, Tensor> = tensors.into_iter().map(relaid).collect::<Result<_>>()?;
            (VarBuilder::from_tensors(map, dtype, device), None)
        };
        let vision = VisionTower::new(&config.vision, vb.pp("visual"))?;
        let decoder = Decoder::new(&config.text, vb)?;
        Ok(Qwen2Vl { config, processor, vision, decoder, varmap })
    }

    /// Trainable parameters in model order (empty for a frozen model).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let Some(varmap) = &self.varmap else { return vec![] };
        let Ok(data) = varmap.data().lock() else { return vec![] };
        self.config.parameter_shapes().into_iter().filter_map(|(name, _)| data.get(&name).map(|v| (name, v.clone()))).collect()
    }

    /// Saves `config.json`, `generation_config.json`, `preprocessor_config.json` and
    /// `model.safetensors` (the hub's names: `visual.*`, `model.*`, `lm_head.*`), atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Write { path: dir.to_path_buf(), source })?;
        let mut named = self.vision.named_tensors();
        named.extend(self.decoder.named_tensors());
        let tensors: BTreeMap<String, Tensor> = named.into_iter().map(|(n, t)| Ok((n, t.detach().contiguous()?))).collect::<Result<_>>()?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_atomic(&dir.join("model.safetensors"), |tmp| {
            safetensors::serialize_to_file(&tensors, Some(metadata), tmp).map_err(std::io::Error::other)
        })?;
        write_json(&dir.join("config.json"), &self.config.to_hf_json())?;
        write_json(&dir.join("generation_config.json"), &self.config.text.generation_config_json())?;
        write_json(&dir.join("preprocessor_config.json"), &self.processor.to_json())
    }

    /// Image features (tokens, hidden) of `images`, in order.
    pub fn image_features(&self, images: &[&ImagePatches]) -> Result<Tensor> {
        let dev = self.decoder.device();
        let mut values = Vec::new();
        let mut grids = Vec::new();
        for im in images {
            values.extend_from_slice(&im.values);
            grids.push(im.grid);
        }
        let rows: usize = images.iter().map(|im| im.rows).sum();
        let dim = images.first().map_or(0, |im| im.dim);
        if values.len() != rows * dim {
            return Err(candle_core::Error::Msg(format!("image patches of different widths ({rows} rows, {} values)", values.len())).into());
        }
        let pixels = Tensor::from_vec(values, (rows, dim), dev)?;
        Ok(self.vision.forward(&pixels, &grids)?)
    }

    /// Embeddings, mask and M-RoPE positions of a batch of prompts (image tokens already
    /// expanded), left-padded with `pad_id` to the longest. `images[b]` are row b's images.
    pub fn prepare(&self, rows: &[Vec<u32>], images: &[Vec<ImagePatches>], pad_id: u32) -> Result<Prepared> {
        let dev = self.decoder.device();
        let (b, len) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0));
        if b == 0 || len == 0 || images.len() != b {
            return Err(candle_core::Error::Msg(format!("prepare: {b} rows of at most {len} tokens with {} image lists", images.len())).into());
        }
        let image = self.config.image_token_id;
        let merge = self.config.vision.spatial_merge_size;
        let mut ids = Vec::with_capacity(b * len);
        let mut valid = Vec::with_capacity(b);
        let mut pos: [Vec<u32>; 3] = Default::default();
        let mut deltas = Vec::with_capacity(b);
        for (row, imgs) in rows.iter().zip(images) {
            let pad = len - row.len();
            let grids: Vec<[usize; 3]> = imgs.iter().map(|im| im.grid).collect();
            let (p, delta) = rope_index(row, image, &grids, merge).map_err(candle_core::Error::Msg)?;
            ids.extend(std::iter::repeat_n(pad_id, pad).chain(row.iter().copied()));
            valid.push((0..len).map(|j| j >= pad).collect::<Vec<bool>>());
            for (axis, p) in pos.iter_mut().zip(p) {
                axis.extend(std::iter::repeat_n(0, pad).chain(p));
            }
            deltas.push(delta);
        }
        let ids_t = Tensor::from_vec(ids.clone(), (b, len), dev)?;
        let mut embeds = self.decoder.embed_tokens(&ids_t)?;
        let all: Vec<&ImagePatches> = images.iter().flatten().collect();
        if !all.is_empty() {
            let feats = self.image_features(&all)?.to_dtype(embeds.dtype())?;
            embeds = place_image_features(&embeds, &ids, &valid, image, &feats)?;
        }
        let [t, hh, ww] = pos;
        let ids3 = Tensor::from_vec([t, hh, ww].concat(), (3, b, len), dev)?;
        Ok(Prepared {
            embeds,
            mask: AttnMask::new(&valid, len, dev)?,
            positions: RopePositions::Multi { ids: ids3, sections: self.config.mrope_section.clone() },
            deltas,
        })
    }

    /// Logits at every position of a prepared batch (prefill when `cache` is given).
    pub fn forward_prepared(&self, p: &Prepared, cache: Option<&mut KvCache>, mode: Mode) -> Result<ForwardOut> {
        let hidden = self.decoder.forward_embeds_at(&p.embeds, &p.mask, Some(&p.positions), cache, mode)?;
        let logits = self.decoder.logits(&hidden)?;
        Ok(ForwardOut { logits, hidden })
    }

    /// M-RoPE positions of decoding steps: the mask's plain positions plus each row's delta, on
    /// all three axes (text after the prompt).
    pub fn step_positions(&self, mask: &AttnMask, deltas: &[i64]) -> Result<RopePositions> {
        let plain = mask.positions().to_vec2::<u32>()?;
        let shifted: Vec<u32> = plain.iter().zip(deltas).flat_map(|(row, &d)| row.iter().map(move |&p| (p as i64 + d).max(0) as u32)).collect();
        let (b, l) = (plain.len(), plain.first().map_or(0, Vec::len));
        let ids = Tensor::from_vec([shifted.clone(), shifted.clone(), shifted].concat(), (3, b, l), self.decoder.device())?;
        Ok(RopePositions::Multi { ids, sections: self.config.mrope_section.clone() })
    }
}


/// The token embeddings (B, L, H) of left-padded `ids` with each valid `image` token's row
/// replaced by the next row of `feats`, in order (`masked_scatter` in transformers): position
/// j takes row j of [token embeddings; image features] through one gather.
pub(super) fn place_image_features(embeds: &Tensor, ids: &[u32], valid: &[Vec<bool>], image: u32, feats: &Tensor) -> Result<Tensor> {
    let (b, len, h) = embeds.dims3()?;
    let mut next = (b * len) as u32;
    let index: Vec<u32> = ids
        .iter()
        .enumerate()
        .map(|(j, &id)| {
            if id == image && valid[j / len][j % len] {
                next += 1;
                next - 1
            } else {
                j as u32
            }
        })
        .collect();
    let table = Tensor::cat(&[&embeds.reshape((b * len, h))?, feats], 0)?;
    Ok(table.index_select(&Tensor::new(index, embeds.device())?, 0)?.reshape((b, len, h))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2-VL-2B-Instruct's config.json as the hub serves it (transformers 4.x layout: the
    /// LLM's keys flat, `rope_scaling.type = mrope`, `in_chans`).
    const HUB_2B: &str = r#"{
        "architectures": ["Qwen2VLForConditionalGeneration"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
        "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
        "intermediate_size": 8960, "max_position_embeddings": 32768, "max_window_layers": 28,
        "model_type": "qwen2_vl", "num_attention_heads": 12, "num_hidden_layers": 28,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2", "use_cache": true, "use_sliding_window": false,
        "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                          "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": 151936
    }"#;

    #[test]
    fn the_hub_2b_config_parses_and_round_trips_through_the_transformers_5_layout() {
        let path = Path::new("config.json");
        let c = Qwen2VlConfig::from_hf_json(HUB_2B, path).unwrap();
        assert_eq!((c.text.hidden_size, c.text.num_hidden_layers, c.text.head_dim, c.text.vocab_size), (1536, 28, 128, 151936));
        assert_eq!((c.text.rope_theta, c.text.sliding_window, c.text.tie_word_embeddings), (1e6, None, true));
        assert!(c.text.qkv_bias && !c.text.o_bias);
        assert_eq!(c.text.eos_token_ids, vec![151645]);
        assert_eq!(c.mrope_section, vec![16, 24, 24]);
        assert_eq!((c.vision.depth, c.vision.embed_dim, c.vision.num_heads, c.vision.in_channels), (32, 1280, 16, 3));
        assert_eq!((c.image_token_id, c.vision_start_token_id, c.vision_end_token_id), (151655, 151652, 151653));
        // What transformers counts for Qwen2VLForConditionalGeneration of this config (tied head once).
        let total: usize = c.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, 2_208_985_600);
        let back = Qwen2VlConfig::from_hf_json(&c.to_hf_json().to_string(), path).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let path = Path::new("config.json");
        let wrong = HUB_2B.replace("[16, 24, 24]", "[16, 24, 20]");
        let err = Qwen2VlConfig::from_hf_json(&wrong, path).unwrap_err().to_string();
        assert!(err.contains("mrope_section") && err.contains("64"), "{err}");
        let wrong = HUB_2B.replace("\"hidden_size\": 1536, \"patch_size\"", "\"hidden_size\": 1024, \"patch_size\"");
        let err = Qwen2VlConfig::from_hf_json(&wrong, path).unwrap_err().to_string();
        assert!(err.contains("vision_config.hidden_size"), "{err}");
        assert_eq!(canonical_name("model.language_model.layers.0.mlp.up_proj.weight"), "model.layers.0.mlp.up_proj.weight");
        assert_eq!(canonical_name("model.visual.merger.ln_q.weight"), "visual.merger.ln_q.weight");
    }
}
