//! `retort ood`: reconstruction-based OOD detection with a diffusion-fine-tuned encoder
//! (research/synth-spec.md §5.4): AUROC and FPR95 of an ID test set against each OOD set at
//! each `--t`, and a JSONL dump of every score.

use crate::diffusion::detect::{detect, DetectRequest};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct OodArgs {
    /// An encoder folder with its MLM head (a `denoise` stage's `model/`, or a RoBERTa/BERT MLM checkpoint).
    pub model: PathBuf,
    /// The ID test texts: JSONL rows {"text", "source"?}.
    #[arg(long, value_name = "FILE")]
    pub id: PathBuf,
    /// An OOD set (repeatable), JSONL rows {"text", "source"?}.
    #[arg(long = "ood", value_name = "FILE", num_args = 1.., required = true)]
    pub ood: Vec<PathBuf>,
    /// The timestep of the score (repeatable; the paper uses 500 for SST-2, 600 for 20NG and TREC, 700 for IMDB).
    #[arg(long = "t", default_values_t = [600])]
    pub t: Vec<usize>,
    /// Mix in the Mahalanobis distance: score = λ·recon + (1−λ)·maha (the paper: 0.99). Needs --id-train.
    #[arg(long, value_name = "LAMBDA", requires = "id_train")]
    pub maha: Option<f64>,
    /// The ID training texts the Mahalanobis mean and covariance are fitted on.
    #[arg(long, value_name = "FILE")]
    pub id_train: Option<PathBuf>,
    /// Write every score as JSONL {"id", "source", "ood", "t", "recon_loss", "maha"?, "score"}.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// The seed of the noise draws (the paper's scripts use 42).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Cut texts longer than the model's position table (the reference truncates to 512) instead of refusing them.
    #[arg(long)]
    pub truncate: bool,
}

pub fn cmd_ood(args: &OodArgs) -> Result<()> {
    if let Some(l) = args.maha {
        if !(0.0..=1.0).contains(&l) {
            bail!("--maha {l}: λ must be in [0, 1] (the paper uses 0.99)");
        }
    }
    let req = DetectRequest {
        model: args.model.clone(),
        id: args.id.clone(),
        ood: args.ood.clone(),
        ts: args.t.clone(),
        maha: args.maha.zip(args.id_train.clone()),
        batch_size: args.batch as usize,
        seed: args.seed,
        truncate: args.truncate,
    };
    let report = detect(&req, &candle_core::Device::Cpu, &mut |m| eprintln!("retort: {m}"))?;
    if let Some(path) = &args.dump {
        report.write_dump(path)?;
    }
    if args.json {
        let v = serde_json::json!({"pairs": report.pairs, "texts_scored": report.texts_scored, "seconds": report.seconds,
                                   "texts_per_s": report.texts_per_s()});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.table());
    }
    eprintln!("retort: {} texts scored in {:.1} s ({:.1} texts/s)", report.texts_scored, report.seconds, report.texts_per_s());
    Ok(())
}
