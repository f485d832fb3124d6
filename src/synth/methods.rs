//! The synthesis methods the `synth` stage and `retort synth` know: one line each in
//! [`METHODS`]. The contract they implement is [`super::method`].

use super::method::{Method, MethodEnv, MethodSpec};
use super::output::Counts;
use crate::stage::Reference;
use anyhow::Result;

/// Every method.
pub const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "adaptllm",
        about: "AdaptLLM: raw domain text → reading-comprehension text with regex-mined tasks (METHODS.md §S4)",
        reads_input: true,
        check: super::adaptllm::method::check,
        references: super::adaptllm::method::references,
        build: super::adaptllm::method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "toedit",
        about: "ToEdit: resample the tokens a prior LM is sure of (p ≥ 0.99) in human text (METHODS.md §S1)",
        reads_input: true,
        check: super::toedit::method::check,
        references: super::toedit::method::references,
        build: super::toedit::method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "instruct",
        about: "Instruction Pre-Training: a synthesizer model writes instruction-response pairs about each text; texts chained over rounds, rendered into pre-training text (METHODS.md §S3)",
        reads_input: true,
        check: super::instruct::method::check,
        references: super::instruct::method::references,
        build: super::instruct::method::build,
        preflight: super::instruct::method::preflight,
    },
    MethodSpec {
        name: "tiny-domain",
        about: "the generated general and domain corpora of the adaptllm-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_domain::method::check,
        references: |_| Vec::new(),
        build: super::tiny_domain::method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-human",
        about: "a long-tailed \"human\" corpus from a Zipfian order-2 Markov source, for the toedit-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_human::check,
        references: |_| Vec::new(),
        build: super::tiny_human::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-encyclopedia",
        about: "fictional entities with known facts, rule-based QA pairs and closed-book questions, for the instruct-pt-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_encyclopedia::check,
        references: |_| Vec::new(),
        build: super::tiny_encyclopedia::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-ood",
        about: "generated text domains (recipes, legal clauses, captions, menus) and a pre-training mixture, for the diffusion-ood-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_ood::check,
        references: |_| Vec::new(),
        build: super::tiny_ood::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-uprise",
        about: "generated task families in four verbalizer styles and a demonstration-sensitive LM text, for the uprise-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_uprise::check,
        references: |_| Vec::new(),
        build: super::tiny_uprise::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "tiny-visual",
        about: "procedural 32×32 scenes of two domains with captions, seed questions (precise and informative answers) and graded test questions, for the adamllm-tiny experiment (no input)",
        reads_input: false,
        check: super::tiny_visual::check,
        references: |_| Vec::new(),
        build: super::tiny_visual::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "visual",
        about: "AdaMLLM step (B): a visual instruction synthesizer (a vision-language model) writes a task per domain image-caption pair; a consistency judge (text LM or the stand-in rule) keeps the consistent ones; single- and two-stage post-training rows (synth-spec §2.3-2.4)",
        reads_input: false,
        check: super::visual::method::check,
        references: super::visual::method::references,
        build: super::visual::method::build,
        preflight: super::visual::method::preflight,
    },
    MethodSpec {
        name: "visual-seed",
        about: "AdaMLLM step (A)'s data: seed captions, precise and informative pairs joined per image into the synthesizer's conversations, one image in ten blank, 90/10 split (synth-spec §2.2)",
        reads_input: false,
        check: super::visual::seed_method::check,
        references: super::visual::seed_method::references,
        build: super::visual::seed_method::build,
        preflight: |_| Ok(()),
    },
    MethodSpec {
        name: "sample",
        about: "documents sampled from a model (top-p 0.9 by default): synthetic text for the model-collapse experiments (no input)",
        reads_input: false,
        check: super::sample::check,
        references: super::sample::references,
        build: super::sample::build,
        preflight: |_| Ok(()),
    },
];

pub fn find(name: &str) -> Result<&'static MethodSpec, String> {
    METHODS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        format!("unknown synthesis method `{name}`; the methods are: {}", names.join(", "))
    })
}

pub fn check_options(spec: &MethodSpec, options: &toml::Table) -> Result<(), (String, String)> {
    (spec.check)(options).map_err(|(k, m)| (if k.is_empty() { "options".to_string() } else { format!("options.{k}") }, m))
}

pub fn references(method: &str, options: &toml::Table) -> Vec<Reference> {
    find(method).map(|m| (m.references)(options)).unwrap_or_default()
}

pub fn build(spec: &MethodSpec, options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    (spec.build)(options, env)
}

/// The stage's closing table: what was made, per kind, and what was skipped.
pub fn counts_table(counts: &Counts) -> String {
    let mut s = format!("documents {}  (with output: {})\n", counts.documents, counts.documents_out);
    for (file, n) in &counts.rows {
        s.push_str(&format!("  {file:<24} {n:>10} rows\n"));
    }
    if !counts.tasks.is_empty() {
        s.push_str("made:\n");
        for (kind, n) in &counts.tasks {
            s.push_str(&format!("  {kind:<24} {n:>10}\n"));
        }
    }
    if !counts.skipped.is_empty() {
        s.push_str("skipped:\n");
        for (reason, n) in &counts.skipped {
            s.push_str(&format!("  {reason:<24} {n:>10}\n"));
        }
    }
    s
}
