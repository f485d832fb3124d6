//! `retort export verl`: an `rl` stage as a verl run — its problems as Parquet in verl's RL
//! schema, a `reward.py` with the same verifier, a `run.sh` with the stage's settings as
//! Hydra overrides, and a README listing what does not map.
//!
//! The problems come from the loaders the `rl` stage uses ([`ProblemSource::train_and_test`]
//! with the stage's own random stream), so the train and test rows are the instances the
//! stage would train and evaluate on. A `from = "@stage"` tasks stage is drawn again from the
//! run's seed (the same instances its run writes), or read from `--run RUN_DIR`.

pub mod files;
pub mod mapping;
pub mod parquet;

use crate::profile::Profile;
use crate::rng::Rng;
use crate::stage::split_reference;
use crate::tasks::source::ProblemSource;
use crate::tasks::stage::{TasksStage, SPLIT_STREAM};
use crate::tasks::ProblemSet;
use crate::train::rl::config::RlStage;
use anyhow::{bail, Context, Result};
use parquet::{Message, VerlRow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `data_source` of a row: the prefix, then the verifier (`math`, `code` or a task name);
/// reward.py dispatches on it.
pub const DATA_SOURCE_PREFIX: &str = "retort/";

/// What `retort export verl` was asked for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub out: PathBuf,
    /// Export only this `rl` stage (default: every one; several go to `out/<stage>/`).
    pub stage: Option<String>,
    /// A finished run of the profile: `@stage` references resolve to its outputs.
    pub run: Option<PathBuf>,
    /// The retort binary reward.py calls for the math and code verifiers.
    pub retort_bin: PathBuf,
    /// Overwrite files in a non-empty `out`.
    pub force: bool,
}

/// What one stage's export wrote.
#[derive(Debug)]
pub struct Exported {
    pub stage: String,
    pub dir: PathBuf,
    pub train_rows: usize,
    pub test_rows: usize,
    pub overrides: usize,
    pub unmapped: Vec<String>,
    pub target: mapping::Target,
}

/// The `rl` stages of `profile` with their configs, in profile order.
fn rl_stages(profile: &Profile) -> Result<Vec<(String, RlStage)>> {
    let mut out = Vec::new();
    for entry in profile.stages.iter().filter(|s| s.kind == "rl") {
        let cfg: RlStage = crate::stages::parse_sourced(toml::Value::Table(entry.config.to_table()))
            .map_err(|e| anyhow::anyhow!("stage `{}`: {}: {}", entry.name, e.path, e.message))?;
        out.push((entry.name.clone(), cfg));
    }
    Ok(out)
}

/// Outputs of a finished run: stage name → folder.
fn run_outputs(run: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let manifest = crate::run::read_manifest(run)?;
    Ok(manifest.stages.into_iter().filter_map(|s| s.output.map(|o| (s.name, run.join(o)))).collect())
}

/// A scratch folder for task splits drawn again, removed when the export ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Resolves `@stage` references without running the profile: a run's outputs when given,
/// else tasks stages drawn again into `scratch`.
struct Resolver<'a> {
    profile: &'a Profile,
    outputs: Option<BTreeMap<String, PathBuf>>,
    scratch: PathBuf,
}

impl Resolver<'_> {
    fn resolve(&self, reference: &str) -> Result<PathBuf> {
        let Some((name, sub)) = split_reference(reference) else {
            return Ok(PathBuf::from(reference));
        };
        if let Some(outputs) = &self.outputs {
            return crate::stage::resolve_in(outputs, reference);
        }
        let entry = self.profile.stages.iter().find(|s| s.name == name).with_context(|| format!("`{reference}`: the profile has no stage `{name}`"))?;
        if entry.kind != "tasks" || sub.is_some() {
            bail!(
                "`{reference}` is the output of the `{}` stage `{name}`, which only a run makes: run the profile (`retort run`) and pass \
                 --run RUN_DIR, or point the rl stage at a task or a JSONL",
                entry.kind
            );
        }
        let tasks: TasksStage = toml::Value::Table(entry.config.to_table()).try_into().with_context(|| format!("stage `{name}`"))?;
        let dir = self.scratch.join(name);
        if !dir.join("train.jsonl").exists() {
            std::fs::create_dir_all(&dir)?;
            let mut rng = Rng::derive(self.profile.run.seed, &format!("{name}/{SPLIT_STREAM}"));
            for (split, items) in tasks.draw_splits(&mut rng, |_, _| Ok(()))? {
                let text: String = items.iter().map(|i| serde_json::to_string(i).map(|l| l + "\n")).collect::<Result<_, _>>()?;
                std::fs::write(dir.join(format!("{split}.jsonl")), text)?;
            }
        }
        Ok(dir)
    }

    /// The model path verl starts from: a pulled repository's id, a run's model folder, or
    /// `None` (a model retort makes: run the profile and pass --run).
    fn model(&self, reference: &str) -> Option<String> {
        let (name, _) = split_reference(reference)?;
        if let Some(outputs) = &self.outputs {
            return outputs.get(name).map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string());
        }
        let entry = self.profile.stages.iter().find(|s| s.name == name)?;
        (entry.kind == "pull").then(|| entry.config.to_table().get("repo").and_then(|r| r.as_str().map(String::from))).flatten()
    }
}

/// The verifier name reward.py dispatches on, and the row's ground truth: the gold answer
/// for math, JSON of what the verifier reads for code and the built-in tasks.
fn verifier_and_truth(set: &ProblemSet, i: usize) -> Result<(String, String, String)> {
    let mut fields = set.grading_fields(i);
    Ok(match set {
        ProblemSet::Math { .. } => ("math".into(), "math".into(), fields.get("gold").and_then(|g| g.as_str()).unwrap_or_default().to_string()),
        ProblemSet::Code { .. } => ("code".into(), "code".into(), serde_json::to_string(&fields)?),
        ProblemSet::Task { .. } => {
            let task = fields.get("task").and_then(|t| t.as_str()).unwrap_or_default().to_string();
            fields.remove("prompt");
            fields.remove("task");
            let data = fields.remove("data").unwrap_or_default();
            (task.clone(), task, serde_json::to_string(&data)?)
        }
    })
}

/// The rows of one split.
pub fn rows(set: &ProblemSet, split: &str) -> Result<Vec<VerlRow>> {
    (0..set.len())
        .map(|i| {
            let (verifier, ability, ground_truth) = verifier_and_truth(set, i)?;
            Ok(VerlRow {
                data_source: format!("{DATA_SOURCE_PREFIX}{verifier}"),
                prompt: vec![Message { role: "user".into(), content: set.prompt(i).to_string() }],
                ability,
                style: "rule".into(),
                ground_truth,
                split: split.into(),
                index: i as i64,
                id: set.id(i).to_string(),
            })
        })
        .collect()
}

/// The longest prompt in tokens as the policy sees it, when the model folder is at hand.
fn longest_prompt(model: Option<&str>, sets: [&ProblemSet; 2], chat: bool) -> Option<usize> {
    let dir = Path::new(model?);
    let tok = crate::text::Tokenizer::load(dir).ok()?;
    let mut longest = 0;
    for set in sets {
        for i in 0..set.len() {
            longest = longest.max(crate::tasks::problems::encode_prompt(&tok, set.prompt(i), chat).ok()?.len());
        }
    }
    Some(longest)
}

/// Exports every selected `rl` stage of `profile`.
pub fn export(profile: &Profile, opts: &Options) -> Result<Vec<Exported>> {
    let mut stages = rl_stages(profile)?;
    if stages.is_empty() {
        bail!("profile `{}` has no rl stage; `retort export verl` exports RL training (kind = \"rl\")", profile.run.name);
    }
    if let Some(want) = &opts.stage {
        let names: Vec<String> = stages.iter().map(|(n, _)| n.clone()).collect();
        stages.retain(|(n, _)| n == want);
        if stages.is_empty() {
            bail!("--stage {want}: the profile's rl stages are {}", names.join(", "));
        }
    }
    let several = stages.len() > 1;
    let scratch = Scratch(std::env::temp_dir().join(format!("retort-export-{}", std::process::id())));
    let resolver = Resolver { profile, outputs: opts.run.as_deref().map(run_outputs).transpose()?, scratch: scratch.0.clone() };
    let mut done = Vec::new();
    for (name, cfg) in stages {
        let dir = if several { opts.out.join(&name) } else { opts.out.clone() };
        done.push(export_stage(profile, &name, &cfg, &dir, &resolver, opts).with_context(|| format!("exporting stage `{name}`"))?);
    }
    Ok(done)
}

fn export_stage(profile: &Profile, name: &str, cfg: &RlStage, dir: &Path, resolver: &Resolver, opts: &Options) -> Result<Exported> {
    if dir.join("run.sh").exists() && !opts.force {
        bail!("{} already holds an export (run.sh); pass --force to overwrite it", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let source: &ProblemSource = &cfg.source;
    let rng = Rng::derive(profile.run.seed, &format!("{name}/problems"));
    let (train, test) = source.train_and_test(&|r| resolver.resolve(r), rng)?;
    if train.is_empty() {
        bail!("the training split is empty");
    }
    let train_rows = rows(&train, "train")?;
    let test_rows = rows(&test, "test")?;
    parquet::write_rows(&dir.join(files::TRAIN), &train_rows)?;
    parquet::write_rows(&dir.join(files::TEST), &test_rows)?;

    let model = resolver.model(&cfg.model);
    let assumed = if cfg.source.jsonl.is_some() { 1024 } else { 64 };
    let measured = longest_prompt(model.as_deref(), [&train, &test], cfg.source.chat);
    let max_prompt_tokens = cfg.max_prompt_tokens.or(measured).unwrap_or(assumed);
    let inputs = mapping::Inputs {
        train_file: format!("\"$HERE/{}\"", files::TRAIN),
        val_file: format!("\"$HERE/{}\"", files::TEST),
        reward_file: format!("\"$HERE/{}\"", files::REWARD),
        model_path: "\"$MODEL_PATH\"".into(),
        train_rows: train_rows.len(),
        val_rows: test_rows.len(),
        max_prompt_tokens,
        seed: profile.run.seed,
        project: profile.run.name.clone(),
        experiment: name.to_string(),
    };
    let map = mapping::map(cfg, &inputs);
    let ctx = files::Context {
        profile: &profile.run.name,
        stage: name,
        cfg,
        map: &map,
        model: model.as_deref(),
        model_ref: &cfg.model,
        train_rows: train_rows.len(),
        test_rows: test_rows.len(),
        prompt_tokens: (max_prompt_tokens, cfg.max_prompt_tokens.is_some(), measured.is_some()),
        retort_bin: &opts.retort_bin,
    };
    files::write_all(dir, &ctx)?;
    Ok(Exported {
        stage: name.to_string(),
        dir: dir.to_path_buf(),
        train_rows: train_rows.len(),
        test_rows: test_rows.len(),
        overrides: map.overrides.len(),
        unmapped: map.unmapped.iter().map(|u| u.key.clone()).collect(),
        target: map.target,
    })
}
