//! Framing (§S4.3 "Framing", `format_recomprehension`): wrap the text and its question block
//! in a summarization task, a text-completion task, both, or a plain label.
//!
//! | available                  | summarize | completion | both | neither |
//! |----------------------------|-----------|------------|------|---------|
//! | title and ≥ 2 sentences    | 0.4       | 0.1        | 0.4  | 0.1     |
//! | title only                 | 0.5       | –          | –    | 0.5     |
//! | ≥ 2 sentences only         | –         | 0.5        | –    | 0.5     |
//! | neither                    | –         | –          | –    | 1       |
//!
//! Completion cuts the sentences at `cut`, uniform in 1..=n−1: sentences before the cut are
//! the prompt, the rest the answer. Summarize either asks for a title after the text or asks
//! for the text given the title (one list of 10 + 10 templates, so each kind has p = 0.5).
//! "Both" is a completion followed by a title question. "Neither" wraps the text in a plain
//! label, the title as its first line. The question block (`qa_demos`, intro included) always
//! comes last, as in the reference.

use super::templates::{self as tpl, fill};
use super::TaskRecord;
use crate::rng::Rng;

/// The four framings, in the order of the probability table's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    Summarize,
    Completion,
    Both,
    Neither,
}

/// The framings allowed and their probabilities (§S4.3 table).
pub fn choices(has_title: bool, sentences: usize) -> &'static [(Framing, f64)] {
    use Framing::*;
    match (has_title, sentences >= 2) {
        (true, true) => &[(Summarize, 0.4), (Completion, 0.1), (Both, 0.4), (Neither, 0.1)],
        (true, false) => &[(Summarize, 0.5), (Neither, 0.5)],
        (false, true) => &[(Completion, 0.5), (Neither, 0.5)],
        (false, false) => &[(Neither, 1.0)],
    }
}

/// What the framing needs from the document.
pub struct Parts<'a> {
    pub title: Option<&'a str>,
    /// The (truncated) context, trimmed.
    pub context: &'a str,
    /// Its sentences, trailing whitespace kept.
    pub sentences: &'a [&'a str],
    /// Intro and question blocks, or empty.
    pub qa_demos: &'a str,
    pub domain: &'a str,
}

/// The framed text and the framing's own tasks (summarize, text_completion), in text order.
pub fn frame(parts: &Parts, rng: &mut Rng) -> (String, Vec<TaskRecord>) {
    let options = choices(parts.title.is_some(), parts.sentences.len());
    let weights: Vec<f64> = options.iter().map(|o| o.1).collect();
    let framing = options[rng.weighted(&weights)].0;
    let domain = parts.domain;
    let title = parts.title.unwrap_or("");
    let cut_halves = |rng: &mut Rng| {
        let n = parts.sentences.len();
        let cut = rng.range(1, n as i64 - 1) as usize;
        (parts.sentences[..cut].concat().trim().to_string(), parts.sentences[cut..].concat().trim().to_string())
    };
    let completion = |rng: &mut Rng, with_title: bool| {
        let (first, second) = cut_halves(rng);
        let (lead, ask) = tpl::COMPLETION[rng.usize(tpl::COMPLETION.len())];
        let heading = if with_title && !title.is_empty() { format!("{title}\n") } else { String::new() };
        let question = format!("{} {heading}{first}{}", fill(lead, &[("domain", domain)]), fill(ask, &[("domain", domain)]));
        let text = format!("{question} {second}");
        let task = framing_task("text_completion", "completion", vec![first, second.clone()], question, second);
        (text, task)
    };
    let title_question = |rng: &mut Rng| fill(tpl::TITLE_AFTER[rng.usize(tpl::TITLE_AFTER.len())], &[("domain", domain)]);
    let (body, tasks) = match framing {
        Framing::Summarize => {
            let k = rng.usize(tpl::TITLE_AFTER.len() + tpl::ARTICLE_FROM_TITLE.len());
            if k < tpl::TITLE_AFTER.len() {
                let question = fill(tpl::TITLE_AFTER[k], &[("domain", domain)]);
                let text = format!("{}\n\n{question} {title}", parts.context);
                (text, vec![framing_task("summarize", "title", vec![title.to_string()], question, title.to_string())])
            } else {
                let template = tpl::ARTICLE_FROM_TITLE[k - tpl::TITLE_AFTER.len()];
                let question = fill(template, &[("domain", domain), ("title", title)]);
                let text = format!("{question} {}", parts.context);
                let task = framing_task("summarize", "article", vec![title.to_string()], question, parts.context.to_string());
                (text, vec![task])
            }
        }
        Framing::Completion => {
            let (text, task) = completion(rng, true);
            (text, vec![task])
        }
        Framing::Both => {
            let (text, task) = completion(rng, false);
            let question = title_question(rng);
            let text = format!("{text}\n\n{question} {title}");
            (text, vec![task, framing_task("summarize", "title", vec![title.to_string()], question, title.to_string())])
        }
        Framing::Neither => {
            let context = match parts.title {
                Some(t) => format!("{t}\n{}", parts.context),
                None => parts.context.to_string(),
            };
            let wrapper = tpl::PLAIN[rng.usize(tpl::PLAIN.len())];
            (fill(wrapper, &[("domain", domain), ("context", &context)]), Vec::new())
        }
    };
    (format!("{body}{}", parts.qa_demos), tasks)
}

fn framing_task(r#type: &str, sub: &str, matched: Vec<String>, question: String, answer: String) -> TaskRecord {
    TaskRecord { r#type: r#type.to_string(), sub: sub.to_string(), matched, question, answer }
}

/// Runs of two or more spaces become one (the reference's `re.sub("[ ]{2,}", " ", …)`:
/// spaces only; tabs and newlines stay).
pub fn collapse_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_space = false;
    for c in text.chars() {
        if c == ' ' && previous_space {
            continue;
        }
        previous_space = c == ' ';
        out.push(c);
    }
    out
}
