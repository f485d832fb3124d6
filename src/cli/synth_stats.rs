//! `retort synth stats INPUT... [--compare OTHER...] [--prior MODEL] [--json] [--out DIR]`:
//! the statistics of `crate::synth::stats` for one corpus, or two side by side.

use crate::synth::stats::{self, NgramTokens, Prior, StatsConfig, StatsReport};
use crate::text::corpus::{Format, Split};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The configuration from `--set KEY=VALUE` options.
fn config(sets: &[String]) -> Result<StatsConfig> {
    let mut cfg = StatsConfig::default();
    for set in sets {
        let Some((key, value)) = set.split_once('=') else { bail!("--set {set}: expected KEY=VALUE") };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        let num = || value.parse::<usize>().with_context(|| format!("--set {key}: expected a whole number, got {value:?}"));
        match key {
            "text_key" => cfg.corpus.text_key = value.to_string(),
            "split" => {
                cfg.corpus.split = match value {
                    "document" => Split::Document,
                    "paragraph" => Split::Paragraph,
                    _ => bail!("--set split: expected document or paragraph, got {value:?}"),
                }
            }
            "format" => {
                cfg.corpus.format = Some(match value {
                    "text" => Format::Text,
                    "jsonl" => Format::Jsonl,
                    "parquet" => Format::Parquet,
                    _ => bail!("--set format: expected text, jsonl or parquet, got {value:?}"),
                })
            }
            "max_doc_bytes" => cfg.corpus.max_doc_bytes = num()?,
            "limit" => cfg.limit = Some(num()? as u64),
            "buckets" => cfg.buckets = num()?,
            "ngram_tokens" => {
                cfg.ngram_tokens = match value {
                    "words" => NgramTokens::Words,
                    "prior" => NgramTokens::Prior,
                    _ => bail!("--set ngram_tokens: expected words or prior, got {value:?}"),
                }
            }
            "top_bigrams" => cfg.top_bigrams = num()?,
            "top_capacity" => cfg.top_capacity = num()?,
            "max_distinct" => cfg.max_distinct = num()?,
            "max_len" => cfg.max_len = Some(num()?),
            "stride" => cfg.stride = Some(num()?),
            "batch_size" => cfg.batch_size = num()?.max(1),
            _ => bail!(
                "--set {key}: not a stats key (text_key, split, format, max_doc_bytes, limit, buckets, ngram_tokens, top_bigrams, top_capacity, max_distinct, max_len, stride, batch_size)"
            ),
        }
    }
    cfg.check()?;
    Ok(cfg)
}

/// A corpus's name: its first input's file stem (folder name), "-2" when taken.
fn corpus_name(first: &str, taken: &[String]) -> String {
    let p = Path::new(first);
    let base = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| first.to_string());
    if taken.contains(&base) {
        format!("{base}-2")
    } else {
        base
    }
}

/// What `retort synth stats` was given (the fields of `SynthArgs` it uses).
pub struct StatsArgs<'a> {
    pub inputs: &'a [String],
    pub compare: &'a [String],
    pub prior: Option<&'a Path>,
    pub json: bool,
    pub out: Option<&'a Path>,
    pub set: &'a [String],
    pub dry_run: bool,
}

pub fn cmd_stats(args: &StatsArgs) -> Result<()> {
    if args.inputs.is_empty() {
        bail!("say which corpus: retort synth stats INPUT... (files or folders)");
    }
    if args.dry_run {
        bail!("retort synth stats has no --dry-run (it writes nothing without --out)");
    }
    let cfg = config(args.set)?;
    if let Some(out) = args.out {
        crate::fsutil::check_writable_dir(out)?;
        crate::fsutil::ensure_dir(out)?;
    }
    let mut corpora: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for list in [args.inputs, args.compare] {
        if list.is_empty() {
            continue;
        }
        let taken: Vec<String> = corpora.iter().map(|c| c.0.clone()).collect();
        corpora.push((corpus_name(&list[0], &taken), list.iter().map(PathBuf::from).collect()));
    }
    // Open every corpus once before loading a model: a missing file or empty folder fails now.
    for (_, inputs) in &corpora {
        crate::text::corpus::Corpus::open(inputs, &cfg.corpus)?;
    }
    let loaded = match args.prior {
        Some(dir) => Some(crate::eval::run::EvalModel::load(dir, &candle_core::Device::Cpu)?),
        None => None,
    };
    let prior = loaded.as_ref().map(|m| Prior { name: m.dir.display().to_string(), decoder: &m.model.decoder, tok: &m.tok });
    let mut results = Vec::new();
    for (name, inputs) in &corpora {
        let mut progress = |docs: u64, read: u64, total: u64| {
            if !args.json || args.out.is_some() {
                eprintln!("  {name}: {docs} documents, {:.0} % of the input read", if total > 0 { 100.0 * read as f64 / total as f64 } else { 100.0 });
            }
        };
        results.push(stats::corpus_stats(name, inputs, &cfg, prior.as_ref(), &mut progress)?);
    }
    let report = StatsReport::build(results);
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = args.out {
        let path = out.join("stats.json");
        crate::fsutil::write_atomic(&path, json.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        let pngs = crate::report::corpus_stats_plots(out, &report)?;
        if !crate::report::fonts_available() && !pngs.is_empty() {
            eprintln!("retort: no TrueType font found (set RETORT_FONT=/path/to/font.ttf): the plots have no text");
        }
        eprintln!("retort: statistics in {} (stats.json{})", out.display(), pngs.iter().map(|p| format!(", {}", p.file_name().unwrap_or_default().to_string_lossy())).collect::<String>());
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
