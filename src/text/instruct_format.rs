//! The instruction synthesizer's input and output format (synth-spec §3.2).
//!
//! **Input.** One raw text becomes `"<s> <CON> {text} </CON>\n\n"`: the BOS marker, the
//! reading template `" <CON> {context} </CON>"` (its leading space is part of the format the
//! synthesizer was trained on), then the delimiter `"\n\n"`. An empty text becomes just
//! `"<s>"`. A text's pairs are written as `"<QUE> {q} <ANS> {a} </END>"`, joined by the
//! delimiter; when an earlier text is prepended as a demonstration (chain.rs) it is followed
//! by the EOS marker `"</s>"`.
//!
//! **Special tokens.** `<s>` and `</s>` are written into prompts as literal text, as the
//! reference does. A tokenizer-driven caller must map them to the BOS and EOS ids and must not
//! add a BOS of its own, or the first one is doubled: [`split_special`] cuts a prompt into
//! [`Piece`]s so the caller encodes only the [`Piece::Text`] parts (without special tokens)
//! and writes the ids of [`Piece::Bos`] / [`Piece::Eos`] itself; [`encode_pieces`] does that
//! given an encoder closure.
//!
//! **Output.** The synthesizer writes `"<QUE> q1 <ANS> a1 </END>\n\n<QUE> q2 <ANS> a2
//! </END>..."`. [`parse_pairs`] splits on `</END>`; when the output does not end with `</END>`
//! the last piece is incomplete and dropped. Each remaining piece must split on `<ANS>` into
//! exactly two parts, its question part (trimmed) must start with `<QUE>`, and its answer
//! (trimmed) must be non-empty; `<QUE>` is then removed and the question trimmed. Questions are
//! deduplicated case-insensitively, the first kept. Every dropped piece is counted by a
//! [`ParseFailure`] reason.
//!
//! **Conventions inside a pair** (recognised into [`Form`], used when rendering): a question
//! ending in `"\nLet's think step by step."` with an answer holding exactly one
//! `"\nTherefore, the answer is "` is a chain-of-thought pair (reasoning, then final answer);
//! `"\nOptions:\n- a\n- b..."` inside the question makes it multiple choice, and the answer
//! must then be one of the options (or say that none fits). A pair that starts one of these
//! conventions but breaks it keeps its raw text (it still serves as a demonstration when
//! chaining) and gets a [`FormError`]; the renderer leaves it out.

use serde::Serialize;

pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
/// The reading template; the leading space is intentional.
pub const READ_TEMPLATE: &str = " <CON> {context} </CON>";
pub const QA_TEMPLATE: &str = "<QUE> {question} <ANS> {answer} </END>";
pub const DELIMITER: &str = "\n\n";
pub const QUE: &str = "<QUE>";
pub const ANS: &str = "<ANS>";
pub const END: &str = "</END>";

/// The cue that ends a chain-of-thought question.
pub const COT_CUE: &str = "\nLet's think step by step.";
/// The marker between reasoning and final answer in a chain-of-thought answer.
pub const COT_ANSWER_MARKER: &str = "\nTherefore, the answer is ";
/// The marker that starts the option list of a multiple-choice question.
pub const OPTIONS_MARKER: &str = "\nOptions:\n- ";
/// The separator between options after [`OPTIONS_MARKER`].
pub const OPTION_SEPARATOR: &str = "\n- ";

/// Answers that mean "none of the options" (compared case-insensitively, trimmed).
const NONE_OF_THE_OPTIONS: &[&str] = &[
    "none of the above",
    "none of the above choices",
    "none of the options",
    "none",
    "unanswerable",
    "unknown",
    "not enough information",
    "no answer",
];

/// The reading part for one raw text: `"<s> <CON> {text} </CON>\n\n"`, or `"<s>"` when empty.
pub fn cook_read(text: &str) -> String {
    if text.is_empty() {
        BOS.to_string()
    } else {
        format!(
            "{BOS}{}{DELIMITER}",
            READ_TEMPLATE.replace("{context}", text)
        )
    }
}

/// The comprehension part: every pair as `"<QUE> {q} <ANS> {a} </END>"`, joined by `"\n\n"`
/// (no delimiter after the last one).
pub fn cook_compre(pairs: &[QaPair]) -> String {
    pairs
        .iter()
        .map(|p| format!("{QUE} {} {ANS} {} {END}", p.question, p.answer))
        .collect::<Vec<_>>()
        .join(DELIMITER)
}

/// A text with its pairs as one demonstration inside a longer prompt:
/// `cook_read(text) + cook_compre(pairs) + "</s>"`.
pub fn cook_demo(text: &str, pairs: &[QaPair]) -> String {
    format!("{}{}{EOS}", cook_read(text), cook_compre(pairs))
}

/// A piece of a prompt: text to tokenize, or a marker to map to the BOS / EOS id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Bos,
    Eos,
    Text(String),
}

/// Cuts a prompt at every literal `<s>` and `</s>`. Text pieces are never empty.
pub fn split_special(prompt: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = prompt;
    loop {
        let bos = rest.find(BOS).map(|i| (i, Piece::Bos, BOS.len()));
        let eos = rest.find(EOS).map(|i| (i, Piece::Eos, EOS.len()));
        let next = match (bos, eos) {
            (Some(b), Some(e)) => Some(if b.0 <= e.0 { b } else { e }),
            (b, e) => b.or(e),
        };
        let Some((at, marker, len)) = next else { break };
        if at > 0 {
            pieces.push(Piece::Text(rest[..at].to_string()));
        }
        pieces.push(marker);
        rest = &rest[at + len..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    pieces
}

/// Token ids of a prompt: BOS / EOS markers become `bos` / `eos`, text pieces go through
/// `encode`, which must not add special tokens itself (so no second BOS appears).
pub fn encode_pieces(
    prompt: &str,
    bos: u32,
    eos: u32,
    mut encode: impl FnMut(&str) -> Vec<u32>,
) -> Vec<u32> {
    let mut ids = Vec::new();
    for piece in split_special(prompt) {
        match piece {
            Piece::Bos => ids.push(bos),
            Piece::Eos => ids.push(eos),
            Piece::Text(t) => ids.extend(encode(&t)),
        }
    }
    ids
}

/// One instruction–response pair as the synthesizer wrote it, plus its recognised form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QaPair {
    #[serde(rename = "Q")]
    pub question: String,
    #[serde(rename = "A")]
    pub answer: String,
    /// The CoT / option structure, or why a started convention is broken.
    #[serde(skip)]
    pub form: Result<Form, FormError>,
}

impl QaPair {
    pub fn new(question: impl Into<String>, answer: impl Into<String>) -> Self {
        let (question, answer) = (question.into(), answer.into());
        let form = recognise(&question, &answer);
        QaPair {
            question,
            answer,
            form,
        }
    }
}

/// A pair's structure: its question without the CoT cue and option list, the options, the
/// reasoning and the final answer. A plain pair has neither options nor reasoning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    pub question: String,
    pub options: Option<Options>,
    pub reasoning: Option<String>,
    pub answer: String,
}

/// The options of a multiple-choice question, in the synthesizer's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub items: Vec<String>,
    /// Index of the option equal to the answer; `None` when the answer says none fits.
    pub correct: Option<usize>,
}

/// Why a pair that starts the CoT or option convention does not follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FormError {
    /// CoT cue or answer marker present, but the question does not end with the cue.
    CotCueNotAtEnd,
    /// Nothing left of the question once the CoT cue is removed.
    CotEmptyQuestion,
    /// The answer does not split into exactly reasoning and final answer.
    CotAnswerSplit,
    /// Empty reasoning or empty final answer.
    CotEmptyPart,
    /// The option marker appears more than once.
    OptionsSplit,
    /// Nothing before the option list.
    OptionsEmptyQuestion,
    /// The answer is none of the options and does not say that none fits.
    AnswerNotAnOption,
}

impl FormError {
    /// Stable snake_case name for stats.json.
    pub fn name(self) -> &'static str {
        match self {
            FormError::CotCueNotAtEnd => "cot_cue_not_at_end",
            FormError::CotEmptyQuestion => "cot_empty_question",
            FormError::CotAnswerSplit => "cot_answer_split",
            FormError::CotEmptyPart => "cot_empty_part",
            FormError::OptionsSplit => "options_split",
            FormError::OptionsEmptyQuestion => "options_empty_question",
            FormError::AnswerNotAnOption => "answer_not_an_option",
        }
    }
}

/// Recognises the CoT and option conventions of one pair (see the module doc).
pub fn recognise(question: &str, answer: &str) -> Result<Form, FormError> {
    let (question, reasoning, answer) =
        if question.contains(COT_CUE) || answer.contains(COT_ANSWER_MARKER) {
            let stem = question
                .strip_suffix(COT_CUE)
                .ok_or(FormError::CotCueNotAtEnd)?
                .trim();
            if stem.is_empty() {
                return Err(FormError::CotEmptyQuestion);
            }
            let parts: Vec<&str> = answer.split(COT_ANSWER_MARKER).collect();
            let [cot, last] = parts[..] else {
                return Err(FormError::CotAnswerSplit);
            };
            let cot = cot.trim();
            let cot = cot.strip_suffix('.').unwrap_or(cot);
            let last = last.trim();
            if cot.is_empty() || last.is_empty() {
                return Err(FormError::CotEmptyPart);
            }
            (stem, Some(cot.to_string()), last)
        } else {
            (question, None, answer)
        };
    let plain = |options| Form {
        question: question.to_string(),
        options,
        reasoning: reasoning.clone(),
        answer: answer.to_string(),
    };
    if !question.contains(OPTIONS_MARKER) {
        return Ok(plain(None));
    }
    let parts: Vec<&str> = question.split(OPTIONS_MARKER).collect();
    let [stem, list] = parts[..] else {
        return Err(FormError::OptionsSplit);
    };
    if stem.is_empty() {
        return Err(FormError::OptionsEmptyQuestion);
    }
    let items: Vec<String> = list.split(OPTION_SEPARATOR).map(str::to_string).collect();
    let correct = items.iter().position(|o| o.trim() == answer.trim());
    let says_none = NONE_OF_THE_OPTIONS.contains(&answer.trim().to_lowercase().as_str());
    if correct.is_none() && !says_none {
        return Err(FormError::AnswerNotAnOption);
    }
    Ok(Form {
        question: stem.to_string(),
        ..plain(Some(Options { items, correct }))
    })
}

/// Why a piece of synthesizer output did not become a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParseFailure {
    /// The output did not end with `</END>` and its last piece held text.
    Unterminated,
    /// The piece does not split on `<ANS>` into exactly two parts.
    AnsSplit,
    /// The question part does not start with `<QUE>`.
    MissingQue,
    /// The answer is empty.
    EmptyAnswer,
    /// Same question (ignoring case) as an earlier pair of the same output.
    DuplicateQuestion,
}

impl ParseFailure {
    pub const ALL: [ParseFailure; 5] = [
        ParseFailure::Unterminated,
        ParseFailure::AnsSplit,
        ParseFailure::MissingQue,
        ParseFailure::EmptyAnswer,
        ParseFailure::DuplicateQuestion,
    ];

    /// Stable snake_case name for stats.json.
    pub fn name(self) -> &'static str {
        match self {
            ParseFailure::Unterminated => "unterminated",
            ParseFailure::AnsSplit => "ans_split",
            ParseFailure::MissingQue => "missing_que",
            ParseFailure::EmptyAnswer => "empty_answer",
            ParseFailure::DuplicateQuestion => "duplicate_question",
        }
    }
}

/// The pairs of one synthesizer output and the reasons the other pieces were dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub pairs: Vec<QaPair>,
    pub failures: Vec<ParseFailure>,
}

/// Parses synthesizer output into pairs (rules in the module doc).
pub fn parse_pairs(output: &str) -> Parsed {
    let mut pieces: Vec<&str> = output.split(END).collect();
    let mut failures = Vec::new();
    if !output.ends_with(END) {
        let last = pieces.pop().unwrap_or("");
        // Trailing whitespace after the last </END> is not a failure, just nothing.
        if !last.trim().is_empty() {
            failures.push(ParseFailure::Unterminated);
        }
    } else {
        // Splitting "...</END>" leaves an empty string after the final marker.
        pieces.pop();
    }
    let mut pairs: Vec<QaPair> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for piece in pieces {
        let parts: Vec<&str> = piece.split(ANS).collect();
        let [q, a] = parts[..] else {
            failures.push(ParseFailure::AnsSplit);
            continue;
        };
        let (q, a) = (q.trim(), a.trim());
        let Some(q) = q.strip_prefix(QUE) else {
            failures.push(ParseFailure::MissingQue);
            continue;
        };
        if a.is_empty() {
            failures.push(ParseFailure::EmptyAnswer);
            continue;
        }
        // The reference removes every `<QUE>`, not only the leading one.
        let q = q.replace(QUE, "");
        let q = q.trim();
        let key = q.to_lowercase();
        if seen.contains(&key) {
            failures.push(ParseFailure::DuplicateQuestion);
            continue;
        }
        seen.push(key);
        pairs.push(QaPair::new(q, a));
    }
    Parsed { pairs, failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qa(pairs: &[QaPair]) -> Vec<(&str, &str)> {
        pairs
            .iter()
            .map(|p| (p.question.as_str(), p.answer.as_str()))
            .collect()
    }

    #[test]
    fn prompt_for_one_text_has_the_leading_space_and_delimiter() {
        assert_eq!(
            cook_read("Zorvia is a town."),
            "<s> <CON> Zorvia is a town. </CON>\n\n"
        );
        assert_eq!(cook_read(""), "<s>");
        let pairs = [QaPair::new("Who?", "Me."), QaPair::new("When?", "Now.")];
        assert_eq!(
            cook_compre(&pairs),
            "<QUE> Who? <ANS> Me. </END>\n\n<QUE> When? <ANS> Now. </END>"
        );
        assert_eq!(
            cook_demo("T", &pairs[..1]),
            "<s> <CON> T </CON>\n\n<QUE> Who? <ANS> Me. </END></s>"
        );
    }

    #[test]
    fn split_special_separates_bos_and_eos_markers() {
        let p = "<s> <CON> a </CON>\n\n<QUE> q <ANS> x </END></s><s> <CON> b </CON>\n\n";
        assert_eq!(
            split_special(p),
            vec![
                Piece::Bos,
                Piece::Text(" <CON> a </CON>\n\n<QUE> q <ANS> x </END>".into()),
                Piece::Eos,
                Piece::Bos,
                Piece::Text(" <CON> b </CON>\n\n".into()),
            ]
        );
        assert_eq!(split_special("<s>"), vec![Piece::Bos]);
        assert_eq!(split_special("plain"), vec![Piece::Text("plain".into())]);
        assert_eq!(split_special(""), vec![]);
    }

    #[test]
    fn encode_pieces_writes_one_bos_and_never_encodes_markers() {
        let mut seen = Vec::new();
        let ids = encode_pieces("<s> <CON> a </CON>\n\n", 1, 2, |t| {
            seen.push(t.to_string());
            vec![100 + t.len() as u32]
        });
        assert_eq!(ids, vec![1, 100 + 17]);
        assert_eq!(seen, vec![" <CON> a </CON>\n\n"]);
        let ids = encode_pieces("x</s><s>", 1, 2, |_| vec![9]);
        assert_eq!(ids, vec![9, 2, 1]);
    }

    #[test]
    fn well_formed_output_parses_in_order() {
        let out =
            "<QUE> Who founded Zorvia? <ANS> Ada Brel. </END>\n\n<QUE> When? <ANS> In 1843. </END>";
        let p = parse_pairs(out);
        assert_eq!(
            qa(&p.pairs),
            vec![("Who founded Zorvia?", "Ada Brel."), ("When?", "In 1843.")]
        );
        assert!(p.failures.is_empty());
    }

    #[test]
    fn unterminated_last_piece_is_dropped_and_counted() {
        let out = "<QUE> A? <ANS> a </END>\n\n<QUE> B? <ANS> b";
        let p = parse_pairs(out);
        assert_eq!(qa(&p.pairs), vec![("A?", "a")]);
        assert_eq!(p.failures, vec![ParseFailure::Unterminated]);
        // Only whitespace after the last </END>: nothing dropped that was a pair.
        let p = parse_pairs("<QUE> A? <ANS> a </END>\n\n");
        assert_eq!(qa(&p.pairs), vec![("A?", "a")]);
        assert!(p.failures.is_empty());
        // No </END> at all: the only piece is incomplete.
        let p = parse_pairs("<QUE> A? <ANS> a complete-looking answer");
        assert!(p.pairs.is_empty());
        assert_eq!(p.failures, vec![ParseFailure::Unterminated]);
    }

    #[test]
    fn two_ans_missing_que_and_empty_answer_are_rejected() {
        let out = "<QUE> A? <ANS> a <ANS> b </END>\n\n\
                   Q: B? <ANS> b </END>\n\n\
                   <QUE> C? <ANS>   </END>\n\n\
                   <QUE> D? no answer marker </END>\n\n\
                   <QUE> E? <ANS> e </END>";
        let p = parse_pairs(out);
        assert_eq!(qa(&p.pairs), vec![("E?", "e")]);
        assert_eq!(
            p.failures,
            vec![
                ParseFailure::AnsSplit,
                ParseFailure::MissingQue,
                ParseFailure::EmptyAnswer,
                ParseFailure::AnsSplit
            ]
        );
    }

    #[test]
    fn duplicates_in_other_case_keep_the_first() {
        let out = "<QUE> Where is Zorvia? <ANS> On the river. </END>\n\n\
                   <QUE> WHERE IS ZORVIA? <ANS> North. </END>\n\n\
                   <QUE> where is zorvia?   <ANS> South. </END>\n\n\
                   <QUE> Who lives there? <ANS> 1,200 people. </END>";
        let p = parse_pairs(out);
        assert_eq!(
            qa(&p.pairs),
            vec![
                ("Where is Zorvia?", "On the river."),
                ("Who lives there?", "1,200 people.")
            ]
        );
        assert_eq!(p.failures, vec![ParseFailure::DuplicateQuestion; 2]);
    }

    #[test]
    fn empty_question_is_allowed_as_in_the_reference() {
        let p = parse_pairs("<QUE> <ANS> a </END>");
        assert_eq!(qa(&p.pairs), vec![("", "a")]);
    }

    #[test]
    fn failure_names_are_stable_and_distinct() {
        let names: Vec<&str> = ParseFailure::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            vec![
                "unterminated",
                "ans_split",
                "missing_que",
                "empty_answer",
                "duplicate_question"
            ]
        );
    }

    #[test]
    fn plain_pair_has_a_plain_form() {
        let f = QaPair::new("Who?", "Ada.").form.unwrap();
        assert_eq!(
            f,
            Form {
                question: "Who?".into(),
                options: None,
                reasoning: None,
                answer: "Ada.".into()
            }
        );
    }

    #[test]
    fn cot_pair_is_split_into_reasoning_and_final_answer() {
        let p = QaPair::new(
            "How old is Zorvia in 1943?\nLet's think step by step.",
            "It was founded in 1843. 1943 - 1843 = 100.\nTherefore, the answer is 100 years",
        );
        let f = p.form.unwrap();
        assert_eq!(f.question, "How old is Zorvia in 1943?");
        assert_eq!(
            f.reasoning.as_deref(),
            Some("It was founded in 1843. 1943 - 1843 = 100")
        );
        assert_eq!(f.answer, "100 years");
        assert_eq!(f.options, None);
    }

    #[test]
    fn broken_cot_is_flagged() {
        let e = |q: &str, a: &str| QaPair::new(q, a).form.unwrap_err();
        assert_eq!(
            e("Why?\nLet's think step by step. Now.", "x"),
            FormError::CotCueNotAtEnd
        );
        assert_eq!(
            e("Why?", "because\nTherefore, the answer is y"),
            FormError::CotCueNotAtEnd
        );
        assert_eq!(
            e(
                "\nLet's think step by step.",
                "a\nTherefore, the answer is b"
            ),
            FormError::CotEmptyQuestion
        );
        assert_eq!(
            e("Why?\nLet's think step by step.", "no marker"),
            FormError::CotAnswerSplit
        );
        assert_eq!(
            e(
                "Why?\nLet's think step by step.",
                ".\nTherefore, the answer is b"
            ),
            FormError::CotEmptyPart
        );
    }

    #[test]
    fn options_are_recognised_with_the_correct_index() {
        let q = "Which river?\nOptions:\n- Arn\n- Bel\n- Cor";
        let f = QaPair::new(q, "Bel").form.unwrap();
        assert_eq!(f.question, "Which river?");
        let o = f.options.unwrap();
        assert_eq!(o.items, vec!["Arn", "Bel", "Cor"]);
        assert_eq!(o.correct, Some(1));
        let f = QaPair::new(q, "None of the above").form.unwrap();
        assert_eq!(f.options.unwrap().correct, None);
        assert_eq!(
            QaPair::new(q, "Dun").form.unwrap_err(),
            FormError::AnswerNotAnOption
        );
        assert_eq!(
            QaPair::new("\nOptions:\n- a\n- b", "a").form.unwrap_err(),
            FormError::OptionsEmptyQuestion
        );
    }

    #[test]
    fn cot_with_options_combines_both() {
        let q = "Is Zorvia older than Pell?\nOptions:\n- yes\n- no\nLet's think step by step.";
        let a = "Zorvia: 1843. Pell: 1900.\nTherefore, the answer is yes";
        let f = QaPair::new(q, a).form.unwrap();
        assert_eq!(f.question, "Is Zorvia older than Pell?");
        assert_eq!(f.options.unwrap().items, vec!["yes", "no"]);
        assert_eq!(f.reasoning.as_deref(), Some("Zorvia: 1843. Pell: 1900"));
        assert_eq!(f.answer, "yes");
    }
}
