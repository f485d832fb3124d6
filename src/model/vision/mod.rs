//! Vision-language models: images in ([`image`]: decoding and the Hugging Face image
//! processor's preprocessing), Qwen2-VL's vision tower and patch merger ([`qwen2_vl`]), its
//! multimodal rotary positions ([`mrope`]), and the whole model folder ([`vlm`]): image
//! features replace the image-pad tokens' embeddings before the shared decoder runs. LLaVA:
//! the CLIP / SigLIP towers ([`vit`]), the `mlp2x_gelu` projector ([`projector`]), CLIP's and
//! SigLIP's processors ([`clip_image`]) and the `llava` folder ([`llava`]). [`family`] puts
//! both behind one interface; [`checkpoint`] bounds a trained tower's memory; [`attention`]
//! is the towers' windowed attention (a no-grad kernel beside the candle ops).

pub mod attention;
pub mod checkpoint;
pub mod clip_image;
pub mod family;
pub mod image;
pub mod infer_ops;
pub mod llava;
pub mod mrope;
pub mod projector;
pub mod prompt;
pub mod qwen2_vl;
pub mod tiny;
pub mod tiny_llava;
pub mod vit;
pub mod vlm;

pub use checkpoint::TowerMode;
pub use family::{Family, VisionLanguageModel, VlmInputs};
pub use image::{load_and_preprocess, ImagePatches, ImageProcessorConfig};
pub use vlm::{Prepared, Qwen2Vl, Qwen2VlConfig};

/// Whether `dir/config.json` declares a vision-language `model_type` (qwen2_vl, llava).
pub fn is_vlm_folder(dir: &std::path::Path) -> bool {
    family::family_of(dir).is_some()
}
