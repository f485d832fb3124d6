//! Speed benchmarks of a model folder on the current device: batched sampling throughput and
//! one full training step (forward, backward, AdamW), the two figures issue 3 and issue 8
//! compare against PyTorch eager (`benches/peer_torch.py` measures the same workload).
//!
//! - generate: `batch` random prompts of `prompt_len` tokens, `new_tokens` sampled tokens each
//!   at temperature 1 with no stop token (every row runs to the end);
//!   `tokens_per_s = batch · new_tokens / wall`, wall including the prefill.
//! - train: a `batch × seq_len` block of random tokens, next-token cross-entropy over all
//!   positions (the mean of `-token_logprobs` as in sft's `batch_nll`), `backward()`, and one
//!   `AdamW` step (lr 1e-5, weight decay 0, no clipping, like the peer script);
//!   `tokens_per_s = batch · seq_len / step_s`.
//!
//! Every figure is the median over `repeats` runs after `warmup` discarded runs; the
//! per-run times are kept so a reader can see the noise. Peak memory is the process's
//! high-water RSS (`VmHWM`), which includes loading the model.

use crate::generate::{generate, SamplingParams};
use crate::model::{AttnMask, Mode, Model};
use crate::rng::Rng;
use crate::train::optim::{AdamW, AdamWConfig, Param};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::Serialize;
use std::time::Instant;

/// The workload and how often to repeat it.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub seq_len: usize,
    pub repeats: usize,
    pub warmup: usize,
    pub seed: u64,
}

impl Default for BenchOptions {
    /// The workload of issue 3 and of docs/ENGINE.md §5.
    fn default() -> Self {
        BenchOptions { batch: 8, prompt_len: 32, new_tokens: 64, seq_len: 128, repeats: 5, warmup: 1, seed: 0 }
    }
}

/// What one benchmark measured. `step_s` is the median wall time of one run (a whole
/// generation, or one training step); phases are medians too, so they need not add up exactly.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub mode: String,
    pub tokens_per_s: f64,
    pub step_s: f64,
    pub runs_s: Vec<f64>,
    /// Process high-water RSS in MiB (`None` off Linux).
    pub peak_rss_mb: Option<f64>,
    pub threads: usize,
    pub batch: usize,
    /// Prompt length (generate) or sequence length (train).
    pub tokens_in: usize,
    /// New tokens per row (generate); 0 for train.
    pub new_tokens: usize,
    pub parameters: usize,
    /// Median seconds of forward + loss (train only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwd_s: Option<f64>,
    /// Median seconds of `backward()` (train only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwd_s: Option<f64>,
    /// Median seconds of the AdamW step (train only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_s: Option<f64>,
    /// Loss of the last measured step (train only); ln(vocab) for a random model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
}

/// Runs `f` `warmup + repeats` times and returns the measured runs' wall times in ms (the
/// warm-up runs are left out).
pub fn timed_runs_ms(warmup: usize, repeats: usize, f: &mut dyn FnMut()) -> Vec<f64> {
    let mut runs = Vec::with_capacity(repeats);
    for i in 0..warmup + repeats {
        let t = Instant::now();
        f();
        if i >= warmup {
            runs.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    runs
}

/// The median of `xs` (mean of the middle two for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `VmHWM` (peak resident set) of this process in MiB, from `/proc/self/status`.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in KiB.
fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn check(opts: &BenchOptions) -> Result<()> {
    if opts.batch == 0 || opts.repeats == 0 {
        bail!("--batch and --repeats must be at least 1");
    }
    Ok(())
}

/// `rows × len` token ids uniform over the vocabulary, from a seeded stream.
fn random_ids(rng: &mut Rng, rows: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..rows).map(|_| (0..len).map(|_| rng.below(vocab as u64) as u32).collect()).collect()
}

/// Batched sampling throughput (see the module doc). The model may be frozen or trainable.
pub fn bench_generate(model: &Model, opts: &BenchOptions) -> Result<BenchReport> {
    check(opts)?;
    let cfg = &model.config;
    if opts.prompt_len == 0 || opts.new_tokens == 0 {
        bail!("--prompt-len and --new-tokens must be at least 1");
    }
    if opts.prompt_len + opts.new_tokens > cfg.max_position_embeddings {
        bail!(
            "prompt {} + new tokens {} exceed the model's context of {} positions",
            opts.prompt_len,
            opts.new_tokens,
            cfg.max_position_embeddings
        );
    }
    let mut rng = Rng::derive(opts.seed, "bench-generate");
    let prompts = random_ids(&mut rng, opts.batch, opts.prompt_len, cfg.vocab_size);
    let params = SamplingParams { temperature: 1.0, max_new_tokens: opts.new_tokens, ..Default::default() };
    let mut runs = Vec::new();
    for i in 0..opts.warmup + opts.repeats {
        let t0 = Instant::now();
        let out = generate(&model.decoder, &prompts, &params, &mut rng, None)?;
        let dt = t0.elapsed().as_secs_f64();
        let produced: usize = out.iter().map(|c| c.tokens.len()).sum();
        if produced != opts.batch * opts.new_tokens {
            bail!("generation produced {produced} tokens, expected {}", opts.batch * opts.new_tokens);
        }
        eprintln!("run {i}: {dt:.4} s{}", if i < opts.warmup { " (warmup)" } else { "" });
        if i >= opts.warmup {
            runs.push(dt);
        }
    }
    let step_s = median(&runs);
    Ok(BenchReport {
        mode: "generate".into(),
        tokens_per_s: (opts.batch * opts.new_tokens) as f64 / step_s,
        step_s,
        runs_s: runs,
        peak_rss_mb: peak_rss_mb(),
        threads: rayon::current_num_threads(),
        batch: opts.batch,
        tokens_in: opts.prompt_len,
        new_tokens: opts.new_tokens,
        parameters: cfg.num_parameters(),
        fwd_s: None,
        bwd_s: None,
        opt_s: None,
        loss: None,
    })
}

/// Seconds spent in each phase of one training step, and its loss.
struct StepTimes {
    fwd: f64,
    bwd: f64,
    opt: f64,
    loss: f64,
}

/// Mean next-token negative log-likelihood over every position of `ids` (B, L): the loss of
/// sft's `batch_nll` with all targets weighted 1 / (B·(L−1)).
fn next_token_nll(model: &Model, ids: &Tensor) -> Result<Tensor> {
    let (b, l) = ids.dims2()?;
    let mask = AttnMask::causal(b, l, ids.device())?;
    let hidden = model.decoder.forward_hidden(ids, &mask, None, Mode::Train)?;
    let targets = ids.narrow(1, 1, l - 1)?.contiguous()?;
    let (logp, _entropy) = model.decoder.token_logprobs(&hidden.narrow(1, 0, l - 1)?, &targets, 1.0)?;
    Ok(logp.mean_all()?.neg()?)
}

fn train_step(model: &Model, opt: &mut AdamW, ids: &Tensor) -> Result<StepTimes> {
    let t0 = Instant::now();
    let loss = next_token_nll(model, ids)?;
    let loss_value = loss.to_scalar::<f32>()? as f64;
    let t1 = Instant::now();
    let grads = loss.backward()?;
    let t2 = Instant::now();
    drop(loss);
    opt.step(&grads, 1e-5, 0.0)?;
    let t3 = Instant::now();
    Ok(StepTimes {
        fwd: (t1 - t0).as_secs_f64(),
        bwd: (t2 - t1).as_secs_f64(),
        opt: (t3 - t2).as_secs_f64(),
        loss: loss_value,
    })
}

/// One training step's time and phases (see the module doc). The model must be trainable
/// (`Model::load(.., trainable = true)`).
pub fn bench_train(model: &Model, opts: &BenchOptions) -> Result<BenchReport> {
    check(opts)?;
    let cfg = &model.config;
    if opts.seq_len < 2 || opts.seq_len > cfg.max_position_embeddings {
        bail!("--seq-len must be in 2..={} (the model's context), got {}", cfg.max_position_embeddings, opts.seq_len);
    }
    let vars = model.vars();
    if vars.is_empty() {
        bail!("bench train needs a trainable model (load it with trainable = true)");
    }
    let params = vars.into_iter().map(|(name, var)| Param { name, var, lr_scale: 1.0, decay: true }).collect();
    let mut opt = AdamW::new(params, AdamWConfig { weight_decay: 0.0, ..Default::default() });
    let mut rng = Rng::derive(opts.seed, "bench-train");
    let rows = random_ids(&mut rng, opts.batch, opts.seq_len, cfg.vocab_size);
    let ids = Tensor::from_vec(rows.concat(), (opts.batch, opts.seq_len), model.decoder.device())
        .context("building the token batch")?;
    let (mut runs, mut fwd, mut bwd, mut optim) = (vec![], vec![], vec![], vec![]);
    let mut loss = f64::NAN;
    for i in 0..opts.warmup + opts.repeats {
        let t = train_step(model, &mut opt, &ids)?;
        let total = t.fwd + t.bwd + t.opt;
        eprintln!(
            "step {i}: {total:.4} s (fwd {:.3} bwd {:.3} opt {:.3}) loss {:.4}{}",
            t.fwd,
            t.bwd,
            t.opt,
            t.loss,
            if i < opts.warmup { " (warmup)" } else { "" }
        );
        if i >= opts.warmup {
            runs.push(total);
            fwd.push(t.fwd);
            bwd.push(t.bwd);
            optim.push(t.opt);
            loss = t.loss;
        }
    }
    let step_s = median(&runs);
    Ok(BenchReport {
        mode: "train".into(),
        tokens_per_s: (opts.batch * opts.seq_len) as f64 / step_s,
        step_s,
        runs_s: runs,
        peak_rss_mb: peak_rss_mb(),
        threads: rayon::current_num_threads(),
        batch: opts.batch,
        tokens_in: opts.seq_len,
        new_tokens: 0,
        parameters: cfg.num_parameters(),
        fwd_s: Some(median(&fwd)),
        bwd_s: Some(median(&bwd)),
        opt_s: Some(median(&optim)),
        loss: Some(loss),
    })
}

/// A human summary of a report, one figure per line.
pub fn format_report(r: &BenchReport) -> String {
    let mut s = format!(
        "{} on {} parameters, {} threads\n  tokens/s   {:.1}\n  step_s     {:.4} (median of {}; runs {})\n",
        r.mode,
        r.parameters,
        r.threads,
        r.tokens_per_s,
        r.step_s,
        r.runs_s.len(),
        r.runs_s.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")
    );
    if let (Some(f), Some(b), Some(o)) = (r.fwd_s, r.bwd_s, r.opt_s) {
        s += &format!("  phases     fwd {f:.4} s, bwd {b:.4} s, optimizer {o:.4} s\n");
    }
    if let Some(l) = r.loss {
        s += &format!("  loss       {l:.4}\n");
    }
    match r.peak_rss_mb {
        Some(m) => s += &format!("  peak RSS   {m:.0} MiB\n"),
        None => s += "  peak RSS   unknown (no /proc/self/status)\n",
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tretort\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(2048));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
        assert!(peak_rss_mb().is_some_and(|m| m > 1.0));
    }

    fn tiny_model() -> Model {
        let cfg = crate::model::ModelConfig::preset("tiny", 40).unwrap();
        Model::init_random(cfg, 3, &Device::Cpu).unwrap()
    }

    #[test]
    fn train_bench_loss_is_near_uniform_and_the_step_updates_weights() {
        let model = tiny_model();
        let before = model.vars()[1].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let opts = BenchOptions { batch: 2, seq_len: 8, repeats: 1, warmup: 0, ..Default::default() };
        let r = bench_train(&model, &opts).unwrap();
        // Random init with std 0.02 gives near-uniform predictions: logits have a std of about
        // 0.02·√128 ≈ 0.23 (normalised hidden · tied embedding), so the loss is ln(40) plus
        // roughly half their variance (0.03), give or take sampling noise.
        let loss = r.loss.unwrap();
        assert!(loss > 40f64.ln() - 0.05 && loss < 40f64.ln() + 0.15, "loss {loss}");
        assert!(r.step_s > 0.0 && (r.tokens_per_s - 16.0 / r.step_s).abs() < 1e-9);
        let after = model.vars()[1].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(before, after, "AdamW step changed nothing");
    }

    #[test]
    fn generate_bench_counts_batch_times_new_tokens() {
        let model = tiny_model();
        let opts = BenchOptions { batch: 3, prompt_len: 5, new_tokens: 4, repeats: 2, warmup: 0, ..Default::default() };
        let r = bench_generate(&model, &opts).unwrap();
        assert_eq!(r.runs_s.len(), 2);
        assert!((r.tokens_per_s - 12.0 / r.step_s).abs() < 1e-9);
        let too_long = BenchOptions { prompt_len: 250, new_tokens: 10, ..opts };
        assert!(bench_generate(&model, &too_long).unwrap_err().to_string().contains("256"));
    }
}
