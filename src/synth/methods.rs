//! The synthesis methods the `synth` stage and `retort synth` know: one line each in
//! [`METHODS`], and the [`Method`] contract they implement. A method either turns each
//! document of a corpus into rows ([`Method::process`]) or generates a data set from the
//! seed ([`Method::generate`]).

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

/// Every method.
pub const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "adaptllm",
        about: "AdaptLLM: raw domain text → reading-comprehension text with regex-mined tasks (METHODS.md §S4)",
        reads_input: true,
        check: super::adaptllm::method::check,
        references: super::adaptllm::method::references,
        build: super::adaptllm::method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "toedit",
        about: "ToEdit: resample the tokens a prior LM is sure of (p ≥ 0.99) in human text (METHODS.md §S1)",
        reads_input: true,
        check: super::toedit::method::check,
        references: super::toedit::method::references,
        build: super::toedit::method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "instruct",
        about: "Instruction Pre-Training: a synthesizer model writes instruction-response pairs about each text; texts chained over rounds, rendered into pre-training text (METHODS.md §S3)",
        reads_input: true,
        check: super::instruct::method::check,
        references: super::instruct::method::references,
        build: super::instruct::method::build,
        preflight: super::instruct::method::preflight,
    },
    MethodSpec {
        name: "tiny-domain",
        about: "the generated general and domain corpora of the adaptllm-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_domain::method::check,
        references: |_| Vec::new(),
        build: super::tiny_domain::method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-human",
        about: "a long-tailed \"human\" corpus from a Zipfian order-2 Markov source, for the toedit-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_human::check,
        references: |_| Vec::new(),
        build: super::tiny_human::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-encyclopedia",
        about: "fictional entities with known facts, rule-based QA pairs and closed-book questions, for the instruct-pt-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_encyclopedia::check,
        references: |_| Vec::new(),
        build: super::tiny_encyclopedia::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-ood",
        about: "generated text domains (recipes, legal clauses, captions, menus) and a pre-training mixture, for the diffusion-ood-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_ood::check,
        references: |_| Vec::new(),
        build: super::tiny_ood::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-uprise",
        about: "generated task families in four verbalizer styles and a demonstration-sensitive LM text, for the uprise-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_uprise::check,
        references: |_| Vec::new(),
        build: super::tiny_uprise::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "sample",
        about: "documents sampled from a model (top-p 0.9 by default): synthetic text for the model-collapse experiments (no input)",
        reads_input: false,
        check: super::sample::check,
        references: super::sample::references,
        build: super::sample::build,
        preflight: |_| Ok(()),
    },
];

pub fn find(name: &str) -> Result<&'static MethodSpec, String> {
    METHODS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        format!("unknown synthesis method `{name}`; the methods are: {}", names.join(", "))
    })
}

pub fn check_options(spec: &MethodSpec, options: &toml::Table) -> Result<(), (String, String)> {
    (spec.check)(options).map_err(|(k, m)| (if k.is_empty() { "options".to_string() } else { format!("options.{k}") }, m))
}

pub fn references(method: &str, options: &toml::Table) -> Vec<Reference> {
    find(method).map(|m| (m.references)(options)).unwrap_or_default()
}

pub fn build(spec: &MethodSpec, options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    (spec.build)(options, env)
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

/// The stage's closing table: what was made, per kind, and what was skipped.
pub fn counts_table(counts: &Counts) -> String {
    let mut s = format!("documents {}  (with output: {})\n", counts.documents, counts.documents_out);
    for (file, n) in &counts.rows {
        s.push_str(&format!("  {file:<24} {n:>10} rows\n"));
    }
    if !counts.tasks.is_empty() {
        s.push_str("made:\n");
        for (kind, n) in &counts.tasks {
            s.push_str(&format!("  {kind:<24} {n:>10}\n"));
        }
    }
    if !counts.skipped.is_empty() {
        s.push_str("skipped:\n");
        for (reason, n) in &counts.skipped {
            s.push_str(&format!("  {reason:<24} {n:>10}\n"));
        }
    }
    s
}
