//! `retort bench gemm`: the training products of one layer (forward, dx and dW of the
//! projections, the LM head's chunk) with f32 sgemm and the bf16 kernel (`update_dtype =
//! "bf16"`), one shape at a time. Random operands; GFLOP/s of each; the largest difference of
//! bf16 from f32 relative to the product's scale. Issue 24; benches/README.md records figures.

use crate::bench::{median, timed_runs_ms};
use crate::model::fused::gemm::{sgemm, MatRef};
use crate::model::fused::gemm_bf16::{body, gemm_bf16_with, Body};
use crate::rng::Rng;
use anyhow::Result;
use clap::Args;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct GemmBenchArgs {
    /// Rows of the activations (tokens of an update's micro-batch).
    #[arg(long, default_value_t = 1700)]
    pub rows: usize,
    /// Defaults: the 135M llama shape.
    #[arg(long, default_value_t = 576)]
    pub hidden: usize,
    #[arg(long, default_value_t = 1536)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 49152)]
    pub vocab: usize,
    /// Rows of one LM-head chunk (the fused head's 128 MB of logits at this vocabulary).
    #[arg(long, default_value_t = 682)]
    pub head_rows: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Figure {
    product: String,
    m: usize,
    k: usize,
    n: usize,
    f32_ms: f64,
    bf16_ms: f64,
    f32_gflop_per_s: f64,
    bf16_gflop_per_s: f64,
    speedup: f64,
    /// max |bf16 − f32| / max |f32|.
    rel_diff: f64,
}

pub fn cmd_bench_gemm(args: &GemmBenchArgs) -> Result<()> {
    let (r, h, i, v, c) = (args.rows, args.hidden, args.intermediate, args.vocab, args.head_rows);
    // (name, m, k, n, lhs transposed): forward x·Wᵀ (W read through strides), dx = g·W,
    // dW = gᵀ·x (gᵀ through strides), and the head's chunk forward, dH and dW.
    let products = [
        ("up fwd x·Wᵀ", r, h, i, false, true),
        ("down fwd x·Wᵀ", r, i, h, false, true),
        ("up dx g·W", r, i, h, false, false),
        ("up dW gᵀ·x", i, r, h, true, false),
        ("head fwd h·Wᵀ", c, h, v, false, true),
        ("head dH G·W", c, v, h, false, false),
        ("head dW Gᵀ·h", v, c, h, true, false),
    ];
    let mut rng = Rng::new(3);
    let mut figures = Vec::new();
    for (name, m, k, n, lhs_t, rhs_t) in products {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let lhs = if lhs_t { MatRef { data: &a, rows: m, cols: k, row_stride: 1, col_stride: m } } else { MatRef { data: &a, rows: m, cols: k, row_stride: k, col_stride: 1 } };
        let rhs = if rhs_t { MatRef { data: &b, rows: k, cols: n, row_stride: 1, col_stride: k } } else { MatRef { data: &b, rows: k, cols: n, row_stride: n, col_stride: 1 } };
        let (mut y32, mut y16) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        let time = |f: &mut dyn FnMut()| median(&timed_runs_ms(args.warmup, args.repeats, f));
        let f32_ms = time(&mut || sgemm(&mut y32, &lhs, &rhs, false).expect("shapes fit"));
        let bf16_ms = time(&mut || gemm_bf16_with(Body::Amx, &mut y16, &lhs, &rhs, false).expect("shapes fit"));
        let scale = y32.iter().fold(0f32, |s, y| s.max(y.abs())) as f64;
        let diff = y32.iter().zip(&y16).fold(0f32, |s, (a, b)| s.max((a - b).abs())) as f64;
        let flop = 2.0 * (m * k * n) as f64;
        figures.push(Figure {
            product: name.to_string(),
            m,
            k,
            n,
            f32_ms,
            bf16_ms,
            f32_gflop_per_s: flop / f32_ms / 1e6,
            bf16_gflop_per_s: flop / bf16_ms / 1e6,
            speedup: f32_ms / bf16_ms,
            rel_diff: diff / scale.max(1e-30),
        });
    }
    let kernel = match body() {
        Body::Amx => "amx",
        Body::Rounded => "rounded f32 copies through sgemm (no AMX)",
    };
    if args.json {
        println!("{}", serde_json::json!({ "bf16_kernel": kernel, "threads": rayon::current_num_threads(), "products": figures }));
        return Ok(());
    }
    println!("bf16 kernel: {kernel}; {} threads", rayon::current_num_threads());
    println!("{:<16} {:>6} {:>6} {:>6} {:>9} {:>9} {:>10} {:>10} {:>7} {:>9}", "product", "m", "k", "n", "f32 ms", "bf16 ms", "f32 GF/s", "bf16 GF/s", "×", "rel diff");
    for f in &figures {
        println!(
            "{:<16} {:>6} {:>6} {:>6} {:>9.2} {:>9.2} {:>10.0} {:>10.0} {:>7.2} {:>9.1e}",
            f.product, f.m, f.k, f.n, f.f32_ms, f.bf16_ms, f.f32_gflop_per_s, f.bf16_gflop_per_s, f.speedup, f.rel_diff
        );
    }
    Ok(())
}
