//! A word-level tokenizer directory for the tiny decoder, its words learnt from a corpus.
//!
//! `model-init` with `preset = "tiny"` (or `small`) and `corpus = …` writes it instead of the
//! character tokenizer of [`super::tiny`]. Why: on generated tasks a character model spends
//! ~30 tokens on a statement a word model spends ~8 on, and an answer is one token, so a
//! behaviour such as copying the answer of a matching demonstration (what makes an LM
//! demonstration-sensitive) is learnt in far fewer steps, each of them cheaper.
//!
//! It is the character tokenizer (same pipeline, same first ids: the specials, `\n`, printable
//! ASCII) plus BPE merges learnt on the corpus until every pre-tokenized piece of it is one
//! token: a word with its leading space (`" even"`), a run of punctuation (`"?"`, `" ->"`),
//! a single digit (Qwen2's split makes every digit its own piece), `" \n"`. Text outside the
//! corpus still encodes (down to characters), and decoding is lossless.
//!
//! Why merges and not a `WordLevel` model: the tiny presets are `model_type = "qwen2"`, and
//! transformers 5 builds its `Qwen2Tokenizer` for such a folder from the vocabulary and the
//! merges alone, with Qwen2's own pipeline, whatever `tokenizer.json` or `tokenizer_class`
//! say (qwen2 is on its list of models whose hub tokenizer class it overrides). A BPE with
//! merges is what it rebuilds identically.

use super::tiny::{pre_tokenizer, qwen2_tokenizer, vocabulary};
use super::{Result, TextError};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

/// The pieces of `text` as the tiny tokenizers' pre-tokenizer cuts them (in the byte-level
/// alphabet: `Ġ` for a space, `Ċ` for a newline).
pub fn pieces(text: &str) -> Result<Vec<String>> {
    let at = Path::new("<the tiny pre-tokenizer>");
    let mut pts = PreTokenizedString::from(text);
    pre_tokenizer(at)?.pre_tokenize(&mut pts).map_err(|e| TextError::Encode(e.to_string()))?;
    Ok(pts.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(p, _, _)| p.to_string()).collect())
}

/// BPE merges that make every piece of `counts` (piece → occurrences) one token: the most
/// frequent adjacent pair first (ties: the smaller pair), until no piece has two symbols.
/// Encoding applies merges in this order, so it ends where learning did: one token a piece.
pub fn learn_merges(counts: &BTreeMap<String, usize>) -> Vec<(String, String)> {
    let mut words: Vec<(Vec<String>, usize)> = counts.iter().map(|(p, &n)| (p.chars().map(String::from).collect(), n)).collect();
    let mut merges = Vec::new();
    loop {
        let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (w, n) in &words {
            for i in 1..w.len() {
                *pairs.entry((w[i - 1].as_str(), w[i].as_str())).or_default() += n;
            }
        }
        // The highest count; among equals the first (smallest) pair.
        let Some(((a, b), _)) = pairs.into_iter().fold(None, |best: Option<((&str, &str), usize)>, (p, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((p, n)),
        }) else {
            break;
        };
        let (a, b) = (a.to_string(), b.to_string());
        for (w, _) in &mut words {
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    out.push(std::mem::take(&mut w[i]));
                    i += 1;
                }
            }
            *w = out;
        }
        merges.push((a, b));
    }
    merges
}

/// The pieces of the JSONL `corpus` (`{"text"}` rows; a `{"prompt", "response"}` row counts
/// as its prompt followed by its response) and how often each occurs, leaving out pieces
/// with a character the tiny vocabulary lacks. Errors name the file and line; a corpus
/// without a piece is an error.
pub fn corpus_pieces(corpus: &Path) -> std::result::Result<BTreeMap<String, usize>, String> {
    let alphabet: HashSet<char> = vocabulary().iter().filter(|t| t.chars().count() == 1).flat_map(|t| t.chars()).collect();
    let mut out = BTreeMap::new();
    let lines = super::jsonl::open(corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    for item in lines {
        let (line, raw) = item.map_err(|e| format!("{}: {e}", corpus.display()))?;
        let v: serde_json::Value = serde_json::from_str(&raw).map_err(|e| format!("{}:{line}: not JSON: {e}", corpus.display()))?;
        let text = match (v.get("text"), v.get("prompt"), v.get("response")) {
            (Some(serde_json::Value::String(t)), _, _) => t.clone(),
            (_, Some(serde_json::Value::String(p)), Some(serde_json::Value::String(r))) => format!("{p}{r}"),
            _ => return Err(format!("{}:{line}: no string `text` (or `prompt` and `response`)", corpus.display())),
        };
        for p in pieces(&text).map_err(|e| format!("{}:{line}: {e}", corpus.display()))? {
            if p.chars().all(|c| alphabet.contains(&c)) {
                *out.entry(p).or_default() += 1;
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{}: the corpus has no words; a word-level tokenizer needs at least one", corpus.display()));
    }
    Ok(out)
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` of the
/// character tokenizer plus `merges` into `dir` (created if missing); returns the vocabulary
/// size.
pub fn build_word_tokenizer(dir: &Path, merges: &[(String, String)]) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|source| TextError::Write { path: dir.to_path_buf(), source })?;
    let path = dir.join("tokenizer.json");
    let tokenizer = qwen2_tokenizer(&path, merges)?;
    let text = tokenizer.to_string(true).map_err(|e| TextError::TokenizerJson { path: path.clone(), message: e.to_string() })?;
    crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|source| TextError::Write { path: path.clone(), source })?;
    super::tiny::write_side_files(dir)?;
    Ok(tokenizer.get_vocab_size(true))
}

/// The vocabulary size [`build_word_tokenizer`] gives `merges`: the character vocabulary
/// and each merge's result that is new.
pub fn vocab_size(merges: &[(String, String)]) -> usize {
    let mut known: HashSet<String> = vocabulary().into_iter().collect();
    for (a, b) in merges {
        known.insert(format!("{a}{b}"));
    }
    known.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Tokenizer;

    #[test]
    fn merges_by_hand() {
        // "ab" ×3, "abc" ×1: pairs a·b 4, b·c 1 → merge a·b; then ab·c 1 → merge; then none.
        let counts: BTreeMap<String, usize> = [("ab".to_string(), 3), ("abc".to_string(), 1)].into();
        let m = learn_merges(&counts);
        assert_eq!(m, vec![("a".into(), "b".into()), ("ab".into(), "c".into())]);
    }

    #[test]
    fn word_tokenizer_makes_corpus_words_one_token_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.jsonl");
        std::fs::write(&corpus, "{\"text\": \"Q: 34 is even? A: yes \\n Claim\"}\n{\"prompt\": \"Claim: 3 is more than 7. Verdict:\", \"response\": \" true\"}\n").unwrap();
        let counts = corpus_pieces(&corpus).unwrap();
        let merges = learn_merges(&counts);
        let n = build_word_tokenizer(dir.path(), &merges).unwrap();
        assert_eq!(n, vocab_size(&merges));
        let tok = Tokenizer::load(dir.path()).unwrap();
        // Every corpus piece is one token; the specials keep the character tokenizer's ids.
        let text = "Q: 34 is even? A: yes \n Claim: 3 is more than 7. Verdict: true";
        let ids = tok.encode(text, false).unwrap();
        // Q : 3 4 ␣is ␣even ? ␣A : ␣yes ␣\n ␣Claim : ␣ 3 ␣is ␣more ␣than ␣ 7 . ␣Verdict : ␣true —
        // the digits after a space are " " and the digit (Qwen2's split), as in the corpus.
        let expected = ["Q", ":", "Ġ", "3", "4", "Ġis", "Ġeven", "?", "ĠA", ":", "Ġyes", "ĠĊ", "ĠClaim", ":", "Ġ", "3", "Ġis", "Ġmore", "Ġthan", "Ġ", "7", ".", "ĠVerdict", ":", "Ġtrue"];
        let want: Vec<u32> = expected.iter().map(|t| tok.token_to_id(t).unwrap_or_else(|| panic!("{t} not a token"))).collect();
        assert_eq!(ids, want);
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        // Text outside the corpus still encodes, by characters, and decodes back.
        let other = "zebra!";
        assert_eq!(tok.decode(&tok.encode(other, false).unwrap(), false).unwrap(), other);
    }

    #[test]
    fn a_corpus_without_words_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("blank.jsonl");
        std::fs::write(&corpus, "{\"text\": \"\"}\n").unwrap();
        let e = corpus_pieces(&corpus).unwrap_err();
        assert!(e.contains("blank.jsonl") && e.contains("no words"), "{e}");
        std::fs::write(&corpus, "{\"txt\": \"a\"}\n").unwrap();
        let e = corpus_pieces(&corpus).unwrap_err();
        assert!(e.contains("blank.jsonl:1") && e.contains("`text`"), "{e}");
    }
}
