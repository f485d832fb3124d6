//! The stage contract: what every `[[stage]]` kind implements and what it is given.
//!
//! A kind has a typed config (serde, `deny_unknown_fields`, defaults filled in) that
//! implements [`StageConfig`]; its runner gets a [`StageCtx`]: its folder in the run
//! directory, the seed, the device, an [`Emitter`] for events and the control receiver it
//! polls between units of work. This module imports no stage: each domain keeps its own
//! stage beside its code, and [`crate::stages`] (the registry) is the one place that names
//! them all.

use crate::bus::{ControlRx, Emitter};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

pub mod needs;


/// What a finished stage leaves behind.
#[derive(Debug, Default, Clone)]
pub struct StageOutput {
    /// The main artifact (data folder, model folder), which later stages reach as `@name`.
    pub output: Option<PathBuf>,
    pub summary: BTreeMap<String, f64>,
    pub table: Option<String>,
}

/// What a stage leaves as its output, so that an `@name` reference can be checked against
/// what the referring key needs before the run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// A data folder of task instances (`train.jsonl`, `test.jsonl`), as a `tasks` stage writes.
    Data,
    /// A model folder (config.json, weights, tokenizer).
    Model,
    /// Evaluation results (`results.json`, samples).
    Results,
    /// A folder of text data (JSONL, Parquet, text files), as a `synth` stage or a `pull`
    /// with `dataset = true` writes. A key that wants text also takes a `tasks` folder.
    Text,
}

impl Artifact {
    pub fn describe(self) -> &'static str {
        match self {
            Artifact::Data => "a data folder (a `tasks` stage)",
            Artifact::Model => "a model folder (a `model-init`, `pull`, `sft` or `rl` stage)",
            Artifact::Results => "evaluation results (an `eval` stage)",
            Artifact::Text => "text data (a `synth` stage, or a `pull` with `dataset = true`)",
        }
    }

    /// Whether a stage that makes `made` satisfies a key that wants `self`.
    pub fn accepts(self, made: Artifact) -> bool {
        self == made || (self == Artifact::Text && made == Artifact::Data)
    }
}

/// Split `@name` or `@name/sub/path` into the stage name and the path inside its output.
pub fn split_reference(reference: &str) -> Option<(&str, Option<&str>)> {
    let rest = reference.strip_prefix('@')?;
    Some(match rest.split_once('/') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    })
}

/// One `@name` reference in a stage's config: the key it sits under and what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub key: &'static str,
    pub value: String,
    pub wants: Artifact,
}

/// The `@name` values among `(key, value)` pairs, each needing `wants`.
pub fn refs<'a>(wants: Artifact, fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>) -> Vec<Reference> {
    fields
        .into_iter()
        .filter_map(|(key, v)| v.filter(|s| s.starts_with('@')).map(|s| Reference { key, value: s.to_string(), wants }))
        .collect()
}

/// Returned (as an error) by a stage that stopped because the user asked it to, after it
/// saved what it needs to resume.
#[derive(Debug, thiserror::Error)]
#[error("stopped by request")]
pub struct Interrupted;

pub trait StageConfig: Debug + Send + Sync {
    /// The resolved config (defaults filled in), for `profile.toml` and `profiles show`.
    fn to_table(&self) -> toml::Table;
    /// `@name` references to earlier stages' outputs, checked when the profile loads (the
    /// stage must exist, come earlier and make the kind of output the key needs).
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    /// What this stage's output is (`None`: it has none to refer to).
    fn produces(&self) -> Option<Artifact>;
    /// Keys the config was written with under an old name: (as written, current name), paths
    /// relative to the stage's table. The profile warns once about each.
    fn deprecated_keys(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Checks beyond types (a task name that exists, sizes that divide): `Err((key, message))`.
    fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
    /// Checks of the files a stage reads from outside the run (a JSONL of examples or
    /// problems), made before the run folder exists, so bad data never starts a run.
    fn preflight(&self) -> Result<()> {
        Ok(())
    }
    /// Contexts each example of this stage's output carries beside its query (a
    /// `prompt-score` stage: the positive and the negatives a retriever encodes per query).
    fn contexts_per_example(&self) -> Option<usize> {
        None
    }
    /// What the memory preflight needs to size this stage (training and eval stages).
    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        None
    }
    /// Where this stage's output model comes from, so the memory preflight can size a later
    /// stage that trains it before this one has run.
    fn model_origin(&self) -> Option<crate::stage::needs::ModelOrigin> {
        None
    }
    /// Units of work and their name, for progress bars (`None` when unknown up front).
    fn total_units(&self) -> (Option<u64>, &'static str);
    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput>;
}

/// Serialize a config struct into a TOML table (helper for `StageConfig::to_table`).
pub fn table_of<T: serde::Serialize>(config: &T) -> toml::Table {
    match toml::Value::try_from(config) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}


/// [`StageCtx::resolve`] over a map of stage outputs.
pub fn resolve_in(outputs: &BTreeMap<String, PathBuf>, reference: &str) -> Result<PathBuf> {
    let Some((name, sub)) = split_reference(reference) else {
        return Ok(PathBuf::from(reference));
    };
    let Some(base) = outputs.get(name) else {
        bail!("`{reference}`: stage `{name}` has no output (did it finish?)");
    };
    match sub {
        None => Ok(base.clone()),
        // A path inside the stage's folder: no way out of it.
        Some(sub) if Path::new(sub).components().all(|c| matches!(c, std::path::Component::Normal(_))) => Ok(base.join(sub)),
        Some(sub) => bail!("`{reference}`: `{sub}` must be a relative path inside stage `{name}`'s output (no `..`, no leading `/`)"),
    }
}

/// What a running stage can see and use.
pub struct StageCtx<'a> {
    pub run_dir: &'a Path,
    /// This stage's own folder, `run_dir/<name>`; created before `run` is called.
    pub dir: PathBuf,
    pub name: String,
    pub seed: u64,
    pub device: Device,
    /// `None` = auto (f32 on the CPU, bf16 on a GPU).
    pub dtype: Option<DType>,
    pub events: Emitter,
    pub control: &'a mut ControlRx,
    /// Outputs of the stages before this one, by stage name.
    pub outputs: &'a BTreeMap<String, PathBuf>,
    /// True when this stage ran before in this folder and was interrupted: look for checkpoints.
    pub resuming: bool,
}

impl StageCtx<'_> {
    /// `@name` → the output of the earlier stage `name`, `@name/file` → a file inside it;
    /// anything else is a path or a name that the stage interprets itself (returned unchanged).
    pub fn resolve(&self, reference: &str) -> Result<PathBuf> {
        resolve_in(self.outputs, reference)
    }

    /// A random stream owned by this stage and `label`, derived from the run's seed.
    pub fn rng(&self, label: &str) -> Rng {
        Rng::derive(self.seed, &format!("{}/{}", self.name, label))
    }

    /// Check for pause/stop/checkpoint requests; `Err(Interrupted)` when a stop is pending
    /// and the caller has nothing to save first.
    pub fn check_stop(&mut self) -> Result<()> {
        if self.control.poll().stop {
            return Err(Interrupted.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_reach_into_a_stage_folder_but_not_out_of_it() {
        let outputs: BTreeMap<String, PathBuf> = [("corpora".to_string(), PathBuf::from("/runs/r/corpora"))].into();
        assert_eq!(resolve_in(&outputs, "@corpora").unwrap(), PathBuf::from("/runs/r/corpora"));
        assert_eq!(resolve_in(&outputs, "@corpora/domain.jsonl").unwrap(), PathBuf::from("/runs/r/corpora/domain.jsonl"));
        assert_eq!(resolve_in(&outputs, "plain/path.jsonl").unwrap(), PathBuf::from("plain/path.jsonl"));
        let escape = resolve_in(&outputs, "@corpora/../secret").unwrap_err().to_string();
        assert!(escape.contains("relative path inside stage `corpora`"), "{escape}");
        let missing = resolve_in(&outputs, "@nope/x").unwrap_err().to_string();
        assert!(missing.contains("stage `nope` has no output"), "{missing}");
        assert_eq!(split_reference("@a/b/c"), Some(("a", Some("b/c"))));
        assert!(Artifact::Text.accepts(Artifact::Data) && !Artifact::Data.accepts(Artifact::Text));
    }
}
