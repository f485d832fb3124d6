//! The files a synthesis run writes, resumable and never half-written.
//!
//! While a synth runs, its output files grow as `.part` files in a work folder beside the
//! final ones (`OUT/.synth-partial/`), with a `state.json` checkpoint that records how many
//! input documents are done and how long each part file was at that moment. A killed run
//! that starts again with the same method, config and inputs (the *fingerprint*) truncates
//! the part files back to the checkpoint and carries on from the next document; anything
//! else starts over. Only a finished run moves the files to their final names, `stats.json`
//! last, so a file under its final name is always complete.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The work folder's name inside the output folder.
pub const WORK_DIR: &str = ".synth-partial";
/// The statistics file, written last: its presence means the output is complete.
pub const STATS_FILE: &str = "stats.json";

/// Counts a synthesis run reports in `stats.json` (and checkpoints, so a resumed run's
/// counts are those of one uninterrupted run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Documents the method was given (after the corpus reader's skips).
    pub documents: u64,
    /// Documents that produced output.
    pub documents_out: u64,
    /// Rows written per output file.
    pub rows: BTreeMap<String, u64>,
    /// What the method made, per kind (e.g. AdaptLLM's `nli/entail`).
    pub tasks: BTreeMap<String, u64>,
    /// Documents the method itself left out, per reason (the reader's skips are added at the end).
    pub skipped: BTreeMap<String, u64>,
}

impl Counts {
    pub fn add_task(&mut self, kind: &str) {
        *self.tasks.entry(kind.to_string()).or_default() += 1;
    }
    pub fn add_skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_string()).or_default() += 1;
    }
}

/// The checkpoint in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    fingerprint: serde_json::Value,
    /// Input documents fully processed (their ids are `0..docs_done`).
    docs_done: u64,
    /// Input bytes consumed by those documents.
    bytes_done: u64,
    /// Length of each part file when the checkpoint was taken.
    sizes: BTreeMap<String, u64>,
    counts: Counts,
}

struct Part {
    name: String,
    writer: BufWriter<File>,
    written: u64,
}

/// An output folder being written. Rows go to named files (`data.jsonl`, …).
pub struct SynthOutput {
    dir: PathBuf,
    work: PathBuf,
    parts: Vec<Part>,
    fingerprint: serde_json::Value,
    /// Where the run starts: documents and bytes already done, and their counts.
    pub resumed_docs: u64,
    pub resumed_bytes: u64,
    pub counts: Counts,
}

impl SynthOutput {
    /// Open `dir` for writing the files `names`. With a checkpoint whose fingerprint equals
    /// `fingerprint`, continue from it; otherwise start from nothing.
    pub fn open(dir: &Path, names: &[&str], fingerprint: serde_json::Value) -> Result<SynthOutput> {
        crate::fsutil::ensure_dir(dir)?;
        let work = dir.join(WORK_DIR);
        let state = read_state(&work).filter(|s| s.fingerprint == fingerprint && names.iter().all(|n| s.sizes.contains_key(*n)));
        if state.is_none() && work.exists() {
            std::fs::remove_dir_all(&work).with_context(|| format!("removing the stale partial output {}", work.display()))?;
        }
        crate::fsutil::ensure_dir(&work)?;
        let mut parts = Vec::new();
        for name in names {
            let path = work.join(format!("{name}.part"));
            let keep = state.as_ref().map_or(0, |s| s.sizes[*name]);
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(keep == 0)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if keep > 0 {
                let len = file.metadata()?.len();
                anyhow::ensure!(
                    len >= keep,
                    "{} is shorter ({len} bytes) than its checkpoint says ({keep}); delete {} to start over",
                    path.display(),
                    work.display()
                );
                // Rows written after the checkpoint belong to documents that will be redone.
                file.set_len(keep)?;
            }
            let mut writer = BufWriter::new(file);
            use std::io::Seek;
            writer.seek(std::io::SeekFrom::End(0))?;
            parts.push(Part { name: name.to_string(), writer, written: keep });
        }
        let (resumed_docs, resumed_bytes, counts) = match state {
            Some(s) => (s.docs_done, s.bytes_done, s.counts),
            None => (0, 0, Counts::default()),
        };
        Ok(SynthOutput { dir: dir.to_path_buf(), work, parts, fingerprint, resumed_docs, resumed_bytes, counts })
    }

    /// Append one JSON row to the file `name`.
    pub fn write_row<T: Serialize>(&mut self, name: &str, row: &T) -> Result<()> {
        let part = self
            .parts
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow::anyhow!("internal: no output file named {name}"))?;
        let mut line = serde_json::to_vec(row)?;
        line.push(b'\n');
        part.writer.write_all(&line)?;
        part.written += line.len() as u64;
        *self.counts.rows.entry(name.to_string()).or_default() += 1;
        Ok(())
    }

    /// Make everything written so far durable and record that documents `0..docs_done`
    /// (`bytes_done` input bytes) are done.
    pub fn checkpoint(&mut self, docs_done: u64, bytes_done: u64) -> Result<()> {
        let mut sizes = BTreeMap::new();
        for p in &mut self.parts {
            p.writer.flush()?;
            p.writer.get_ref().sync_data()?;
            sizes.insert(p.name.clone(), p.written);
        }
        let state = State { fingerprint: self.fingerprint.clone(), docs_done, bytes_done, sizes, counts: self.counts.clone() };
        crate::fsutil::write_atomic(&self.work.join("state.json"), &serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// Move the part files to their final names and write `stats` as `stats.json` (last).
    pub fn finish(mut self, stats: &serde_json::Value) -> Result<PathBuf> {
        for p in &mut self.parts {
            p.writer.flush()?;
            p.writer.get_ref().sync_data()?;
        }
        // The old stats.json (of an earlier complete run) goes first: until the new one is
        // written, the folder does not claim to be complete.
        let stats_path = self.dir.join(STATS_FILE);
        if stats_path.exists() {
            std::fs::remove_file(&stats_path)?;
        }
        for p in &self.parts {
            let from = self.work.join(format!("{}.part", p.name));
            let to = self.dir.join(&p.name);
            std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        crate::fsutil::write_atomic(&stats_path, &serde_json::to_vec_pretty(stats)?)?;
        std::fs::remove_dir_all(&self.work).ok();
        Ok(self.dir)
    }
}

fn read_state(work: &Path) -> Option<State> {
    let bytes = std::fs::read(work.join("state.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one() {
        let t = tempfile::tempdir().unwrap();
        let write = |out: &mut SynthOutput, doc: u64| {
            out.write_row("data.jsonl", &json!({"doc": doc})).unwrap();
            if doc % 2 == 0 {
                out.write_row("tasks.jsonl", &json!({"task_of": doc})).unwrap();
                out.counts.add_task("even");
            }
            out.counts.documents += 1;
        };
        // Uninterrupted: documents 0..6.
        let whole = t.path().join("whole");
        let mut out = SynthOutput::open(&whole, &["data.jsonl", "tasks.jsonl"], json!("fp")).unwrap();
        (0..6).for_each(|d| write(&mut out, d));
        let counts = out.counts.clone();
        out.finish(&json!({"counts": counts})).unwrap();

        // Killed: checkpoint after 3 documents, then two more written and lost.
        let cut = t.path().join("cut");
        let mut out = SynthOutput::open(&cut, &["data.jsonl", "tasks.jsonl"], json!("fp")).unwrap();
        (0..3).for_each(|d| write(&mut out, d));
        out.checkpoint(3, 30).unwrap();
        (3..5).for_each(|d| write(&mut out, d));
        out.parts.iter_mut().for_each(|p| p.writer.flush().unwrap());
        drop(out);
        assert!(!cut.join("data.jsonl").exists() && !cut.join(STATS_FILE).exists(), "nothing final before the end");

        let mut out = SynthOutput::open(&cut, &["data.jsonl", "tasks.jsonl"], json!("fp")).unwrap();
        assert_eq!((out.resumed_docs, out.resumed_bytes, out.counts.documents), (3, 30, 3));
        (3..6).for_each(|d| write(&mut out, d));
        let counts = out.counts.clone();
        out.finish(&json!({"counts": counts})).unwrap();

        for f in ["data.jsonl", "tasks.jsonl", STATS_FILE] {
            assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(cut.join(f)).unwrap(), "{f}");
        }
        assert_eq!(lines(&cut.join("data.jsonl")).len(), 6);
        assert!(!cut.join(WORK_DIR).exists());
    }

    #[test]
    fn another_fingerprint_starts_over() {
        let t = tempfile::tempdir().unwrap();
        let mut out = SynthOutput::open(t.path(), &["data.jsonl"], json!({"seed": 1})).unwrap();
        out.write_row("data.jsonl", &json!(1)).unwrap();
        out.checkpoint(1, 10).unwrap();
        drop(out);
        let out = SynthOutput::open(t.path(), &["data.jsonl"], json!({"seed": 2})).unwrap();
        assert_eq!(out.resumed_docs, 0);
        out.finish(&json!({})).unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("data.jsonl")).unwrap(), "");
    }

    #[test]
    fn a_finished_folder_being_rewritten_does_not_claim_to_be_complete() {
        let t = tempfile::tempdir().unwrap();
        let out = SynthOutput::open(t.path(), &["data.jsonl"], json!(1)).unwrap();
        out.finish(&json!({"run": 1})).unwrap();
        assert!(t.path().join(STATS_FILE).exists());
        // A second run into the same folder: the old stats.json stays until the new one is
        // done, but the finish removes it before moving files.
        let mut out = SynthOutput::open(t.path(), &["data.jsonl"], json!(2)).unwrap();
        out.write_row("data.jsonl", &json!("x")).unwrap();
        let stats = out.finish(&json!({"run": 2})).unwrap().join(STATS_FILE);
        assert!(std::fs::read_to_string(stats).unwrap().contains("\"run\": 2"));
    }
}
