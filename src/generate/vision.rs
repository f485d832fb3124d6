//! Sampling from a vision-language model: the prompt's image features are prefilled with its
//! tokens (Qwen2-VL: M-RoPE positions; LLaVA: plain ones), then decoding continues on text
//! (with each row's rope delta under M-RoPE).
//! Same sampling rules, draws and outputs as [`super::generate`].

use super::{pick_tokens, validate, Completion, FinishReason, SamplingParams, StopCheck};
use crate::model::vision::{ImagePatches, VisionLanguageModel};
use crate::model::{AttnMask, KvCache, Mode};
use crate::rng::Rng;
use candle_core::{Result, Tensor};

/// Continues each prompt (image tokens already expanded; `images[b]` are row b's images)
/// until a stop token, `stop`, or `max_new_tokens`. Prompts are left-padded into one batch.
pub fn generate_with_images(
    model: &dyn VisionLanguageModel,
    prompts: &[Vec<u32>],
    images: &[Vec<ImagePatches>],
    params: &SamplingParams,
    rng: &mut Rng,
    stop: Option<StopCheck>,
) -> Result<Vec<Completion>> {
    validate(params, prompts, model.decoder().vocab_size())?;
    let context = model.text_config().max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + params.max_new_tokens > context {
        candle_core::bail!("generate: a prompt of {longest} tokens (images included) plus max_new_tokens = {} exceeds the model's context of {context}", params.max_new_tokens);
    }
    let batch = prompts.len();
    let t = if params.greedy { 1.0 } else { params.temperature };
    let mut out: Vec<Completion> =
        (0..batch).map(|_| Completion { tokens: vec![], logprobs: vec![], entropies: vec![], finish: FinishReason::Length }).collect();
    if params.max_new_tokens == 0 {
        return Ok(out);
    }
    let decoder = model.decoder().detached();
    let device = decoder.device().clone();
    let prepared = model.inputs(prompts, images, 0).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let width = longest;
    let mut key_valid: Vec<Vec<bool>> = prompts.iter().map(|p| (0..width).map(|j| j + p.len() >= width).collect()).collect();
    let mut cache = KvCache::new(decoder.config().num_hidden_layers);
    let mut done = vec![false; batch];
    let mut input: Option<Tensor> = None;
    for step in 0..params.max_new_tokens {
        let logits = if step == 0 {
            let hidden = decoder.forward_embeds_at(&prepared.embeds.detach(), &prepared.mask, prepared.positions.as_ref(), Some(&mut cache), Mode::Infer)?;
            decoder.logits(&hidden.narrow(1, width - 1, 1)?)?.squeeze(1)?.to_vec2::<f32>()?
        } else {
            let mask = AttnMask::new(&key_valid, 1, &device)?;
            let positions = model.step_positions(&mask, &prepared.deltas).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let ids = input.as_ref().expect("set after the first step");
            let hidden = decoder.forward_embeds_at(&decoder.embed_tokens(ids)?, &mask, positions.as_ref(), Some(&mut cache), Mode::Infer)?;
            decoder.logits(&hidden)?.squeeze(1)?.to_vec2::<f32>()?
        };
        let draws: Vec<(Option<Option<f64>>, &[u32])> =
            (0..batch).map(|row| ((!done[row]).then(|| (!params.greedy).then(|| rng.f64())), super::excluded(params, out[row].tokens.len()))).collect();
        let rows: Vec<Option<&[f32]>> = logits.iter().map(|l| Some(l.as_slice())).collect();
        let picks = pick_tokens(&rows, &draws, params, t);
        let next = super::record_step(&picks, &mut out, &mut done, params, stop);
        if done.iter().all(|&d| d) {
            break;
        }
        key_valid.iter_mut().for_each(|r| r.push(true));
        input = Some(Tensor::from_vec(next, (batch, 1), &device)?);
    }
    Ok(out)
}
