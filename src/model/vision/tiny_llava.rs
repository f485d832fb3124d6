//! The `tiny-llava` preset: a real `llava` folder small enough for CPU tests — the `tiny`
//! decoder, a three-layer CLIP tower (56×56 images, 14-pixel patches: 16 image tokens after the
//! class token is dropped, features of layer -2), the `mlp2x_gelu` projector, a pad-to-square
//! CLIP processor, and the character tokenizer plus the `<image>` token.

use super::clip_image::ClipProcessorConfig;
use super::llava::{Llava, LlavaConfig, Select};
use super::vit::{VitAct, VitConfig, VitKind};
use crate::model::ModelConfig;
use crate::text::tiny;
use anyhow::{Context, Result};
use std::path::Path;

pub const PRESET: &str = "tiny-llava";

/// The image token, appended after the character vocabulary.
pub const IMAGE_TOKEN: &str = "<image>";

pub fn config() -> Result<LlavaConfig> {
    let mut text = ModelConfig::preset("tiny", tiny::VOCAB_SIZE + 1)?;
    let eos = tiny::vocabulary().iter().position(|t| t == tiny::EOS_TOKEN).context("tiny vocabulary has no eos")? as u32;
    text.eos_token_ids = vec![eos];
    text.max_position_embeddings = 2048;
    let obj = serde_json::json!({"model_type": "clip_vision_model", "projection_dim": 64});
    let vision = VitConfig {
        kind: VitKind::Clip,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_channels: 3,
        image_size: 56,
        patch_size: 14,
        layer_norm_eps: 1e-5,
        hidden_act: VitAct::QuickGelu,
        use_head: false,
        raw: obj.as_object().cloned().unwrap_or_default(),
    };
    Ok(LlavaConfig {
        text,
        vision,
        image_token_id: tiny::VOCAB_SIZE as u32,
        vision_feature_layer: -2,
        select: Select::Default,
        projector_act: VitAct::Gelu,
        projector_bias: true,
    })
}

pub fn processor() -> ClipProcessorConfig {
    ClipProcessorConfig { do_pad: true, processor_type: "LlavaImageProcessor".into(), ..ClipProcessorConfig::clip(56) }
}

/// Writes the folder: weights, configs, tokenizer with the image token.
pub fn init_folder(out: &Path, seed: u64) -> Result<LlavaConfig> {
    let config = config()?;
    let existed = out.exists();
    let written = write(out, &config, seed);
    if written.is_err() && !existed {
        // A half-made folder would look like a model; remove it.
        let _ = std::fs::remove_dir_all(out);
    }
    written.map(|()| config)
}

fn write(out: &Path, config: &LlavaConfig, seed: u64) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    tiny::build_char_tokenizer(out)?;
    let path = out.join("tokenizer.json");
    let mut tok = tokenizers::Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tok.add_special_tokens(vec![tokenizers::AddedToken::from(IMAGE_TOKEN, true)]).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tok.save(&path, true).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let id = config.image_token_id;
    anyhow::ensure!(tok.token_to_id(IMAGE_TOKEN) == Some(id), "{IMAGE_TOKEN} got id {:?}, expected {id}", tok.token_to_id(IMAGE_TOKEN));
    let cfg_path = out.join("tokenizer_config.json");
    let mut tc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)?;
    tc["added_tokens_decoder"][id.to_string()] = serde_json::json!({
        "content": IMAGE_TOKEN, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true
    });
    if let Some(list) = tc["additional_special_tokens"].as_array_mut() {
        list.push(serde_json::json!(IMAGE_TOKEN));
    }
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&tc)? + "\n")?;
    let model = Llava::init_random(config.clone(), processor(), seed, &candle_core::Device::Cpu)?;
    model.save(out)?;
    Ok(())
}
