//! `retort embed`: sentence embeddings from an encoder folder (BERT, RoBERTa), one line per
//! text, and the encoder part of `retort model info`.

use crate::model::encoder::{self, embed_texts, EncoderModel, EncoderTokenizer, Pooling};
use crate::model::registry::{self, Family};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// An encoder folder: config.json (model_type bert or roberta), model.safetensors, tokenizer.json.
    pub model: PathBuf,
    /// A text to embed (repeatable).
    #[arg(long = "text", value_name = "T", required_unless_present = "jsonl", conflicts_with = "jsonl")]
    pub texts: Vec<String>,
    /// A JSONL file, one object a line, the text under --text-key.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text", requires = "jsonl")]
    pub text_key: String,
    /// Pooling: mean over the tokens, or the first token (default: the folder's
    /// 1_Pooling/config.json when it has one, else mean).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["mean", "cls"]))]
    pub pooling: Option<String>,
    /// Divide each embedding by its L2 norm (what sentence-transformers' Normalize module does).
    #[arg(long)]
    pub normalize: bool,
    /// Print each embedding as a JSON array (one per line) instead of a preview.
    #[arg(long)]
    pub json: bool,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Tokens kept per text, special tokens included (default: sentence-transformers'
    /// max_seq_length when the folder has one, else all the model's positions).
    #[arg(long)]
    pub max_len: Option<usize>,
}

/// The pooling a sentence-transformers folder declares in `1_Pooling/config.json`, if any.
fn folder_pooling(dir: &Path) -> Result<Option<Pooling>> {
    let path = dir.join("1_Pooling").join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let on = |key: &str| json.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
        (true, false) => Ok(Some(Pooling::Mean)),
        (false, true) => Ok(Some(Pooling::Cls)),
        _ => bail!(
            "{} asks for a pooling retort does not implement (only mean or CLS alone); choose one with --pooling mean|cls",
            path.display()
        ),
    }
}

/// Whether a sentence-transformers folder ends in a Normalize module (`modules.json`).
fn folder_normalizes(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("modules.json")).is_ok_and(|t| t.contains("sentence_transformers.models.Normalize"))
}

/// The texts of a JSONL file: field `key` of each non-empty line.
pub fn read_jsonl_texts(path: &Path, key: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = format!("{}:{}", path.display(), i + 1);
        let row: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{at}: not valid JSON"))?;
        match row.get(key).and_then(|v| v.as_str()) {
            Some(t) => out.push(t.to_string()),
            None => bail!("{at}: no string field `{key}` (name another with --text-key)"),
        }
    }
    Ok(out)
}

/// An encoder folder or a clear error saying what the folder is instead.
fn require_encoder(dir: &Path) -> Result<()> {
    if !dir.join("config.json").exists() {
        bail!("{} has no config.json: not a model folder", dir.display());
    }
    match registry::family_of(dir)? {
        Family::Encoder(_) => Ok(()),
        f @ Family::Decoder(_) => bail!(
            "{} is a decoder ({}); `retort embed` needs an encoder folder (model_type bert or roberta)",
            dir.display(),
            f.model_type()
        ),
    }
}

pub fn cmd_embed(args: &EmbedArgs) -> Result<()> {
    require_encoder(&args.model)?;
    let texts = match &args.jsonl {
        Some(path) => read_jsonl_texts(path, &args.text_key)?,
        None => args.texts.clone(),
    };
    if texts.is_empty() {
        bail!("no texts to embed");
    }
    let pooling = match &args.pooling {
        Some(p) => Pooling::parse(p).context("--pooling is mean or cls")?,
        None => folder_pooling(&args.model)?.unwrap_or(Pooling::Mean),
    };
    if !args.normalize && folder_normalizes(&args.model) {
        eprintln!("retort: note: {} ends in a Normalize module; pass --normalize to match sentence-transformers", args.model.display());
    }
    let model = EncoderModel::load(&args.model, &Device::Cpu, DType::F32, false)?;
    let tok = EncoderTokenizer::load(&args.model, &model.config, args.max_len)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embeddings = embed_texts(&model.encoder, &tok, &refs, pooling, args.normalize, args.batch as usize)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, (text, e)) in texts.iter().zip(&embeddings).enumerate() {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        } else {
            writeln!(out, "{}", preview_line(i, text, e))?;
        }
    }
    out.flush()?;
    eprintln!(
        "retort: {} text{}, dim {}, {} pooling{}, at most {} tokens a text",
        texts.len(),
        if texts.len() == 1 { "" } else { "s" },
        model.config.hidden_size,
        pooling.as_str(),
        if args.normalize { ", L2-normalised" } else { "" },
        tok.max_len()
    );
    Ok(())
}

/// `i  norm N  [a, b, c, …, z]  "text…"`.
fn preview_line(i: usize, text: &str, e: &[f32]) -> String {
    let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    let head: Vec<String> = e.iter().take(4).map(|x| format!("{x:+.4}")).collect();
    let tail = if e.len() > 4 { format!(", …, {:+.4}", e[e.len() - 1]) } else { String::new() };
    let mut shown: String = text.chars().take(48).collect();
    if text.chars().count() > 48 {
        shown.push('…');
    }
    format!("{i:>4}  norm {norm:.4}  [{}{tail}]  {shown:?}", head.join(", "))
}

/// `retort model info` for an encoder folder: shape, parameters, heads, dtype on disk.
pub fn encoder_info_text(dir: &Path) -> Result<String> {
    let (cfg, layout) = encoder::inspect(dir)?;
    let dtypes: BTreeMap<String, (usize, usize)> = encoder::checkpoint::used_dtypes(dir, &layout)?;
    let mut s = String::new();
    s += &format!("model folder   {}\n", dir.display());
    s += &format!(
        "architecture   {} (encoder; base {})\n",
        cfg.architecture.as_deref().unwrap_or("-"),
        cfg.model_type.base_architecture()
    );
    s += &format!("model_type     {}\n", cfg.model_type.as_str());
    s += &format!(
        "shape          layers {}, heads {}, head_dim {}, hidden {}, intermediate {}, vocab {}, positions {} (at most {} tokens), token types {}\n",
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.head_dim(),
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.max_position_embeddings,
        cfg.max_tokens(),
        cfg.type_vocab_size
    );
    let tied = if layout.heads.mlm { format!(", MLM decoder tied to the embeddings {}", cfg.tie_word_embeddings) } else { String::new() };
    s += &format!(
        "details        hidden_act {}, layer_norm_eps {:e}, pad_token_id {}{tied}\n",
        cfg.hidden_act.as_str(),
        cfg.layer_norm_eps,
        cfg.pad_token_id,
    );
    s += &format!("parameters     {}\n", layout.num_parameters());
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    s += &format!(
        "heads          pooler {}, masked-LM {}; tensor prefix {}\n",
        yes_no(layout.heads.pooler),
        yes_no(layout.heads.mlm),
        if layout.prefix.is_empty() { "none".to_string() } else { format!("`{}`", layout.prefix) }
    );
    let on_disk: Vec<String> = dtypes.iter().map(|(d, (n, e))| format!("{d} ({n} tensors, {e} elements)")).collect();
    s += &format!("dtype on disk  {}\n", if on_disk.is_empty() { "no tensors".to_string() } else { on_disk.join(", ") });
    if !layout.ignored.is_empty() {
        let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, why) in &layout.ignored {
            reasons.entry(why).or_default().push(name);
        }
        for (why, names) in reasons {
            s += &format!("not used       {} — {why}\n", names.join(", "));
        }
    }
    Ok(s)
}
