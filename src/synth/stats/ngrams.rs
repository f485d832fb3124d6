//! Hashed n-gram features of a corpus (spec §1.3 item 3), streamed one document at a time.
//!
//! - Tokens: by default the text lowercased and split by `\w+|[^\w\s]+` (NLTK's
//!   `WordPunctTokenizer`, which DSIR applies to `line.lower()`): runs of word characters,
//!   and runs of punctuation. With a prior, optionally its tokenizer's token strings instead.
//! - Features: every unigram and every bigram (two adjacent tokens of one document, joined
//!   by one space, as DSIR's `' '.join(ngram)`), hashed with FNV-1a 64 over the UTF-8 bytes
//!   into `buckets` buckets (`hash % buckets`). DSIR hashes with SHA-256 instead, so bucket
//!   ids differ from DSIR's, but the feature space is the same shape (10,000 buckets).
//! - Distinct-n: distinct n-grams / n-grams, counted exactly by their 64-bit FNV hash (a
//!   collision is ~1 in 2^32 at a billion n-grams); past `max_distinct` distinct n-grams per
//!   order the sets stop growing and the ratios become lower bounds (`distinct_exact = false`).
//! - Top bigrams: Misra–Gries with `top_capacity` counters (bounded memory). Exact when the
//!   corpus has at most that many distinct bigrams (`top_bigrams_exact`); otherwise each count
//!   is low by at most `top_bigrams_max_error`, and any bigram more frequent than that
//!   error is in the list.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// FNV-1a, 64 bits: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The bucket of a feature string.
pub fn bucket(feature: &str, buckets: usize) -> usize {
    (fnv1a64(feature.as_bytes()) % buckets as u64) as usize
}

/// The word split: lowercase, then `\w+|[^\w\s]+` (NLTK's WordPunctTokenizer).
pub fn words(text: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\w+|[^\w\s]+").expect("word regex"));
    let lower = text.to_lowercase();
    re.find_iter(&lower).map(|m| m.as_str().to_string()).collect()
}

/// Bucket counts and n-gram summaries of one corpus, as counted so far.
pub struct NgramCounter {
    pub counts: Vec<u64>,
    pub unigrams: u64,
    pub bigrams: u64,
    distinct: [HashSet<u64>; 2],
    max_distinct: usize,
    saturated: bool,
    top: MisraGries,
}

impl NgramCounter {
    pub fn new(buckets: usize, max_distinct: usize, top_capacity: usize) -> NgramCounter {
        NgramCounter {
            counts: vec![0; buckets],
            unigrams: 0,
            bigrams: 0,
            distinct: [HashSet::new(), HashSet::new()],
            max_distinct,
            saturated: false,
            top: MisraGries::new(top_capacity),
        }
    }

    /// Counts the unigrams and bigrams of one document's tokens.
    pub fn add_document<S: AsRef<str>>(&mut self, tokens: &[S]) {
        let buckets = self.counts.len() as u64;
        for t in tokens {
            let h = fnv1a64(t.as_ref().as_bytes());
            self.counts[(h % buckets) as usize] += 1;
            self.unigrams += 1;
            self.remember(0, h);
        }
        for pair in tokens.windows(2) {
            let bigram = format!("{} {}", pair[0].as_ref(), pair[1].as_ref());
            let h = fnv1a64(bigram.as_bytes());
            self.counts[(h % buckets) as usize] += 1;
            self.bigrams += 1;
            self.remember(1, h);
            self.top.add(bigram);
        }
    }

    fn remember(&mut self, order: usize, h: u64) {
        let set = &mut self.distinct[order];
        if set.len() < self.max_distinct {
            set.insert(h);
        } else if !set.contains(&h) {
            self.saturated = true;
        }
    }

    /// The summary numbers, with the `top` most frequent bigrams.
    pub fn summary(&self, top: usize) -> NgramStats {
        let total: u64 = self.counts.iter().sum();
        let (top_bigrams, max_error) = self.top.top(top);
        NgramStats {
            buckets: self.counts.len(),
            unigrams: self.unigrams,
            bigrams: self.bigrams,
            entropy_bits: entropy_bits(&self.counts),
            max_entropy_bits: (self.counts.len() as f64).log2(),
            top1pct_mass: top_mass(&self.counts, 0.01),
            nonzero_buckets: self.counts.iter().filter(|&&c| c > 0).count(),
            distinct_1: ratio(self.distinct[0].len() as u64, self.unigrams),
            distinct_2: ratio(self.distinct[1].len() as u64, self.bigrams),
            distinct_exact: !self.saturated,
            top_bigrams,
            top_bigrams_exact: max_error == 0,
            top_bigrams_max_error: max_error,
            features: total,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// What `stats.json` says about a corpus's n-grams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NgramStats {
    pub buckets: usize,
    /// Unigrams + bigrams counted into the buckets.
    pub features: u64,
    pub unigrams: u64,
    pub bigrams: u64,
    /// Shannon entropy of the bucket distribution (counts / their sum), in bits.
    pub entropy_bits: f64,
    /// log2(buckets): the entropy of a uniform bucket distribution.
    pub max_entropy_bits: f64,
    /// Share of all features in the fullest 1 % of buckets (100 of 10,000).
    pub top1pct_mass: f64,
    pub nonzero_buckets: usize,
    /// Distinct unigrams / unigrams, distinct bigrams / bigrams (NaN when there are none).
    pub distinct_1: f64,
    pub distinct_2: f64,
    /// False when the distinct sets hit their cap (the ratios are then lower bounds).
    pub distinct_exact: bool,
    /// The most frequent bigrams and their counts, most frequent first (ties by text).
    pub top_bigrams: Vec<(String, u64)>,
    pub top_bigrams_exact: bool,
    /// How far below the truth a listed count may be (0 when exact).
    pub top_bigrams_max_error: u64,
}

/// Shannon entropy in bits of the distribution `counts / sum(counts)` (0 for no counts).
pub fn entropy_bits(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    -counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| p * p.log2()).sum::<f64>()
}

/// Share of the total in the largest `ceil(share · len)` counts.
pub fn top_mass(counts: &[u64], share: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let k = ((counts.len() as f64 * share).ceil() as usize).max(1);
    let mut sorted = counts.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted[..k.min(sorted.len())].iter().sum::<u64>() as f64 / total as f64
}

/// KL(P‖Q) in bits between two bucket count vectors of the same length, each smoothed by
/// adding one to every bucket: p_i = (a_i + 1) / (Σa + K), q_i = (b_i + 1) / (Σb + K).
pub fn kl_add_one_bits(a: &[u64], b: &[u64]) -> f64 {
    assert_eq!(a.len(), b.len(), "bucket counts of different lengths");
    let k = a.len() as f64;
    let na = a.iter().sum::<u64>() as f64 + k;
    let nb = b.iter().sum::<u64>() as f64 + k;
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let p = (x as f64 + 1.0) / na;
            let q = (y as f64 + 1.0) / nb;
            p * (p / q).log2()
        })
        .sum()
}

/// Misra–Gries heavy hitters over strings with at most `capacity` counters.
struct MisraGries {
    capacity: usize,
    counts: HashMap<String, u64>,
    /// How many times every counter was decremented (the most any count is low by).
    decrements: u64,
}

impl MisraGries {
    fn new(capacity: usize) -> MisraGries {
        MisraGries { capacity: capacity.max(1), counts: HashMap::new(), decrements: 0 }
    }

    fn add(&mut self, item: String) {
        if let Some(c) = self.counts.get_mut(&item) {
            *c += 1;
        } else if self.counts.len() < self.capacity {
            self.counts.insert(item, 1);
        } else {
            self.decrements += 1;
            self.counts.retain(|_, c| {
                *c -= 1;
                *c > 0
            });
        }
    }

    /// The `n` largest counters (ties by text), and the most any of them is low by.
    fn top(&self, n: usize) -> (Vec<(String, u64)>, u64) {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(s, &c)| (s.clone(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        (v, self.decrements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn words_are_lowercased_word_and_punctuation_runs() {
        assert_eq!(words("The cat's  hat, e.g. 3.5!"), ["the", "cat", "'", "s", "hat", ",", "e", ".", "g", ".", "3", ".", "5", "!"]);
        assert!(words(" \n\t").is_empty());
    }

    #[test]
    fn misra_gries_is_exact_within_capacity_and_bounded_past_it() {
        let mut mg = MisraGries::new(3);
        for s in ["a", "b", "a", "c", "a", "b"] {
            mg.add(s.into());
        }
        assert_eq!(mg.top(5), (vec![("a".into(), 3), ("b".into(), 2), ("c".into(), 1)], 0));
        mg.add("d".into()); // full: every counter drops by one, d is not kept
        let (top, err) = mg.top(5);
        assert_eq!(err, 1);
        assert_eq!(top, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    }
}
