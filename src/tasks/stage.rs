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
        let mut rng = ctx.rng("split");
        let total = (self.train + self.test) as u64;
        let mut seen: HashSet<String> = HashSet::new();
        let mut done = 0u64;
        let mut splits: Vec<(&str, Vec<Instance>)> = Vec::new();
        for (split, n) in [("test", self.test), ("train", self.train)] {
            let mut items: Vec<Instance> = Vec::with_capacity(n);
            while items.len() < n {
                ctx.check_stop()?;
                let want = CHUNK.min(n - items.len());
                let chunk = tasks::generate_split(task.as_ref(), &mut rng, want, &seen)
                    .with_context(|| format!("generating the {split} split of `{}`", self.task))?;
                for inst in &chunk {
                    seen.insert(inst.prompt.clone());
                }
                done += chunk.len() as u64;
                items.extend(chunk);
                ctx.events.progress(done, Some(total), "instances", Some(split));
            }
            splits.push((split, items));
        }
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
