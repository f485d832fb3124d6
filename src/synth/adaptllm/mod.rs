//! AdaptLLM: raw domain text → reading-comprehension text (docs/METHODS.md §S4).
//!
//! Continued pre-training on raw domain text teaches facts but hurts prompting; AdaptLLM
//! appends to each raw text comprehension tasks mined *from that same text* with regexes.
//! [`render_document`] does this for one document, in the reference's order
//! (`adaptllm/raw2read.py`, `utils/read.py`):
//!
//! 1. **Title**: the first line, when [`AdaptOptions::titles`] is set and the document has
//!    more than one line; the context is the rest. No title → no summarization task.
//! 2. **Truncate** the context to `max_context_tokens` (1848 = 2048 − 200) tokens of the
//!    model's tokenizer: encode, keep the first ids, decode (truncate.rs).
//! 3. **Split** the context into sentences (sentences.rs, retort's own pysbd-like splitter).
//! 4. **Mine** every pattern type on the context without the title (mine.rs, the exact §S4.3
//!    patterns with `findall` semantics), then the keyword task on the sentences when a
//!    domain vocabulary is given (keywords.rs).
//! 5. **Cap**: each sub-category's examples are shuffled with a stream from the document
//!    seed and at most `max_per_subcategory` (2) are kept. Each example becomes a question
//!    and an answer from a template drawn per document (tasks.rs, templates.rs); the tasks of
//!    one type form a block, joined by blank lines, like few-shot demonstrations.
//! 6. **Order**: the type blocks are shuffled; an intro (one of 18, `{domain}` filled) joins
//!    them to the text.
//! 7. **Frame** text and blocks with summarization and/or completion, or a plain label, with
//!    the §S4.3 probabilities (framing.rs).
//! 8. **Collapse** runs of spaces into one.
//!
//! Every draw comes from [`document_seed`] through labelled streams (`crate::rng`), so a
//! document renders the same in every run with the same run seed, whatever other documents
//! do. The reference's Python seeds (`Random(text_id)`, `np.random.seed`) cannot be matched;
//! the probabilities and caps are (§S4.7).

mod framing;
mod keywords;
pub mod method;
pub mod mine;
mod sentences;
mod tasks;
mod templates;
mod truncate;

#[cfg(test)]
mod tests;

pub use framing::{collapse_spaces, Framing};
pub use keywords::{is_domain_specific, DomainVocab, WordVocab};
pub use mine::{mine, mine_with, Family, Mined};
pub use sentences::split as split_sentences;
pub use truncate::{TokenBudget, WordBudget};

use crate::rng::Rng;
use crate::text::Message;
use serde::{Deserialize, Serialize};

/// The knobs of the method; the defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptOptions {
    /// Filled into intros and templates ("biomedicine", "finance", "law", …).
    pub domain: String,
    /// Context budget in tokens of the model's tokenizer (`max_seq_len − 200`).
    pub max_context_tokens: usize,
    /// Examples kept per sub-category (`max_subcategory_num`).
    pub max_per_subcategory: usize,
    /// The first line of each document is its title (as in the reference's inputs).
    pub titles: bool,
    /// Escape the dots of `i.e.` in the similar-paraphrase pattern. The reference leaves them
    /// unescaped, so "ixey," also matches; `false` keeps that for parity.
    pub fix_ie_quirk: bool,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        AdaptOptions {
            domain: "biomedicine".to_string(),
            max_context_tokens: 1848,
            max_per_subcategory: 2,
            titles: true,
            fix_ie_quirk: false,
        }
    }
}

/// One task of a rendered document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// nli, common_reason, paraphrase, word2text, summarize, text_completion.
    pub r#type: String,
    /// entail, contradict, neutral, cause_effect, effect_cause, similar, different,
    /// definition, topic, keywords; title or article (summarize); completion.
    pub sub: String,
    /// The matched sentences or spans (premise and hypothesis, word and definition, …).
    pub matched: Vec<String>,
    pub question: String,
    pub answer: String,
}

/// A rendered document.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Rendered {
    /// The reading-comprehension text (empty for an empty document).
    pub text: String,
    /// The mined tasks as a chat: the context (title line first) and the first question in
    /// the first user turn, then alternating answers and questions. Empty without mined
    /// tasks. The framing tasks (summarize, completion) restate the context itself, so they
    /// stay in `text` only.
    pub chat: Vec<Message>,
    /// Framing tasks first, then the mined tasks in the order the text shows them.
    pub tasks: Vec<TaskRecord>,
}

/// The seed of one document: the run seed and a stable id (a path and line, a row number).
pub fn document_seed(run_seed: u64, doc_id: &str) -> u64 {
    Rng::derive(run_seed, &format!("adaptllm/doc/{doc_id}")).next_u64()
}

/// The task types in the reference's `TYPES` order (the block order before the shuffle).
const TYPES: [Family; 4] = [Family::Nli, Family::CommonReason, Family::Paraphrase, Family::Word2Text];

/// Steps 1–8 of the module comment for one document, without keyword tasks.
pub fn render_document(text: &str, doc_seed: u64, opts: &AdaptOptions, budget: &dyn TokenBudget) -> Rendered {
    render_document_with(text, doc_seed, opts, budget, None)
}

/// [`render_document`], with keyword tasks when a domain vocabulary is given.
pub fn render_document_with(
    text: &str,
    doc_seed: u64,
    opts: &AdaptOptions,
    budget: &dyn TokenBudget,
    vocab: Option<&dyn DomainVocab>,
) -> Rendered {
    let stream = |label: &str| Rng::derive(doc_seed, label);
    if text.trim().is_empty() {
        return Rendered::default();
    }

    // 1. Title.
    let (title, raw_context) = split_title(text, opts.titles);
    // 2. Truncate.
    let truncated = budget.truncate(raw_context, opts.max_context_tokens);
    // 3. Sentences; the context as the framing shows it is their concatenation, trimmed.
    let sentences = sentences::split(&truncated);
    let context = truncated.trim();

    // 4. Mine, grouped by sub-category in rule order.
    let mut by_sub: Vec<(Family, &'static str, Vec<Mined>)> = Vec::new();
    for m in mine::mine_with(&truncated, opts.fix_ie_quirk) {
        match by_sub.iter_mut().find(|(_, sub, _)| *sub == m.sub) {
            Some(group) => group.2.push(m),
            None => by_sub.push((m.family, m.sub, vec![m])),
        }
    }

    // 5. Cap each sub-category and render its tasks; one block a type.
    let nli_family = tasks::NliFamily::draw(&mut stream("nli-family"));
    let mut blocks: Vec<Vec<TaskRecord>> = Vec::new();
    for family in TYPES {
        let mut block = Vec::new();
        for (_, sub, examples) in by_sub.iter_mut().filter(|(f, _, _)| *f == family) {
            // A fresh stream per sub-category, as the reference reseeds per sub-category.
            stream("cap").shuffle(examples);
            let mut templates = stream(&format!("template/{sub}"));
            for m in examples.iter().take(opts.max_per_subcategory) {
                block.push(tasks::from_mined(m, nli_family, &opts.domain, &mut templates));
            }
        }
        if family == Family::Word2Text {
            if let Some(vocab) = vocab {
                let picked = keywords::collect(&sentences, vocab, &mut stream("keywords"));
                let mut templates = stream("template/keywords");
                for k in picked.iter().take(opts.max_per_subcategory) {
                    block.push(tasks::from_keywords(k, &opts.domain, &mut templates));
                }
            }
        }
        if !block.is_empty() {
            blocks.push(block);
        }
    }

    // 6. Shuffle the blocks; intro.
    stream("blocks").shuffle(&mut blocks);
    let qa_demos = if blocks.is_empty() {
        String::new()
    } else {
        let intro = templates::INTROS[stream("intro").usize(templates::INTROS.len())];
        let rendered: Vec<String> = blocks
            .iter()
            .map(|b| b.iter().map(|t| format!("{} {}", t.question, t.answer)).collect::<Vec<_>>().join("\n\n"))
            .collect();
        format!("{}{}", templates::fill(intro, &[("domain", &opts.domain)]), rendered.join("\n\n"))
    };

    // 7. Frame.
    let parts = framing::Parts { title, context, sentences: &sentences, qa_demos: &qa_demos, domain: &opts.domain };
    let (framed, framing_tasks) = framing::frame(&parts, &mut stream("framing"));

    // 8. Collapse spaces, in the text and in the tasks that restate it.
    let mined: Vec<TaskRecord> = blocks.into_iter().flatten().map(collapse_task).collect();
    let chat = chat_turns(title, context, &mined);
    let mut all: Vec<TaskRecord> = framing_tasks.into_iter().map(collapse_task).collect();
    all.extend(mined);
    Rendered { text: collapse_spaces(&framed), chat, tasks: all }
}

/// The title (first line, trimmed, when titles are on and a non-empty rest follows) and the
/// context. A one-line document has no title: its line is the context.
fn split_title(text: &str, titles: bool) -> (Option<&str>, &str) {
    let text = text.trim_start();
    if !titles {
        return (None, text);
    }
    match text.split_once('\n') {
        Some((first, rest)) if !first.trim().is_empty() && !rest.trim().is_empty() => (Some(first.trim()), rest),
        _ => (None, text),
    }
}

fn collapse_task(t: TaskRecord) -> TaskRecord {
    TaskRecord {
        question: collapse_spaces(&t.question),
        answer: collapse_spaces(&t.answer),
        matched: t.matched.iter().map(|m| collapse_spaces(m)).collect(),
        ..t
    }
}

/// The chat form of the mined tasks (see [`Rendered::chat`]).
fn chat_turns(title: Option<&str>, context: &str, mined: &[TaskRecord]) -> Vec<Message> {
    let Some(first) = mined.first() else { return Vec::new() };
    let article = match title {
        Some(t) => format!("{t}\n{context}"),
        None => context.to_string(),
    };
    let mut chat = vec![Message::user(collapse_spaces(&format!("{article}\n\n{}", first.question))), Message::assistant(first.answer.clone())];
    for t in &mined[1..] {
        chat.push(Message::user(t.question.clone()));
        chat.push(Message::assistant(t.answer.clone()));
    }
    chat
}
