//! Exact match and token F1 of a generated answer against a reference, as SQuAD's official
//! evaluation script defines them (and UPRISE's completion tasks score them, synth-spec §6.3):
//! both texts are normalised (lower case, punctuation removed, the articles "a", "an", "the"
//! removed, whitespace collapsed); EM is 1 when the normalised texts are equal; F1 is the
//! harmonic mean of precision and recall over the multiset of normalised tokens (0 when they
//! share none). Two empty answers match (EM 1, F1 1), as in the script.

use std::collections::BTreeMap;

/// Lower case, ASCII and Unicode punctuation dropped, articles dropped, whitespace collapsed.
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower.chars().filter(|c| !c.is_ascii_punctuation() && !is_unicode_punct(*c)).collect();
    no_punct.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// The general punctuation block and a few common marks outside ASCII (curly quotes, dashes,
/// ellipsis), which the script's `string.punctuation` misses but which should not decide a
/// match of a model's answer.
fn is_unicode_punct(c: char) -> bool {
    matches!(c, '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}' | '«' | '»' | '¿' | '¡')
}

/// 1.0 when the normalised texts are equal, else 0.0.
pub fn exact_match(prediction: &str, reference: &str) -> f64 {
    f64::from(u8::from(normalize(prediction) == normalize(reference)))
}

/// Token F1 of the normalised texts.
pub fn token_f1(prediction: &str, reference: &str) -> f64 {
    let p = normalize(prediction);
    let r = normalize(reference);
    let p: Vec<&str> = p.split_whitespace().collect();
    let r: Vec<&str> = r.split_whitespace().collect();
    if p.is_empty() || r.is_empty() {
        return f64::from(u8::from(p == r));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &r {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0usize;
    for w in &p {
        if let Some(n) = counts.get_mut(w) {
            if *n > 0 {
                *n -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_drops_case_punctuation_and_articles() {
        assert_eq!(normalize("The  Cat, sat!"), "cat sat");
        assert_eq!(normalize("an apple — a day"), "apple day");
        // Only whole words are articles.
        assert_eq!(normalize("Theatre and anthem"), "theatre and anthem");
    }

    #[test]
    fn exact_match_compares_normalised_text() {
        assert_eq!(exact_match("The Eiffel Tower.", "eiffel tower"), 1.0);
        assert_eq!(exact_match("Eiffel", "eiffel tower"), 0.0);
    }

    #[test]
    fn f1_by_hand() {
        // prediction "red blue blue" vs reference "blue green": common = 1 (one "blue" in the
        // reference), precision 1/3, recall 1/2, F1 = 2·(1/6)/(5/6) = 0.4.
        assert!((token_f1("red blue blue", "blue green") - 0.4).abs() < 1e-12);
        // The duplicate counts when the reference has it twice: common 2, P 2/3, R 1 → 0.8.
        assert!((token_f1("red blue blue", "blue blue") - 0.8).abs() < 1e-12);
        assert_eq!(token_f1("the cat", "a cat"), 1.0);
        assert_eq!(token_f1("dog", "cat"), 0.0);
        // Empty after normalisation: matches only another empty answer.
        assert_eq!(token_f1("the", ""), 1.0);
        assert_eq!(token_f1("", "cat"), 0.0);
    }
}
