//! The `tiny-vlm` preset: a real `qwen2_vl` folder small enough for CPU tests — the `tiny`
//! decoder, a two-block vision tower with Qwen2-VL's real patch (14), temporal patch (2) and
//! 2×2 merge, the character tokenizer plus Qwen2-VL's vision special tokens, and a chat
//! template that renders image content parts as `<|vision_start|><|image_pad|><|vision_end|>`.

use super::image::ImageProcessorConfig;
use super::qwen2_vl::{Activation, VisionConfig};
use super::vlm::{Qwen2Vl, Qwen2VlConfig};
use crate::model::init::Shape;
use crate::model::ModelConfig;
use crate::text::tiny;
use anyhow::{Context, Result};
use std::path::Path;

/// The preset's name for `retort model init --preset`.
pub const PRESET: &str = "tiny-vlm";

/// The vision special tokens, appended after the character vocabulary in this order.
pub const VISION_TOKENS: [&str; 4] = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"];

/// The chat template of the preset (ChatML; image parts become the vision token triple).
pub const TEMPLATE: &str = include_str!("../../../assets/tiny-vlm-chatml.jinja");

/// The preset's config: `tiny`'s decoder (head_dim 32: M-RoPE sections 4 / 6 / 6, Qwen2-VL's
/// 16 / 24 / 24 scaled down), a 2-block 64-wide tower with 4 heads.
pub fn config() -> Result<Qwen2VlConfig> {
    config_shaped(&Shape::default(), &TowerShape::default())
}

/// Size overrides of the tower (`model init --preset tiny-vlm --vision-depth 32 ...`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TowerShape {
    pub depth: Option<usize>,
    pub width: Option<usize>,
    pub heads: Option<usize>,
    pub mlp_ratio: Option<f64>,
}

impl TowerShape {
    pub fn is_default(&self) -> bool {
        *self == TowerShape::default()
    }
}

/// The preset with the LLM's sizes from `shape` (the text `--hidden`, `--layers`, ... flags)
/// and the tower's from `tower`; the M-RoPE sections follow the head size as Qwen2-VL's do
/// (head_dim 128: 16 / 24 / 24). Qwen2-VL-2B's shape: `--hidden 1536 --layers 28 --heads 12
/// --kv-heads 2 --intermediate 8960 --vocab 151936 --vision-depth 32 --vision-width 1280
/// --vision-heads 16 --vision-mlp-ratio 4`.
pub fn config_shaped(shape: &Shape, tower: &TowerShape) -> Result<Qwen2VlConfig> {
    let base = tiny::VOCAB_SIZE as u32;
    let mut text = ModelConfig::preset("tiny", tiny::VOCAB_SIZE + VISION_TOKENS.len())?;
    shape.apply(&mut text)?;
    anyhow::ensure!(text.vocab_size >= tiny::VOCAB_SIZE + VISION_TOKENS.len(), "--vocab {} leaves no room for the 4 vision tokens after the {} characters", text.vocab_size, tiny::VOCAB_SIZE);
    let eos = tiny::vocabulary().iter().position(|t| t == tiny::EOS_TOKEN).context("tiny vocabulary has no eos")? as u32;
    text.eos_token_ids = vec![eos];
    text.max_position_embeddings = 2048;
    let vision = VisionConfig {
        depth: tower.depth.unwrap_or(2),
        embed_dim: tower.width.unwrap_or(64),
        hidden_size: text.hidden_size,
        num_heads: tower.heads.unwrap_or(4),
        mlp_ratio: tower.mlp_ratio.unwrap_or(2.0),
        in_channels: 3,
        patch_size: 14,
        spatial_merge_size: 2,
        temporal_patch_size: 2,
        hidden_act: Activation::QuickGelu,
        rope_theta: 10000.0,
    };
    let (w, h) = (vision.embed_dim, vision.num_heads);
    anyhow::ensure!(vision.depth > 0 && h > 0 && w % h == 0 && (w / h) % 4 == 0, "--vision-width {w} must be a multiple of --vision-heads {h} with a head size divisible by 4 (2D rotary positions)");
    anyhow::ensure!(vision.mlp_ratio > 0.0, "--vision-mlp-ratio must be > 0");
    let half = text.head_dim / 2;
    let t = half / 4;
    Ok(Qwen2VlConfig {
        text,
        vision,
        mrope_section: vec![t, (half - t) / 2, half - t - (half - t) / 2],
        vision_start_token_id: base,
        vision_end_token_id: base + 1,
        image_token_id: base + 2,
        video_token_id: base + 3,
    })
}

/// The preset's processor: Qwen2-VL's normalisation, images between 56×56 and 224×224 pixels
/// (at most 64 image tokens each).
pub fn processor() -> ImageProcessorConfig {
    ImageProcessorConfig { min_pixels: 56 * 56, max_pixels: 224 * 224, ..ImageProcessorConfig::qwen2_vl() }
}

/// Writes the folder: weights, configs, tokenizer with the vision tokens, chat template.
pub fn init_folder(out: &Path, seed: u64) -> Result<Qwen2VlConfig> {
    init_folder_shaped(out, seed, &Shape::default(), &TowerShape::default())
}

/// [`init_folder`] of a reshaped preset ([`config_shaped`]). A reshaped model takes Qwen2-VL's
/// own processor (up to 1280 image tokens), the preset's keeps images small.
pub fn init_folder_shaped(out: &Path, seed: u64, shape: &Shape, tower: &TowerShape) -> Result<Qwen2VlConfig> {
    let config = config_shaped(shape, tower)?;
    let reshaped = !tower.is_default() || [shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab].iter().any(Option::is_some);
    let processor = if reshaped { ImageProcessorConfig::qwen2_vl() } else { processor() };
    let existed = out.exists();
    let written = write(out, &config, &processor, seed);
    if written.is_err() && !existed {
        // A half-made folder would look like a model; remove it.
        let _ = std::fs::remove_dir_all(out);
    }
    written.map(|()| config)
}

fn write(out: &Path, config: &Qwen2VlConfig, processor: &ImageProcessorConfig, seed: u64) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    tiny::build_char_tokenizer(out)?;
    let path = out.join("tokenizer.json");
    let mut tok = tokenizers::Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let added: Vec<tokenizers::AddedToken> = VISION_TOKENS.iter().map(|t| tokenizers::AddedToken::from(*t, true)).collect();
    tok.add_special_tokens(added).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tok.save(&path, true).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (token, id) in VISION_TOKENS.iter().zip(config.vision_start_token_id..) {
        anyhow::ensure!(tok.token_to_id(token) == Some(id), "{token} got id {:?}, expected {id}", tok.token_to_id(token));
    }
    let cfg_path = out.join("tokenizer_config.json");
    let mut tc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)?;
    for (token, id) in VISION_TOKENS.iter().zip(config.vision_start_token_id..) {
        tc["added_tokens_decoder"][id.to_string()] = serde_json::json!({
            "content": token, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true
        });
    }
    if let Some(list) = tc["additional_special_tokens"].as_array_mut() {
        list.extend(VISION_TOKENS.iter().map(|t| serde_json::json!(t)));
    }
    tc["chat_template"] = serde_json::json!(TEMPLATE);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&tc)? + "\n")?;
    let model = Qwen2Vl::init_random(config.clone(), processor.clone(), seed, &candle_core::Device::Cpu)?;
    model.save(out)?;
    Ok(())
}
