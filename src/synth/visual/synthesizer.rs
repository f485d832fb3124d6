//! AdaMLLM step (B), the synthesizer at work (synth-spec §2.3 item 2): the prompt is the chat
//! template's caption round, `<image>\nDescribe the image.` answered by the domain caption,
//! followed by an open user header, and the vision-language model continues it greedily,
//! writing user and assistant turns of its own. Prompts are generated a batch at a time
//! (left-padded, one image each) with [`crate::generate::vision::generate_with_images`]; the
//! continuation is decoded with its special tokens kept, as the parser needs the turn markers.

use super::parse::{TurnMarkers, CHATML, LLAMA3};
use super::seed::{DESCRIBE_HINT, IMAGE_MARKER};
use crate::generate::vision::generate_with_images;
use crate::generate::SamplingParams;
use crate::model::vision::{image, is_vlm_folder, mrope, prompt, ImagePatches, Qwen2Vl};
use crate::rng::Rng;
use crate::text::{model_eos_ids, Message, Tokenizer};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The end-of-text tokens of the chat formats the parser knows (Qwen, Llama 3).
pub const END_OF_TEXT: [&str; 2] = ["<|endoftext|>", "<|end_of_text|>"];

pub struct Synthesizer {
    model: Qwen2Vl,
    tok: Tokenizer,
    placeholder: String,
    pub markers: TurnMarkers,
    eos: Vec<u32>,
}

/// One prompt: the caption and the image it is about.
pub struct Job<'a> {
    pub caption: &'a str,
    pub image: &'a Path,
}

impl Synthesizer {
    /// Loads a vision-language model folder; anything else is refused with what it is.
    pub fn load(dir: &Path, device: &candle_core::Device) -> Result<Synthesizer> {
        if !dir.join("config.json").is_file() {
            bail!("the synthesizer {} is not a model folder (no config.json there)", dir.display());
        }
        if !is_vlm_folder(dir) {
            bail!("the synthesizer {} is not a vision-language model (config.json model_type is not qwen2_vl); the visual synthesizer reads images, e.g. a `retort model init --preset tiny-vlm` folder trained on the seed conversations", dir.display());
        }
        let model = Qwen2Vl::load(dir, device, candle_core::DType::F32, false).with_context(|| format!("loading the synthesizer {}", dir.display()))?;
        let eos = model_eos_ids(dir).with_context(|| format!("the synthesizer {}", dir.display()))?;
        let tok = Tokenizer::load(dir).with_context(|| format!("the synthesizer's tokenizer in {}", dir.display()))?.with_model_eos(&eos);
        let placeholder = prompt::image_placeholder(&tok, &model.config).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let markers = turn_markers(&tok).with_context(|| format!("the synthesizer {}", dir.display()))?;
        // The synthesizer writes many turns: it stops at the end of text, never at a turn's end
        // (the reference stops at `<|end_of_text|>` only; Qwen2-VL's config lists `<|im_end|>`).
        let turn_end = tok.token_to_id(markers.end_of_turn);
        let mut eos: Vec<u32> = eos.into_iter().filter(|&e| Some(e) != turn_end).collect();
        let more: Vec<u32> = END_OF_TEXT.iter().filter_map(|t| tok.token_to_id(t)).filter(|e| !eos.contains(e)).collect();
        eos.extend(more);
        if eos.is_empty() {
            bail!("the synthesizer {} has no end-of-text token to stop at (only the end-of-turn marker)", dir.display());
        }
        Ok(Synthesizer { model, tok, placeholder, markers, eos })
    }

    /// The raw continuations of a batch, in order.
    pub fn generate(&self, jobs: &[Job], blank: bool, max_new_tokens: usize) -> Result<Vec<String>> {
        let merge = self.model.config.vision.spatial_merge_size;
        let (mut prompts, mut images) = (Vec::new(), Vec::new());
        for job in jobs {
            let patches = load_image(job.image, blank, &self.model.processor)?;
            // The round and the open header are tokenized apart, as the synthesizer's training
            // tokenized the caption round apart from the rounds after it.
            let round = [Message::user(format!("{IMAGE_MARKER}\n{DESCRIBE_HINT}")), Message::assistant(job.caption)];
            let first = prompt::expand_markers(&self.tok.apply_chat_template(&round, false)?, &self.placeholder);
            let ids = [self.tok.encode(&first, false)?, self.tok.encode(self.markers.user, false)?].concat();
            let ids = mrope::expand_image_tokens(&ids, self.model.config.image_token_id, &[patches.tokens(merge)]).map_err(anyhow::Error::msg)?;
            prompts.push(ids);
            images.push(vec![patches]);
        }
        let context = self.model.config.text.max_position_embeddings;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest >= context {
            bail!("a synthesizer prompt is {longest} tokens (caption and image), no shorter than the synthesizer's context of {context}");
        }
        let params = SamplingParams { greedy: true, max_new_tokens: max_new_tokens.min(context - longest), stop_token_ids: self.eos.clone(), ..SamplingParams::default() };
        // Greedy: the generator's draws are never used.
        let out = generate_with_images(&self.model, &prompts, &images, &params, &mut Rng::new(0), None)?;
        out.into_iter()
            .map(|c| {
                let tokens = match c.tokens.last() {
                    Some(t) if self.eos.contains(t) => &c.tokens[..c.tokens.len() - 1],
                    _ => &c.tokens[..],
                };
                Ok(self.tok.decode(tokens, false)?)
            })
            .collect()
    }
}

/// The image's patches, or those of a white image of its size (`blank`: the synthesizer sees
/// only the caption).
fn load_image(path: &Path, blank: bool, processor: &crate::model::vision::ImageProcessorConfig) -> Result<ImagePatches> {
    let img = image::load_image(path, processor.max_source_pixels).with_context(|| format!("reading the image {}", path.display()))?;
    let img = if blank { ::image::RgbImage::from_pixel(img.width(), img.height(), ::image::Rgb([255, 255, 255])) } else { img };
    Ok(image::preprocess(&img, processor, path)?)
}

/// Which chat format the template writes: ChatML or Llama 3.
pub fn turn_markers(tok: &Tokenizer) -> Result<TurnMarkers> {
    let probe = tok.apply_chat_template(&[Message::user("q"), Message::assistant("a")], false)?;
    for m in [CHATML, LLAMA3] {
        if probe.contains(m.user) && probe.contains(m.assistant) {
            return Ok(m);
        }
    }
    bail!("its chat template writes turns neither as ChatML (<|im_start|>user) nor as Llama 3 (<|start_header_id|>user<|end_header_id|>); the parser knows only those")
}
