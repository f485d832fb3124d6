//! Scoring continuations after prompts in one forward per distinct prompt: the RL reference
//! pass and update score rollouts with it, and eval scores multiple-choice options with it.
//! (Moved here from `train::rl::batch` so that eval does not depend on train.)

use crate::model::{AttnMask, Decoder, KvCache, Mode};
use anyhow::Result;
use candle_core::Tensor;
use std::ops::Range;

/// Log-probs and entropies `(B, T)` of each row's response under `softmax(z / temperature)`,
/// for rows `rows` of prompts and responses, with each distinct prompt run through the model
/// once: a prefill of the distinct prompts fills a KV cache, which is spread to every row,
/// and then only the responses go through the model. A GRPO group of n responses shares its
/// prompt, so at 8 × 8 rollouts of ~24 prompt and ~12 response tokens this is ~2.4× fewer
/// tokens. Differentiable in `Mode::Train` (the prompt's keys, values and last hidden state
/// collect the gradients of all the rows that share it).
///
/// Response token j is predicted at position P − 1 + j (prompts left-padded to P,
/// responses right-padded to T): j = 0 by the
/// prompt's last position, j ≥ 1 by the response's position j − 1.
pub fn score_shared_prompts(
    decoder: &Decoder,
    (prompts, responses): (&[Vec<u32>], &[Vec<u32>]),
    rows: Range<usize>,
    (p, t): (usize, usize),
    pad: u32,
    temperature: f64,
    mode: Mode,
) -> Result<SharedScore> {
    let device = decoder.device();
    let b = rows.len();
    let (prompts, responses) = (&prompts[rows.clone()], &responses[rows]);
    let (distinct, of_row) = crate::model::distinct_rows(prompts);
    // Left padding: key j of a prompt row is real when j ≥ P − its length.
    let prompt_valid: Vec<Vec<bool>> = prompts.iter().map(|q| (0..p).map(|j| j + q.len() >= p).collect()).collect();
    let ids: Vec<u32> = distinct.iter().flat_map(|&i| std::iter::repeat_n(pad, p - prompts[i].len()).chain(prompts[i].iter().copied())).collect();
    let valid: Vec<Vec<bool>> = distinct.iter().map(|&i| prompt_valid[i].clone()).collect();
    let mut cache = KvCache::new(decoder.config().num_hidden_layers);
    let prefill = decoder.forward_hidden(&Tensor::from_vec(ids, (distinct.len(), p), device)?, &AttnMask::new(&valid, p, device)?, Some(&mut cache), mode)?;
    let index = Tensor::new(of_row.as_slice(), device)?;
    let prompt_hidden = prefill.index_select(&index, 0)?; // (B, P, H)
    let first = prompt_hidden.narrow(1, p - 1, 1)?;
    let scored = if t > 1 {
        cache.select_rows(&of_row)?;
        // Responses 0..T−1 as queries after the cached prompt; padding past a row's end.
        let mut ids = vec![pad; b * (t - 1)];
        let mut valid = Vec::with_capacity(b);
        for (i, resp) in responses.iter().enumerate() {
            for (j, &tok) in resp.iter().take(t - 1).enumerate() {
                ids[i * (t - 1) + j] = tok;
            }
            let mut v = prompt_valid[i].clone();
            v.extend((0..t - 1).map(|j| j < resp.len()));
            valid.push(v);
        }
        let rest = decoder.forward_hidden(&Tensor::from_vec(ids, (b, t - 1), device)?, &AttnMask::new(&valid, t - 1, device)?, Some(&mut cache), mode)?;
        Tensor::cat(&[&first, &rest], 1)?
    } else {
        first
    };
    let mut targets = vec![pad; b * t];
    let mut mask = vec![0f32; b * t];
    for (i, resp) in responses.iter().enumerate() {
        targets[i * t..i * t + resp.len()].copy_from_slice(resp);
        mask[i * t..i * t + resp.len()].iter_mut().for_each(|m| *m = 1.0);
    }
    let (logp, entropy) = decoder.token_logprobs(&scored, &Tensor::from_vec(targets, (b, t), device)?, temperature)?;
    let prompt_mask: Vec<f32> = prompt_valid.iter().flatten().map(|&v| v as u8 as f32).collect();
    Ok(SharedScore {
        logp,
        entropy,
        prompt_hidden,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        prompt_mask: Tensor::from_vec(prompt_mask, (b, p), device)?,
    })
}

/// What [`score_shared_prompts`] returns for B rows.
pub struct SharedScore {
    /// (B, T) log-probs and entropies of the response tokens.
    pub logp: Tensor,
    pub entropy: Tensor,
    /// (B, P, H) final hidden states of the prompt positions (FlowRL pools them).
    pub prompt_hidden: Tensor,
    /// (B, T) f32: 1 on response tokens (as [`SeqBatch::mask`]).
    pub mask: Tensor,
    /// (B, P) f32: 1 on real prompt tokens (for FlowRL's pooled prompt state, §4.2).
    pub prompt_mask: Tensor,
}
