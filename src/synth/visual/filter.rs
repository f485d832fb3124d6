//! AdaMLLM step (B), the consistency filter and answer rendering (synth-spec §2.3 items 5–7).
//!
//! A text-only LM judges whether the precise answer follows from the informative one: a
//! few-shot prompt (six worked examples in retort's own words, two per label) then the task,
//! greedy, two new tokens. The label is the output stripped and lower-cased; only `"yes"`
//! keeps the task (`"no"` and `"open"` drop it, and so does anything else, e.g. `"yes."`: the
//! reference compares the whole string). Where no LM can judge (the tiny experiment), the
//! documented stand-in rule says "yes" when the precise answer, normalised, appears in the
//! informative one.
//!
//! A kept task's answer: when the informative answer's last sentence holds an indicator word
//! ("so ", "therefore ", ...) the informative answer alone; else when the precise answer holds
//! one, both joined; else a chain-of-thought pattern with the informative answer as the
//! reasoning and the precise answer as the final answer (a pattern of Instruction
//! Pre-Training's pool, chosen by the image's synthesis id).

use super::parse::Triplet;
use crate::metrics::answer_match::normalize;

/// The judge's verdict on one triplet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Yes,
    No,
    Open,
    /// Any other output (counted apart; dropped like "no").
    Other,
}

impl Label {
    /// The reference's rule: the whole output stripped and lower-cased.
    pub fn parse(output: &str) -> Label {
        match output.trim().to_lowercase().as_str() {
            "yes" => Label::Yes,
            "no" => Label::No,
            "open" => Label::Open,
            _ => Label::Other,
        }
    }

    pub fn keeps(self) -> bool {
        self == Label::Yes
    }

    pub fn name(self) -> &'static str {
        match self {
            Label::Yes => "yes",
            Label::No => "no",
            Label::Open => "open",
            Label::Other => "other",
        }
    }
}

/// The instruction and six worked examples (two per label) before the task.
const FEW_SHOT: &str = "\
Decide whether the precise answer is consistent with the informative answer to the same question about an image.
Yes: the precise answer can be inferred from the informative answer.
No: it cannot; the two answers disagree or the informative answer points elsewhere.
Open: the question is open-ended, has several readings, or asks for a description, a caption or background knowledge.

## Question: How many birds are on the fence?
## Informative Answer: Three small birds sit in a row on the wooden fence, so there are three.
## Precise Answer: 3
## Consistent: Yes

## Question: What colour is the bus?
## Informative Answer: The bus in the middle of the street is painted bright yellow with a black stripe.
## Precise Answer: yellow
## Consistent: Yes

## Question: Is the man wearing a hat?
## Informative Answer: The man stands bareheaded in the sun; his cap lies on the bench beside him.
## Precise Answer: yes
## Consistent: No

## Question: Which organ is shown in the scan?
## Informative Answer: The scan shows a cross-section of the abdomen with the liver on the left of the image.
## Precise Answer: brain
## Consistent: No

## Question: Describe the mood of the scene.
## Informative Answer: The soft evening light and the empty benches give the park a calm, slightly lonely feeling.
## Precise Answer: calm
## Consistent: Open

## Question: What might the chef cook next?
## Informative Answer: With the flour, eggs and butter laid out, a cake or a batch of pancakes would be likely.
## Precise Answer: pasta
## Consistent: Open
";

/// The judge's prompt for one triplet: the worked examples, then the task to complete.
pub fn consistency_prompt(t: &Triplet) -> String {
    format!("{FEW_SHOT}\n## Question: {}\n## Informative Answer: {}\n## Precise Answer: {}\n## Consistent:", t.question, t.informative, t.precise)
}

/// The stand-in judge where no LM can judge: "yes" when the normalised precise answer occurs,
/// on word boundaries, in the normalised informative answer; "no" otherwise.
pub fn rule_label(t: &Triplet) -> Label {
    let precise = normalize(&t.precise);
    let informative = format!(" {} ", normalize(&t.informative));
    if !precise.is_empty() && informative.contains(&format!(" {precise} ")) {
        Label::Yes
    } else {
        Label::No
    }
}

/// The words whose presence marks an answer that already states its conclusion (the
/// reference takes them from MMMU's evaluation code).
pub const INDICATORS: [&str; 7] = ["could be ", "so ", "thus ", "therefore ", "final ", "answer ", "result "];

/// How a kept task's answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerForm {
    /// The informative answer's last sentence states the conclusion: it alone.
    Informative,
    /// The precise answer holds an indicator: informative + " " + precise.
    Combined,
    /// Neither: the informative answer as the reasoning, the precise answer as the result.
    ChainOfThought,
}

pub fn answer_form(t: &Triplet) -> AnswerForm {
    let informative = t.informative.trim().to_lowercase();
    let last_sentence = informative.split(". ").last().unwrap_or("");
    if INDICATORS.iter().any(|w| last_sentence.contains(w)) {
        return AnswerForm::Informative;
    }
    let precise = t.precise.to_lowercase();
    if INDICATORS.iter().any(|w| precise.contains(w)) {
        AnswerForm::Combined
    } else {
        AnswerForm::ChainOfThought
    }
}

/// The (user, assistant) turn of a kept task; `syn_id` picks the pattern.
pub fn render_answer(t: &Triplet, syn_id: u64) -> (String, String) {
    use crate::synth::instruct::render::render_qa_turn;
    match answer_form(t) {
        AnswerForm::Informative => render_qa_turn(&t.question, &t.informative, None, syn_id),
        AnswerForm::Combined => render_qa_turn(&t.question, &format!("{} {}", t.informative, t.precise), None, syn_id),
        AnswerForm::ChainOfThought => {
            // The patterns append ". So it is {answer}"-style endings after `{cot}`.
            let cot = t.informative.trim().trim_end_matches('.');
            render_qa_turn(&t.question, &t.precise, Some(cot), syn_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(q: &str, p: &str, i: &str) -> Triplet {
        Triplet { question: q.into(), precise: p.into(), informative: i.into() }
    }

    #[test]
    fn only_a_bare_yes_keeps_the_task() {
        assert_eq!(Label::parse(" Yes"), Label::Yes);
        assert_eq!(Label::parse("yes\n"), Label::Yes);
        assert!(Label::parse("YES").keeps());
        for (out, want) in [("No", Label::No), (" open", Label::Open), ("Yes.", Label::Other), ("Ye", Label::Other), ("", Label::Other)] {
            assert_eq!(Label::parse(out), want, "{out:?}");
            assert!(!want.keeps());
        }
    }

    #[test]
    fn the_prompt_has_six_worked_examples_then_the_open_task() {
        let p = consistency_prompt(&t("How many dots?", "2", "Two dots, so 2."));
        assert_eq!(p.matches("## Consistent:").count(), 7);
        for label in ["Yes", "No", "Open"] {
            assert_eq!(p.matches(&format!("## Consistent: {label}\n")).count(), 2, "{label}");
        }
        assert!(p.ends_with("## Question: How many dots?\n## Informative Answer: Two dots, so 2.\n## Precise Answer: 2\n## Consistent:"), "{p}");
    }

    #[test]
    fn the_stand_in_rule_looks_for_the_precise_answer_in_whole_words() {
        assert_eq!(rule_label(&t("q", "2", "There are 2 red shapes.")), Label::Yes);
        assert_eq!(rule_label(&t("q", "Red", "The circle is red.")), Label::Yes);
        assert_eq!(rule_label(&t("q", "2", "There are 12 shapes.")), Label::No, "12 is not 2");
        assert_eq!(rule_label(&t("q", "blue", "The circle is red.")), Label::No);
        assert_eq!(rule_label(&t("q", "the", "The circle.")), Label::No, "an answer that normalises to nothing");
    }

    #[test]
    fn rendering_follows_the_indicator_rule() {
        // The last sentence of the informative answer has "so ": it stands alone.
        let a = t("How many?", "2", "I count the shapes. There are two, so the answer is 2.");
        assert_eq!(answer_form(&a), AnswerForm::Informative);
        // An indicator in an earlier sentence does not count.
        let b = t("How many?", "2", "So many shapes overlap. I count two of them.");
        assert_eq!(answer_form(&b), AnswerForm::ChainOfThought);
        // The precise answer holds one: both joined.
        let c = t("Why?", "the result is a tie", "Both teams scored twice.");
        assert_eq!(answer_form(&c), AnswerForm::Combined);
        let (_, answer) = render_answer(&c, 3);
        assert!(answer.contains("Both teams scored twice. the result is a tie"), "{answer}");
        let (q, answer) = render_answer(&b, 5);
        assert!(q.contains("How many?"), "{q}");
        assert!(answer.contains("I count two of them") && answer.ends_with('2'), "{answer}");
        assert_eq!(render_answer(&b, 5), render_answer(&b, 5), "the pattern follows the id");
    }
}
