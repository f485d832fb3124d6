//! Writing encoders: a random initialisation for the tiny experiments and `save` into the
//! Hugging Face layout (`config.json` + `model.safetensors` with the task model's names), so
//! a trained encoder loads back here and in transformers (`RobertaForMaskedLM`).

use super::checkpoint::{parameter_shapes, plan, CheckpointLayout, EncoderModel};
use super::config::{EncoderConfig, EncoderType};
use super::forward::{Encoder, Heads};
use crate::model::{ModelError, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

impl EncoderConfig {
    /// The `config.json` transformers reads back into the same shape. No dropout: retort's
    /// encoder has none, and the file says so.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let arch = self.architecture.clone().unwrap_or_else(|| match self.model_type {
            EncoderType::Bert => "BertForMaskedLM".into(),
            EncoderType::Roberta => "RobertaForMaskedLM".into(),
        });
        json!({
            "architectures": [arch],
            "model_type": self.model_type.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act.as_str(),
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "position_embedding_type": "absolute",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "is_decoder": false,
        })
    }
}

impl EncoderModel {
    /// A trainable encoder with the MLM head and random weights: matrices N(0, 0.02²) as
    /// transformers initialises BERT, LayerNorm weights 1 and biases 0. Its layout is the task
    /// model's (`roberta.` / `bert.` prefix), so [`EncoderModel::save`] writes a checkpoint
    /// transformers' `*ForMaskedLM` loads.
    pub fn init_random(config: &EncoderConfig, seed: u64, device: &Device) -> Result<EncoderModel> {
        let heads = Heads { pooler: false, mlm: true };
        let varmap = VarMap::new();
        let prefix = config.model_type.base_prefix();
        let mut found: HashMap<String, (Vec<usize>, PathBuf)> = HashMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
            for (name, shape) in parameter_shapes(config, heads) {
                let n: usize = shape.iter().product();
                let is_norm = name.contains("LayerNorm") || name.contains("layer_norm");
                let values: Vec<f32> = if name.ends_with("bias") {
                    vec![0.0; n]
                } else if is_norm {
                    vec![1.0; n]
                } else {
                    // One stream a tensor, so adding a tensor leaves the others' values alone.
                    let mut rng = crate::rng::Rng::derive(seed, &name);
                    (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
                };
                data.insert(name.clone(), Var::from_vec(values, shape.clone(), device)?);
                let in_file = if name.starts_with("lm_head.") || name.starts_with("cls.") { name } else { format!("{prefix}{name}") };
                found.insert(in_file, (shape, PathBuf::from("model.safetensors")));
            }
        }
        let layout = plan(config, &found, Path::new("(new)"))?;
        let encoder = Encoder::new(config, heads, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok(EncoderModel { config: config.clone(), encoder, layout, varmap: Some(varmap) })
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created), each atomically,
    /// the tensors under the names of the checkpoint it was loaded from.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let varmap = self.varmap.as_ref().ok_or_else(|| ModelError::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::other("internal: only a trainable encoder (its Vars) can be saved"),
        })?;
        let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        for (canonical, name, _) in &self.layout.tensors {
            let var = data.get(canonical).ok_or_else(|| ModelError::MissingTensor { name: canonical.clone(), files: "(in memory)".into() })?;
            tensors.insert(name.clone(), var.as_tensor().detach().contiguous()?);
        }
        save_files(dir, &self.config, &tensors)
    }
}

fn save_files(dir: &Path, config: &EncoderConfig, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = dir.join("model.safetensors");
    crate::fsutil::write_atomic_with(&weights, |tmp| {
        safetensors::serialize_to_file(tensors, Some(metadata), tmp).map_err(std::io::Error::other)
    })
    .map_err(io(&weights))?;
    let text = serde_json::to_string_pretty(&config.to_hf_json()).unwrap_or_default() + "\n";
    let cfg_path = dir.join("config.json");
    crate::fsutil::write_atomic_with(&cfg_path, |tmp| std::fs::write(tmp, text)).map_err(io(&cfg_path))
}

/// The layout [`EncoderModel::save`] writes, for tests.
pub fn saved_layout(dir: &Path) -> Result<CheckpointLayout> {
    Ok(super::checkpoint::inspect(dir)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::config::Activation;

    #[test]
    fn a_random_encoder_saves_and_loads_back_identically() {
        let cfg = EncoderConfig {
            model_type: EncoderType::Roberta,
            vocab_size: 30,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 20,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            tie_word_embeddings: true,
            architecture: None,
        };
        let m = EncoderModel::init_random(&cfg, 5, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let back = EncoderModel::load(dir.path(), &Device::Cpu, DType::F32, true).unwrap();
        assert_eq!(back.config, EncoderConfig { architecture: Some("RobertaForMaskedLM".into()), ..cfg });
        assert_eq!(back.layout.prefix, "roberta.");
        assert!(back.layout.heads.mlm);
        let ids = Tensor::new(&[[0u32, 5, 6, 2]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1]], &Device::Cpu).unwrap();
        let a = m.encoder.mlm_logits(&m.encoder.forward(&ids, &mask, None).unwrap()).unwrap();
        let b = back.encoder.mlm_logits(&back.encoder.forward(&ids, &mask, None).unwrap()).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0);
        assert_eq!(saved_layout(dir.path()).unwrap().tensors.len(), back.layout.tensors.len());
    }
}
