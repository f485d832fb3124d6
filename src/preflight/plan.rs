//! The arithmetic of the memory preflight: a stage's [`Needs`] and its model's
//! architecture become named parts in bytes, each with where it lives (the device, or host
//! RAM) and when (the whole stage, only while sampling, only while training). The peak of a
//! memory is what stays resident plus the larger of the two phases.
//!
//! Where things live follows retort's code: weights, gradients, activations and the KV cache
//! on the device; AdamW's moments and the gradient accumulator of a multi-micro-batch step in
//! host RAM (`train::optim::AdamW` keeps them in `Vec<f32>`). On the CPU both are the same RAM.

use super::needs::{Needs, Trainable};
use super::vision::VisionShape;
use crate::model::encoder::{EncoderConfig, Heads};
use crate::model::estimate::{lora_parameters, train_activation_elements_with};
use crate::model::ModelConfig;

/// A model's architecture, as far as memory goes.
#[derive(Clone, Debug)]
pub enum Arch {
    Decoder(ModelConfig),
    Encoder(EncoderConfig),
    /// A vision-language model: its image side and its LLM.
    Vlm(VisionShape, ModelConfig),
}

impl Arch {
    pub fn parameters(&self) -> usize {
        match self {
            Arch::Decoder(c) => c.num_parameters(),
            Arch::Vlm(v, c) => v.parameters() + c.num_parameters(),
            Arch::Encoder(c) => crate::model::encoder::parameter_shapes(c, Heads { pooler: false, mlm: true })
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum(),
        }
    }

    /// The most tokens a row may have (an encoder's position table less RoBERTa's offset of 2
    /// is not subtracted: an upper bound).
    pub fn context(&self) -> usize {
        match self {
            Arch::Decoder(c) | Arch::Vlm(_, c) => c.max_position_embeddings,
            Arch::Encoder(c) => c.max_position_embeddings,
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Arch::Decoder(c) | Arch::Vlm(_, c) => c.hidden_size,
            Arch::Encoder(c) => c.hidden_size,
        }
    }

    /// The decoder (a VLM's LLM), if any.
    pub fn decoder(&self) -> Option<&ModelConfig> {
        match self {
            Arch::Decoder(c) | Arch::Vlm(_, c) => Some(c),
            Arch::Encoder(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Device,
    Host,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Held for the whole stage.
    Resident,
    /// Only while sampling (rollouts, quick evals).
    Sample,
    /// Only during a forward/backward and the optimizer step.
    Train,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub name: String,
    pub bytes: f64,
    pub place: Place,
    pub phase: Phase,
}

/// Where the stage runs, for the figures that depend on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// A GPU: the device and host RAM are separate memories.
    pub gpu: bool,
    /// Bytes per element of a frozen LoRA base (the run's dtype on that device).
    pub lora_base_bytes: f64,
}

/// What the process holds besides the model: the binary, the tokenizer, the data and the
/// allocator's slack. Measured: `retort sft` of the tiny preset at 8 × 48 tokens peaks at
/// 79 MiB max RSS, of which the model's parts are about 20 MiB.
pub const PROCESS_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// Copies of the (B, S, V) f32 logits a training forward keeps until backward. On the CPU the
/// per-token log-probs are a fused kernel that never materialises the log-softmax (logits,
/// their gradient and one working copy); elsewhere candle's unfused expression keeps about
/// eight (docs/ENGINE.md §5).
pub fn logit_copies(gpu: bool) -> f64 {
    if gpu {
        8.0
    } else {
        3.0
    }
}

/// Parameters of FlowRL's Z head on hidden size `h` with `layers` layers: `layers − 1` blocks of
/// a linear h×h with bias and a LayerNorm (2h), then a linear h→1 with bias.
pub fn z_head_parameters(h: usize, layers: usize) -> usize {
    layers.saturating_sub(1) * (h * h + h + 2 * h) + h + 1
}

/// Activation elements (not bytes) of one encoder training forward over `b` × `s` tokens: per
/// layer and token about 28 hidden-sized tensors and 6 intermediate-sized (GELU and its input,
/// with their gradients), the score tensors a·s² per sequence six times, and, with a token head
/// (MLM, denoising), the (B, S, V) logits six times. The coefficients are twice a count of the
/// tensors the forward builds, fitted to the measured max RSS of `denoise` at the
/// diffusion-ood-tiny shape, batch 128 × 64 tokens (batch 32: the estimate is above; see the
/// README). Rows are sized at `s`: batches padded to a shorter longest row use less.
pub fn encoder_activation_elements(c: &EncoderConfig, b: usize, s: usize, token_head: bool) -> f64 {
    let (bs, h, i, a, v) = (
        (b * s) as f64,
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_attention_heads as f64,
        c.vocab_size as f64,
    );
    let per_layer = bs * (28.0 * h + 6.0 * i) + 6.0 * b as f64 * a * (s * s) as f64;
    c.num_hidden_layers as f64 * per_layer + if token_head { 6.0 * bs * v } else { 0.0 }
}

/// Activation elements of a forward without backward (evaluation, scoring) over `b` × `s`
/// tokens: nothing is kept across layers, so one layer's working set (a few hidden-sized
/// tensors, the MLP's intermediate, the attention scores and their softmax) plus the (B, S, V)
/// f32 logits and one working copy of them (the log-softmax the scores read).
pub fn inference_forward_elements(arch: &Arch, b: usize, s: usize) -> f64 {
    let (h, i, a, v) = match arch {
        Arch::Decoder(c) | Arch::Vlm(_, c) => (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.vocab_size),
        Arch::Encoder(c) => (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.vocab_size),
    };
    let bs = (b * s) as f64;
    bs * (6.0 * h as f64 + 3.0 * i as f64) + 2.0 * b as f64 * a as f64 * (s * s) as f64 + 2.0 * bs * v as f64
}

/// The named parts of one stage.
pub fn parts(needs: &Needs, arch: &Arch, target: Target) -> Vec<Part> {
    use Phase::*;
    use Place::*;
    let p = arch.parameters() as f64;
    let copies = needs.copies.max(1) as f64;
    let mut out = Vec::new();
    let mut add = |name: &str, bytes: f64, place: Place, phase: Phase| {
        if bytes > 0.0 {
            out.push(Part { name: name.to_string(), bytes, place, phase });
        }
    };
    add("process (binary, tokenizer, data, allocator; measured)", PROCESS_BYTES, Host, Resident);
    // The trained parameters: all of them, the adapters over a frozen base, or none.
    let what = if copies > 1.0 { format!("{copies} models' weights") } else { "policy weights".to_string() };
    let trained = match (needs.trainable, arch) {
        // A VLM trains in f32 whole or with adapters on its LLM (`train/sft_vision.rs`); the
        // image side's trained parameters are added below.
        (Trainable::Full | Trainable::Lora { .. }, Arch::Vlm(_, c)) => {
            add("weights (f32; tower, projector, LLM)", 4.0 * p, Device, Resident);
            match needs.trainable {
                Trainable::Lora { rank } => {
                    let l = lora_parameters(c, rank) as f64;
                    add(&format!("LoRA r={rank} adapters on the LLM (f32)"), 4.0 * l, Device, Resident);
                    l
                }
                // A frozen LLM's weights are `Var`s in the graph all the same: they get gradients.
                _ => c.num_parameters() as f64,
            }
        }
        (Trainable::Full, _) => {
            add(&format!("{what} (f32)"), 4.0 * copies * p, Device, Resident);
            copies * p
        }
        (Trainable::Frozen, _) => {
            add(&format!("weights ({}, not trained)", dtype_name(target.lora_base_bytes)), target.lora_base_bytes * p, Device, Resident);
            0.0
        }
        (Trainable::Lora { rank }, Arch::Decoder(c)) => {
            let l = lora_parameters(c, rank) as f64;
            add(&format!("frozen base ({})", dtype_name(target.lora_base_bytes)), target.lora_base_bytes * p, Device, Resident);
            add(&format!("LoRA r={rank} adapters (f32)"), 4.0 * l, Device, Resident);
            l
        }
        // No encoder stage trains LoRA; count it as a full fine-tune.
        (Trainable::Lora { .. }, Arch::Encoder(_)) => {
            add("weights (f32)", 4.0 * p, Device, Resident);
            p
        }
    };
    let (b, s) = (needs.micro_batch, needs.seq);
    let training = needs.trainable != Trainable::Frozen && b * s > 0;
    // The image side adds its own gradients; its trained parts count for AdamW's state.
    let optimized = match arch {
        Arch::Vlm(v, c) => {
            let frozen_llm = needs.vision_frozen.iter().any(|f| f == "llm") && needs.trainable == Trainable::Full;
            let llm = if frozen_llm { 0.0 } else { trained.min(c.num_parameters() as f64) };
            let (costs, image_side) = super::vision::parts(needs, v, training);
            for (name, bytes, when) in costs {
                add(&name, bytes, Device, if when == super::vision::When::Train { Train } else { Sample });
            }
            llm + image_side
        }
        _ => trained,
    };
    add("gradients (f32)", 4.0 * trained, Device, Train);
    add("AdamW moments m, v (f32)", 8.0 * optimized, Host, Resident);
    if needs.accumulates {
        add("gradient accumulator (f32, several micro-batches a step)", 4.0 * optimized, Host, Train);
    }
    if let Some(layers) = needs.z_head_layers {
        let z = z_head_parameters(arch.hidden_size(), layers) as f64;
        add(&format!("Z head, {layers} layers (weights, gradients)"), 8.0 * z, Device, Resident);
        add("Z head AdamW moments", 8.0 * z, Host, Resident);
    }
    if needs.reference {
        add("frozen reference (f32)", 4.0 * p, Device, Resident);
    }
    match arch {
        Arch::Decoder(c) | Arch::Vlm(_, c) => {
            let copies = logit_copies(target.gpu);
            let act = train_activation_elements_with(c, b, s, copies);
            let logits = copies * (b * s * c.vocab_size) as f64;
            let act_bytes = match (needs.trainable, arch) {
                (Trainable::Full | Trainable::Frozen, _) | (_, Arch::Vlm(..)) => 4.0,
                (Trainable::Lora { .. }, _) => target.lora_base_bytes,
            };
            if training {
                add(&format!("activations, micro-batch {b} × {s} tokens"), act_bytes * (act - logits), Device, Train);
                add(&format!("logits and log-softmax copies ({copies}× B·S·V f32)"), 4.0 * logits, Device, Train);
            }
            if needs.critic {
                add("critic weights (f32)", 4.0 * p, Device, Resident);
                add("critic gradients (f32)", 4.0 * p, Device, Train);
                add("critic AdamW moments (f32)", 8.0 * p, Host, Resident);
                add("critic activations", 4.0 * (act - logits), Device, Train);
            }
            if let Some((rows, ctx)) = needs.generate {
                // K and V per layer in the weights' dtype (f32 when trained), all rows at once.
                let w = match needs.trainable {
                    Trainable::Full => 4.0,
                    Trainable::Lora { .. } | Trainable::Frozen => target.lora_base_bytes,
                };
                let kv = 2.0 * (c.num_hidden_layers * c.num_key_value_heads * c.head_dim) as f64 * (rows * ctx) as f64 * w;
                add(&format!("KV cache, {rows} rows × {ctx} tokens"), kv, Device, Sample);
                if !target.gpu {
                    // The cache doubles as it fills (up to its last position), and on the CPU the
                    // heap keeps what it frees (`malloc_tuning`): the outgrown buffers and the
                    // per-step copies. Measured: an eval at the small shape whose 256 rows all
                    // run to the end peaks at 3.3× its final cache, so two more caches.
                    add("KV buffers outgrown while doubling, kept by the heap (2× the cache)", 2.0 * kv, Device, Sample);
                }
                add("sampling logits (f32, rows × V, two copies)", 8.0 * (rows * c.vocab_size) as f64, Device, Sample);
            }
        }
        Arch::Encoder(c) => {
            if training {
                let act = encoder_activation_elements(c, b, s, !needs.no_token_head);
                add(&format!("activations, micro-batch {b} × {s} tokens"), 4.0 * act, Device, Train);
            }
        }
    }
    if let Some((rows, len)) = needs.forward {
        // 0: rows as long as the model takes, at most 1024 tokens (the text evaluation's window).
        let len = if len == 0 { arch.context().min(1024) } else { len };
        // A forward without backward, while nothing trains: the sampling phase's slot.
        add(&format!("forward without backward, {rows} rows × {len} tokens (f32)"), 4.0 * inference_forward_elements(arch, rows, len), Device, Sample);
    }
    out
}

/// Sizes for `retort model info`'s three estimates.
#[derive(Clone, Copy, Debug)]
pub struct InfoShape {
    pub infer_batch: usize,
    pub context: usize,
    pub train_batch: usize,
    pub train_seq: usize,
}

/// `retort model info`'s estimates, the same arithmetic as a stage's: inference (the weights
/// in the run's dtype, a KV cache of `infer_batch` rows × `context` tokens), a full fine-tune
/// with AdamW in f32 and LoRA r = 16 on all projections (micro-batch `train_batch` ×
/// `train_seq`, one micro-batch a step). A vision-language model's figures hold its tower and
/// projector as a sft stage's preflight counts them (every token an image token), and a fourth
/// entry gives the full fine-tune with `[stage.vision] checkpoint_tower`. Each: a title and its
/// parts.
pub fn model_info(arch: &Arch, shape: InfoShape, target: Target) -> Vec<(String, Vec<Part>)> {
    let model = String::new();
    let infer = Needs { model: model.clone(), trainable: Trainable::Frozen, generate: Some((shape.infer_batch, shape.context)), ..Default::default() };
    let train = |trainable, checkpoint| Needs {
        model: model.clone(),
        trainable,
        micro_batch: shape.train_batch,
        seq: shape.train_seq,
        vision_checkpoint: checkpoint,
        ..Default::default()
    };
    let full = format!("full fine-tuning, AdamW f32 (batch {} × seq {})", shape.train_batch, shape.train_seq);
    let mut out = vec![
        (format!("inference (batch {} × context {})", shape.infer_batch, shape.context), parts(&infer, arch, target)),
        (full.clone(), parts(&train(Trainable::Full, false), arch, target)),
        (format!("LoRA r=16, all projections (batch {} × seq {})", shape.train_batch, shape.train_seq), parts(&train(Trainable::Lora { rank: 16 }, false), arch, target)),
    ];
    if matches!(arch, Arch::Vlm(..)) {
        out.push((format!("{full}, tower checkpointed"), parts(&train(Trainable::Full, true), arch, target)));
    }
    out
}

fn dtype_name(bytes: f64) -> &'static str {
    if bytes >= 4.0 {
        "f32"
    } else {
        "bf16"
    }
}

/// Peak bytes of `place` (on the CPU pass `None`: everything is one memory): what stays
/// resident plus the larger phase.
pub fn peak(parts: &[Part], place: Option<Place>) -> f64 {
    let sum = |phase: Phase| -> f64 {
        parts.iter().filter(|p| p.phase == phase && place.is_none_or(|pl| p.place == pl)).map(|p| p.bytes).sum()
    };
    sum(Phase::Resident) + sum(Phase::Sample).max(sum(Phase::Train))
}
