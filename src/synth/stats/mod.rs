//! Statistics of a corpus (spec §1.3): what the ToEdit paper measures to show that synthetic
//! text is narrower than human text. `retort synth stats` and the ToEdit stage call
//! [`corpus_stats`] once per corpus and [`StatsReport::build`] on the results.
//!
//! Without a prior (read in one streamed pass, memory bounded, see [`ngrams`]):
//! - hashed unigram + bigram features in 10,000 buckets: entropy, share of the mass in the
//!   fullest 1 % of buckets, and between two corpora KL(A‖B) with add-one smoothing;
//! - distinct-1 / distinct-2 and the top bigrams.
//!
//! With a prior LM (teacher-forced, windows as in `eval::text::ppl`: every token after the
//! first scored once, the tokenizer's BOS in front when it adds one):
//! - per-document perplexity `exp(−mean log P(x_i | x_<i))` over the scored tokens; its
//!   quantiles p5 / p50 / p95 / p99 (numpy's linear interpolation) and a histogram;
//! - the ten-bin histogram of `P(x_i | x_<i)` of the actual tokens, bins [0, 0.1) … [0.9, 1.0]
//!   (the paper's "U-shape"; its BioMed row is 34.7 / 8.1 / … / 5.2 / 27.1 %).
//!
//! The PNGs are drawn by `crate::report::corpus_stats_plots`.
//!
//! Memory: 10,000 bucket counts, the distinct-n-gram hash sets (capped), the top-bigram
//! counters (capped), two numbers per document for perplexity, and one batch of windows.

pub mod ngrams;

use crate::eval::text::bos_prefix;
use crate::eval::text::ppl::{score_rows, windows, PplConfig};
use crate::model::Decoder;
use crate::text::corpus::{Corpus, CorpusConfig};
use crate::text::Tokenizer;
use anyhow::{bail, Context, Result};
use ngrams::{NgramCounter, NgramStats};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which tokens the n-gram features are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NgramTokens {
    /// Lowercased `\w+|[^\w\s]+` runs (DSIR's WordPunctTokenizer split).
    Words,
    /// The prior's tokenizer (its token strings, no special tokens); needs a prior.
    Prior,
}

/// How to read and measure a corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsConfig {
    pub corpus: CorpusConfig,
    /// Documents read per corpus at most (None: all).
    pub limit: Option<u64>,
    pub buckets: usize,
    pub ngram_tokens: NgramTokens,
    /// Bigrams listed per corpus.
    pub top_bigrams: usize,
    /// Misra–Gries counters for the top bigrams.
    pub top_capacity: usize,
    /// Distinct n-grams remembered per order before distinct-n becomes a lower bound.
    pub max_distinct: usize,
    /// Prior windows: length (None: the prior's context, at most 1024), stride (None: half).
    pub max_len: Option<usize>,
    pub stride: Option<usize>,
    /// Windows per forward of the prior.
    pub batch_size: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            corpus: CorpusConfig::default(),
            limit: None,
            buckets: 10_000,
            ngram_tokens: NgramTokens::Words,
            top_bigrams: 40,
            top_capacity: 100_000,
            max_distinct: 50_000_000,
            max_len: None,
            stride: None,
            batch_size: 8,
        }
    }
}

impl StatsConfig {
    /// The prior's windows for a model with context `context`.
    pub fn ppl_config(&self, context: usize) -> PplConfig {
        let max_len = self.max_len.unwrap_or(context.min(1024)).min(context);
        PplConfig { max_len, stride: self.stride.unwrap_or((max_len / 2).max(1)).min(max_len), batch_size: self.batch_size }
    }

    pub fn check(&self) -> Result<()> {
        if self.buckets == 0 {
            bail!("buckets must be ≥ 1 (the paper uses 10000)");
        }
        if self.top_capacity < self.top_bigrams {
            bail!("top_capacity ({}) must be at least top_bigrams ({})", self.top_capacity, self.top_bigrams);
        }
        Ok(())
    }
}

/// A prior LM: its decoder and tokenizer (the tokenizer should carry the model's eos ids).
pub struct Prior<'a> {
    /// How the prior is named in the output (its folder).
    pub name: String,
    pub decoder: &'a Decoder,
    pub tok: &'a Tokenizer,
}

/// Statistics of one corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusStats {
    pub name: String,
    pub inputs: Vec<String>,
    pub documents: u64,
    /// Rows the corpus reader skipped, by reason.
    pub skipped: std::collections::BTreeMap<String, u64>,
    pub ngram_tokens: NgramTokens,
    pub ngrams: NgramStats,
    pub prior: Option<PriorStats>,
    /// The bucket counts (for KL between corpora); not written out.
    #[serde(skip)]
    pub bucket_counts: Vec<u64>,
}

/// What the prior says about a corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorStats {
    pub model: String,
    pub max_len: usize,
    pub stride: usize,
    pub bos: bool,
    /// Scored tokens over all documents.
    pub tokens: u64,
    /// exp(token-weighted mean NLL) over all documents.
    pub ppl: f64,
    /// Documents with no scored token (left out of the per-document numbers).
    pub unscored_documents: u64,
    pub doc_ppl: Quantiles,
    /// Token counts and percentages in bins [0, 0.1), …, [0.8, 0.9), [0.9, 1.0].
    pub token_prob_counts: [u64; 10],
    pub token_prob_percent: [f64; 10],
    /// Perplexity of each scored document, in corpus order; not written out.
    #[serde(skip)]
    pub per_document: Vec<f64>,
}

/// Quantiles of the per-document perplexities (NaN when no document was scored).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: usize,
    pub p5: f64,
    pub p25: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

/// The q-quantile of sorted values, linearly interpolated between the closest ranks
/// (numpy's default: rank q·(n − 1)). NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

impl Quantiles {
    pub fn of(values: &[f64]) -> Quantiles {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let mean = if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
        Quantiles { count: v.len(), p5: quantile(&v, 0.05), p25: quantile(&v, 0.25), p50: quantile(&v, 0.5), p95: quantile(&v, 0.95), p99: quantile(&v, 0.99), mean }
    }
}

/// The bin of a probability: [0, 0.1) → 0, …, [0.9, 1.0] → 9.
pub fn prob_bin(p: f64) -> usize {
    ((p * 10.0).floor().max(0.0) as usize).min(9)
}

/// Accumulates the prior's per-token log-probs: per document NLL and count, the histogram.
struct PriorPass<'a> {
    prior: &'a Prior<'a>,
    cfg: PplConfig,
    bos: Option<u32>,
    /// (NLL sum, scored tokens) per document.
    docs: Vec<(f64, u64)>,
    bins: [u64; 10],
    /// (document, its window's tokens, first scored position in the window) awaiting a forward.
    pending: Vec<(usize, Vec<u32>, usize)>,
}

impl<'a> PriorPass<'a> {
    fn new(prior: &'a Prior<'a>, cfg: &StatsConfig) -> Result<PriorPass<'a>> {
        let pc = cfg.ppl_config(prior.decoder.config().max_position_embeddings);
        pc.check()?;
        Ok(PriorPass { prior, cfg: pc, bos: bos_prefix(prior.tok)?, docs: Vec::new(), bins: [0; 10], pending: Vec::new() })
    }

    /// Queues the windows of one document's tokens (BOS already in front); runs full batches.
    fn add_document(&mut self, ids: &[u32]) -> Result<()> {
        let doc = self.docs.len();
        self.docs.push((0.0, 0));
        for w in windows(ids.len(), self.cfg.max_len, self.cfg.stride) {
            self.pending.push((doc, ids[w.begin..w.end].to_vec(), w.first - w.begin));
            if self.pending.len() >= self.cfg.batch_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&[u32], usize)> = self.pending.iter().map(|(_, ids, first)| (ids.as_slice(), *first)).collect();
        let scored = score_rows(self.prior.decoder, &rows)?;
        for ((doc, _, _), lps) in self.pending.iter().zip(scored) {
            for lp in lps {
                self.docs[*doc].0 -= lp as f64;
                self.docs[*doc].1 += 1;
                self.bins[prob_bin((lp as f64).exp())] += 1;
            }
        }
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<PriorStats> {
        self.flush()?;
        let tokens: u64 = self.docs.iter().map(|d| d.1).sum();
        let nll: f64 = self.docs.iter().map(|d| d.0).sum();
        let per_document: Vec<f64> = self.docs.iter().filter(|d| d.1 > 0).map(|d| (d.0 / d.1 as f64).exp()).collect();
        let total: u64 = self.bins.iter().sum();
        let token_prob_percent = self.bins.map(|c| if total == 0 { f64::NAN } else { 100.0 * c as f64 / total as f64 });
        Ok(PriorStats {
            model: self.prior.name.clone(),
            max_len: self.cfg.max_len,
            stride: self.cfg.stride,
            bos: self.bos.is_some(),
            tokens,
            ppl: if tokens == 0 { f64::NAN } else { (nll / tokens as f64).exp() },
            unscored_documents: self.docs.iter().filter(|d| d.1 == 0).count() as u64,
            doc_ppl: Quantiles::of(&per_document),
            token_prob_counts: self.bins,
            token_prob_percent,
            per_document,
        })
    }
}

/// The statistics of the corpus made of `inputs` (files or folders, read by the shared corpus
/// readers), named `name`. With a prior, every document also goes through it.
/// `progress` gets the documents read so far and the reader's bytes read / total, now and then.
pub fn corpus_stats(
    name: &str,
    inputs: &[PathBuf],
    cfg: &StatsConfig,
    prior: Option<&Prior>,
    progress: &mut dyn FnMut(u64, u64, u64),
) -> Result<CorpusStats> {
    cfg.check()?;
    if cfg.ngram_tokens == NgramTokens::Prior && prior.is_none() {
        bail!("ngram_tokens = \"prior\" needs a prior (--prior MODEL)");
    }
    let mut corpus = Corpus::open(inputs, &cfg.corpus)?;
    let mut counter = NgramCounter::new(cfg.buckets, cfg.max_distinct, cfg.top_capacity);
    let mut pass = prior.map(|p| PriorPass::new(p, cfg)).transpose()?;
    let mut documents = 0u64;
    let mut last = std::time::Instant::now();
    while cfg.limit.is_none_or(|l| documents < l) {
        let Some(doc) = corpus.next() else { break };
        let doc = doc?;
        documents += 1;
        let ids = match (&mut pass, prior) {
            (Some(pass), Some(p)) => {
                let mut ids: Vec<u32> = pass.bos.into_iter().collect();
                ids.extend(p.tok.encode(&doc.text, false).with_context(|| format!("{}: cannot tokenize the text", doc.origin))?);
                pass.add_document(&ids)?;
                Some(ids)
            }
            _ => None,
        };
        match (cfg.ngram_tokens, prior, ids) {
            (NgramTokens::Prior, Some(p), Some(ids)) => {
                let skip = usize::from(pass.as_ref().is_some_and(|x| x.bos.is_some()));
                let toks: Vec<String> = ids[skip..].iter().map(|&i| p.tok.id_to_token(i).unwrap_or_else(|| format!("<{i}>"))).collect();
                counter.add_document(&toks);
            }
            _ => counter.add_document(&ngrams::words(&doc.text)),
        }
        if last.elapsed().as_secs_f64() >= 2.0 {
            progress(documents, corpus.bytes_read(), corpus.total_bytes());
            last = std::time::Instant::now();
        }
    }
    progress(documents, corpus.bytes_read(), corpus.total_bytes());
    let prior_stats = pass.map(|p| p.finish()).transpose()?;
    Ok(CorpusStats {
        name: name.to_string(),
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        documents,
        skipped: corpus.skipped().counts().clone(),
        ngram_tokens: cfg.ngram_tokens,
        ngrams: counter.summary(cfg.top_bigrams),
        prior: prior_stats,
        bucket_counts: counter.counts,
    })
}

/// Draws a report's PNGs into a folder; returns the files written. `crate::report` draws them
/// (so `synth` does not depend on `report`): the binary installs it with [`set_plotter`] and
/// the synth stage's `stats = true` uses it when installed.
pub type Plotter = fn(&std::path::Path, &StatsReport) -> Result<Vec<PathBuf>>;

static PLOTTER: std::sync::OnceLock<Plotter> = std::sync::OnceLock::new();

/// Installs the plotter (the first call wins).
pub fn set_plotter(f: Plotter) {
    let _ = PLOTTER.set(f);
}

/// The installed plotter, if any.
pub fn plotter() -> Option<Plotter> {
    PLOTTER.get().copied()
}

/// The second corpus against the first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// KL(A‖B) and KL(B‖A) of the bucket distributions, add-one smoothed, in bits.
    pub kl_a_b_bits: f64,
    pub kl_b_a_bits: f64,
    /// With a prior: the share of B's documents whose perplexity is below A's 25th percentile
    /// (the spec's proposed summary of "synthetic PPL concentrates low").
    pub b_below_a_p25: Option<f64>,
}

/// Per-document perplexity histograms of all corpora over the same bins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PplHistogram {
    /// Bin edges: `bins + 1` values from 0; the last bin includes its upper edge.
    pub edges: Vec<f64>,
    /// Per corpus (in `corpora` order), documents per bin.
    pub counts: Vec<Vec<u64>>,
    /// Per corpus, documents above the last edge.
    pub overflow: Vec<u64>,
}

/// Everything `retort synth stats` prints or writes to `stats.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub corpora: Vec<CorpusStats>,
    pub comparison: Option<Comparison>,
    pub ppl_histogram: Option<PplHistogram>,
    /// How the n-gram features were made (for whoever reads the JSON).
    pub features: String,
}

/// Bins of the per-document perplexity histogram.
pub const PPL_BINS: usize = 40;

/// The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ x (x > 0).
fn nice_ceil(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 || x.is_infinite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= x * (1.0 - 1e-12)).unwrap_or(10.0 * p)
}

/// Histograms of per-document perplexity on shared bins: 0 up to a round number at or above
/// the largest p99 among the corpora, in [`PPL_BINS`] bins; documents above go to `overflow`.
pub fn ppl_histogram(per_corpus: &[&[f64]]) -> PplHistogram {
    let mut p99 = 0f64;
    for v in per_corpus {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let q = quantile(&s, 0.99);
        if q.is_finite() {
            p99 = p99.max(q);
        }
    }
    let upper = nice_ceil(p99);
    let width = upper / PPL_BINS as f64;
    let edges: Vec<f64> = (0..=PPL_BINS).map(|i| i as f64 * width).collect();
    let mut counts = Vec::new();
    let mut overflow = Vec::new();
    for v in per_corpus {
        let mut c = vec![0u64; PPL_BINS];
        let mut over = 0;
        for &x in v.iter() {
            if x > upper || !x.is_finite() {
                over += 1;
            } else {
                c[((x / width).floor() as usize).min(PPL_BINS - 1)] += 1;
            }
        }
        counts.push(c);
        overflow.push(over);
    }
    PplHistogram { edges, counts, overflow }
}

impl StatsReport {
    /// The report over corpora measured with the same configuration; the first two are
    /// compared when there are two.
    pub fn build(corpora: Vec<CorpusStats>) -> StatsReport {
        let comparison = match corpora.as_slice() {
            [a, b, ..] => Some(Comparison {
                a: a.name.clone(),
                b: b.name.clone(),
                kl_a_b_bits: ngrams::kl_add_one_bits(&a.bucket_counts, &b.bucket_counts),
                kl_b_a_bits: ngrams::kl_add_one_bits(&b.bucket_counts, &a.bucket_counts),
                b_below_a_p25: match (&a.prior, &b.prior) {
                    (Some(pa), Some(pb)) if !pb.per_document.is_empty() && pa.doc_ppl.p25.is_finite() => {
                        Some(pb.per_document.iter().filter(|&&x| x < pa.doc_ppl.p25).count() as f64 / pb.per_document.len() as f64)
                    }
                    _ => None,
                },
            }),
            _ => None,
        };
        let per_doc: Option<Vec<&[f64]>> = corpora.iter().map(|c| c.prior.as_ref().map(|p| p.per_document.as_slice())).collect();
        let ppl_histogram = per_doc.map(|v| ppl_histogram(&v));
        let features = match corpora.first().map(|c| c.ngram_tokens) {
            Some(NgramTokens::Prior) => "unigrams and bigrams of the prior's tokens, FNV-1a 64 mod buckets",
            _ => "unigrams and bigrams of lowercased \\w+|[^\\w\\s]+ tokens (NLTK WordPunct), FNV-1a 64 mod buckets",
        };
        StatsReport { corpora, comparison, ppl_histogram, features: features.to_string() }
    }

    /// The human table: one column per corpus, then the top bigrams side by side.
    pub fn table(&self) -> String {
        let names: Vec<&str> = self.corpora.iter().map(|c| c.name.as_str()).collect();
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&CorpusStats) -> String| rows.push((label.to_string(), self.corpora.iter().map(f).collect()));
        let num = |x: f64, d: usize| if x.is_finite() { format!("{x:.d$}") } else { "-".to_string() };
        row("documents", &|c| c.documents.to_string());
        row("skipped rows", &|c| c.skipped.values().sum::<u64>().to_string());
        row("unigrams", &|c| c.ngrams.unigrams.to_string());
        row("bigrams", &|c| c.ngrams.bigrams.to_string());
        row("bucket entropy (bits)", &|c| format!("{} / {}", num(c.ngrams.entropy_bits, 3), num(c.ngrams.max_entropy_bits, 2)));
        row("top-1% bucket mass", &|c| num(c.ngrams.top1pct_mass, 4));
        row("distinct-1", &|c| format!("{}{}", num(c.ngrams.distinct_1, 4), if c.ngrams.distinct_exact { "" } else { " (≥)" }));
        row("distinct-2", &|c| format!("{}{}", num(c.ngrams.distinct_2, 4), if c.ngrams.distinct_exact { "" } else { " (≥)" }));
        if self.corpora.iter().any(|c| c.prior.is_some()) {
            let p = |c: &CorpusStats, f: &dyn Fn(&PriorStats) -> String| c.prior.as_ref().map_or("-".to_string(), f);
            row("scored tokens", &|c| p(c, &|p| p.tokens.to_string()));
            row("PPL (token-weighted)", &|c| p(c, &|p| num(p.ppl, 3)));
            row("doc PPL p5", &|c| p(c, &|p| num(p.doc_ppl.p5, 3)));
            row("doc PPL p50", &|c| p(c, &|p| num(p.doc_ppl.p50, 3)));
            row("doc PPL p95", &|c| p(c, &|p| num(p.doc_ppl.p95, 3)));
            row("doc PPL p99", &|c| p(c, &|p| num(p.doc_ppl.p99, 3)));
            for b in 0..10 {
                let label = format!("P(token) {:.1}-{:.1} %", b as f64 / 10.0, (b + 1) as f64 / 10.0);
                row(&label, &|c| p(c, &|p| num(p.token_prob_percent[b], 1)));
            }
        }
        let mut out = String::new();
        let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0).max(6);
        let widths: Vec<usize> = (0..names.len())
            .map(|i| rows.iter().map(|r| r.1[i].chars().count()).chain([names[i].chars().count()]).max().unwrap_or(0))
            .collect();
        let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
        out.push_str(&pad("", w0));
        for (n, w) in names.iter().zip(&widths) {
            out.push_str(&format!("  {}", pad(n, *w)));
        }
        out.push('\n');
        for (label, cells) in &rows {
            out.push_str(&pad(label, w0));
            for (c, w) in cells.iter().zip(&widths) {
                out.push_str(&format!("  {}", pad(c, *w)));
            }
            out.push('\n');
        }
        if let Some(c) = &self.comparison {
            out.push_str(&format!("\nKL({}‖{}) = {:.4} bits, KL({}‖{}) = {:.4} bits (hashed bucket distributions, add-one smoothed)\n", c.a, c.b, c.kl_a_b_bits, c.b, c.a, c.kl_b_a_bits));
            if let Some(s) = c.b_below_a_p25 {
                out.push_str(&format!("{:.1} % of {}'s documents have a perplexity below {}'s 25th percentile\n", 100.0 * s, c.b, c.a));
            }
        }
        // Top bigrams side by side.
        let n = self.corpora.iter().map(|c| c.ngrams.top_bigrams.len()).max().unwrap_or(0);
        if n > 0 {
            out.push_str("\nTop bigrams\n");
            let cells: Vec<Vec<String>> = self.corpora.iter().map(|c| (0..n).map(|i| c.ngrams.top_bigrams.get(i).map_or(String::new(), |(s, k)| format!("{s} ({k})"))).collect()).collect();
            let ws: Vec<usize> = cells.iter().zip(&names).map(|(col, name)| col.iter().map(|s| s.chars().count()).chain([name.chars().count()]).max().unwrap_or(0)).collect();
            out.push_str(&format!("{:>4}", "#"));
            for (name, w) in names.iter().zip(&ws) {
                out.push_str(&format!("  {}", pad(name, *w)));
            }
            out.push('\n');
            for i in 0..n {
                out.push_str(&format!("{:>4}", i + 1));
                for (col, w) in cells.iter().zip(&ws) {
                    out.push_str(&format!("  {}", pad(&col[i], *w)));
                }
                out.push('\n');
            }
            for c in self.corpora.iter().filter(|c| !c.ngrams.top_bigrams_exact) {
                out.push_str(&format!("({}: approximate counts, each at most {} low)\n", c.name, c.ngrams.top_bigrams_max_error));
            }
        }
        // Cells are padded to their column; the last column needs no padding.
        out.lines().map(|l| l.trim_end().to_string() + "\n").collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [5, 25, 50, 95, 99]) = 1.2, 2, 3, 8.8, 9.76
        let q = Quantiles::of(&[10.0, 2.0, 1.0, 4.0, 3.0]);
        for (got, want) in [(q.p5, 1.2), (q.p25, 2.0), (q.p50, 3.0), (q.p95, 8.8), (q.p99, 9.76), (q.mean, 4.0)] {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert!(Quantiles::of(&[]).p50.is_nan());
    }

    #[test]
    fn probability_bins_are_half_open_except_the_last() {
        assert_eq!(prob_bin(0.0), 0);
        assert_eq!(prob_bin(0.0999), 0);
        assert_eq!(prob_bin(0.1), 1);
        assert_eq!(prob_bin(0.95), 9);
        assert_eq!(prob_bin(1.0), 9);
    }

    #[test]
    fn ppl_histogram_shares_round_bins_and_counts_overflow() {
        assert_eq!(nice_ceil(37.0), 50.0);
        assert_eq!(nice_ceil(20.0), 20.0);
        assert_eq!(nice_ceil(0.3), 0.5);
        let a = [1.0, 2.0, 3.0, 100.0];
        let b = [1.5, 1.5];
        let h = ppl_histogram(&[&a[..], &b[..]]);
        // p99 of a is 97.09 → upper 100, bins 2.5 wide; 100 sits in the last bin.
        assert_eq!(h.edges.len(), PPL_BINS + 1);
        assert_eq!(*h.edges.last().unwrap(), 100.0);
        assert_eq!(h.counts[0][0], 2);
        assert_eq!(h.counts[0][1], 1);
        assert_eq!(h.counts[0][PPL_BINS - 1], 1);
        assert_eq!(h.counts[1][0], 2);
        assert_eq!(h.overflow, vec![0, 0]);
    }
}
