//! Rendering chains into pre-training text (synth-spec §3.4, the reference's
//! `cook_pt_entries`), with a pattern bank in retort's own words, much smaller than the
//! reference's FLAN-derived one but of the same structure.
//!
//! - **One format per chain.** Every draw comes from the chain's seed through labelled
//!   streams (`crate::rng`), and the same label gives the same draw for every document of the
//!   chain: one QA pattern from each of four pools (plain, with options, with reasoning, with
//!   both), one option style (start string, item names such as `(A)`, `a.`, `1)`, roman
//!   numerals or bullets, item end, a "none of these" string), one few-shot separator.
//! - **Documents.** A chain is cut into runs: an entry without `inherit_from_prev` starts a
//!   new run. Each run is one few-shot document; its entries are joined with the separator
//!   of a plain QA pattern drawn from its own stream (the reference: seed + 1). An entry with
//!   no renderable pair is emitted alone as its raw text.
//! - **Pairs.** A pair is rendered by its form (format.rs): plain, multiple choice (options
//!   shuffled per pair; the answer becomes the option's label when labels are distinct),
//!   chain of thought (the target shows the reasoning, then the answer), or both. Pairs that
//!   break a convention are dropped, and counted.
//! - **Reading-comprehension mode**, per document: `Classic` 95 / `Dialog` 5; when every
//!   entry of the document has at least 2 pairs, `Classic` 80 / `Dialog` 5 /
//!   `NumberedQuestions` 5 / `InlineFewShot` 5 / `NextTurnDialog` 5. Independently, with
//!   weight 5 / 95, Classic and Dialog are *inverted*: the pairs come first, then the text.
//!   - Classic: a read start (half the time just the text), a read end (`" "`, `"\n"`,
//!     `"\n\n"`; dropped when the comprehension start is empty), a comprehension start (half
//!     the time empty), the pattern's separator, then the pairs.
//!   - Dialog: the text, a dialog heading, then the pairs as turns of two speakers.
//!   - NumberedQuestions: all questions numbered, then all answers.
//!   - InlineFewShot: all pairs but the last as worked examples (with their reasoning as the
//!     explanation when every pair has one), the last as the task.
//!   - NextTurnDialog: the pairs but the last as a dialog, the last as its next turn.

use super::chain::Entry;
use super::format::{Form, FormError};
use crate::rng::Rng;

/// How a document presents its text and pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RcMode {
    Classic,
    Dialog,
    NumberedQuestions,
    InlineFewShot,
    NextTurnDialog,
}

impl RcMode {
    pub fn name(self) -> &'static str {
        match self {
            RcMode::Classic => "classic",
            RcMode::Dialog => "dialog",
            RcMode::NumberedQuestions => "numbered_questions",
            RcMode::InlineFewShot => "inline_fs",
            RcMode::NextTurnDialog => "next_turn_dialog",
        }
    }
}

/// One pre-training document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    /// Ids of the texts it holds, in order.
    pub source_ids: Vec<usize>,
    /// `None` for a raw text emitted without pairs.
    pub rc_mode: Option<RcMode>,
    /// Pairs placed before the text.
    pub inverted: bool,
    pub n_pairs: usize,
}

/// The documents of one chain and the pairs left out because their form is broken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub documents: Vec<Document>,
    pub dropped: Vec<FormError>,
}

/// The seed of chain `index` in a run (the reference uses `index + 12345`).
pub fn chain_seed(run_seed: u64, index: usize) -> u64 {
    run_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64 + 12345)
}

// ------------------------------------------------------------------ the pattern bank

/// A question/answer layout: `input_prefix + input + between + target_prefix + target`;
/// consecutive pairs are joined by `separator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QaPattern {
    pub input: &'static str,
    pub target: &'static str,
    pub input_prefix: &'static str,
    pub target_prefix: &'static str,
    pub between: &'static str,
    pub separator: &'static str,
}

const fn qp(
    input_prefix: &'static str,
    input: &'static str,
    between: &'static str,
    target_prefix: &'static str,
    target: &'static str,
    separator: &'static str,
) -> QaPattern {
    QaPattern {
        input,
        target,
        input_prefix,
        target_prefix,
        between,
        separator,
    }
}

const PLAIN: &[QaPattern] = &[
    qp(
        "Question: ",
        "{question}",
        "\n",
        "Answer: ",
        "{answer}",
        "\n\n",
    ),
    qp("Q: ", "{question}", " ", "A: ", "{answer}", "\n\n"),
    qp("", "{question}", "\n", "Reply: ", "{answer}", "\n\n\n"),
    qp(
        "Query: ",
        "{question}",
        "\n\n",
        "Response: ",
        "{answer}",
        "\n\n",
    ),
    qp(
        "",
        "Respond to this: {question}",
        " ",
        "",
        "{answer}",
        "\n\n\n",
    ),
    qp("Ask: ", "{question}", "\n", "Tell: ", "{answer}", "\n"),
    qp(
        "Prompt: ",
        "{question}",
        "\n---\n",
        "Result: ",
        "{answer}",
        "\n\n",
    ),
    qp(
        "",
        "{question}\nWhat would you say?",
        "\n\n",
        "",
        "{answer}",
        "\n\n\n",
    ),
    qp(
        "question: ",
        "{question}",
        "\n",
        "answer: ",
        "{answer}",
        "\n",
    ),
    qp(
        "Puzzle: ",
        "Work this out. {question}",
        "\n\n",
        "Solution: ",
        "{answer}",
        "\n\n",
    ),
];

/// Multiple choice; the last two leave the options out and keep the answer's text.
const WITH_OPTIONS: &[QaPattern] = &[
    qp(
        "Question: ",
        "{question}\n{options}",
        "\n",
        "Answer: ",
        "{option_answer}",
        "\n\n",
    ),
    qp(
        "Q: ",
        "{question} {options}",
        "\n",
        "A: ",
        "{option_answer}",
        "\n\n",
    ),
    qp(
        "",
        "Pick the right one. {question}\n{options}",
        "\n\n",
        "Pick: ",
        "{option_answer}",
        "\n\n\n",
    ),
    qp(
        "Item: ",
        "{question}\n\n{options}",
        "\n",
        "Key: ",
        "{option_answer}",
        "\n\n",
    ),
    qp(
        "Question: ",
        "{question}",
        "\n",
        "Answer: ",
        "{answer}",
        "\n\n",
    ),
    qp("", "{question}", " ", "", "{answer}", "\n\n\n"),
];

const WITH_REASONING: &[QaPattern] = &[
    qp(
        "Question: ",
        "{question}",
        "\n",
        "Answer: ",
        "{cot}. So it is {answer}",
        "\n\n",
    ),
    qp(
        "Q: ",
        "{question} Reason it out first.",
        "\n",
        "A: ",
        "{cot}. Hence: {answer}",
        "\n\n",
    ),
    qp(
        "",
        "{question}\nExplain, then answer.",
        "\n\n",
        "",
        "{cot}.\nFinal: {answer}",
        "\n\n\n",
    ),
    qp(
        "Problem: ",
        "{question}",
        "\n",
        "Working: ",
        "{cot}. The result is {answer}",
        "\n\n",
    ),
];

const WITH_OPTIONS_AND_REASONING: &[QaPattern] = &[
    qp(
        "Question: ",
        "{question}\n{options}",
        "\n",
        "Answer: ",
        "{cot}. So it is {option_answer}",
        "\n\n",
    ),
    qp(
        "Q: ",
        "{question} {options}\nThink first.",
        "\n",
        "A: ",
        "{cot}. Hence: {option_answer}",
        "\n\n",
    ),
    qp(
        "",
        "{question}\n{options}",
        "\n\n",
        "Reasoning: ",
        "{cot}.\nChoice: {option_answer}",
        "\n\n\n",
    ),
];

const OPTION_STARTS: &[&str] = &[
    "",
    "Choices:",
    "Pick one of:",
    "Candidates:",
    "Possible replies:",
    "Select among:",
];
const OPTION_ENDS: &[&str] = &["", ";"];
const NONE_FITS: &[&str] = &[
    "None of these",
    "No listed choice fits",
    "None of the candidates",
    "none of them",
];

/// How options are itemized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemNames {
    /// `\n(A) `
    UpperParen,
    /// ` a. `
    LowerDot,
    /// `\n1) `
    NumberParen,
    /// `\nI. `
    Roman,
    /// `\n- ` (not distinct: the answer stays text)
    Dash,
    /// ` * ` (not distinct)
    Star,
}

const ITEM_NAMES: &[ItemNames] = &[
    ItemNames::UpperParen,
    ItemNames::LowerDot,
    ItemNames::NumberParen,
    ItemNames::Roman,
    ItemNames::Dash,
    ItemNames::Star,
];

fn roman(n: usize) -> String {
    const TABLE: [(usize, &str); 9] = [
        (100, "C"),
        (90, "XC"),
        (50, "L"),
        (40, "XL"),
        (10, "X"),
        (9, "IX"),
        (5, "V"),
        (4, "IV"),
        (1, "I"),
    ];
    let mut n = n;
    let mut s = String::new();
    for (value, numeral) in TABLE {
        while n >= value {
            s.push_str(numeral);
            n -= value;
        }
    }
    s
}

fn letter(i: usize, base: u8) -> String {
    if i < 26 {
        ((base + i as u8) as char).to_string()
    } else {
        (i + 1).to_string()
    }
}

impl ItemNames {
    /// The item name of option `i` (0-based), with its surrounding whitespace.
    pub fn name(self, i: usize) -> String {
        match self {
            ItemNames::UpperParen => format!("\n({}) ", letter(i, b'A')),
            ItemNames::LowerDot => format!(" {}. ", letter(i, b'a')),
            ItemNames::NumberParen => format!("\n{}) ", i + 1),
            ItemNames::Roman => format!("\n{}. ", roman(i + 1)),
            ItemNames::Dash => "\n- ".to_string(),
            ItemNames::Star => " * ".to_string(),
        }
    }

    pub fn distinct(self) -> bool {
        !matches!(self, ItemNames::Dash | ItemNames::Star)
    }
}

const READ_STARTS: &[&str] = &[
    "{context}",
    "{context}",
    "{context}",
    "Go through the passage below, then take the quiz that follows.\n{context}",
    "Passage:\n{context}",
    "Here is something to read:\n\n{context}",
];
const READ_ENDS: &[&str] = &[" ", "\n", "\n\n"];
const COMPRE_STARTS: &[&str] = &[
    "",
    "",
    "",
    "Now some questions about it:",
    "Check what you took in:",
    "Questions on the passage above:",
];

const QA_STARTS: &[&str] = &[
    "{demos}",
    "Questions and answers first; a text they come from follows.\n{demos}",
    "Study these exchanges:\n\n{demos}",
    "Quiz: {demos}",
];
const QA_ENDS: &[&str] = &[" ", "\n", "\n\n", "\n\n\n"];
const TEXT_STARTS: &[&str] = &[
    "{context}",
    "A passage these answers could come from:\n{context}",
    "Now the source text.\n\n{context}",
    "Write the matching passage.\nPassage: {context}",
];

const DIALOG_LEADS: &[&str] = &["\n\n", "\n", " ", " | "];
const DIALOG_HEADINGS: &[&str] = &[
    "",
    "Conversation:",
    "Chat log:",
    "Two people talk:",
    "Transcript:",
];
const SPEAKERS: &[(&str, &str)] = &[
    ("\nAsker: ", "\nAnswerer: "),
    ("\nP1: ", "\nP2: "),
    ("\n- ", "\n- "),
    ("\nUser A) ", "\nUser B) "),
    ("\nStudent: ", "\nTutor: "),
];
const DIALOG_ENDS: &[&str] = &["", ";", "."];
const DIALOG_SEPARATORS: &[&str] = &["", "\n"];
const NEXT_TURN: &[&str] = &[
    "\n\n{dialog}\n\nContinue the exchange with one more turn.{answer}",
    "\n{dialog}\nWhat is said next?\n{answer}",
    "\n\nDialog so far:{dialog}\n\nNext turn:{answer}",
];

const NUMBERED: &[&str] = &[
    "{context}\n\nAnswer each question.{questions}\n\nAnswers:{answers}",
    "Read:\n{context}\n\nQuestions:{questions}\nAnswers, in order:{answers}",
    "{context}\nQuiz{questions}\n\nKey{answers}",
];
const NUMBER_NAMES: &[ItemNames] = &[
    ItemNames::NumberParen,
    ItemNames::Roman,
    ItemNames::UpperParen,
];
const NUMBER_ENDS: &[&str] = &["", ";"];

/// Worked examples then a task: `context` holds `{context}`; each example is
/// `example_input + example_output + separator`; the task is `task_input + task_output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlinePattern {
    pub context: &'static str,
    pub example_input: &'static str,
    pub example_output: &'static str,
    pub explained_output: &'static str,
    pub task_input: &'static str,
    pub task_output: &'static str,
    pub separator: &'static str,
}

const INLINE: &[InlinePattern] = &[
    InlinePattern {
        context: "Background: {context}\nWorked examples follow.\n",
        example_input: "Example: {input}",
        example_output: "\nResult: {output}",
        explained_output: "\nResult: {output}\nBecause: {explanation}",
        task_input: "Your turn: {input}",
        task_output: "\nResult: {output}",
        separator: "\n\n",
    },
    InlinePattern {
        context: "{context}\n\n",
        example_input: "Sample task: {input}",
        example_output: "\nSample answer: {output}",
        explained_output: "\nSample answer: {output}\nWhy: {explanation}",
        task_input: "New task: {input}",
        task_output: "\nAnswer: {output}",
        separator: "\n",
    },
    InlinePattern {
        context: "Read this first.\n{context}\nSee how it is done:\n",
        example_input: "{input}",
        example_output: " => {output}",
        explained_output: " => {output} ({explanation})",
        task_input: "Now: {input}",
        task_output: " => {output}",
        separator: "\n\n",
    },
];

// ------------------------------------------------------------------ choices per chain

/// The format drawn for a chain: shared by all its documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Style {
    pub plain: QaPattern,
    pub options: QaPattern,
    pub reasoning: QaPattern,
    pub options_reasoning: QaPattern,
    pub option_start: &'static str,
    pub item_names: ItemNames,
    pub item_end: &'static str,
    pub none_fits: &'static str,
    /// Joins the entries of a few-shot document.
    pub document_separator: &'static str,
}

fn pick<T: Copy>(seed: u64, label: &str, pool: &[T]) -> T {
    pool[Rng::derive(seed, label).usize(pool.len())]
}

impl Style {
    pub fn draw(seed: u64) -> Style {
        Style {
            plain: pick(seed, "qa-plain", PLAIN),
            options: pick(seed, "qa-options", WITH_OPTIONS),
            reasoning: pick(seed, "qa-reasoning", WITH_REASONING),
            options_reasoning: pick(seed, "qa-options-reasoning", WITH_OPTIONS_AND_REASONING),
            option_start: pick(seed, "option-start", OPTION_STARTS),
            item_names: pick(seed, "option-names", ITEM_NAMES),
            item_end: pick(seed, "option-end", OPTION_ENDS),
            none_fits: pick(seed, "none-fits", NONE_FITS),
            document_separator: pick(seed, "document-separator", PLAIN).separator,
        }
    }

    fn pattern(&self, form: &Form) -> QaPattern {
        match (form.options.is_some(), form.reasoning.is_some()) {
            (false, false) => self.plain,
            (true, false) => self.options,
            (false, true) => self.reasoning,
            (true, true) => self.options_reasoning,
        }
    }
}

/// One question–answer pair as a (question, answer) chat turn, the way AdaMLLM renders its
/// filtered tasks (synth-spec §2.3 item 7, the reference's `qa` and `qa_w_cot` pools): a
/// pattern of the plain pool, or of the with-reasoning pool when `cot` is given, chosen by
/// `seed`, its input and target filled with the question, answer and reasoning.
pub fn render_qa_turn(question: &str, answer: &str, cot: Option<&str>, seed: u64) -> (String, String) {
    let pool = if cot.is_some() { WITH_REASONING } else { PLAIN };
    let p = pool[Rng::new(seed).usize(pool.len())];
    let slots = [("question", question), ("answer", answer), ("cot", cot.unwrap_or(""))];
    (fill(p.input, &slots), fill(p.target, &slots))
}

/// Replaces each `{name}` of `slots` in one pass; values are not scanned again.
fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        for (name, value) in slots {
            let key = format!("{{{name}}}");
            if after.starts_with(&key) {
                out.push_str(value);
                rest = &after[key.len()..];
                continue 'scan;
            }
        }
        out.push('{');
        rest = &after[1..];
    }
    out.push_str(rest);
    out
}

/// The option list and the answer as rendered: items in `order` (a permutation of the
/// option indices), the answer as the chosen item's label when labels are distinct, its text
/// otherwise, or the style's "none fits" string.
pub fn format_options(
    items: &[String],
    correct: Option<usize>,
    order: &[usize],
    style: &Style,
) -> (String, String) {
    let mut list = style.option_start.to_string();
    let mut answer = style.none_fits.to_string();
    for (slot, &i) in order.iter().enumerate() {
        let name = style.item_names.name(slot);
        list.push_str(&format!("{name}{}{}", items[i], style.item_end));
        if correct == Some(i) {
            answer = if style.item_names.distinct() {
                name.trim().to_string()
            } else {
                items[i].trim().to_string()
            };
        }
    }
    (list.trim_start().to_string(), answer)
}

/// A pair ready to render: its pattern and slot values.
struct Slots {
    pattern: QaPattern,
    question: String,
    answer: String,
    options: String,
    option_answer: String,
    cot: Option<String>,
}

impl Slots {
    fn list(&self) -> Vec<(&str, &str)> {
        vec![
            ("question", self.question.as_str()),
            ("answer", self.answer.as_str()),
            ("options", self.options.as_str()),
            ("option_answer", self.option_answer.as_str()),
            ("cot", self.cot.as_deref().unwrap_or("")),
        ]
    }

    fn input_with(&self, p: &QaPattern) -> String {
        fill(p.input, &self.list())
    }

    fn target_with(&self, p: &QaPattern) -> String {
        fill(p.target, &self.list())
    }

    fn render_with(&self, p: &QaPattern) -> String {
        format!(
            "{}{}{}{}{}",
            p.input_prefix,
            self.input_with(p),
            p.between,
            p.target_prefix,
            self.target_with(p)
        )
    }
}

fn slots(form: &Form, style: &Style, seed: u64) -> Slots {
    let (options, option_answer) = match &form.options {
        Some(o) => {
            let mut order: Vec<usize> = (0..o.items.len()).collect();
            Rng::derive(seed, "option-order").shuffle(&mut order);
            format_options(&o.items, o.correct, &order, style)
        }
        None => (String::new(), String::new()),
    };
    Slots {
        pattern: style.pattern(form),
        question: form.question.clone(),
        answer: form.answer.clone(),
        options,
        option_answer,
        cot: form.reasoning.clone(),
    }
}

// ------------------------------------------------------------------ documents

/// The per-document layout: mode, inversion and the strings of that mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub mode: RcMode,
    pub inverted: bool,
    pub read_start: &'static str,
    pub read_end: &'static str,
    pub compre_start: &'static str,
    pub qa_start: &'static str,
    pub qa_end: &'static str,
    pub text_start: &'static str,
    pub dialog_start: String,
    pub speakers: (&'static str, &'static str),
    pub dialog_end: &'static str,
    pub dialog_separator: &'static str,
    pub next_turn: &'static str,
    pub numbered: &'static str,
    pub number_names: ItemNames,
    pub number_end: &'static str,
    pub inline: InlinePattern,
}

impl Layout {
    /// Draws the layout of a document whose entries have at least `min_pairs` pairs each.
    pub fn draw(seed: u64, min_pairs: usize) -> Layout {
        let (modes, weights): (&[RcMode], &[f64]) = if min_pairs >= 2 {
            (
                &[
                    RcMode::Classic,
                    RcMode::Dialog,
                    RcMode::NumberedQuestions,
                    RcMode::InlineFewShot,
                    RcMode::NextTurnDialog,
                ],
                &[80.0, 5.0, 5.0, 5.0, 5.0],
            )
        } else {
            (&[RcMode::Classic, RcMode::Dialog], &[95.0, 5.0])
        };
        let mode = modes[Rng::derive(seed, "rc-mode").weighted(weights)];
        let inverted = Rng::derive(seed, "rc-inversion").weighted(&[5.0, 95.0]) == 0;
        Layout {
            mode,
            inverted,
            read_start: pick(seed, "read-start", READ_STARTS),
            read_end: pick(seed, "read-end", READ_ENDS),
            compre_start: pick(seed, "compre-start", COMPRE_STARTS),
            qa_start: pick(seed, "qa-start", QA_STARTS),
            qa_end: pick(seed, "qa-end", QA_ENDS),
            text_start: pick(seed, "text-start", TEXT_STARTS),
            dialog_start: format!(
                "{}{}",
                pick(seed, "dialog-lead", DIALOG_LEADS),
                pick(seed, "dialog-heading", DIALOG_HEADINGS)
            ),
            speakers: pick(seed, "speakers", SPEAKERS),
            dialog_end: pick(seed, "dialog-end", DIALOG_ENDS),
            dialog_separator: pick(seed, "dialog-separator", DIALOG_SEPARATORS),
            next_turn: pick(seed, "next-turn", NEXT_TURN),
            numbered: pick(seed, "numbered", NUMBERED),
            number_names: pick(seed, "number-names", NUMBER_NAMES),
            number_end: pick(seed, "number-end", NUMBER_ENDS),
            inline: pick(seed, "inline", INLINE),
        }
    }

    /// In the dialog modes every pattern speaks through the two speakers.
    fn adapt(&self, p: QaPattern) -> QaPattern {
        match self.mode {
            RcMode::Dialog | RcMode::NextTurnDialog => QaPattern {
                input_prefix: self.speakers.0,
                target_prefix: self.speakers.1,
                between: self.dialog_end,
                separator: self.dialog_separator,
                ..p
            },
            _ => p,
        }
    }
}

/// Renders one entry with its renderable pairs (non-empty) in `layout`.
fn render_entry(context: &str, pairs: &[Slots], style: &Style, layout: &Layout) -> String {
    let separator = layout.adapt(style.plain).separator;
    let demo = |s: &Slots| s.render_with(&layout.adapt(s.pattern));
    match layout.mode {
        RcMode::Classic | RcMode::Dialog => {
            let demos = pairs.iter().map(demo).collect::<Vec<_>>().join(separator);
            if layout.inverted {
                return format!(
                    "{}{}{}",
                    fill(layout.qa_start, &[("demos", &demos)]),
                    layout.qa_end,
                    fill(layout.text_start, &[("context", context)])
                );
            }
            let head = if layout.mode == RcMode::Classic {
                let read_end = if layout.compre_start.is_empty() {
                    ""
                } else {
                    layout.read_end
                };
                format!(
                    "{}{read_end}{}",
                    fill(layout.read_start, &[("context", context)]),
                    layout.compre_start
                )
            } else {
                format!("{context}{}", layout.dialog_start)
            };
            format!("{head}{separator}{demos}")
        }
        RcMode::NextTurnDialog => {
            let (last, history) = pairs.split_last().expect("pairs");
            let dialog: String = history
                .iter()
                .map(|s| format!("{separator}{}", demo(s)))
                .collect();
            format!(
                "{context}{}",
                fill(
                    layout.next_turn,
                    &[("dialog", &dialog), ("answer", &demo(last))]
                )
            )
        }
        RcMode::NumberedQuestions => {
            let (mut questions, mut answers) = (String::new(), String::new());
            for (i, s) in pairs.iter().enumerate() {
                let name = layout.number_names.name(i);
                questions.push_str(&format!(
                    "{name}{}{}",
                    s.input_with(&s.pattern),
                    layout.number_end
                ));
                answers.push_str(&format!(
                    "{name}{}{}",
                    s.target_with(&s.pattern),
                    layout.number_end
                ));
            }
            fill(
                layout.numbered,
                &[
                    ("context", context),
                    ("questions", &questions),
                    ("answers", &answers),
                ],
            )
        }
        RcMode::InlineFewShot => {
            let p = layout.inline;
            let explained = pairs.iter().all(|s| s.cot.is_some());
            // The explanation is shown apart, so each pair uses its pattern without reasoning.
            let plain_io = |s: &Slots| {
                let q = if s.options.is_empty() {
                    style.plain
                } else {
                    style.options
                };
                (s.input_with(&q), s.target_with(&q))
            };
            let (last, examples) = pairs.split_last().expect("pairs");
            let mut out = fill(p.context, &[("context", context)]);
            for s in examples {
                let (input, output) = plain_io(s);
                let output_template = if explained {
                    p.explained_output
                } else {
                    p.example_output
                };
                out.push_str(&fill(p.example_input, &[("input", &input)]));
                out.push_str(&fill(
                    output_template,
                    &[
                        ("output", &output),
                        ("explanation", s.cot.as_deref().unwrap_or("")),
                    ],
                ));
                out.push_str(p.separator);
            }
            let (input, output) = plain_io(last);
            out.push_str(&fill(p.task_input, &[("input", &input)]));
            out.push_str(&fill(p.task_output, &[("output", &output)]));
            out
        }
    }
}

/// Renders a chain into pre-training documents with the chain's `seed` (see [`chain_seed`]).
pub fn render_chain(chain: &[Entry], seed: u64) -> Rendered {
    let style = Style::draw(seed);
    let mut rendered = Rendered::default();
    // Renderable pairs of every entry.
    let mut all: Vec<Vec<Slots>> = Vec::with_capacity(chain.len());
    for (pos, entry) in chain.iter().enumerate() {
        let mut list = Vec::new();
        for (i, pair) in entry.pairs.iter().enumerate() {
            match &pair.form {
                Ok(form) => {
                    let pair_seed =
                        seed ^ ((pos as u64) << 32 | i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
                    list.push(slots(form, &style, pair_seed));
                }
                Err(e) => rendered.dropped.push(*e),
            }
        }
        all.push(list);
    }
    let mut start = 0;
    while start < chain.len() {
        let mut end = start + 1;
        while end < chain.len() && chain[end].inherit_from_prev {
            end += 1;
        }
        let min_pairs = all[start..end].iter().map(Vec::len).min().unwrap_or(0);
        let layout = Layout::draw(seed, min_pairs);
        let mut parts = Vec::new();
        let mut ids = Vec::new();
        let mut n_pairs = 0;
        let mut raw = Vec::new();
        for (entry, pairs) in chain[start..end].iter().zip(&all[start..end]) {
            if pairs.is_empty() {
                raw.push(Document {
                    text: entry.context.clone(),
                    source_ids: vec![entry.id],
                    rc_mode: None,
                    inverted: false,
                    n_pairs: 0,
                });
                continue;
            }
            parts.push(render_entry(&entry.context, pairs, &style, &layout));
            ids.push(entry.id);
            n_pairs += pairs.len();
        }
        if !parts.is_empty() {
            rendered.documents.push(Document {
                text: parts.join(style.document_separator),
                source_ids: ids,
                rc_mode: Some(layout.mode),
                inverted: layout.inverted
                    && matches!(layout.mode, RcMode::Classic | RcMode::Dialog),
                n_pairs,
            });
        }
        rendered.documents.extend(raw);
        start = end;
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::instruct::format::QaPair;

    fn entry(id: usize, context: &str, pairs: &[(&str, &str)], inherit: bool) -> Entry {
        Entry {
            id,
            round: 0,
            context: context.to_string(),
            pairs: pairs.iter().map(|(q, a)| QaPair::new(*q, *a)).collect(),
            inherit_from_prev: inherit,
            followed_by_next: false,
        }
    }

    fn two_pairs() -> Vec<Slots> {
        let style = fixed_style();
        [("Who founded it?", "Ada."), ("When?", "1843.")]
            .iter()
            .map(|(q, a)| slots(QaPair::new(*q, *a).form.as_ref().unwrap(), &style, 0))
            .collect()
    }

    /// Plain pattern `Q: {question} A: {answer}`, pairs joined by a blank line.
    fn fixed_style() -> Style {
        Style {
            plain: PLAIN[1],
            option_start: "Choices:",
            item_names: ItemNames::UpperParen,
            item_end: "",
            none_fits: "None of these",
            ..Style::draw(0)
        }
    }

    fn classic(
        read_start: &'static str,
        read_end: &'static str,
        compre_start: &'static str,
    ) -> Layout {
        Layout {
            mode: RcMode::Classic,
            inverted: false,
            read_start,
            read_end,
            compre_start,
            ..Layout::draw(0, 2)
        }
    }

    #[test]
    fn fill_is_one_pass_and_keeps_unknown_braces() {
        assert_eq!(
            fill("{a}-{b}-{c}", &[("a", "{b}"), ("b", "x")]),
            "{b}-x-{c}"
        );
        assert_eq!(fill("{", &[]), "{");
    }

    #[test]
    fn options_are_itemized_and_the_answer_becomes_the_label() {
        let items: Vec<String> = ["Arn", "Bel", "Cor"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let style = fixed_style();
        assert_eq!(
            format_options(&items, Some(1), &[0, 1, 2], &style),
            (
                "Choices:\n(A) Arn\n(B) Bel\n(C) Cor".to_string(),
                "(B)".to_string()
            )
        );
        // Shuffled order: Bel is now the first item.
        assert_eq!(format_options(&items, Some(1), &[1, 2, 0], &style).1, "(A)");
        let dash = Style {
            option_start: "",
            item_names: ItemNames::Dash,
            item_end: ";",
            ..style.clone()
        };
        assert_eq!(
            format_options(&items, Some(2), &[0, 1, 2], &dash),
            ("- Arn;\n- Bel;\n- Cor;".to_string(), "Cor".to_string())
        );
        assert_eq!(
            format_options(&items, None, &[0, 1, 2], &style).1,
            "None of these"
        );
        assert_eq!(ItemNames::Roman.name(3), "\nIV. ");
        assert_eq!(ItemNames::LowerDot.name(1), " b. ");
    }

    #[test]
    fn classic_layout_matches_hand_written_text() {
        let style = fixed_style();
        let pairs = two_pairs();
        let layout = classic(
            "Passage:\n{context}",
            "\n",
            "Questions on the passage above:",
        );
        assert_eq!(
            render_entry("Zorvia is a town.", &pairs, &style, &layout),
            "Passage:\nZorvia is a town.\nQuestions on the passage above:\n\nQ: Who founded it? A: Ada.\n\nQ: When? A: 1843."
        );
        // An empty comprehension start drops the read end.
        let layout = classic("{context}", "\n\n", "");
        assert_eq!(
            render_entry("Zorvia is a town.", &pairs, &style, &layout),
            "Zorvia is a town.\n\nQ: Who founded it? A: Ada.\n\nQ: When? A: 1843."
        );
        let inverted = Layout {
            inverted: true,
            qa_start: "Quiz: {demos}",
            qa_end: "\n",
            text_start: "{context}",
            ..layout
        };
        assert_eq!(
            render_entry("Zorvia is a town.", &pairs, &style, &inverted),
            "Quiz: Q: Who founded it? A: Ada.\n\nQ: When? A: 1843.\nZorvia is a town."
        );
    }

    #[test]
    fn dialog_and_numbered_layouts_match_hand_written_text() {
        let style = fixed_style();
        let pairs = two_pairs();
        let dialog = Layout {
            mode: RcMode::Dialog,
            inverted: false,
            dialog_start: "\nChat log:".to_string(),
            speakers: ("\nP1: ", "\nP2: "),
            dialog_end: ".",
            dialog_separator: "",
            ..Layout::draw(0, 2)
        };
        assert_eq!(
            render_entry("T.", &pairs, &style, &dialog),
            "T.\nChat log:\nP1: Who founded it?.\nP2: Ada.\nP1: When?.\nP2: 1843."
        );
        let numbered = Layout {
            mode: RcMode::NumberedQuestions,
            numbered: NUMBERED[0],
            number_names: ItemNames::NumberParen,
            number_end: "",
            ..Layout::draw(0, 2)
        };
        assert_eq!(
            render_entry("T.", &pairs, &style, &numbered),
            "T.\n\nAnswer each question.\n1) Who founded it?\n2) When?\n\nAnswers:\n1) Ada.\n2) 1843."
        );
    }

    #[test]
    fn rendering_is_deterministic_per_seed_and_varies_across_seeds() {
        let chain = vec![
            entry(
                0,
                "Zorvia is a river town.",
                &[("Where is Zorvia?", "On a river."), ("How big?", "Small.")],
                false,
            ),
            entry(
                1,
                "Pell is a hill village.",
                &[("Where is Pell?", "On a hill."), ("Old?", "Yes.")],
                true,
            ),
        ];
        assert_eq!(render_chain(&chain, 7), render_chain(&chain, 7));
        let texts: std::collections::HashSet<String> = (0..40)
            .map(|s| {
                render_chain(&chain, chain_seed(1, s)).documents[0]
                    .text
                    .clone()
            })
            .collect();
        assert!(texts.len() > 10, "only {} distinct renderings", texts.len());
    }

    #[test]
    fn inheriting_entries_form_one_document_and_pairless_entries_stay_raw() {
        let chain = vec![
            entry(4, "First text.", &[("Q1?", "A1.")], false),
            entry(9, "Second text.", &[("Q2?", "A2.")], true),
            entry(2, "Third text, no pairs.", &[], false),
            entry(
                5,
                "Fourth text.",
                &[("Broken?\nLet's think step by step.", "no marker")],
                false,
            ),
        ];
        for seed in 0..20 {
            let r = render_chain(&chain, seed);
            let d = &r.documents;
            assert_eq!(d.len(), 3);
            assert_eq!(d[0].source_ids, vec![4, 9]);
            assert_eq!(d[0].n_pairs, 2);
            let (first, second) = (
                d[0].text.find("First text.").unwrap(),
                d[0].text.find("Second text.").unwrap(),
            );
            assert!(first < second);
            assert_eq!(
                (d[1].text.as_str(), d[1].rc_mode, d[1].source_ids.clone()),
                ("Third text, no pairs.", None, vec![2])
            );
            // Its only pair breaks the CoT convention: dropped, and the text stays raw.
            assert_eq!((d[2].text.as_str(), d[2].rc_mode), ("Fourth text.", None));
            assert_eq!(r.dropped, vec![FormError::CotAnswerSplit]);
        }
    }

    #[test]
    fn all_documents_of_a_chain_share_one_format() {
        let pairs = [("Q1?", "A1."), ("Q2?", "A2.")];
        let chain = vec![
            entry(0, "One.", &pairs, false),
            entry(1, "Two.", &pairs, false),
            entry(2, "Three.", &pairs, false),
        ];
        for seed in 0..200 {
            let d = render_chain(&chain, seed).documents;
            assert_eq!(d.len(), 3);
            for doc in &d[1..] {
                assert_eq!((doc.rc_mode, doc.inverted), (d[0].rc_mode, d[0].inverted));
                // Same wording around the pairs: texts differ only in the context.
                let strip = |t: &str, c: &str| t.replace(c, "CTX");
                assert_eq!(
                    strip(&doc.text, &chain[doc.source_ids[0]].context),
                    strip(&d[0].text, "One.")
                );
            }
        }
    }

    #[test]
    fn mode_and_inversion_weights_follow_the_paper() {
        let n = 4000;
        let count = |pairs: &[(&str, &str)]| {
            let chain = vec![entry(0, "Text.", pairs, false)];
            let mut modes = std::collections::HashMap::new();
            let mut inverted = 0;
            for s in 0..n {
                let d = &render_chain(&chain, chain_seed(3, s)).documents[0];
                *modes.entry(d.rc_mode.unwrap().name()).or_insert(0usize) += 1;
                inverted += d.inverted as usize;
            }
            (modes, inverted)
        };
        let frac = |k: usize| k as f64 / n as f64;
        let (modes, inverted) = count(&[("Q?", "A.")]);
        assert_eq!(modes.len(), 2, "{modes:?}");
        assert!((frac(modes["classic"]) - 0.95).abs() < 0.015, "{modes:?}");
        assert!((frac(inverted) - 0.05).abs() < 0.015, "{inverted}");
        let (modes, _) = count(&[("Q1?", "A1."), ("Q2?", "A2.")]);
        assert!((frac(modes["classic"]) - 0.80).abs() < 0.025, "{modes:?}");
        for name in [
            "dialog",
            "numbered_questions",
            "inline_fs",
            "next_turn_dialog",
        ] {
            assert!(
                (frac(modes[name]) - 0.05).abs() < 0.015,
                "{name}: {modes:?}"
            );
        }
    }

    #[test]
    fn reasoning_and_options_reach_the_text() {
        let cot = (
            "How old is Zorvia in 1943?\nLet's think step by step.",
            "Founded 1843; 1943 - 1843 = 100.\nTherefore, the answer is 100 years",
        );
        let mc = ("Which river?\nOptions:\n- Arn\n- Bel\n- Cor", "Bel");
        for seed in 0..100 {
            let t = &render_chain(&[entry(0, "Text.", &[cot], false)], seed).documents[0].text;
            assert!(
                t.contains("Founded 1843; 1943 - 1843 = 100") && t.contains("100 years"),
                "{t}"
            );
            assert!(
                !t.contains("Let's think step by step") && !t.contains("Therefore, the answer is"),
                "{t}"
            );
            let t = &render_chain(&[entry(0, "Text.", &[mc], false)], seed).documents[0].text;
            assert!(
                t.contains("Which river?") && !t.contains("\nOptions:\n- "),
                "{t}"
            );
            assert!(t.contains("Arn") == t.contains("Cor"), "{t}");
        }
    }
}
