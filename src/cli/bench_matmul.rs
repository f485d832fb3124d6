//! `retort bench matmul`: the decode matmuls of one token step (q, k, v, o, gate, up, down per
//! layer and the LM head) for a few rows, with each kernel of `model::fused::skinny`, next to
//! a plain read of the same weights (the memory-bandwidth bound). Random weights of the
//! shape's sizes, one buffer per matrix as in a model, 2 threads unless RAYON_NUM_THREADS
//! says otherwise. Prints ms per step, GB/s of weights and GFLOP/s, and checks the kernels
//! agree (issue 24; benches/README.md records the figures).

use crate::bench::{median, timed_runs_ms};
use crate::model::fused::{simd, skinny};
use crate::rng::Rng;
use anyhow::{bail, Result};
use clap::Args;
use rayon::prelude::*;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct MatmulBenchArgs {
    /// Rows decoded at once (≤ 16: the skinny kernels' range).
    #[arg(long, default_value_t = 16)]
    pub rows: usize,
    /// Defaults: the 135M llama shape (SmolLM2-135M's sizes).
    #[arg(long, default_value_t = 576)]
    pub hidden: usize,
    #[arg(long, default_value_t = 1536)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 30)]
    pub layers: usize,
    #[arg(long, default_value_t = 9)]
    pub heads: usize,
    #[arg(long, default_value_t = 3)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 49152)]
    pub vocab: usize,
    /// Measured steps; the median is reported.
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Discarded steps before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct KernelFigure {
    /// The kernel and the tiled kernel's prefetch (cache level, groups of 4 W rows ahead).
    kernel: &'static str,
    median_ms: f64,
    runs_ms: Vec<f64>,
    gb_per_s: f64,
    gflop_per_s: f64,
}

#[derive(Serialize)]
struct MatmulReport {
    rows: usize,
    parameters: usize,
    weight_bytes: usize,
    /// Reading every weight once (a sum), the bandwidth bound of a step.
    read_ms: f64,
    read_gb_per_s: f64,
    kernels: Vec<KernelFigure>,
    /// Largest |stream − tiled| / (1 + |stream|) over the step's outputs and tiled settings.
    max_rel_diff: f64,
    /// The same over the bf16 kernels (`rollout_dtype = "bf16"`; W rounded to bf16),
    /// when this CPU runs it.
    bf16_max_rel_diff: Option<f64>,
}

/// One token step's matrices: (out, in) each.
fn shapes(a: &MatmulBenchArgs) -> Vec<(usize, usize)> {
    let d = a.hidden / a.heads;
    let mut v = Vec::new();
    for _ in 0..a.layers {
        v.extend([(a.heads * d, a.hidden), (a.kv_heads * d, a.hidden), (a.kv_heads * d, a.hidden), (a.hidden, a.heads * d)]);
        v.extend([(a.intermediate, a.hidden), (a.intermediate, a.hidden), (a.hidden, a.intermediate)]);
    }
    v.push((a.vocab, a.hidden));
    v
}

pub fn cmd_bench_matmul(args: &MatmulBenchArgs) -> Result<()> {
    if args.rows == 0 || args.rows > skinny::MAX_ROWS {
        bail!("--rows must be 1..={} (the skinny kernels' range)", skinny::MAX_ROWS);
    }
    if args.heads == 0 || args.hidden % args.heads != 0 || args.repeats == 0 {
        bail!("--hidden must be a multiple of --heads, and --repeats at least 1");
    }
    let shapes = shapes(args);
    let mut rng = Rng::new(7);
    let weights: Vec<Vec<f32>> = shapes.iter().map(|&(o, i)| (0..o * i).map(|_| rng.f32() * 0.1 - 0.05).collect()).collect();
    let widest_in = shapes.iter().map(|s| s.1).max().unwrap_or(0);
    let x: Vec<f32> = (0..args.rows * widest_in).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let parameters: usize = shapes.iter().map(|&(o, i)| o * i).sum();
    let bytes = parameters * 4;
    let time = |f: &mut dyn FnMut()| timed_runs_ms(args.warmup, args.repeats, f);
    let mut sink = 0.0f32;
    let read = time(&mut || {
        sink += weights.iter().map(|w| w.par_chunks(64 * 1024).map(|c| simd::with_best_isa(|| simd::sum(c))).sum::<f32>()).sum::<f32>();
    });
    let read_ms = median(&read);
    let widest_out = shapes.iter().map(|s| s.0).max().unwrap_or(0);
    let mut yt = vec![0.0f32; widest_out * args.rows];
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(o, _)| vec![0.0; o * args.rows]).collect();
    let mut kernels = Vec::new();
    let mut results = Vec::new();
    let default = skinny::prefetch();
    let variants = [
        ("stream", skinny::Kernel::Stream, default),
        ("tiled, no prefetch", skinny::Kernel::Tiled, (skinny::CacheLevel::L1, 0)),
        ("tiled, L1 +1", skinny::Kernel::Tiled, (skinny::CacheLevel::L1, 1)),
        ("tiled, L1 +2", skinny::Kernel::Tiled, (skinny::CacheLevel::L1, 2)),
        ("tiled, L2 +1", skinny::Kernel::Tiled, (skinny::CacheLevel::L2, 1)),
        ("tiled, L2 +2", skinny::Kernel::Tiled, (skinny::CacheLevel::L2, 2)),
        ("tiled, L2 +4", skinny::Kernel::Tiled, (skinny::CacheLevel::L2, 4)),
    ];
    for (name, kernel, pf) in variants {
        skinny::set_prefetch(pf);
        let runs = time(&mut || {
            for ((w, &(o, i)), y) in weights.iter().zip(&shapes).zip(outs.iter_mut()) {
                skinny::matmul_wt_with(kernel, &x[..args.rows * i], w, args.rows, i, o, &mut yt, y);
            }
        });
        let ms = median(&runs);
        kernels.push(KernelFigure { kernel: name, median_ms: ms, runs_ms: runs, gb_per_s: bytes as f64 / ms / 1e6, gflop_per_s: 2.0 * (args.rows * parameters) as f64 / ms / 1e6 });
        results.push(outs.clone());
    }
    skinny::set_prefetch(default);
    let mut bf16_max_rel_diff = None;
    if skinny::bf16::available() {
        // Half the bytes: GB/s counts the bf16 bytes read.
        let wb: Vec<Vec<u16>> = weights.iter().map(|w| skinny::bf16::convert(w)).collect();
        let mut xp = vec![0.0f32; args.rows * widest_in];
        let mut variants = vec![("bf16 W, widen + FMA, +1", skinny::bf16::Variant::Widen, 1), ("bf16 W, widen + FMA, +2", skinny::bf16::Variant::Widen, 2), ("bf16 W, widen + FMA, +4", skinny::bf16::Variant::Widen, 4)];
        if skinny::bf16::has_dot() {
            variants.push(("bf16 W and x, vdpbf16ps, +1", skinny::bf16::Variant::Dot, 1));
            variants.push(("bf16 W and x, vdpbf16ps, +4", skinny::bf16::Variant::Dot, 4));
        }
        let default_pf = skinny::bf16::prefetch();
        let mut worst = 0.0f64;
        for (name, variant, pf) in variants {
            skinny::bf16::set_prefetch(pf);
            let runs = time(&mut || {
                for ((w, &(o, i)), y) in wb.iter().zip(&shapes).zip(outs.iter_mut()) {
                    skinny::bf16::matmul_wt_into_with(variant, &x[..args.rows * i], w, args.rows, i, o, &mut xp, &mut yt, y);
                }
            });
            let ms = median(&runs);
            kernels.push(KernelFigure { kernel: name, median_ms: ms, runs_ms: runs, gb_per_s: (bytes / 2) as f64 / ms / 1e6, gflop_per_s: 2.0 * (args.rows * parameters) as f64 / ms / 1e6 });
            worst = results[0].iter().flatten().zip(outs.iter().flatten()).map(|(a, b)| ((a - b).abs() / (1.0 + a.abs())) as f64).fold(worst, f64::max);
        }
        skinny::bf16::set_prefetch(default_pf);
        bf16_max_rel_diff = Some(worst);
    }
    let max_rel_diff = results[1..].iter().flat_map(|r| results[0].iter().flatten().zip(r.iter().flatten())).map(|(a, b)| ((a - b).abs() / (1.0 + a.abs())) as f64).fold(0.0, f64::max);
    let report = MatmulReport { rows: args.rows, parameters, weight_bytes: bytes, read_ms, read_gb_per_s: bytes as f64 / read_ms / 1e6, kernels, max_rel_diff, bf16_max_rel_diff };
    std::hint::black_box(sink);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("decode matmuls of one token step: {} rows, {} parameters ({:.1} MB of f32 weights)", args.rows, parameters, bytes as f64 / 1e6);
    println!("  read the weights once:      {:8.2} ms  {:6.1} GB/s  (the bandwidth bound of a step)", read_ms, report.read_gb_per_s);
    for k in &report.kernels {
        println!("  kernel {:<28} {:8.2} ms  {:6.1} GB/s  {:6.1} GFLOP/s", k.kernel, k.median_ms, k.gb_per_s, k.gflop_per_s);
    }
    println!("  largest relative difference between the kernels: {:.2e}", max_rel_diff);
    if let Some(d) = bf16_max_rel_diff {
        println!("  largest relative difference of the bf16 kernels from the f32 stream: {:.2e} (bf16 rounding)", d);
    }
    Ok(())
}
