//! LoRA adapters (Hu et al. 2021): a frozen base weight plus a trainable low-rank update,
//! `W' = W + (alpha / r) · B·A`, with A (r × in) drawn like PEFT's kaiming-uniform init
//! (bound 1/sqrt(in)) and B (out × r) zero, so training starts exactly at the base model.
//!
//! Adapters are saved the way PEFT saves them (`adapter_model.safetensors` with names
//! `base_model.model.<module>.lora_A.weight`, and `adapter_config.json`), so
//! `PeftModel.from_pretrained(base, dir)` can open them; a merged save writes a plain
//! Hugging Face checkpoint.

use crate::model::{Decoder, Model};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Projection names LoRA can target.
pub const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    #[serde(default = "default_rank")]
    pub rank: usize,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout probability on the adapter input during training (PEFT's `lora_dropout`).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}

fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    TARGETS.iter().map(|s| s.to_string()).collect()
}

impl LoraConfig {
    /// Problems with the config, as (key, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.rank == 0 {
            return Err(("rank".into(), "LoRA rank must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(("dropout".into(), format!("LoRA dropout is a probability in [0, 1), got {}", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(("targets".into(), format!("name at least one module: {}", TARGETS.join(", "))));
        }
        for t in &self.targets {
            if !TARGETS.contains(&t.as_str()) {
                return Err(("targets".into(), format!("no module named `{t}` in the model; LoRA can target: {}", TARGETS.join(", "))));
            }
        }
        Ok(())
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The trainable adapter parameters, by PEFT name.
pub struct Adapters {
    pub config: LoraConfig,
    pub vars: Vec<(String, Var)>,
}

fn peft_name(module: &str, factor: &str) -> String {
    format!("base_model.model.{module}.lora_{factor}.weight")
}

/// Attach fresh adapters to `model` (whose base weights should be frozen).
pub fn attach(model: &mut Model, config: &LoraConfig, seed: u64) -> Result<Adapters> {
    attach_decoder(&mut model.decoder, config, seed)
}

/// Attach fresh adapters to a decoder (a text model's, or a vision-language model's LLM).
pub fn attach_decoder(decoder: &mut Decoder, config: &LoraConfig, seed: u64) -> Result<Adapters> {
    config.check().map_err(|(k, m)| anyhow::anyhow!("lora.{k}: {m}"))?;
    let device = decoder.device().clone();
    let dtype = decoder.dtype();
    let mut vars = Vec::new();
    let rank = config.rank;
    let mut make = |module: &str, out_dim: usize, in_dim: usize| -> candle_core::Result<(Tensor, Tensor)> {
        let mut rng = Rng::derive(seed, &format!("lora/{module}"));
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a: Vec<f32> = (0..rank * in_dim).map(|_| ((rng.f64() * 2.0 - 1.0) * bound) as f32).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (rank, in_dim), &device)?.to_dtype(dtype)?)?;
        let b = Var::from_tensor(&Tensor::zeros((out_dim, rank), dtype, &device)?)?;
        vars.push((peft_name(module, "A"), a.clone()));
        vars.push((peft_name(module, "B"), b.clone()));
        Ok((a.as_tensor().clone(), b.as_tensor().clone()))
    };
    let n = decoder.attach_lora(&config.targets, config.scale(), config.dropout, &mut make)?;
    if n == 0 {
        bail!("LoRA attached to no module");
    }
    Ok(Adapters { config: config.clone(), vars })
}

/// Put saved adapter values (from `save_adapters` or a checkpoint) into the attached vars.
pub fn load_into(adapters: &Adapters, path: &Path) -> Result<()> {
    let saved = candle_core::safetensors::load(path, &candle_core::Device::Cpu).with_context(|| format!("cannot read {}", path.display()))?;
    for (name, var) in &adapters.vars {
        let t = saved.get(name).with_context(|| format!("{}: adapter tensor `{name}` is missing", path.display()))?;
        if t.dims() != var.dims() {
            bail!("{}: `{name}` has shape {:?}, expected {:?}", path.display(), t.dims(), var.dims());
        }
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// `adapter_model.safetensors` + `adapter_config.json` in PEFT's layout.
pub fn save_adapters(adapters: &Adapters, dir: &Path, base_model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors: HashMap<String, Tensor> =
        adapters.vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    let tmp = dir.join(".adapter_model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, dir.join("adapter_model.safetensors"))?;
    let cfg = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": adapters.config.rank,
        "lora_alpha": adapters.config.alpha,
        "lora_dropout": adapters.config.dropout,
        "target_modules": adapters.config.targets,
        "bias": "none",
        "base_model_name_or_path": base_model,
        "inference_mode": true,
    });
    crate::fsutil::write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    Ok(())
}

/// A frozen copy of `model` with the adapters folded in, ready for `Model::save`.
pub fn merged(model: &Model) -> Result<Model> {
    let decoder: Decoder = model.decoder.merged()?;
    Ok(Model { config: model.config.clone(), decoder, varmap: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttnMask, Mode, ModelConfig};
    use candle_core::{DType, Device, D};

    fn tiny() -> Model {
        let cfg = ModelConfig::preset("tiny", 40).unwrap();
        let m = Model::init_random(cfg, 3, &Device::Cpu).unwrap();
        let d = tempfile::tempdir().unwrap();
        m.save(d.path()).unwrap();
        Model::load(d.path(), &Device::Cpu, DType::F32, false).unwrap()
    }

    #[test]
    fn unknown_target_is_named() {
        let c = LoraConfig { targets: vec!["qkv".into()], ..LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec![] } };
        let (k, m) = c.check().unwrap_err();
        assert_eq!(k, "targets");
        assert!(m.contains("`qkv`") && m.contains("q_proj"), "{m}");
    }

    #[test]
    fn training_moves_only_adapters_and_merge_equals_base_plus_ba() {
        let mut model = tiny();
        let base_before: Vec<(String, Vec<f32>)> = model
            .decoder
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q_proj".into(), "down_proj".into()] };
        let adapters = attach(&mut model, &cfg, 1).unwrap();
        assert_eq!(adapters.vars.len(), 4 * 2 * 2);
        let ids = Tensor::new(&[[1u32, 5, 9, 3, 7]], &Device::Cpu).unwrap();
        let mask = AttnMask::causal(1, 5, &Device::Cpu).unwrap();
        let params: Vec<crate::train::optim::Param> = adapters
            .vars
            .iter()
            .map(|(n, v)| crate::train::optim::Param { name: n.clone(), var: v.clone(), lr_scale: 1.0, decay: false })
            .collect();
        let mut opt = crate::train::optim::AdamW::new(params, Default::default());
        for _ in 0..5 {
            let out = model.decoder.forward(&ids, &mask, None, Mode::Train).unwrap();
            let loss = out.logits.narrow(D::Minus1, 0, 1).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.01, 0.0).unwrap();
        }
        // Base weights untouched.
        for ((n, before), (_, t)) in base_before.iter().zip(model.decoder.named_tensors()) {
            assert_eq!(before, &t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{n} changed");
        }
        // B moved away from zero.
        let b = &adapters.vars.iter().find(|(n, _)| n.ends_with("layers.0.self_attn.q_proj.lora_B.weight")).unwrap().1;
        assert!(b.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        // The merged weight is W + scale·B·A, computed here independently on the host.
        let merged = merged(&model).unwrap();
        let w0 = &base_before.iter().find(|(n, _)| n == "model.layers.0.self_attn.q_proj.weight").unwrap().1;
        let a = adapters.vars.iter().find(|(n, _)| n.ends_with("layers.0.self_attn.q_proj.lora_A.weight")).unwrap().1.as_tensor().to_vec2::<f32>().unwrap();
        let bm = b.as_tensor().to_vec2::<f32>().unwrap();
        let wm = merged.decoder.named_tensors().into_iter().find(|(n, _)| n == "model.layers.0.self_attn.q_proj.weight").unwrap().1.to_vec2::<f32>().unwrap();
        let (out_dim, in_dim, r) = (bm.len(), a[0].len(), a.len());
        for i in 0..out_dim {
            for j in 0..in_dim {
                let ba: f32 = (0..r).map(|k| bm[i][k] * a[k][j]).sum();
                let want = w0[i * in_dim + j] + cfg.scale() as f32 * ba;
                assert!((wm[i][j] - want).abs() < 1e-5);
            }
        }
        // And the merged model computes what the adapted one does.
        let l1 = model.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        let l2 = merged.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        let diff = (l1 - l2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{diff}");
        // Adapters round trip through the PEFT files.
        let d = tempfile::tempdir().unwrap();
        save_adapters(&adapters, d.path(), "base").unwrap();
        let mut fresh = tiny();
        let again = attach(&mut fresh, &cfg, 99).unwrap();
        load_into(&again, &d.path().join("adapter_model.safetensors")).unwrap();
        let l3 = fresh.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        let l1 = model.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        assert_eq!(l1.flatten_all().unwrap().to_vec1::<f32>().unwrap(), l3.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn dropout_is_seeded_scaled_and_off_without_a_seed() {
        let (ids, mask) = (Tensor::new(&[[1u32, 5, 9, 3, 7]], &Device::Cpu).unwrap(), AttnMask::causal(1, 5, &Device::Cpu).unwrap());
        let logits = |m: &Model| m.decoder.forward(&ids, &mask, None, Mode::Train).unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let with = |p: f64| {
            let mut m = tiny();
            let a = attach(&mut m, &LoraConfig { rank: 4, alpha: 8.0, dropout: p, targets: vec!["q_proj".into(), "up_proj".into()] }, 1).unwrap();
            // B starts at zero, which would hide any dropout; give it values.
            for (n, v) in &a.vars {
                if n.ends_with("lora_B.weight") {
                    v.set(&Tensor::ones(v.shape(), DType::F32, &Device::Cpu).unwrap()).unwrap();
                }
            }
            m
        };
        let plain = logits(&with(0.0));
        let model = with(0.5);
        assert_eq!(logits(&model), plain, "no seed set: no dropout (evaluation, sampling)");
        model.decoder.set_lora_dropout_seed(Some(7));
        let a = logits(&model);
        assert_eq!(logits(&model), a, "the same seed draws the same masks");
        assert_ne!(a, plain);
        model.decoder.set_lora_dropout_seed(Some(8));
        assert_ne!(logits(&model), a, "another seed, other masks");
        model.decoder.set_lora_dropout_seed(None);
        assert_eq!(logits(&model), plain);
        // The mask keeps each input with probability 1 - p and scales it by 1 / (1 - p).
        let d = crate::model::decoder::LoraDropout::for_test(0.3, 11);
        let kept = d.apply(&Tensor::ones(20_000, DType::F32, &Device::Cpu).unwrap()).unwrap().to_vec1::<f32>().unwrap();
        let zeros = kept.iter().filter(|&&v| v == 0.0).count() as f64 / kept.len() as f64;
        assert!(kept.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        assert!((zeros - 0.3).abs() < 0.01, "dropped share {zeros}"); // 3 sigma = 0.0097
        assert!(LoraConfig { rank: 4, alpha: 8.0, dropout: 1.0, targets: vec!["q_proj".into()] }.check().is_err());
    }
}
