//! Mining (§S4.3): the reference's exact patterns, applied as Python's `re.findall` with
//! `re.IGNORECASE` applies them — non-overlapping matches from left to right, so the
//! sentence end that one match consumes (`[.!?]+\s+` at its start) cannot start the next
//! one, and of three consecutive connective sentences only the first pair is found. The
//! `regex` crate's leftmost-first matching picks the same match as Python's backtracking
//! engine for these patterns (no look-around, no back-references); tests.rs checks this
//! against Python's `re` through tools/adaptllm_findall.py.

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
pub(super) struct Rule {
    pub(super) family: Family,
    pub(super) sub: &'static str,
    pub(super) pattern: &'static str,
    pub(super) first: usize,
    pub(super) connective: usize,
    pub(super) second: usize,
}

/// The reference code's patterns, character for character, except that `\'` and `\"` are
/// written as plain quotes (the same characters; the `regex` crate has no such escapes).
/// `i.e.` keeps its unescaped dots: it also matches "ixey" (a quirk kept for parity).
pub(super) const RULES: &[Rule] = &[
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

pub(super) fn compiled() -> &'static [(Regex, &'static Rule)] {
    static COMPILED: OnceLock<Vec<(Regex, &'static Rule)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        RULES
            .iter()
            // The patterns are constants checked by the tests below, so compiling cannot fail.
            .map(|r| (Regex::new(&format!("(?i){}", r.pattern)).expect("a valid mining pattern"), r))
            .collect()
    })
}

/// The patterns with `i.e.` escaped (`i\.e\.`): only the literal abbreviation matches.
fn compiled_fixed() -> &'static [(Regex, &'static Rule)] {
    static COMPILED: OnceLock<Vec<(Regex, &'static Rule)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        RULES
            .iter()
            .map(|r| {
                let pattern = r.pattern.replace("|i.e.|", r"|i\.e\.|");
                (Regex::new(&format!("(?i){pattern}")).expect("a valid mining pattern"), r)
            })
            .collect()
    })
}

/// Every example each rule finds in `context`, rule by rule in the reference's order
/// (nli, common_reason, paraphrase, word2text), matches left to right. A linear pass per
/// rule: the `regex` crate guarantees time linear in the input.
pub fn mine(context: &str) -> Vec<Mined> {
    mine_with(context, false)
}

/// [`mine`], with the unescaped-`i.e.` quirk of the similar-paraphrase pattern fixed when
/// `fix_ie_quirk` is set (the reference keeps it; so does the default).
pub fn mine_with(context: &str, fix_ie_quirk: bool) -> Vec<Mined> {
    let rules = if fix_ie_quirk { compiled_fixed() } else { compiled() };
    let mut out = Vec::new();
    for (re, rule) in rules {
        for caps in re.captures_iter(context) {
            let group = |i: usize| caps.get(i).map_or(String::new(), |m| m.as_str().to_string());
            out.push(Mined { family: rule.family, sub: rule.sub, first: group(rule.first), connective: group(rule.connective), second: group(rule.second) });
        }
    }
    out
}

/// The patterns as JSON (`{"flags": "IGNORECASE", "patterns": [{"family", "sub", "pattern",
/// "first", "connective", "second"}]}`), for `retort bench mine --patterns-json` and the
/// Python peer, so both sides of the benchmark run the same regex source.
pub fn patterns_json() -> serde_json::Value {
    let patterns: Vec<serde_json::Value> = RULES
        .iter()
        .map(|r| {
            serde_json::json!({
                "family": format!("{:?}", r.family),
                "sub": r.sub,
                "pattern": r.pattern,
                "first": r.first,
                "connective": r.connective,
                "second": r.second,
            })
        })
        .collect();
    serde_json::json!({"flags": "IGNORECASE", "patterns": patterns})
}
