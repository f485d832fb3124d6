//! Vision-language models: images in ([`image`]: decoding and the Hugging Face image
//! processor's preprocessing), Qwen2-VL's vision tower and patch merger ([`qwen2_vl`]), its
//! multimodal rotary positions ([`mrope`]), and the whole model folder ([`vlm`]): image
//! features replace the image-pad tokens' embeddings before the shared decoder runs.

pub mod image;
pub mod mrope;
pub mod prompt;
pub mod qwen2_vl;
pub mod tiny;
pub mod vlm;

pub use image::{load_and_preprocess, ImagePatches, ImageProcessorConfig};
pub use vlm::{Prepared, Qwen2Vl, Qwen2VlConfig};

/// Whether `dir/config.json` declares `model_type: qwen2_vl`.
pub fn is_vlm_folder(dir: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else { return false };
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["model_type"] == "qwen2_vl")
}
