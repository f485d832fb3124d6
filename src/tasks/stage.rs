//! Stage `kind = "tasks"`: write train/test splits of a built-in verifiable task.
//!
//! ```toml
//! [[stage]]
//! kind = "tasks"
//! name = "data"
//! task = "countdown"      # `retort tasks list`
//! train = 1000
//! test = 100
//! [stage.options]         # the task's own generator options
//! min_solutions = 3
//! ```
//! Output: `<run>/<name>/{train,test}.jsonl`, one `Instance` per line, identical for a seed.
//! The test split is drawn first and the train split excludes its prompts, so the test set
//! does not change when the train size does. [`crate::tasks::read_instances`] reads a split back.

use crate::stage::{table_of, StageConfig, StageCtx, StageOutput};
use crate::fsutil::write_atomic;
use crate::rng::Rng;
use crate::tasks::{self, Instance};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksStage {
    pub task: String,
    #[serde(default = "default_train")]
    pub train: usize,
    #[serde(default = "default_test")]
    pub test: usize,
    #[serde(default)]
    pub options: toml::Table,
}

fn default_train() -> usize {
    1000
}

fn default_test() -> usize {
    100
}

const CHUNK: usize = 100;
/// The label of the random stream the splits are drawn from (`StageCtx::rng`).
pub const SPLIT_STREAM: &str = "split";

impl TasksStage {
    /// The test split, then the train split without the test prompts, drawn from `rng` in
    /// chunks of 100; `after_chunk(split, n)` runs after each chunk (progress, stop checks).
    /// `retort export` draws the same splits without a run (same seed, same instances).
    pub fn draw_splits(&self, rng: &mut Rng, mut after_chunk: impl FnMut(&str, usize) -> Result<()>) -> Result<Vec<(&'static str, Vec<Instance>)>> {
        let task = tasks::build(&self.task, &self.options)?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut splits: Vec<(&'static str, Vec<Instance>)> = Vec::new();
        for (split, n) in [("test", self.test), ("train", self.train)] {
            let mut items: Vec<Instance> = Vec::with_capacity(n);
            while items.len() < n {
                let want = CHUNK.min(n - items.len());
                let chunk = tasks::generate_split(task.as_ref(), rng, want, &seen)
                    .with_context(|| format!("generating the {split} split of `{}`", self.task))?;
                for inst in &chunk {
                    seen.insert(inst.prompt.clone());
                }
                items.extend(chunk);
                after_chunk(split, want)?;
            }
            splits.push((split, items));
        }
        Ok(splits)
    }
}

impl StageConfig for TasksStage {
    fn produces(&self) -> Option<crate::stage::Artifact> {
        Some(crate::stage::Artifact::Data)
    }

    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        tasks::build(&self.task, &self.options).map(|_| ()).map_err(|e| ("task".to_string(), e.to_string()))
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some((self.train + self.test) as u64), "instances")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        let task = tasks::build(&self.task, &self.options)?;
        let total = (self.train + self.test) as u64;
        let mut done = 0u64;
        let splits = self.draw_splits(&mut ctx.rng(SPLIT_STREAM), |split, n| {
            ctx.check_stop()?;
            done += n as u64;
            ctx.events.progress(done, Some(total), "instances", Some(split));
            Ok(())
        })?;
        let mut summary = std::collections::BTreeMap::new();
        for (split, items) in &splits {
            let mut text = String::new();
            for inst in items {
                text.push_str(&serde_json::to_string(inst)?);
                text.push('\n');
            }
            let path = ctx.dir.join(format!("{split}.jsonl"));
            write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            summary.insert(format!("{split}_instances"), items.len() as f64);
            let counts: Vec<usize> = items.iter().filter_map(|i| task.solutions(i).map(|s| s.len())).collect();
            if !counts.is_empty() {
                summary.insert(format!("{split}_mean_solutions"), counts.iter().sum::<usize>() as f64 / counts.len() as f64);
            }
        }
        ctx.events.info(format!("wrote {} train and {} test instances of {}", self.train, self.test, self.task));
        Ok(StageOutput { output: Some(ctx.dir.clone()), summary, table: None })
    }
}
