//! `retort synth METHOD INPUT... --out DIR`: a one-stage run of the `synth` stage, and
//! `--dry-run`, which prints what a method makes of one document without writing anything.

use super::{outcome_code, toml_string};
use crate::profile::Profile;
use crate::synth::methods::{self, MethodEnv};
use crate::text::corpus::{Corpus, CorpusConfig};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "\
Methods:
  adaptllm     raw domain text -> reading-comprehension text (data.jsonl), the same tasks as chat
               rows (chat.jsonl) and the mined tasks for auditing (tasks.jsonl)
  toedit       ToEdit token editing: resample the tokens a prior LM is sure of (p >= threshold)
               in human text -> edited text (data.jsonl) and per-document counts (audit.jsonl);
               needs --prior MODEL (a model folder). Options: strategy = up_revise |
               low_drop_up_revise | filtering, threshold (0.99), drop_threshold (0.001), top_k
               (8), beta (1.0; the reference code's default is 1.5), batch_size (8), max_len
               (window; default min(prior context, 2048)), stride, truncate (false: documents
               longer than a window are edited in windows and kept whole; true: cut at max_len
               as the reference does), generations (1). Docs: docs/TOEDIT.md
  tiny-domain  the generated corpora of the adaptllm-tiny experiment (no INPUT)

Inputs are text files or folders of them (one document per file, or per blank-line-separated
block with --set split=paragraph), JSONL (--set text_key=KEY, default text) or Parquet (a column,
also text_key). Unreadable documents are skipped and counted in OUT/stats.json.

Examples:
  retort synth adaptllm abstracts.jsonl --out rc --set domain=biomedicine
  retort synth adaptllm --dry-run paper.txt          # the tasks mined from one document
  retort synth tiny-domain --out corpora --set seed=3
  retort synth toedit human.jsonl --prior qwen2-0.5b --out edited --set strategy=low_drop_up_revise
  retort synth toedit --dry-run human.jsonl --prior qwen2-0.5b   # the edits of one document
A killed synth resumes when the same command runs again (same inputs, options and --out).")]
pub struct SynthArgs {
    /// The method (see below).
    pub method: String,
    /// Corpus files or folders.
    pub inputs: Vec<String>,
    /// Folder for the data set (required unless --dry-run).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A stage key (`limit`, `text_key`, `split`, `format`, …) or a method option
    /// (`domain`, `tokenizer`, …), e.g. `--set domain=finance`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The prior LM of `toedit` (a model folder); the same as `--set prior=MODEL`.
    #[arg(long)]
    pub prior: Option<String>,
    /// Print what the method makes of one document of the first INPUT; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: which document (0 = the first).
    #[arg(long, default_value_t = 0)]
    pub doc: u64,
    #[arg(long)]
    pub headless: bool,
    #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Keys of the stage itself; any other `--set` key is a method option.
const STAGE_KEYS: &[&str] = &["limit", "checkpoint_every", "format", "split", "text_key", "max_doc_bytes", "out", "input", "method", "options"];

fn stage_key(set: &str) -> String {
    let key = set.split('=').next().unwrap_or("").trim();
    let first = key.split('.').next().unwrap_or("");
    if STAGE_KEYS.contains(&first) {
        format!("stage.synth.{}", set.trim())
    } else {
        format!("stage.synth.options.{}", set.trim())
    }
}

/// The `--set`s split: stage keys as profile overrides, and the method's options as a
/// `[stage.options]` table for the profile text itself (a required option such as `prior`
/// must be there before the profile is first validated). `--prior` comes first, so a later
/// `--set prior=` wins.
fn all_sets(args: &SynthArgs) -> Result<(Vec<String>, toml::Table)> {
    let mut options = toml::Table::new();
    if let Some(p) = &args.prior {
        options.insert("prior".into(), toml::Value::String(p.clone()));
    }
    let mut stage = Vec::new();
    for set in &args.set {
        let key = set.split('=').next().unwrap_or("").trim();
        if STAGE_KEYS.contains(&key.split('.').next().unwrap_or("")) {
            stage.push(stage_key(set));
            continue;
        }
        let Some((path, raw)) = set.split_once('=') else { bail!("--set {set}: expected KEY=VALUE, e.g. --set domain=finance") };
        let parts: Vec<&str> = path.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("--set {set}: expected KEY=VALUE, e.g. --set domain=finance");
        }
        let mut table = &mut options;
        for part in &parts[..parts.len() - 1] {
            let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            let toml::Value::Table(t) = entry else { bail!("--set {set}: `{part}` is not a table") };
            table = t;
        }
        table.insert(parts[parts.len() - 1].to_string(), crate::profile::parse_override_value(raw.trim()));
    }
    Ok((stage, options))
}

/// The one-stage profile `text` with `options` as its stage's `options` table.
fn with_options(text: &str, options: toml::Table) -> Result<String> {
    if options.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml::Table = toml::from_str(text)?;
    if let Some(toml::Value::Table(stage)) = doc.get_mut("stage").and_then(|s| s.as_array_mut()).and_then(|a| a.first_mut()) {
        stage.insert("options".into(), toml::Value::Table(options));
    }
    Ok(toml::to_string(&doc)?)
}

pub fn cmd_synth(args: SynthArgs) -> Result<i32> {
    methods::find(&args.method).map_err(anyhow::Error::msg)?;
    if args.dry_run {
        return dry_run(&args).map(|_| 0);
    }
    let Some(out) = &args.out else { bail!("say where the data set goes: --out DIR") };
    let inputs: Vec<String> = args.inputs.iter().map(|i| toml_string(i)).collect();
    let text = format!(
        "[run]\nname = \"synth-{}\"\n\n[[stage]]\nkind = \"synth\"\nname = \"synth\"\nmethod = {}\ninput = [{}]\nout = {}\n",
        args.method,
        toml_string(&args.method),
        inputs.join(", "),
        toml_string(&out.to_string_lossy())
    );
    let (sets, options) = all_sets(&args)?;
    let text = with_options(&text, options)?;
    let profile = Profile::parse(&text, "retort synth")?.apply_sets(&sets)?;
    let outcome = super::run::run_one_stage(profile, &args.runs_dir, args.headless)?;
    if outcome == crate::bus::Outcome::Finished {
        eprintln!("retort: data set in {}", out.display());
    }
    Ok(outcome_code(outcome))
}

/// Build the stage config as a run would (so `--set` errors are the same), then run the
/// method on one document and print its preview.
fn dry_run(args: &SynthArgs) -> Result<()> {
    let Some(first) = args.inputs.first() else { bail!("--dry-run needs a file: retort synth {} --dry-run FILE", args.method) };
    let text = format!(
        "[run]\nname = \"dry-run\"\n\n[[stage]]\nkind = \"synth\"\nname = \"synth\"\nmethod = {}\ninput = [{}]\n",
        toml_string(&args.method),
        toml_string(first)
    );
    let (sets, options) = all_sets(args)?;
    let text = with_options(&text, options)?;
    let profile = Profile::parse(&text, "retort synth --dry-run")?.apply_sets(&sets)?;
    let table = profile.stages[0].config.to_table();
    let stage: crate::synth::stage::SynthStage = toml::Value::Table(table).try_into().context("reading the synth options")?;
    let spec = methods::find(&stage.method).map_err(anyhow::Error::msg)?;
    let env = MethodEnv { seed: profile.run.seed, outputs: Default::default(), device: candle_core::Device::Cpu };
    let mut method = methods::build(spec, &stage.options, &env)?;
    let config: CorpusConfig = stage.corpus_config();
    let mut corpus = Corpus::open(&[PathBuf::from(first)], &config)?;
    let mut seen = 0u64;
    let doc = loop {
        match corpus.next() {
            Some(d) => {
                let d = d?;
                if d.id == args.doc {
                    break d;
                }
                seen += 1;
            }
            None => bail!(
                "{first} has no document {} (it has {seen}, counting from 0; skipped: {:?})",
                args.doc,
                corpus.skipped().counts()
            ),
        }
    };
    println!("{}", method.preview(&doc)?);
    Ok(())
}
