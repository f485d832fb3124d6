//! Memory estimates for a model config: inference (weights + KV cache), full fine-tuning with
//! AdamW, and LoRA. `retort model info` prints them; a training stage's preflight can compare
//! them with the device's memory before any work starts.

use super::ModelConfig;

/// Sizes for the memory estimates.
#[derive(Clone, Copy, Debug)]
pub struct EstimateShape {
    pub infer_batch: usize,
    pub context: usize,
    pub train_batch: usize,
    pub train_seq: usize,
}

/// One memory estimate: named parts in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub parts: Vec<(&'static str, f64)>,
}

impl Estimate {
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}

/// Parameters that LoRA with rank `r` on all seven projections (q, k, v, o, gate, up, down)
/// adds: each (out × in) projection gets A (r × in) and B (out × r), i.e. r·(in + out).
pub fn lora_parameters(cfg: &ModelConfig, r: usize) -> usize {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let per_layer = r * ((h + q) + (h + kv) + (h + kv) + (q + h) + (h + i) + (h + i) + (i + h));
    cfg.num_hidden_layers * per_layer
}

/// Activation memory (elements) that a `Mode::Train` forward keeps for backward, for a batch
/// of `b` sequences of `s` tokens, with backward's own temporaries. A coarse count of the
/// tensors our decoder builds, its coefficients fitted to measured peaks (issue 23: CPU max RSS
/// of `retort sft` on the tiny and small shapes at 8×48 to 16×512 and 4×1024 tokens, within
/// 10 % above 1 GB): per layer and token about 24 hidden-sized tensors (two RMSNorms with
/// their intermediates, q/k/v and their RoPE halves, attention output, o_proj, residuals, and
/// their gradients) and 8 intermediate-sized ones (gate, up, silu, product); plus per layer 4
/// score tensors of a·s² per sequence (scores, masked softmax, their gradients); plus about 8
/// (B, S, V) f32 copies for the logits and the log-softmax and its gradient (docs/ENGINE.md
/// §5: "several copies kept").
pub fn train_activation_elements(cfg: &ModelConfig, b: usize, s: usize) -> f64 {
    train_activation_elements_with(cfg, b, s, 8.0)
}

/// [`train_activation_elements`] with `logit_copies` (B, S, V) copies of the logits instead of
/// 8 (the fused CPU log-prob kernel keeps fewer; see `preflight::plan::logit_copies`).
pub fn train_activation_elements_with(cfg: &ModelConfig, b: usize, s: usize, logit_copies: f64) -> f64 {
    let (bs, h, i, a, v) = (
        (b * s) as f64,
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.num_attention_heads as f64,
        cfg.vocab_size as f64,
    );
    let per_layer = bs * (24.0 * h + 8.0 * i) + 4.0 * b as f64 * a * (s * s) as f64;
    cfg.num_hidden_layers as f64 * per_layer + logit_copies * bs * v
}

/// Memory estimates (bytes), with P parameters:
/// - inference, f32: weights 4P + KV cache 2 (K and V) · layers · kv_heads · head_dim ·
///   batch · context · 4 bytes;
/// - full fine-tuning with AdamW in f32: weights 4P + gradients 4P + two moments 8P +
///   retort's gradient accumulator 4P (see `train::optim::AdamW`; only allocated when a step
///   sums several micro-batches, so an upper bound) + activations
///   (`train_activation_elements` · 4 bytes);
/// - LoRA r = 16 on all projections: frozen base in bf16 2P + adapters, their gradients, two
///   moments and accumulator in f32 (20 bytes per adapter parameter) + activations, the
///   decoder ones in bf16 (2 bytes) and the (B, S, V) logit copies in f32 (the decoder casts
///   logits to f32).
pub fn estimate_memory(cfg: &ModelConfig, shape: EstimateShape) -> (Estimate, Estimate, Estimate) {
    let p = cfg.num_parameters() as f64;
    let kv = 2.0
        * (cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * shape.infer_batch * shape.context) as f64
        * 4.0;
    let inference = Estimate { parts: vec![("weights (f32)", 4.0 * p), ("KV cache (f32)", kv)] };
    let act = train_activation_elements(cfg, shape.train_batch, shape.train_seq);
    let full = Estimate {
        parts: vec![
            ("weights (f32)", 4.0 * p),
            ("gradients (f32)", 4.0 * p),
            ("AdamW moments m, v (f32)", 8.0 * p),
            ("AdamW gradient accumulator (f32)", 4.0 * p),
            ("activations (f32)", 4.0 * act),
        ],
    };
    let lora_p = lora_parameters(cfg, 16) as f64;
    let logits = 8.0 * (shape.train_batch * shape.train_seq * cfg.vocab_size) as f64;
    let lora = Estimate {
        parts: vec![
            ("frozen base (bf16)", 2.0 * p),
            ("adapters r=16 + grads + AdamW state (f32)", 20.0 * lora_p),
            ("activations (bf16; logits f32)", 2.0 * (act - logits) + 4.0 * logits),
        ],
    };
    (inference, full, lora)
}

/// Bytes as GiB or MiB, whichever reads better.
pub fn human_bytes(b: f64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_parameter_count_by_hand() {
        // tiny: h 128, q 128, kv 64, i 384, 4 layers, r 16.
        let cfg = ModelConfig::preset("tiny", 99).unwrap();
        let per_layer = 16 * ((128 + 128) + 2 * (128 + 64) + (128 + 128) + 2 * (128 + 384) + (384 + 128));
        assert_eq!(lora_parameters(&cfg, 16), 4 * per_layer);
        // Qwen2.5-0.5B with r=16 on all projections: 8,798,208 adapter parameters (peft's count).
        let q = ModelConfig::preset("qwen2.5-0.5b", 0).unwrap();
        assert_eq!(lora_parameters(&q, 16), 8_798_208);
    }

    #[test]
    fn memory_estimate_parts_follow_the_formulas() {
        let cfg = ModelConfig::preset("tiny", 99).unwrap();
        let p = cfg.num_parameters() as f64;
        let shape = EstimateShape { infer_batch: 2, context: 100, train_batch: 8, train_seq: 128 };
        let (inf, full, lora) = estimate_memory(&cfg, shape);
        // KV: 2 · 4 layers · 2 kv heads · 32 head_dim · 2 · 100 · 4 bytes.
        assert_eq!(inf.parts[1].1, (2 * 4 * 2 * 32 * 2 * 100 * 4) as f64);
        assert_eq!(inf.total(), 4.0 * p + inf.parts[1].1);
        let act = train_activation_elements(&cfg, 8, 128);
        assert_eq!(full.total(), 20.0 * p + 4.0 * act);
        assert!(lora.total() < full.total());
        assert_eq!(lora.parts[0].1, 2.0 * p);
    }
}
