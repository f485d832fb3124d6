//! AdaMLLM step (B), the consistency judge at work (synth-spec §2.3 items 5–6): either a
//! text-only LM given [`consistency_prompt`] (greedy, two new tokens, the label being the
//! output stripped and lower-cased), or the documented stand-in rule [`rule_label`] for where
//! no LM can judge (`checker = "rule"`: the precise answer appears, in whole words, in the
//! informative one).

use super::filter::{consistency_prompt, rule_label, Label};
use super::parse::Triplet;
use crate::generate::{generate, SamplingParams};
use crate::model::Model;
use crate::rng::Rng;
use crate::text::{model_eos_ids, Tokenizer};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The value of `checker` that selects the stand-in rule.
pub const RULE: &str = "rule";

/// New tokens the judge may write (the reference's `max_tokens`).
const JUDGE_TOKENS: usize = 2;

pub enum Checker {
    Rule,
    Lm { model: Model, tok: Tokenizer, eos: Vec<u32> },
}

impl Checker {
    /// `"rule"`, or a text-only model folder.
    pub fn load(spec: &str, dir: &Path, device: &candle_core::Device) -> Result<Checker> {
        if spec == RULE {
            return Ok(Checker::Rule);
        }
        if !dir.join("config.json").is_file() {
            bail!("the checker {} is not a model folder (no config.json there); give a text-only LM folder, or `rule` for the stand-in rule", dir.display());
        }
        if crate::model::vision::is_vlm_folder(dir) {
            bail!("the checker {} is a vision-language model; the consistency judge is a text-only LM (the reference uses Llama-3-8B base), or `rule`", dir.display());
        }
        let model = Model::load(dir, device, crate::device::resolve_dtype(None, device), false).with_context(|| format!("loading the checker {}", dir.display()))?;
        let eos = model_eos_ids(dir).with_context(|| format!("the checker {}", dir.display()))?;
        let tok = Tokenizer::load(dir).with_context(|| format!("the checker's tokenizer in {}", dir.display()))?.with_model_eos(&eos);
        Ok(Checker::Lm { model, tok, eos })
    }

    /// The label of each triplet and what the judge wrote (`"rule"` for the rule).
    pub fn judge(&self, triplets: &[&Triplet]) -> Result<Vec<(Label, String)>> {
        let (model, tok, eos) = match self {
            Checker::Rule => return Ok(triplets.iter().map(|t| (rule_label(t), RULE.to_string())).collect()),
            Checker::Lm { model, tok, eos } => (model, tok, eos),
        };
        if triplets.is_empty() {
            return Ok(Vec::new());
        }
        let prompts = triplets.iter().map(|t| tok.encode(&consistency_prompt(t), true)).collect::<std::result::Result<Vec<_>, _>>()?;
        let context = model.config.max_position_embeddings;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest + JUDGE_TOKENS > context {
            bail!("the consistency prompt (six worked examples and the task) is {longest} tokens, too long for the checker's context of {context}; use a checker with a longer context, or `checker = \"rule\"`");
        }
        let params = SamplingParams { greedy: true, max_new_tokens: JUDGE_TOKENS, stop_token_ids: eos.clone(), ..SamplingParams::default() };
        let out = generate(&model.decoder, &prompts, &params, &mut Rng::new(0), None)?;
        out.iter()
            .map(|c| {
                let text = tok.decode(&c.tokens, true)?;
                Ok((Label::parse(&text), text))
            })
            .collect()
    }
}
