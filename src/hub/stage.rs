//! Stage `kind = "pull"`: download a model or a data set from the Hugging Face hub into the
//! standard cache (shared with Python tools) and hand its snapshot folder to later stages as
//! `@name` (a model folder, or text data with `dataset = true`).
//!
//! ```toml
//! [[stage]]
//! kind = "pull"
//! name = "base"
//! repo = "Qwen/Qwen2.5-7B"     # org/name, optionally @revision
//! include = ["*.json", "*.safetensors"]
//!
//! [[stage]]
//! kind = "pull"
//! name = "finance"
//! repo = "AdaptLLM/finance-tasks"
//! dataset = true               # a data set repository: `@finance` is text data
//! include = ["FiQA_SA/*"]
//! ```
//! `HF_ENDPOINT`, `HF_HOME` / `HF_HUB_CACHE`, `HF_TOKEN` and `HF_HUB_OFFLINE=1` apply.

use crate::stage::{table_of, StageConfig, StageCtx, StageOutput};
use crate::hub::{self, HubConfig, PullProgress, PullRequest, RepoKind};
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullStage {
    pub repo: String,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub offline: bool,
    /// A data set repository (`/api/datasets/…`, `datasets--org--name` in the cache).
    #[serde(default)]
    pub dataset: bool,
}

impl PullStage {
    fn kind(&self) -> RepoKind {
        if self.dataset {
            RepoKind::Dataset
        } else {
            RepoKind::Model
        }
    }
}

impl StageConfig for PullStage {
    fn produces(&self) -> Option<crate::stage::Artifact> {
        Some(match self.kind() {
            RepoKind::Model => crate::stage::Artifact::Model,
            RepoKind::Dataset => crate::stage::Artifact::Text,
        })
    }

    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        PullRequest::parse(&self.repo).map(|_| ()).map_err(|e| ("repo".into(), e.to_string()))
    }

    fn model_origin(&self) -> Option<crate::stage::needs::ModelOrigin> {
        (!self.dataset).then(|| crate::stage::needs::ModelOrigin::Repo(self.repo.clone()))
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (None, "files")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        let mut req = PullRequest::parse(&self.repo)?;
        req.kind = self.kind();
        req.include = self.include.clone();
        req.offline = self.offline;
        let config = HubConfig::from_env();
        let events = ctx.events.clone();
        let mut count = 0u64;
        let mut on_progress = |p: PullProgress| match p {
            PullProgress::Resolved { commit, files, .. } => {
                count = files.len() as u64;
                events.info(format!("{} {} at {commit}: {} files", self.kind().noun(), req_repo(&self.repo), files.len()));
            }
            PullProgress::FileStarted { file, index, count: n } => {
                events.progress(index as u64, Some(n as u64), "files", Some(&file));
            }
            PullProgress::FileBytes { .. } => {}
            PullProgress::FileDone { file, cached } => {
                if !cached {
                    events.info(format!("downloaded {file}"));
                }
            }
        };
        let snapshot = hub::pull(&config, &req, &mut on_progress)?;
        ctx.events.progress(count, Some(count), "files", None);
        Ok(StageOutput { output: Some(snapshot), summary: [("files".to_string(), count as f64)].into(), table: None })
    }
}

fn req_repo(spec: &str) -> &str {
    spec.split('@').next().unwrap_or(spec)
}
