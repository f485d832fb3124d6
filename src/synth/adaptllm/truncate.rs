//! Truncation to a token budget (§S4.2 step 2).
//!
//! The reference encodes the context with the general model's tokenizer, keeps the first
//! `max_seq_len − 200 = 1848` ids and decodes them back to text. `TokenBudget` is that step
//! behind a trait, so the pipeline runs with the model's tokenizer in a synthesis run and
//! with whitespace words in tests or when no tokenizer is at hand.

use std::borrow::Cow;

/// Cuts a text to its first `max_tokens` tokens, by some notion of token.
pub trait TokenBudget {
    /// `text` unchanged (borrowed) when it fits, else its first `max_tokens` tokens.
    fn truncate<'a>(&self, text: &'a str, max_tokens: usize) -> Cow<'a, str>;
}

/// The reference's rule with a real tokenizer: encode without special tokens, keep the first
/// `max_tokens` ids, decode. A text the tokenizer cannot encode or decode is kept whole:
/// truncation only bounds the document's length, and the stage glue may log such texts.
impl TokenBudget for crate::text::Tokenizer {
    fn truncate<'a>(&self, text: &'a str, max_tokens: usize) -> Cow<'a, str> {
        let Ok(ids) = self.encode(text, false) else { return Cow::Borrowed(text) };
        if ids.len() <= max_tokens {
            return Cow::Borrowed(text);
        }
        match self.decode(&ids[..max_tokens], true) {
            Ok(decoded) => Cow::Owned(decoded),
            Err(_) => Cow::Borrowed(text),
        }
    }
}

/// Tokens are whitespace-separated words. The kept text is the original text up to the end
/// of the `max_tokens`-th word, its inner spacing untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordBudget;

impl TokenBudget for WordBudget {
    fn truncate<'a>(&self, text: &'a str, max_tokens: usize) -> Cow<'a, str> {
        let mut words = 0;
        let mut in_word = false;
        // Byte offset just after the `max_tokens`-th word.
        let mut cut = 0;
        for (at, c) in text.char_indices() {
            if c.is_whitespace() {
                if in_word && words == max_tokens {
                    cut = at;
                }
                in_word = false;
            } else if !in_word {
                in_word = true;
                words += 1;
                if words > max_tokens {
                    return Cow::Borrowed(&text[..cut]);
                }
            }
        }
        Cow::Borrowed(text)
    }
}
