//! The image side of a vision-language model in the memory preflight: the tower's and
//! projector's weights, gradients and AdamW state per `[stage.vision]`, and the tower's
//! activations over the patches of a micro-batch's images. Family-neutral: a family gives its
//! [`VisionShape`] ([`VisionShape::qwen2_vl`], [`VisionShape::llava`]).
//!
//! How retort's code spends the memory (`train/sft_vision.rs`): the whole model loads as f32
//! `Var`s; a trained tower keeps its activations for backward (all of them, or with
//! `checkpoint_tower` only its blocks' inputs) and gets gradients, a frozen tower runs cut from
//! the graph (no gradient, nothing kept across blocks); the projector always gets a gradient
//! (a frozen one only has no optimizer state). Attention runs per image with an (n × n) score
//! matrix per head, so the bound on the patches of one image matters as much as the patch count.

use super::needs::Needs;
use crate::model::vision::llava::LlavaConfig;
use crate::model::vision::{ImageProcessorConfig, Qwen2VlConfig};

/// What the arithmetic needs of a tower and its projector.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionShape {
    pub tower_params: usize,
    pub projector_params: usize,
    pub depth: usize,
    pub width: usize,
    pub mlp: usize,
    pub heads: usize,
    /// Tower patches per LLM image token (Qwen2-VL: the 2×2 merge, 4).
    pub patches_per_token: usize,
    /// The most patches one image makes (the processor's pixel budget).
    pub max_image_patches: usize,
}

impl VisionShape {
    pub fn qwen2_vl(c: &Qwen2VlConfig, processor: &ImageProcessorConfig) -> VisionShape {
        let shapes = c.vision.parameter_shapes();
        let count = |merger: bool| -> usize { shapes.iter().filter(|(n, _)| n.starts_with("visual.merger.") == merger).map(|(_, s)| s.iter().product::<usize>()).sum() };
        let m = c.vision.spatial_merge_size;
        VisionShape {
            tower_params: count(false),
            projector_params: count(true),
            depth: c.vision.depth,
            width: c.vision.embed_dim,
            mlp: c.vision.mlp_dim(),
            heads: c.vision.num_heads,
            patches_per_token: m * m,
            max_image_patches: (processor.max_pixels / (processor.patch_size * processor.patch_size)).max(1),
        }
    }

    /// LLaVA's shape: each image is the tower's fixed grid, one token a position (the class
    /// token's position included, a slight overcount under `default` selection); the blocks up
    /// to `vision_feature_layer` run. The tower's parameters are all its tensors (all are
    /// loaded); the unused last blocks get no gradient, counted all the same (a few percent).
    pub fn llava(c: &LlavaConfig) -> VisionShape {
        let shapes = c.parameter_shapes();
        let count = |prefix: &str| -> usize { shapes.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, s)| s.iter().product::<usize>()).sum() };
        VisionShape {
            tower_params: count("vision_tower."),
            projector_params: count("multi_modal_projector."),
            depth: c.feature_layer(),
            width: c.vision.hidden_size,
            mlp: c.vision.intermediate_size,
            heads: c.vision.num_attention_heads,
            patches_per_token: 1,
            max_image_patches: c.vision.num_positions(),
        }
    }

    pub fn parameters(&self) -> usize {
        self.tower_params + self.projector_params
    }

    /// Σ n² over the images of `patches` patches when each image has at most
    /// `max_image_patches`: the largest it can be (as many full images as fit, then the rest).
    pub fn attention_squares(&self, patches: usize) -> f64 {
        let m = self.max_image_patches;
        let (full, rest) = (patches / m, patches % m);
        full as f64 * (m * m) as f64 + (rest * rest) as f64
    }
}

/// Elements one block's forward holds when nothing is kept for backward, for one row of
/// `patches` patches: a few width- and MLP-sized tensors and every head's scores and
/// probabilities.
fn forward_block(v: &VisionShape, patches: usize) -> f64 {
    patches as f64 * (6.0 * v.width as f64 + 3.0 * v.mlp as f64) + 2.0 * v.heads as f64 * v.attention_squares(patches)
}

/// The image tokens of one row the figures assume: the stage's figure, else every token of
/// the row (a row's image tokens never outnumber its tokens).
pub fn image_tokens(needs: &Needs, row_tokens: usize) -> usize {
    needs.image_tokens.map_or(row_tokens, |t| t.min(row_tokens))
}

/// When a device-side cost is held: while training (a step's forward and backward) or while
/// sampling / scoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Train,
    Sample,
}

/// The image-side costs of one stage (named, in bytes, on the device) and the parameters it
/// trains beyond the LLM's (for the caller's AdamW state): gradients and activations while
/// training, the tower's forward while sampling or scoring.
pub fn parts(needs: &Needs, v: &VisionShape, training: bool) -> (Vec<(String, f64, When)>, f64) {
    let mut out = Vec::new();
    let mut add = |name: &str, bytes: f64, when: When| out.push((name.to_string(), bytes, when));
    let frozen = |part: &str| needs.vision_frozen.iter().any(|f| f == part);
    let (b, s) = (needs.micro_batch, needs.seq);
    let mut trained = 0.0;
    if training {
        // The projector is in the graph even when frozen, so it always gets a gradient; a
        // frozen tower runs cut from the graph (`TowerMode::Frozen`) and gets none.
        let tower_frozen = frozen("tower");
        if tower_frozen {
            add("projector gradients (f32; a frozen one too)", 4.0 * v.projector_params as f64, When::Train);
        } else {
            add("tower + projector gradients (f32; a frozen projector too)", 4.0 * v.parameters() as f64, When::Train);
        }
        trained = [("tower", v.tower_params), ("projector", v.projector_params)].iter().filter(|(p, _)| !frozen(p)).map(|(_, n)| *n as f64).sum();
        let patches = image_tokens(needs, s) * v.patches_per_token;
        if patches > 0 && b > 0 {
            // Per block and patch, about 28 width-sized and 6 MLP-sized tensors kept for backward
            // (the encoder's count, `plan::encoder_activation_elements`); per block and image the
            // f32 scores and probabilities of every head (n × n each), kept for backward; and
            // once, their two gradients while backward passes a block.
            let squares = v.heads as f64 * v.attention_squares(patches);
            let block = patches as f64 * (28.0 * v.width as f64 + 6.0 * v.mlp as f64) + 2.0 * squares;
            let (what, per_row) = if tower_frozen {
                ("vision tower forward (frozen: nothing kept across blocks)", forward_block(v, patches))
            } else if needs.vision_checkpoint {
                // Every block's input and the output (depth + 1 width-sized tensors a patch),
                // and one block's activations and score gradients while it is recomputed.
                ("vision tower activations, checkpointed", (v.depth + 1) as f64 * patches as f64 * v.width as f64 + block + 2.0 * squares)
            } else {
                ("vision tower activations", v.depth as f64 * block + 2.0 * squares)
            };
            add(&format!("{what}, {b} rows × {patches} patches"), 4.0 * b as f64 * per_row, When::Train);
        }
    }
    let sampled = needs.generate.or(needs.forward.filter(|f| f.1 > 0));
    if let Some((rows, len)) = sampled {
        // Without backward nothing is kept across blocks: one block's working set.
        let patches = image_tokens(needs, len) * v.patches_per_token;
        add(&format!("vision tower forward, {rows} rows × {patches} patches"), 4.0 * rows as f64 * forward_block(v, patches), When::Sample);
    }
    (out, trained)
}
