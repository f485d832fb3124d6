//! `retort doctor --selftest`: the first thing to run on a new box. On the chosen device it
//! checks, with built-in tiny models and seeded inputs, that
//! - the decoder's and the encoder's forward match the CPU in f32 (max |Δ| ≤ 1e-4) and in bf16
//!   (max |Δ| ≤ 5 % of the largest CPU value),
//! - sampling gives valid tokens, finite log-probs and entropies, and repeats under one seed,
//! - a tiny pipeline trains: SFT with a falling loss over its steps, then GRPO and FlowRL steps
//!   with finite losses and gradient norms (an RL loss need not fall step to step, so only
//!   finiteness is required of it),
//! - and how fast generation and a training step are (figures, not pass / fail).
//!
//! Each check is one line with PASS or FAIL and its figures; any FAIL makes the exit code 1.

use crate::model::encoder::{Activation, EncoderConfig, EncoderModel, EncoderType};
use crate::model::{AttnMask, Model, Mode};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// One check's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    /// `None` for a figure that is reported, not judged (benchmarks).
    pub pass: Option<bool>,
    pub detail: String,
}

impl Check {
    fn judged(name: &str, pass: bool, detail: String) -> Check {
        Check { name: name.into(), pass: Some(pass), detail }
    }

    fn failed(name: &str, err: anyhow::Error) -> Check {
        Check { name: name.into(), pass: Some(false), detail: format!("error: {}", crate::error_text::describe(&err)) }
    }

    pub fn line(&self) -> String {
        let tag = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "INFO",
        };
        format!("{tag}  {:<24} {}", self.name, self.detail)
    }
}

/// f32 tolerance of a device's forward against the CPU's (absolute, on logits / hidden states).
pub const F32_TOL: f64 = 1e-4;
/// bf16 tolerance, relative to the largest |value| of the CPU result (bf16 keeps 8 bits of
/// mantissa, ~0.4 %; a few layers of rounding stay well within 5 %).
pub const BF16_REL_TOL: f64 = 0.05;

/// Run every check on `device`; `label` names it in the lines (`cpu`, `cuda:0`, `metal`).
pub fn run(device: &Device, work: &Path, label: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let dir = work.join("decoder");
    match tiny_decoder(&dir) {
        Err(e) => out.push(Check::failed("decoder forward", e)),
        Ok(()) => {
            for dtype in [DType::F32, DType::BF16] {
                let name = format!("decoder forward {}", dtype_name(dtype));
                out.push(decoder_forward(&dir, device, dtype).unwrap_or_else(|e| Check::failed(&name, e)));
            }
            out.push(sampling(&dir, device).unwrap_or_else(|e| Check::failed("sampling", e)));
            out.push(generation_speed(&dir, device).unwrap_or_else(|e| Check::failed("generation speed", e)));
        }
    }
    let enc = work.join("encoder");
    match tiny_encoder(&enc) {
        Err(e) => out.push(Check::failed("encoder forward", e)),
        Ok(()) => {
            for dtype in [DType::F32, DType::BF16] {
                let name = format!("encoder forward {}", dtype_name(dtype));
                out.push(encoder_forward(&enc, device, dtype).unwrap_or_else(|e| Check::failed(&name, e)));
            }
        }
    }
    out.extend(training(work, label));
    out
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// The tiny decoder preset with seeded random weights, saved (f32) to `dir`.
fn tiny_decoder(dir: &Path) -> Result<()> {
    crate::model::init::init_folder("tiny", dir, 7)?;
    Ok(())
}

/// A tiny BERT-shaped encoder with seeded random weights, saved to `dir`.
fn tiny_encoder(dir: &Path) -> Result<()> {
    let cfg = EncoderConfig {
        model_type: EncoderType::Bert,
        vocab_size: 120,
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        hidden_act: Activation::Gelu,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        tie_word_embeddings: true,
        architecture: None,
    };
    EncoderModel::init_random(&cfg, 7, &Device::Cpu)?.save(dir)?;
    Ok(())
}

/// A fixed (2, 16) batch of token ids below `vocab`.
fn fixed_ids(vocab: usize, device: &Device) -> Result<Tensor> {
    let ids: Vec<u32> = (0..32u32).map(|i| (i * 37 + 11) % vocab as u32).collect();
    Ok(Tensor::from_vec(ids, (2, 16), device)?)
}

/// Max |a − b| and max |b| over two tensors of one shape (compared in f32 on the CPU).
fn compare(a: &Tensor, b: &Tensor) -> Result<(f64, f64)> {
    let a = a.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    anyhow::ensure!(a.len() == b.len(), "the results have {} and {} values", a.len(), b.len());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    Ok((diff, scale))
}

fn verdict(name: &str, dtype: DType, diff: f64, scale: f64) -> Check {
    let finite = diff.is_finite();
    let (tol, what) = match dtype {
        DType::F32 => (F32_TOL, format!("tolerance {F32_TOL:.0e}")),
        _ => (BF16_REL_TOL * scale.max(1e-6), format!("tolerance {:.0} % of {scale:.3}", BF16_REL_TOL * 100.0)),
    };
    Check::judged(name, finite && diff <= tol, format!("max |Δ| vs CPU f32 = {diff:.2e} ({what})"))
}

fn decoder_forward(dir: &Path, device: &Device, dtype: DType) -> Result<Check> {
    let reference = Model::load(dir, &Device::Cpu, DType::F32, false)?;
    let model = Model::load(dir, device, dtype, false)?;
    let vocab = reference.config.vocab_size;
    let run = |m: &Model, dev: &Device| -> Result<Tensor> {
        let mask = AttnMask::causal(2, 16, dev)?;
        Ok(m.decoder.forward(&fixed_ids(vocab, dev)?, &mask, None, Mode::Infer)?.logits)
    };
    let (diff, scale) = compare(&run(&model, device)?, &run(&reference, &Device::Cpu)?)?;
    Ok(verdict(&format!("decoder forward {}", dtype_name(dtype)), dtype, diff, scale))
}

fn encoder_forward(dir: &Path, device: &Device, dtype: DType) -> Result<Check> {
    let reference = EncoderModel::load(dir, &Device::Cpu, DType::F32, false)?;
    let model = EncoderModel::load(dir, device, dtype, false)?;
    let vocab = reference.config.vocab_size;
    let run = |m: &EncoderModel, dev: &Device| -> Result<Tensor> {
        let mask = Tensor::ones((2, 16), DType::U32, dev)?;
        Ok(m.encoder.forward(&fixed_ids(vocab, dev)?, &mask, None)?)
    };
    let (diff, scale) = compare(&run(&model, device)?, &run(&reference, &Device::Cpu)?)?;
    Ok(verdict(&format!("encoder forward {}", dtype_name(dtype)), dtype, diff, scale))
}

fn sampling_params(new: usize) -> crate::generate::SamplingParams {
    crate::generate::SamplingParams { temperature: 1.0, max_new_tokens: new, ..Default::default() }
}

fn sampling(dir: &Path, device: &Device) -> Result<Check> {
    let model = Model::load(dir, device, DType::F32, false)?;
    let vocab = model.config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..4u32).map(|i| (0..6).map(|j| (i * 7 + j * 3 + 5) % vocab).collect()).collect();
    let draw = || crate::generate::generate(&model.decoder, &prompts, &sampling_params(16), &mut crate::rng::Rng::new(3), None);
    let (a, b) = (draw()?, draw()?);
    let tokens: usize = a.iter().map(|c| c.tokens.len()).sum();
    let valid = a.iter().all(|c| c.tokens.iter().all(|&t| t < vocab));
    let finite = a.iter().all(|c| c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0) && c.entropies.iter().all(|h| h.is_finite() && *h >= 0.0));
    let repeats = a == b;
    Ok(Check::judged(
        "sampling",
        valid && finite && repeats && tokens > 0,
        format!("{tokens} tokens over 4 rows; ids in vocabulary {valid}, log-probs ≤ 0 and entropies finite {finite}, same seed same tokens {repeats}"),
    ))
}

fn generation_speed(dir: &Path, device: &Device) -> Result<Check> {
    let model = Model::load(dir, device, DType::F32, false)?;
    let vocab = model.config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| (0..32).map(|j| (i * 13 + j * 5 + 1) % vocab).collect()).collect();
    let mut params = sampling_params(64);
    params.stop_token_ids.clear();
    let start = Instant::now();
    let out = crate::generate::generate(&model.decoder, &prompts, &params, &mut crate::rng::Rng::new(5), None)?;
    let secs = start.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
    Ok(Check { name: "generation speed".into(), pass: None, detail: format!("{:.0} tokens/s (tiny model, 8 rows × 64 new tokens in {secs:.2} s)", tokens as f64 / secs) })
}

/// A tiny pipeline on the device: SFT, then a GRPO and a FlowRL stage from it.
fn profile_text(device: &str) -> String {
    format!(
        r#"[run]
name = "selftest"
device = "{device}"
seed = 0

[[stage]]
kind = "model-init"
name = "init"
preset = "tiny"

[[stage]]
kind = "tasks"
name = "data"
task = "countdown"
train = 200
test = 20

[[stage]]
kind = "sft"
name = "sft"
model = "@init"
steps = 40
batch_size = 16
lr = 3e-3
warmup_steps = 5
max_len = 48
eval_every = 0
sample_every = 0
checkpoint_every = 0
eval_samples = 0

[stage.data]
from = "@data"

[[stage]]
kind = "rl"
name = "grpo"
model = "@sft"
from = "@data"
algorithm = "grpo"
prompts_per_step = 8
group_size = 8
steps = 3
max_new_tokens = 16
lr = 1e-4
eval_every = 0
eval_problems = 4
eval_n = 2
eval_k = [1]
checkpoint_every = 0

[[stage]]
kind = "rl"
name = "flowrl"
model = "@sft"
from = "@data"
algorithm = "flowrl"
prompts_per_step = 4
group_size = 4
steps = 3
max_new_tokens = 16
lr = 1e-4
z_layers = 2
eval_every = 0
eval_problems = 4
eval_n = 2
eval_k = [1]
checkpoint_every = 0
"#
    )
}

/// Per stage, per metric: the values by step.
type Series = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn metric_series(run_dir: &Path) -> Result<Series> {
    let (records, _) = crate::run::read_events(&run_dir.join(crate::run::EVENTS))?;
    let mut out: Series = BTreeMap::new();
    for r in records {
        if let crate::bus::Event::Metrics { stage, values, .. } = r.event {
            for (k, v) in values {
                out.entry(stage.clone()).or_default().entry(k).or_default().push(v);
            }
        }
    }
    Ok(out)
}

fn training(work: &Path, device: &str) -> Vec<Check> {
    let names = ["sft step", "grpo step", "flowrl step"];
    let run = || -> Result<(std::path::PathBuf, crate::bus::Outcome)> {
        let profile = crate::profile::Profile::parse(&profile_text(device), "the self-test profile")?;
        let launch = crate::pipeline::prepare_new(profile, &work.join("runs"), None)?;
        let dir = launch.dir.path.clone();
        let mut sink = crate::ui::headless::HeadlessSink { quiet: true };
        let outcome = crate::pipeline::execute(launch, &mut sink, false)?;
        Ok((dir, outcome))
    };
    let (dir, outcome) = match run() {
        Ok(x) => x,
        Err(e) => return vec![Check::failed("training pipeline", e)],
    };
    let series = match metric_series(&dir) {
        Ok(s) => s,
        Err(e) => return vec![Check::failed("training pipeline", e)],
    };
    let get = |stage: &str, key: &str| series.get(stage).and_then(|m| m.get(key)).cloned().unwrap_or_default();
    let finite = |xs: &[f64]| !xs.is_empty() && xs.iter().all(|x| x.is_finite());
    let mut out = Vec::new();
    if outcome != crate::bus::Outcome::Finished {
        let manifest = crate::run::RunDir::open(&dir).and_then(|d| d.read_manifest()).ok();
        let why = manifest.and_then(|m| m.error).unwrap_or_else(|| format!("{outcome:?}"));
        out.push(Check::judged("training pipeline", false, format!("the tiny run did not finish: {why} ({})", dir.display())));
    }
    // SFT: finite, and the loss of the last five steps below that of the first five.
    let loss = get("sft", "loss");
    let head: f64 = loss.iter().take(5).sum::<f64>() / loss.len().clamp(1, 5) as f64;
    let tail: f64 = loss.iter().rev().take(5).sum::<f64>() / loss.len().clamp(1, 5) as f64;
    out.push(Check::judged(
        names[0],
        finite(&loss) && loss.len() >= 10 && tail < head,
        format!("{} steps, loss {head:.3} (first 5) → {tail:.3} (last 5), all finite {}", loss.len(), finite(&loss)),
    ));
    for (name, stage, key) in [(names[1], "grpo", "actor/pg_loss"), (names[2], "flowrl", "actor/tb_loss")] {
        let l = get(stage, key);
        let g = get(stage, "actor/grad_norm");
        let show = |xs: &[f64]| xs.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(", ");
        out.push(Check::judged(
            name,
            finite(&l) && finite(&g),
            format!("{} steps, {key} [{}], actor/grad_norm [{}]", l.len(), show(&l), show(&g)),
        ));
    }
    let tps = get("sft", "tokens_per_s");
    if !tps.is_empty() {
        let mut sorted = tps.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        out.push(Check {
            name: "training speed".into(),
            pass: None,
            detail: format!("{:.0} tokens/s (median of {} SFT steps, tiny model, 16 rows)", sorted[sorted.len() / 2], sorted.len()),
        });
    }
    out
}

/// Open `device` (cpu, cuda:N, metal) and run the checks in a temporary folder.
pub fn run_on(device: &str) -> Result<Vec<Check>> {
    let spec = crate::device::DeviceSpec::parse(device).map_err(anyhow::Error::msg)?;
    let dev = spec.open()?;
    let work = std::env::temp_dir().join(format!("retort-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let checks = run(&dev, &work, device);
    let _ = std::fs::remove_dir_all(&work);
    Ok(checks)
}
