//! The "human" corpus of the toedit-tiny experiment (research/synth-spec.md §1.8): text from
//! a seeded order-2 Markov source over a Zipfian vocabulary, so it has what model collapse
//! erodes first, a long tail of rare words.
//!
//! The source: `vocab` pseudo-words with Zipf weights 1 / rank^`zipf`. Each pair of previous
//! words picks, from a hash of the pair and the seed, a small set of `successors` preferred
//! next words (drawn by the Zipf weights); the next word comes from that set with probability
//! `stickiness` (uniformly within it) and from the whole Zipf distribution otherwise. The
//! preferred sets give the text local structure a tiny model can learn; the Zipf draws keep
//! the tail. No table per context is stored: a context's set is recomputed from its hash.
//!
//! Files: `human.jsonl` and `human_heldout.jsonl` of `{"text"}` rows (documents of 3–8
//! sentences of 6–18 words), from separate streams so changing one size leaves the other.

use crate::rng::Rng;
use crate::stage::StageCtx;
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::Counts;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyHumanConfig {
    pub seed: u64,
    /// Training documents.
    pub docs: usize,
    /// Held-out documents.
    pub heldout: usize,
    /// Distinct words.
    pub vocab: usize,
    /// Zipf exponent of the word distribution.
    pub zipf: f64,
    /// Preferred successors per two-word context.
    pub successors: usize,
    /// Probability that the next word is one of the context's preferred successors.
    pub stickiness: f64,
}

impl Default for TinyHumanConfig {
    fn default() -> Self {
        TinyHumanConfig { seed: 0, docs: 3000, heldout: 200, vocab: 2000, zipf: 1.1, successors: 4, stickiness: 0.75 }
    }
}

impl TinyHumanConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if self.docs == 0 {
            return err("docs", "must be at least 1");
        }
        if self.vocab < 10 {
            return err("vocab", "must be at least 10 words");
        }
        if !(self.zipf > 0.0 && self.zipf.is_finite()) {
            return err("zipf", "must be a positive number (1.0–1.2 is natural-language-like)");
        }
        if self.successors == 0 {
            return err("successors", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.stickiness) {
            return err("stickiness", "must be between 0 and 1");
        }
        Ok(())
    }
}

/// The source: words and their cumulative Zipf weights.
pub struct Source {
    pub words: Vec<String>,
    cumulative: Vec<f64>,
    seed: u64,
    successors: usize,
    stickiness: f64,
}

const ONSETS: &[&str] = &["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "pl", "gr", "sh"];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ea"];

impl Source {
    pub fn new(cfg: &TinyHumanConfig) -> Source {
        let mut rng = Rng::derive(cfg.seed, "tiny-human/words");
        let mut seen = std::collections::BTreeSet::new();
        let mut words = Vec::with_capacity(cfg.vocab);
        while words.len() < cfg.vocab {
            // Frequent words are short, as in natural language: syllables grow with the rank.
            let syllables = 1 + (words.len() * 3 / cfg.vocab.max(1)).min(2) + rng.usize(2);
            let w: String = (0..syllables).map(|_| format!("{}{}", ONSETS[rng.usize(ONSETS.len())], VOWELS[rng.usize(VOWELS.len())])).collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=cfg.vocab)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(cfg.zipf);
                total
            })
            .collect();
        Source { words, cumulative, seed: cfg.seed, successors: cfg.successors, stickiness: cfg.stickiness }
    }

    /// A word index drawn by the Zipf weights.
    fn zipf(&self, rng: &mut Rng) -> usize {
        let u = rng.f64() * self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&c| c <= u).min(self.cumulative.len() - 1)
    }

    /// The next word after the context `(a, b)`.
    fn next(&self, a: usize, b: usize, rng: &mut Rng) -> usize {
        if rng.bool(self.stickiness) {
            // The context's preferred set, recomputed from its hash; pick one uniformly.
            let mut ctx = Rng::derive(self.seed, &format!("tiny-human/ctx/{a}/{b}"));
            let pick = rng.usize(self.successors);
            let mut w = 0;
            for _ in 0..=pick {
                w = self.zipf(&mut ctx);
            }
            w
        } else {
            self.zipf(rng)
        }
    }

    pub fn document(&self, rng: &mut Rng) -> String {
        let sentences = 3 + rng.usize(6);
        let (mut a, mut b) = (self.zipf(rng), self.zipf(rng));
        let mut out = Vec::with_capacity(sentences);
        for _ in 0..sentences {
            let n = 6 + rng.usize(13);
            let mut words = Vec::with_capacity(n);
            for _ in 0..n {
                let w = self.next(a, b, rng);
                words.push(self.words[w].clone());
                (a, b) = (b, w);
            }
            let mut s = words.join(" ");
            if let Some(first) = s.get(0..1) {
                s.replace_range(0..1, &first.to_uppercase());
            }
            s.push('.');
            out.push(s);
        }
        out.join(" ")
    }
}

pub fn write(dir: &Path, cfg: &TinyHumanConfig) -> Result<Vec<(String, u64)>> {
    if let Err((key, msg)) = cfg.check() {
        bail!("tiny-human config: `{key}`: {msg}");
    }
    crate::fsutil::ensure_dir(dir)?;
    let source = Source::new(cfg);
    let mut counts = Vec::new();
    for (name, n) in [("human.jsonl", cfg.docs), ("human_heldout.jsonl", cfg.heldout)] {
        let mut rng = Rng::derive(cfg.seed, &format!("tiny-human/{name}"));
        let text: String = (0..n).map(|_| format!("{}\n", json!({"text": source.document(&mut rng)}))).collect();
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        counts.push((name.to_string(), n as u64));
    }
    Ok(counts)
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    parse_options::<TinyHumanConfig>(options)?.check()
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let config: TinyHumanConfig = super::method::generator_options(options, env, |c: &mut TinyHumanConfig| &mut c.seed)?;
    Ok(Box::new(TinyHuman { config }))
}

struct TinyHuman {
    config: TinyHumanConfig,
}

impl Method for TinyHuman {
    fn files(&self) -> &'static [&'static str] {
        &["human.jsonl", "human_heldout.jsonl"]
    }
    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        ctx.events.info(format!("generating the tiny human corpus (seed {}, {} words, Zipf {})", self.config.seed, self.config.vocab, self.config.zipf));
        let mut counts = Counts::default();
        for (file, n) in write(dir, &self.config)? {
            counts.rows.insert(file, n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn word_counts(cfg: &TinyHumanConfig) -> (HashMap<String, usize>, usize) {
        let source = Source::new(cfg);
        let mut rng = Rng::derive(cfg.seed, "test");
        let mut counts = HashMap::new();
        let mut total = 0;
        for _ in 0..cfg.docs {
            for w in source.document(&mut rng).split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()) {
                *counts.entry(w.to_lowercase()).or_default() += 1;
                total += 1;
            }
        }
        (counts, total)
    }

    #[test]
    fn the_corpus_has_a_long_tail() {
        let cfg = TinyHumanConfig { docs: 1500, ..Default::default() };
        let (counts, total) = word_counts(&cfg);
        // Most of the vocabulary occurs, and a good part of it rarely (≤ 3 times): the tail.
        let rare = counts.values().filter(|&&c| c <= 3).count();
        assert!(counts.len() > cfg.vocab / 2, "{} distinct words of {}", counts.len(), cfg.vocab);
        assert!(rare * 10 > counts.len(), "{rare} rare words of {}", counts.len());
        // The head is heavy: the ten most frequent words are a large share of the tokens.
        let mut freq: Vec<usize> = counts.values().copied().collect();
        freq.sort_unstable_by(|a, b| b.cmp(a));
        let head: usize = freq[..10].iter().sum();
        assert!(head * 5 > total, "top-10 share {head}/{total}");
    }

    #[test]
    fn a_seed_gives_the_same_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = TinyHumanConfig { docs: 20, heldout: 5, ..Default::default() };
        write(a.path(), &cfg).unwrap();
        write(b.path(), &cfg).unwrap();
        for f in ["human.jsonl", "human_heldout.jsonl"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap());
        }
        let c = tempfile::tempdir().unwrap();
        write(c.path(), &TinyHumanConfig { seed: 1, ..cfg }).unwrap();
        assert_ne!(std::fs::read(a.path().join("human.jsonl")).unwrap(), std::fs::read(c.path().join("human.jsonl")).unwrap());
    }

    #[test]
    fn bad_options_are_named() {
        let t: toml::Table = toml::from_str("zipf = -1.0").unwrap();
        assert_eq!(check(&t).unwrap_err().0, "zipf");
        let t: toml::Table = toml::from_str("vocabulary = 10").unwrap();
        assert!(check(&t).is_err());
    }
}
