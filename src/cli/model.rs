//! `retort model init|info`, `retort generate` and `retort bench`: the quick checks a
//! researcher runs on a model folder before training on it (issue 3).

use crate::bench::{self, BenchOptions};
use crate::generate::{generate, FinishReason, SamplingParams};
use crate::model::config::PRESETS;
use crate::preflight::plan::{Arch, InfoShape, Target};
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
    /// Shape: tiny (~1M parameters), small, qwen2.5-0.5b (the exact Qwen2.5-0.5B shape), or
    /// tiny-vlm (a qwen2_vl folder: tiny's decoder, a 2-block vision tower, 14-pixel patches),
    /// tiny-llava (a llava folder: tiny's decoder, a 3-layer CLIP tower on 56×56 images).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS.iter().copied().chain([crate::model::vision::tiny::PRESET, crate::model::vision::tiny_llava::PRESET])))]
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
    /// tiny-vlm: vision tower blocks (with the LLM's size flags above, any Qwen2-VL shape;
    /// Qwen2-VL-2B: --hidden 1536 --layers 28 --heads 12 --kv-heads 2 --intermediate 8960
    /// --vocab 151936 --vision-depth 32 --vision-width 1280 --vision-heads 16 --vision-mlp-ratio 4).
    #[arg(long)]
    pub vision_depth: Option<usize>,
    /// tiny-vlm: the tower's width (embed_dim).
    #[arg(long)]
    pub vision_width: Option<usize>,
    /// tiny-vlm: the tower's attention heads.
    #[arg(long)]
    pub vision_heads: Option<usize>,
    /// tiny-vlm: the tower's MLP width as a multiple of its width.
    #[arg(long)]
    pub vision_mlp_ratio: Option<f64>,
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
    /// Wrap the prompt as a user message with the tokenizer's chat template (with --image, the
    /// answer also ends at the turn's end, <|im_end|> or <|eot_id|>, as the eval stage's image sets do).
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
    /// An image for a vision-language model folder (repeatable; PNG, JPEG or WebP). Each
    /// `<image>` in the prompt marks where the next one goes; without markers they all come first.
    #[arg(long = "image", value_name = "FILE", conflicts_with = "tools")]
    pub image: Vec<PathBuf>,
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
    /// Prefill and decode of a vision-language model with one image; benches/peer_vlm.py is
    /// the transformers side.
    Vlm(super::bench_vlm::VlmBenchArgs),
    /// The decode matmuls of one token step for a few rows (default: 16 rows at the 135M
    /// llama shape), each skinny kernel against a plain read of the weights.
    Matmul(super::bench_matmul::MatmulBenchArgs),
    /// The training products of one layer and the LM head (default: 1,700 rows at the 135M
    /// llama shape) with f32 sgemm and the bf16 kernel of `update_dtype = "bf16"`.
    Gemm(super::bench_gemm::GemmBenchArgs),
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
    /// `bench train` only: the products' precision, `f32` or `bf16` (a training stage's
    /// `update_dtype`).
    #[arg(long, default_value = "f32")]
    pub update_dtype: crate::model::fused::precision::Precision,
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
    if args.preset == crate::model::vision::tiny_llava::PRESET {
        anyhow::ensure!(args.context.is_none(), "--context is not supported with --preset {}", args.preset);
        let config = crate::model::vision::tiny_llava::init_folder(&args.out, args.seed)?;
        let params: usize = config.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        println!("wrote {}: llava preset {}, {params} parameters, seed {}", args.out.display(), args.preset, args.seed);
        return Ok(());
    }
    if args.preset == crate::model::vision::tiny::PRESET {
        anyhow::ensure!(args.context.is_none() && args.arch.is_none(), "--context and --arch are not supported with --preset {}", args.preset);
        let shape = crate::model::init::Shape {
            arch: None,
            hidden: args.hidden,
            layers: args.layers,
            heads: args.heads,
            kv_heads: args.kv_heads,
            intermediate: args.intermediate,
            vocab: args.vocab,
            untied: args.untied,
        };
        let tower = crate::model::vision::tiny::TowerShape { depth: args.vision_depth, width: args.vision_width, heads: args.vision_heads, mlp_ratio: args.vision_mlp_ratio };
        let config = crate::model::vision::tiny::init_folder_shaped(&args.out, args.seed, &shape, &tower)?;
        let params: usize = config.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        println!("wrote {}: qwen2_vl preset {}, {params} parameters, seed {}", args.out.display(), args.preset, args.seed);
        return Ok(());
    }
    anyhow::ensure!(
        [args.vision_depth, args.vision_width, args.vision_heads].iter().all(Option::is_none) && args.vision_mlp_ratio.is_none(),
        "the --vision-* flags shape the tower of --preset {}",
        crate::model::vision::tiny::PRESET
    );
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
    s += &super::info_memory::memory_text(&Arch::Decoder(cfg.clone()), shape, target);
    s
}

/// The memory preflight's figures for `model info` (`retort preflight` sizes a profile's
/// stages with the same function, [`model_info`]).
fn cmd_info(args: &InfoArgs) -> Result<()> {
    if crate::model::vision::family::family_of(&args.model) == Some(crate::model::vision::Family::Llava) {
        let shape = InfoShape { infer_batch: args.infer_batch, context: 0, train_batch: args.train_batch, train_seq: args.train_seq };
        print!("{}", super::llava_info::llava_info_text(&args.model, shape, args.context)?);
        return Ok(());
    }
    if crate::model::vision::is_vlm_folder(&args.model) {
        print!("{}", vlm_info_text(args)?);
        return Ok(());
    }
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

/// `retort model info` for a `qwen2_vl` folder: the three parts with their parameter counts,
/// the image budget in tokens, and the memory preflight's figures for the folder.
fn vlm_info_text(args: &InfoArgs) -> Result<String> {
    use crate::model::vision::{ImageProcessorConfig, Qwen2VlConfig};
    let dir = &args.model;
    let cfg = Qwen2VlConfig::from_file(&dir.join("config.json"))?;
    let pp = dir.join("preprocessor_config.json");
    let processor = if pp.is_file() { ImageProcessorConfig::from_file(&pp)? } else { ImageProcessorConfig::qwen2_vl() };
    let count = |prefix: &str, not: Option<&str>| -> usize {
        cfg.parameter_shapes()
            .iter()
            .filter(|(n, _)| n.starts_with(prefix) && not.is_none_or(|x| !n.starts_with(x)))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    };
    let (tower, projector) = (count("visual.", Some("visual.merger.")), count("visual.merger.", None));
    let llm = cfg.text.num_parameters();
    let v = &cfg.vision;
    let t = &cfg.text;
    let per_token = processor.factor() * processor.factor();
    let mut s = String::new();
    s += &format!("model folder   {}\n", dir.display());
    s += "architecture   Qwen2VLForConditionalGeneration\n";
    s += "model_type     qwen2_vl (vision-language)\n";
    s += &format!(
        "vision tower   depth {}, width {}, heads {}, mlp ×{}, patch {}, temporal patch {}, merge {}×{}: {tower} parameters\n",
        v.depth, v.embed_dim, v.num_heads, v.mlp_ratio, v.patch_size, v.temporal_patch_size, v.spatial_merge_size, v.spatial_merge_size
    );
    s += &format!("projector      patch merger {} → {}: {projector} parameters\n", v.embed_dim * v.spatial_merge_size * v.spatial_merge_size, t.hidden_size);
    s += &format!(
        "llm            qwen2: layers {}, heads {}, kv heads {}, head_dim {}, hidden {}, intermediate {}, vocab {}, context {}, M-RoPE sections {:?}: {llm} parameters\n",
        t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim, t.hidden_size, t.intermediate_size, t.vocab_size, t.max_position_embeddings, cfg.mrope_section
    );
    s += &format!("parameters     {}\n", tower + projector + llm);
    s += &format!(
        "images         {}..{} pixels after smart_resize: {}..{} tokens each (one per {}×{} pixels)\n",
        processor.min_pixels,
        processor.max_pixels,
        processor.min_pixels.div_ceil(per_token),
        processor.max_pixels / per_token,
        processor.factor(),
        processor.factor()
    );
    let shape = InfoShape {
        infer_batch: args.infer_batch,
        context: args.context.unwrap_or(t.max_position_embeddings.min(4096)),
        train_batch: args.train_batch,
        train_seq: args.train_seq,
    };
    // The memory preflight's own figures for this folder (tower, projector and LLM).
    let target = crate::preflight::budget::budget("auto", "auto", None, None).map_err(|e| anyhow::anyhow!(e))?.target;
    let arch = crate::preflight::resolve::arch_of_folder(dir).map_err(|e| anyhow::anyhow!(e))?;
    s += &super::info_memory::memory_text(&arch, shape, target);
    Ok(s)
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
    if crate::model::vision::is_vlm_folder(&args.model) {
        return cmd_generate_vlm(args);
    }
    if !args.image.is_empty() {
        bail!("--image needs a vision-language model folder (model_type qwen2_vl or llava); {} is not one", args.model.display());
    }
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

/// `retort generate` on a `qwen2_vl` folder: the images are preprocessed with the folder's
/// processor, their features prefilled with the prompt.
fn cmd_generate_vlm(args: &GenerateArgs) -> Result<()> {
    use crate::model::vision::{family, prompt};
    let model = family::load(&args.model, &Device::Cpu, DType::F32, false)?;
    let model = model.as_ref();
    let eos = model_eos_ids(&args.model)?;
    let tok = Tokenizer::load(&args.model)?.with_model_eos(&eos);
    let placeholder = model.placeholder(&tok).map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    let markers = prompt::count_markers(&args.prompt);
    let text = match markers {
        0 => format!("{}{}", prompt::IMAGE_MARKER.repeat(args.image.len()), args.prompt),
        n if n == args.image.len() => args.prompt.clone(),
        n => bail!("the prompt has {n} <image> marker(s) but {} --image file(s) were given", args.image.len()),
    };
    let text = prompt::expand_markers(&text, &placeholder);
    let ids = prompt_ids(&tok, &args.model, &text, args.chat)?;
    let images = args.image.iter().map(|p| model.load_image(p)).collect::<std::result::Result<Vec<_>, _>>()?;
    let counts: Vec<usize> = images.iter().map(|im| model.image_tokens(im)).collect();
    let ids = crate::model::vision::mrope::expand_image_tokens(&ids, model.image_token_id(), &counts).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!ids.is_empty(), "the prompt encodes to no tokens");
    let context = model.text_config().max_position_embeddings;
    anyhow::ensure!(ids.len() < context, "the prompt with its images is {} tokens, longer than the model's context of {context}", ids.len());
    let max_new = args.max_new_tokens.min(context - ids.len());
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        greedy: args.greedy,
        max_new_tokens: max_new,
        // As the eval stage's image sets: a chat answer ends with its turn.
        stop_token_ids: if args.chat { tok.chat_stop_ids() } else { tok.eos_ids() },
        ..SamplingParams::default()
    };
    let stops = args.stop.clone();
    let decode = |t: &[u32]| tok.decode(t, false).unwrap_or_default();
    let stop_check = |t: &[u32]| stop_end(&decode(t), &stops).is_some();
    let stop_fn: Option<crate::generate::StopCheck> = if stops.is_empty() { None } else { Some(&stop_check) };
    let mut rng = Rng::derive(args.seed, "generate-cli");
    let out = crate::generate::vision::generate_with_images(model, &[ids.clone()], &[images], &params, &mut rng, stop_fn)?;
    let completion = out.into_iter().next().context("generate returned no row for the one prompt")?;
    let mut text = tok.decode(&completion.tokens, true)?;
    if let Some(end) = stop_end(&text, &stops) {
        text.truncate(end);
    }
    println!("{text}");
    eprintln!(
        "retort: {} prompt tokens ({} from {} image(s)), {} new tokens",
        ids.len(),
        counts.iter().sum::<usize>(),
        counts.len(),
        completion.tokens.len()
    );
    Ok(())
}

// ---------------------------------------------------------------- bench

pub fn cmd_bench(action: BenchAction) -> Result<()> {
    let (args, train) = match action {
        BenchAction::Generate(a) => (a, false),
        BenchAction::Train(a) => (a, true),
        BenchAction::Mine(a) => return super::bench_mine::cmd_bench_mine(&a),
        BenchAction::Vlm(a) => return super::bench_vlm::cmd_bench_vlm(&a),
        BenchAction::Matmul(a) => return super::bench_matmul::cmd_bench_matmul(&a),
        BenchAction::Gemm(a) => return super::bench_gemm::cmd_bench_gemm(&a),
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
    let _precision = crate::model::fused::precision::scoped(args.update_dtype);
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
