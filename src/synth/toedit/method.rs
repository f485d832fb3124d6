//! ToEdit as a `synth` method: each document of the corpus becomes one edited text
//! (`data.jsonl`, `{"text"}` rows) and one audit row (`audit.jsonl`: the document's origin and
//! its token, eligible, realized and dropped counts). `stats.json` gets a `toedit` table with
//! the totals and fractions per generation.
//!
//! Options (`[stage.options]` or `--set KEY=VALUE`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `prior` | required | the prior LM: a model folder or `@stage` |
//! | `strategy` | `up_revise` | `up_revise`, `low_drop_up_revise` or `filtering` |
//! | `threshold` | 0.99 | resample tokens with `p ≥ threshold` |
//! | `drop_threshold` | 0.001 | delete tokens with `p < drop_threshold` (`low_drop_up_revise`, `filtering`) |
//! | `top_k` | 8 | candidates: the top-k plus the actual token |
//! | `beta` | 1.0 | draw from `softmax(lp / beta)` over the candidates (the reference code's default is 1.5) |
//! | `batch_size` | 8 | windows per forward of the prior |
//! | `max_len` | min(prior's context, 2048) | window length in tokens |
//! | `stride` | `max_len` | windows start this far apart (smaller: more left context at a window's start, more compute) |
//! | `truncate` | false | the reference's behaviour: keep only the first `max_len` tokens of each document |
//! | `generations` | 1 | edit the previous generation's output again with the same prior, N times |

use super::{document_rng, edit_document, score_documents, EditCounts, EditRule, Edited, Strategy};
use crate::model::Model;
use crate::stage::{refs, Artifact, Reference};
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::{Counts, SynthOutput};
use crate::text::corpus::Document;
use crate::text::Tokenizer;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The reference's window (`max_length = 2048`); also the cap on the default window, since
/// attention over a modern prior's full context (32k+) on the CPU is out of reach.
pub const REFERENCE_MAX_LEN: usize = 2048;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToEditOptions {
    pub prior: String,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    #[serde(default = "d_drop_threshold")]
    pub drop_threshold: f64,
    #[serde(default = "d_top_k")]
    pub top_k: usize,
    #[serde(default = "d_beta")]
    pub beta: f64,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub max_len: Option<usize>,
    #[serde(default)]
    pub stride: Option<usize>,
    #[serde(default)]
    pub truncate: bool,
    #[serde(default = "d_generations")]
    pub generations: usize,
}

fn d_threshold() -> f64 {
    0.99
}
fn d_drop_threshold() -> f64 {
    0.001
}
fn d_top_k() -> usize {
    8
}
fn d_beta() -> f64 {
    1.0
}
fn d_batch_size() -> usize {
    8
}
fn d_generations() -> usize {
    1
}

impl ToEditOptions {
    pub fn rule(&self) -> EditRule {
        EditRule { strategy: self.strategy, threshold: self.threshold, drop_threshold: self.drop_threshold, top_k: self.top_k, beta: self.beta }
    }

    fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad("threshold", "must be in (0, 1] (a probability; above 1 nothing is eligible)");
        }
        if !(0.0..=1.0).contains(&self.drop_threshold) {
            return bad("drop_threshold", "must be in [0, 1]");
        }
        if self.top_k == 0 {
            return bad("top_k", "must be at least 1");
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return bad("beta", "must be a positive number");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.max_len.is_some_and(|m| m < 2) {
            return bad("max_len", "must be at least 2 tokens (a window scores the tokens after its first)");
        }
        if self.stride == Some(0) || matches!((self.stride, self.max_len), (Some(s), Some(m)) if s > m) {
            return bad("stride", "must be between 1 and max_len");
        }
        if self.generations == 0 {
            return bad("generations", "must be at least 1");
        }
        Ok(())
    }
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    parse_options::<ToEditOptions>(options)?.check()
}

pub fn references(options: &toml::Table) -> Vec<Reference> {
    let prior = options.get("prior").and_then(|v| v.as_str());
    refs(Artifact::Model, [("options.prior", prior)])
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let opts: ToEditOptions = parse_options(options).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    opts.check().map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    let dir = if opts.prior.starts_with('@') { env.resolve(&opts.prior)? } else { std::path::PathBuf::from(&opts.prior) };
    let device = &env.device;
    let dtype = crate::device::resolve_dtype(None, device);
    let model = Model::load(&dir, device, dtype, false).with_context(|| format!("options.prior: loading the model in {}", dir.display()))?;
    let tok = Tokenizer::load(&dir).with_context(|| format!("options.prior: loading the tokenizer of {}", dir.display()))?;
    let max_len = opts.max_len.unwrap_or(model.config.max_position_embeddings.min(REFERENCE_MAX_LEN)).max(2);
    let stride = opts.stride.unwrap_or(max_len).min(max_len);
    Ok(Box::new(ToEdit { opts, model, tok, max_len, stride, run_seed: env.seed }))
}

pub struct ToEdit {
    opts: ToEditOptions,
    model: Model,
    tok: Tokenizer,
    max_len: usize,
    stride: usize,
    run_seed: u64,
}

#[derive(Serialize)]
struct TextRow<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct AuditRow<'a> {
    origin: &'a str,
    /// Generation 1 (the edit of the input text).
    #[serde(flatten)]
    counts: EditCounts,
    /// Every generation, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    generations: Vec<EditCounts>,
}

/// A counter key of `Counts::tasks` (checkpointed with the output, so resumed totals are exact).
fn key(generation: usize, what: &str) -> String {
    format!("gen{generation}/{what}")
}

impl ToEdit {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tok.encode(text, true)?;
        if self.opts.truncate {
            ids.truncate(self.max_len);
        }
        Ok(ids)
    }

    /// Every generation of the batch: one batched scoring pass per generation, then the
    /// per-document decisions. Returns, per document, the edit of each generation.
    pub fn edit_batch(&self, docs: &[Document]) -> Result<Vec<Vec<Edited>>> {
        let rule = self.opts.rule();
        let mut ids: Vec<Vec<u32>> = docs.iter().map(|d| self.encode(&d.text)).collect::<Result<_>>()?;
        let mut out: Vec<Vec<Edited>> = docs.iter().map(|_| Vec::new()).collect();
        for g in 1..=self.opts.generations {
            let views: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
            let scored = score_documents(&self.model.decoder, &views, self.max_len, self.stride, self.opts.batch_size, rule.top_k)?;
            let mut next = Vec::with_capacity(docs.len());
            for (i, (doc, s)) in docs.iter().zip(&scored).enumerate() {
                let mut rng = document_rng(self.run_seed, doc.id, g);
                let edited = edit_document(&ids[i], s, &rule, &mut rng);
                if g < self.opts.generations {
                    // The next generation edits this one's text, as a second run would.
                    next.push(self.encode(&self.tok.decode(&edited.ids, true)?)?);
                }
                out[i].push(edited);
            }
            ids = next;
        }
        Ok(out)
    }
}

impl Method for ToEdit {
    fn files(&self) -> &'static [&'static str] {
        &["data.jsonl", "audit.jsonl"]
    }

    fn batch_size(&self) -> usize {
        self.opts.batch_size
    }

    fn process(&mut self, doc: &Document, out: &mut SynthOutput) -> Result<()> {
        self.process_batch(std::slice::from_ref(doc), out)
    }

    fn process_batch(&mut self, docs: &[Document], out: &mut SynthOutput) -> Result<()> {
        let edits = self.edit_batch(docs)?;
        for (doc, gens) in docs.iter().zip(edits) {
            let last = gens.last().expect("at least one generation");
            let text = self.tok.decode(&last.ids, true)?;
            out.write_row("data.jsonl", &TextRow { text: &text })?;
            let all: Vec<EditCounts> = gens.iter().map(|e| e.counts).collect();
            let row = AuditRow { origin: &doc.origin, counts: all[0], generations: if all.len() > 1 { all.clone() } else { Vec::new() } };
            out.write_row("audit.jsonl", &row)?;
            for (g, c) in all.iter().enumerate() {
                for (what, n) in [("tokens", c.tokens), ("scored", c.scored), ("eligible", c.eligible), ("realized", c.realized), ("dropped", c.dropped)] {
                    *out.counts.tasks.entry(key(g + 1, what)).or_default() += n;
                }
            }
            out.counts.documents_out += 1;
        }
        Ok(())
    }

    fn stats(&self, counts: &Counts) -> Option<serde_json::Value> {
        Some(stats_of(counts, self.opts.generations, &self.opts))
    }

    fn live(&self, counts: &Counts) -> Vec<(String, f64)> {
        let mut v = Vec::new();
        for g in 1..=self.opts.generations {
            let (e, r, d) = generation_counts(counts, g).fractions();
            let gen = if self.opts.generations > 1 { format!("gen{g} ") } else { String::new() };
            v.push((format!("{gen}eligible %"), 100.0 * e));
            v.push((format!("{gen}realized %"), 100.0 * r));
            if !matches!(self.opts.strategy, super::Strategy::UpRevise) {
                v.push((format!("{gen}dropped %"), 100.0 * d));
            }
        }
        v
    }

    fn preview(&mut self, doc: &Document) -> Result<String> {
        let gens = self.edit_batch(std::slice::from_ref(doc))?.remove(0);
        let first = &gens[0];
        let c = first.counts;
        let (e, r, d) = c.fractions();
        let tok = |id: u32| format!("{:?}", self.tok.id_to_token(id).unwrap_or_else(|| format!("<{id}>")));
        let mut s = format!(
            "{} — {} tokens, {} scored: eligible {} ({:.2}%), realized {} ({:.2}%), dropped {} ({:.2}%)\n",
            doc.origin,
            c.tokens,
            c.scored,
            c.eligible,
            100.0 * e,
            c.realized,
            100.0 * r,
            c.dropped,
            100.0 * d
        );
        s.push_str(&format!("strategy {:?}, threshold {}, drop_threshold {}, top_k {}, beta {}, window {}\n", self.opts.strategy, self.opts.threshold, self.opts.drop_threshold, self.opts.top_k, self.opts.beta, self.max_len));
        if first.edits.is_empty() {
            s.push_str("\nno token changed\n");
        }
        for edit in &first.edits {
            match edit.to {
                Some(to) => s.push_str(&format!("  pos {:>5}: {} → {}  (p = {:.4})\n", edit.pos, tok(edit.from), tok(to), edit.p)),
                None => s.push_str(&format!("  pos {:>5}: {} dropped  (p = {:.6})\n", edit.pos, tok(edit.from), edit.p)),
            }
        }
        for (g, e) in gens.iter().enumerate().skip(1) {
            let (fe, fr, fd) = e.counts.fractions();
            s.push_str(&format!("generation {}: eligible {:.2}%, realized {:.2}%, dropped {:.2}%\n", g + 1, 100.0 * fe, 100.0 * fr, 100.0 * fd));
        }
        s.push_str("\n--- edited text ---\n");
        s.push_str(&self.tok.decode(&gens.last().expect("a generation").ids, true)?);
        Ok(s)
    }
}

/// Generation `g`'s totals, from the run's checkpointed counters.
fn generation_counts(counts: &Counts, g: usize) -> EditCounts {
    let get = |w: &str| counts.tasks.get(&key(g, w)).copied().unwrap_or(0);
    EditCounts { tokens: get("tokens"), scored: get("scored"), eligible: get("eligible"), realized: get("realized"), dropped: get("dropped") }
}

/// The `toedit` table of `stats.json`: totals and fractions (of the scored tokens) per
/// generation, and generation 1's fractions at the top.
pub fn stats_of(counts: &Counts, generations: usize, opts: &ToEditOptions) -> serde_json::Value {
    let per: Vec<serde_json::Value> = (1..=generations)
        .map(|g| {
            let c = generation_counts(counts, g);
            let (e, r, d) = c.fractions();
            serde_json::json!({
                "generation": g, "tokens": c.tokens, "scored": c.scored, "eligible": c.eligible, "realized": c.realized, "dropped": c.dropped,
                "eligible_fraction": e, "realized_fraction": r, "dropped_fraction": d,
                "realized_of_eligible": if c.eligible > 0 { c.realized as f64 / c.eligible as f64 } else { 0.0 },
            })
        })
        .collect();
    serde_json::json!({
        "strategy": opts.strategy, "threshold": opts.threshold, "drop_threshold": opts.drop_threshold, "top_k": opts.top_k, "beta": opts.beta,
        "truncate": opts.truncate,
        "eligible_fraction": per[0]["eligible_fraction"], "realized_fraction": per[0]["realized_fraction"], "dropped_fraction": per[0]["dropped_fraction"],
        "generations": per,
    })
}
