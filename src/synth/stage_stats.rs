//! `stats = true` in a synth stage: once the stage's output is finished, the statistics of
//! [`super::stats`] for its main file (the method's first file: `data.jsonl`, `human.jsonl`,
//! …) and for each `stats_compare` corpus, under `stats_prior` when given, written into the
//! output folder as `corpus_stats.json` (what `retort synth stats --json` prints for the same
//! files) plus its PNGs when a font is available.
//!
//! Every corpus is read with the default reader (JSONL key `text`), as `retort synth stats`
//! reads it without `--set`.

use super::stats::{self, CorpusStats, Prior, StatsConfig, StatsReport};
use crate::stage::StageCtx;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The file written into the stage's output folder.
pub const CORPUS_STATS_FILE: &str = "corpus_stats.json";

/// A corpus's name: the file stem (folder name), "-2", "-3", … when taken.
fn corpus_name(path: &Path, taken: &[String]) -> String {
    let base = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    if !taken.contains(&base) {
        return base;
    }
    (2..).map(|i| format!("{base}-{i}")).find(|n| !taken.contains(n)).unwrap_or(base)
}

/// The main file among `files` (the method's, main first) that exists in `dir`; else the
/// first file the stage counted rows for.
pub fn main_file(dir: &Path, files: &[&str], rows: &std::collections::BTreeMap<String, u64>) -> Option<PathBuf> {
    files.iter().map(|f| dir.join(f)).chain(rows.keys().map(|f| dir.join(f))).find(|p| p.is_file())
}

/// Measures `main` and each of `compare` (already resolved), writes `corpus_stats.json` and
/// the PNGs into `out_dir`, logs a summary line; returns the report.
pub fn write_stage_stats(out_dir: &Path, main: &Path, compare: &[PathBuf], prior_dir: Option<&Path>, ctx: &mut StageCtx) -> Result<StatsReport> {
    let cfg = StatsConfig::default();
    let mut corpora: Vec<(String, PathBuf)> = Vec::new();
    for path in std::iter::once(main.to_path_buf()).chain(compare.iter().cloned()) {
        let taken: Vec<String> = corpora.iter().map(|c| c.0.clone()).collect();
        corpora.push((corpus_name(&path, &taken), path));
    }
    // Every corpus opens before the prior loads: a missing file fails now.
    for (_, path) in &corpora {
        crate::text::corpus::Corpus::open(std::slice::from_ref(path), &cfg.corpus).context("stats_compare")?;
    }
    let loaded = match prior_dir {
        Some(dir) => Some(crate::eval::run::EvalModel::load(dir, &ctx.device).context("stats_prior")?),
        None => None,
    };
    let prior = loaded.as_ref().map(|m| Prior { name: m.dir.display().to_string(), decoder: &m.model.decoder, tok: &m.tok });
    let mut results: Vec<CorpusStats> = Vec::new();
    for (name, path) in &corpora {
        ctx.events.info(format!("corpus statistics of {}{}", path.display(), if prior.is_some() { " (with the prior)" } else { "" }));
        let events = &ctx.events;
        let mut progress = |docs: u64, read: u64, total: u64| {
            events.progress(read / 1024, Some(total.div_ceil(1024)), "kB", Some(&format!("stats of {name}: {docs} docs")));
        };
        results.push(stats::corpus_stats(name, std::slice::from_ref(path), &cfg, prior.as_ref(), &mut progress)?);
    }
    let report = StatsReport::build(results);
    let path = out_dir.join(CORPUS_STATS_FILE);
    crate::fsutil::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    let mut pngs = Vec::new();
    if let Some(plot) = stats::plotter() {
        pngs = plot(out_dir, &report)?;
    }
    for c in &report.corpora {
        ctx.events.info(summary_line(c));
    }
    let drawn: String = pngs.iter().map(|p| format!(", {}", p.file_name().unwrap_or_default().to_string_lossy())).collect();
    ctx.events.info(format!("corpus statistics in {} ({CORPUS_STATS_FILE}{drawn})", out_dir.display()));
    Ok(report)
}

/// `human: entropy 9.912 bits, distinct-2 0.4123, median PPL 31.2, P(token) < 0.1: 35.1 %, ≥ 0.9: 20.3 %`.
pub fn summary_line(c: &CorpusStats) -> String {
    let num = |x: f64, d: usize| if x.is_finite() { format!("{x:.d$}") } else { "-".to_string() };
    let mut s = format!("{}: entropy {} bits, distinct-2 {}", c.name, num(c.ngrams.entropy_bits, 3), num(c.ngrams.distinct_2, 4));
    match &c.prior {
        Some(p) => s.push_str(&format!(
            ", median PPL {}, P(token) < 0.1: {} %, ≥ 0.9: {} %",
            num(p.doc_ppl.p50, 2),
            num(p.token_prob_percent[0], 1),
            num(p.token_prob_percent[9], 1)
        )),
        None => s.push_str(" (no stats_prior: no perplexity)"),
    }
    s
}

/// The numbers a stage adds to its summary: `stats/<corpus>/…`.
pub fn summary_numbers(report: &StatsReport) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for c in &report.corpora {
        out.push((format!("stats/{}/entropy_bits", c.name), c.ngrams.entropy_bits));
        out.push((format!("stats/{}/distinct_2", c.name), c.ngrams.distinct_2));
        if let Some(p) = &c.prior {
            out.push((format!("stats/{}/doc_ppl_p50", c.name), p.doc_ppl.p50));
        }
    }
    out.retain(|(_, v)| v.is_finite());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let taken = vec!["data".to_string(), "data-2".to_string()];
        assert_eq!(corpus_name(Path::new("x/data.jsonl"), &[]), "data");
        assert_eq!(corpus_name(Path::new("y/data.jsonl"), &taken), "data-3");
    }
}
