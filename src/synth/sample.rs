//! Synthetic text sampled from a model, the "S" of the model-collapse experiments
//! (research/synth-spec.md §1.8): `docs` documents, each continued from the start token
//! (the tokenizer's BOS, or its EOS when it has none: the separator packed training puts
//! between documents) with the sampler, truncated (`top_p`, default 0.9) or tempered
//! (`temperature`), as LLM-generated data is. A document ends at an end-of-sequence token or
//! `max_new_tokens`. Decoded without special tokens into `data.jsonl` as `{"text"}` rows;
//! empty samples are counted and left out.

use crate::generate::{generate, SamplingParams};
use crate::rng::Rng;
use crate::stage::{refs, Artifact, Reference, StageCtx};
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::Counts;
use crate::text::model_eos_ids;
use crate::text::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleOptions {
    /// The model folder (or `@stage`) to sample from.
    pub model: String,
    pub docs: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Documents sampled per batch.
    pub batch_size: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions { model: String::new(), docs: 1000, max_new_tokens: 128, temperature: 1.0, top_p: 0.9, batch_size: 32 }
    }
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    let o: SampleOptions = parse_options(options)?;
    let err = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    if o.model.is_empty() {
        return err("model", "say which model to sample from: a model folder or `@stage`");
    }
    if o.docs == 0 || o.batch_size == 0 || o.max_new_tokens == 0 {
        return err(if o.docs == 0 { "docs" } else if o.batch_size == 0 { "batch_size" } else { "max_new_tokens" }, "must be at least 1");
    }
    if !(o.temperature > 0.0 && o.temperature.is_finite()) {
        return err("temperature", "must be a positive number");
    }
    if !(o.top_p > 0.0 && o.top_p <= 1.0) {
        return err("top_p", "must be in (0, 1]; 1 turns nucleus sampling off");
    }
    Ok(())
}

pub fn references(options: &toml::Table) -> Vec<Reference> {
    refs(Artifact::Model, [("options.model", options.get("model").and_then(|v| v.as_str()))])
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let opts: SampleOptions = parse_options(options).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    let dir = if opts.model.starts_with('@') { env.resolve(&opts.model)? } else { PathBuf::from(&opts.model) };
    Ok(Box::new(Sample { opts, dir, seed: env.seed, device: env.device.clone() }))
}

struct Sample {
    opts: SampleOptions,
    dir: PathBuf,
    seed: u64,
    device: Device,
}

impl Method for Sample {
    fn generate(&mut self, out: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        let o = &self.opts;
        let eos = model_eos_ids(&self.dir).with_context(|| format!("options.model: {}", self.dir.display()))?;
        let tok = Tokenizer::load(&self.dir)?.with_model_eos(&eos);
        let Some(start) = tok.bos_id().or_else(|| tok.eos_ids().first().copied()) else {
            bail!("{}: the tokenizer has neither a BOS nor an EOS token to start a document from", self.dir.display());
        };
        let model = crate::model::Model::load(&self.dir, &self.device, DType::F32, false)?;
        let context = model.decoder.config().max_position_embeddings;
        let max_new = o.max_new_tokens.min(context.saturating_sub(1));
        let params = SamplingParams { temperature: o.temperature, top_p: o.top_p, top_k: 0, greedy: false, max_new_tokens: max_new, stop_token_ids: tok.eos_ids(), ..Default::default() };
        ctx.events.info(format!("sampling {} documents from {} (T {}, top-p {}, ≤ {max_new} tokens)", o.docs, self.dir.display(), o.temperature, o.top_p));
        let path = out.join("data.jsonl");
        let mut counts = Counts::default();
        crate::fsutil::write_atomic_with(&path, |tmp| -> Result<()> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
            let mut done = 0;
            while done < o.docs {
                let n = o.batch_size.min(o.docs - done);
                // One stream per batch: the output does not depend on anything but the seed and sizes.
                let mut rng = Rng::derive(self.seed, &format!("sample/{done}"));
                let rows = generate(&model.decoder, &vec![vec![start]; n], &params, &mut rng, None)?;
                for row in rows {
                    counts.documents += 1;
                    let text = tok.decode(&row.tokens, true)?;
                    if text.trim().is_empty() {
                        counts.add_skip("empty sample");
                        continue;
                    }
                    writeln!(w, "{}", serde_json::json!({"text": text.trim()}))?;
                    *counts.rows.entry("data.jsonl".to_string()).or_default() += 1;
                    counts.documents_out += 1;
                }
                done += n;
                ctx.events.progress(done as u64, Some(o.docs as u64), "docs", None);
                if ctx.control.poll().stop {
                    return Err(crate::stage::Interrupted.into());
                }
            }
            w.flush()?;
            Ok(())
        })?;
        Ok(counts)
    }
}
