//! The contract of a synthesis method ([`Method`]), how it is described to the `synth` stage
//! ([`MethodSpec`]) and what it is built with ([`MethodEnv`]). A method either turns each
//! document of a corpus into rows ([`Method::process`]) or generates a data set from the
//! seed ([`Method::generate`]). The list of methods is [`super::methods`]; the method files
//! import this contract, not the list, so the list can name them without a cycle.

use super::output::{Counts, SynthOutput};
use crate::stage::{Reference, StageCtx};
use crate::text::corpus::Document;
use anyhow::{bail, Result};
use std::path::Path;

/// One synthesis method at work.
pub trait Method {
    /// The files it writes (besides `stats.json`), the main one first.
    fn files(&self) -> &'static [&'static str] {
        &["data.jsonl"]
    }
    /// Turn one document into rows of the output files (and count what it made).
    fn process(&mut self, _doc: &Document, _out: &mut SynthOutput) -> Result<()> {
        bail!("internal: this method reads no corpus")
    }
    /// How many documents [`Method::process_batch`] wants at once (the stage feeds batches of
    /// this size and checkpoints only between them).
    fn batch_size(&self) -> usize {
        1
    }
    /// Turn a batch of documents (in corpus order) into rows: by default one at a time.
    fn process_batch(&mut self, docs: &[Document], out: &mut SynthOutput) -> Result<()> {
        for doc in docs {
            self.process(doc, out)?;
        }
        Ok(())
    }
    /// A method's own table for `stats.json` (under its name), from the run's counts.
    fn stats(&self, _counts: &Counts) -> Option<serde_json::Value> {
        None
    }
    /// Running figures for the dashboard (shown in the progress line, sent as metrics and
    /// kept in the stage's summary), from the counts so far, e.g. `("eligible %", 13.1)`.
    fn live(&self, _counts: &Counts) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// Generate the whole data set into `dir` (methods that read no input).
    fn generate(&mut self, _dir: &Path, _ctx: &mut StageCtx) -> Result<Counts> {
        bail!("internal: this method needs a corpus")
    }
    /// What the method would make of one document, for `retort synth METHOD --dry-run`.
    fn preview(&mut self, _doc: &Document) -> Result<String> {
        bail!("this method has no dry run")
    }
}

pub struct MethodSpec {
    pub name: &'static str,
    pub about: &'static str,
    /// Whether it reads a corpus (`input`); otherwise it generates from the seed.
    pub reads_input: bool,
    /// Parse and check the options table: `Err((key path, message))`.
    pub check: fn(&toml::Table) -> Result<(), (String, String)>,
    /// `@name` references among the options.
    pub references: fn(&toml::Table) -> Vec<Reference>,
    pub build: fn(&toml::Table, &MethodEnv) -> Result<Box<dyn Method>>,
    /// Checks before the run starts, e.g. that a model folder outside the run exists.
    pub preflight: fn(&toml::Table) -> Result<()>,
}

/// What a method is built with: the seed of its stage and a way to resolve `@name` paths.
pub struct MethodEnv {
    pub seed: u64,
    pub outputs: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// Where a method's models run (the stage's device).
    pub device: candle_core::Device,
}

impl MethodEnv {
    pub fn from_ctx(ctx: &StageCtx) -> MethodEnv {
        MethodEnv { seed: ctx.rng("synth").next_u64(), outputs: ctx.outputs.clone(), device: ctx.device.clone() }
    }
    pub fn resolve(&self, reference: &str) -> Result<std::path::PathBuf> {
        crate::stage::resolve_in(&self.outputs, reference)
    }
}

/// Deserialize a method's options, with the key path and a "did you mean" on error.
pub fn parse_options<T: serde::de::DeserializeOwned>(options: &toml::Table) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(options.clone())).map_err(|e| crate::config_keys::describe_serde_error_with(&e, &[]))
}

/// A generator's options, with `seed` taken from the stage unless the options give one.
pub fn generator_options<T: serde::de::DeserializeOwned>(options: &toml::Table, env: &MethodEnv, seed: impl FnOnce(&mut T) -> &mut u64) -> Result<T> {
    let mut config: T = parse_options(options).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    if !options.contains_key("seed") {
        *seed(&mut config) = env.seed;
    }
    Ok(config)
}
