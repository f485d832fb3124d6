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

/// A hand-labelled abstract: its title line, and a context in which every mined pair is
/// separated from the next by a short filler sentence (so no match eats the next one's start).
mod abstract_fixture {
    pub const TITLE: &str = "Thymidylate synthase as a target of cancer drugs";
    pub const P1: &str = "Thymidylate synthase converts deoxyuridine monophosphate into thymidine monophosphate.";
    pub const H1: &str = "the enzyme is an established target for cancer chemotherapy drugs.";
    pub const P2: &str = "Fluorouracil forms a stable covalent complex with the enzyme and its folate cofactor.";
    pub const H2: &str = "cells treated with fluorouracil stop synthesizing new DNA strands.";
    pub const P3: &str = "Methotrexate depletes the reduced folate pool that the synthase reaction consumes.";
    pub const H3: &str = "the thymidine nucleotide pool collapses within hours of treatment.";
    pub const C1: &str = "Healthy tissue with a slow turnover tolerates the drug remarkably well in most patients.";
    pub const C2: &str = "the rapidly dividing cells of the gut lining are often severely damaged.";
    pub const EFFECT: &str = "Resistance develops in a large fraction of colorectal tumours after several months.";
    pub const CAUSE: &str = "amplification of the synthase gene lets tumour cells overproduce the target enzyme.";
    pub const DEFINITION: &str = "an oral prodrug that the liver and tumour convert to fluorouracil.";

    /// The context (everything after the title line).
    pub fn context() -> String {
        format!(
            "Background. {P1} Therefore, {H1} Filler one. {P2} Therefore, {H2} Filler two. {P3} Therefore, {H3} \
             Filler three. {C1} However, {C2} Filler four. {EFFECT} Due to {CAUSE} Filler five. In summary \
             capecitabine is defined as {DEFINITION} End."
        )
    }

    pub fn document() -> String {
        format!("{TITLE}\n{}", context())
    }
}

/// The whole pipeline: render_document and its parts.
mod pipeline {
    use super::super::*;
    use super::abstract_fixture::{self as fx, *};
    use std::collections::{BTreeMap, HashSet};

    fn render(doc: &str, seed: u64) -> Rendered {
        render_document(doc, seed, &AdaptOptions::default(), &WordBudget)
    }

    fn counts(tasks: &[TaskRecord]) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for t in tasks {
            *out.entry((t.r#type.clone(), t.sub.clone())).or_insert(0) += 1;
        }
        out
    }

    fn mined_tasks(r: &Rendered) -> Vec<&TaskRecord> {
        r.tasks.iter().filter(|t| t.r#type != "summarize" && t.r#type != "text_completion").collect()
    }

    fn key(t: &str, s: &str) -> (String, String) {
        (t.to_string(), s.to_string())
    }

    #[test]
    fn the_hand_labelled_abstract_mines_what_a_reader_finds() {
        // By hand: three "Therefore" pairs (entail and cause-effect each), one "However" pair
        // (contradict and different), one "Due to" pair, one definition.
        let mined = mine(&fx::context());
        let mut by_sub: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &mined {
            *by_sub.entry(m.sub).or_insert(0) += 1;
        }
        let want: BTreeMap<&str, usize> =
            [("entail", 3), ("cause_effect", 3), ("contradict", 1), ("different", 1), ("effect_cause", 1), ("definition", 1)]
                .into_iter()
                .collect();
        assert_eq!(by_sub, want);
        let ec = mined.iter().find(|m| m.sub == "effect_cause").unwrap();
        assert_eq!((ec.first.as_str(), ec.second.as_str()), (EFFECT, CAUSE));
        let def = mined.iter().find(|m| m.sub == "definition").unwrap();
        assert_eq!((def.first.as_str(), def.second.as_str()), ("capecitabine", DEFINITION));
    }

    #[test]
    fn at_most_two_per_subcategory_drawn_from_the_mined_ones() {
        let pairs: HashSet<(&str, &str)> = [(P1, H1), (P2, H2), (P3, H3)].into_iter().collect();
        let mut kept_pairs = HashSet::new();
        for i in 0..60 {
            let r = render(&fx::document(), document_seed(1, &format!("doc{i}")));
            let c = counts(&r.tasks);
            assert_eq!(c.get(&key("nli", "entail")), Some(&2));
            assert_eq!(c.get(&key("common_reason", "cause_effect")), Some(&2));
            for sub in [("nli", "contradict"), ("paraphrase", "different"), ("common_reason", "effect_cause"), ("word2text", "definition")] {
                assert_eq!(c.get(&key(sub.0, sub.1)), Some(&1), "{sub:?}");
            }
            for t in r.tasks.iter().filter(|t| t.sub == "entail") {
                // The hypothesis comes back with its first letter upper-cased.
                let (p, h) = (t.matched[0].as_str(), t.matched[1].as_str());
                assert!(pairs.contains(&(p, h)), "{p} / {h}");
                kept_pairs.insert(p.to_string());
            }
        }
        // Over 60 documents the cap's shuffle keeps every one of the three pairs sometimes.
        assert_eq!(kept_pairs.len(), 3);

        let one = AdaptOptions { max_per_subcategory: 1, ..AdaptOptions::default() };
        let r = render_document(&fx::document(), 5, &one, &WordBudget);
        assert_eq!(counts(&r.tasks).get(&key("nli", "entail")), Some(&1));
        let many = AdaptOptions { max_per_subcategory: 10, ..AdaptOptions::default() };
        let r = render_document(&fx::document(), 5, &many, &WordBudget);
        assert_eq!(counts(&r.tasks).get(&key("nli", "entail")), Some(&3));
    }

    #[test]
    fn a_seed_renders_the_same_document_the_same_way() {
        let doc = fx::document();
        assert_eq!(render(&doc, 42), render(&doc, 42));
        assert_eq!(document_seed(3, "a.jsonl:17"), document_seed(3, "a.jsonl:17"));
        assert_ne!(document_seed(3, "a.jsonl:17"), document_seed(3, "a.jsonl:18"));
        assert_ne!(document_seed(3, "a.jsonl:17"), document_seed(4, "a.jsonl:17"));
        let texts: HashSet<String> = (0..20).map(|i| render(&doc, document_seed(3, &i.to_string())).text).collect();
        assert!(texts.len() > 15, "{} distinct renderings of 20", texts.len());
    }

    /// Counts of `n` draws with probability `p` lie within 6 standard deviations of `n·p`.
    fn assert_binomial(count: usize, n: usize, p: f64, what: &str) {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((count as f64 - mean).abs() <= 6.0 * sd + 1.0, "{what}: {count} of {n}, expected about {mean:.0}");
    }

    #[test]
    fn framing_and_nli_family_follow_the_reference_probabilities_over_many_documents() {
        let n = 1000;
        let mut framing: BTreeMap<&str, usize> = BTreeMap::new();
        let mut classify = 0;
        let mut cause_effect_templates = HashSet::new();
        let doc = fx::document();
        for i in 0..n {
            let r = render(&doc, document_seed(9, &format!("doc{i}")));
            let has = |ty: &str| r.tasks.iter().any(|t| t.r#type == ty);
            let kind = match (has("summarize"), has("text_completion")) {
                (true, true) => "both",
                (true, false) => "summarize",
                (false, true) => "completion",
                (false, false) => "neither",
            };
            *framing.entry(kind).or_insert(0) += 1;
            // Classify answers are labels; generate answers are the hypothesis itself.
            let entail = r.tasks.iter().find(|t| t.sub == "entail").unwrap();
            if ["Yes", "Therefore", "Entailment"].contains(&entail.answer.as_str()) {
                classify += 1;
            }
            for t in r.tasks.iter().filter(|t| t.sub == "cause_effect") {
                let index = super::super::templates::CAUSE_EFFECT.iter().position(|tp| {
                    super::super::templates::fill(tp.question, &[("cause", &t.matched[0]), ("effect", &t.matched[1]), ("domain", "biomedicine")])
                        == t.question
                });
                cause_effect_templates.insert(index.expect("a cause-effect question comes from a template"));
            }
        }
        // Title and ≥ 2 sentences: 0.4 / 0.1 / 0.4 / 0.1.
        assert_binomial(framing["summarize"], n, 0.4, "summarize only");
        assert_binomial(framing["completion"], n, 0.1, "completion only");
        assert_binomial(framing["both"], n, 0.4, "both");
        assert_binomial(framing["neither"], n, 0.1, "neither");
        assert_binomial(classify, n, 0.8, "NLI classify family");
        assert_eq!(cause_effect_templates.len(), super::super::templates::CAUSE_EFFECT.len(), "every template is used");
    }

    #[test]
    fn summarize_needs_a_title() {
        let doc = fx::document();
        let no_titles = AdaptOptions { titles: false, ..AdaptOptions::default() };
        let mut summarized = 0;
        let n = 300;
        for i in 0..n {
            let seed = document_seed(2, &i.to_string());
            let off = render_document(&doc, seed, &no_titles, &WordBudget);
            assert!(off.tasks.iter().all(|t| t.r#type != "summarize"));
            let on = render(&doc, seed);
            if let Some(t) = on.tasks.iter().find(|t| t.r#type == "summarize") {
                summarized += 1;
                assert_eq!(t.matched, vec![TITLE.to_string()]);
                if t.sub == "title" {
                    assert_eq!(t.answer, TITLE);
                }
            }
        }
        // Summarize only (0.4) or with completion (0.4).
        assert_binomial(summarized, n, 0.8, "documents with a summarize task");
        // Without titles the table is "≥ 2 sentences only": completion or neither, half each.
        let completions = (0..n)
            .filter(|i| {
                let r = render_document(&doc, document_seed(2, &i.to_string()), &no_titles, &WordBudget);
                r.tasks.iter().any(|t| t.r#type == "text_completion")
            })
            .count();
        assert_binomial(completions, n, 0.5, "completion without titles");
        // A one-line document has no title even with titles on.
        let one_line = fx::context();
        for i in 0..50 {
            assert!(render(&one_line, i).tasks.iter().all(|t| t.r#type != "summarize"));
        }
    }

    #[test]
    fn completion_cuts_the_context_at_a_sentence() {
        let context = fx::context();
        let mut cuts = HashSet::new();
        for i in 0..200 {
            let r = render(&fx::document(), document_seed(4, &i.to_string()));
            if let Some(t) = r.tasks.iter().find(|t| t.r#type == "text_completion") {
                let (first, second) = (&t.matched[0], &t.matched[1]);
                assert!(!first.is_empty() && !second.is_empty());
                // The fixture's sentences are separated by one space.
                assert_eq!(format!("{first} {second}"), context);
                assert_eq!(&t.answer, second);
                cuts.insert(first.len());
            }
        }
        assert!(cuts.len() > 5, "the cut point varies: {} distinct", cuts.len());
    }

    #[test]
    fn word_budget_truncation_by_hand() {
        let text = "Alpha beta  gamma\tdelta\nepsilon.";
        assert_eq!(WordBudget.truncate(text, 3), "Alpha beta  gamma");
        assert_eq!(WordBudget.truncate(text, 4), "Alpha beta  gamma\tdelta");
        assert_eq!(WordBudget.truncate(text, 0), "");
        assert!(matches!(WordBudget.truncate(text, 5), std::borrow::Cow::Borrowed(t) if t == text));
        assert!(matches!(WordBudget.truncate("two words  ", 2), std::borrow::Cow::Borrowed("two words  ")));
        assert_eq!(WordBudget.truncate("  lead  space", 1), "  lead");
    }

    #[test]
    fn the_tokenizer_budget_keeps_the_first_ids() {
        // The tiny tokenizer has one token per character, so the count is a character count.
        let dir = tempfile::tempdir().unwrap();
        crate::text::tiny::build_char_tokenizer(dir.path()).unwrap();
        let tok = crate::text::Tokenizer::load(dir.path()).unwrap();
        assert_eq!(tok.truncate("hello world", 5), "hello");
        assert_eq!(tok.truncate("hello world", 7), "hello w");
        assert!(matches!(tok.truncate("hello", 5), std::borrow::Cow::Borrowed("hello")));
    }

    #[test]
    fn truncation_happens_before_mining() {
        // Keep the context up to "Filler" after the first pair: that pair still has its
        // trailing whitespace, nothing later is mined.
        let prefix = format!("Background. {P1} Therefore, {H1} Filler");
        let words = prefix.split_whitespace().count();
        let opts = AdaptOptions { max_context_tokens: words, ..AdaptOptions::default() };
        let r = render_document(&fx::document(), 1, &opts, &WordBudget);
        let c = counts(&r.tasks);
        assert_eq!(c.get(&key("nli", "entail")), Some(&1));
        assert_eq!(c.get(&key("common_reason", "cause_effect")), Some(&1));
        assert_eq!(mined_tasks(&r).len(), 2);
        assert!(!r.text.contains("capecitabine"));
        assert!(r.text.contains(TITLE), "the title is not part of the budget");
    }

    #[test]
    fn chat_has_the_context_then_alternating_turns() {
        for i in 0..20 {
            let r = render(&fx::document(), document_seed(6, &i.to_string()));
            let mined = mined_tasks(&r);
            assert_eq!(r.chat.len(), 2 * mined.len());
            for (k, m) in r.chat.iter().enumerate() {
                assert_eq!(m.role, if k % 2 == 0 { "user" } else { "assistant" });
            }
            let first = &r.chat[0].content;
            assert!(first.starts_with(&format!("{TITLE}\nBackground. ")));
            assert!(first.ends_with(&format!("\n\n{}", mined[0].question)));
            for (k, t) in mined.iter().enumerate() {
                assert_eq!(r.chat[2 * k + 1].content, t.answer);
                if k > 0 {
                    assert_eq!(r.chat[2 * k].content, t.question);
                }
            }
            // The text shows each mined task as "question answer".
            for t in &mined {
                assert!(r.text.contains(&format!("{} {}", t.question, t.answer)));
            }
        }
    }

    #[test]
    fn a_document_without_mined_tasks_is_still_framed() {
        let doc = "A short note\nThe cells grew. The controls did not.";
        let mut framings = HashSet::new();
        for i in 0..100 {
            let r = render(doc, i);
            assert!(r.chat.is_empty());
            assert!(mined_tasks(&r).is_empty());
            assert!(r.text.contains("The cells grew."));
            framings.insert(r.tasks.iter().map(|t| t.r#type.clone()).collect::<Vec<_>>());
        }
        // All four framings occur: none, summarize, completion, both.
        assert_eq!(framings.len(), 4, "{framings:?}");
        // One sentence and no title: only the plain wrapper, no task at all.
        let r = render_document("Just one sentence here.", 3, &AdaptOptions { titles: false, ..AdaptOptions::default() }, &WordBudget);
        assert!(r.tasks.is_empty() && r.chat.is_empty());
        assert!(r.text.contains("Just one sentence here."));
    }

    #[test]
    fn runs_of_spaces_are_collapsed() {
        assert_eq!(collapse_spaces("a  b   c\n  d\t\te"), "a b c\n d\t\te");
        let doc = fx::document().replace(". ", ".   ");
        for i in 0..20 {
            let r = render(&doc, i);
            assert!(!r.text.contains("  "), "{}", r.text);
            assert!(r.tasks.iter().all(|t| !t.question.contains("  ") && !t.answer.contains("  ")));
        }
    }

    #[test]
    fn the_i_e_quirk_is_kept_by_default_and_fixed_on_request() {
        let doc = "Title\nIntro. The enzyme activity was strongly reduced in every treated sample. ixey, the inhibitor blocks the catalytic site of the enzyme in these cells. Next.";
        let similar = |opts: &AdaptOptions| render_document(doc, 1, opts, &WordBudget).tasks.iter().filter(|t| t.sub == "similar").count();
        assert_eq!(similar(&AdaptOptions::default()), 1);
        assert_eq!(similar(&AdaptOptions { fix_ie_quirk: true, ..AdaptOptions::default() }), 0);
        let literal = doc.replace("ixey", "i.e.");
        let opts = AdaptOptions { fix_ie_quirk: true, ..AdaptOptions::default() };
        assert_eq!(render_document(&literal, 1, &opts, &WordBudget).tasks.iter().filter(|t| t.sub == "similar").count(), 1);
    }

    #[test]
    fn odd_inputs_return() {
        let odd = [
            "".to_string(),
            "   \n\t ".to_string(),
            "word".to_string(),
            "no punctuation at all in this line\nnor in this one".to_string(),
            "Überschrift\nÇa va. 日本語のテキスト。 ¿Qué? {premise} {unknown} }{".to_string(),
            "\n\n\nTitle after blank lines\nBody text. More.".to_string(),
        ];
        for text in &odd {
            let r = render(text, 1);
            if text.trim().is_empty() {
                assert_eq!(r, Rendered::default());
            } else {
                assert!(!r.text.is_empty(), "{text:?}");
            }
        }
        // Braces in a document are text, not template slots.
        let r = render(&odd[4], 1);
        assert!(r.text.contains("{premise} {unknown} }{"));
    }

    #[test]
    fn a_megabyte_document_returns() {
        // One sentence of ~1 MB, no end: nothing to mine, must not hang.
        let long = format!("Title\n{}", "the enzyme activity was reduced in every treated sample ".repeat(18_000));
        assert!(long.len() > 1_000_000);
        let unlimited = AdaptOptions { max_context_tokens: usize::MAX, ..AdaptOptions::default() };
        let r = render_document(&long, 1, &unlimited, &WordBudget);
        assert!(mined_tasks(&r).is_empty());
        // A megabyte dense in matches: every pattern scans it once, the cap keeps two.
        let dense = format!("Title\nIntro. {}", format!("{P1} Therefore, {H1} Filler. ").repeat(6_500));
        assert!(dense.len() > 1_000_000);
        let r = render_document(&dense, 1, &unlimited, &WordBudget);
        assert_eq!(counts(&r.tasks).get(&key("nli", "entail")), Some(&2));
        // With the default budget the document is cut to 1848 words first.
        let r = render(&dense, 1);
        assert!(r.text.len() < 40_000);
    }
}

mod keyword_tasks {
    use super::super::*;
    use super::abstract_fixture as fx;

    #[test]
    fn the_domain_specific_rule_by_hand() {
        // The reference: a piece starting with ▁, longer than 10 characters counting the ▁,
        // absent from the general vocabulary. "▁abcdefghij" is 11 characters: in.
        assert!(is_domain_specific("▁abcdefghij", false));
        assert!(!is_domain_specific("▁abcdefghi", false));
        assert!(!is_domain_specific("▁abcdefghij", true));
        assert!(!is_domain_specific("abcdefghijk", false), "not word-initial");
        // Byte-level BPE marks a word start with Ġ; the rule is the same on the word.
        assert!(is_domain_specific("Ġthymidylate", false));
        assert!(is_domain_specific("▁ÜberlängeWort", false), "characters, not bytes: 13 chars");
        assert!(!is_domain_specific("▁überlänge", false), "9 characters (11 bytes)");
    }

    #[test]
    fn sentences_with_three_domain_words_become_keyword_tasks() {
        let vocab = WordVocab {
            domain_words: ["thymidylate", "fluorouracil", "methotrexate", "capecitabine", "chemotherapy", "deoxyuridine", "monophosphate", "synthase"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        // By hand: only P1 holds three distinct domain words of 10+ characters
        // (thymidylate, deoxyuridine, monophosphate; "synthase" is too short).
        for i in 0..20 {
            let r = render_document_with(&fx::document(), i, &AdaptOptions::default(), &WordBudget, Some(&vocab));
            let kw: Vec<&TaskRecord> = r.tasks.iter().filter(|t| t.sub == "keywords").collect();
            assert_eq!(kw.len(), 1);
            assert_eq!(kw[0].r#type, "word2text");
            assert_eq!(kw[0].matched, vec![fx::P1.to_string()]);
            let shown = "thymidylate, deoxyuridine, monophosphate";
            assert!(kw[0].question.contains(shown) || kw[0].answer == shown, "{kw:?}");
        }
        // Without a vocabulary there is no keyword task.
        assert!(render_document(&fx::document(), 0, &AdaptOptions::default(), &WordBudget).tasks.iter().all(|t| t.sub != "keywords"));
    }
}

mod options {
    use super::super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let d = AdaptOptions::default();
        assert_eq!((d.domain.as_str(), d.max_context_tokens, d.max_per_subcategory, d.titles, d.fix_ie_quirk), ("biomedicine", 1848, 2, true, false));
        let parsed: AdaptOptions = serde_json::from_str(r#"{"domain": "law"}"#).unwrap();
        assert_eq!(parsed, AdaptOptions { domain: "law".into(), ..AdaptOptions::default() });
        assert!(serde_json::from_str::<AdaptOptions>(r#"{"domian": "law"}"#).is_err());
    }

    #[test]
    fn templates_fill_only_known_slots_in_one_pass() {
        use super::super::templates::fill;
        assert_eq!(fill("{a} and {b} {c}", &[("a", "{b}"), ("b", "x")]), "{b} and x {c}");
        assert_eq!(fill("unclosed {a", &[("a", "x")]), "unclosed {a");
        assert_eq!(fill("", &[]), "");
    }
}
