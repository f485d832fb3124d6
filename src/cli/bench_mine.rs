//! `retort bench mine`: AdaptLLM's mining pass (every pattern over every document) timed on a
//! corpus, for the side-by-side with Python's `re` in benches/peer_mine.py. Reading the files
//! is not timed: the documents are read once through the corpus readers, then mined
//! `warmup + repeats` times on one thread, as the Python peer does.

use crate::synth::adaptllm::mine;
use crate::text::corpus::{Corpus, CorpusConfig};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct MineBenchArgs {
    /// Corpus files or folders (text, JSONL or Parquet, as `retort synth` reads them).
    pub inputs: Vec<PathBuf>,
    /// JSONL key / Parquet column holding the text.
    #[arg(long, default_value = "text")]
    pub text_key: String,
    /// Measured runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Discarded runs before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print the mining patterns as JSON (for benches/peer_mine.py) and exit.
    #[arg(long)]
    pub patterns_json: bool,
}

#[derive(Serialize)]
struct MineReport {
    side: &'static str,
    bytes: u64,
    documents: usize,
    matches: usize,
    median_s: f64,
    mb_per_s: f64,
    runs: Vec<f64>,
}

pub fn cmd_bench_mine(args: &MineBenchArgs) -> Result<()> {
    if args.patterns_json {
        println!("{}", serde_json::to_string_pretty(&mine::patterns_json())?);
        return Ok(());
    }
    if args.inputs.is_empty() {
        bail!("give corpus files to mine: retort bench mine FILE... (or --patterns-json)");
    }
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let cfg = CorpusConfig { text_key: args.text_key.clone(), ..CorpusConfig::default() };
    let mut corpus = Corpus::open(&args.inputs, &cfg)?;
    let mut docs = Vec::new();
    for doc in &mut corpus {
        docs.push(doc?.text);
    }
    let bytes: u64 = docs.iter().map(|d| d.len() as u64).sum();
    let mut runs = Vec::with_capacity(args.repeats);
    let mut matches = 0;
    for i in 0..args.warmup + args.repeats {
        let start = Instant::now();
        let found: usize = docs.iter().map(|d| mine::mine(d).len()).sum();
        let elapsed = start.elapsed().as_secs_f64();
        matches = found;
        if i >= args.warmup {
            runs.push(elapsed);
        }
    }
    let median_s = median(&runs);
    let report = MineReport { side: "retort regex", bytes, documents: docs.len(), matches, median_s, mb_per_s: bytes as f64 / 1e6 / median_s, runs };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "mine: {} documents, {:.2} MB, {} matches; median {:.4} s over {} runs = {:.1} MB/s (one thread)",
            report.documents,
            bytes as f64 / 1e6,
            report.matches,
            report.median_s,
            report.runs.len(),
            report.mb_per_s
        );
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
