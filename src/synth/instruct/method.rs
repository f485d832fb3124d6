//! Instruction Pre-Training as a `synth` method (docs/METHODS.md §S3.2–S3.4): a decoder
//! model, the instruction synthesizer, reads each raw text and writes instruction–response
//! pairs about it; the texts of a batch are chained over M rounds into few-shot prompts, and each chain is
//! rendered into pre-training documents.
//!
//! Per batch of `batch_size` texts (in corpus order):
//! 1. Texts whose prompt alone (`cook_read(text)`) is longer than the budget
//!    `max_model_len − max_new_tokens` cannot be synthesized: they are written as raw text and
//!    counted (`skipped`). The others go to a [`Chainer`] with `rounds` rounds.
//! 2. Each round's prompts are tokenized with [`encode_pieces`]: the literal `<s>` / `</s>`
//!    become the tokenizer's BOS / EOS ids and the text between them is encoded *without*
//!    special tokens, so no second BOS appears. The length guard counts the same ids.
//! 3. The prompts are generated greedily, `generation_batch` at a time (sorted by length, so
//!    a batch pads little), with the project's sampler (prefill of distinct prompts, KV
//!    cache). A row stops at an end-of-sequence id, when its output holds the literal `</s>`
//!    or `<s>` (the end of a demonstration and the start of the next, which is how a
//!    synthesizer trained on chained documents says it is done when its tokenizer spells the
//!    markers as text), or at `max_new_tokens`. The output is decoded without special tokens
//!    and cut before such a marker, then parsed by the Chainer ([`parse_pairs`]).
//! 4. After the last round each chain is rendered with `render_chain(chain, chain_seed(seed,
//!    k))`, k counting chains over the whole run, and its documents go to `data.jsonl` as
//!    `{"text"}` rows; `pairs.jsonl` gets one row per text, in corpus order:
//!    `{"origin", "context", "qa_list": [[q, a], ...], "failures": {reason: n}}` (`context` only
//!    with `pairs_context = true`; a text too long for the synthesizer has `"too_long": true`).
//!
//! Generation is greedy and a batch is always the same texts, so a batch redone after a kill
//! writes the same bytes: the stage checkpoints between batches and a resumed run equals an
//! uninterrupted one.
//!
//! Without a BOS token in the tokenizer (retort's tiny tokenizers have none), `<s>` maps to
//! the first end-of-sequence id, the separator packed training puts between documents (as the
//! `sample` method starts a document).
//!
//! Options (`[stage.options]` or `--set KEY=VALUE`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `synthesizer` | required | the synthesizer: a model folder or `@stage` (`--synthesizer`) |
//! | `rounds` | 2 | M, rounds of chaining per batch (the reference README's 2, general pre-training; the paper's domain runs use 3) |
//! | `batch_size` | 64 | texts chained together (and between checkpoints) |
//! | `generation_batch` | 16 | prompts per batched generation |
//! | `max_new_tokens` | 400 | tokens generated per text at most (the reference README's `max_tokens`) |
//! | `max_model_len` | the synthesizer's context | prompt + generation; the length guard's budget is `max_model_len − max_new_tokens` |
//! | `pairs_context` | true | write each text as `context` in `pairs.jsonl` (then it is the `sft` rows `{"context", "qa_list"}` a synthesizer learns from) |

use super::chain::{prompt_budget, Chain, Chainer};
use super::format::{cook_read, encode_pieces, parse_pairs, ParseFailure, BOS, EOS};
use super::render::{chain_seed, render_chain, Document as RenderedDoc};
use crate::generate::{generate, FinishReason, SamplingParams};
use crate::model::Model;
use crate::rng::Rng;
use crate::stage::{refs, Artifact, Reference};
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::{Counts, SynthOutput};
use crate::text::corpus::Document;
use crate::text::{model_eos_ids, Tokenizer};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructOptions {
    pub synthesizer: String,
    #[serde(default = "d_rounds")]
    pub rounds: usize,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_generation_batch")]
    pub generation_batch: usize,
    #[serde(default = "d_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub max_model_len: Option<usize>,
    #[serde(default = "d_true")]
    pub pairs_context: bool,
}

fn d_rounds() -> usize {
    2
}
fn d_batch_size() -> usize {
    64
}
fn d_generation_batch() -> usize {
    16
}
fn d_max_new_tokens() -> usize {
    400
}
fn d_true() -> bool {
    true
}

impl InstructOptions {
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if self.synthesizer.trim().is_empty() {
            return bad("synthesizer", "say which model writes the pairs: a model folder or `@stage` (--synthesizer MODEL)");
        }
        for (k, v) in [
            ("rounds", self.rounds),
            ("batch_size", self.batch_size),
            ("generation_batch", self.generation_batch),
            ("max_new_tokens", self.max_new_tokens),
        ] {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        if let Some(m) = self.max_model_len {
            if m <= self.max_new_tokens {
                return bad(
                    "max_model_len",
                    &format!(
                        "{m} leaves no room for a prompt after max_new_tokens = {}",
                        self.max_new_tokens
                    ),
                );
            }
        }
        Ok(())
    }
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    parse_options::<InstructOptions>(options)?.check()
}

pub fn references(options: &toml::Table) -> Vec<Reference> {
    refs(
        Artifact::Model,
        [(
            "options.synthesizer",
            options.get("synthesizer").and_then(|v| v.as_str()),
        )],
    )
}

/// Before the run starts: a synthesizer outside the run must be a model folder.
pub fn preflight(options: &toml::Table) -> Result<()> {
    let Some(s) = options.get("synthesizer").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    if s.starts_with('@') {
        return Ok(());
    }
    let dir = Path::new(s);
    if !dir.join("config.json").is_file() {
        bail!("options.synthesizer: {s} is not a model folder (no config.json there); give a folder with config.json, weights and tokenizer.json, or `@stage`");
    }
    Ok(())
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let opts: InstructOptions =
        parse_options(options).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    opts.check()
        .map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    let dir = if opts.synthesizer.starts_with('@') {
        env.resolve(&opts.synthesizer)?
    } else {
        PathBuf::from(&opts.synthesizer)
    };
    preflight(&toml::Table::from_iter([(
        "synthesizer".to_string(),
        toml::Value::String(dir.to_string_lossy().into_owned()),
    )]))?;
    let dtype = crate::device::resolve_dtype(None, &env.device);
    let model = Model::load(&dir, &env.device, dtype, false).with_context(|| {
        format!(
            "options.synthesizer: loading the model in {}",
            dir.display()
        )
    })?;
    let eos =
        model_eos_ids(&dir).with_context(|| format!("options.synthesizer: {}", dir.display()))?;
    let tok = Tokenizer::load(&dir)
        .with_context(|| {
            format!(
                "options.synthesizer: loading the tokenizer of {}",
                dir.display()
            )
        })?
        .with_model_eos(&eos);
    let markers =
        Markers::of(&tok).with_context(|| format!("options.synthesizer: {}", dir.display()))?;
    let context = model.config.max_position_embeddings;
    let max_model_len = opts.max_model_len.unwrap_or(context);
    if max_model_len > context {
        bail!("options.max_model_len: {max_model_len} is more than the synthesizer's context of {context} tokens");
    }
    if max_model_len <= opts.max_new_tokens {
        bail!(
            "options.max_new_tokens: {} leaves no room for a prompt in the synthesizer's {max_model_len} tokens (max_model_len); lower it",
            opts.max_new_tokens
        );
    }
    Ok(Box::new(Instruct {
        opts,
        model,
        tok,
        markers,
        max_model_len,
        run_seed: env.seed,
        started: None,
        fresh_texts: 0,
    }))
}

/// The ids `<s>` and `</s>` map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Markers {
    pub bos: u32,
    pub eos: u32,
}

impl Markers {
    /// The tokenizer's BOS (or, without one, its first end-of-sequence id) and EOS.
    pub fn of(tok: &Tokenizer) -> Result<Markers> {
        let Some(eos) = tok.eos_ids().first().copied() else {
            bail!("the tokenizer has no end-of-sequence token for `</s>` (tokenizer_config.json eos_token, or eos_token_id in config.json)");
        };
        Ok(Markers {
            bos: tok.bos_id().unwrap_or(eos),
            eos,
        })
    }
}

/// A prompt's token ids: markers mapped, text encoded without special tokens.
pub fn prompt_ids(tok: &Tokenizer, markers: Markers, prompt: &str) -> Result<Vec<u32>> {
    let mut failed = None;
    let ids = encode_pieces(prompt, markers.bos, markers.eos, |t| {
        tok.encode(t, false).unwrap_or_else(|e| {
            failed.get_or_insert(e);
            Vec::new()
        })
    });
    match failed {
        Some(e) => Err(anyhow::Error::from(e).context("encoding a synthesizer prompt")),
        None => Ok(ids),
    }
}

/// Cuts a decoded output before the first literal `</s>` or `<s>`.
pub fn cut_at_marker(output: &str) -> &str {
    let at = [output.find(EOS), output.find(BOS)]
        .into_iter()
        .flatten()
        .min();
    at.map_or(output, |i| &output[..i])
}

/// What the synthesizer made of a batch of texts (indices are into the batch).
#[derive(Clone, Debug, Default)]
pub struct Synthesized {
    /// The chains after the last round; `Entry::id` is the text's index in the batch.
    pub chains: Vec<Chain>,
    /// Per text: its last prompt and raw output, `None` when it was too long to synthesize.
    pub prompts: Vec<Option<String>>,
    pub outputs: Vec<Option<String>>,
}

/// The batch driver: chains `texts` over `rounds` rounds with the length guard `count ≤
/// budget`, asking `generate` for the outputs of each round's prompts (same order and number).
/// Texts whose prompt alone exceeds the budget are left out (`None`).
pub fn synthesize(
    texts: &[String],
    rounds: usize,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
    generate: &mut dyn FnMut(&[String]) -> Result<Vec<String>>,
) -> Result<Synthesized> {
    let fits: Vec<usize> = (0..texts.len())
        .filter(|&i| count(&cook_read(&texts[i])) <= budget)
        .collect();
    let mut prompts = vec![None; texts.len()];
    let mut outputs = vec![None; texts.len()];
    let mut chainer = Chainer::new(
        fits.iter().map(|&i| texts[i].clone()).collect(),
        rounds,
        budget,
        count,
    );
    while !chainer.is_done() {
        let round_prompts = chainer.prompts().to_vec();
        let round_outputs = generate(&round_prompts)?;
        if round_outputs.len() != round_prompts.len() {
            bail!(
                "internal: the synthesizer returned {} outputs for {} prompts",
                round_outputs.len(),
                round_prompts.len()
            );
        }
        for ((j, p), o) in chainer.text_ids().zip(&round_prompts).zip(&round_outputs) {
            prompts[fits[j]] = Some(p.clone());
            outputs[fits[j]] = Some(o.clone());
        }
        chainer.submit(&round_outputs);
    }
    let mut chains = chainer.into_chains();
    for e in chains.iter_mut().flatten() {
        e.id = fits[e.id];
    }
    Ok(Synthesized {
        chains,
        prompts,
        outputs,
    })
}

/// A counter key of `Counts::tasks` (checkpointed with the output, so resumed totals are exact).
const TEXTS: &str = "texts";
const PAIRS: &str = "pairs";
const CHAINS: &str = "chains";
const PAIRS_PER_TEXT: &str = "pairs_per_text/";
const PARSE_FAILURE: &str = "parse_failure/";
const RENDERED: &str = "rendered/";
const RENDER_DROPPED: &str = "render_dropped/";
const TOO_LONG: &str = "prompt longer than max_model_len - max_new_tokens";

#[derive(Serialize)]
struct TextRow<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct PairsRow<'a> {
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
    qa_list: Vec<(&'a str, &'a str)>,
    failures: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    too_long: bool,
}

/// Renders the chains of a batch and writes `data.jsonl` and `pairs.jsonl` rows, counting as
/// it goes. `docs[i]` is text `i` of `syn`.
pub fn write_batch(
    docs: &[Document],
    syn: &Synthesized,
    run_seed: u64,
    pairs_context: bool,
    out: &mut SynthOutput,
) -> Result<()> {
    let tasks = |out: &mut SynthOutput, k: &str, n: u64| {
        *out.counts.tasks.entry(k.to_string()).or_default() += n
    };
    for chain in &syn.chains {
        let index = out.counts.tasks.get(CHAINS).copied().unwrap_or(0);
        let rendered = render_chain(chain, chain_seed(run_seed, index as usize));
        tasks(out, CHAINS, 1);
        for d in &rendered.documents {
            out.write_row("data.jsonl", &TextRow { text: &d.text })?;
            tasks(out, &format!("{RENDERED}{}", rendered_kind(d)), 1);
        }
        for e in &rendered.dropped {
            tasks(out, &format!("{RENDER_DROPPED}{}", e.name()), 1);
        }
    }
    // Pairs by text, from the chains (they hold what the parser kept).
    let mut pairs_of: Vec<Option<&[super::format::QaPair]>> = vec![None; docs.len()];
    for e in syn.chains.iter().flatten() {
        pairs_of[e.id] = Some(&e.pairs);
    }
    for (i, doc) in docs.iter().enumerate() {
        let Some(output) = &syn.outputs[i] else {
            // Too long for the synthesizer: kept as raw pre-training text.
            out.write_row("data.jsonl", &TextRow { text: &doc.text })?;
            tasks(out, &format!("{RENDERED}raw"), 1);
            out.counts.add_skip(TOO_LONG);
            let row = PairsRow {
                origin: &doc.origin,
                context: pairs_context.then_some(doc.text.as_str()),
                qa_list: Vec::new(),
                failures: BTreeMap::new(),
                too_long: true,
            };
            out.write_row("pairs.jsonl", &row)?;
            continue;
        };
        let pairs = pairs_of[i].unwrap_or(&[]);
        let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
        for f in parse_pairs(output).failures {
            *failures.entry(f.name()).or_default() += 1;
            tasks(out, &format!("{PARSE_FAILURE}{}", f.name()), 1);
        }
        tasks(out, TEXTS, 1);
        tasks(out, PAIRS, pairs.len() as u64);
        tasks(out, &format!("{PAIRS_PER_TEXT}{}", pairs.len()), 1);
        if !pairs.is_empty() {
            out.counts.documents_out += 1;
        }
        let qa_list = pairs
            .iter()
            .map(|p| (p.question.as_str(), p.answer.as_str()))
            .collect();
        let row = PairsRow {
            origin: &doc.origin,
            context: pairs_context.then_some(doc.text.as_str()),
            qa_list,
            failures,
            too_long: false,
        };
        out.write_row("pairs.jsonl", &row)?;
    }
    Ok(())
}

fn rendered_kind(d: &RenderedDoc) -> &'static str {
    d.rc_mode.map_or("raw", |m| m.name())
}

pub struct Instruct {
    opts: InstructOptions,
    model: Model,
    tok: Tokenizer,
    markers: Markers,
    max_model_len: usize,
    run_seed: u64,
    /// When this process started synthesizing, and how many texts since (for texts/s).
    started: Option<Instant>,
    fresh_texts: u64,
}

impl Instruct {
    fn budget(&self) -> usize {
        prompt_budget(self.max_model_len, self.opts.max_new_tokens)
    }

    fn count(&self, prompt: &str) -> usize {
        // An encoding error is reported when the prompt is encoded for generation; here it
        // only makes the prompt not fit.
        prompt_ids(&self.tok, self.markers, prompt).map_or(usize::MAX, |ids| ids.len())
    }

    /// Greedy outputs for `prompts`, `generation_batch` at a time in order of length.
    fn generate_outputs(&self, prompts: &[String]) -> Result<Vec<String>> {
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| prompt_ids(&self.tok, self.markers, p))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: true,
            max_new_tokens: self.opts.max_new_tokens,
            stop_token_ids: self.tok.eos_ids(),
            ..Default::default()
        };
        let tok = &self.tok;
        // The markers are at most a few tokens; decoding the tail is enough to see one appear.
        let stop = |tokens: &[u32]| -> bool {
            let tail = &tokens[tokens.len().saturating_sub(16)..];
            tok.decode(tail, false)
                .is_ok_and(|s| s.contains(EOS) || s.contains(BOS))
        };
        let mut outputs = vec![String::new(); prompts.len()];
        for chunk in order.chunks(self.opts.generation_batch) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
            // Greedy decoding draws nothing from the stream.
            let mut rng = Rng::new(0);
            let rows = generate(&self.model.decoder, &batch, &params, &mut rng, Some(&stop))?;
            for (&i, mut row) in chunk.iter().zip(rows) {
                if row.finish == FinishReason::Eos {
                    row.tokens.pop();
                }
                let text = self.tok.decode(&row.tokens, true)?;
                outputs[i] = cut_at_marker(&text).to_string();
            }
        }
        Ok(outputs)
    }

    fn synthesize_texts(&self, texts: &[String]) -> Result<Synthesized> {
        let count = |p: &str| self.count(p);
        synthesize(texts, self.opts.rounds, self.budget(), &count, &mut |p| {
            self.generate_outputs(p)
        })
    }
}

impl Method for Instruct {
    fn files(&self) -> &'static [&'static str] {
        &["data.jsonl", "pairs.jsonl"]
    }

    fn batch_size(&self) -> usize {
        self.opts.batch_size
    }

    fn process(&mut self, doc: &Document, out: &mut SynthOutput) -> Result<()> {
        self.process_batch(std::slice::from_ref(doc), out)
    }

    fn process_batch(&mut self, docs: &[Document], out: &mut SynthOutput) -> Result<()> {
        self.started.get_or_insert_with(Instant::now);
        let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
        let syn = self.synthesize_texts(&texts)?;
        write_batch(docs, &syn, self.run_seed, self.opts.pairs_context, out)?;
        self.fresh_texts += docs.len() as u64;
        Ok(())
    }

    fn stats(&self, counts: &Counts) -> Option<serde_json::Value> {
        Some(stats_of(counts, &self.opts, self.max_model_len))
    }

    fn live(&self, counts: &Counts) -> Vec<(String, f64)> {
        let mut v = Vec::new();
        if let Some(t) = self.started {
            v.push((
                "texts/s".to_string(),
                self.fresh_texts as f64 / t.elapsed().as_secs_f64().max(1e-9),
            ));
        }
        let get = |k: &str| counts.tasks.get(k).copied().unwrap_or(0);
        let texts = get(TEXTS);
        v.push((
            "pairs/text".to_string(),
            if texts > 0 {
                get(PAIRS) as f64 / texts as f64
            } else {
                0.0
            },
        ));
        for f in ParseFailure::ALL {
            let n = get(&format!("{PARSE_FAILURE}{}", f.name()));
            if n > 0 {
                v.push((format!("fail {}", f.name()), n as f64));
            }
        }
        v
    }

    fn preview(&mut self, doc: &Document) -> Result<String> {
        let text = doc.text.clone();
        let prompt = cook_read(&text);
        let ids = prompt_ids(&self.tok, self.markers, &prompt)?;
        let budget = self.budget();
        let mut s = format!(
            "{} — prompt {} tokens (budget {budget} = max_model_len {} − max_new_tokens {}), greedy, ≤ {} new tokens\n",
            doc.origin,
            ids.len(),
            self.max_model_len,
            self.opts.max_new_tokens,
            self.opts.max_new_tokens
        );
        if ids.len() > budget {
            s.push_str(
                "\nthe prompt is longer than the budget: this text would be written as raw text\n",
            );
            return Ok(s);
        }
        let output = self
            .generate_outputs(std::slice::from_ref(&prompt))?
            .remove(0);
        s.push_str(&format!(
            "\n--- prompt ---\n{prompt}\n\n--- raw output ---\n{output}\n\n--- parsed pairs ---\n"
        ));
        let parsed = parse_pairs(&output);
        if parsed.pairs.is_empty() {
            s.push_str("(none)\n");
        }
        for (k, p) in parsed.pairs.iter().enumerate() {
            s.push_str(&format!(
                "{}. Q: {}\n   A: {}\n",
                k + 1,
                p.question,
                p.answer
            ));
        }
        if !parsed.failures.is_empty() {
            let names: Vec<&str> = parsed.failures.iter().map(|f| f.name()).collect();
            s.push_str(&format!("dropped pieces: {}\n", names.join(", ")));
        }
        let syn = Synthesized {
            chains: vec![vec![super::chain::Entry {
                id: 0,
                round: 0,
                context: text,
                pairs: parsed.pairs,
                inherit_from_prev: false,
                followed_by_next: false,
            }]],
            prompts: vec![Some(prompt)],
            outputs: vec![Some(output)],
        };
        let rendered = render_chain(&syn.chains[0], chain_seed(self.run_seed, 0));
        s.push_str("\n--- rendered (as the first chain of a run) ---\n");
        for d in &rendered.documents {
            s.push_str(&d.text);
            s.push('\n');
        }
        Ok(s)
    }
}

/// The `instruct` table of `stats.json`: texts, pairs, the pairs-per-text histogram (index =
/// number of pairs), parse failures by reason, rendered documents by mode, pairs the renderer
/// dropped by reason, and the options that shaped them.
pub fn stats_of(
    counts: &Counts,
    opts: &InstructOptions,
    max_model_len: usize,
) -> serde_json::Value {
    let get = |k: &str| counts.tasks.get(k).copied().unwrap_or(0);
    let with = |prefix: &str| -> BTreeMap<String, u64> {
        counts
            .tasks
            .iter()
            .filter_map(|(k, n)| k.strip_prefix(prefix).map(|r| (r.to_string(), *n)))
            .collect()
    };
    let per: BTreeMap<usize, u64> = with(PAIRS_PER_TEXT)
        .into_iter()
        .filter_map(|(k, n)| k.parse().ok().map(|k| (k, n)))
        .collect();
    let longest = per.keys().max().copied().unwrap_or(0);
    let histogram: Vec<u64> = (0..=longest)
        .map(|k| per.get(&k).copied().unwrap_or(0))
        .collect();
    let failures: BTreeMap<&str, u64> = ParseFailure::ALL
        .iter()
        .map(|f| (f.name(), get(&format!("{PARSE_FAILURE}{}", f.name()))))
        .collect();
    let texts = get(TEXTS);
    serde_json::json!({
        "texts": texts,
        "too_long": counts.skipped.get(TOO_LONG).copied().unwrap_or(0),
        "pairs": get(PAIRS),
        "pairs_per_text": if texts > 0 { get(PAIRS) as f64 / texts as f64 } else { 0.0 },
        "texts_with_pairs": texts - histogram.first().copied().unwrap_or(0),
        "pairs_per_text_histogram": histogram,
        "parse_failures": failures,
        "chains": get(CHAINS),
        "rendered": with(RENDERED),
        "render_dropped": with(RENDER_DROPPED),
        "rounds": opts.rounds,
        "batch_size": opts.batch_size,
        "max_new_tokens": opts.max_new_tokens,
        "max_model_len": max_model_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::instruct::format::cook_demo;
    use crate::synth::instruct::format::QaPair;

    fn doc(id: u64, text: &str) -> Document {
        Document {
            id,
            origin: format!("c.jsonl:{}", id + 1),
            text: text.to_string(),
            raw_bytes: text.len() as u64 + 1,
        }
    }

    fn read(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A tiny tokenizer folder whose BOS / EOS are `<s>` / `</s>` (the Mistral synthesizer's)
    /// and whose post-processor adds a BOS, as Llama-family tokenizers do.
    fn s_tokenizer(dir: &Path) -> Tokenizer {
        crate::text::tiny::build_char_tokenizer(dir).unwrap();
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let p = dir.join(f);
            let t = std::fs::read_to_string(&p)
                .unwrap()
                .replace("<|im_start|>", "<s>")
                .replace("<|im_end|>", "</s>");
            std::fs::write(&p, t).unwrap();
        }
        let p = dir.join("tokenizer_config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        c["bos_token"] = "<s>".into();
        c["eos_token"] = "</s>".into();
        std::fs::write(&p, c.to_string()).unwrap();
        let p = dir.join("special_tokens_map.json");
        std::fs::write(
            &p,
            serde_json::json!({"bos_token": "<s>", "eos_token": "</s>"}).to_string(),
        )
        .unwrap();
        let p = dir.join("tokenizer.json");
        let mut t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        t["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        });
        std::fs::write(&p, t.to_string()).unwrap();
        Tokenizer::load(dir).unwrap()
    }

    #[test]
    fn prompts_start_with_exactly_one_bos_and_demo_ends_map_to_eos() {
        let dir = tempfile::tempdir().unwrap();
        let tok = s_tokenizer(dir.path());
        let m = Markers::of(&tok).unwrap();
        assert_eq!(m, Markers { bos: 1, eos: 2 });
        let prompt = cook_read("Zorvia is a town.");
        // The trap: encoding the prompt string with special tokens doubles the BOS.
        let naive = tok.encode(&prompt, true).unwrap();
        assert_eq!(
            &naive[..2],
            &[1, 1],
            "the fixture's post-processor adds a BOS"
        );
        let ids = prompt_ids(&tok, m, &prompt).unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(
            ids.iter().filter(|&&i| i == 1).count(),
            1,
            "one BOS: {ids:?}"
        );
        assert_eq!(
            tok.decode(&ids[1..], false).unwrap(),
            " <CON> Zorvia is a town. </CON>\n\n"
        );
        // A demonstration's `</s>` is the EOS id, followed by the next text's single BOS.
        let chained = format!(
            "{}{}",
            cook_demo("T", &[QaPair::new("Q?", "A.")]),
            cook_read("U")
        );
        let ids = prompt_ids(&tok, m, &chained).unwrap();
        let demo_len = prompt_ids(&tok, m, "<s> <CON> T </CON>\n\n<QUE> Q? <ANS> A. </END>")
            .unwrap()
            .len();
        assert_eq!(ids[demo_len], 2, "`</s>` is the EOS id");
        assert_eq!(ids[demo_len + 1], 1, "then the next text's BOS");
        assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
        assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
        assert_eq!(tok.decode(&ids, false).unwrap(), chained);
    }

    #[test]
    fn without_a_bos_token_the_start_marker_is_the_eos() {
        let dir = tempfile::tempdir().unwrap();
        crate::text::tiny::build_char_tokenizer(dir.path()).unwrap();
        let tok = Tokenizer::load(dir.path()).unwrap();
        let m = Markers::of(&tok).unwrap();
        assert_eq!(m, Markers { bos: 0, eos: 0 });
        let ids = prompt_ids(&tok, m, "<s> <CON> a </CON>\n\n").unwrap();
        assert_eq!(ids[0], 0);
        assert_eq!(ids.len(), 1 + " <CON> a </CON>\n\n".len());
    }

    #[test]
    fn outputs_are_cut_before_a_marker() {
        assert_eq!(
            cut_at_marker("<QUE> a <ANS> b </END></s><s> <CON>"),
            "<QUE> a <ANS> b </END>"
        );
        assert_eq!(cut_at_marker("x<s>y</s>"), "x");
        assert_eq!(cut_at_marker("plain"), "plain");
    }

    /// Canned outputs by the text a prompt ends with: the fake synthesizer of the driver tests.
    fn canned(prompts: &[String]) -> Result<Vec<String>> {
        Ok(prompts
            .iter()
            .map(|p| {
                let last = p.rsplit("<CON> ").next().unwrap().trim_end_matches(" </CON>\n\n");
                match last {
                    "alpha" => "<QUE> What is alpha? <ANS> The first. </END>\n\n<QUE> WHAT IS ALPHA? <ANS> Dup. </END>".into(),
                    "beta" => "<QUE> Is beta second? <ANS> Yes. </END>\n\n<QUE> Cut off <ANS> no end".into(),
                    "gamma" => "nothing parseable".into(),
                    "delta" => "<QUE> Delta? <ANS> Fourth. </END>".into(),
                    other => panic!("unexpected prompt for {other:?}: {p:?}"),
                }
            })
            .collect())
    }

    #[test]
    fn the_batch_driver_chains_renders_and_counts_canned_outputs() {
        let texts: Vec<String> = ["alpha", "beta", "gamma", "delta", &"long ".repeat(40)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let docs: Vec<Document> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| doc(i as u64, t))
            .collect();
        // Characters as tokens; budget 100: any lone short text fits, the 200-character one not.
        let count = |p: &str| p.len();
        let mut seen: Vec<Vec<String>> = Vec::new();
        let mut gen = |p: &[String]| {
            seen.push(p.to_vec());
            canned(p)
        };
        let syn = synthesize(&texts, 2, 100, &count, &mut gen).unwrap();
        // 4 texts fit: round 0 = alpha, beta; round 1 = gamma (after alpha's demo), delta
        // (after beta's demo? beta has 1 pair, prepended if it fits in 100 characters).
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], vec![cook_read("alpha"), cook_read("beta")]);
        let alpha_demo =
            "<s> <CON> alpha </CON>\n\n<QUE> What is alpha? <ANS> The first. </END></s>";
        let beta_demo = "<s> <CON> beta </CON>\n\n<QUE> Is beta second? <ANS> Yes. </END></s>";
        assert_eq!(
            seen[1],
            vec![
                format!("{alpha_demo}{}", cook_read("gamma")),
                format!("{beta_demo}{}", cook_read("delta"))
            ]
        );
        assert_eq!(syn.outputs[4], None, "the long text is not synthesized");
        assert_eq!(syn.prompts[2].as_deref(), Some(seen[1][0].as_str()));
        let ids: Vec<Vec<usize>> = syn
            .chains
            .iter()
            .map(|c| c.iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 2], vec![1, 3]]);
        // gamma has no pairs: it does not inherit; delta does.
        assert!(!syn.chains[0][1].inherit_from_prev);
        assert!(syn.chains[1][1].inherit_from_prev);

        let dir = tempfile::tempdir().unwrap();
        let mut out = SynthOutput::open(
            dir.path(),
            &["data.jsonl", "pairs.jsonl"],
            serde_json::json!(1),
        )
        .unwrap();
        write_batch(&docs, &syn, 7, true, &mut out).unwrap();
        let counts = out.counts.clone();
        // A second batch (the same texts again) continues the run's chain count: its chains
        // are rendered with the seeds of chains 2 and 3, however the batches were split.
        write_batch(&docs, &syn, 7, true, &mut out).unwrap();
        out.finish(&serde_json::json!({})).unwrap();

        // data.jsonl: chain 0 = [alpha (with a pair), gamma (no pairs: raw)] → two documents;
        // chain 1 = [beta, delta inheriting] → one few-shot document; then the long text raw.
        let data = read(&dir.path().join("data.jsonl"));
        let texts_out: Vec<&str> = data.iter().map(|r| r["text"].as_str().unwrap()).collect();
        let r0 = render_chain(&syn.chains[0], chain_seed(7, 0));
        let r1 = render_chain(&syn.chains[1], chain_seed(7, 1));
        let expected: Vec<String> = r0
            .documents
            .iter()
            .chain(&r1.documents)
            .map(|d| d.text.clone())
            .chain([texts[4].clone()])
            .collect();
        assert_eq!(texts_out[..4], expected[..]);
        assert_eq!(data.len(), 8);
        let r2 = render_chain(&syn.chains[0], chain_seed(7, 2));
        let r3 = render_chain(&syn.chains[1], chain_seed(7, 3));
        let again: Vec<String> = r2
            .documents
            .iter()
            .chain(&r3.documents)
            .map(|d| d.text.clone())
            .chain([texts[4].clone()])
            .collect();
        assert_eq!(texts_out[4..], again[..]);
        assert_eq!(texts_out[1], "gamma");
        assert!(
            texts_out[0].contains("alpha")
                && texts_out[0].contains("What is alpha?")
                && texts_out[0].contains("The first."),
            "{}",
            texts_out[0]
        );
        assert!(!texts_out[0].contains("Dup."));
        assert!(
            texts_out[2].contains("beta")
                && texts_out[2].contains("delta")
                && texts_out[2].contains("Fourth."),
            "{}",
            texts_out[2]
        );

        let pairs = read(&dir.path().join("pairs.jsonl"));
        assert_eq!(pairs.len(), 10);
        assert_eq!(
            pairs[0],
            serde_json::json!({"origin": "c.jsonl:1", "context": "alpha", "qa_list": [["What is alpha?", "The first."]], "failures": {"duplicate_question": 1}})
        );
        assert_eq!(
            pairs[1],
            serde_json::json!({"origin": "c.jsonl:2", "context": "beta", "qa_list": [["Is beta second?", "Yes."]], "failures": {"unterminated": 1}})
        );
        assert_eq!(
            pairs[2],
            serde_json::json!({"origin": "c.jsonl:3", "context": "gamma", "qa_list": [], "failures": {"unterminated": 1}})
        );
        assert_eq!(
            pairs[3]["qa_list"],
            serde_json::json!([["Delta?", "Fourth."]])
        );
        assert_eq!(pairs[4]["too_long"], true);

        let s = stats_of(
            &counts,
            &parse_options::<InstructOptions>(&toml::toml! { synthesizer = "x" }).unwrap(),
            512,
        );
        assert_eq!(s["texts"], 4);
        assert_eq!(s["too_long"], 1);
        assert_eq!(s["pairs"], 3);
        assert_eq!(s["pairs_per_text_histogram"], serde_json::json!([1, 3]));
        assert_eq!(s["texts_with_pairs"], 3);
        assert_eq!(
            s["parse_failures"],
            serde_json::json!({"unterminated": 2, "duplicate_question": 1, "ans_split": 0, "missing_que": 0, "empty_answer": 0})
        );
        assert_eq!(s["chains"], 2);
        assert_eq!(s["rendered"]["raw"], 2);
        assert_eq!(counts.documents_out, 3);
        assert_eq!(counts.rows["data.jsonl"], 4);
    }

    #[test]
    fn options_are_checked_by_name() {
        let bad = |t: toml::Table| check(&t).unwrap_err().0;
        assert_eq!(bad(toml::toml! { synthesizer = "m" rounds = 0 }), "rounds");
        assert_eq!(
            bad(toml::toml! { synthesizer = "m" max_new_tokens = 100 max_model_len = 100 }),
            "max_model_len"
        );
        assert_eq!(bad(toml::toml! { synthesizer = "" }), "synthesizer");
        let (k, m) = check(&toml::toml! { synthesizer = "m" roundz = 2 }).unwrap_err();
        assert!(format!("{k} {m}").contains("roundz"), "{k}: {m}");
        assert!(check(&toml::toml! { synthesizer = "m" }).is_ok());
    }
}
