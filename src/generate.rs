//! Batched sampling with a KV cache: left-padded prompts of different lengths, per-row
//! termination, and for every sampled token its log-probability and the entropy of the
//! distribution it was drawn from (what RL rollouts record; docs/METHODS.md §8.4 `actor/entropy`).
//!
//! Sampling happens on the CPU from f32 logits with the caller's seeded `Rng`, so a seed
//! fixes the output. The forward passes use fused kernels (`Mode::Infer`) on detached
//! weights, so no autograd graph stays alive during rollouts (docs/ENGINE.md §2.7).
//!
//! [`grade`]: n samples per problem of a problem set, decoded and verified (the loop the
//! eval, sft and rl stages share).

mod batched;
pub mod grade;
pub mod tools;
pub mod vision;

use crate::model::{distinct_rows, AttnMask, Decoder, KvCache, Mode};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Per-row stop check on the tokens generated so far (e.g. "a stop string was decoded").
pub type StopCheck<'a> = &'a dyn Fn(&[u32]) -> bool;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature (> 0). Ignored when `greedy`.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of most likely tokens with mass ≥ top_p (1 = off).
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Always take the most likely token; log-probs and entropies are then reported at T = 1.
    pub greedy: bool,
    pub max_new_tokens: usize,
    /// Tokens that end a row (typically the config's eos ids); the stop token is kept.
    pub stop_token_ids: Vec<u32>,
    /// Stop tokens are not drawn before this many new tokens (transformers' `min_new_tokens`);
    /// the reported log-probs and entropies stay those of the full distribution.
    pub min_new_tokens: usize,
    /// Rows decoded at once (0: all). With fewer slots than rows, a finished row's slot takes
    /// the next row (continuous batching on the CPU decoder); the output is the same.
    pub max_batch_rows: usize,
    /// Read the weights' matmuls as bf16 copies on the CPU batch decoder (`rollout_dtype =
    /// "bf16"`; x and sums stay f32). Ignored where that decoder or the CPU's AVX-512 is not
    /// there: the f32 weights are used.
    pub bf16_weights: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, greedy: false, max_new_tokens: 64, stop_token_ids: vec![], min_new_tokens: 0, max_batch_rows: 0, bf16_weights: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// Sampled one of `stop_token_ids`.
    Eos,
    /// The caller's stop check returned true (e.g. a stop string appeared).
    Stop,
    /// Reached `max_new_tokens`.
    Length,
}

/// One row's continuation. `logprobs[i]` is `log softmax(z/T)[tokens[i]]` and `entropies[i]`
/// the entropy of the full softmax(z/T), both before any top-k/top-p truncation.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub entropies: Vec<f32>,
    pub finish: FinishReason,
}

/// Below this many logits per step (batch × vocabulary) rows are sampled on the calling
/// thread: handing a tiny vocabulary to the pool costs more than it saves.
const PARALLEL_SAMPLING_MIN: usize = 1 << 16;

/// Log-sum-exp, entropy and log-probs of softmax(logits / t), computed in f64.
struct Distribution {
    z: Vec<f64>,
    lse: f64,
}

impl Distribution {
    fn new(logits: &[f32], t: f64) -> Distribution {
        let z: Vec<f64> = logits.iter().map(|&x| x as f64 / t).collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
        Distribution { z, lse }
    }

    fn logp(&self, token: usize) -> f64 {
        self.z[token] - self.lse
    }

    fn entropy(&self) -> f64 {
        self.lse - self.z.iter().map(|&v| (v - self.lse).exp() * v).sum::<f64>()
    }

    /// First index of the largest logit not in `exclude` (ties go to the lowest id, like
    /// torch.argmax).
    fn argmax(&self, exclude: &[u32]) -> usize {
        let mut best: Option<usize> = None;
        for (i, &v) in self.z.iter().enumerate() {
            if !exclude.contains(&(i as u32)) && best.is_none_or(|b| v > self.z[b]) {
                best = Some(i);
            }
        }
        best.unwrap_or(0)
    }

    /// Draws from the distribution without the `exclude` tokens, restricted by top-k then
    /// top-p and renormalised, with `u` a uniform draw in [0, 1).
    fn sample(&self, top_k: usize, top_p: f64, u: f64, exclude: &[u32]) -> usize {
        let probs: Vec<f64> = self.z.iter().map(|&v| (v - self.lse).exp()).collect();
        let allowed = |i: &usize| !exclude.contains(&(*i as u32));
        let candidates: Vec<usize> = if top_k == 0 && top_p >= 1.0 {
            (0..probs.len()).filter(allowed).collect()
        } else {
            let mut order: Vec<usize> = (0..probs.len()).filter(allowed).collect();
            // Stable sort: equal probabilities keep id order, so the result is reproducible.
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            if top_k > 0 {
                order.truncate(top_k);
            }
            if top_p < 1.0 {
                let mut mass = 0.0;
                let keep = order
                    .iter()
                    .position(|&i| {
                        mass += probs[i];
                        mass >= top_p
                    })
                    .map_or(order.len(), |p| p + 1);
                order.truncate(keep);
            }
            order
        };
        let total: f64 = candidates.iter().map(|&i| probs[i]).sum();
        let mut u = u * total;
        for &i in &candidates {
            u -= probs[i];
            if u < 0.0 {
                return i;
            }
        }
        // Rounding left u ≥ 0 after the last candidate: it is the one the draw landed on.
        *candidates.last().expect("candidates keep at least one token")
    }
}

/// The token, its log-prob and the entropy for each row with logits and a draw (None: the
/// row is not sampled this step; `Some(None)`: greedy; `Some(Some(u))`: sample with u), with
/// the row's tokens that may not be drawn.
pub(crate) fn pick_tokens(logits: &[Option<&[f32]>], draws: &[(Option<Option<f64>>, &[u32])], params: &SamplingParams, t: f64) -> Vec<Option<(usize, f32, f32)>> {
    let pick = |(row_logits, (draw, exclude)): (&Option<&[f32]>, &(Option<Option<f64>>, &[u32]))| -> Option<(usize, f32, f32)> {
        let (row_logits, draw) = ((*row_logits)?, (*draw)?);
        let dist = Distribution::new(row_logits, t);
        let token = match draw {
            Some(u) => dist.sample(params.top_k, params.top_p, u, exclude),
            None => dist.argmax(exclude),
        };
        Some((token, dist.logp(token) as f32, dist.entropy() as f32))
    };
    let vocab = logits.iter().flatten().map(|l| l.len()).next().unwrap_or(0);
    if logits.len() * vocab >= PARALLEL_SAMPLING_MIN {
        logits.par_iter().zip(draws.par_iter()).map(pick).collect()
    } else {
        logits.iter().zip(draws.iter()).map(pick).collect()
    }
}

/// A last line of defence (callers check their data first, naming the row): positions past
/// the context were never trained, and the cost of attention grows with the square.
fn check_context(decoder: &Decoder, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<()> {
    let context = decoder.config().max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + params.max_new_tokens > context {
        candle_core::bail!(
            "generate: a prompt of {longest} tokens plus max_new_tokens = {} exceeds the model's context of {context} tokens",
            params.max_new_tokens
        );
    }
    Ok(())
}

pub(crate) fn validate(params: &SamplingParams, prompts: &[Vec<u32>], vocab: usize) -> Result<()> {
    if !params.greedy && (params.temperature.is_nan() || params.temperature <= 0.0) {
        candle_core::bail!("sampling temperature must be > 0 (got {}); use greedy for argmax decoding", params.temperature);
    }
    if params.top_p.is_nan() || params.top_p <= 0.0 || params.top_p > 1.0 {
        candle_core::bail!("top_p must be in (0, 1], got {}", params.top_p);
    }
    if prompts.is_empty() {
        candle_core::bail!("generate: no prompts");
    }
    for (row, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            candle_core::bail!("generate: prompt {row} is empty; start it with at least one token (e.g. BOS)");
        }
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("generate: prompt {row} holds token id {bad}, outside the vocabulary of {vocab}");
        }
    }
    Ok(())
}

/// One random stream per row, from one draw of `rng`: a row's tokens then depend on its own
/// draws only, whichever rows share its batch or slot (so continuous batching and the
/// rectangular batch give the same text).
fn row_streams(rng: &mut Rng, rows: usize) -> Vec<Rng> {
    let base = rng.next_u64();
    (0..rows).map(|r| Rng::derive(base, &format!("row/{r}"))).collect()
}

/// Appends each sampled row's token, log-prob and entropy to its completion (`None`: the row
/// had finished before this step), marks the rows that stop on it, and returns every row's
/// next input token (0 for rows not sampled).
pub(crate) fn record_step(picks: &[Option<(usize, f32, f32)>], out: &mut [Completion], done: &mut [bool], params: &SamplingParams, stop: Option<StopCheck>) -> Vec<u32> {
    let mut next = vec![0u32; picks.len()];
    for (row, pick) in picks.iter().enumerate() {
        let Some((token, logp, entropy)) = *pick else { continue };
        let c = &mut out[row];
        c.tokens.push(token as u32);
        c.logprobs.push(logp);
        c.entropies.push(entropy);
        next[row] = token as u32;
        if params.stop_token_ids.contains(&(token as u32)) {
            c.finish = FinishReason::Eos;
            done[row] = true;
        } else if stop.is_some_and(|f| f(&c.tokens)) {
            c.finish = FinishReason::Stop;
            done[row] = true;
        }
    }
    next
}

/// Stop tokens a row may not draw yet (`min_new_tokens`).
fn excluded<'p>(params: &'p SamplingParams, generated: usize) -> &'p [u32] {
    if generated < params.min_new_tokens {
        &params.stop_token_ids
    } else {
        &[]
    }
}

/// Continues each prompt until a stop token, `stop(tokens_so_far)` returning true, or
/// `max_new_tokens`. The same `rng` state gives the same output: each row draws from its own
/// stream. f32 weights on the CPU decode through the batch decoder (`model::decode_batch`,
/// continuous batching, fused head and sampler); other devices and dtypes, and LoRA
/// adapters, through the rectangular tensor path ([`generate_static`]), which gives the same
/// tokens and log-probs up to float rounding.
pub fn generate(
    decoder: &Decoder,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    rng: &mut Rng,
    stop: Option<StopCheck>,
) -> Result<Vec<Completion>> {
    validate(params, prompts, decoder.vocab_size())?;
    check_context(decoder, prompts, params)?;
    let mut rngs = row_streams(rng, prompts.len());
    if params.max_new_tokens > 0 {
        if let Some(out) = batched::generate_batched(decoder, prompts, params, &mut rngs, stop)? {
            return Ok(out);
        }
    }
    generate_static(decoder, prompts, params, &mut rngs, stop)
}

/// The rectangular tensor path: prompts left-padded into one batch, rows that finish early
/// stop recording while the others continue; one stream per row in `rngs`.
pub(crate) fn generate_static(
    decoder: &Decoder,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    rngs: &mut [Rng],
    stop: Option<StopCheck>,
) -> Result<Vec<Completion>> {
    let model = decoder.detached();
    let device = model.device().clone();
    let batch = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let t = if params.greedy { 1.0 } else { params.temperature };

    let mut out: Vec<Completion> = (0..batch)
        .map(|_| Completion { tokens: vec![], logprobs: vec![], entropies: vec![], finish: FinishReason::Length })
        .collect();
    if params.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut done = vec![false; batch];
    let mut key_valid: Vec<Vec<bool>> = prompts.iter().map(|p| (0..width).map(|j| j + p.len() >= width).collect()).collect();
    // The prefill runs once per distinct prompt (a group of n samples shares one); the cache
    // is then spread to every row.
    let (distinct, of_row) = distinct_rows(prompts);
    let padded: Vec<u32> =
        distinct.iter().flat_map(|&i| std::iter::repeat_n(0, width - prompts[i].len()).chain(prompts[i].iter().copied())).collect();
    let mut input = Tensor::from_vec(padded, (distinct.len(), width), &device)?;
    // The cache doubles as it fills, but never past the last position this generation reaches.
    let mut cache = KvCache::with_limit(model.config().num_hidden_layers, width + params.max_new_tokens);

    for step in 0..params.max_new_tokens {
        let logits = if step == 0 {
            let prefill_valid: Vec<Vec<bool>> = distinct.iter().map(|&i| key_valid[i].clone()).collect();
            let mask = AttnMask::new(&prefill_valid, width, &device)?;
            let hidden = model.forward_hidden(&input, &mask, Some(&mut cache), Mode::Infer)?;
            let last = hidden.narrow(1, width - 1, 1)?;
            let per_prompt = model.logits(&last)?.squeeze(1)?.to_vec2::<f32>()?;
            if distinct.len() < batch {
                cache.select_rows(&of_row)?;
            }
            of_row.iter().map(|&u| per_prompt[u as usize].clone()).collect::<Vec<Vec<f32>>>()
        } else {
            let mask = AttnMask::new(&key_valid, 1, &device)?;
            let hidden = model.forward_hidden(&input, &mask, Some(&mut cache), Mode::Infer)?;
            model.logits(&hidden)?.squeeze(1)?.to_vec2::<f32>()?
        };

        // One uniform draw per live row from its own stream; then the rows' softmax work, which at a 152k vocabulary is a few ms per
        // row, runs in parallel. Per row: None when finished, Some(None) for greedy,
        // Some(Some(u)) to sample with u.
        let draws: Vec<(Option<Option<f64>>, &[u32])> = (0..batch)
            .map(|row| ((!done[row]).then(|| (!params.greedy).then(|| rngs[row].f64())), excluded(params, out[row].tokens.len())))
            .collect();
        let rows: Vec<Option<&[f32]>> = logits.iter().map(|l| Some(l.as_slice())).collect();
        let picks = pick_tokens(&rows, &draws, params, t);
        let next = record_step(&picks, &mut out, &mut done, params, stop);
        if done.iter().all(|&d| d) {
            break;
        }
        // Finished rows keep decoding a filler token so the batch stays rectangular; their
        // outputs are no longer recorded and rows never attend to each other.
        key_valid.iter_mut().for_each(|r| r.push(true));
        input = Tensor::from_vec(next, (batch, 1), &device)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_matches_hand_values() {
        let d = Distribution::new(&[0.0, 2f32.ln(), 3f32.ln()], 1.0);
        assert!((d.logp(2) - 0.5f64.ln()).abs() < 1e-7);
        let h = -(1.0 / 6.0 * (1.0f64 / 6.0).ln() + 2.0 / 6.0 * (2.0f64 / 6.0).ln() + 0.5 * 0.5f64.ln());
        assert!((d.entropy() - h).abs() < 1e-7);
        assert_eq!(d.argmax(&[]), 2);
        assert_eq!(d.argmax(&[2]), 1, "an excluded token is never the argmax");
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        // probs 0.1, 0.2, 0.3, 0.4
        let logits: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        let d = Distribution::new(&logits, 1.0);
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[d.sample(2, 1.0, rng.f64(), &[])] += 1;
        }
        assert_eq!(counts[0] + counts[1], 0, "top_k=2 keeps ids 3 and 2: {counts:?}");
        // 0.4/0.7 of draws should be id 3.
        assert!((counts[3] as f64 / 4000.0 - 0.4 / 0.7).abs() < 0.03, "{counts:?}");
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[d.sample(0, 0.65, rng.f64(), &[])] += 1;
        }
        // 0.4 < 0.65 ≤ 0.4 + 0.3: nucleus is {3, 2}.
        assert_eq!(counts[0] + counts[1], 0, "{counts:?}");
        let mut counts = [0usize; 4];
        for _ in 0..8000 {
            counts[d.sample(0, 1.0, rng.f64(), &[])] += 1;
        }
        for (i, p) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            assert!((counts[i] as f64 / 8000.0 - p).abs() < 0.02, "{counts:?}");
        }
    }
}
