//! The resume journal of a visual synthesis: one JSON line per finished image, appended and
//! flushed batch by batch, keyed by the image's `syn_id`. A killed run that starts again with
//! the same fingerprint (inputs, models, options) skips the images already in the journal; a
//! torn last line (the kill came mid-write) is cut off; another fingerprint starts over.
//! Synthesis is greedy, so an image redone or skipped gives the same record either way and a
//! resumed run's final files equal an uninterrupted run's.

use super::filter::Label;
use super::parse::Triplet;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What synthesis made of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub syn_id: u64,
    /// The synthesizer's continuation, special tokens kept.
    pub raw: String,
    /// Complete rounds parsed from it.
    pub rounds: usize,
    /// The first question under both hints, if any.
    pub triplet: Option<Triplet>,
    /// The judge's label of the triplet.
    pub label: Option<Label>,
    /// The judge's raw output (LM checker) or `"rule"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged: Option<String>,
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// The records already done, by `syn_id`.
    pub done: BTreeMap<u64, Record>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    fingerprint: serde_json::Value,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for this fingerprint.
    pub fn open(path: &Path, fingerprint: &serde_json::Value) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            crate::fsutil::ensure_dir(dir)?;
        }
        let mut done = BTreeMap::new();
        let mut keep = 0u64;
        if let Ok(text) = std::fs::read_to_string(path) {
            let mut lines = text.split_inclusive('\n');
            let header = lines.next().filter(|l| l.ends_with('\n')).and_then(|l| serde_json::from_str::<Header>(l).ok());
            if header.is_some_and(|h| &h.fingerprint == fingerprint) {
                keep = text.find('\n').map_or(0, |i| i as u64 + 1);
                for line in lines {
                    // A line without its newline, or unreadable, was torn by the kill.
                    let Some(record) = line.strip_suffix('\n').and_then(|l| serde_json::from_str::<Record>(l).ok()) else { break };
                    keep += line.len() as u64;
                    done.insert(record.syn_id, record);
                }
            }
        }
        let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).with_context(|| format!("opening {}", path.display()))?;
        file.set_len(keep)?;
        let mut journal = Journal { path: path.to_path_buf(), file, done };
        use std::io::Seek;
        journal.file.seek(std::io::SeekFrom::End(0))?;
        if keep == 0 {
            journal.append_line(&serde_json::to_vec(&Header { fingerprint: fingerprint.clone() })?)?;
        }
        Ok(journal)
    }

    /// Appends the records of a batch and makes them durable.
    pub fn append(&mut self, records: Vec<Record>) -> Result<()> {
        let mut bytes = Vec::new();
        for r in &records {
            bytes.extend(serde_json::to_vec(r)?);
            bytes.push(b'\n');
        }
        self.file.write_all(&bytes).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.sync_data()?;
        self.done.extend(records.into_iter().map(|r| (r.syn_id, r)));
        Ok(())
    }

    fn append_line(&mut self, line: &[u8]) -> Result<()> {
        self.file.write_all(line)?;
        self.file.write_all(b"\n")?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Removes the journal once the final files are written.
    pub fn remove(self) -> Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> Record {
        Record { syn_id: id, raw: format!("out {id}"), rounds: 0, triplet: None, label: None, judged: None }
    }

    #[test]
    fn a_torn_line_is_cut_and_another_fingerprint_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let fp = serde_json::json!({"a": 1});
        let mut j = Journal::open(&path, &fp).unwrap();
        j.append(vec![record(0), record(1)]).unwrap();
        drop(j);
        // The kill tore the third record.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"syn_id\": 2, \"raw").unwrap();
        drop(f);
        let mut j = Journal::open(&path, &fp).unwrap();
        assert_eq!(j.done.keys().copied().collect::<Vec<_>>(), [0, 1]);
        j.append(vec![record(2)]).unwrap();
        drop(j);
        let j = Journal::open(&path, &fp).unwrap();
        assert_eq!(j.done.len(), 3);
        assert_eq!(j.done[&2], record(2));
        drop(j);
        let j = Journal::open(&path, &serde_json::json!({"a": 2})).unwrap();
        assert!(j.done.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1, "only the new header");
    }
}
