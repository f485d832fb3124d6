//! AdaMLLM step (B), parsing (synth-spec §2.3 items 3–4): the synthesizer continues the
//! caption round with user and assistant turns of its own; its raw output (special tokens
//! kept) is split on the chat template's user header into rounds, a trailing round without
//! its end-of-turn marker is incomplete and dropped, and the *first* question that appears
//! under both hints gives the image's one task: `{Q, precise answer, informative answer}`.
//!
//! Questions match by exact string equality after the hint and its `"\n"` are removed (the
//! reference compares them so; §2.7): `"What is it?"` and `"What is it? "` are two questions.

use super::seed::{INFORMATIVE_HINT, PRECISE_HINT};
use std::collections::BTreeMap;

/// The strings a chat template writes around turns: a turn is `header text end_of_turn
/// separator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnMarkers {
    pub user: &'static str,
    pub assistant: &'static str,
    pub end_of_turn: &'static str,
    pub separator: &'static str,
}

/// ChatML (Qwen2-VL, retort's tiny models).
pub const CHATML: TurnMarkers = TurnMarkers { user: "<|im_start|>user\n", assistant: "<|im_start|>assistant\n", end_of_turn: "<|im_end|>", separator: "\n" };
/// Llama 3 (the released synthesizer, LLaVA-v1.6-Llama3-8B).
pub const LLAMA3: TurnMarkers = TurnMarkers {
    user: "<|start_header_id|>user<|end_header_id|>\n\n",
    assistant: "<|start_header_id|>assistant<|end_header_id|>\n\n",
    end_of_turn: "<|eot_id|>",
    separator: "",
};

/// One parsed round: the question (the user turn) and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    pub question: String,
    pub answer: String,
}

/// The complete rounds of a raw continuation, in order. The prompt ends with an open user
/// turn, so the output is `Q <end> <assistant header> A <end> <user header> Q <end> ...`: it
/// is cut at every user header; when the output does not end with `end_of_turn` its last
/// piece is incomplete (the generation ran out of tokens) and dropped; a piece that is not
/// exactly one question and one answer, or has an empty side, is skipped.
pub fn parse_rounds(raw: &str, m: &TurnMarkers) -> Vec<Round> {
    let mut pieces: Vec<&str> = raw.split(m.user).collect();
    if !raw.trim_end().ends_with(m.end_of_turn) {
        pieces.pop();
    }
    let between = format!("{}{}{}", m.end_of_turn, m.separator, m.assistant);
    let mut rounds = Vec::new();
    for piece in pieces {
        let parts: Vec<&str> = piece.split(between.as_str()).collect();
        let [q, a] = parts[..] else { continue };
        let a = a.trim_end();
        let Some(a) = a.strip_suffix(m.end_of_turn) else { continue };
        let (q, a) = (q.trim(), a.trim());
        if q.is_empty() || a.is_empty() {
            continue;
        }
        rounds.push(Round { question: q.to_string(), answer: a.to_string() });
    }
    rounds
}

/// The image's synthetic task.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Triplet {
    pub question: String,
    pub precise: String,
    pub informative: String,
}

/// Walks the rounds in order, keeping questions asked under the precise or the informative
/// hint (a later answer to the same question under the same hint replaces the earlier, as
/// the reference's dictionaries do); the first question seen under both gives the triplet.
/// `None` when no question is asked under both.
pub fn collect_triplet(rounds: &[Round]) -> Option<Triplet> {
    let precise_hint = format!("{PRECISE_HINT}\n");
    let informative_hint = format!("{INFORMATIVE_HINT}\n");
    let mut precise: BTreeMap<&str, &str> = BTreeMap::new();
    let mut informative: BTreeMap<&str, &str> = BTreeMap::new();
    for r in rounds {
        if let Some(q) = r.question.strip_prefix(&precise_hint) {
            if let Some(info) = informative.get(q) {
                return Some(Triplet { question: q.to_string(), precise: r.answer.clone(), informative: info.to_string() });
            }
            precise.insert(q, &r.answer);
        } else if let Some(q) = r.question.strip_prefix(&informative_hint) {
            if let Some(prec) = precise.get(q) {
                return Some(Triplet { question: q.to_string(), precise: prec.to_string(), informative: r.answer.clone() });
            }
            informative.insert(q, &r.answer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete round as the synthesizer writes it after an open user header.
    fn round(q: &str, a: &str) -> String {
        format!("{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n<|im_start|>user\n")
    }

    fn strip_last_header(s: String) -> String {
        s.strip_suffix("\n<|im_start|>user\n").map(str::to_string).unwrap_or(s)
    }

    #[test]
    fn rounds_split_on_the_user_header_and_a_trailing_incomplete_round_is_dropped() {
        let raw = [round("Answer with a precise response.\nHow many?", "2"), "Answer with an informative response.\nHow many?<|im_end|>\n<|im_start|>assistant\nThere are tw".into()].concat();
        let r = parse_rounds(&raw, &CHATML);
        assert_eq!(r, vec![Round { question: "Answer with a precise response.\nHow many?".into(), answer: "2".into() }]);
        assert_eq!(collect_triplet(&r), None, "the informative answer was cut off");
        // A malformed middle piece (no answer) is skipped, the rest kept.
        let raw = strip_last_header([round("Q1", "A1"), "lonely question<|im_end|>\n<|im_start|>user\n".into(), round("Q2", "A2")].concat());
        let r = parse_rounds(&raw, &CHATML);
        assert_eq!(r.iter().map(|r| r.question.as_str()).collect::<Vec<_>>(), vec!["Q1", "Q2"]);
    }

    #[test]
    fn the_first_question_under_both_hints_is_the_task() {
        let raw = strip_last_header(
            [
                round("Answer with a precise response.\nWhat colour?", "red"),
                round("Answer with a precise response.\nHow many?", "2"),
                round("Answer with an informative response.\nHow many?", "There are two shapes, so the answer is 2."),
                round("Answer with an informative response.\nWhat colour?", "It is red."),
            ]
            .concat(),
        );
        let got = collect_triplet(&parse_rounds(&raw, &CHATML)).unwrap();
        assert_eq!(got, Triplet { question: "How many?".into(), precise: "2".into(), informative: "There are two shapes, so the answer is 2.".into() });
    }

    #[test]
    fn only_one_hint_or_unequal_questions_give_no_task() {
        let one_hint = strip_last_header([round("Answer with a precise response.\nHow many?", "2"), round("Answer with a precise response.\nHow many?", "3")].concat());
        assert_eq!(collect_triplet(&parse_rounds(&one_hint, &CHATML)), None);
        // Exact equality: "How many ?" is another question.
        let unequal = strip_last_header([round("Answer with a precise response.\nHow many?", "2"), round("Answer with an informative response.\nHow many ?", "Two.")].concat());
        assert_eq!(collect_triplet(&parse_rounds(&unequal, &CHATML)), None);
        // A question without a hint is not a task.
        let plain = strip_last_header(round("How many?", "2"));
        assert_eq!(collect_triplet(&parse_rounds(&plain, &CHATML)), None);
        // A later precise answer to the same question replaces the earlier one.
        let twice = strip_last_header(
            [round("Answer with a precise response.\nHow many?", "2"), round("Answer with a precise response.\nHow many?", "3"), round("Answer with an informative response.\nHow many?", "Three, so 3.")].concat(),
        );
        assert_eq!(collect_triplet(&parse_rounds(&twice, &CHATML)).unwrap().precise, "3");
    }

    #[test]
    fn llama3_headers_parse_alike() {
        let raw = "Answer with an informative response.\nWhat is it?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA cat, so the answer is cat.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnswer with a precise response.\nWhat is it?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\ncat<|eot_id|>";
        let r = parse_rounds(raw, &LLAMA3);
        assert_eq!(r.len(), 2);
        let got = collect_triplet(&r).unwrap();
        assert_eq!((got.precise.as_str(), got.informative.as_str()), ("cat", "A cat, so the answer is cat."));
    }
}
