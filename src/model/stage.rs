//! Stage `kind = "model-init"`: build a tiny model folder (config, character tokenizer,
//! random weights) that later stages load like a downloaded checkpoint.
//!
//! ```toml
//! [[stage]]
//! kind = "model-init"
//! name = "init"
//! preset = "tiny"     # tiny (~1M params) | small | tiny-vlm (a qwen2_vl folder, src/model/vision/tiny.rs)
//! context = 1024      # optional: the context length, instead of the preset's (tiny 256, small 512)
//! ```
//!
//! With `corpus` (a JSONL of `{"text"}` or `{"prompt", "response"}` rows), `tiny` and `small`
//! get a word-level tokenizer instead of the character one: the character tokenizer plus BPE
//! merges that make every word of the corpus one token (`text::tiny_word`).
//!
//! `preset = "encoder-tiny"` builds a tiny RoBERTa-shaped encoder with an MLM head instead
//! (d = 64, 2 layers, 4 heads) whose word-level vocabulary comes from `corpus`, a JSONL of
//! `{"text"}` rows; `context` is then the most tokens a text may have (default 128).

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
    /// The JSONL the word vocabulary is built from (`encoder-tiny`: required; `tiny`, `small`:
    /// a word-level tokenizer instead of the character one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
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

    fn references(&self) -> Vec<crate::stage::Reference> {
        crate::stage::refs(crate::stage::Artifact::Text, [("corpus", self.corpus.as_deref())])
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if let Some(n) = self.context {
            if !(16..=1 << 20).contains(&n) {
                return Err(("context".into(), format!("{n} is out of range: give 16 to 1048576 tokens")));
            }
        }
        match (self.preset.as_str(), &self.corpus) {
            ("tiny" | "small", _) => Ok(()),
            (crate::model::vision::tiny::PRESET, None) => Ok(()),
            (crate::model::vision::tiny::PRESET, Some(_)) => Err(("corpus".into(), "`tiny-vlm` has its own character vocabulary; remove `corpus`".into())),
            ("encoder-tiny", Some(_)) => Ok(()),
            ("encoder-tiny", None) => Err(("corpus".into(), "`encoder-tiny` needs `corpus`, a JSONL of {\"text\"} rows to build its vocabulary from".into())),
            (other, _) => Err(("preset".into(), format!("unknown model preset `{other}`; known: tiny, small, encoder-tiny, tiny-vlm"))),
        }
    }

    fn model_origin(&self) -> Option<crate::stage::needs::ModelOrigin> {
        Some(crate::stage::needs::ModelOrigin::Preset { name: self.preset.clone(), context: self.context, corpus: self.corpus.clone() })
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(1), "model")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        let out = ctx.dir.join("model");
        let seed = ctx.rng("weights").next_u64();
        if let (Some(corpus), "tiny" | "small") = (&self.corpus, self.preset.as_str()) {
            let path = ctx.resolve(corpus)?;
            let pieces = crate::text::tiny_word::corpus_pieces(&path).map_err(anyhow::Error::msg)?;
            let merges = crate::text::tiny_word::learn_merges(&pieces);
            let config = crate::model::init::init_folder_with_vocab(&self.preset, &out, seed, self.context, Some(&merges))?;
            ctx.events.progress(1, Some(1), "model", None);
            let params = config.num_parameters() as f64;
            ctx.events.info(format!("initialised a {} model with {params} parameters and a {}-token vocabulary ({} corpus words, one token each) in {}", self.preset, config.vocab_size, pieces.len(), out.display()));
            return Ok(StageOutput { output: Some(out), summary: [("parameters".to_string(), params)].into(), table: None });
        }
        if let Some(corpus) = &self.corpus {
            let shape = crate::model::encoder::tiny::TinyEncoderShape { max_tokens: self.context.unwrap_or(128), ..Default::default() };
            let cfg = crate::model::encoder::tiny::init_tiny_encoder(&out, &ctx.resolve(corpus)?, shape, seed)?;
            let params = crate::model::encoder::parameter_shapes(&cfg, crate::model::encoder::Heads { pooler: false, mlm: true })
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum::<usize>() as f64;
            ctx.events.progress(1, Some(1), "model", None);
            ctx.events.info(format!("initialised a tiny encoder ({} words, {params} parameters) in {}", cfg.vocab_size, out.display()));
            return Ok(StageOutput { output: Some(out), summary: [("parameters".to_string(), params)].into(), table: None });
        }
        if self.preset == crate::model::vision::tiny::PRESET {
            let config = crate::model::vision::tiny::init_folder(&out, seed)?;
            let params = config.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>() as f64;
            ctx.events.progress(1, Some(1), "model", None);
            ctx.events.info(format!("initialised a tiny vision-language model with {params} parameters in {}", out.display()));
            return Ok(StageOutput { output: Some(out), summary: [("parameters".to_string(), params)].into(), table: None });
        }
        let config = crate::model::init::init_folder_with_context(&self.preset, &out, seed, self.context)?;
        ctx.events.progress(1, Some(1), "model", None);
        let params = config.num_parameters() as f64;
        ctx.events.info(format!("initialised a {} model with {} parameters in {}", self.preset, params, out.display()));
        Ok(StageOutput { output: Some(out), summary: [("parameters".to_string(), params)].into(), table: None })
    }
}
