//! Stage `kind = "model-init"`: build a tiny model folder (config, character tokenizer,
//! random weights) that later stages load like a downloaded checkpoint.
//!
//! ```toml
//! [[stage]]
//! kind = "model-init"
//! name = "init"
//! preset = "tiny"     # tiny (~1M params) | small
//! context = 1024      # optional: the context length, instead of the preset's (tiny 256, small 512)
//! ```

use crate::stage::{table_of, StageConfig, StageCtx, StageOutput};
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInitStage {
    #[serde(default = "default_preset")]
    pub preset: String,
    /// The context length (`max_position_embeddings`) instead of the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

fn default_preset() -> String {
    "tiny".into()
}

impl StageConfig for ModelInitStage {
    fn produces(&self) -> Option<crate::stage::Artifact> {
        Some(crate::stage::Artifact::Model)
    }

    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if let Some(n) = self.context {
            if !(16..=1 << 20).contains(&n) {
                return Err(("context".into(), format!("{n} is out of range: give 16 to 1048576 tokens")));
            }
        }
        match self.preset.as_str() {
            "tiny" | "small" => Ok(()),
            other => Err(("preset".into(), format!("unknown model preset `{other}`; known: tiny, small"))),
        }
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(1), "model")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        let out = ctx.dir.join("model");
        let seed = ctx.rng("weights").next_u64();
        let config = crate::model::init::init_folder_with_context(&self.preset, &out, seed, self.context)?;
        ctx.events.progress(1, Some(1), "model", None);
        let params = config.num_parameters() as f64;
        ctx.events.info(format!("initialised a {} model with {} parameters in {}", self.preset, params, out.display()));
        Ok(StageOutput { output: Some(out), summary: [("parameters".to_string(), params)].into(), table: None })
    }
}
