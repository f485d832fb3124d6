//! `retort synth METHOD INPUT... --out DIR`: a one-stage run of the `synth` stage, and
//! `--dry-run`, which prints what a method makes of one document without writing anything.
//! `retort synth stats INPUT...` is not a method but the statistics of corpora
//! (`super::synth_stats`); it shares this entry so that `retort synth METHOD` stays positional.

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
  tiny-domain  the generated corpora of the adaptllm-tiny experiment (no INPUT)
  stats        not a method: statistics of a corpus, optionally against another (--compare)
               and under a prior LM (--prior). Prints a table (or --json); --out DIR writes
               DIR/stats.json, ppl_hist.png and token_prob.png. See docs/CORPUS_STATS.md.

Inputs are text files or folders of them (one document per file, or per blank-line-separated
block with --set split=paragraph), JSONL (--set text_key=KEY, default text) or Parquet (a column,
also text_key). Unreadable documents are skipped and counted in OUT/stats.json.

Examples:
  retort synth adaptllm abstracts.jsonl --out rc --set domain=biomedicine
  retort synth adaptllm --dry-run paper.txt          # the tasks mined from one document
  retort synth tiny-domain --out corpora --set seed=3
  retort synth stats human.jsonl --compare synthetic.jsonl --prior models/prior --out st

stats: n-gram features are the unigrams and bigrams of the lowercased text split by
\\w+|[^\\w\\s]+ (NLTK's WordPunctTokenizer, as DSIR), hashed with FNV-1a 64 into 10,000 buckets;
entropy and KL (add-one smoothed) in bits. Its --set keys: text_key, split, format,
max_doc_bytes, limit (documents per corpus), buckets, ngram_tokens (words|prior), top_bigrams,
top_capacity, max_distinct, max_len, stride, batch_size (the prior's windows).
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
    /// Print what the method makes of one document of the first INPUT; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: which document (0 = the first).
    #[arg(long, default_value_t = 0)]
    pub doc: u64,
    /// stats: a model folder; adds per-document perplexity and the token-probability histogram.
    #[arg(long, value_name = "MODEL")]
    pub prior: Option<PathBuf>,
    /// stats: a second corpus (files or folders) measured the same way and compared.
    #[arg(long, value_name = "OTHER", num_args = 1..)]
    pub compare: Vec<String>,
    /// stats: print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
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

pub fn cmd_synth(args: SynthArgs) -> Result<i32> {
    if args.method == "stats" {
        let stats = super::synth_stats::StatsArgs {
            inputs: &args.inputs,
            compare: &args.compare,
            prior: args.prior.as_deref(),
            json: args.json,
            out: args.out.as_deref(),
            set: &args.set,
            dry_run: args.dry_run,
        };
        return super::synth_stats::cmd_stats(&stats).map(|_| 0);
    }
    if args.prior.is_some() || !args.compare.is_empty() || args.json {
        bail!("--prior, --compare and --json belong to `retort synth stats`, not to a method");
    }
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
    let sets: Vec<String> = args.set.iter().map(|s| stage_key(s)).collect();
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
    let sets: Vec<String> = args.set.iter().map(|s| stage_key(s)).collect();
    let profile = Profile::parse(&text, "retort synth --dry-run")?.apply_sets(&sets)?;
    let table = profile.stages[0].config.to_table();
    let stage: crate::synth::stage::SynthStage = toml::Value::Table(table).try_into().context("reading the synth options")?;
    let spec = methods::find(&stage.method).map_err(anyhow::Error::msg)?;
    let env = MethodEnv { seed: profile.run.seed, outputs: Default::default() };
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
