//! AdaptLLM as a `synth` method: each document of the corpus becomes one reading-comprehension
//! text (`data.jsonl`, `{"text"}` rows for continued pre-training), the same tasks as a chat
//! (`chat.jsonl`, `{"messages"}` rows, for documents with at least one task) and the mined
//! tasks themselves for auditing (`tasks.jsonl`, one row a task, with the document's origin).
//!
//! Options: every [`AdaptOptions`] key, plus `tokenizer`: a model folder (or `@stage`) whose
//! tokenizer measures the context budget (`max_context_tokens`), as the reference truncates
//! with LLaMA's tokenizer. Without it the budget counts whitespace-separated words, and the
//! stage says so.

use super::{document_seed, render_document, AdaptOptions, TokenBudget, WordBudget};
use crate::stage::{refs, Artifact, Reference};
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::SynthOutput;
use crate::text::corpus::Document;
use crate::text::{Message, Tokenizer};
use anyhow::{Context, Result};
use serde::Serialize;

/// The option naming the budget's tokenizer; the rest of the table is [`AdaptOptions`].
const TOKENIZER_KEY: &str = "tokenizer";

fn split_options(options: &toml::Table) -> (Option<String>, toml::Table) {
    let mut rest = options.clone();
    let tokenizer = rest.remove(TOKENIZER_KEY).and_then(|v| v.as_str().map(str::to_string));
    (tokenizer, rest)
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    if let Some(v) = options.get(TOKENIZER_KEY) {
        if !v.is_str() {
            return Err((TOKENIZER_KEY.into(), "must be a model folder or `@stage` (a string)".into()));
        }
    }
    let (_, rest) = split_options(options);
    let opts: AdaptOptions = parse_options(&rest)?;
    if opts.max_context_tokens == 0 {
        return Err(("max_context_tokens".into(), "must be at least 1 token".into()));
    }
    Ok(())
}

pub fn references(options: &toml::Table) -> Vec<Reference> {
    let (tokenizer, _) = split_options(options);
    refs(Artifact::Model, [("options.tokenizer", tokenizer.as_deref())])
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let (tokenizer, rest) = split_options(options);
    let opts: AdaptOptions = parse_options(&rest).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    let budget: Box<dyn TokenBudget> = match tokenizer {
        Some(t) => {
            let dir = if t.starts_with('@') { env.resolve(&t)? } else { std::path::PathBuf::from(&t) };
            Box::new(Tokenizer::load(&dir).with_context(|| format!("options.tokenizer: loading the tokenizer of {}", dir.display()))?)
        }
        None => Box::new(WordBudget),
    };
    Ok(Box::new(AdaptLlm { opts, budget, run_seed: env.seed }))
}

struct AdaptLlm {
    opts: AdaptOptions,
    budget: Box<dyn TokenBudget>,
    run_seed: u64,
}

#[derive(Serialize)]
struct TextRow<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct ChatRow<'a> {
    messages: &'a [Message],
}

#[derive(Serialize)]
struct TaskRow<'a, T: Serialize> {
    origin: &'a str,
    #[serde(flatten)]
    task: &'a T,
}

impl AdaptLlm {
    fn render(&self, doc: &Document) -> super::Rendered {
        // The seed follows the document's place in the corpus, so a resumed run and a run
        // over the same corpus render every document the same way.
        let seed = document_seed(self.run_seed, &doc.id.to_string());
        render_document(&doc.text, seed, &self.opts, self.budget.as_ref())
    }
}

impl Method for AdaptLlm {
    fn files(&self) -> &'static [&'static str] {
        &["data.jsonl", "chat.jsonl", "tasks.jsonl"]
    }

    fn process(&mut self, doc: &Document, out: &mut SynthOutput) -> Result<()> {
        let rendered = self.render(doc);
        out.write_row("data.jsonl", &TextRow { text: &rendered.text })?;
        if !rendered.chat.is_empty() {
            out.write_row("chat.jsonl", &ChatRow { messages: &rendered.chat })?;
        }
        for task in &rendered.tasks {
            out.write_row("tasks.jsonl", &TaskRow { origin: &doc.origin, task })?;
            out.counts.add_task(&format!("{}/{}", task.r#type, task.sub));
        }
        // A document without a mined task still gives its (framed) raw text; "with output"
        // counts the documents that gave tasks.
        if !rendered.tasks.is_empty() {
            out.counts.documents_out += 1;
        }
        Ok(())
    }

    fn preview(&mut self, doc: &Document) -> Result<String> {
        let rendered = self.render(doc);
        let mut s = format!("{} — {} task(s) mined\n", doc.origin, rendered.tasks.len());
        for (i, t) in rendered.tasks.iter().enumerate() {
            s.push_str(&format!("\n[{}] {}/{}\n", i + 1, t.r#type, t.sub));
            for m in &t.matched {
                s.push_str(&format!("  matched: {m}\n"));
            }
            s.push_str(&format!("  Q: {}\n  A: {}\n", t.question, t.answer));
        }
        s.push_str("\n--- reading-comprehension text ---\n");
        s.push_str(&rendered.text);
        Ok(s)
    }
}
