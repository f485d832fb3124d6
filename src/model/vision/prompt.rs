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

/// The token ids of a prompt with images: `<image>` markers placed (every image in front of
/// the text when it has none), rendered as one user turn with the chat template when `chat`,
/// tokenized, and each image pad grown to `counts[i]` tokens (image i's features).
pub fn prompt_with_images(tok: &Tokenizer, cfg: &Qwen2VlConfig, text: &str, counts: &[usize], chat: bool) -> Result<Vec<u32>, String> {
    let text = match count_markers(text) {
        0 => format!("{}{text}", IMAGE_MARKER.repeat(counts.len())),
        n if n == counts.len() => text.to_string(),
        n => return Err(format!("the prompt has {n} <image> marker(s) but {} image(s) were given", counts.len())),
    };
    let text = expand_markers(&text, &image_placeholder(tok, cfg)?);
    let ids = if chat {
        let rendered = tok.apply_chat_template(&[crate::text::Message::user(&text)], true).map_err(|e| format!("cannot render the chat template: {e}"))?;
        tok.encode(&rendered, false)
    } else {
        tok.encode(&text, true)
    }
    .map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
    super::mrope::expand_image_tokens(&ids, cfg.image_token_id, counts)
}
