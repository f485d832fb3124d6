//! Mined examples → question/answer tasks (§S4.3), one sub-category at a time.
//!
//! Each sub-category has its template list (templates.rs); the template of each example is
//! drawn from a stream seeded by the document, so a document always renders the same way and
//! different documents spread over all templates. NLI first draws its family once per
//! document: classify (yes/no/maybe, which connective, which relation; p = 0.8) or generate
//! (continue the premise; p = 0.2).

use super::keywords::KeywordSentence;
use super::mine::{Family, Mined};
use super::templates::{self as tpl, fill, Template};
use super::TaskRecord;
use crate::rng::Rng;

/// The reference's probability of the NLI classify family (generate: 1 − this).
pub const NLI_CLASSIFY_P: f64 = 0.8;

/// The NLI family of one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NliFamily {
    Classify,
    Generate,
}

impl NliFamily {
    pub fn draw(rng: &mut Rng) -> Self {
        if rng.bool(NLI_CLASSIFY_P) {
            NliFamily::Classify
        } else {
            NliFamily::Generate
        }
    }
}

/// The task type name of a mined family, as `TaskRecord::type` spells it.
pub fn type_name(family: Family) -> &'static str {
    match family {
        Family::Nli => "nli",
        Family::CommonReason => "common_reason",
        Family::Paraphrase => "paraphrase",
        Family::Word2Text => "word2text",
    }
}

/// The first letter upper-cased (the reference does this to NLI hypotheses).
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn pick(templates: &[Template], rng: &mut Rng) -> Template {
    templates[rng.usize(templates.len())]
}

fn record(family: Family, sub: &str, matched: Vec<String>, template: Template, slots: &[(&str, &str)]) -> TaskRecord {
    TaskRecord {
        r#type: type_name(family).to_string(),
        sub: sub.to_string(),
        matched,
        question: fill(template.question, slots),
        answer: fill(template.answer, slots),
    }
}

/// The task for one mined example. `rng` is the sub-category's template stream.
pub fn from_mined(m: &Mined, nli: NliFamily, domain: &str, rng: &mut Rng) -> TaskRecord {
    let matched = vec![m.first.clone(), m.second.clone()];
    let (first, conn, second) = (m.first.as_str(), m.connective.as_str(), m.second.as_str());
    match m.family {
        Family::Nli => {
            let (label, connective, relation) = match m.sub {
                "entail" => ("Yes", "Therefore", "Entailment"),
                "contradict" => ("No", "However", "Contradictory"),
                _ => ("Maybe", "Moreover", "Neutral"),
            };
            let template = match nli {
                NliFamily::Classify => {
                    // One draw over the three classify lists together, as over one list.
                    let all: Vec<Template> =
                        tpl::NLI_YES_NO_MAYBE.iter().chain(tpl::NLI_CONNECTIVE).chain(tpl::NLI_RELATION).copied().collect();
                    pick(&all, rng)
                }
                NliFamily::Generate => pick(tpl::NLI_GENERATE, rng),
            };
            let hypothesis = capitalize(second);
            let slots = [
                ("premise", first),
                ("hypothesis", hypothesis.as_str()),
                ("label", label),
                ("connective", connective),
                ("relation", relation),
                ("verbalizer", conn),
                ("domain", domain),
            ];
            record(m.family, m.sub, matched, template, &slots)
        }
        Family::CommonReason => {
            // cause_effect: "<cause> Therefore, <effect>"; effect_cause: "<effect> due to <cause>".
            let (list, cause, effect) =
                if m.sub == "cause_effect" { (tpl::CAUSE_EFFECT, first, second) } else { (tpl::EFFECT_CAUSE, second, first) };
            let slots = [("cause", cause), ("effect", effect), ("domain", domain)];
            record(m.family, m.sub, matched, pick(list, rng), &slots)
        }
        Family::Paraphrase => {
            let list = if m.sub == "similar" { tpl::SIMILAR } else { tpl::DIFFERENT };
            let slots = [("s1", first), ("s2", second), ("verbalizer", conn), ("domain", domain)];
            record(m.family, m.sub, matched, pick(list, rng), &slots)
        }
        Family::Word2Text => {
            let (list, slots) = if m.sub == "definition" {
                (tpl::DEFINITION, [("word", first), ("definition", second), ("domain", domain)])
            } else {
                (tpl::TOPIC, [("sentence", first), ("topic", second), ("domain", domain)])
            };
            record(m.family, m.sub, matched, pick(list, rng), &slots)
        }
    }
}

/// The keyword → sentence (or sentence → keywords) task for one picked sentence.
pub fn from_keywords(k: &KeywordSentence, domain: &str, rng: &mut Rng) -> TaskRecord {
    let keywords = k.keywords.join(", ");
    let slots = [("sentence", k.sentence.as_str()), ("keywords", keywords.as_str()), ("domain", domain)];
    record(Family::Word2Text, "keywords", vec![k.sentence.clone()], pick(tpl::KEYWORDS, rng), &slots)
}
