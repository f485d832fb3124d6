//! The documents of a held-out text file, one at a time.
//!
//! A stand-in for the shared corpus reader (`crate::text::corpus`, being written in parallel):
//! everything else in text evaluation reads documents only through [`documents`], so swapping
//! the reader in is a change to this file alone.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Each line of the JSONL file `path` as `(origin, text)`, where origin is `path:line` and
/// text is the string under `text_key`. Blank lines are skipped. A line that is not a JSON
/// object or whose `text_key` is missing or not a string is an error naming the file and line.
pub fn documents(path: &Path, text_key: &str) -> Result<impl Iterator<Item = Result<(String, String)>>> {
    if path.is_dir() {
        bail!("{} is a folder; name a JSONL file inside it (e.g. {}/test.jsonl)", path.display(), path.display());
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open the text file {}", path.display()))?;
    let path: PathBuf = path.to_path_buf();
    let key = text_key.to_string();
    let lines = BufReader::new(file).lines().enumerate();
    Ok(lines.filter_map(move |(i, line)| {
        let line_no = i + 1;
        let origin = format!("{}:{line_no}", path.display());
        let parsed = line.with_context(|| format!("{origin}: cannot read the line")).and_then(|text| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{origin}: not a JSON object; each line must be {{\"{key}\": \"...\"}}"))?;
            match value.get(&key) {
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => bail!("{origin}: `{key}` must be a string, found {}", json_kind(other)),
                None => {
                    let keys: Vec<&str> = value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
                    bail!("{origin}: missing key `{key}` (the line has: {}); set `text_key` / --text-key to the key holding the text", keys.join(", "))
                }
            }
        });
        parsed.transpose().map(|r| r.map(|text| (origin, text)))
    }))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
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
        assert!(err.contains("held.jsonl:1: missing key `body` (the line has: text)"), "{err}");
        std::fs::write(&p, "{\"text\": 3}\n").unwrap();
        let err = documents(&p, "text").unwrap().collect::<Result<Vec<_>>>().unwrap_err().to_string();
        assert!(err.contains("held.jsonl:1: `text` must be a string, found a number"), "{err}");
        assert!(documents(&dir.path().join("none.jsonl"), "text").is_err());
    }
}
