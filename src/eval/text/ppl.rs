//! Perplexity of held-out text: token-weighted NLL over all documents, scored in windows.
//!
//! Each document is tokenized on its own (the tokenizer's BOS in front when it adds one, see
//! [`super::bos_prefix`]) and every token after the first is scored exactly once: with a BOS
//! the document's first real token is conditioned on it; without one, the first token has
//! nothing to be conditioned on and is not scored. A document longer than `max_len` is cut
//! into windows of `max_len` tokens that start `stride` apart (the strided method of the
//! transformers perplexity guide): a window scores only the tokens the previous window did
//! not reach, so each token sees as much left context as its window gives (at least
//! `max_len - stride` tokens once past the first window). Memory is that of `batch_size`
//! windows of `max_len` tokens, whatever the document lengths.

use super::{distribution, Distribution};
use crate::model::{AttnMask, Decoder, Mode};
use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// A slice `begin..end` of a document's tokens run through the model, whose tokens
/// `first..end` are scored (`begin < first`: a scored token always has a token before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    pub first: usize,
}

/// The windows over `n` tokens: `max_len` long, starting `stride` apart, each scoring what the
/// one before did not; together they score tokens `1..n` once each. Needs
/// `1 ≤ stride ≤ max_len` and `max_len ≥ 2` (checked by [`PplConfig::check`]).
pub fn windows(n: usize, max_len: usize, stride: usize) -> Vec<Window> {
    let mut out = Vec::new();
    let mut scored_to = 1; // token 0 has no left context
    let mut begin = 0;
    while scored_to < n {
        // With stride = max_len the next window would start on the first token it must score,
        // which then has nothing before it; start one token earlier instead.
        begin = begin.min(scored_to - 1);
        let end = (begin + max_len).min(n);
        out.push(Window { begin, end, first: scored_to.max(begin + 1) });
        scored_to = end;
        begin += stride;
    }
    out
}

/// Window length, stride and windows per forward.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PplConfig {
    pub max_len: usize,
    pub stride: usize,
    pub batch_size: usize,
}

impl PplConfig {
    pub fn check(&self) -> Result<()> {
        if self.max_len < 2 {
            bail!("max_len must be ≥ 2 tokens (a window scores the tokens after its first); got {}", self.max_len);
        }
        if self.stride == 0 || self.stride > self.max_len {
            bail!("stride must be between 1 and max_len = {} (a larger stride would leave tokens unscored); got {}", self.max_len, self.stride);
        }
        if self.batch_size == 0 {
            bail!("batch_size must be ≥ 1");
        }
        Ok(())
    }
}

/// Log-probabilities of tokens `first..ids.len()` of each row `(ids, first)` given the tokens
/// before them in the row, from one forward over the right-padded rows. `first ≥ 1`.
pub fn score_rows(decoder: &Decoder, rows: &[(&[u32], usize)]) -> Result<Vec<Vec<f32>>> {
    let decoder = &decoder.detached();
    let device = decoder.device();
    let width = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    if rows.is_empty() || width < 2 {
        return Ok(rows.iter().map(|_| Vec::new()).collect());
    }
    let mut ids = vec![0u32; rows.len() * width];
    let mut targets = vec![0u32; rows.len() * (width - 1)];
    let mut valid = vec![vec![false; width]; rows.len()];
    for (b, (row, first)) in rows.iter().enumerate() {
        if *first == 0 {
            bail!("score_rows: the first scored token must have a token before it");
        }
        ids[b * width..b * width + row.len()].copy_from_slice(row);
        valid[b][..row.len()].iter_mut().for_each(|v| *v = true);
        // Position i predicts token i + 1.
        targets[b * (width - 1)..b * (width - 1) + row.len() - 1].copy_from_slice(&row[1..]);
    }
    let input = Tensor::from_vec(ids, (rows.len(), width), device)?;
    let hidden = decoder.forward_hidden(&input, &AttnMask::new(&valid, width, device)?, None, Mode::Infer)?;
    let hidden = hidden.narrow(1, 0, width - 1)?;
    let targets = Tensor::from_vec(targets, (rows.len(), width - 1), device)?;
    let (logp, _) = decoder.token_logprobs(&hidden, &targets, 1.0)?;
    let logp = logp.to_vec2::<f32>()?;
    Ok(rows.iter().zip(logp).map(|((row, first), lp)| lp[first - 1..row.len() - 1].to_vec()).collect())
}

/// Perplexity over one file of documents (`results.json`: `text[..].ppl.<set>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PplResult {
    pub file: String,
    pub documents: usize,
    /// Documents with no scored token (one token or none, without a BOS).
    pub unscored_documents: usize,
    /// Tokens scored over all documents.
    pub tokens: usize,
    /// Mean NLL per scored token (nats), token-weighted over all documents.
    pub nll: f64,
    /// exp(nll).
    pub ppl: f64,
    /// Perplexity of each scored document on its own: p10, p25, median, p75, p90, mean.
    pub per_document: Option<Distribution>,
    pub max_len: usize,
    pub stride: usize,
    /// Whether each document starts with the tokenizer's BOS (its first token then scored).
    pub bos: bool,
}

/// NLL sum and count of one document's scored tokens.
#[derive(Clone, Copy, Default)]
struct DocNll {
    sum: f64,
    tokens: usize,
}

/// `(NLL sum, scored tokens)` of each document of `docs` (token ids, BOS already in front when there is one) window by window,
/// scored `cfg.batch_size` windows per forward; `on_batch` runs after each forward (a stop request
/// returns an error from it). Documents are taken one at a time, so only the windows of a
/// batch are held, plus two numbers per document.
pub fn perplexity(
    decoder: &Decoder,
    docs: impl Iterator<Item = Result<Vec<u32>>>,
    cfg: &PplConfig,
    on_batch: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<(f64, usize)>> {
    cfg.check()?;
    let mut per_doc: Vec<DocNll> = Vec::new();
    // (document index, its tokens' window, scored from) waiting for a forward.
    let mut pending: Vec<(usize, Vec<u32>, usize)> = Vec::new();
    let mut flush = |pending: &mut Vec<(usize, Vec<u32>, usize)>, per_doc: &mut Vec<DocNll>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&[u32], usize)> = pending.iter().map(|(_, ids, first)| (ids.as_slice(), *first)).collect();
        let scored = score_rows(decoder, &rows)?;
        for ((doc, _, _), lp) in pending.iter().zip(scored) {
            let d = &mut per_doc[*doc];
            d.sum -= lp.iter().map(|&x| x as f64).sum::<f64>();
            d.tokens += lp.len();
        }
        pending.clear();
        on_batch()
    };
    for ids in docs {
        let ids = ids?;
        let doc = per_doc.len();
        per_doc.push(DocNll::default());
        for w in windows(ids.len(), cfg.max_len, cfg.stride) {
            pending.push((doc, ids[w.begin..w.end].to_vec(), w.first - w.begin));
            if pending.len() >= cfg.batch_size {
                flush(&mut pending, &mut per_doc)?;
            }
        }
    }
    flush(&mut pending, &mut per_doc)?;
    Ok(per_doc.into_iter().map(|d| (d.sum, d.tokens)).collect())
}

/// The result over documents' `(nll sum, scored tokens)`.
pub fn summarize(file: &str, per_doc: &[(f64, usize)], cfg: &PplConfig, bos: bool) -> PplResult {
    let tokens: usize = per_doc.iter().map(|d| d.1).sum();
    let sum: f64 = per_doc.iter().map(|d| d.0).sum();
    let nll = if tokens > 0 { sum / tokens as f64 } else { f64::NAN };
    let doc_ppl: Vec<f64> = per_doc.iter().filter(|d| d.1 > 0).map(|d| (d.0 / d.1 as f64).exp()).collect();
    PplResult {
        file: file.to_string(),
        documents: per_doc.len(),
        unscored_documents: per_doc.iter().filter(|d| d.1 == 0).count(),
        tokens,
        nll,
        ppl: nll.exp(),
        per_document: distribution(&doc_ppl),
        max_len: cfg.max_len,
        stride: cfg.stride,
        bos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_token_once_with_the_context_their_window_gives() {
        for n in 0..40 {
            for max_len in 2..9 {
                for stride in 1..=max_len {
                    let ws = windows(n, max_len, stride);
                    let mut seen = vec![0usize; n];
                    for w in &ws {
                        assert!(w.begin < w.first && w.first <= w.end && w.end - w.begin <= max_len, "{w:?}");
                        for t in w.first..w.end {
                            seen[t] += 1;
                            // Left context inside the window: all of it on the first window,
                            // else at least max_len − stride tokens.
                            assert!(w.begin == 0 || t - w.begin >= max_len - stride, "n {n} {w:?} t {t}");
                        }
                    }
                    let want: Vec<usize> = (0..n).map(|t| usize::from(t > 0)).collect();
                    assert_eq!(seen, want, "n {n} max_len {max_len} stride {stride}: {ws:?}");
                }
            }
        }
        // The transformers guide's example shape: 1024-token windows, stride 512.
        assert_eq!(
            windows(2000, 1024, 512),
            vec![Window { begin: 0, end: 1024, first: 1 }, Window { begin: 512, end: 1536, first: 1024 }, Window { begin: 1024, end: 2000, first: 1536 }]
        );
    }

    #[test]
    fn summary_is_token_weighted_and_documents_are_spread() {
        let cfg = PplConfig { max_len: 4, stride: 2, batch_size: 1 };
        // Doc a: 3 tokens, NLL 3 → 1 per token; doc b: 1 token, NLL 3; doc c: nothing scored.
        let r = summarize("f", &[(3.0, 3), (3.0, 1), (0.0, 0)], &cfg, false);
        assert_eq!((r.documents, r.unscored_documents, r.tokens), (3, 1, 4));
        assert!((r.nll - 1.5).abs() < 1e-12);
        assert!((r.ppl - 1.5f64.exp()).abs() < 1e-12);
        let d = r.per_document.unwrap();
        assert!((d.mean - (1f64.exp() + 3f64.exp()) / 2.0).abs() < 1e-12);
        assert!(cfg.check().is_ok());
        assert!(PplConfig { stride: 5, ..cfg }.check().unwrap_err().to_string().contains("stride must be between 1 and max_len = 4"));
        assert!(PplConfig { max_len: 1, stride: 1, ..cfg }.check().is_err());
    }
}
