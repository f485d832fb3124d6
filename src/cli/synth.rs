//! `retort synth METHOD INPUT... --out DIR`: a one-stage run of the `synth` stage, and
//! `--dry-run`, which prints what a method makes of one document without writing anything.
//! `retort synth stats INPUT...` is not a method but the statistics of corpora
//! (`super::synth_stats`); it shares this entry so that `retort synth METHOD` stays positional.

use super::outcome_code;
use crate::profile::Profile;
use crate::synth::method::MethodEnv;
use crate::synth::methods;
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
  instruct     Instruction Pre-Training: a synthesizer model (--synthesizer MODEL, a model folder)
               writes instruction-response pairs about each text, greedily; the texts of a batch
               are chained over rounds into few-shot prompts and rendered into pre-training text
               (data.jsonl) plus the parsed pairs per text (pairs.jsonl). Options: rounds (2),
               batch_size (64 texts chained together), generation_batch (16), max_new_tokens
               (400), max_model_len (the synthesizer's context), pairs_context (true)
  tiny-domain  the generated corpora of the adaptllm-tiny experiment (no INPUT)
  tiny-human   a long-tailed \"human\" corpus (Zipfian order-2 Markov source) for toedit-tiny
               (no INPUT): human.jsonl, human_heldout.jsonl; options docs, heldout, vocab, zipf,
               successors, stickiness, seed
  tiny-encyclopedia  fictional entities with known facts for instruct-pt-tiny (no INPUT): raw.jsonl,
               qa_rule.jsonl (rule-based pairs), qa_eval.jsonl (closed-book choice rows) and
               by-split copies; options entities, heldout_fraction, augmented_fraction, options, seed
  visual       AdaMLLM step (B) on image-caption pairs (INPUT = PAIRS.json, LLaMA-Factory rows
               {\"images\", \"messages\"}): the synthesizer (--synthesizer MODEL, a qwen2_vl folder)
               writes a task per image, greedily; the consistency judge (--checker MODEL, a
               text-only LM, or --checker rule) keeps the consistent ones. Writes triplets.jsonl
               (every task, its label and the raw output), single_stage.jsonl,
               single_stage_nofilter.jsonl, captions.jsonl and tasks.jsonl (sft rows). Options:
               max_new_tokens (512), batch_size (8), blank_images (false), train_on_syn_only
               (false), scenes (known truth, tiny experiment), limit. Resumes after a kill.
  visual-seed  AdaMLLM step (A)'s data (no INPUT): --set captions=F --set precise=F --set
               informative=F (seed rows) -> synthesizer.jsonl, synthesizer_valid.jsonl, blank.png;
               blank_share (0.1), valid_share (0.1). Train with [stage.vision] mask = \"synthesizer\"
  sample       documents sampled from a model (no INPUT): --set model=MODEL, docs (1000),
               max_new_tokens (128), top_p (0.9), temperature (1.0), batch_size (32)
  stats        not a method: statistics of a corpus, optionally against another (--compare)
               and under a prior LM (--prior). Prints a table (or --json); --out DIR writes
               DIR/stats.json, ppl_hist.png and token_prob.png. See docs/CORPUS_STATS.md.
  pair-accuracy  not a method: an instruct run's pairs.jsonl checked against the facts of the
               tiny-encyclopedia folder its texts came from (--encyclopedia DIR): texts with
               pairs, pairs per text, correct / wrong answer / unknown question, fact coverage

Inputs are text files or folders of them (one document per file, or per blank-line-separated
block with --set split=paragraph), JSONL (--set text_key=KEY, default text) or Parquet (a column,
also text_key). Unreadable documents are skipped and counted in OUT/stats.json.

Examples:
  retort synth adaptllm abstracts.jsonl --out rc --set domain=biomedicine
  retort synth adaptllm --dry-run paper.txt          # the tasks mined from one document
  retort synth tiny-domain --out corpora --set seed=3
  retort synth toedit human.jsonl --prior qwen2-0.5b --out edited --set strategy=low_drop_up_revise
  retort synth toedit --dry-run human.jsonl --prior qwen2-0.5b   # the edits of one document
  retort synth instruct raw.jsonl --synthesizer synth-model --out augmented --set rounds=3
  retort synth instruct --dry-run raw.jsonl --synthesizer synth-model --doc 2   # prompt, output, pairs
  retort synth visual pairs.json --synthesizer synth-vlm --checker rule --out visual
  retort synth sample --out synthetic --set model=runs/x/prior/model --set docs=2000
  retort synth stats human.jsonl --compare synthetic.jsonl --prior models/prior --out st
  retort synth pair-accuracy runs/x/augmented/pairs.jsonl --encyclopedia runs/x/encyc

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
    /// A prior LM (a model folder): toedit's (the same as `--set prior=MODEL`), or for
    /// `stats` the model that adds per-document perplexity and the token-probability histogram.
    #[arg(long, value_name = "MODEL")]
    pub prior: Option<String>,
    /// instruct, visual: the synthesizer (a model folder; the same as `--set synthesizer=MODEL`).
    #[arg(long, value_name = "MODEL")]
    pub synthesizer: Option<String>,
    /// visual: the consistency judge, a text-only LM folder or `rule` (the same as `--set checker=...`).
    #[arg(long, value_name = "MODEL")]
    pub checker: Option<String>,
    /// Print what the method makes of one document of the first INPUT; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: which document (0 = the first).
    #[arg(long, default_value_t = 0)]
    pub doc: u64,
    /// stats: a second corpus (files or folders) measured the same way and compared.
    #[arg(long, value_name = "OTHER", num_args = 1..)]
    pub compare: Vec<String>,
    /// stats, pair-accuracy: print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// pair-accuracy: the tiny-encyclopedia folder the synthesized texts came from.
    #[arg(long, value_name = "DIR")]
    pub encyclopedia: Option<PathBuf>,
    #[arg(long)]
    pub headless: bool,
    #[arg(long, env = "RETORT_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Keys of the stage itself; any other `--set` key is a method option.
const STAGE_KEYS: &[&str] = &["limit", "checkpoint_every", "format", "split", "text_key", "max_doc_bytes", "out", "input", "method", "options", "stats", "stats_prior", "stats_compare"];

/// The one-stage profile of `retort synth`: the stage's keys and options with every `--set`
/// written in before the profile is checked, so options a method requires (a model, a prior)
/// can come from `--set` alone.
fn synth_profile(name: &str, method: &str, inputs: &[String], out: Option<&PathBuf>, sets: &[String]) -> Result<String> {
    let mut stage = toml::Table::new();
    stage.insert("kind".into(), "synth".into());
    stage.insert("name".into(), "synth".into());
    stage.insert("method".into(), method.into());
    if !inputs.is_empty() {
        stage.insert("input".into(), toml::Value::Array(inputs.iter().map(|i| toml::Value::String(i.clone())).collect()));
    }
    if let Some(out) = out {
        stage.insert("out".into(), out.to_string_lossy().into_owned().into());
    }
    for set in sets {
        let Some((key, raw)) = set.split_once('=') else { bail!("--set {set}: write KEY=VALUE, e.g. --set domain=finance") };
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("--set {set}: `{}` is not a key", key.trim());
        }
        let value = crate::profile::parse_override_value(raw.trim());
        let mut table = if STAGE_KEYS.contains(&path[0]) { &mut stage } else { table_at(&mut stage, "options", set)? };
        for part in &path[..path.len() - 1] {
            table = table_at(table, part, set)?;
        }
        table.insert(path[path.len() - 1].to_string(), value);
    }
    let mut run = toml::Table::new();
    run.insert("name".into(), name.into());
    let mut root = toml::Table::new();
    root.insert("run".into(), run.into());
    root.insert("stage".into(), toml::Value::Array(vec![stage.into()]));
    Ok(toml::to_string(&root)?)
}

/// The `--set`s, with `--prior` and `--synthesizer` first (so a later `--set prior=` wins).
fn all_sets(args: &SynthArgs) -> Vec<String> {
    let prior = args.prior.iter().map(|p| format!("prior={}", crate::cli::toml_string(p)));
    let synthesizer = args.synthesizer.iter().map(|p| format!("synthesizer={}", crate::cli::toml_string(p)));
    let checker = args.checker.iter().map(|p| format!("checker={}", crate::cli::toml_string(p)));
    // `visual` reads its pairs file itself (a JSON array is not a corpus): INPUT is its option.
    let pairs = args.inputs.iter().filter(|_| args.method == "visual").map(|p| format!("pairs={}", crate::cli::toml_string(p)));
    prior.chain(synthesizer).chain(checker).chain(pairs).chain(args.set.iter().cloned()).collect()
}

fn table_at<'a>(table: &'a mut toml::Table, key: &str, set: &str) -> Result<&'a mut toml::Table> {
    match table.entry(key.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
        toml::Value::Table(t) => Ok(t),
        _ => bail!("--set {set}: `{key}` is a value, not a table"),
    }
}

pub fn cmd_synth(args: SynthArgs) -> Result<i32> {
    if args.method == "stats" {
        let stats = super::synth_stats::StatsArgs {
            inputs: &args.inputs,
            compare: &args.compare,
            prior: args.prior.as_deref().map(std::path::Path::new),
            json: args.json,
            out: args.out.as_deref(),
            set: &args.set,
            dry_run: args.dry_run,
        };
        return super::synth_stats::cmd_stats(&stats).map(|_| 0);
    }
    if args.method == "pair-accuracy" {
        return super::synth_pairs::cmd_pair_accuracy(&args.inputs, args.encyclopedia.as_deref(), args.json).map(|_| 0);
    }
    if args.encyclopedia.is_some() {
        bail!("--encyclopedia belongs to `retort synth pair-accuracy`, not to a method");
    }
    if !args.compare.is_empty() || args.json {
        bail!("--compare and --json belong to `retort synth stats`, not to a method");
    }
    if args.prior.is_some() && args.method != "toedit" {
        bail!("--prior belongs to `retort synth toedit` and `retort synth stats`, not to `{}`", args.method);
    }
    if args.synthesizer.is_some() && !["instruct", "visual"].contains(&args.method.as_str()) {
        bail!("--synthesizer belongs to `retort synth instruct` and `retort synth visual`, not to `{}`", args.method);
    }
    if args.checker.is_some() && args.method != "visual" {
        bail!("--checker belongs to `retort synth visual`, not to `{}`", args.method);
    }
    if args.method == "visual" && args.inputs.len() > 1 {
        bail!("retort synth visual reads one pairs file (PAIRS.json); got {} inputs", args.inputs.len());
    }
    methods::find(&args.method).map_err(anyhow::Error::msg)?;
    if args.dry_run {
        return dry_run(&args).map(|_| 0);
    }
    let Some(out) = &args.out else { bail!("say where the data set goes: --out DIR") };
    let inputs: &[String] = if args.method == "visual" { &[] } else { &args.inputs };
    let text = synth_profile(&format!("synth-{}", args.method), &args.method, inputs, Some(out), &all_sets(&args))?;
    let profile = Profile::parse(&text, "retort synth")?;
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
    let text = synth_profile("dry-run", &args.method, std::slice::from_ref(first), None, &all_sets(args))?;
    let profile = Profile::parse(&text, "retort synth --dry-run")?;
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
