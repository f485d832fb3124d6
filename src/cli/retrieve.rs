//! `retort retrieve`: what a trained UPRISE retriever returns for a query: the top-K pool
//! prompts by inner product, best first, with their task and cluster.

use crate::uprise::biencoder::Retriever;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RetrieveArgs {
    /// A retriever folder (`<run>/<retrieve stage>/retriever`, the stage folder itself, or the
    /// folder's index.safetensors): query/ and prompt/ encoders, index.safetensors, pool.jsonl,
    /// retriever.json.
    pub index: PathBuf,
    /// The task input to find demonstrations for (repeatable).
    #[arg(long = "query", value_name = "TEXT", required = true)]
    pub queries: Vec<String>,
    /// Prompts to return per query.
    #[arg(short, long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub k: u64,
    /// Print one JSON object per query (`{"query", "pids", "sims", "prompts"}`).
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_retrieve(args: &RetrieveArgs) -> Result<()> {
    // An empty query still embeds (to the special tokens alone) and "finds" prompts: refuse it.
    if let Some(i) = args.queries.iter().position(|q| q.trim().is_empty()) {
        bail!("--query number {} is empty; give the task input to find demonstrations for", i + 1);
    }
    let dir = Retriever::locate(&args.index)?;
    let r = Retriever::load(&dir, &candle_core::Device::Cpu)?;
    if args.k as usize > r.index.len() {
        eprintln!("note: -k {} is more than the index's {} prompts; all of them are listed", args.k, r.index.len());
    }
    for q in &args.queries {
        let hits = r.search(q, args.k as usize)?;
        if args.json {
            let prompts: Vec<String> = hits.iter().map(|(p, _)| r.pool[*p].demo()).collect();
            let pids: Vec<usize> = hits.iter().map(|(p, _)| *p).collect();
            let sims: Vec<f32> = hits.iter().map(|(_, s)| *s).collect();
            println!("{}", serde_json::json!({ "query": q, "pids": pids, "sims": sims, "prompts": prompts }));
            continue;
        }
        println!("query: {q}");
        for (rank, (pid, sim)) in hits.iter().enumerate() {
            let row = &r.pool[*pid];
            println!("  {:>2}. sim {sim:>9.4}  pid {pid:<6} {} / {}\n      {}", rank + 1, row.cluster, row.task, row.demo());
        }
    }
    Ok(())
}
