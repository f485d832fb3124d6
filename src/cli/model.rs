//! `retort model init|info`, `retort generate` and `retort bench`: the quick checks a
//! researcher runs on a model folder before training on it (issue 3).

use crate::bench::{self, BenchOptions};
use crate::generate::{generate, FinishReason, SamplingParams};
use crate::model::config::PRESETS;
use crate::model::estimate::human_bytes;
use crate::preflight::plan::{model_info, peak, InfoShape, Target};
use crate::model::{Model, ModelConfig};
use crate::rng::Rng;
use crate::text::{model_eos_ids, Message, Tokenizer};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ModelAction {
    /// Write a complete model folder (config, character tokenizer, random weights) from a preset.
    Init(InitArgs),
    /// Print a model folder's shape, parameter count, dtype on disk and memory estimates.
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Shape: tiny (~1M parameters), small, or qwen2.5-0.5b (the exact Qwen2.5-0.5B shape).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    pub preset: String,
    /// Folder to write; must be empty or absent unless --force.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Context length (max_position_embeddings) instead of the preset's (tiny 256, small 512).
    #[arg(long)]
    pub context: Option<usize>,
    /// Architecture instead of the preset's qwen2: `llama` (no attention biases) or `qwen2`.
    /// With the size flags below, a random model of any real model's shape for benchmarks,
    /// e.g. SmolLM-135M: --preset small --arch llama --hidden 576 --layers 30 --heads 9
    /// --kv-heads 3 --intermediate 1536 --vocab 49152.
    #[arg(long, value_parser = ["llama", "qwen2"])]
    pub arch: Option<String>,
    /// Hidden size (the head size is hidden / heads).
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads (grouped-query attention; must divide --heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// MLP intermediate size.
    #[arg(long)]
    pub intermediate: Option<usize>,
    /// Vocabulary size of the embedding and head (the character tokenizer stays).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// A separate LM head instead of one tied to the embedding.
    #[arg(long)]
    pub untied: bool,
    /// Write into a non-empty folder, replacing the model files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A model folder (with config.json).
    pub model: PathBuf,
    /// Batch size for the inference (KV cache) estimate.
    #[arg(long, default_value_t = 1)]
    pub infer_batch: usize,
    /// Context length for the inference estimate (default: min(max_position_embeddings, 4096)).
    #[arg(long)]
    pub context: Option<usize>,
    /// Batch size for the training estimates.
    #[arg(long, default_value_t = 8)]
    pub train_batch: usize,
    /// Sequence length for the training estimates.
    #[arg(long, default_value_t = 512)]
    pub train_seq: usize,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A model folder (config.json, weights, tokenizer.json).
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message with the tokenizer's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Take the most likely token each step.
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop once the decoded continuation contains this text (repeatable); it is kept.
    #[arg(long = "stop", value_name = "STR")]
    pub stop: Vec<String>,
    /// Let the model call a tool: `python` runs each ```python block when the model closes it
    /// with "```\n\n" and appends its output (docs/SANDBOX.md); calls go to stderr.
    #[arg(long, value_parser = ["python"], conflicts_with = "stop")]
    pub tools: Option<String>,
    /// Output format of tool calls: `prompt` (```output) or `synthesis` (```Output).
    #[arg(long, default_value = "prompt", requires = "tools")]
    pub tool_format: String,
    #[arg(long, default_value_t = 4, requires = "tools")]
    pub max_tool_calls: usize,
}

#[derive(Subcommand, Debug)]
pub enum BenchAction {
    /// Batched sampling throughput (default: batch 8, 32-token prompts, 64 new tokens).
    Generate(BenchArgs),
    /// One training step: forward + backward + AdamW (default: batch 8 × 128 tokens).
    Train(BenchArgs),
    /// AdaptLLM's mining pass over a corpus (MB/s, one thread); benches/peer_mine.py is the
    /// Python `re` side.
    Mine(super::bench_mine::MineBenchArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A model folder.
    pub model: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Measured runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Discarded runs before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------- model init / info

pub fn cmd_model(action: ModelAction) -> Result<()> {
    match action {
        ModelAction::Init(args) => cmd_init(&args),
        ModelAction::Info(args) => cmd_info(&args),
    }
}

fn cmd_init(args: &InitArgs) -> Result<()> {
    let non_empty = std::fs::read_dir(&args.out).map(|mut d| d.next().is_some()).unwrap_or(false);
    if non_empty && !args.force {
        bail!("{} exists and is not empty; choose another --out or pass --force to overwrite its model files", args.out.display());
    }
    let arch = match args.arch.as_deref() {
        Some("llama") => Some(crate::model::ModelType::Llama),
        Some("qwen2") => Some(crate::model::ModelType::Qwen2),
        _ => None,
    };
    let shape = crate::model::init::Shape {
        arch,
        hidden: args.hidden,
        layers: args.layers,
        heads: args.heads,
        kv_heads: args.kv_heads,
        intermediate: args.intermediate,
        vocab: args.vocab,
        untied: args.untied,
    };
    let config = crate::model::init::init_folder_shaped(&args.preset, &args.out, args.seed, args.context, &shape)?;
    println!(
        "wrote {}: {} preset {}, {} parameters, seed {}",
        args.out.display(),
        config.model_type.as_str(),
        args.preset,
        config.num_parameters(),
        args.seed
    );
    Ok(())
}

fn require_model_folder(dir: &Path) -> Result<ModelConfig> {
    crate::model::inspect::model_folder_config(dir)
}

/// The text `retort model info` prints.
pub fn info_text(dir: &Path, cfg: &ModelConfig, dtypes: &BTreeMap<String, (usize, usize)>, shape: InfoShape, target: Target) -> String {
    let mut s = String::new();
    s += &format!("model folder   {}\n", dir.display());
    s += &format!("architecture   {}\n", cfg.model_type.architecture());
    s += &format!("model_type     {}\n", cfg.model_type.as_str());
    s += &format!(
        "shape          layers {}, heads {}, kv heads {}, head_dim {}, hidden {}, intermediate {}, vocab {}, context {}\n",
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.max_position_embeddings
    );
    s += &format!(
        "details        tied embeddings {}, qkv bias {}, qk norm {}, rope_theta {}\n",
        cfg.tie_word_embeddings, cfg.qkv_bias, cfg.qk_norm, cfg.rope_theta
    );
    s += &format!("parameters     {}\n", cfg.num_parameters());
    let on_disk: Vec<String> =
        dtypes.iter().map(|(d, (n, e))| format!("{d} ({n} tensors, {e} elements)")).collect();
    s += &format!("dtype on disk  {}\n", if on_disk.is_empty() { "no tensors".to_string() } else { on_disk.join(", ") });
    // The memory preflight's arithmetic (`retort preflight` sizes a profile's stages the same way).
    for (title, parts) in model_info(cfg, shape, target) {
        let place = if target.gpu { " (device and host)" } else { "" };
        s += &format!("memory, {title}: peak {}{place}\n", human_bytes(peak(&parts, None)));
        for p in &parts {
            s += &format!("    {:<58} {}\n", p.name, human_bytes(p.bytes));
        }
    }
    s += "(estimates; activations are a coarse count for retort's unfused training forward)\n";
    s
}

fn cmd_info(args: &InfoArgs) -> Result<()> {
    // Encoders (bert, roberta) have their own description; everything else is a decoder.
    if args.model.join("config.json").exists() {
        if let crate::model::registry::Family::Encoder(_) = crate::model::registry::family_of(&args.model)? {
            print!("{}", super::embed::encoder_info_text(&args.model)?);
            return Ok(());
        }
    }
    let cfg = require_model_folder(&args.model)?;
    let dtypes = crate::model::inspect::dtype_counts(&crate::model::inspect::inspect_checkpoint(&args.model, &cfg)?);
    let shape = InfoShape {
        infer_batch: args.infer_batch,
        context: args.context.unwrap_or(cfg.max_position_embeddings.min(4096)),
        train_batch: args.train_batch,
        train_seq: args.train_seq,
    };
    // Sized for this machine's default device and dtype, as a run here would load the model.
    let target = crate::preflight::budget::budget("auto", "auto", None, None).map_err(|e| anyhow::anyhow!(e))?.target;
    print!("{}", info_text(&args.model, &cfg, &dtypes, shape, target));
    Ok(())
}

// ---------------------------------------------------------------- generate

/// Byte offset just past the first occurrence of any stop string in `text`.
fn stop_end(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str()).map(|at| at + s.len())).min()
}

/// The prompt's token ids: rendered with the chat template when `chat`, otherwise encoded as
/// is (with the tokenizer's own special tokens, as transformers does by default).
fn prompt_ids(tok: &Tokenizer, dir: &Path, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    if chat {
        let text = tok
            .apply_chat_template(&[Message::user(prompt)], true)
            .with_context(|| format!("cannot render the chat template of {}", dir.display()))?;
        Ok(tok.encode(&text, false)?)
    } else {
        Ok(tok.encode(prompt, true)?)
    }
}

pub fn cmd_generate(args: &GenerateArgs) -> Result<()> {
    let cfg = require_model_folder(&args.model)?;
    let eos = model_eos_ids(&args.model)?;
    let tok = Tokenizer::load(&args.model)?.with_model_eos(&eos);
    let mut ids = prompt_ids(&tok, &args.model, &args.prompt, args.chat)?;
    if ids.is_empty() {
        match tok.bos_id() {
            Some(bos) => ids.push(bos),
            None => bail!("the prompt encodes to no tokens (the tokenizer has no token for its characters and no BOS)"),
        }
    }
    let context = cfg.max_position_embeddings;
    if ids.len() >= context {
        bail!("the prompt is {} tokens, longer than the model's context of {context} positions; shorten it", ids.len());
    }
    let mut max_new = args.max_new_tokens;
    if ids.len() + max_new > context {
        max_new = context - ids.len();
        eprintln!("retort: --max-new-tokens lowered to {max_new} to fit the context of {context} positions");
    }
    let model = Model::load(&args.model, &Device::Cpu, DType::F32, false)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        greedy: args.greedy,
        max_new_tokens: max_new,
        stop_token_ids: tok.eos_ids(),
        ..Default::default()
    };
    if args.tools.is_some() {
        let tools = crate::generate::tools::ToolsConfig { format: args.tool_format.clone(), max_calls: args.max_tool_calls, ..Default::default() };
        tools.check().map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
        let runner = tools.python();
        let mut rng = Rng::derive(args.seed, "generate-cli");
        let out = crate::generate::tools::generate_with_tools(&model.decoder, &tok, &[ids], &params, &mut rng, &tools.settings(&runner)?)?;
        let row = out.into_iter().next().context("generate returned no row for the one prompt")?;
        println!("{}", tok.decode(&row.completion.tokens, true)?);
        for (i, c) in row.calls.iter().enumerate() {
            eprintln!("retort: tool call {}: {:?} in {:.2} s, {} output tokens", i + 1, c.status, c.seconds, c.tokens);
        }
        eprintln!("retort: {} tokens ({} from tools), {} tool call(s)", row.completion.tokens.len(), row.from_tool.iter().filter(|&&t| t).count(), row.calls.len());
        return Ok(());
    }
    let stops = args.stop.clone();
    let decode = |t: &[u32]| tok.decode(t, false).unwrap_or_default();
    let stop_check = |t: &[u32]| stop_end(&decode(t), &stops).is_some();
    let mut rng = Rng::derive(args.seed, "generate-cli");
    let stop_fn: Option<crate::generate::StopCheck> = if stops.is_empty() { None } else { Some(&stop_check) };
    let out = generate(&model.decoder, &[ids], &params, &mut rng, stop_fn)?;
    let completion = out.into_iter().next().context("generate returned no row for the one prompt")?;
    let mut text = tok.decode(&completion.tokens, true)?;
    if let Some(end) = stop_end(&text, &stops) {
        text.truncate(end);
    }
    println!("{text}");
    let reason = match completion.finish {
        FinishReason::Eos => "end-of-sequence token",
        FinishReason::Stop => "stop string",
        FinishReason::Length => "max new tokens",
    };
    eprintln!("retort: {} tokens, stopped by {reason}", completion.tokens.len());
    Ok(())
}

// ---------------------------------------------------------------- bench

pub fn cmd_bench(action: BenchAction) -> Result<()> {
    let (args, train) = match action {
        BenchAction::Generate(a) => (a, false),
        BenchAction::Train(a) => (a, true),
        BenchAction::Mine(a) => return super::bench_mine::cmd_bench_mine(&a),
    };
    require_model_folder(&args.model)?;
    let opts = BenchOptions {
        batch: args.batch,
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        seq_len: args.seq_len,
        repeats: args.repeats,
        warmup: args.warmup,
        seed: args.seed,
    };
    let model = Model::load(&args.model, &Device::Cpu, DType::F32, train)?;
    let report = if train { bench::bench_train(&model, &opts)? } else { bench::bench_generate(&model, &opts)? };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", bench::format_report(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_end_finds_the_earliest_stop_string() {
        let stops = vec!["END".to_string(), "\n".to_string()];
        assert_eq!(stop_end("ab\ncdEND", &stops), Some(3));
        assert_eq!(stop_end("abEND\n", &stops), Some(5));
        assert_eq!(stop_end("abc", &stops), None);
        assert_eq!(stop_end("abc", &[String::new()]), None);
    }
}
