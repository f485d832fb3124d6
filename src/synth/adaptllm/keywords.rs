//! Keywords → sentence (§S4.3, word2text after the definition and topic patterns).
//!
//! The reference compares two sentencepiece models: pieces of the *domain* model that the
//! *general* model lacks, that start a word (`▁`) and are longer than 10 characters counting
//! the `▁`, are "domain-specific". A sentence qualifies when its set of domain pieces holds at
//! least 3 domain-specific ones and at most 100 pieces in all; up to 2 sentences are kept,
//! visited in a shuffled order, and each is rendered with its first 3 keywords.
//!
//! retort states the length rule on the decoded word — at least 10 characters — which is the
//! same rule for `▁` pieces and works unchanged for byte-level BPE pieces marked with `Ġ`
//! (§S4.7). The tokenizers stay behind [`DomainVocab`], so the pipeline does not depend on
//! sentencepiece; [`WordVocab`] is the simplest vocabulary (whitespace words and a given set
//! of domain words), for tests and corpora with a known term list.

use std::collections::HashSet;

/// At most this many sentences get a keyword task (`max_collect_sent`).
pub const MAX_SENTENCES: usize = 2;
/// A sentence needs this many distinct domain-specific pieces.
pub const MIN_KEYWORDS: usize = 3;
/// …and at most this many distinct pieces in all.
pub const MAX_PIECES: usize = 100;
/// Keywords shown in a task.
pub const SHOWN_KEYWORDS: usize = 3;
/// A domain-specific word has at least this many characters (the reference's `len(piece) > 10`
/// with the one-character `▁` included).
pub const MIN_WORD_CHARS: usize = 10;

/// The domain tokenizer as the keyword task sees it.
pub trait DomainVocab {
    /// The sentence's pieces in the domain tokenizer, in order.
    fn pieces(&self, sentence: &str) -> Vec<String>;
    /// Whether the piece is domain-specific (see the module comment).
    fn is_specific(&self, piece: &str) -> bool;
    /// The piece as text, without its word-start marker.
    fn display(&self, piece: &str) -> String {
        piece.trim_start_matches(['▁', 'Ġ']).to_string()
    }
}

/// The rule of the module comment for one piece, given whether the general vocabulary has it.
/// `▁` and `Ġ` both mark a word start.
pub fn is_domain_specific(piece: &str, in_general_vocab: bool) -> bool {
    let Some(word) = piece.strip_prefix('▁').or_else(|| piece.strip_prefix('Ġ')) else { return false };
    !in_general_vocab && word.chars().count() >= MIN_WORD_CHARS
}

/// Pieces are the whitespace words of a sentence (trimmed of punctuation, lower-cased) and the
/// domain-specific ones are those in `domain_words` that pass [`is_domain_specific`].
#[derive(Debug, Clone, Default)]
pub struct WordVocab {
    pub domain_words: HashSet<String>,
}

impl DomainVocab for WordVocab {
    fn pieces(&self, sentence: &str) -> Vec<String> {
        sentence
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
            .filter(|w| !w.is_empty())
            .map(|w| format!("▁{w}"))
            .collect()
    }
    fn is_specific(&self, piece: &str) -> bool {
        let word = piece.trim_start_matches('▁');
        self.domain_words.contains(word) && is_domain_specific(piece, false)
    }
}

/// One sentence picked for the keyword task.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordSentence {
    pub sentence: String,
    /// The first [`SHOWN_KEYWORDS`] distinct domain-specific words, in sentence order.
    pub keywords: Vec<String>,
}

/// Up to [`MAX_SENTENCES`] qualifying sentences, visited in an order shuffled by `rng`.
/// (The reference seeds that shuffle with the text's length; retort with the document seed.)
pub fn collect(sentences: &[&str], vocab: &dyn DomainVocab, rng: &mut crate::rng::Rng) -> Vec<KeywordSentence> {
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    rng.shuffle(&mut order);
    let mut out = Vec::new();
    for i in order {
        if out.len() == MAX_SENTENCES {
            break;
        }
        let sentence = sentences[i].trim();
        let pieces = vocab.pieces(sentence);
        let distinct: HashSet<&str> = pieces.iter().map(String::as_str).collect();
        if distinct.len() > MAX_PIECES {
            continue;
        }
        let mut seen = HashSet::new();
        let specific: Vec<&str> = pieces.iter().map(String::as_str).filter(|p| vocab.is_specific(p) && seen.insert(*p)).collect();
        if specific.len() < MIN_KEYWORDS {
            continue;
        }
        let keywords = specific.iter().take(SHOWN_KEYWORDS).map(|p| vocab.display(p)).collect();
        out.push(KeywordSentence { sentence: sentence.to_string(), keywords });
    }
    out
}
