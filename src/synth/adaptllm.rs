//! AdaptLLM: turning raw domain text into reading-comprehension text (docs/METHODS.md §S4).
//!
//! This file grows into the whole method, top to bottom. It holds so far the **mining** step
//! (§S4.3): the exact patterns of the reference code, applied as Python's `re.findall` with
//! `re.IGNORECASE` applies them — non-overlapping matches from left to right, so the
//! sentence end that one match consumes (`[.!?]+\s+` at its start) cannot start the next
//! one, and of three consecutive connective sentences only the first pair is found. The
//! `regex` crate's leftmost-first matching picks the same match as Python's backtracking
//! engine for these patterns (no look-around, no back-references).
//!
//! Still to come (issue "Data synthesis I"): title and truncation, the sentence splitter,
//! keyword-to-text, the per-document cap and shuffles, templates, framing, the `synth` stage.

use regex::Regex;
use std::sync::OnceLock;

/// The task families mined by pattern (summarization and completion come from the framing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Nli,
    CommonReason,
    Paraphrase,
    Word2Text,
}

/// One mining pattern: its family, sub-category, and which capture groups (1-based, as the
/// `regex` crate counts them) hold the first text, the connective and the second text.
struct Rule {
    family: Family,
    sub: &'static str,
    pattern: &'static str,
    first: usize,
    connective: usize,
    second: usize,
}

/// The reference code's patterns, character for character, except that `\'` and `\"` are
/// written as plain quotes (the same characters; the `regex` crate has no such escapes).
/// `i.e.` keeps its unescaped dots: it also matches "ixey" (a quirk kept for parity).
const RULES: &[Rule] = &[
    Rule { family: Family::Nli, sub: "entail", pattern: r"([.!?]+[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)(Yes|Therefore|Thus|Accordingly|Hence|For this reason)([\s]*,[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::Nli, sub: "contradict", pattern: r"([.!?]+[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)(No|However|But|On the contrary|In contrast|Whereas)([\s]*,[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::Nli, sub: "neutral", pattern: r"([.!?]+[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)(Maybe|Also|Furthermore|Secondly|Additionally|Moreover|In addition)([\s]*,[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::CommonReason, sub: "cause_effect", pattern: r"([.!?]+[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)(Thus|Therefore|Accordingly|Hence|For this reason)([\s]*,[\s]+)([^.!?\n,]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::CommonReason, sub: "effect_cause", pattern: r"([.!?]+[\s]+)([^.!?;\n,]{50,}[.!?]+)([\s]+)(due to|on account of|owing to)([\s]+)([^.!?;\n,]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::Paraphrase, sub: "similar", pattern: r"([.!?]+[\s]+)([^.!?\n]{50,}[.!?]+)([\s]+)(In other words|In other word|Namely|That is to say|i.e.|Scilicet|Similarly|Equally)([\s]*,[\s]+)([^.!?\n]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::Paraphrase, sub: "different", pattern: r"([.!?]+[\s]+)([^.!?\n]{50,}[.!?]+)([\s]+)(No|However|But|On the contrary|In contrast|Whereas)([\s]*,[\s]+)([^.!?\n]{50,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
    Rule { family: Family::Word2Text, sub: "definition", pattern: r#"([\s]+)([^.!?,;\s"]{10,})([\s]+)(is defined as|'s definition is)([\s]+)([^.!?\n]{20,}[.!?]+)([\s]+)"#, first: 2, connective: 4, second: 6 },
    Rule { family: Family::Word2Text, sub: "topic", pattern: r"([.!?]+[\s]+)([^.!?,;\n]{20,})([\s]+)(was about|talks about|is about|'s topic is)([\s]+)([^.!?\n]{20,}[.!?]+)([\s]+)", first: 2, connective: 4, second: 6 },
];

/// One mined example: which rule found it and the texts its groups hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Mined {
    pub family: Family,
    /// e.g. "entail", "effect_cause", "definition".
    pub sub: &'static str,
    /// Premise, cause, first sentence, the defined word or the sentence before "is about".
    pub first: String,
    /// The connective as written ("Therefore", "due to", "is defined as", …).
    pub connective: String,
    /// Hypothesis, effect, second sentence, the definition or the topic.
    pub second: String,
}

fn compiled() -> &'static [(Regex, &'static Rule)] {
    static COMPILED: OnceLock<Vec<(Regex, &'static Rule)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        RULES
            .iter()
            // The patterns are constants checked by the tests below, so compiling cannot fail.
            .map(|r| (Regex::new(&format!("(?i){}", r.pattern)).expect("a valid mining pattern"), r))
            .collect()
    })
}

/// Every example each rule finds in `context`, rule by rule in the reference's order
/// (nli, common_reason, paraphrase, word2text), matches left to right. A linear pass per
/// rule: the `regex` crate guarantees time linear in the input.
pub fn mine(context: &str) -> Vec<Mined> {
    let mut out = Vec::new();
    for (re, rule) in compiled() {
        for caps in re.captures_iter(context) {
            let group = |i: usize| caps.get(i).map_or(String::new(), |m| m.as_str().to_string());
            out.push(Mined { family: rule.family, sub: rule.sub, first: group(rule.first), connective: group(rule.connective), second: group(rule.second) });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Sentences of 50+ characters without commas, as the nli patterns need.
    const A: &str = "The enzyme activity was strongly reduced in every treated sample.";
    const B: &str = "the inhibitor blocks the catalytic site of the enzyme in these cells.";
    const C: &str = "the effect disappears when the inhibitor is washed out of the medium.";

    fn found(text: &str, sub: &str) -> Vec<(String, String, String)> {
        mine(text).into_iter().filter(|m| m.sub == sub).map(|m| (m.first, m.connective, m.second)).collect()
    }

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(compiled().len(), RULES.len());
    }

    #[test]
    fn an_entailment_is_found_with_its_premise_connective_and_hypothesis() {
        let text = format!("Intro. {A} Therefore, {B} Next.");
        assert_eq!(found(&text, "entail"), vec![(A.to_string(), "Therefore".to_string(), B.to_string())]);
        // The same pair is also a cause-effect example (both rule sets list "Therefore").
        assert_eq!(found(&text, "cause_effect").len(), 1);
        // Case does not matter (re.IGNORECASE).
        assert_eq!(found(&format!("Intro. {A} THEREFORE, {B} Next."), "entail").len(), 1);
    }

    #[test]
    fn what_the_nli_patterns_must_not_match() {
        // No sentence end before the premise: the pattern starts with `[.!?]+\s+`.
        assert!(found(&format!("{A} Therefore, {B} Next."), "entail").is_empty());
        // A comma inside the premise.
        let with_comma = "The enzyme activity, as measured here, was reduced in every treated sample.";
        assert!(found(&format!("Intro. {with_comma} Therefore, {B} Next."), "entail").is_empty());
        // A premise under 50 characters.
        assert!(found(&format!("Intro. The activity was reduced. Therefore, {B} Next."), "entail").is_empty());
        // Nothing after the hypothesis's end: the trailing `\s+` is required.
        assert!(found(&format!("Intro. {A} Therefore, {B}"), "entail").is_empty());
        // No comma after the connective.
        assert!(found(&format!("Intro. {A} Therefore {B} Next."), "entail").is_empty());
    }

    #[test]
    fn adjacent_matches_cannot_share_a_sentence_end_as_with_findall() {
        // S1 Therefore S2 Therefore S3: the first match consumes S2's end, so (S2, S3) is lost.
        let text = format!("Intro. {A} Therefore, {B} Therefore, {C} End.");
        let pairs = found(&text, "entail");
        assert_eq!(pairs, vec![(A.to_string(), "Therefore".to_string(), B.to_string())]);
    }

    #[test]
    fn however_yields_a_contradiction_and_a_different_paraphrase() {
        let text = format!("Intro. {A} However, {C} Next.");
        assert_eq!(found(&text, "contradict"), vec![(A.to_string(), "However".to_string(), C.to_string())]);
        assert_eq!(found(&text, "different").len(), 1);
        // Paraphrase sentences may hold commas; nli ones may not.
        let comma = "The enzyme activity, as measured here, was reduced in every treated sample.";
        let text = format!("Intro. {comma} However, {C} Next.");
        assert!(found(&text, "contradict").is_empty());
        assert_eq!(found(&text, "different").len(), 1);
    }

    #[test]
    fn similar_keeps_the_unescaped_i_e_quirk() {
        assert_eq!(found(&format!("Intro. {A} In other words, {B} Next."), "similar").len(), 1);
        assert_eq!(found(&format!("Intro. {A} i.e., {B} Next."), "similar").len(), 1);
        // `i.e.` with unescaped dots matches any characters there, as in the reference code.
        let quirk = found(&format!("Intro. {A} ixey, {B} Next."), "similar");
        assert_eq!(quirk.len(), 1);
        assert_eq!(quirk[0].1, "ixey");
    }

    #[test]
    fn effect_cause_definition_and_topic() {
        let text = format!("Intro. {A} due to {C} Next.");
        assert_eq!(found(&text, "effect_cause"), vec![(A.to_string(), "due to".to_string(), C.to_string())]);
        // A semicolon is not allowed in effect-cause sentences.
        let semi = "The enzyme activity was strongly reduced; every treated sample showed it.";
        assert!(found(&format!("Intro. {semi} due to {C} Next."), "effect_cause").is_empty());

        let text = "In this work thymidylate is defined as an enzyme that makes thymidine monophosphate. Next";
        assert_eq!(
            found(text, "definition"),
            vec![("thymidylate".to_string(), "is defined as".to_string(), "an enzyme that makes thymidine monophosphate.".to_string())]
        );
        // The defined word needs 10+ characters.
        assert!(found("The enzyme is defined as an enzyme that makes thymidine monophosphate. Next", "definition").is_empty());

        let text = "Intro. The second chapter of this review is about the regulation of nucleotide synthesis. Next";
        assert_eq!(
            found(text, "topic"),
            vec![("The second chapter of this review".to_string(), "is about".to_string(), "the regulation of nucleotide synthesis.".to_string())]
        );
    }

    /// Seeded texts dense in connectives, sentence ends, commas, semicolons and short and long
    /// sentences, so that the patterns' edge cases (adjacent matches, length limits) occur.
    fn random_texts(seed: u64, n: usize) -> Vec<String> {
        let mut rng = crate::rng::Rng::new(seed);
        let words = ["enzyme", "activity", "the", "reduced", "samples", "inhibitor", "thymidylate", "of", "in", "cells"];
        let joins = [
            "Therefore, ", "However, ", "Moreover, ", "due to ", "In other words, ", "i.e., ", "ixey, ", "Thus , ", "But,", " is defined as ",
            " is about ", "'s topic is ", "No, ", "; ", ", ", "", "",
        ];
        (0..n)
            .map(|_| {
                let mut t = String::from("Intro.");
                for _ in 0..rng.below(12) + 2 {
                    t.push_str([" ", "  ", "\n", ". ", "! ", "? "][rng.below(6) as usize]);
                    t.push_str(joins[rng.below(joins.len() as u64) as usize]);
                    let len = rng.below(14) + 2;
                    let sentence: Vec<&str> = (0..len).map(|_| words[rng.below(words.len() as u64) as usize]).collect();
                    t.push_str(&sentence.join(" "));
                    t.push_str([".", ".", "!", "?", ""][rng.below(5) as usize]);
                }
                t.push_str(" End.");
                t
            })
            .collect()
    }

    #[test]
    fn the_miner_agrees_with_python_findall() {
        let Ok(python) = crate::sandbox::resolve_python("python3") else {
            eprintln!("SKIPPED: no python3 for the re.findall cross-check");
            return;
        };
        let texts = random_texts(7, 300);
        let patterns: Vec<serde_json::Value> = RULES
            .iter()
            .map(|r| serde_json::json!({"sub": r.sub, "pattern": r.pattern, "first": r.first, "connective": r.connective, "second": r.second}))
            .collect();
        let request = serde_json::json!({"patterns": patterns, "texts": texts}).to_string();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/adaptllm_findall.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), request.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let reference: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap();
        let mut total = 0;
        for (text, want) in texts.iter().zip(&reference) {
            let got: Vec<serde_json::Value> = mine(text)
                .into_iter()
                .map(|m| serde_json::json!({"sub": m.sub, "first": m.first, "connective": m.connective, "second": m.second}))
                .collect();
            assert_eq!(&got, want, "text: {text:?}");
            total += got.len();
        }
        assert!(total > 50, "the random texts exercise the patterns ({total} matches)");
    }

    #[test]
    fn rules_run_in_the_reference_order() {
        let text = format!("Intro. {A} Therefore, {B} Next. In this work thymidylate is defined as an enzyme that makes thymidine monophosphate. Next");
        let families: Vec<Family> = mine(&text).iter().map(|m| m.family).collect();
        assert_eq!(families, vec![Family::Nli, Family::CommonReason, Family::Word2Text]);
    }
}
