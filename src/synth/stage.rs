//! Stage `kind = "synth"`: run a synthesis method over a corpus (or, for a generator, over
//! nothing) and write its data set.
//!
//! ```toml
//! [[stage]]
//! kind = "synth"
//! name = "rc"
//! method = "adaptllm"               # `retort synth --help` lists the methods
//! input = ["@corpora/domain.jsonl"] # files, folders, `@name` or `@name/file`
//! text_key = "text"                 # the corpus reader's keys (crate::text::corpus)
//! [stage.options]                   # the method's own options
//! domain = "biomedicine"
//! ```
//!
//! Output: the stage folder (or `out`), holding the method's files (`data.jsonl`, …) and a
//! `stats.json` with counts per task type and per skip reason. A killed stage resumes from
//! its last checkpoint (see [`super::output`]); a file under its final name is complete.
//!
//! With `stats = true`, once the output is finished the stage also measures its main file
//! (and each `stats_compare` corpus, under the `stats_prior` model when given) and writes
//! `corpus_stats.json` and its PNGs next to it (see [`super::stage_stats`]):
//!
//! ```toml
//! stats = true
//! stats_prior = "@prior"                      # a model folder or `@stage` (optional)
//! stats_compare = ["@human/human.jsonl"]      # corpora measured alongside (optional)
//! ```

use super::method::Method;
use super::methods;
use super::output::{Counts, SynthOutput};
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use crate::text::corpus::{Corpus, CorpusConfig, Format, Split};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthStage {
    /// The synthesis method (see [`methods::METHODS`]).
    pub method: String,
    /// Corpus files or folders (`@name` / `@name/file` for an earlier stage's output). Empty for
    /// a method that generates its data from the seed.
    #[serde(default)]
    pub input: Vec<String>,
    /// Write the data set here instead of the stage's folder in the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// Process at most this many documents (0: all).
    #[serde(default)]
    pub limit: u64,
    /// Documents between checkpoints of the output (a killed run redoes at most these).
    #[serde(default = "d_checkpoint")]
    pub checkpoint_every: u64,
    /// Corpus reader: `text`, `jsonl` or `parquet` (default: from each file's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Text files: one document per file (`document`) or per blank-line-separated block (`paragraph`).
    #[serde(default = "d_split")]
    pub split: Split,
    /// JSONL key / Parquet column that holds the text.
    #[serde(default = "d_text_key")]
    pub text_key: String,
    /// Documents larger than this many bytes are skipped (and counted).
    #[serde(default = "d_max_doc_bytes")]
    pub max_doc_bytes: usize,
    /// The method's own options.
    #[serde(default)]
    pub options: toml::Table,
    /// Measure the finished output (`corpus_stats.json` and PNGs in the output folder).
    #[serde(default)]
    pub stats: bool,
    /// With `stats`: the prior model (a folder or `@stage`) for perplexity and token probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_prior: Option<String>,
    /// With `stats`: corpora measured alongside the output (files or `@stage/file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats_compare: Vec<String>,
}

fn d_checkpoint() -> u64 {
    1000
}
fn d_split() -> Split {
    CorpusConfig::default().split
}
fn d_text_key() -> String {
    CorpusConfig::default().text_key
}
fn d_max_doc_bytes() -> usize {
    CorpusConfig::default().max_doc_bytes
}

impl SynthStage {
    pub fn corpus_config(&self) -> CorpusConfig {
        CorpusConfig { format: self.format, split: self.split, text_key: self.text_key.clone(), max_doc_bytes: self.max_doc_bytes }
    }

    /// The fingerprint of a resumable output: everything that changes what is written.
    fn fingerprint(&self, inputs: &[PathBuf], seed: u64) -> serde_json::Value {
        let files: Vec<serde_json::Value> = inputs
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(p).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                serde_json::json!({"path": p, "len": meta.map(|m| m.len()), "modified": modified.map(|d| d.as_nanos().to_string())})
            })
            .collect();
        // The stats keys change nothing of the data set: toggling them keeps a checkpoint.
        let mut table = self.to_table();
        for k in ["stats", "stats_prior", "stats_compare"] {
            table.remove(k);
        }
        let config = serde_json::to_value(table).unwrap_or_default();
        serde_json::json!({"config": config, "inputs": files, "seed": seed, "version": env!("CARGO_PKG_VERSION")})
    }
}

impl StageConfig for SynthStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Text, self.input.iter().map(|i| ("input", Some(i.as_str()))));
        r.extend(methods::references(&self.method, &self.options));
        r.extend(refs(Artifact::Model, [("stats_prior", self.stats_prior.as_deref())]));
        r.extend(refs(Artifact::Text, self.stats_compare.iter().map(|c| ("stats_compare", Some(c.as_str())))));
        r
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Text)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let spec = methods::find(&self.method).map_err(|e| ("method".to_string(), e))?;
        methods::check_options(spec, &self.options)?;
        if spec.reads_input && self.input.is_empty() {
            return Err(("input".into(), format!("method `{}` reads a corpus: give `input = [\"FILE or FOLDER\", ...]`", self.method)));
        }
        if !spec.reads_input && !self.input.is_empty() {
            return Err(("input".into(), format!("method `{}` generates its data and reads no input; remove `input`", self.method)));
        }
        if self.checkpoint_every == 0 {
            return Err(("checkpoint_every".into(), "must be at least 1 document".into()));
        }
        if !self.stats {
            if self.stats_prior.is_some() {
                return Err(("stats_prior".into(), "only used with `stats = true`: add it, or remove `stats_prior`".into()));
            }
            if !self.stats_compare.is_empty() {
                return Err(("stats_compare".into(), "only used with `stats = true`: add it, or remove `stats_compare`".into()));
            }
        }
        if let Some(p) = &self.stats_prior {
            if p.trim().is_empty() {
                return Err(("stats_prior".into(), "give a model folder or `@stage`".into()));
            }
        }
        if let Some(c) = self.stats_compare.iter().find(|c| c.trim().is_empty()) {
            return Err(("stats_compare".into(), format!("{c:?} is not a file: give files or `@stage/file`")));
        }
        Ok(())
    }

    fn preflight(&self) -> Result<()> {
        if let Ok(spec) = methods::find(&self.method) {
            (spec.preflight)(&self.options)?;
        }
        // Inputs outside the run are checked before the run starts.
        let outside: Vec<PathBuf> = self.input.iter().filter(|i| !i.starts_with('@')).map(PathBuf::from).collect();
        if !outside.is_empty() {
            Corpus::open(&outside, &self.corpus_config())?;
        }
        if let Some(out) = &self.out {
            crate::fsutil::check_writable_dir(&PathBuf::from(out))?;
        }
        for c in self.stats_compare.iter().filter(|c| !c.starts_with('@')) {
            Corpus::open(&[PathBuf::from(c)], &crate::text::corpus::CorpusConfig::default()).context("stats_compare")?;
        }
        if let Some(p) = self.stats_prior.as_ref().filter(|p| !p.starts_with('@')) {
            if !PathBuf::from(p).is_dir() {
                anyhow::bail!("stats_prior: {p} is not a model folder");
            }
        }
        Ok(())
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (None, "kB")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        let spec = methods::find(&self.method).map_err(anyhow::Error::msg)?;
        let out_dir = match &self.out {
            Some(o) => PathBuf::from(o),
            None => ctx.dir.clone(),
        };
        let mut method = methods::build(spec, &self.options, &super::method::MethodEnv::from_ctx(ctx))?;
        if !spec.reads_input {
            crate::fsutil::ensure_dir(&out_dir)?;
            let counts = method.generate(&out_dir, ctx)?;
            let mut stats = serde_json::json!({"method": self.method, "rows": counts.rows, "options": self.options});
            if !counts.tasks.is_empty() {
                stats["tasks"] = serde_json::json!(counts.tasks);
            }
            if let Some(own) = method.stats(&counts) {
                stats[self.method.as_str()] = own;
            }
            crate::fsutil::write_atomic(&out_dir.join(super::output::STATS_FILE), &serde_json::to_vec_pretty(&stats)?)?;
            let mut summary = finish_summary(out_dir.clone(), &counts, None);
            summary.summary.extend(method.live(&counts));
            self.corpus_stats(&out_dir, method.files(), &counts, ctx, &mut summary)?;
            return Ok(summary);
        }
        let inputs = self.input.iter().map(|i| ctx.resolve(i)).collect::<Result<Vec<_>>>()?;
        let mut corpus = Corpus::open(&inputs, &self.corpus_config())?;
        let mut out = SynthOutput::open(&out_dir, method.files(), self.fingerprint(&inputs, ctx.seed))?;
        if out.resumed_docs > 0 {
            ctx.events.info(format!("resuming after {} documents (checkpoint in {})", out.resumed_docs, out_dir.display()));
        }
        let total_kb = corpus.total_bytes().div_ceil(1024);
        let started = Instant::now();
        let mut last_report = Instant::now();
        let (mut docs_done, mut bytes_done) = (out.resumed_docs, out.resumed_bytes);
        let mut fresh_docs = 0u64;
        // Documents go to the method in batches of its batch size; the output is checkpointed
        // only between batches, so a resumed run redoes whole batches.
        let batch_size = method.batch_size().max(1);
        let mut batch: Vec<crate::text::corpus::Document> = Vec::with_capacity(batch_size);
        let mut exhausted = false;
        while !exhausted {
            batch.clear();
            while batch.len() < batch_size {
                if self.limit > 0 && docs_done + batch.len() as u64 >= self.limit {
                    exhausted = true;
                    break;
                }
                match corpus.next() {
                    Some(doc) => {
                        let doc = doc?;
                        if doc.id < out.resumed_docs {
                            continue; // done before the restart; its rows are in the part files
                        }
                        batch.push(doc);
                    }
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            method.process_batch(&batch, &mut out)?;
            let before = docs_done;
            out.counts.documents += batch.len() as u64;
            docs_done = batch.last().map_or(docs_done, |d| d.id + 1);
            bytes_done += batch.iter().map(|d| d.raw_bytes).sum::<u64>();
            fresh_docs += batch.len() as u64;
            if docs_done / self.checkpoint_every > before / self.checkpoint_every {
                out.checkpoint(docs_done, bytes_done)?;
            }
            if last_report.elapsed().as_secs_f64() >= 0.5 {
                last_report = Instant::now();
                let rate = fresh_docs as f64 / started.elapsed().as_secs_f64().max(1e-9);
                let live = method.live(&out.counts);
                let note: String = live.iter().map(|(k, v)| format!(", {k} {v:.2}")).collect();
                ctx.events.progress(bytes_done / 1024, Some(total_kb), "kB", Some(&format!("{docs_done} docs, {rate:.0} docs/s{note}")));
                if !live.is_empty() {
                    ctx.events.metrics(docs_done, live.iter().map(|(k, v)| (format!("synth/{k}"), *v)));
                }
                if ctx.control.poll().stop {
                    out.checkpoint(docs_done, bytes_done)?;
                    return Err(crate::stage::Interrupted.into());
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut counts: Counts = out.counts.clone();
        for (reason, n) in corpus.skipped().counts() {
            *counts.skipped.entry(format!("reader: {reason}")).or_default() += n;
        }
        if counts.documents == 0 {
            anyhow::bail!("no document of {} reached the method (skipped: {:?})", self.input.join(", "), counts.skipped);
        }
        let mut stats = serde_json::json!({
            "method": self.method,
            "inputs": inputs,
            "documents": counts.documents,
            "documents_out": counts.documents_out,
            "rows": counts.rows,
            "tasks": counts.tasks,
            "skipped": counts.skipped,
            "skip_examples": corpus.skipped().examples(),
            "input_bytes": bytes_done,
            // Of this run only (a resumed run's earlier part is not timed).
            "seconds": seconds,
            "mb_per_s": (bytes_done - out.resumed_bytes) as f64 / 1e6 / seconds.max(1e-9),
        });
        if let Some(own) = method.stats(&counts) {
            stats[self.method.as_str()] = own;
        }
        ctx.events.progress(total_kb, Some(total_kb), "kB", Some(&format!("{docs_done} docs")));
        let dir = out.finish(&stats).with_context(|| format!("writing the data set into {}", out_dir.display()))?;
        let mut summary = finish_summary(dir.clone(), &counts, Some(seconds));
        summary.summary.extend(method.live(&counts));
        self.corpus_stats(&dir, method.files(), &counts, ctx, &mut summary)?;
        Ok(summary)
    }
}

impl SynthStage {
    /// `stats = true`: measure the finished output's main file (and `stats_compare`) into
    /// `corpus_stats.json`; the numbers join the stage's summary.
    fn corpus_stats(&self, dir: &std::path::Path, files: &[&str], counts: &Counts, ctx: &mut StageCtx, summary: &mut StageOutput) -> Result<()> {
        if !self.stats {
            return Ok(());
        }
        let Some(main) = super::stage_stats::main_file(dir, files, &counts.rows) else {
            anyhow::bail!("stats: the method wrote none of {} into {}", files.join(", "), dir.display());
        };
        let compare = self.stats_compare.iter().map(|c| ctx.resolve(c)).collect::<Result<Vec<_>>>()?;
        let prior = self.stats_prior.as_deref().map(|p| ctx.resolve(p)).transpose()?;
        let report = super::stage_stats::write_stage_stats(dir, &main, &compare, prior.as_deref(), ctx)?;
        summary.summary.extend(super::stage_stats::summary_numbers(&report));
        Ok(())
    }
}

fn finish_summary(dir: PathBuf, counts: &Counts, seconds: Option<f64>) -> StageOutput {
    let mut summary: std::collections::BTreeMap<String, f64> = [("documents".to_string(), counts.documents as f64)].into();
    for (file, n) in &counts.rows {
        summary.insert(format!("rows/{file}"), *n as f64);
    }
    for (kind, n) in &counts.tasks {
        summary.insert(format!("tasks/{kind}"), *n as f64);
    }
    if let Some(s) = seconds {
        summary.insert("seconds".into(), s);
    }
    StageOutput { output: Some(dir), summary, table: Some(super::methods::counts_table(counts)) }
}

// `Method` is used through the boxed trait object.
#[allow(unused_imports)]
use Method as _;
