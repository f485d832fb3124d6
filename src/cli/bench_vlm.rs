//! `retort bench vlm`: prefill and decode of a vision-language model with one image, for the
//! side-by-side with transformers in benches/peer_vlm.py (same folder, same token ids).
//!
//! The prompt is fixed token ids, so no tokenizer is needed and both sides feed the same
//! sequence: ids 10..18, `<|vision_start|>`, the image's pads, `<|vision_end|>`, ids 20..28.
//! Prefill = the tower, the merger and the LLM's prefill up to the first new token (a greedy
//! generation of 1 token) from the preprocessed image; decode tok/s = (N − 1) / (the time of a
//! greedy generation of N tokens − the prefill's). No stop token: N tokens always. Decoding and
//! preprocessing the image file is timed apart (`preprocess_s`): the peer gets the same pixel
//! values from `--dump-inputs` (transformers' image processor needs torchvision). `tower_s`
//! times the tower and merger alone (after each measured pair), the part of the prefill that
//! is not the LLM's.

use crate::generate::{vision::generate_with_images, SamplingParams};
use crate::model::vision::{load_and_preprocess, mrope, Qwen2Vl};
use crate::rng::Rng;
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct VlmBenchArgs {
    /// A `qwen2_vl` model folder.
    pub model: PathBuf,
    /// The image (PNG, JPEG or WebP).
    #[arg(long)]
    pub image: PathBuf,
    /// New tokens of the decode measurement.
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Measured runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Discarded runs before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write {"input_ids", "pixel_values", "image_grid_thw"} as JSON for benches/peer_vlm.py.
    #[arg(long)]
    pub dump_inputs: Option<PathBuf>,
}

#[derive(Serialize)]
struct VlmReport {
    side: &'static str,
    prompt_tokens: usize,
    image_tokens: usize,
    new_tokens: usize,
    preprocess_s: f64,
    prefill_s: f64,
    /// The tower and merger alone (the image's features), part of `prefill_s`.
    tower_s: f64,
    decode_tok_s: f64,
    prefill_runs: Vec<f64>,
    generate_runs: Vec<f64>,
    peak_rss_mb: Option<f64>,
}

/// The benchmark's prompt around `image_tokens` pads.
pub fn prompt_ids(model: &Qwen2Vl, image_tokens: usize) -> Result<Vec<u32>> {
    let c = &model.config;
    let ids: Vec<u32> = (10..18).chain([c.vision_start_token_id, c.image_token_id, c.vision_end_token_id]).chain(20..28).collect();
    mrope::expand_image_tokens(&ids, c.image_token_id, &[image_tokens]).map_err(anyhow::Error::msg)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn cmd_bench_vlm(args: &VlmBenchArgs) -> Result<()> {
    anyhow::ensure!(args.repeats > 0 && args.new_tokens > 1, "--repeats must be ≥ 1 and --new-tokens ≥ 2");
    let model = Qwen2Vl::load(&args.model, &Device::Cpu, DType::F32, false).with_context(|| format!("loading {}", args.model.display()))?;
    let merge = model.config.vision.spatial_merge_size;
    let start = Instant::now();
    let patches = load_and_preprocess(&args.image, &model.processor)?;
    let preprocess_s = start.elapsed().as_secs_f64();
    let image_tokens = patches.tokens(merge);
    let ids = prompt_ids(&model, image_tokens)?;
    if let Some(path) = &args.dump_inputs {
        let rows: Vec<&[f32]> = patches.values.chunks(patches.dim).collect();
        let doc = serde_json::json!({"input_ids": ids, "pixel_values": rows, "image_grid_thw": [patches.grid]});
        crate::fsutil::write_atomic(path, doc.to_string().as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // One greedy generation of `n` tokens after the image's preprocessing.
    let run = |n: usize| -> Result<f64> {
        let patches = patches.clone();
        let start = Instant::now();
        let params = SamplingParams { greedy: true, max_new_tokens: n, ..SamplingParams::default() };
        let out = generate_with_images(&model, &[ids.clone()], &[vec![patches]], &params, &mut Rng::new(0), None)?;
        anyhow::ensure!(out[0].tokens.len() == n, "generated {} tokens, not {n}", out[0].tokens.len());
        Ok(start.elapsed().as_secs_f64())
    };
    // The image's features alone: where the prefill goes between the tower and the LLM.
    let tower = || -> Result<f64> {
        let start = Instant::now();
        model.image_features(&[&patches])?;
        Ok(start.elapsed().as_secs_f64())
    };
    let (mut prefill, mut whole, mut towers) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.warmup + args.repeats {
        let p = run(1)?;
        let g = run(args.new_tokens)?;
        let t = tower()?;
        if i >= args.warmup {
            prefill.push(p);
            whole.push(g);
            towers.push(t);
        }
        if !args.json {
            eprintln!("run {}: prefill {p:.3} s (tower {t:.3} s), {} tokens {g:.3} s{}", i + 1, args.new_tokens, if i < args.warmup { " (warmup)" } else { "" });
        }
    }
    let (p, g) = (median(&prefill), median(&whole));
    let report = VlmReport {
        side: "retort",
        prompt_tokens: ids.len(),
        image_tokens,
        new_tokens: args.new_tokens,
        preprocess_s,
        prefill_s: p,
        tower_s: median(&towers),
        decode_tok_s: (args.new_tokens - 1) as f64 / (g - p).max(1e-9),
        prefill_runs: prefill,
        generate_runs: whole,
        peak_rss_mb: crate::bench::peak_rss_mb(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "retort: prompt {} tokens ({} from the image), preprocess {:.3} s, prefill {:.3} s (tower {:.3} s), decode {:.2} tok/s ({} new tokens), peak RSS {:.0} MiB",
            report.prompt_tokens,
            report.image_tokens,
            report.preprocess_s,
            report.prefill_s,
            report.tower_s,
            report.decode_tok_s,
            report.new_tokens,
            report.peak_rss_mb.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
