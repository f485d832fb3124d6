//! The tiny-domain generator as a `synth` method that reads no input: `retort synth
//! tiny-domain --out DIR` or a `synth` stage with `method = "tiny-domain"` writes the six
//! files of the adaptllm-tiny experiment. Options: the keys of [`TinyDomainConfig`]; without
//! `seed`, the stage's seed (so `retort run adaptllm-tiny --seed 3` makes other corpora).

use super::{write, TinyDomainConfig};
use crate::stage::StageCtx;
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::Counts;
use anyhow::Result;
use std::path::Path;

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    parse_options::<TinyDomainConfig>(options).map(|_| ())
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let config: TinyDomainConfig = crate::synth::method::generator_options(options, env, |c: &mut TinyDomainConfig| &mut c.seed)?;
    Ok(Box::new(TinyDomain { config }))
}

struct TinyDomain {
    config: TinyDomainConfig,
}

impl Method for TinyDomain {
    fn files(&self) -> &'static [&'static str] {
        &["domain.jsonl", "domain_heldout.jsonl", "general.jsonl", "general_instruct.jsonl", "domain_choice.jsonl", "general_choice.jsonl"]
    }
    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        ctx.events.info(format!("generating the tiny general and domain corpora (seed {})", self.config.seed));
        let (_files, rows) = write(dir, &self.config)?;
        let mut counts = Counts::default();
        for (file, n) in rows {
            counts.rows.insert(file, n);
        }
        Ok(counts)
    }
}
