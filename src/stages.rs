//! The stage registry: the one place that names every `[[stage]]` kind, its one-line
//! description and how its config is parsed. The contract the kinds implement is in
//! [`crate::stage`]; each kind lives beside its domain's code. To add a kind: write its
//! config struct, implement [`StageConfig`], add a line to [`KINDS`].
//!
//! The sft, rl and eval kinds share one problem source ([`crate::tasks::source`]): their
//! configs implement [`Sourced`] and are read by [`parse_sourced`], which splits the source
//! keys off before serde sees the rest.

use crate::stage::StageConfig;
use crate::tasks::source::Sourced;
use crate::tasks::source::{self, Spec};

pub type ParseFn = fn(toml::Value) -> Result<Box<dyn StageConfig>, ParseError>;

/// Why a stage table does not make a config: the key path (relative to the stage's table,
/// empty for the table itself) and a plain message.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

pub struct StageKind {
    pub kind: &'static str,
    pub about: &'static str,
    pub parse: ParseFn,
    /// The problem-source keys of the kind, when it has them (their old names included).
    pub source: Option<&'static Spec>,
}

/// Deserialize a stage config, errors as (key path, message) with a "did you mean" for
/// unknown keys; `extra_keys` are keys the table also takes (read apart, e.g. a problem
/// source), offered as suggestions too: (path, the name to suggest).
fn deserialize_stage<T: serde::de::DeserializeOwned>(v: toml::Value, extra_keys: &[(String, String)]) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let (path, message) = crate::config_keys::describe_serde_error_with(&e, extra_keys);
        ParseError { path, message }
    })
}

fn parse_as<T>(v: toml::Value) -> Result<Box<dyn StageConfig>, ParseError>
where
    T: StageConfig + serde::de::DeserializeOwned + 'static,
{
    Ok(Box::new(deserialize_stage::<T>(v, &[])?))
}

/// Parse a stage with a problem source: the source keys (and their old names) are split off
/// and read first, then the rest as the stage's own config, each half denying unknown keys.
pub fn parse_sourced<T: Sourced>(v: toml::Value) -> Result<T, ParseError> {
    let toml::Value::Table(mut table) = v else {
        return deserialize_stage(v, &[]);
    };
    let spec = T::SOURCE;
    let read = source::split(&mut table, spec).map_err(|(path, message)| ParseError { path, message })?;
    // An unknown key beside the source keys may be a misspelt source key, or old name.
    let mut extra: Vec<(String, String)> = spec.keys.iter().map(|k| (spec.path(k), k.to_string())).collect();
    extra.extend(spec.aliases.iter().map(|(old, new)| (spec.path(old), new.to_string())));
    let mut config: T = deserialize_stage(toml::Value::Table(table), &extra)?;
    *config.source_mut() = read;
    Ok(config)
}

fn parse_sourced_boxed<T: Sourced>(v: toml::Value) -> Result<Box<dyn StageConfig>, ParseError> {
    Ok(Box::new(parse_sourced::<T>(v)?))
}

/// Every stage kind retort knows.
pub const KINDS: &[StageKind] = &[
    StageKind {
        kind: "tasks",
        about: "generate train/test splits of a built-in verifiable task as JSONL",
        parse: parse_as::<crate::tasks::stage::TasksStage>,
        source: None,
    },
    StageKind {
        kind: "model-init",
        about: "build a tiny model folder (config, character tokenizer, random weights)",
        parse: parse_as::<crate::model::stage::ModelInitStage>,
        source: None,
    },
    StageKind {
        kind: "pull",
        about: "download a model, or a data set with `dataset = true`, from the Hugging Face hub into the standard cache",
        parse: parse_as::<crate::hub::stage::PullStage>,
        source: None,
    },
    StageKind {
        kind: "sft",
        about: "supervised fine-tuning (full or LoRA) on JSONL or a built-in task's skewed teacher",
        parse: parse_sourced_boxed::<crate::train::sft::SftStage>,
        source: Some(<crate::train::sft::SftStage as Sourced>::SOURCE),
    },
    StageKind {
        kind: "rl",
        about: "RL with verifiable rewards: GRPO, PPO or FlowRL on a task's verifier, with exploration shapings",
        parse: parse_sourced_boxed::<crate::train::rl::stage::RlStage>,
        source: Some(<crate::train::rl::stage::RlStage as Sourced>::SOURCE),
    },
    StageKind {
        kind: "eval",
        about: "pass@k to large k, diversity and exploration metrics of one or more models, side by side",
        parse: parse_sourced_boxed::<crate::eval::stage::EvalStage>,
        source: Some(<crate::eval::stage::EvalStage as Sourced>::SOURCE),
    },
    StageKind {
        kind: "denoise",
        about: "diffusion fine-tuning of an encoder with its MLM head (L_mse + L_T + L_round), or its MLM pre-training",
        parse: parse_as::<crate::train::denoise::DenoiseStage>,
        source: None,
    },
    StageKind {
        kind: "synth",
        about: "synthesize a data set from a corpus (AdaptLLM reading comprehension, …) or from the seed",
        parse: parse_as::<crate::synth::stage::SynthStage>,
        source: None,
    },
    StageKind {
        kind: "prompt-score",
        about: "UPRISE: sample the prompt pool and score candidate prompts with a frozen LM (positive, hard and other negatives)",
        parse: parse_as::<crate::uprise::score_stage::PromptScoreStage>,
        source: None,
    },
    StageKind {
        kind: "retrieve",
        about: "UPRISE: train the bi-encoder prompt retriever (InfoNCE over the batch's contexts) and index the pool",
        parse: parse_as::<crate::uprise::train_stage::RetrieveStage>,
        source: None,
    },
    StageKind {
        kind: "uprise-eval",
        about: "UPRISE: zero-shot accuracy with retrieved prompts: 0-shot, random-K, BM25-K, untuned encoder, UPRISE per task and cluster",
        parse: parse_as::<crate::uprise::eval_stage::UpriseEvalStage>,
        source: None,
    },
];

/// Stage kinds that are gone, each with where its job went (for the unknown-kind error).
const RETIRED: &[(&str, &str)] = &[(
    "ood",
    "OOD scoring is the eval stage's `ood` table: kind = \"eval\", models = [...], ood = { id = ..., ood = [...], t = [...] }",
)];

/// Where a retired kind's job went, if `kind` is one.
pub fn retired_kind(kind: &str) -> Option<&'static str> {
    RETIRED.iter().find(|(k, _)| *k == kind).map(|(_, hint)| *hint)
}

pub fn find_kind(kind: &str) -> Option<&'static StageKind> {
    KINDS.iter().find(|k| k.kind == kind)
}

pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind).collect()
}

