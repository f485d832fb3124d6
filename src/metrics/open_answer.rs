//! Scores of open (free-text) answers that AdaMLLM's benchmarks report (synth-spec §2.5):
//!
//! - **Recall** of the gold answer's words in the prediction, as LLaVA-Med's
//!   `calculate_f1score` computes it for open-ended medical VQA (SLAKE, PathVQA, VQA-RAD open;
//!   Nutrition5K): both texts are normalised and split on whitespace into word counts; then
//!   `tp` sums, over the words both share, the word's count **in the prediction** (LLaVA-Med's
//!   rule, kept as is), `fn` sums the gold counts of gold words the prediction lacks, and
//!   recall = tp / (tp + fn); 0 when either text has no words or nothing is shared.
//!   The normalisation is [`super::answer_match::normalize`] (lower case, punctuation and
//!   articles dropped), not LLaVA-Med's word glossary.
//! - **ROUGE-L**: the F-measure of the longest common subsequence of the two token lists,
//!   P = LCS / |prediction|, R = LCS / |reference|, F = 2PR / (P + R), with the tokenizer of
//!   Google's `rouge-score` package without stemming (lower case, every run of characters other
//!   than `a-z0-9` a separator), so the numbers match its `RougeScorer(["rougeL"])`.

use super::answer_match::normalize;
use std::collections::BTreeMap;

fn word_counts(text: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for w in normalize(text).split_whitespace() {
        *counts.entry(w.to_string()).or_default() += 1;
    }
    counts
}

/// LLaVA-Med's recall of `gold`'s words in `prediction` (see the module doc).
pub fn recall(prediction: &str, gold: &str) -> f64 {
    let p = word_counts(prediction);
    let g = word_counts(gold);
    if p.is_empty() || g.is_empty() {
        return 0.0;
    }
    let (mut tp, mut missed) = (0usize, 0usize);
    for (w, &n) in &g {
        match p.get(w) {
            Some(&m) => tp += m,
            None => missed += n,
        }
    }
    if tp == 0 {
        return 0.0;
    }
    tp as f64 / (tp + missed) as f64
}

/// `rouge-score`'s tokens: lower case, ASCII letters and digits only.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit())).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// Length of the longest common subsequence of `a` and `b` (one row of the DP table at a time).
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L F-measure of `prediction` against `reference` (0 when either has no tokens).
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let p = rouge_tokens(prediction);
    let r = rouge_tokens(reference);
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let lcs = lcs_len(&p, &r) as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (lcs / p.len() as f64, lcs / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_gold_words_found_by_hand() {
        // Gold words {left, lung}; the prediction has both: tp = 1 + 1, fn = 0.
        assert_eq!(recall("The left lung.", "left lung"), 1.0);
        // Gold {left, lung, lobe}: "lobe" missing → 2 / 3.
        assert!((recall("left lung", "left lung lobe") - 2.0 / 3.0).abs() < 1e-12);
        // LLaVA-Med counts a shared word by its count in the prediction: "lung lung" vs gold
        // "lung lobe" gives tp = 2, fn = 1 → 2 / 3 (not 1 / 2).
        assert!((recall("lung lung", "lung lobe") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(recall("", "lung"), 0.0);
        assert_eq!(recall("heart", "lung"), 0.0);
        // Articles and punctuation do not count; a hyphen is dropped, joining its words.
        assert_eq!(recall("CT, scan", "the ct scan"), 1.0);
        assert_eq!(recall("a CT scan!", "ct-scan"), 0.0);
    }

    #[test]
    fn lcs_and_rouge_l_by_hand() {
        assert_eq!(lcs_len(&[1, 2, 3, 4], &[2, 4, 3]), 2);
        assert_eq!(lcs_len::<u8>(&[], &[1]), 0);
        // pred "the cat sat on the mat" (6), ref "the cat is on the mat" (6): LCS "the cat on
        // the mat" = 5 → P = R = 5/6 → F = 5/6.
        assert!((rouge_l("The cat sat on the mat.", "the cat is on the mat") - 5.0 / 6.0).abs() < 1e-12);
        // pred "a b" (2), ref "a c b d" (4): LCS 2 → P 1, R 1/2 → F = 2/3.
        assert!((rouge_l("a b", "a c b d") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(rouge_l("", "a"), 0.0);
        assert_eq!(rouge_l("x", "y"), 0.0);
        assert_eq!(rouge_tokens("Crème brûlée, 2 eggs!"), ["cr", "me", "br", "l", "e", "2", "eggs"]);
    }

    /// Pairs scored by Google's `rouge-score` 0.1.2 (`RougeScorer(["rougeL"]).score(ref, pred)
    /// .fmeasure`), made by tools/make_rouge_fixture.py and committed as data.
    #[test]
    fn rouge_l_matches_the_rouge_score_package() {
        let text = include_str!("../../tests/fixtures/rouge_l.jsonl");
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (pred, reference, want) = (v["prediction"].as_str().unwrap(), v["reference"].as_str().unwrap(), v["rouge_l"].as_f64().unwrap());
            let got = rouge_l(pred, reference);
            assert!((got - want).abs() < 1e-9, "{pred:?} vs {reference:?}: {got} != {want}");
            n += 1;
        }
        assert!(n >= 10, "{n} fixture rows");
    }
}
