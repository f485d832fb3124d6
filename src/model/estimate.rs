//! The counts behind the memory estimates of a decoder config: LoRA's adapter parameters and
//! the activations a training forward keeps. The estimates themselves (the parts of a stage,
//! and `retort model info`'s inference / full / LoRA figures) are `crate::preflight::plan`'s.

use super::ModelConfig;

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
}
