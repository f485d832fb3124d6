//! Where a stage's problems come from: one [`ProblemSource`], one set of profile keys, for
//! the sft, rl and eval stages.
//!
//! The keys (in the stage's table for `rl` and `eval`, in `[stage.data]` for `sft`):
//!
//! | key | meaning | stages |
//! | --- | --- | --- |
//! | `from` | an earlier `tasks` stage (`"@data"`): `train.jsonl` to train on, `test.jsonl` to evaluate | all |
//! | `task` | a built-in task, its problems generated from the run's seed | all |
//! | `options` | that task's generator options (`retort tasks sample`) | all |
//! | `train_problems` | how many training problems `task` generates | sft, rl |
//! | `test_problems` | how many held-out problems `task` generates (the test split drawn first) | all |
//! | `jsonl` | the stage's own JSONL: prompt/response rows to train on (sft), problems to train on (rl) or to evaluate (eval) | all |
//! | `test_jsonl` | a held-out JSONL: rows for the eval loss (sft), problems for the quick evals (rl) | sft, rl |
//! | `verifier` | `"math"` or `"code"`: how `jsonl` problems are graded | rl, eval |
//! | `chat` | render prompts through the tokenizer's chat template as one user turn | all |
//!
//! Earlier names still load, each with a one-line deprecation warning (see [`Spec::aliases`]):
//! `task_options` (rl) → `options`; `train` / `test` (sft) → `train_problems` /
//! `test_problems`; `problems` (eval) → `test_problems`; `eval_jsonl` (sft) → `test_jsonl`.
//!
//! The keys sit flat among the stage's own keys, so the config structs carry the source as
//! `#[serde(flatten, skip_deserializing)]`: serde's `flatten` writes it back flat (`profiles
//! show`, the run's `profile.toml`), but reading is done by [`split`] before serde sees the
//! stage. serde cannot deny unknown keys through a flattened field and loses the key path of
//! errors inside one, and the profile's messages name file, line, key and a "did you mean";
//! splitting first keeps `deny_unknown_fields` on both halves and every path exact.

use super::generate_split;
use super::problems::{read_instances, unknown_verifier, ProblemSet, JSONL_VERIFIERS};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The problem source of a stage; see the module doc for the keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default)]
    pub options: toml::Table,
    /// Filled with the stage's default when the stage takes the key; `None` where it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_problems: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_problems: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_jsonl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    #[serde(default)]
    pub chat: bool,
    /// Deprecated keys this source was read with: (as written, canonical), paths relative to
    /// the stage's table.
    #[serde(skip)]
    pub deprecated: Vec<(String, String)>,
}

/// What a stage kind takes of the source keys.
#[derive(Debug)]
pub struct Spec {
    /// The stage kind, for messages.
    pub kind: &'static str,
    /// The sub-table the keys sit in (`data` for sft), or `None`: the stage's own table.
    pub at: Option<&'static str>,
    /// The canonical keys this kind takes.
    pub keys: &'static [&'static str],
    /// Earlier names: (old, canonical), relative to the source's table.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Defaults of the counts, for the kinds that take them.
    pub train_problems: Option<usize>,
    pub test_problems: Option<usize>,
    /// Does a `jsonl` hold problems (graded by `verifier`) rather than training rows?
    pub jsonl_problems: bool,
}

pub const SFT: Spec = Spec {
    kind: "sft",
    at: Some("data"),
    keys: &["from", "task", "options", "train_problems", "test_problems", "jsonl", "test_jsonl", "chat"],
    aliases: &[("train", "train_problems"), ("test", "test_problems"), ("eval_jsonl", "test_jsonl")],
    train_problems: Some(1500),
    test_problems: Some(200),
    jsonl_problems: false,
};

pub const RL: Spec = Spec {
    kind: "rl",
    at: None,
    keys: &["from", "task", "options", "train_problems", "test_problems", "jsonl", "test_jsonl", "verifier", "chat"],
    aliases: &[("task_options", "options")],
    train_problems: Some(1000),
    test_problems: Some(100),
    jsonl_problems: true,
};

pub const EVAL: Spec = Spec {
    kind: "eval",
    at: None,
    keys: &["from", "task", "options", "test_problems", "jsonl", "verifier", "chat"],
    aliases: &[("problems", "test_problems")],
    train_problems: None,
    test_problems: Some(100),
    jsonl_problems: true,
};

impl Spec {
    /// `key` with the sub-table in front (`data.task` for sft).
    pub fn path(&self, key: &str) -> String {
        match self.at {
            Some(at) => format!("{at}.{key}"),
            None => key.to_string(),
        }
    }

    /// The aliases as paths relative to the stage's table: (old, canonical).
    pub fn alias_paths(&self) -> Vec<(String, String)> {
        self.aliases.iter().map(|(old, new)| (self.path(old), self.path(new))).collect()
    }
}

/// A key path and what is wrong there, relative to the stage's table.
pub type KeyError = (String, String);

/// Moves the source keys (and their old names, renamed) out of `table` (the stage's table, or
/// the sub-table `spec.at` inside it) and reads them, counts defaulted. Errors name the key
/// as it was written.
pub fn split(stage: &mut toml::Table, spec: &Spec) -> Result<ProblemSource, KeyError> {
    let table = match spec.at {
        None => stage,
        Some(at) => match stage.get_mut(at) {
            Some(toml::Value::Table(t)) => t,
            // Missing or not a table: the stage's own deserializer says so.
            _ => return Ok(ProblemSource::default()),
        },
    };
    let mut own = toml::Table::new();
    for key in spec.keys {
        if let Some(v) = table.remove(*key) {
            own.insert(key.to_string(), v);
        }
    }
    let mut renamed: Vec<(String, String)> = Vec::new();
    for (old, new) in spec.aliases {
        if let Some(v) = table.remove(*old) {
            if own.contains_key(*new) {
                return Err((spec.path(old), format!("`{old}` is the old name of `{new}`, which is set too; keep only `{new}`")));
            }
            own.insert(new.to_string(), v);
            renamed.push((old.to_string(), new.to_string()));
        }
    }
    for (key, default) in [("train_problems", spec.train_problems), ("test_problems", spec.test_problems)] {
        if let Some(d) = default {
            own.entry(key).or_insert(toml::Value::Integer(d as i64));
        }
    }
    let mut source: ProblemSource = serde_path_to_error::deserialize(toml::Value::Table(own)).map_err(|e| {
        let (path, message) = crate::config_keys::describe_serde_error(&e);
        // Name the key as written: the old name when it was renamed.
        let path = match renamed.iter().find(|(_, new)| path == *new || path.starts_with(&format!("{new}."))) {
            Some((old, new)) => format!("{old}{}", &path[new.len()..]),
            None => path,
        };
        (spec.path(&path), message)
    })?;
    source.deprecated = renamed.into_iter().map(|(old, new)| (spec.path(&old), spec.path(&new))).collect();
    Ok(source)
}

impl ProblemSource {
    /// Checks beyond types: exactly one of `from`, `task`, `jsonl`; a task that exists; a
    /// verifier with (and only with) JSONL problems; `test_jsonl` only beside `jsonl`.
    pub fn validate(&self, spec: &Spec) -> Result<(), KeyError> {
        let err = |key: &str, msg: String| Err((spec.path(key), msg));
        let sources = [self.from.is_some(), self.task.is_some(), self.jsonl.is_some()].iter().filter(|&&b| b).count();
        if sources != 1 {
            let jsonl = if spec.jsonl_problems { "a JSONL of problems, with `verifier`" } else { "a JSONL of prompt/response, messages, text or synthesizer (context/qa_list) rows" };
            return err(
                "from",
                format!(
                    "set exactly one of `{}` (a tasks stage, e.g. \"@data\"), `{}` (a built-in task name) or `{}` ({jsonl})",
                    spec.path("from"),
                    spec.path("task"),
                    spec.path("jsonl")
                ),
            );
        }
        if let Some(task) = &self.task {
            if let Err(e) = super::build(task, &self.options) {
                return err("task", e.to_string());
            }
        }
        if spec.jsonl_problems {
            match (&self.jsonl, self.verifier.as_deref()) {
                (Some(_), Some(v)) if !JSONL_VERIFIERS.contains(&v) => return err("verifier", unknown_verifier(v).to_string()),
                (Some(_), None) => {
                    return err("verifier", format!("`jsonl` problems need a verifier to score responses: one of {}", JSONL_VERIFIERS.join(", ")))
                }
                (None, Some(_)) => return err("verifier", "`verifier` applies to `jsonl` problems only; tasks bring their own".into()),
                _ => {}
            }
        }
        if self.test_jsonl.is_some() && self.jsonl.is_none() {
            return err("test_jsonl", "`test_jsonl` goes with `jsonl`; a tasks stage or a task brings its own test split".into());
        }
        Ok(())
    }

    /// Training problems generated for `task` (0 where the stage takes none).
    pub fn train_count(&self) -> usize {
        self.train_problems.unwrap_or(0)
    }

    /// Held-out problems generated for `task`.
    pub fn test_count(&self) -> usize {
        self.test_problems.unwrap_or(0)
    }

    /// The training and held-out problems of a training stage (sft with task data, rl).
    /// `task`: the test split is drawn first from `rng`, then the training split without its
    /// prompts. `from`: the tasks stage's `train.jsonl` (one task) and `test.jsonl` (empty
    /// when there is none). `jsonl`: graded by `verifier`, `test_jsonl` the held-out problems.
    pub fn train_and_test(&self, resolve: &dyn Fn(&str) -> Result<PathBuf>, mut rng: Rng) -> Result<(ProblemSet, ProblemSet)> {
        if let Some(name) = &self.task {
            let task = super::build(name, &self.options)?;
            let test = generate_split(task.as_ref(), &mut rng, self.test_count(), &Default::default())?;
            let seen = test.iter().map(|i| i.prompt.clone()).collect();
            let train = generate_split(task.as_ref(), &mut rng, self.train_count(), &seen)?;
            return Ok((ProblemSet::of_task(name, &self.options, train)?, ProblemSet::of_task(name, &self.options, test)?));
        }
        if let Some(jsonl) = &self.jsonl {
            let verifier = self.verifier.as_deref().unwrap_or_default();
            let train = ProblemSet::from_jsonl(&resolve(jsonl)?, verifier)?;
            let test = match &self.test_jsonl {
                Some(t) => ProblemSet::from_jsonl(&resolve(t)?, verifier)?,
                None => ProblemSet::empty_for(verifier),
            };
            return Ok((train, test));
        }
        let from = self.from.as_deref().unwrap_or_default();
        let dir = resolve(from)?;
        let train_path = dir.join("train.jsonl");
        let train = read_instances(&train_path).with_context(|| format!("`from = {from:?}` must be a tasks stage (train.jsonl of task instances)"))?;
        let test_path = dir.join("test.jsonl");
        let test = if test_path.exists() { read_instances(&test_path)? } else { Vec::new() };
        let first = train.first().with_context(|| format!("{} holds no instances", train_path.display()))?;
        let task = first.task.clone();
        if let Some(other) = train.iter().find(|i| i.task != task) {
            bail!("{}: mixes tasks `{task}` and `{}`; a stage trains on one task", train_path.display(), other.task);
        }
        let train = ProblemSet::of_task(&task, &self.options, train).map_err(|e| {
            anyhow::anyhow!("{}: task `{task}` has no verifier in retort ({e}); every response is scored by the task's verifier", train_path.display())
        })?;
        Ok((train, ProblemSet::of_task(&task, &self.options, test)?))
    }

    /// The problems an eval stage evaluates: a tasks stage's `test.jsonl` (or a JSONL of
    /// instances), `test_problems` of `task` generated from `seed`, or `jsonl` graded by
    /// `verifier`.
    pub fn evaluated(&self, resolve: &dyn Fn(&str) -> Result<PathBuf>, seed: impl FnOnce() -> u64) -> Result<ProblemSet> {
        if let Some(from) = &self.from {
            let p = resolve(from)?;
            let file = if p.is_dir() { p.join("test.jsonl") } else { p };
            ProblemSet::from_instances(&file)
        } else if let Some(task) = &self.task {
            ProblemSet::from_task(task, &self.options, self.test_count(), seed())
        } else if let Some(jsonl) = &self.jsonl {
            ProblemSet::from_jsonl(&resolve(jsonl)?, self.verifier.as_deref().unwrap_or(""))
        } else {
            bail!("set one of `from`, `task` or `jsonl`");
        }
    }

    /// The JSONL files named outside the run (not `@stage`), for preflight checks.
    pub fn outside_files(&self) -> impl Iterator<Item = &Path> {
        [&self.jsonl, &self.test_jsonl].into_iter().flatten().filter(|f| !f.starts_with('@')).map(Path::new)
    }
}

/// A stage config with a problem source among its keys (this module): the
/// registry reads the source apart and hands it over (see [`crate::stages::parse_sourced`]).
pub trait Sourced: crate::stage::StageConfig + serde::de::DeserializeOwned + 'static {
    const SOURCE: &'static Spec;
    fn source_mut(&mut self) -> &mut ProblemSource;
}


#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn old_names_are_renamed_and_remembered() {
        let mut t = table("model = \"m\"\ntask_options = { max_target = 9 }\ntask = \"countdown\"");
        let s = split(&mut t, &RL).unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), vec!["model"], "the stage keeps only its own keys");
        assert_eq!(s.options["max_target"].as_integer(), Some(9));
        assert_eq!((s.train_problems, s.test_problems), (Some(1000), Some(100)));
        assert_eq!(s.deprecated, vec![("task_options".to_string(), "options".to_string())]);

        let mut t = table("steps = 3\n[data]\ntask = \"countdown\"\ntrain = 7\ntest = 2\neval_jsonl = \"x\"\n[data.teacher]\nzipf = 2.0");
        let s = split(&mut t, &SFT).unwrap();
        assert_eq!((s.train_problems, s.test_problems, s.test_jsonl.as_deref()), (Some(7), Some(2), Some("x")));
        assert_eq!(t["data"].as_table().unwrap().keys().collect::<Vec<_>>(), vec!["teacher"]);
        assert_eq!(s.deprecated.len(), 3);
        assert!(s.deprecated.contains(&("data.train".to_string(), "data.train_problems".to_string())));

        let mut t = table("problems = 5\ntask = \"countdown\"");
        let s = split(&mut t, &EVAL).unwrap();
        assert_eq!((s.train_problems, s.test_problems), (None, Some(5)));
    }

    #[test]
    fn errors_name_the_key_as_written() {
        let mut t = table("task_options = 3");
        let (key, msg) = split(&mut t, &RL).unwrap_err();
        assert_eq!(key, "task_options");
        assert!(msg.contains("invalid type"), "{msg}");
        let mut t = table("[data]\ntrain = \"many\"");
        assert_eq!(split(&mut t, &SFT).unwrap_err().0, "data.train");
        let mut t = table("options = {}\ntask_options = {}");
        let (key, msg) = split(&mut t, &RL).unwrap_err();
        assert_eq!(key, "task_options");
        assert!(msg.contains("keep only `options`"), "{msg}");
        // Keys a kind does not take stay behind for the stage's own (unknown-key) check.
        let mut t = table("train_problems = 5\ntest_jsonl = \"t\"");
        split(&mut t, &EVAL).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn validation_is_shared() {
        let source = |text: &str, spec: &Spec| split(&mut table(text), spec).unwrap();
        let (key, msg) = source("", &SFT).validate(&SFT).unwrap_err();
        assert_eq!(key, "data.from");
        assert!(msg.contains("exactly one of `data.from`"), "{msg}");
        let (key, msg) = source("jsonl = \"p.jsonl\"", &RL).validate(&RL).unwrap_err();
        assert_eq!(key, "verifier");
        assert!(msg.contains("need a verifier"), "{msg}");
        let (key, _) = source("task = \"countdown\"\nverifier = \"math\"", &EVAL).validate(&EVAL).unwrap_err();
        assert_eq!(key, "verifier");
        let (key, msg) = source("task = \"nosuch\"", &EVAL).validate(&EVAL).unwrap_err();
        assert_eq!(key, "task");
        assert!(msg.contains("unknown task"), "{msg}");
        assert!(source("[data]\njsonl = \"rows.jsonl\"\ntest_jsonl = \"held.jsonl\"", &SFT).validate(&SFT).is_ok());
    }
}
