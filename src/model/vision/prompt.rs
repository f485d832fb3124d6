//! Image markers in prompt text. Rows and prompts say where an image goes with `<image>` (the
//! LLaMA-Factory / ShareGPT convention); before tokenizing, each becomes the model's
//! `<|vision_start|><|image_pad|><|vision_end|>` (what Qwen2-VL's chat template writes for an
//! image content part), and after tokenizing the one pad grows to the image's token count.

use super::vlm::Qwen2VlConfig;
use crate::text::Tokenizer;

pub const IMAGE_MARKER: &str = "<image>";

/// How many `<image>` markers `text` holds.
pub fn count_markers(text: &str) -> usize {
    text.matches(IMAGE_MARKER).count()
}

/// The vision token triple of one image, spelled with the tokenizer's own strings.
pub fn image_placeholder(tok: &Tokenizer, cfg: &Qwen2VlConfig) -> Result<String, String> {
    let spell = |id: u32, what: &str| tok.id_to_token(id).ok_or_else(|| format!("the tokenizer has no {what} token (id {id} from config.json)"));
    Ok(format!(
        "{}{}{}",
        spell(cfg.vision_start_token_id, "vision_start")?,
        spell(cfg.image_token_id, "image_pad")?,
        spell(cfg.vision_end_token_id, "vision_end")?
    ))
}

/// `text` with each `<image>` replaced by the vision token triple.
pub fn expand_markers(text: &str, placeholder: &str) -> String {
    text.replace(IMAGE_MARKER, placeholder)
}
