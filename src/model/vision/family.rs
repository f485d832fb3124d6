//! The vision-language families behind one interface: what generation, training and the CLI
//! need from a VLM folder whatever its family (Qwen2-VL: M-RoPE positions, image-pad tokens
//! between vision start / end; LLaVA: plain positions, `<image>` tokens).

use super::super::config::ModelConfig;
use super::super::decoder::{AttnMask, Decoder, Mode, RopePositions};
use super::super::{ModelError, Result};
use super::checkpoint::TowerMode;
use super::image::ImagePatches;
use super::llava::Llava;
use super::vlm::Qwen2Vl;
use crate::text::Tokenizer;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use std::path::Path;

/// A batch ready for the decoder: embeddings with the image features in place, the mask, the
/// rotary positions when the family has its own (`None`: the mask's), and per row the delta
/// later decoding steps add to their position (0 without M-RoPE).
pub struct VlmInputs {
    pub embeds: Tensor,
    pub mask: AttnMask,
    pub positions: Option<RopePositions>,
    pub deltas: Vec<i64>,
}

/// The families `model_type` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Qwen2Vl,
    Llava,
}

/// The family of a folder's `config.json`, if it is a vision-language model.
pub fn family_of(dir: &Path) -> Option<Family> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match v["model_type"].as_str()? {
        "qwen2_vl" => Some(Family::Qwen2Vl),
        "llava" => Some(Family::Llava),
        _ => None,
    }
}

pub trait VisionLanguageModel {
    fn family(&self) -> Family;
    fn decoder(&self) -> &Decoder;
    /// The LLM, to attach or merge LoRA adapters.
    fn decoder_mut(&mut self) -> &mut Decoder;
    fn text_config(&self) -> &ModelConfig;
    fn image_token_id(&self) -> u32;
    /// Decodes and preprocesses one image with the folder's processor.
    fn load_image(&self, path: &Path) -> Result<ImagePatches>;
    /// How many image tokens `image` becomes in the prompt.
    fn image_tokens(&self, image: &ImagePatches) -> usize;
    /// The text one `<image>` marker becomes before tokenizing (one image token among the
    /// family's wrappers), spelled with the tokenizer's own strings.
    fn placeholder(&self, tok: &Tokenizer) -> std::result::Result<String, String>;
    /// Embeddings, mask and positions of a left-padded batch (image tokens already expanded).
    fn inputs(&self, rows: &[Vec<u32>], images: &[Vec<ImagePatches>], pad_id: u32) -> Result<VlmInputs>;
    /// Rotary positions of a decoding step (`None`: the mask's).
    fn step_positions(&self, mask: &AttnMask, deltas: &[i64]) -> Result<Option<RopePositions>>;
    /// Trainable parameters in model order.
    fn vars(&self) -> Vec<(String, Var)>;
    fn save(&self, dir: &Path) -> Result<()>;
    /// What the tower's forward keeps for backward (training: [`TowerMode`]).
    fn set_tower_mode(&self, mode: TowerMode);
    /// After `loss.backward()`: the tower weights' gradients of checkpointed forwards, added
    /// to `grads` (nothing to do in the other modes).
    fn tower_backward(&self, grads: &mut GradStore) -> Result<()>;

    /// Logits (B, L, V) at every position of `inputs`.
    fn logits(&self, inputs: &VlmInputs, mode: Mode) -> Result<Tensor> {
        let hidden = self.decoder().forward_embeds_at(&inputs.embeds, &inputs.mask, inputs.positions.as_ref(), None, mode)?;
        Ok(self.decoder().logits(&hidden)?)
    }
}

/// Loads a vision-language folder of either family.
pub fn load(dir: &Path, device: &Device, dtype: DType, trainable: bool) -> Result<Box<dyn VisionLanguageModel>> {
    match family_of(dir) {
        Some(Family::Qwen2Vl) => Ok(Box::new(Qwen2Vl::load(dir, device, dtype, trainable)?)),
        Some(Family::Llava) => Ok(Box::new(Llava::load(dir, device, dtype, trainable)?)),
        None => Err(ModelError::Unsupported {
            path: dir.join("config.json"),
            what: "a model_type other than qwen2_vl or llava for a vision-language model".into(),
        }),
    }
}

impl VisionLanguageModel for Qwen2Vl {
    fn family(&self) -> Family {
        Family::Qwen2Vl
    }

    fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn text_config(&self) -> &ModelConfig {
        &self.config.text
    }

    fn image_token_id(&self) -> u32 {
        self.config.image_token_id
    }

    fn load_image(&self, path: &Path) -> Result<ImagePatches> {
        super::image::load_and_preprocess(path, &self.processor)
    }

    fn image_tokens(&self, image: &ImagePatches) -> usize {
        image.tokens(self.config.vision.spatial_merge_size)
    }

    fn placeholder(&self, tok: &Tokenizer) -> std::result::Result<String, String> {
        super::prompt::image_placeholder(tok, &self.config)
    }

    fn inputs(&self, rows: &[Vec<u32>], images: &[Vec<ImagePatches>], pad_id: u32) -> Result<VlmInputs> {
        let p = self.prepare(rows, images, pad_id)?;
        Ok(VlmInputs { embeds: p.embeds, mask: p.mask, positions: Some(p.positions), deltas: p.deltas })
    }

    fn step_positions(&self, mask: &AttnMask, deltas: &[i64]) -> Result<Option<RopePositions>> {
        Ok(Some(Qwen2Vl::step_positions(self, mask, deltas)?))
    }

    fn vars(&self) -> Vec<(String, Var)> {
        Qwen2Vl::vars(self)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Qwen2Vl::save(self, dir)
    }

    fn set_tower_mode(&self, mode: TowerMode) {
        self.vision.set_mode(mode);
    }

    fn tower_backward(&self, grads: &mut GradStore) -> Result<()> {
        Ok(self.vision.backward(grads)?)
    }
}

impl VisionLanguageModel for Llava {
    fn family(&self) -> Family {
        Family::Llava
    }

    fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn text_config(&self) -> &ModelConfig {
        &self.config.text
    }

    fn image_token_id(&self) -> u32 {
        self.config.image_token_id
    }

    fn load_image(&self, path: &Path) -> Result<ImagePatches> {
        Llava::load_image(self, path)
    }

    fn image_tokens(&self, _image: &ImagePatches) -> usize {
        self.config.image_tokens()
    }

    fn placeholder(&self, tok: &Tokenizer) -> std::result::Result<String, String> {
        let id = self.config.image_token_id;
        tok.id_to_token(id).ok_or_else(|| format!("the tokenizer has no image token (id {id}, image_token_index in config.json)"))
    }

    fn inputs(&self, rows: &[Vec<u32>], images: &[Vec<ImagePatches>], pad_id: u32) -> Result<VlmInputs> {
        let (embeds, mask) = self.prepare(rows, images, pad_id)?;
        Ok(VlmInputs { embeds, mask, positions: None, deltas: vec![0; rows.len()] })
    }

    fn step_positions(&self, _mask: &AttnMask, _deltas: &[i64]) -> Result<Option<RopePositions>> {
        Ok(None)
    }

    fn vars(&self) -> Vec<(String, Var)> {
        Llava::vars(self)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Llava::save(self, dir)
    }

    fn set_tower_mode(&self, mode: TowerMode) {
        self.tower.set_mode(mode);
    }

    fn tower_backward(&self, grads: &mut GradStore) -> Result<()> {
        Ok(self.tower.backward(grads)?)
    }
}
