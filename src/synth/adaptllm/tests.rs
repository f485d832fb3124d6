//! Tests of the AdaptLLM pipeline, one module a file of the method.

/// The miner (mine.rs): hand-labelled sentences and the cross-check against Python's `re`.
mod mining {
    use super::super::mine::*;

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

/// The sentence splitter against pysbd's output (tests/fixtures/adaptllm/sentences_pysbd.json,
/// made by tools/pysbd_sentences.py; the command to regenerate it is in that script).
mod sentence_splitting {
    use super::super::sentences::split;

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        text: String,
        sentences: Vec<String>,
    }

    fn golden() -> Vec<Case> {
        #[derive(serde::Deserialize)]
        struct File {
            cases: Vec<Case>,
        }
        let json = include_str!("../../../tests/fixtures/adaptllm/sentences_pysbd.json");
        serde_json::from_str::<File>(json).unwrap().cases
    }

    /// Where retort knowingly differs from pysbd: the case name and retort's own output.
    /// Each is documented in sentences.rs.
    const DIFFERENCES: &[(&str, &[&str])] = &[
        ("numbered_list", &["Steps: 1. ", "Wash the cells. ", "2. ", "Add the buffer. ", "3. ", "Spin them down."]),
        ("tolkien", &["J.R.R. ", "Tolkien wrote it. ", "It is long."]),
    ];

    #[test]
    fn agrees_with_pysbd_except_the_documented_differences() {
        let cases = golden();
        assert!(cases.len() >= 40, "the fixture has {} cases", cases.len());
        let mut agree = 0;
        for c in &cases {
            let got = split(&c.text);
            match DIFFERENCES.iter().find(|(name, _)| *name == c.name) {
                Some((_, ours)) => {
                    assert_eq!(&got, ours, "case {}: retort's documented output", c.name);
                    assert_ne!(got, c.sentences, "case {}: listed as a difference but pysbd agrees", c.name);
                }
                None => {
                    assert_eq!(got, c.sentences, "case {}: {:?}", c.name, c.text);
                    agree += 1;
                }
            }
        }
        // Every listed difference is a case of the fixture.
        for (name, _) in DIFFERENCES {
            assert!(cases.iter().any(|c| c.name == *name), "difference {name} is not in the fixture");
        }
        eprintln!("pysbd agreement: {agree}/{}", cases.len());
        assert_eq!(agree, cases.len() - DIFFERENCES.len());
    }

    #[test]
    fn sentences_rebuild_the_text_without_its_leading_whitespace() {
        let texts = ["", "   ", "one", "  lead. And more!\n\nNew para? yes.  ", "Ünïcödé… ça va? Oui. 日本語。終わり", "a.b.c. d!e?f"];
        for text in texts {
            let sentences = split(text);
            assert_eq!(sentences.concat(), text.trim_start(), "{text:?}");
            assert!(sentences.iter().all(|s| !s.trim().is_empty()), "{text:?}: {sentences:?}");
        }
        assert!(split("").is_empty());
        assert_eq!(split("no end at all"), vec!["no end at all"]);
    }

    #[test]
    fn a_megabyte_without_sentence_ends_or_full_of_abbreviations_returns() {
        let plain = "word ".repeat(200_000);
        assert_eq!(split(&plain).len(), 1);
        let abbreviations = "see e.g. this ".repeat(80_000);
        assert_eq!(split(&abbreviations).len(), 1);
        let dots = "x. ".repeat(300_000);
        assert_eq!(split(&dots).len(), 300_000);
    }
}
