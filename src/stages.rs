//! The stage registry: the one place that names every `[[stage]]` kind, its one-line
//! description and how its config is parsed. The contract the kinds implement is in
//! [`crate::stage`]; each kind lives beside its domain's code. To add a kind: write its
//! config struct, implement [`StageConfig`], add a line to [`KINDS`].

use crate::stage::StageConfig;

pub type ParseFn = fn(toml::Value) -> Result<Box<dyn StageConfig>, serde_path_to_error::Error<toml::de::Error>>;

pub struct StageKind {
    pub kind: &'static str,
    pub about: &'static str,
    pub parse: ParseFn,
}

fn parse_as<T>(v: toml::Value) -> Result<Box<dyn StageConfig>, serde_path_to_error::Error<toml::de::Error>>
where
    T: StageConfig + serde::de::DeserializeOwned + 'static,
{
    let config: T = serde_path_to_error::deserialize(v)?;
    Ok(Box::new(config))
}

/// Every stage kind retort knows.
pub const KINDS: &[StageKind] = &[
    StageKind {
        kind: "tasks",
        about: "generate train/test splits of a built-in verifiable task as JSONL",
        parse: parse_as::<crate::tasks::stage::TasksStage>,
    },
    StageKind {
        kind: "model-init",
        about: "build a tiny model folder (config, character tokenizer, random weights)",
        parse: parse_as::<crate::model::stage::ModelInitStage>,
    },
    StageKind {
        kind: "pull",
        about: "download a model from the Hugging Face hub into the standard cache",
        parse: parse_as::<crate::hub::stage::PullStage>,
    },
    StageKind {
        kind: "sft",
        about: "supervised fine-tuning (full or LoRA) on JSONL or a built-in task's skewed teacher",
        parse: parse_as::<crate::train::sft::SftStage>,
    },
    StageKind {
        kind: "rl",
        about: "RL with verifiable rewards: GRPO, PPO or FlowRL on a task's verifier, with exploration shapings",
        parse: parse_as::<crate::train::rl::stage::RlStage>,
    },
    StageKind {
        kind: "eval",
        about: "pass@k to large k, diversity and exploration metrics of one or more models, side by side",
        parse: parse_as::<crate::eval::stage::EvalStage>,
    },
];

pub fn find_kind(kind: &str) -> Option<&'static StageKind> {
    KINDS.iter().find(|k| k.kind == kind)
}

pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind).collect()
}

