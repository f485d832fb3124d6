//! The documents of a held-out text set, one at a time, through the shared corpus readers
//! (`crate::text::corpus`): a JSONL file (`text_key`), a text file or folder, or Parquet.
//!
//! Unlike a synth run, an evaluation does not skip bad rows: a perplexity over fewer documents
//! than the file holds would be a different number, so the first row the reader would skip is
//! an error naming the file, line and reason.

use crate::text::corpus::{Corpus, CorpusConfig};
use anyhow::Result;
use std::path::Path;

/// Each document of `path` as `(origin, text)`, where origin is `path:line` (JSONL, text) or
/// `path#row` (Parquet) and text is the string under `text_key` (JSONL / Parquet).
pub fn documents(path: &Path, text_key: &str) -> Result<impl Iterator<Item = Result<(String, String)>>> {
    let cfg = CorpusConfig { text_key: text_key.to_string(), ..CorpusConfig::default() };
    let corpus = Corpus::open(&[path.to_path_buf()], &cfg)?;
    Ok(Strict { corpus, failed: false })
}

/// A corpus that stops at the first skipped row, with that row's reason as the error.
struct Strict {
    corpus: Corpus,
    failed: bool,
}

impl Iterator for Strict {
    type Item = Result<(String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.corpus.next();
        if self.corpus.skipped().total() > 0 {
            self.failed = true;
            let first = self.corpus.skipped().examples().first().cloned().unwrap_or_default();
            return Some(Err(anyhow::anyhow!(
                "{first}; an evaluation set must not have rows that cannot be scored: fix or remove it (for JSONL, `text_key` / --text-key names the key holding the text)"
            )));
        }
        match item? {
            Ok(doc) => Some(Ok((doc.origin, doc.text))),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_texts_with_origins_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("held.jsonl");
        std::fs::write(&p, "{\"text\": \"a b\"}\n\n{\"body\": \"c\", \"text\": \"d\"}\n").unwrap();
        let docs: Vec<(String, String)> = documents(&p, "text").unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[1].0.ends_with("held.jsonl:3"), "{}", docs[1].0);
        assert_eq!(docs[1].1, "d");
        let err = documents(&p, "body").unwrap().collect::<Result<Vec<_>>>().unwrap_err().to_string();
        assert!(err.contains("held.jsonl:1: no key `body`") && err.contains("must not have rows that cannot be scored"), "{err}");
        std::fs::write(&p, "{\"text\": 3}\n").unwrap();
        let err = documents(&p, "text").unwrap().collect::<Result<Vec<_>>>().unwrap_err().to_string();
        assert!(err.contains("held.jsonl:1: `text` is a number, not a string"), "{err}");
        // Plain text files are documents too (one per file here).
        let t = dir.path().join("held.txt");
        std::fs::write(&t, "one document\nof two lines\n").unwrap();
        let docs: Vec<(String, String)> = documents(&t, "text").unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(docs.len(), 1);
        assert!(docs[0].1.starts_with("one document"), "{:?}", docs[0]);
        assert!(documents(&dir.path().join("none.jsonl"), "text").is_err());
    }
}
