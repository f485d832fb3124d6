//! ToEdit: token-level editing of human text with a prior LM (Zhu et al., ICML 2025;
//! docs/METHODS.md §S1.2, the spec's §1.2). Per document:
//!
//! 1. Tokenize with the prior's tokenizer (its special tokens in front, as the reference's
//!    `tokenizer(text)` does). With `truncate`, keep only the first `max_len` tokens (the
//!    reference: 2,048); otherwise cut the document into windows of `max_len` tokens
//!    ([`windows`]) so every token after the first is scored exactly once, and keep it whole.
//! 2. One teacher-forced pass of the prior over each window. For every scored position `i`
//!    keep only what the decision needs ([`summarize`]): the full-vocabulary log-prob of the
//!    actual token `lp_i = z[x_i] − logsumexp(z)` and the top-k `(id, log-prob)` pairs, found
//!    by a partial selection (no sort of the vocabulary, no (B, L, V) log-softmax kept).
//! 3. Decide every position `i ≥ 1` from that single pass ([`decide`]): the original prefix
//!    only, never re-scored after an earlier edit. `p_i = exp(lp_i)`.
//!    - `up_revise`: if `p_i ≥ threshold`, replace `x_i` by a draw from the candidate set
//!      `C_i` (the top-k plus `x_i` when it is not among them, [`candidates`]) with
//!      probabilities `softmax(lp_c / β)` over `C_i` ([`draw_weights`]); `x_i` can be drawn
//!      again. Else keep.
//!    - `low_drop_up_revise`: as `up_revise`; else if `p_i < drop_threshold`, delete `x_i`.
//!    - `filtering`: keep `x_i` iff `p_i ≥ drop_threshold` (no resampling).
//!
//!    Position 0 has no prediction and is always kept.
//! 4. Decode the kept / replaced ids with special tokens skipped.
//!
//! The draws come from a stream seeded by the run's seed and the document's place in the
//! corpus ([`document_rng`]), consumed in position order, only at eligible positions: the
//! edit of a document does not depend on the batch it was scored in, and a resumed run
//! makes the same edits.
//!
//! Eligibility is `p ≥ threshold` (the and the paper's "p ≥ 0.99"); the reference
//! code writes `> 0.99`. The two differ only for a probability of exactly the threshold.

pub mod method;
#[cfg(test)]
mod tests;

use crate::model::{AttnMask, Decoder, Mode};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::eval::text::ppl::{windows, Window};

/// What happens to the tokens the prior is sure of (and to those it finds unlikely).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Resample the tokens with `p ≥ threshold`.
    #[default]
    UpRevise,
    /// Resample the tokens with `p ≥ threshold`, delete those with `p < drop_threshold`.
    LowDropUpRevise,
    /// Delete the tokens with `p < drop_threshold`; resample nothing.
    Filtering,
}

/// The decision rule's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EditRule {
    pub strategy: Strategy,
    /// Eligible for resampling when `p ≥ threshold`.
    pub threshold: f64,
    /// Deleted (`low_drop_up_revise`, `filtering`) when `p < drop_threshold`.
    pub drop_threshold: f64,
    /// Size of the candidate set before the actual token is added.
    pub top_k: usize,
    /// Temperature of the draw over the candidates.
    pub beta: f64,
}

impl Default for EditRule {
    fn default() -> Self {
        EditRule { strategy: Strategy::UpRevise, threshold: 0.99, drop_threshold: 0.001, top_k: 8, beta: 1.0 }
    }
}

/// What the prior said at one position: the actual token's full-vocabulary log-prob and the
/// top-k tokens with theirs, by log-prob descending (ties: the smaller id first).
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub lp: f32,
    pub top: Vec<(u32, f32)>,
}

/// [`Scored`] of one row of logits: `lp = z[actual] − logsumexp(z)` and the top-k by a single
/// scan that keeps the k largest seen so far (O(V) for small k; the vocabulary is not sorted).
pub fn summarize(logits: &[f32], actual: u32, k: usize) -> Scored {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| ((z - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp_of = |z: f32| (z as f64 - lse) as f32;
    // `best` holds at most k (logit, id), descending; a new value enters only if it beats the
    // smallest (a strict >, so among equal logits the smaller id stays).
    let k = k.min(logits.len());
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (id, &z) in logits.iter().enumerate() {
        if best.len() == k {
            if k == 0 || z <= best[k - 1].0 {
                continue;
            }
            best.pop();
        }
        let at = best.partition_point(|&(b, _)| b >= z);
        best.insert(at, (z, id as u32));
    }
    Scored { lp: lp_of(logits[actual as usize]), top: best.into_iter().map(|(z, id)| (id, lp_of(z))).collect() }
}

/// The candidate set `C_i`: the top-k, plus the actual token (with its log-prob) when it is
/// not among them, so `|C_i| ∈ {k, k+1}` (what vLLM's `prompt_logprobs = k` returns).
pub fn candidates(s: &Scored, actual: u32) -> Vec<(u32, f32)> {
    let mut c = s.top.clone();
    if !c.iter().any(|&(id, _)| id == actual) {
        c.push((actual, s.lp));
    }
    c
}

/// `softmax(lp_c / β)` over the candidates, i.e. `p_c^{1/β} / Σ_{c'} p_{c'}^{1/β}`.
pub fn draw_weights(cands: &[(u32, f32)], beta: f64) -> Vec<f64> {
    let max = cands.iter().map(|&(_, lp)| lp as f64 / beta).fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = cands.iter().map(|&(_, lp)| (lp as f64 / beta - max).exp()).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|x| x / total).collect()
}

/// What becomes of one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Resampled (the id can equal the original one).
    Resample(u32),
    Drop,
}

/// The rule at one position `i ≥ 1`. Draws from `rng` only when the token is eligible.
pub fn decide(rule: &EditRule, s: &Scored, actual: u32, rng: &mut Rng) -> Decision {
    let p = (s.lp as f64).exp();
    let eligible = p >= rule.threshold;
    let low = p < rule.drop_threshold;
    match rule.strategy {
        Strategy::UpRevise | Strategy::LowDropUpRevise if eligible => {
            let cands = candidates(s, actual);
            Decision::Resample(cands[rng.weighted(&draw_weights(&cands, rule.beta))].0)
        }
        Strategy::LowDropUpRevise | Strategy::Filtering if low => Decision::Drop,
        _ => Decision::Keep,
    }
}

/// Per-document (and summed) counts. `scored` = tokens with a prediction (all but the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditCounts {
    /// Tokens of the (possibly truncated) input.
    pub tokens: u64,
    pub scored: u64,
    /// `p ≥ threshold`, whatever the strategy does with them.
    pub eligible: u64,
    /// Resampled to another id.
    pub realized: u64,
    pub dropped: u64,
}

impl EditCounts {
    pub fn add(&mut self, o: &EditCounts) {
        self.tokens += o.tokens;
        self.scored += o.scored;
        self.eligible += o.eligible;
        self.realized += o.realized;
        self.dropped += o.dropped;
    }
    /// Fractions of the scored tokens.
    pub fn fractions(&self) -> (f64, f64, f64) {
        let n = self.scored.max(1) as f64;
        (self.eligible as f64 / n, self.realized as f64 / n, self.dropped as f64 / n)
    }
}

/// One changed position, for the dry run: `to = None` is a deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    pub pos: usize,
    pub from: u32,
    pub to: Option<u32>,
    pub p: f64,
}

/// The result of editing one document.
#[derive(Clone, Debug, PartialEq)]
pub struct Edited {
    pub ids: Vec<u32>,
    pub counts: EditCounts,
    pub edits: Vec<Edit>,
}

/// Apply the rule to a document: `scored[i − 1]` is the prior's view of position `i`
/// (`scored.len() == ids.len() − 1`, or 0 for an empty document). Position 0 is kept.
pub fn edit_document(ids: &[u32], scored: &[Scored], rule: &EditRule, rng: &mut Rng) -> Edited {
    assert_eq!(scored.len(), ids.len().saturating_sub(1), "one score per position after the first");
    let mut counts = EditCounts { tokens: ids.len() as u64, scored: scored.len() as u64, ..Default::default() };
    let mut out = Vec::with_capacity(ids.len());
    let mut edits = Vec::new();
    out.extend(ids.first());
    for (i, (&x, s)) in ids.iter().zip(std::iter::once(None).chain(scored.iter().map(Some))).enumerate().skip(1) {
        let s = s.expect("positions ≥ 1 are scored");
        let p = (s.lp as f64).exp();
        counts.eligible += (p >= rule.threshold) as u64;
        match decide(rule, s, x, rng) {
            Decision::Keep => out.push(x),
            Decision::Resample(y) => {
                out.push(y);
                if y != x {
                    counts.realized += 1;
                    edits.push(Edit { pos: i, from: x, to: Some(y), p });
                }
            }
            Decision::Drop => {
                counts.dropped += 1;
                edits.push(Edit { pos: i, from: x, to: None, p });
            }
        }
    }
    Edited { ids: out, counts, edits }
}

/// The draw stream of one document in one generation: from the run's seed and the
/// document's index in the corpus only.
pub fn document_rng(run_seed: u64, doc_id: u64, generation: usize) -> Rng {
    Rng::derive(run_seed, &format!("toedit/doc/{doc_id}/gen/{generation}"))
}

/// Positions of logits computed per matrix product: bounds the (rows, V) f32 block held at
/// once (64 × 152k for Qwen2 ≈ 39 MB).
const LOGIT_ROWS: usize = 64;

/// The prior's [`Scored`] for positions `1..n` of each document, scored in windows of
/// `max_len` tokens starting `stride` apart (each token after the first scored once, by the
/// first window that reaches it), `batch_size` windows per forward.
pub fn score_documents(decoder: &Decoder, docs: &[&[u32]], max_len: usize, stride: usize, batch_size: usize, top_k: usize) -> Result<Vec<Vec<Scored>>> {
    let decoder = &decoder.detached();
    let mut out: Vec<Vec<Scored>> = docs.iter().map(|d| Vec::with_capacity(d.len().saturating_sub(1))).collect();
    // (document, window), in document then window order: the results come back in order.
    let jobs: Vec<(usize, Window)> = docs.iter().enumerate().flat_map(|(d, ids)| windows(ids.len(), max_len, stride).into_iter().map(move |w| (d, w))).collect();
    for chunk in jobs.chunks(batch_size.max(1)) {
        let rows: Vec<&[u32]> = chunk.iter().map(|(d, w)| &docs[*d][w.begin..w.end]).collect();
        let firsts: Vec<usize> = chunk.iter().map(|(_, w)| w.first - w.begin).collect();
        for ((d, _), scored) in chunk.iter().zip(score_rows(decoder, &rows, &firsts, top_k)?) {
            out[*d].extend(scored);
        }
    }
    Ok(out)
}

/// One forward over right-padded `rows`; for each row, [`Scored`] of its tokens `first..`.
fn score_rows(decoder: &Decoder, rows: &[&[u32]], firsts: &[usize], top_k: usize) -> Result<Vec<Vec<Scored>>> {
    let device = decoder.device();
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = vec![0u32; rows.len() * width];
    let mut valid = vec![vec![false; width]; rows.len()];
    // Flat (row · width + position) of each prediction we keep, and the token it predicts.
    let (mut picks, mut targets, mut owner) = (Vec::new(), Vec::new(), Vec::new());
    for (b, (row, &first)) in rows.iter().zip(firsts).enumerate() {
        ids[b * width..b * width + row.len()].copy_from_slice(row);
        valid[b][..row.len()].iter_mut().for_each(|v| *v = true);
        for i in first.max(1)..row.len() {
            picks.push((b * width + i - 1) as u32); // position i − 1 predicts token i
            targets.push(row[i]);
            owner.push(b);
        }
    }
    let mut out: Vec<Vec<Scored>> = rows.iter().map(|_| Vec::new()).collect();
    if picks.is_empty() {
        return Ok(out);
    }
    let input = Tensor::from_vec(ids, (rows.len(), width), device)?;
    let hidden = decoder.forward_hidden(&input, &AttnMask::new(&valid, width, device)?, None, Mode::Infer)?;
    let hidden = hidden.reshape((rows.len() * width, decoder.hidden_size()))?;
    let v = decoder.vocab_size();
    for (c, pick) in picks.chunks(LOGIT_ROWS).enumerate() {
        let h = hidden.index_select(&Tensor::new(pick, device)?, 0)?;
        let logits: Vec<f32> = decoder.logits(&h)?.flatten_all()?.to_vec1()?;
        let base = c * LOGIT_ROWS;
        let scored: Vec<Scored> = logits.par_chunks(v).enumerate().map(|(j, row)| summarize(row, targets[base + j], top_k)).collect();
        for (j, s) in scored.into_iter().enumerate() {
            out[owner[base + j]].push(s);
        }
    }
    Ok(out)
}
