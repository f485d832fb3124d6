//! Continuous batching over the CPU batch decoder ([`crate::model::decode_batch`]): up to
//! `max_batch_rows` rows decode at once, each in a slot; when a row ends, its slot takes the
//! next row (prefilled together with any other entrant of that step), so a step's work
//! follows the live rows and the total time the total tokens, not rows × the longest row.
//!
//! Each row draws from its own random stream, so its text does not depend on which rows it
//! shares the batch with: the output equals [`super::generate_static`]'s up to float rounding
//! (tested below against it).

use super::{excluded, Completion, Distribution, FinishReason, SamplingParams, StopCheck};
use crate::model::decode_batch::{BatchDecoder, RowView};
use crate::model::Decoder;
use crate::rng::Rng;
use candle_core::{DType, Result};

/// The completions, or `None` when the batch decoder cannot take this model (not f32 on the
/// CPU, or a LoRA adapter attached): the caller then uses the tensor path.
pub(super) fn generate_batched(
    decoder: &Decoder,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    rngs: &mut [Rng],
    stop: Option<StopCheck>,
) -> Result<Option<Vec<Completion>>> {
    let model = decoder.detached();
    if !model.device().is_cpu() || model.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some(weights) = model.decode_weights() else { return Ok(None) };
    let rows = prompts.len();
    let slots = match params.max_batch_rows {
        0 => rows,
        n => n.min(rows),
    };
    let capacity = prompts.iter().map(Vec::len).max().unwrap_or(0) + params.max_new_tokens;
    let Some(mut dec) = BatchDecoder::new(&weights, slots, capacity, params.bf16_weights) else { return Ok(None) };
    let t = if params.greedy { 1.0 } else { params.temperature };

    let mut out: Vec<Completion> =
        (0..rows).map(|_| Completion { tokens: vec![], logprobs: vec![], entropies: vec![], finish: FinishReason::Length }).collect();
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let mut next_row = 0;
    // Rows with a sampled token still to feed: (row, slot, token).
    let mut live: Vec<(usize, usize, u32)> = Vec::with_capacity(slots);
    // The (row, slot) of each hidden row of the step, decoded rows first, then entrants.
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(slots);
    let mut feed: Vec<(usize, u32)> = Vec::with_capacity(slots);
    let mut full_row: Vec<f32> = Vec::new();
    loop {
        order.clear();
        feed.clear();
        for &(row, slot, token) in &live {
            feed.push((slot, token));
            order.push((row, slot));
        }
        dec.step(&feed)?;
        let mut entrants: Vec<(usize, &[u32])> = Vec::new();
        while next_row < rows {
            let Some(slot) = free.pop() else { break };
            entrants.push((slot, &prompts[next_row]));
            order.push((next_row, slot));
            next_row += 1;
        }
        dec.prefill(&model, &entrants, feed.len())?;
        if order.is_empty() {
            break;
        }
        let picks = dec.head(order.len(), t, |i, view: &RowView| {
            let row = order[i].0;
            let exclude = excluded(params, out[row].tokens.len());
            let token = if params.greedy {
                view.argmax(exclude)
            } else {
                let u = rngs[row].f64();
                if params.top_k == 0 && params.top_p >= 1.0 {
                    view.sample(u, exclude)
                } else {
                    // Top-k / top-p sort the distribution: the full row, as the tensor path does.
                    view.gather(&mut full_row);
                    Distribution::new(&full_row, 1.0).sample(params.top_k, params.top_p, u, exclude)
                }
            };
            (token, view.logp(token) as f32, view.entropy() as f32)
        });
        live.clear();
        for (&(row, slot), (token, logp, entropy)) in order.iter().zip(picks) {
            let c = &mut out[row];
            c.tokens.push(token as u32);
            c.logprobs.push(logp);
            c.entropies.push(entropy);
            let finished = if params.stop_token_ids.contains(&(token as u32)) {
                c.finish = FinishReason::Eos;
                true
            } else if stop.is_some_and(|f| f(&c.tokens)) {
                c.finish = FinishReason::Stop;
                true
            } else {
                c.tokens.len() >= params.max_new_tokens
            };
            if finished {
                dec.release(slot);
                free.push(slot);
            } else {
                live.push((row, slot, token as u32));
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::super::{generate, generate_static, row_streams};
    use super::*;
    use crate::model::{Model, ModelConfig};
    use candle_core::Device;

    /// Both paths on the same prompts and seed: the same tokens and finish reasons, log-probs
    /// and entropies within float tolerance.
    fn same_as_static(model: &Model, prompts: &[Vec<u32>], params: &SamplingParams, what: &str) -> Vec<Completion> {
        let fast = generate(&model.decoder, prompts, params, &mut Rng::new(11), None).unwrap();
        let mut rngs = row_streams(&mut Rng::new(11), prompts.len());
        let slow = generate_static(&model.decoder, prompts, params, &mut rngs, None).unwrap();
        assert_eq!(fast.len(), slow.len());
        for (r, (a, b)) in fast.iter().zip(&slow).enumerate() {
            assert_eq!((&a.tokens, a.finish), (&b.tokens, b.finish), "{what}: row {r}");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs).chain(a.entropies.iter().zip(&b.entropies)) {
                assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{what}: row {r}: {x} vs {y}");
            }
        }
        fast
    }

    fn model(mutate: impl FnOnce(&mut ModelConfig)) -> Model {
        let mut cfg = ModelConfig::preset("tiny", 300).unwrap();
        cfg.num_hidden_layers = 2;
        mutate(&mut cfg);
        Model::init_random(cfg, 5, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_batch_decoder_samples_what_the_tensor_path_samples() {
        // Prompts of different lengths, a repeated prompt (one prefill for two rows), a stop
        // token that ends some rows early, and fewer slots than rows: the slots of finished
        // rows take the pending ones.
        let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![4, 5], vec![1, 2, 3], vec![6, 7, 8, 9, 10, 11], vec![12], vec![4, 5], vec![9; 9]];
        let qwen = model(|_| {});
        let base = SamplingParams { temperature: 0.9, max_new_tokens: 20, stop_token_ids: vec![3, 17, 40, 77], ..Default::default() };
        let all = same_as_static(&qwen, &prompts, &base, "all rows at once");
        assert!(all.iter().any(|c| c.finish == FinishReason::Eos) && all.iter().any(|c| c.finish == FinishReason::Length), "both ways to end occur");
        let two = same_as_static(&qwen, &prompts, &SamplingParams { max_batch_rows: 2, ..base.clone() }, "two slots");
        for (a, b) in all.iter().zip(&two) {
            assert_eq!(a.tokens, b.tokens, "the slot a row decodes in does not change its text");
        }
        same_as_static(&qwen, &prompts, &SamplingParams { greedy: true, ..base.clone() }, "greedy");
        same_as_static(&qwen, &prompts, &SamplingParams { top_k: 20, top_p: 0.9, max_batch_rows: 3, ..base.clone() }, "top-k, top-p");
        // min_new_tokens: no stop token before it, yet the log-probs are the full distribution's.
        let forced = same_as_static(&qwen, &prompts, &SamplingParams { min_new_tokens: 20, max_batch_rows: 4, ..base.clone() }, "min_new_tokens");
        assert!(forced.iter().all(|c| c.tokens.len() == 20 && c.finish == FinishReason::Length));
        // Llama-like (no biases, untied head, llama3 rope) and qwen3-like (q/k norms) blocks.
        let llama = model(|c| {
            c.qkv_bias = false;
            c.tie_word_embeddings = false;
            c.num_key_value_heads = 1;
            c.rope_scaling = Some(crate::model::RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 16 });
        });
        same_as_static(&llama, &prompts, &SamplingParams { max_batch_rows: 5, ..base.clone() }, "llama");
        let qwen3 = model(|c| {
            c.qk_norm = true;
            c.qkv_bias = false;
        });
        same_as_static(&qwen3, &prompts, &base, "qk norm");
        // Odd sizes for the decode matmul kernels (the tiled one where the CPU has AVX-512):
        // hidden 52 and intermediate 37 (not multiples of the 16-float vector: masked tails),
        // head_dim 26, a vocabulary of 301 (off the 4-row tile and the 128-row head block),
        // and 16 rows whose live count falls from 16 as rows stop (every x-row grouping).
        let odd = model(|c| {
            c.hidden_size = 52;
            c.num_attention_heads = 2;
            c.num_key_value_heads = 1;
            c.head_dim = 26;
            c.intermediate_size = 37;
            c.vocab_size = 301;
        });
        same_as_static(&odd, &prompts, &SamplingParams { max_batch_rows: 5, ..base.clone() }, "odd sizes");
        let sixteen: Vec<Vec<u32>> = (0..16).map(|i| vec![1 + i as u32 % 9; 1 + i % 5]).collect();
        let odd16 = same_as_static(&odd, &sixteen, &base, "odd sizes, 16 rows");
        assert!(odd16.iter().any(|c| c.finish == FinishReason::Eos), "some rows stop early, so the live count varies");
        // More rows than the 16 the streaming kernels take: gemm for the projections, the head
        // in groups of 16.
        let many: Vec<Vec<u32>> = (0..21).map(|i| vec![1 + i as u32 % 7; 1 + i % 4]).collect();
        same_as_static(&qwen, &many, &base, "21 rows");
    }

    #[test]
    fn sampled_tokens_follow_the_model_distribution() {
        // The block-wise inverse-CDF draw against the probabilities the view reports: over
        // many one-token draws, each token's frequency matches exp(logp).
        let m = model(|c| c.vocab_size = 40);
        let prompts = vec![vec![1u32, 2]; 4000];
        let params = SamplingParams { max_new_tokens: 1, max_batch_rows: 16, ..Default::default() };
        let out = generate(&m.decoder, &prompts, &params, &mut Rng::new(3), None).unwrap();
        let mut counts = [0usize; 40];
        let mut p = [0f64; 40];
        for c in &out {
            counts[c.tokens[0] as usize] += 1;
            p[c.tokens[0] as usize] = (c.logprobs[0] as f64).exp();
        }
        for (tok, &n) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
            let want = p[tok] * 4000.0;
            assert!((n as f64 - want).abs() < 4.0 * want.sqrt() + 3.0, "token {tok}: {n} draws, expected {want:.1}");
        }
    }
}
