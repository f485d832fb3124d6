//! A rule-based verifier for GSM8K / MATH / AIME-style final answers (docs/METHODS.md
//! §7.2: +1 correct, −1 wrong, −2 without `\boxed`; the reward mapping lives with the task).
//!
//! Three stages, each reported so a wrong reward can be traced, each in its own file:
//! 1. **Extraction** (`extract.rs`) of the final answer from a completion, in a configurable
//!    order ([`Extraction`]): the last `\boxed{…}`/`\fbox{…}`, an "Answer: …" / "The answer
//!    is …" / "#### …" line, the whole completion when it is itself a short answer, the value
//!    stated in the concluding sentence ("So the minimum is $8$, achieved when …"), the last
//!    `$…$` span, the last number.
//! 2. **Normalisation** (`normalize.rs`) of LaTeX and prose decorations ([`normalize_answer`]).
//! 3. **Equivalence** (`equiv.rs`): exact after normalisation, numeric within a relative
//!    tolerance, or symbolic by evaluating both expressions at seeded random points
//!    ([`answers_equivalent`]).
//!
//! The expression tokenizer, parser and evaluator (`expr.rs`) are written here rather than
//! taken from crates.io: the evaluator crates know neither LaTeX (`\frac12`, `\sqrt2`, `\pi`)
//! nor implicit multiplication (`2x`, `(x-1)(x+1)`), which is most of the work; besides,
//! evalexpr 13.1 is AGPL-3.0-only (this crate is MIT/Apache) and meval's last release, 0.2.0,
//! dates from 2017.
//!
//! This file holds the options, the verdict and [`verify_math`]; the work counter `tally`
//! below lets the tests check that verification stays linear in its input.
//!
//! Decisions a grader could make either way, fixed here:
//! - A percent sign is a unit label: "10%" equals "10", not "0.1" (as in the MATH reference
//!   normaliser). [`PercentRule::AlsoFraction`] additionally accepts value/100.
//! - A digit followed directly by `\frac` of two integers is a mixed number: `2\frac12` = 2.5.
//! - Bare lists "1, 2" and sets `\{1,2\}` compare as unordered multisets; parenthesised or
//!   bracketed tuples/intervals compare in order and their brackets must match.
//! - `\log` is the natural logarithm; `e` and `i` are ordinary variables.

mod braces;
mod conclusion;
mod equiv;
mod expr;
mod extract;
mod normalize;

pub use equiv::answers_equivalent;
pub use extract::{extract_answer, extract_gold, Extraction};
pub use normalize::{normalize_answer, Normalized};

use serde::{Deserialize, Serialize};

#[cfg(test)]
thread_local! {
    static WORK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts, in tests only, the bytes handed to each scanning pass and the tokens the parser
/// reads. The verifier must stay linear in its input (a deeply nested completion once took
/// 20 s), and a count checks that deterministically where a timing would flake.
#[inline]
fn tally(work: usize) {
    #[cfg(test)]
    WORK.with(|w| w.set(w.get() + work));
    #[cfg(not(test))]
    let _ = work;
}

/// How a percent sign is treated; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PercentRule {
    /// "10%" is 10.
    StripSign,
    /// "10%" matches 10 and also 0.1.
    AlsoFraction,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MathOptions {
    /// Extraction methods tried in this order; the first that finds something wins.
    pub order: Vec<Extraction>,
    /// Relative tolerance for numeric equality.
    pub rel_tol: f64,
    /// Random points at which expressions with variables are compared.
    pub sample_points: usize,
    /// Seed for those points, so verdicts are reproducible.
    pub seed: u64,
    pub percent: PercentRule,
}

impl Default for MathOptions {
    fn default() -> Self {
        MathOptions {
            order: vec![
                Extraction::Boxed,
                Extraction::AnswerLine,
                Extraction::Bare,
                Extraction::Conclusion,
                Extraction::LastMath,
                Extraction::LastNumber,
            ],
            rel_tol: 1e-6,
            sample_points: 8,
            seed: 0x6d61_7468,
            percent: PercentRule::StripSign,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MathVerdict {
    pub correct: bool,
    /// The answer text as extracted (before normalisation).
    pub extracted: Option<String>,
    pub method: Extraction,
    /// Why: "exact match after normalisation", "numerically equal: …", "not equal: …", …
    pub reason: String,
}

impl MathVerdict {
    /// The extracted answer in normalised form, the key maj@n votes on (§8.1). Values that are
    /// equal but written differently ("0.5", "1/2") stay distinct keys: voting is textual.
    pub fn canonical(&self) -> Option<String> {
        self.extracted.as_deref().map(canonical_answer)
    }

    /// Whether the completion had a `\boxed{…}`; STILL's reward gives −2 without one (§7.2).
    pub fn boxed(&self) -> bool {
        self.method == Extraction::Boxed
    }
}

/// The normalised text of an answer (see [`normalize_answer`]).
pub fn canonical_answer(answer: &str) -> String {
    normalize_answer(answer).text
}

/// Grade one completion against a gold answer. The gold may be a bare answer, contain a
/// `\boxed{…}`, or be a GSM8K solution ending in "#### answer" (see [`extract_gold`]).
pub fn verify_math(completion: &str, gold: &str, opts: &MathOptions) -> MathVerdict {
    let Some((extracted, method)) = extract_answer(completion, &opts.order) else {
        return MathVerdict {
            correct: false,
            extracted: None,
            method: Extraction::NotFound,
            reason: format!("no final answer found (tried {:?})", opts.order),
        };
    };
    let gold_answer = extract_gold(gold);
    let (correct, reason) = answers_equivalent(&extracted, &gold_answer, opts);
    MathVerdict { correct, extracted: Some(extracted), method, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use serde::Deserialize;

    #[test]
    fn verdict_reports_method_and_reason() {
        let opts = MathOptions::default();
        let v = verify_math("Thus $\\boxed{\\frac{3}{4}}$.", "0.75", &opts);
        assert!(v.correct, "{v:?}");
        assert_eq!(v.method, Extraction::Boxed);
        assert_eq!(v.extracted.as_deref(), Some("\\frac{3}{4}"));
        assert!(v.reason.contains("numerically equal"), "{}", v.reason);
        let v = verify_math("I give up.", "3", &opts);
        assert!(!v.correct);
        assert_eq!(v.method, Extraction::NotFound);
        let v = verify_math("\\boxed{x^2-1}", "(x-1)(x+1)", &opts);
        assert!(v.correct && v.reason.contains("symbolically"), "{v:?}");
        let v = verify_math("\\boxed{x^2+1}", "(x-1)(x+1)", &opts);
        assert!(!v.correct && v.reason.contains("differ"), "{v:?}");
    }

    #[test]
    fn verdicts_feed_majority_vote() {
        let opts = MathOptions::default();
        let completions = ["\\boxed{\\dfrac12}", "Answer: 3", "so \\boxed{\\frac{1}{2}}", "no idea"];
        let samples: Vec<crate::metrics::Sample> =
            completions.iter().map(|c| (&verify_math(c, "0.5", &opts)).into()).collect();
        assert_eq!(samples[0].canonical.as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(samples[0].canonical, samples[2].canonical);
        assert_eq!(samples[3].canonical, None);
        assert_eq!(crate::metrics::passk::maj_at_n(&samples), 1.0);
        assert!(verify_math("\\boxed{1}", "1", &opts).boxed());
        assert!(!verify_math("Answer: 1", "1", &opts).boxed());
    }

    #[test]
    fn percent_rule_is_configurable() {
        let strip = MathOptions::default();
        assert!(verify_math("\\boxed{10\\%}", "10", &strip).correct);
        assert!(!verify_math("\\boxed{10\\%}", "0.1", &strip).correct);
        let frac = MathOptions { percent: PercentRule::AlsoFraction, ..MathOptions::default() };
        assert!(verify_math("\\boxed{10\\%}", "0.1", &frac).correct);
        assert!(verify_math("\\boxed{10\\%}", "10", &frac).correct);
        assert!(!verify_math("\\boxed{10\\%}", "0.2", &frac).correct);
    }

    /// Random fragments of LaTeX, prose and Unicode must never panic the verifier, and a
    /// "correct" verdict always names what it extracted.
    #[test]
    fn random_garbage_never_panics() {
        const PIECES: [&str; 34] = [
            "\\frac", "{", "}", "\\boxed", "\\fbox", "$", "é", "−", "^", "1", "23", "0.5", "\\", ",",
            "(", ")", "[", "]", "=", "\\overline{", " ", "\\sqrt", "%", "°", ".", "-", "x", "Answer:",
            "\\text{", "\\le", "####", "!", "\\pi", "\n",
        ];
        let mut rng = Rng::new(5);
        let opts = MathOptions::default();
        for _ in 0..3000 {
            let mut make = |max: usize| -> String {
                let len = rng.usize(max);
                (0..len).map(|_| PIECES[rng.usize(PIECES.len())]).collect()
            };
            let (completion, gold) = (make(30), make(8));
            let v = verify_math(&completion, &gold, &opts);
            assert!(!v.correct || v.extracted.is_some(), "{completion:?} vs {gold:?}: {v:?}");
        }
        // Deep nesting is refused, not a stack overflow.
        let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(expr::parse_expr(&deep).is_err());
        let minus = format!("{}1", "-".repeat(5000));
        assert!(expr::parse_expr(&minus).is_err());
        assert!(!verify_math(&format!("\\boxed{{{deep}}}"), "1", &opts).correct);
    }

    /// The work (see `tally`) `verify_math` does on one completion.
    fn work_for(completion: &str) -> usize {
        let before = WORK.with(|w| w.get());
        verify_math(completion, "1", &MathOptions::default());
        WORK.with(|w| w.get()) - before
    }

    /// Shapes that cost quadratic (or exponential) work — nested braces, `\frac`, `\text` or
    /// boxes, runs of unclosed groups, commas inside one word, spaced letters, nested mixed
    /// numbers — now cost a bounded amount per input byte (about 12 here). Counted rather than
    /// timed, so the check cannot flake; the old code, counted the same way, scored ≈ 2 500 to
    /// 10 000 per byte on the first eight shapes and ≈ 60 000 on the mixed numbers.
    #[test]
    fn verification_work_is_linear_in_the_input() {
        let n = 10_000;
        let r = |s: &str, k: usize| s.repeat(k);
        let boxed = |s: String| format!("\\boxed{{{s}}}");
        let shapes = [
            ("nested braces", boxed(format!("{}1{}", r("{", n), r("}", n)))),
            ("nested fractions", boxed(format!("{}1{}", r("\\frac{", n), r("}{2}", n)))),
            ("nested boxes", format!("{}1{}", r("\\boxed{", n), r("}", n))),
            ("unclosed boxes", r("\\boxed{", n)),
            ("nested text", boxed(format!("{}1{}", r("\\text{", n), r("}", n)))),
            ("repeating decimals", boxed(r("0.\\overline{3}", n))),
            ("commas in one word", format!("Answer: {}", r("a,", n))),
            ("spaced letters", boxed(r("x ", n))),
            // The old parser read the arguments of every level twice: 2^20 token reads.
            ("nested mixed numbers", boxed(format!("{}x{}", r("2\\frac{", 20), r("}{1}", 20)))),
            ("nested parentheses", boxed(format!("{}1{}", r("(", n), r(")", n)))),
            ("unclosed braces", r("{", n)),
            ("unclosed square roots", boxed(r("\\sqrt[", n))),
            ("long sum", boxed(format!("{}1", r("1+", n)))),
            // The concluding-sentence reader (no box): cues, sentence ends, unclosed spans.
            ("runs of equals signs", r("x = ", n)),
            ("runs of 'is'", r("it is 1 ", n)),
            ("numbered sentences", r("1. ", n)),
            ("unclosed inline math", r("\\( ", n)),
            ("equations in one span", format!("${}1$", r("a=", n))),
        ];
        for (name, completion) in shapes {
            let per_byte = work_for(&completion) as f64 / completion.len() as f64;
            assert!(per_byte < 32.0, "{name}: {per_byte:.0} units of work per input byte");
        }
    }

    /// 100 000 levels of nesting and a megabyte of unclosed braces are verified, with the
    /// verdicts below, on a thread with the default 2 MiB stack (set explicitly, so that
    /// RUST_MIN_STACK cannot change the outcome). Before the fix the nested braces took ≈ 15 s
    /// and the nested fractions, `\text`, `\sin`, sums and factorials overflowed the stack.
    #[test]
    fn deep_and_huge_inputs_are_verified() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(deep_and_huge_inputs)
            .unwrap()
            .join()
            .expect("verifying deep inputs panicked");
    }

    fn deep_and_huge_inputs() {
        let n = 100_000;
        let r = |s: &str, k: usize| s.repeat(k);
        let opts = MathOptions::default();
        let braces = format!("{}1{}", r("{", n), r("}", n));
        let v = verify_math(&format!("\\boxed{{{braces}}}"), "1", &opts);
        assert!(v.correct && v.method == Extraction::Boxed, "{}", v.reason);
        assert_eq!(v.extracted.as_deref(), Some(braces.as_str()));
        assert_eq!(v.canonical().as_deref(), Some("1"));
        let v = verify_math(&format!("{}1{}", r("\\boxed{", n), r("}", n)), "1", &opts);
        assert!(v.correct && v.extracted.as_deref() == Some("1"), "{v:?}");
        let v = verify_math(&format!("\\boxed{{{}1{}}}", r("\\text{", n), r("}", n)), "1", &opts);
        assert!(v.correct, "{}", v.reason);
        // Too long to evaluate: refused with a reason, not a stack overflow.
        for too_long in [
            format!("{}1{}", r("\\frac{", n), r("}{2}", n)),
            format!("{}1{}", r("(", n), r(")", n)),
            format!("{}2", r("\\sin", n)),
            format!("{}1", r("1+", n)),
            format!("3{}", r("!", n)),
        ] {
            let v = verify_math(&format!("\\boxed{{{too_long}}}"), "1", &opts);
            assert!(!v.correct && v.method == Extraction::Boxed, "{v:?}");
            assert!(v.reason.contains("longer than 1000 tokens"), "{}", v.reason);
        }
        // Short but deep: the nesting guard refuses `\sin\sin…` (no brackets) too.
        assert_eq!(expr::parse_expr(&format!("{}2", r("\\sin", 300))).unwrap_err(), "nested deeper than 200 levels");
        assert!(expr::parse_expr(&format!("{}2", r("\\sin", 150))).is_ok());
        // A megabyte of `{` that never closes: nothing to extract.
        let unclosed = r("{", 1 << 20);
        for completion in [unclosed.clone(), format!("\\boxed{{{unclosed}")] {
            let v = verify_math(&completion, "1", &opts);
            assert_eq!((v.correct, v.method), (false, Extraction::NotFound));
        }
        // Not a mixed number: the \frac's arguments, parsed once, make a product.
        assert!(verify_math("\\boxed{2\\frac{x}{4}}", "x/2", &opts).correct);
    }

    #[derive(Deserialize)]
    struct FreeFormRow {
        prediction: String,
        gold: String,
        /// The hand grade, decided when the row was written.
        expected: bool,
        /// Hugging Face math-verify's verdict (tests/fixtures/eval/make_math_verify_freeform.py).
        math_verify: bool,
        note: String,
    }

    /// Free-form outputs (mostly without `\boxed{}`) in the styles of GPT-3.5/4, PaLM 2 and
    /// chat models, graded by hand and by Hugging Face's math-verify. retort must agree with
    /// math-verify on ≥ 85 % of them and with the hand grade on ≥ 95 %; every disagreement
    /// is printed (run with `--nocapture`), with who was right by the hand grade.
    #[test]
    fn free_form_outputs_against_math_verify() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/math_verify_freeform.jsonl");
        let text = std::fs::read_to_string(path).expect("fixture tests/fixtures/math_verify_freeform.jsonl");
        let rows: Vec<FreeFormRow> = text
            .lines()
            .enumerate()
            .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path} line {}: {e}", i + 1)))
            .collect();
        assert!(rows.len() >= 150, "fixture has only {} rows", rows.len());
        let opts = MathOptions::default();
        let (mut with_mv, mut with_hand, mut mv_with_hand) = (0, 0, 0);
        for (i, row) in rows.iter().enumerate() {
            let v = verify_math(&row.prediction, &row.gold, &opts);
            with_mv += usize::from(v.correct == row.math_verify);
            with_hand += usize::from(v.correct == row.expected);
            mv_with_hand += usize::from(row.math_verify == row.expected);
            if v.correct != row.math_verify || v.correct != row.expected {
                let right = if v.correct == row.expected { "retort right" } else { "retort WRONG" };
                println!(
                    "  line {} ({}): retort {} math-verify {} hand {} [{right}] extracted {:?} by {:?}: {}",
                    i + 1, row.note, v.correct, row.math_verify, row.expected, v.extracted, v.method, v.reason
                );
            }
        }
        let n = rows.len() as f64;
        let (mv_rate, hand_rate) = (with_mv as f64 / n, with_hand as f64 / n);
        println!(
            "{} free-form rows: retort agrees with math-verify on {with_mv} ({:.1} %), with the hand grade on {with_hand} ({:.1} %); math-verify with the hand grade on {mv_with_hand} ({:.1} %)",
            rows.len(), 100.0 * mv_rate, 100.0 * hand_rate, 100.0 * mv_with_hand as f64 / n
        );
        assert!(mv_rate >= 0.85, "agreement with math-verify {mv_rate:.3} < 0.85");
        assert!(hand_rate >= 0.95, "agreement with the hand grade {hand_rate:.3} < 0.95");
    }

    #[derive(Deserialize)]
    struct Row {
        prediction: String,
        gold: String,
        expected: bool,
        #[serde(default)]
        note: String,
    }

    /// The hand-graded table: accuracy must be ≥ 0.97; every disagreement is printed.
    #[test]
    fn hand_graded_table_accuracy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/math_equiv.jsonl");
        let text = std::fs::read_to_string(path).expect("fixture tests/fixtures/math_equiv.jsonl");
        let opts = MathOptions::default();
        let rows: Vec<Row> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path} line {}: {e}", i + 1)))
            .collect();
        assert!(rows.len() >= 200, "fixture has only {} rows", rows.len());
        let mut failures = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let v = verify_math(&row.prediction, &row.gold, &opts);
            if v.correct != row.expected {
                failures.push(format!(
                    "line {}: pred {:?} gold {:?} expected {} got {} [{:?} {:?}] {} ({})",
                    i + 1, row.prediction, row.gold, row.expected, v.correct, v.method, v.extracted, v.reason, row.note
                ));
            }
        }
        let accuracy = 1.0 - failures.len() as f64 / rows.len() as f64;
        println!("math verifier accuracy on {} hand-graded rows: {accuracy:.4}", rows.len());
        for f in &failures {
            println!("  {f}");
        }
        assert!(accuracy >= 0.97, "accuracy {accuracy:.4} < 0.97; failures:\n{}", failures.join("\n"));
    }
}
