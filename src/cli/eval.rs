//! `retort eval`, `retort reward test` and `retort report`: clap definitions and handlers.
//!
//! # `retort eval MODEL --task NAME --json`
//!
//! Prints ONE JSON document to stdout (progress goes to stderr). Scripts may rely on it; keys
//! are only ever added:
//!
//! ```text
//! {
//!   "model": "path/to/model",
//!   "problem_set": "100 instances of countdown",
//!   "config": {"n": 64, "ks": [1, 2, 4, ...], "temperature": 1.0, "top_p": 1.0,
//!              "max_new_tokens": 24, "seed": 0, "chat": false, "batch_size": 128,
//!              "rbf": true, "position_bins": 10},
//!   "aggregate": {"problems": 100, "n": 64, "pass@1": 0.31, "pass@4": ..., "avg@64": ...,
//!                 "maj@64": ..., "entropy/mean": ..., "entropy/correct": ...,
//!                 "entropy/incorrect": ..., "rbf/mean": ..., "diversity/distinct_correct": ...,
//!                 "diversity/distinct_correct@4": ..., "diversity/coverage": ...,
//!                 "diversity/solution_entropy": ..., "diversity/distinct_2": ...,
//!                 "unsolvable@64": 12, "samples_per_s": ..., ...},
//!   "entropy_by_position": [1.2, 0.9, ..., 1.1],      // 10 relative-position bins
//!   "unsolvable": ["countdown-17", ...],              // no correct sample among n
//!   "problems": [{"id": "countdown-0", "n": 64, "correct": 20, "pass@1": 0.3125, ...,
//!                 "avg@64": ..., "maj@64": 1.0, "distinct_correct": 3, "solutions": 5,
//!                 "coverage": 0.6, "solution_entropy": 0.8, "majority": "3+4*5",
//!                 "entropy_mean": 0.7, "rbf_mean": 2.1, "mean_tokens": 9.0,
//!                 "example": "3+4*5"}, ...]
//! }
//! ```
//! Every key of `aggregate` is listed in [`crate::eval::run::aggregate_keys_doc`]. With
//! `--compare A B ...` the document is `{"models": [{"label": "A", "report": {…as above…}},
//! …], "overlaps": [{"first", "other", "only_first", "only_other", "both", "jaccard"}, …]}`,
//! the same shape as an eval stage's `results.json`.
//!
//! # `retort eval MODEL... --ppl FILE --choice FILE --json`
//!
//! Text evaluation ([`crate::eval::text`]) needs no problems and takes several models without
//! --compare. With any --ppl / --choice the document is always the `results.json` shape:
//!
//! ```text
//! {
//!   "models": [...], "overlaps": [...],     // problems, when also given (else empty)
//!   "text": [{"label": "m", "model": "path/to/m",
//!             "ppl": {"held": {"file", "documents", "unscored_documents", "tokens", "nll",
//!                              "ppl", "per_document": {"count", "p10", "p25", "median", "p75",
//!                              "p90", "mean"}, "max_len", "stride", "bos"}},
//!             "choice": {"task": {"file", "rows", "accuracy", "macro_f1", "classes",
//!                                 "truncated", "gold_nll": {…as per_document…},
//!                                 "predictions": [{"line", "gold", "pred", "nll": [..]}]}}}]
//! }
//! ```
//!
//! # `retort reward test FILE --json`
//!
//! One JSON object per input line, in input order: `{"line", "verifier", "correct",
//! "reward", "reason", …}`; math adds `extracted`, `method`, `canonical`; code adds `status`
//! (pass / fail / timeout / crash / memory / error) and `output` (truncated). Code rows are
//! `{"completion", "tests"}` or HumanEval-style `{"completion", "prompt", "entry_point",
//! "test"}` (the test defines `check(candidate)`).

use crate::eval::run::{self, EvalConfig, EvalModel, EvalReport};
use crate::tasks::code::CodeTests;
use crate::tasks::math::{verify_math, MathOptions};
use crate::tasks::problems::{self, ProblemError, ProblemSet};
use crate::eval::stage::{model_labels, ModelResult, StageResults};
use crate::eval::text::{self, TextConfig, TextSets};
use crate::sandbox::Limits;
use crate::tasks::Instance;
use crate::generate::tools::ToolsConfig;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model folder(s); several need --compare.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Put several models side by side (pass@k, diversity, unsolvable-set overlap).
    #[arg(long)]
    pub compare: bool,
    /// A built-in task (`retort tasks list`); problems are generated from --seed.
    #[arg(long)]
    pub task: Option<String>,
    /// Task generator option, e.g. `--option min_solutions=3`.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Problems generated for --task.
    #[arg(long, default_value_t = 100)]
    pub problems: usize,
    /// Task instances from a JSONL (a tasks stage's test.jsonl, or its folder).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// A math (`{"prompt","answer"}`) or code (`{"prompt","tests"}`, or HumanEval-style
    /// `{"prompt","entry_point","test"}`) JSONL; needs --verifier.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Verifier for --jsonl: math or code.
    #[arg(long)]
    pub verifier: Option<String>,
    /// Samples per problem.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// ks of pass@k, e.g. 1,4,16 (default: powers of two up to n).
    #[arg(long, value_delimiter = ',')]
    pub k: Vec<usize>,
    /// Evaluate the first P problems.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    /// Render prompts with the model's chat template (HF chat models).
    #[arg(long)]
    pub chat: bool,
    /// Rows per generation batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Skip the rollout branching factor (its extra forward pass about doubles sampling time).
    #[arg(long)]
    pub no_rbf: bool,
    /// Let the model call a tool mid-generation: `python` runs each ```python block (STILL-3,
    /// docs/SANDBOX.md) and appends its output; tool metrics join the report. With --compare,
    /// each model is evaluated without and with tools ("NAME" and "NAME+tools").
    #[arg(long, value_parser = ["python"])]
    pub tools: Option<String>,
    /// Output format of tool calls: `prompt` (```output blocks, STILL-3's evaluation) or
    /// `synthesis` (```Output, its trace-synthesis script).
    #[arg(long, default_value = "prompt", requires = "tools")]
    pub tool_format: String,
    /// Tool calls per response at most.
    #[arg(long, default_value_t = 4, requires = "tools")]
    pub max_tool_calls: usize,
    /// Seconds one tool call may run ("Timeout Error" after).
    #[arg(long, default_value_t = 5.0, requires = "tools")]
    pub tool_timeout: f64,
    /// auto, cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON document (see the module doc) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A problem whose prompt + max-new-tokens exceeds the model's context: error (refuse
    /// before sampling) or skip (leave it out).
    #[arg(long, value_enum, default_value = "error")]
    pub too_long: problems::TooLong,
    /// Perplexity on held-out text: a JSONL file with the text under --text-key (repeatable).
    /// Token-weighted NLL and PPL over all documents, plus the per-document PPL spread.
    #[arg(long, value_name = "FILE")]
    pub ppl: Vec<PathBuf>,
    /// Multiple-choice accuracy by option scoring: JSONL rows {"input", "options": [...],
    /// "gold_index"} (repeatable); the option with the lowest mean per-token NLL after
    /// input + " " wins; macro-F1 too when every row has the same options.
    #[arg(long, value_name = "FILE")]
    pub choice: Vec<PathBuf>,
    /// JSONL key holding the text in --ppl files.
    #[arg(long, default_value = "text", value_name = "KEY")]
    pub text_key: String,
    /// Perplexity window in tokens (default: the model's context, at most 1024); longer
    /// documents are scored in overlapping windows.
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    /// Perplexity window stride in tokens (default: half of --max-len).
    #[arg(long, value_name = "N")]
    pub stride: Option<usize>,
    /// Windows (--ppl) or option rows (--choice) per forward.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub text_batch_size: usize,
}

#[derive(Subcommand, Debug)]
pub enum RewardAction {
    /// Run a verifier over a JSONL of completions and print each verdict with its reason.
    Test(RewardTestArgs),
}

#[derive(Args, Debug)]
pub struct RewardTestArgs {
    /// JSONL of {"prompt","completion","gold"} (math), {"prompt","completion","tests"} or
    /// HumanEval-style {"prompt","completion","entry_point","test"} (code)
    /// or task instances {"task","id","prompt","data"} with a "completion".
    pub file: PathBuf,
    /// math, code or a task name; default: guessed per row from its fields.
    #[arg(long)]
    pub verifier: Option<String>,
    /// One JSON object per input line, in input order.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run folder.
    pub run_dir: PathBuf,
}

fn parse_options(options: &[String]) -> Result<toml::Table> {
    crate::profile::parse_key_values(options, "--option").map_err(anyhow::Error::msg)
}

fn problems_chosen(args: &EvalArgs) -> usize {
    [args.task.is_some(), args.from.is_some(), args.jsonl.is_some()].iter().filter(|&&b| b).count()
}

fn problem_set(args: &EvalArgs) -> Result<ProblemSet> {
    if problems_chosen(args) != 1 {
        bail!(
            "choose the problems with exactly one of --task NAME, --from TEST_JSONL or --jsonl FILE --verifier math|code \
             (or evaluate text only with --ppl FILE / --choice FILE)"
        );
    }
    let mut set = if let Some(task) = &args.task {
        ProblemSet::from_task(task, &parse_options(&args.options)?, args.problems.min(args.limit), args.seed)?
    } else if let Some(from) = &args.from {
        let file = if from.is_dir() { from.join("test.jsonl") } else { from.clone() };
        ProblemSet::from_instances(&file)?
    } else {
        let path = args.jsonl.as_ref().context("--jsonl")?;
        let verifier = args
            .verifier
            .as_deref()
            .with_context(|| format!("--jsonl needs --verifier ({})", problems::JSONL_VERIFIERS.join(" or ")))?;
        ProblemSet::from_jsonl(path, verifier)?
    };
    set.truncate(args.limit);
    Ok(set)
}

/// The text flags as a config, checked.
fn text_config(args: &EvalArgs) -> Result<TextConfig> {
    if args.max_len.is_some_and(|m| m < 2) {
        bail!("--max-len must be ≥ 2 tokens (a window scores the tokens after its first)");
    }
    match (args.stride, args.max_len) {
        (Some(0), _) => bail!("--stride must be ≥ 1"),
        (Some(s), Some(m)) if s > m => bail!("--stride {s} is larger than --max-len {m}: tokens between windows would go unscored"),
        _ => {}
    }
    if args.text_batch_size == 0 {
        bail!("--text-batch-size must be ≥ 1");
    }
    Ok(TextConfig { text_key: args.text_key.clone(), max_len: args.max_len, stride: args.stride, batch_size: args.text_batch_size })
}

pub fn cmd_eval(args: EvalArgs) -> Result<i32> {
    let has_text = !args.ppl.is_empty() || !args.choice.is_empty();
    if has_text && problems_chosen(&args) == 0 {
        return cmd_eval_text(&args, Vec::new());
    }
    if args.models.len() > 1 && !args.compare {
        bail!("{} models given: add --compare to evaluate them side by side", args.models.len());
    }
    let cfg = EvalConfig {
        n: args.n,
        ks: args.k.clone(),
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        chat: args.chat,
        batch_size: args.batch_size.max(1),
        rbf: !args.no_rbf,
        position_bins: 10,
        tools: args.tools.as_ref().map(|_| ToolsConfig {
            format: args.tool_format.clone(),
            max_calls: args.max_tool_calls,
            timeout_s: args.tool_timeout,
            ..ToolsConfig::default()
        }),
    };
    cfg.check()?;
    if let Some(t) = &cfg.tools {
        t.check().map_err(|(k, m)| anyhow::anyhow!("--{}: {m}", cli_flag(&k)))?;
    }
    if let Some(out) = &args.out {
        crate::fsutil::check_writable(out)?;
    }
    let mut set = problem_set(&args)?;
    // Text files are checked before any sampling starts.
    let text_sets = if has_text { Some(TextSets::open(&args.ppl, &args.choice, &args.text_key)?) } else { None };
    let text_cfg = text_config(&args)?;
    let skipped = problems::fit_models_context(&mut set, &args.models, args.chat, args.max_new_tokens, args.too_long)?;
    if skipped > 0 {
        eprintln!("retort eval: left out {skipped} problem(s) too long for the context (--too-long skip)");
    }
    let device = crate::device::DeviceSpec::parse(&args.device).map_err(anyhow::Error::msg)?.open()?;
    let names: Vec<String> = args.models.iter().map(|m| m.display().to_string()).collect();
    let labels = model_labels(&names);
    // `--compare --tools`: each model without tools, then with them, side by side.
    let variants: Vec<(String, EvalConfig)> = if args.compare && cfg.tools.is_some() {
        vec![(String::new(), EvalConfig { tools: None, ..cfg.clone() }), ("+tools".to_string(), cfg.clone())]
    } else {
        vec![(String::new(), cfg.clone())]
    };
    let mut results: Vec<ModelResult> = Vec::new();
    for (dir, model_label) in args.models.iter().zip(&labels) {
        let model = EvalModel::load(dir, &device)?;
        for (suffix, cfg) in &variants {
            let label = format!("{model_label}{suffix}");
            eprintln!("retort eval: {label}: {} × n = {}", set.describe(), cfg.n);
            let mut last = std::time::Instant::now();
            let mut progress = |p: run::Progress| -> Result<()> {
                if last.elapsed().as_secs_f64() >= 2.0 || p.done == p.total {
                    eprintln!("  {label}: {}/{} samples, {:.1} samples/s", p.done, p.total, p.samples_per_s);
                    last = std::time::Instant::now();
                }
                Ok(())
            };
            let report = run::evaluate(&model, &set, cfg, &mut progress)?;
            results.push(ModelResult { label, report });
        }
    }
    if let Some(sets) = text_sets {
        return finish_text(&args, &results, &sets, &text_cfg);
    }
    let overlaps: Vec<run::Overlap> = results
        .iter()
        .skip(1)
        .map(|r| run::overlap((&results[0].label, &results[0].report), (&r.label, &r.report)))
        .collect();
    let doc = if args.compare {
        serde_json::to_value(StageResults { models: results.clone(), overlaps, text: Vec::new(), ood: Vec::new(), images: Vec::new() })?
    } else {
        serde_json::to_value(&results[0].report)?
    };
    let text = serde_json::to_string_pretty(&doc)?;
    if let Some(out) = &args.out {
        crate::fsutil::write_atomic(out, text.as_bytes()).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        println!("{text}");
    } else {
        for r in &results {
            println!("{} ({})\n{}\n", r.label, r.report.problem_set, run::pass_at_k_table(&r.report));
        }
        if results.len() > 1 {
            let pairs: Vec<(String, &EvalReport)> = results.iter().map(|r| (r.label.clone(), &r.report)).collect();
            println!("{}", run::comparison_table(&pairs));
        }
    }
    Ok(0)
}

/// `retort eval` with text sets only (no problems): any number of models.
fn cmd_eval_text(args: &EvalArgs, results: Vec<ModelResult>) -> Result<i32> {
    let cfg = text_config(args)?;
    if let Some(out) = &args.out {
        crate::fsutil::check_writable(out)?;
    }
    let sets = TextSets::open(&args.ppl, &args.choice, &args.text_key)?;
    finish_text(args, &results, &sets, &cfg)
}

/// Text sets on every model, then the document (results.json's shape) or the tables.
fn finish_text(args: &EvalArgs, results: &[ModelResult], sets: &TextSets, cfg: &TextConfig) -> Result<i32> {
    let device = crate::device::DeviceSpec::parse(&args.device).map_err(anyhow::Error::msg)?.open()?;
    let names: Vec<String> = args.models.iter().map(|m| m.display().to_string()).collect();
    let labels = model_labels(&names);
    let mut texts = Vec::new();
    for ((dir, label), name) in args.models.iter().zip(&labels).zip(&names) {
        let model = EvalModel::load(dir, &device)?;
        let mut on_batch = || Ok(());
        let mut log = |line: String| eprintln!("retort eval: {line}");
        texts.push(text::evaluate(&model, label, name, sets, cfg, &mut on_batch, &mut log)?);
    }
    let overlaps: Vec<run::Overlap> = results
        .iter()
        .skip(1)
        .map(|r| run::overlap((&results[0].label, &results[0].report), (&r.label, &r.report)))
        .collect();
    let doc = StageResults { models: results.to_vec(), overlaps, text: texts, ood: Vec::new(), images: Vec::new() };
    let json = serde_json::to_string_pretty(&doc)?;
    if let Some(out) = &args.out {
        crate::fsutil::write_atomic(out, json.as_bytes()).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        println!("{json}");
        return Ok(0);
    }
    for r in &doc.models {
        println!("{} ({})\n{}\n", r.label, r.report.problem_set, run::pass_at_k_table(&r.report));
    }
    if doc.models.len() > 1 {
        let pairs: Vec<(String, &EvalReport)> = doc.models.iter().map(|r| (r.label.clone(), &r.report)).collect();
        println!("{}\n", run::comparison_table(&pairs));
    }
    println!("{}", text::table(&doc.text));
    Ok(0)
}

/// Which verifier a row goes to.
#[derive(Debug, Clone, PartialEq)]
enum RowVerifier {
    Math,
    Code,
    Task(String),
}

/// One validated row of a reward-test file.
#[derive(Debug)]
enum RewardRow {
    Math { completion: String, gold: String },
    Code { completion: String, tests: CodeTests },
    Task { instance: Instance, completion: String },
}

fn guess_verifier(row: &serde_json::Map<String, serde_json::Value>) -> Option<RowVerifier> {
    if row.contains_key("tests") || row.contains_key("test") || row.contains_key("entry_point") {
        Some(RowVerifier::Code)
    } else if row.contains_key("gold") || row.contains_key("answer") {
        Some(RowVerifier::Math)
    } else {
        row.get("task").and_then(|t| t.as_str()).map(|t| RowVerifier::Task(t.to_string()))
    }
}

fn read_reward_rows(path: &Path, verifier: Option<&str>) -> Result<Vec<(usize, RewardRow)>> {
    let forced = match verifier {
        None => None,
        Some("math") => Some(RowVerifier::Math),
        Some("code") => Some(RowVerifier::Code),
        Some(name) => {
            if crate::tasks::build(name, &toml::Table::new()).is_err() {
                let mut known: Vec<&str> = problems::JSONL_VERIFIERS.to_vec();
                known.extend(crate::tasks::names().into_iter().map(|(n, _)| n));
                bail!(ProblemError::UnknownVerifier { name: name.to_string(), known: known.join(", ") });
            }
            Some(RowVerifier::Task(name.to_string()))
        }
    };
    let mut rows = Vec::new();
    for (line, row) in problems::read_json_lines(path)? {
        let kind = match forced.clone().or_else(|| guess_verifier(&row)) {
            Some(k) => k,
            None => bail!(
                "{}:{line}: cannot tell which verifier applies: the row has no \"gold\"/\"answer\" (math), \"tests\" (code) or \"task\" field; add one or pass --verifier",
                path.display()
            ),
        };
        let completion = |expected: &str| problems::required(&row, &["completion", "response"], path, line, expected);
        let parsed = match &kind {
            RowVerifier::Math => {
                let expected = "\"completion\" and \"gold\"";
                RewardRow::Math { completion: completion(expected)?, gold: problems::required(&row, &["gold", "answer"], path, line, expected)? }
            }
            RowVerifier::Code => {
                let tests = problems::code_tests(&row, path, line)?;
                let expected = match tests {
                    CodeTests::Asserts(_) => "\"completion\" and \"tests\"",
                    CodeTests::Check(_) => "\"completion\", \"prompt\", \"entry_point\" and \"test\"",
                };
                RewardRow::Code { completion: completion(expected)?, tests }
            }
            RowVerifier::Task(name) => {
                let expected = "\"completion\" and the instance's \"data\"";
                let source = row.get("instance").and_then(|v| v.as_object()).unwrap_or(&row);
                let data = source.get("data").cloned().ok_or_else(|| ProblemError::MissingField {
                    path: path.display().to_string(),
                    line,
                    field: "data".into(),
                    expected: expected.into(),
                })?;
                let instance = Instance {
                    task: name.clone(),
                    id: problems::text_field(source, &["id"]).unwrap_or_else(|| format!("line-{line}")),
                    prompt: problems::text_field(source, &["prompt"]).unwrap_or_default(),
                    data,
                };
                RewardRow::Task { instance, completion: completion(expected)? }
            }
        };
        rows.push((line, parsed));
    }
    Ok(rows)
}

/// Output longer than this (in chars) is cut in the middle for the verdict line.
const OUTPUT_CHARS: usize = 600;

fn cut_middle(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    let half = max / 2;
    let head: String = chars[..half].iter().collect();
    let tail: String = chars[chars.len() - half..].iter().collect();
    format!("{head}…[{} chars cut]…{tail}", chars.len() - 2 * half)
}

/// The verdict of one row as the JSON object `--json` prints.
fn judge(row: &RewardRow, line: usize, limits: &Limits) -> Result<serde_json::Value> {
    Ok(match row {
        RewardRow::Math { completion, gold } => {
            let v = verify_math(completion, gold, &MathOptions::default());
            serde_json::json!({
                "line": line, "verifier": "math", "correct": v.correct, "reward": f64::from(u8::from(v.correct)),
                "reason": v.reason, "extracted": v.extracted, "method": format!("{:?}", v.method), "canonical": v.canonical(),
            })
        }
        RewardRow::Code { completion, tests } => {
            let v = crate::tasks::code::verify_tests(completion, tests, limits);
            let status = v.status.map_or("error".to_string(), |s| format!("{s:?}").to_lowercase());
            let output = cut_middle(&v.output, OUTPUT_CHARS);
            let reason = if v.status.is_some() && !matches!(v.status, Some(crate::sandbox::ExecStatus::Pass)) {
                format!("{status}: {}", v.reason)
            } else if v.status.is_some() {
                "pass".to_string()
            } else {
                format!("error: {}", v.reason)
            };
            serde_json::json!({
                "line": line, "verifier": "code", "correct": v.correct, "reward": v.reward,
                "reason": reason, "status": status, "output": output,
            })
        }
        RewardRow::Task { instance, completion } => {
            let task = crate::tasks::build(&instance.task, &toml::Table::new())?;
            let v = task.verify(instance, completion);
            serde_json::json!({
                "line": line, "verifier": instance.task, "correct": v.correct, "reward": v.reward,
                "reason": v.reason, "canonical": v.canonical,
            })
        }
    })
}

pub fn cmd_reward_test(args: RewardTestArgs) -> Result<i32> {
    let rows = read_reward_rows(&args.file, args.verifier.as_deref())?;
    let limits = Limits::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut correct = 0usize;
    for (line, row) in &rows {
        let v = judge(row, *line, &limits)?;
        let ok = v["correct"].as_bool().unwrap_or(false);
        correct += usize::from(ok);
        if args.json {
            writeln!(out, "{v}")?;
        } else {
            let reason = v["reason"].as_str().unwrap_or("");
            writeln!(out, "{}:{line}: {} reward {} [{}] {reason}", args.file.display(), if ok { "correct" } else { "wrong  " }, v["reward"], v["verifier"].as_str().unwrap_or(""))?;
        }
    }
    if !args.json {
        writeln!(out, "{} rows: {correct} correct", rows.len())?;
    }
    Ok(0)
}

pub fn cmd_report(args: ReportArgs) -> Result<i32> {
    let written = crate::report::write_report(&args.run_dir)?;
    for p in &written.files {
        println!("{}", p.display());
    }
    if !written.notes.is_empty() {
        for n in &written.notes {
            eprintln!("retort report: {n}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middle_cut_keeps_both_ends() {
        let s = "a".repeat(10) + &"b".repeat(100) + &"c".repeat(10);
        let cut = cut_middle(&s, 20);
        assert!(cut.starts_with("aaaaaaaaaa") && cut.ends_with("cccccccccc"), "{cut}");
        assert!(cut.contains("[100 chars cut]"), "{cut}");
        assert_eq!(cut_middle("short", 20), "short");
    }

    #[test]
    fn rows_are_routed_by_their_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "{\"prompt\":\"q\",\"completion\":\"\\\\boxed{2}\",\"gold\":\"2\"}\n{\"prompt\":\"q\",\"completion\":\"x=1\",\"tests\":\"assert x==1\"}\n{\"prompt\":\"q\"}\n").unwrap();
        let err = read_reward_rows(&p, None).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:3: cannot tell which verifier"), "{err}");
        let err = read_reward_rows(&p, Some("math")).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:2: missing field `gold`"), "{err}");
        let err = read_reward_rows(&p, Some("nosuch")).unwrap_err().to_string();
        assert!(err.contains("unknown verifier `nosuch`; known verifiers: math, code, countdown"), "{err}");
    }
}

/// The flag behind a `tools.*` config key, for error messages.
fn cli_flag(key: &str) -> &'static str {
    match key {
        "tools.format" | "tools.stop" | "tools.output_template" => "tool-format",
        "tools.max_calls" => "max-tool-calls",
        "tools.timeout_s" => "tool-timeout",
        _ => "tools",
    }
}
