//! A rule-based verifier for GSM8K / MATH / AIME-style final answers (research/rl-spec.md
//! §7.2: +1 correct, −1 wrong, −2 without `\boxed`; the reward mapping lives with the task).
//!
//! Three stages, each reported so a wrong reward can be traced:
//! 1. **Extraction** of the final answer from a completion, in a configurable order
//!    ([`Extraction`]): the last `\boxed{…}`/`\fbox{…}`, an "Answer: …" / "The answer is …" /
//!    "#### …" line, the whole completion when it is itself a short answer, the last `$…$`
//!    span, the last number.
//! 2. **Normalisation** of LaTeX and prose decorations ([`normalize_answer`]).
//! 3. **Equivalence**: exact after normalisation, numeric within a relative tolerance, or
//!    symbolic by evaluating both expressions at seeded random points ([`answers_equivalent`]).
//!
//! The expression parser is written here rather than taken from crates.io: the evaluator
//! crates know neither LaTeX (`\frac12`, `\sqrt2`, `\pi`) nor implicit multiplication
//! (`2x`, `(x-1)(x+1)`), which is most of the work; besides, evalexpr 13.1 is AGPL-3.0-only
//! (this crate is MIT/Apache) and meval's last release, 0.2.0, dates from 2017.
//!
//! Decisions a grader could make either way, fixed here:
//! - A percent sign is a unit label: "10%" equals "10", not "0.1" (as in the MATH reference
//!   normaliser). [`PercentRule::AlsoFraction`] additionally accepts value/100.
//! - A digit followed directly by `\frac` of two integers is a mixed number: `2\frac12` = 2.5.
//! - Bare lists "1, 2" and sets `\{1,2\}` compare as unordered multisets; parenthesised or
//!   bracketed tuples/intervals compare in order and their brackets must match.
//! - `\log` is the natural logarithm; `e` and `i` are ordinary variables.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

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

/// How the final answer was found in a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extraction {
    /// Content of the last `\boxed{…}` or `\fbox{…}` (nested braces allowed).
    Boxed,
    /// The rest of the last line with "final answer", "the answer is", "answer:" or "####".
    AnswerLine,
    /// The whole completion, when it is one short line that parses as a math answer or is
    /// a single word.
    Bare,
    /// The last inline-math span `$…$` (or `\(…\)`) that parses as an answer, for prose
    /// that ends "… is $\frac{5}{36}$." without a box.
    LastMath,
    /// The last number in the text (integers, decimals, "1,234", fractions "3/4").
    LastNumber,
    /// Nothing found; only appears in verdicts.
    NotFound,
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
            order: vec![Extraction::Boxed, Extraction::AnswerLine, Extraction::Bare, Extraction::LastMath, Extraction::LastNumber],
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

impl From<&MathVerdict> for super::Sample {
    fn from(v: &MathVerdict) -> Self {
        super::Sample { canonical: v.canonical(), correct: v.correct }
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

// ───────────────────────────── extraction ─────────────────────────────

/// The final answer of a completion by the first method in `order` that finds one.
pub fn extract_answer(completion: &str, order: &[Extraction]) -> Option<(String, Extraction)> {
    order.iter().find_map(|&method| {
        let found = match method {
            Extraction::Boxed => last_boxed(completion),
            Extraction::AnswerLine => answer_line(completion),
            Extraction::Bare => bare_answer(completion),
            Extraction::LastMath => last_math_span(completion),
            Extraction::LastNumber => last_number(completion),
            Extraction::NotFound => None,
        };
        found.filter(|s| !s.trim().is_empty()).map(|s| (s, method))
    })
}

/// The gold answer: the last `\boxed{…}` if any, else the text after the last "####"
/// (GSM8K solutions), else the whole string.
pub fn extract_gold(gold: &str) -> String {
    if let Some(b) = last_boxed(gold) {
        return b;
    }
    if let Some(pos) = gold.rfind("####") {
        return gold[pos + 4..].trim().to_string();
    }
    gold.trim().to_string()
}

/// Where every `{` of a string closes, found in one pass with a stack. Callers look groups up
/// here instead of scanning forward from each brace: a scan per brace costs O(depth · n) on
/// nested input and O(n²) on a run of unclosed braces (`\boxed{\boxed{…`, `{{{…`).
struct Braces {
    /// `close[i]`: byte index of the `}` matching a `{` at byte `i`; `usize::MAX` for bytes
    /// that are not a `{` or whose group never closes.
    close: Vec<usize>,
}

impl Braces {
    fn new(s: &str) -> Self {
        tally(s.len());
        let mut close = vec![usize::MAX; s.len()];
        let mut open = Vec::new();
        for (i, b) in s.bytes().enumerate() {
            match b {
                b'{' => open.push(i),
                // A `}` with nothing open closes nothing, as for a forward scan from any `{`.
                b'}' => {
                    if let Some(o) = open.pop() {
                        close[o] = i;
                    }
                }
                _ => {}
            }
        }
        Braces { close }
    }

    /// Content of the balanced `{…}` group that opens at byte `open` of `s` (the string the
    /// table was built from), and the byte index just past its closing brace.
    fn group<'a>(&self, s: &'a str, open: usize) -> Option<(&'a str, usize)> {
        let close = *self.close.get(open)?;
        (close != usize::MAX).then(|| (&s[open + 1..close], close + 1))
    }
}

/// The last `\boxed{…}` / `\fbox{…}` (or `\boxed 5`), by position; unterminated ones skipped.
fn last_boxed(text: &str) -> Option<String> {
    let mut starts: Vec<(usize, &str)> =
        ["\\boxed", "\\fbox"].into_iter().flat_map(|name| text.match_indices(name)).collect();
    // Latest first: the first one with content wins, and only its content is copied.
    starts.sort_unstable_by_key(|&(pos, _)| std::cmp::Reverse(pos));
    let mut braces: Option<Braces> = None;
    starts.into_iter().find_map(|(pos, name)| {
        let after = pos + name.len();
        let rest = &text[after..];
        if rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return None; // a longer command such as \boxedx
        }
        let skipped = rest.len() - rest.trim_start().len();
        if rest[skipped..].starts_with('{') {
            let braces = braces.get_or_insert_with(|| Braces::new(text));
            braces.group(text, after + skipped).map(|(c, _)| c.trim().to_string())
        } else if skipped > 0 {
            // "\boxed 5": the token up to whitespace or '$'.
            let tok: String = rest[skipped..].chars().take_while(|c| !c.is_whitespace() && *c != '$').collect();
            Some(tok)
        } else {
            None
        }
    })
}

/// The rest of the line after the last answer marker.
fn answer_line(text: &str) -> Option<String> {
    tally(text.len());
    let lower = text.to_ascii_lowercase(); // ASCII lowering keeps byte offsets
    const MARKERS: [&str; 6] =
        ["final answer is", "final answer:", "the answer is", "answer is:", "answer:", "####"];
    let (pos, marker) = MARKERS
        .iter()
        .filter_map(|m| lower.rfind(m).map(|p| (p, *m)))
        .max_by_key(|&(p, m)| (p + m.len(), m.len()))?;
    let rest = &text[pos + marker.len()..];
    let line = rest.lines().next().unwrap_or("");
    let line = line.trim_start_matches(|c: char| c.is_whitespace() || c == ':' || c == '*');
    let line = line.trim_end_matches(|c: char| c.is_whitespace() || c == '.' || c == '*');
    Some(first_clause(line).trim().to_string())
}

/// The answer part of an answer line: a leading `$…$` math span if there is one, else the
/// text up to the first sentence end (". ") or a top-level ", word" ("4, since …").
fn first_clause(line: &str) -> &str {
    if let Some(inner) = line.strip_prefix('$') {
        let inner = inner.trim_start_matches('$');
        if let Some(end) = inner.find('$') {
            return &inner[..end];
        }
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut depth = 0i32;
    // End of the last word found free of prose. A later comma inside that word sees only
    // the rest of it, which is prose-free too, so the word is not read again: re-reading it
    // at every comma made "a,a,a,…" quadratic.
    let mut prose_free_until = 0;
    for (k, &(i, c)) in chars.iter().enumerate() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '.' if chars.get(k + 1).is_some_and(|(_, n)| n.is_whitespace()) => return &line[..i],
            ',' if depth == 0 && i + 1 >= prose_free_until => {
                // The first whitespace-separated word after the comma.
                let after = &line[i + 1..];
                let start = line.len() - after.trim_start().len();
                let end = line[start..].find(char::is_whitespace).map_or(line.len(), |e| start + e);
                if has_prose_word(&line[start..end]) {
                    return &line[..i];
                }
                prose_free_until = end;
            }
            _ => {}
        }
    }
    line.trim_end_matches('.')
}

/// Short words allowed in a bare answer: function and constant names the parser knows.
const KNOWN_WORDS: [&str; 9] = ["sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "infty"];

/// True when `s` has a run of three or more letters that is not a LaTeX command or a known
/// function name, i.e. prose rather than a formula.
fn has_prose_word(s: &str) -> bool {
    tally(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let is_command = start > 0 && chars[start - 1] == '\\';
            let word: String = chars[start..i].iter().collect::<String>().to_ascii_lowercase();
            if !is_command && word.len() >= 3 && !KNOWN_WORDS.contains(&word.as_str()) {
                return true;
            }
        } else {
            i += 1;
        }
    }
    false
}

/// The whole completion when it is one short line that is itself an answer: a formula,
/// tuple or list that parses, or a single word ("even", "\\text{Monday}").
fn bare_answer(text: &str) -> Option<String> {
    let t = text.trim();
    if t.is_empty() || t.contains('\n') || t.chars().count() > 80 {
        return None;
    }
    let norm = normalize_answer(t);
    let single_word = t.split_whitespace().count() == 1
        && !norm.text.is_empty()
        && norm.text.chars().all(|c| c.is_ascii_alphabetic());
    if !single_word && (has_prose_word(&norm.text) || parse_answer(&norm.text).is_err()) {
        return None;
    }
    Some(t.to_string())
}

/// The last `$…$`, `$$…$$` or `\(…\)` span whose normalised content parses as an answer.
fn last_math_span(text: &str) -> Option<String> {
    tally(text.len());
    let mut spans: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('$') {
        let after = rest[open..].trim_start_matches('$');
        let Some(close) = after.find('$') else { break };
        spans.push(&after[..close]);
        rest = after[close..].trim_start_matches('$');
    }
    let mut rest = text;
    while let Some(open) = rest.find("\\(") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("\\)") else { break };
        spans.push(&after[..close]);
        rest = &after[close + 2..];
    }
    // Prefer the span that ends last in the text.
    let end_of = |span: &str| span.as_ptr() as usize - text.as_ptr() as usize + span.len();
    spans.sort_by_key(|sp| end_of(sp));
    spans.into_iter().rev().find_map(|span| {
        let norm = normalize_answer(span);
        let ok = !norm.text.is_empty() && !has_prose_word(&norm.text) && parse_answer(&norm.text).is_ok();
        ok.then(|| span.trim().to_string())
    })
}

/// The last number: `-?digits(,ddd)*(.digits)?(/digits)?`, commas dropped.
fn last_number(text: &str) -> Option<String> {
    tally(text.len());
    let b = text.as_bytes();
    let mut last: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.'));
        if !starts {
            i += 1;
            continue;
        }
        let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
        let mut j = i;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        // Thousands groups: ",ddd" not followed by another digit.
        while j + 3 < b.len() && b[j] == b',' && b[j + 1..j + 4].iter().all(u8::is_ascii_digit)
            && (j + 4 == b.len() || !b[j + 4].is_ascii_digit())
        {
            j += 4;
        }
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        if j + 1 < b.len() && b[j] == b'/' && b[j + 1].is_ascii_digit() {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        last = Some((start, j));
        i = j;
    }
    last.map(|(s, e)| text[s..e].replace(',', ""))
}

// ───────────────────────────── normalisation ─────────────────────────────

/// A normalised answer: whitespace-free canonical text and whether a percent sign was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    pub percent: bool,
}

/// Strip LaTeX and prose decorations that do not change the value: `$`, `\left`/`\right`,
/// spacing commands, `\text{…}`-style wrappers, degrees, percent, units and trailing words
/// after a number, "x =" prefixes, thousands separators, whitespace; `\dfrac`/`\tfrac` become
/// `\frac` and `\frac12`/`\sqrt2` get explicit braces.
pub fn normalize_answer(raw: &str) -> Normalized {
    tally(raw.len());
    let mut s = raw.trim().to_string();
    for (from, to) in [
        ("\\left.", ""),
        ("\\right.", ""),
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", " "),
        ("\\;", " "),
        ("\\:", " "),
        ("\\ ", " "),
        ("\\qquad", " "),
        ("\\quad", " "),
        ("~", " "),
        ("\\displaystyle", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("{,}", ","),
        ("−", "-"),
        ("\\leqslant", "\\le"),
        ("\\geqslant", "\\ge"),
        ("\\leq", "\\le"),
        ("\\geq", "\\ge"),
        ("\\neq", "\\ne"),
        ("≤", "\\le "),
        ("≥", "\\ge "),
        ("<=", "\\le "),
        (">=", "\\ge "),
        ("\\lt", "<"),
        ("\\gt", ">"),
    ] {
        s = s.replace(from, to);
    }
    s = unwrap_text_commands(&s);
    for deg in ["^{\\circ}", "^\\circ", "^{°}", "\\circ", "°", "\\degree"] {
        s = s.replace(deg, "");
    }
    let percent = s.contains('%');
    s = s.replace("\\%", "").replace('%', "");
    s = s.replace("\\$", "").replace('$', "");
    let mut s = s.trim().trim_end_matches('.').trim().to_string();
    if let Some(rhs) = strip_variable_prefix(&s) {
        s = rhs;
    }
    s = strip_trailing_units(&s);
    s = strip_thousands(&s);
    s = expand_repeating_decimals(&s);
    let mut text = strip_outer_braces(&canonical_latex_args(&squeeze_spaces(&s))).to_string();
    if let Some(rest) = text.strip_prefix('+') {
        text = rest.to_string();
    }
    if let Some(n) = number_word(&text) {
        text = n.to_string();
    }
    Normalized { text, percent }
}

/// "five" → 5: a whole answer written as one English number word (0–20, tens, 100, 1000).
fn number_word(s: &str) -> Option<u32> {
    const SMALL: [&str; 21] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
    ];
    const TENS: [(&str, u32); 9] = [
        ("thirty", 30), ("forty", 40), ("fifty", 50), ("sixty", 60), ("seventy", 70), ("eighty", 80),
        ("ninety", 90), ("hundred", 100), ("thousand", 1000),
    ];
    let w = s.to_ascii_lowercase();
    if let Some(i) = SMALL.iter().position(|&x| x == w) {
        return Some(i as u32);
    }
    TENS.iter().find(|(x, _)| *x == w).map(|&(_, v)| v)
}

/// "0.1\overline{6}" → "(15)/(90)": a repeating decimal I.F(R) becomes the exact fraction
/// (IFR − IF) / (10^|F| · (10^|R| − 1)). Left as is when the digits do not fit in u128.
/// Occurrences are expanded from left to right until one does not qualify; that one and the
/// rest stay as they are.
fn expand_repeating_decimals(s: &str) -> String {
    const MARK: &str = "\\overline{";
    tally(s.len());
    if !s.contains(MARK) {
        return s.to_string();
    }
    let braces = Braces::new(s);
    let mut out = String::with_capacity(s.len());
    // `s[..done]` is in `out`. A loop rather than recursion on the tail: many occurrences
    // neither copy the tail once each (quadratic) nor nest one stack frame each.
    let mut done = 0;
    while let Some(found) = s[done..].find(MARK) {
        let pos = done + found;
        let Some((repeat, end)) = braces.group(s, pos + MARK.len() - 1) else { break };
        let head = &s[done..pos];
        let digits_start = head.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.').len();
        let number = &head[digits_start..];
        let Some((int_part, frac_part)) = number.split_once('.') else { break };
        if repeat.is_empty() || !repeat.chars().all(|c| c.is_ascii_digit()) {
            break;
        }
        let fraction = || -> Option<String> {
            let whole: u128 = format!("0{int_part}{frac_part}{repeat}").parse().ok()?;
            let prefix: u128 = format!("0{int_part}{frac_part}").parse().ok()?;
            let scale = 10u128.checked_pow(frac_part.len() as u32)?;
            let period = 10u128.checked_pow(repeat.len() as u32)?.checked_sub(1)?;
            Some(format!("({})/({})", whole.checked_sub(prefix)?, scale.checked_mul(period)?))
        };
        let Some(f) = fraction() else { break };
        out.push_str(&head[..digits_start]);
        out.push_str(&f);
        done = end;
    }
    out.push_str(&s[done..]);
    out
}

/// Replace `\text{…}`, `\textbf{…}`, `\mathrm{…}`, … by their content.
fn unwrap_text_commands(s: &str) -> String {
    const WRAPPERS: [&str; 10] =
        ["text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mbox", "operatorname", "textnormal"];
    tally(s.len());
    let braces = Braces::new(s);
    let mut out = String::with_capacity(s.len());
    // Closing braces of the wrappers being unwrapped, the innermost (nearest) last. Content is
    // unwrapped in place in the same pass: recursing into it re-scanned each level's content
    // (quadratic in the nesting) and took a stack frame per level.
    let mut closes: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if closes.last() == Some(&i) {
            closes.pop();
            i += 1;
            continue;
        }
        let rest = &s[i..];
        if let Some(after_slash) = rest.strip_prefix('\\') {
            let name_len = after_slash.bytes().take_while(u8::is_ascii_alphabetic).count();
            if WRAPPERS.contains(&&after_slash[..name_len]) {
                let mut open = i + 1 + name_len;
                while s[open..].starts_with(' ') {
                    open += 1;
                }
                if let Some((_, end)) = braces.group(s, open) {
                    closes.push(end - 1);
                    i = open + 1;
                    continue;
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// "x = 3" → "3": one '=' whose left side is a single variable (a letter, optionally with a
/// subscript, or a Greek command). Equations with a longer left side are kept.
fn strip_variable_prefix(s: &str) -> Option<String> {
    if s.matches('=').count() != 1 {
        return None;
    }
    let (lhs, rhs) = s.split_once('=')?;
    let lhs = lhs.trim();
    // "f(x) = …": a one-letter function of one-letter arguments is a name, too.
    let lhs = match lhs.split_once('(') {
        Some((f, args)) if args.ends_with(')') && args[..args.len() - 1].split(',').all(|a| a.trim().len() == 1) => f.trim(),
        _ => lhs,
    };
    let name = lhs.split('_').next().unwrap_or("");
    let single_letter = name.len() == 1 && name.chars().all(|c| c.is_ascii_alphabetic());
    let greek = name.starts_with('\\') && name.len() > 1 && name[1..].chars().all(|c| c.is_ascii_alphabetic());
    let ok = (single_letter || greek) && !rhs.trim().is_empty();
    ok.then(|| rhs.trim().to_string())
}

const UNITS: [&str; 48] = [
    "cm", "mm", "km", "meter", "meters", "metre", "metres", "inch", "inches", "in", "ft", "foot", "feet",
    "yard", "yards", "mile", "miles", "mph", "kg", "gram", "grams", "pound", "pounds", "lb", "lbs", "oz",
    "ounce", "ounces", "dollar", "dollars", "cent", "cents", "degree", "degrees", "unit", "units",
    "sq", "square", "cubic", "hour", "hours", "minute", "minutes", "second", "seconds", "day", "days",
    "liters",
];

/// True when `s` contains no letters other than LaTeX command names: a number or formula in
/// constants only, after which trailing words must be units or labels.
fn letters_only_in_commands(s: &str) -> bool {
    tally(s.len());
    let mut prev_backslash_run = false;
    for c in s.chars() {
        if c == '\\' {
            prev_backslash_run = true;
        } else if c.is_ascii_alphabetic() {
            if !prev_backslash_run {
                return false;
            }
        } else {
            prev_backslash_run = false;
        }
    }
    true
}

/// A trailing unit token: a unit word (any case) with an optional power "^2", "^{3}".
fn is_unit_token(tok: &str) -> bool {
    let base = tok.split('^').next().unwrap_or(tok).trim_end_matches('.');
    UNITS.contains(&base.to_ascii_lowercase().as_str())
}

/// Drop units and label words after a numeric answer: "5 cm^2" → "5", "18 eggs" → "18",
/// "12cm" → "12". Only when what precedes is free of bare letters, so "2x + 1" is untouched.
fn strip_trailing_units(s: &str) -> String {
    let mut tokens: Vec<&str> = s.split_whitespace().collect();
    while tokens.len() > 1 {
        let last = tokens[tokens.len() - 1];
        let bare = last.trim_end_matches('.');
        let bare = bare.strip_prefix('(').and_then(|b| b.strip_suffix(')')).unwrap_or(bare);
        let is_word = bare.len() >= 2 && bare.chars().all(|c| c.is_ascii_alphabetic());
        let prefix = tokens[..tokens.len() - 1].join(" ");
        if (is_word || is_unit_token(last)) && letters_only_in_commands(&prefix) {
            tokens.pop();
        } else {
            break;
        }
    }
    let mut joined = tokens.join(" ");
    // A unit glued to a number: "12cm", "3.5km^2".
    for unit in UNITS.iter().filter(|u| u.len() >= 2) {
        let lower = joined.to_ascii_lowercase();
        let base_end = lower.find('^').filter(|&p| lower[p..].chars().skip(1).all(|c| c.is_ascii_digit() || "{}".contains(c))).unwrap_or(lower.len());
        if lower[..base_end].ends_with(unit) {
            let cut = base_end - unit.len();
            if cut > 0 && joined.as_bytes()[cut - 1].is_ascii_digit() && letters_only_in_commands(&joined[..cut]) {
                joined.truncate(cut);
                break;
            }
        }
    }
    joined
}

/// "1,234,567.5" → "1234567.5" when the whole answer is one such number.
fn strip_thousands(s: &str) -> String {
    let body = s.strip_prefix('-').unwrap_or(s);
    let int_part = body.split('.').next().unwrap_or("");
    let frac_ok = body.split('.').nth(1).is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()));
    let groups: Vec<&str> = int_part.split(',').collect();
    let grouped = groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
        && body.matches('.').count() <= 1;
    if grouped && frac_ok {
        s.replace(',', "")
    } else {
        s.to_string()
    }
}

/// Remove whitespace, except one space between a command name and a following letter
/// (`\pi r` must not become `\pir`).
fn squeeze_spaces(s: &str) -> String {
    tally(s.len());
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    // Whether `out` ends with a command name (a backslash and one or more letters), kept up to
    // date as characters are pushed: reading the end of `out` back at each space made
    // "a a a …" quadratic.
    let (mut after_backslash, mut in_command) = (false, false);
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && c.is_ascii_alphabetic() && in_command {
            out.push(' ');
            (after_backslash, in_command) = (false, false);
        }
        pending_space = false;
        out.push(c);
        in_command = c.is_ascii_alphabetic() && (in_command || after_backslash);
        after_backslash = c == '\\';
    }
    out
}

/// Give `\frac` and `\sqrt` explicit brace arguments: `\frac12` → `\frac{1}{2}`,
/// `\frac\pi2` → `\frac{\pi}{2}`, `\sqrt2` → `\sqrt{2}`.
///
/// Each argument is rewritten the same way, as if it were a text of its own: a `\frac` at
/// its end takes empty arguments rather than reaching past it.
fn canonical_latex_args(s: &str) -> String {
    tally(s.len());
    let braces = Braces::new(s);
    let mut out = String::with_capacity(s.len() + 8);
    // The text and the arguments being rewritten, innermost last, each with the command
    // arguments it still has to take. A stack rather than recursion into each argument: the
    // recursion re-scanned every level of `\frac{\frac{…}}` (quadratic in the depth) and took a
    // stack frame per level.
    struct Span {
        pos: usize,
        end: usize,
        args_left: u8,
    }
    let mut stack = vec![Span { pos: 0, end: s.len(), args_left: 0 }];
    // The first `]` at or after `.0` is at `.1` (`s.len()` if none). Searches start at
    // increasing positions, so one answer serves until passed: one scan of the text in all,
    // not one to its end per `\sqrt[`.
    let mut bracket = (usize::MAX, 0);
    while let Some(top) = stack.last_mut() {
        if top.args_left > 0 {
            top.args_left -= 1;
            let (start, end, next) = latex_arg(s, top.pos, top.end, &braces);
            top.pos = next;
            out.push('{');
            stack.push(Span { pos: start, end, args_left: 0 });
            continue;
        }
        if top.pos >= top.end {
            stack.pop();
            if !stack.is_empty() {
                out.push('}'); // the end of an argument
            }
            continue;
        }
        let rest = &s[top.pos..top.end];
        let cmd = ["\\frac", "\\sqrt"].into_iter().find(|c| {
            rest.starts_with(c) && !rest[c.len()..].starts_with(|ch: char| ch.is_ascii_alphabetic())
        });
        let Some(cmd) = cmd else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            top.pos += c.len_utf8();
            continue;
        };
        out.push_str(cmd);
        top.pos += cmd.len();
        if cmd == "\\sqrt" && s[top.pos..top.end].starts_with('[') {
            if !(bracket.0 <= top.pos && top.pos <= bracket.1) {
                bracket = (top.pos, s[top.pos..].find(']').map_or(s.len(), |k| top.pos + k));
            }
            if bracket.1 < top.end {
                out.push_str(&s[top.pos..=bracket.1]);
                top.pos = bracket.1 + 1;
            }
        }
        top.args_left = if cmd == "\\frac" { 2 } else { 1 };
    }
    out
}

/// One LaTeX argument at byte `i`, not reaching past byte `end`: a `{…}` group, a `\command`,
/// or a single character. Returns where its text starts and ends and where the next one begins.
fn latex_arg(s: &str, mut i: usize, end: usize, braces: &Braces) -> (usize, usize, usize) {
    while s[i..end].starts_with(' ') {
        i += 1;
    }
    let rest = &s[i..end];
    if rest.starts_with('{') {
        if let Some((content, next)) = braces.group(s, i).filter(|&(_, next)| next <= end) {
            return (i + 1, i + 1 + content.len(), next);
        }
    }
    if let Some(after) = rest.strip_prefix('\\') {
        let name_len = after.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        // A command name, or else the single (possibly multi-byte) symbol after the backslash.
        let len = 1 + if name_len > 0 { name_len } else { after.chars().next().map_or(0, char::len_utf8) };
        return (i, i + len, i + len);
    }
    match rest.chars().next() {
        Some(c) => (i, i + c.len_utf8(), i + c.len_utf8()),
        None => (i, i, i),
    }
}

/// "{{5}}" → "5": peel balanced groups that span the whole text, as long as there are any.
/// One brace table serves every layer (a fresh scan and copy per layer was quadratic).
fn strip_outer_braces(s: &str) -> &str {
    if !s.starts_with('{') {
        return s;
    }
    let braces = Braces::new(s);
    let (mut start, mut end) = (0, s.len());
    while start < end && s.as_bytes()[start] == b'{' && braces.close[start] == end - 1 {
        start += 1;
        end -= 1;
    }
    &s[start..end]
}

// ───────────────────────────── answer structure ─────────────────────────────

/// The shape of an answer: one expression, an ordered tuple/interval, or an unordered list.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Single(String),
    /// "(1,2)", "[0,1)": brackets and items in order.
    Tuple { open: char, close: char, items: Vec<String> },
    /// "1,2,3" or "\{1,2\}": items in any order.
    Unordered(Vec<String>),
}

/// Split at commas that are not inside (), [], {}.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(String::new());
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

fn shape_of(s: &str) -> Shape {
    if let Some(inner) = s.strip_prefix("\\{").and_then(|r| r.strip_suffix("\\}")) {
        return Shape::Unordered(split_top_level(inner));
    }
    let open = s.chars().next();
    let close = s.chars().last();
    if let (Some(o @ ('(' | '[')), Some(c @ (')' | ']'))) = (open, close) {
        let inner = &s[1..s.len() - 1];
        let items = split_top_level(inner);
        // Only a tuple if the outer brackets enclose everything: "(1)+(2)" is one expression.
        if items.len() > 1 && bracket_closes_at_end(s) {
            return Shape::Tuple { open: o, close: c, items };
        }
    }
    let items = split_top_level(s);
    if items.len() > 1 {
        Shape::Unordered(items)
    } else {
        Shape::Single(s.to_string())
    }
}

/// Whether the first character's bracket stays open until the last character.
fn bracket_closes_at_end(s: &str) -> bool {
    let mut depth = 0i32;
    let n = s.chars().count();
    for (k, c) in s.chars().enumerate() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && k + 1 < n {
            return false;
        }
    }
    true
}

/// Parse an answer for the `Bare` extraction check: every item must parse as an expression.
fn parse_answer(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    let items = match shape_of(s) {
        Shape::Single(x) => vec![x],
        Shape::Tuple { items, .. } | Shape::Unordered(items) => items,
    };
    items.iter().try_for_each(|x| match split_relation(x) {
        Some((lhs, _, rhs)) => parse_expr(&lhs).and_then(|_| parse_expr(&rhs)).map(|_| ()),
        None => parse_expr(x).map(|_| ()),
    })
}

// ───────────────────────────── equivalence ─────────────────────────────

/// Whether two answers (already extracted) are equivalent, and why.
pub fn answers_equivalent(pred: &str, gold: &str, opts: &MathOptions) -> (bool, String) {
    let p = normalize_answer(pred);
    let g = normalize_answer(gold);
    if p.text.is_empty() {
        return (false, "empty answer after normalisation".into());
    }
    if p.text == g.text {
        return (true, format!("exact match after normalisation: '{}'", p.text));
    }
    let (ok, reason) = shapes_equivalent(&shape_of(&p.text), &shape_of(&g.text), opts);
    if ok || opts.percent == PercentRule::StripSign || p.percent == g.percent {
        return (ok, reason);
    }
    // AlsoFraction: retry with the percent side divided by 100.
    let (pp, gg) = if p.percent {
        (format!("({})/100", p.text), g.text.clone())
    } else {
        (p.text.clone(), format!("({})/100", g.text))
    };
    match scalars_equivalent(&pp, &gg, opts) {
        (true, r) => (true, format!("{r} (percent read as a fraction)")),
        _ => (false, reason),
    }
}

fn shapes_equivalent(p: &Shape, g: &Shape, opts: &MathOptions) -> (bool, String) {
    match (p, g) {
        (Shape::Single(a), Shape::Single(b)) => scalars_equivalent(a, b, opts),
        (Shape::Tuple { open: po, close: pc, items: pi }, Shape::Tuple { open: go, close: gc, items: gi }) => {
            if (po, pc) != (go, gc) {
                return (false, format!("brackets differ: {po}…{pc} vs {go}…{gc}"));
            }
            ordered_items_equivalent(pi, gi, opts)
        }
        // A bare list against a tuple: read the list in order ("1, 2" for the point (1,2)).
        (Shape::Unordered(pi), Shape::Tuple { open: '(', close: ')', items: gi })
        | (Shape::Tuple { open: '(', close: ')', items: pi }, Shape::Unordered(gi)) => {
            ordered_items_equivalent(pi, gi, opts)
        }
        (Shape::Unordered(pi), Shape::Unordered(gi)) => unordered_items_equivalent(pi, gi, opts),
        _ => (false, "answers have different shapes (single value vs tuple/list)".into()),
    }
}

fn ordered_items_equivalent(p: &[String], g: &[String], opts: &MathOptions) -> (bool, String) {
    if p.len() != g.len() {
        return (false, format!("{} items vs {} expected", p.len(), g.len()));
    }
    for (k, (a, b)) in p.iter().zip(g).enumerate() {
        let (ok, why) = scalars_equivalent(a, b, opts);
        if !ok {
            return (false, format!("item {} differs: {why}", k + 1));
        }
    }
    (true, format!("all {} items equal in order", p.len()))
}

/// Multiset matching: each gold item must be matched by a distinct predicted item.
fn unordered_items_equivalent(p: &[String], g: &[String], opts: &MathOptions) -> (bool, String) {
    if p.len() != g.len() {
        return (false, format!("{} items vs {} expected", p.len(), g.len()));
    }
    let mut used = vec![false; p.len()];
    for b in g {
        let hit = (0..p.len()).find(|&k| !used[k] && scalars_equivalent(&p[k], b, opts).0);
        match hit {
            Some(k) => used[k] = true,
            None => return (false, format!("expected item '{b}' not found")),
        }
    }
    (true, format!("all {} items matched (any order)", p.len()))
}

/// Relations an answer may state, after normalisation (`\leq` → `\le`, `>=` → `\ge`, …).
const RELATIONS: [&str; 6] = ["\\le", "\\ge", "\\ne", "<", ">", "="];

/// The mirror image of a relation: `a ≤ b` is `b ≥ a`.
fn flipped(rel: &str) -> &'static str {
    match rel {
        "\\le" => "\\ge",
        "\\ge" => "\\le",
        "<" => ">",
        ">" => "<",
        "\\ne" => "\\ne",
        _ => "=",
    }
}

/// Split "lhs REL rhs" at the only relation symbol; None without exactly one.
fn split_relation(s: &str) -> Option<(String, &'static str, String)> {
    let mut found: Option<(usize, &'static str)> = None;
    let mut count = 0;
    for rel in RELATIONS {
        for (pos, _) in s.match_indices(rel) {
            let next = s[pos + rel.len()..].chars().next();
            if rel.starts_with('\\') && next.is_some_and(|c| c.is_ascii_alphabetic()) {
                continue; // a longer command such as \left or \ln
            }
            count += 1;
            found = Some((pos, rel));
        }
    }
    let (pos, rel) = found.filter(|_| count == 1)?;
    Some((s[..pos].trim().to_string(), rel, s[pos + rel.len()..].trim().to_string()))
}

/// Two relations are equivalent when they are the same relation between equivalent sides,
/// possibly written mirrored ("x \le 3" and "3 \ge x").
fn relations_equivalent(a: (&str, &str, &str), b: (&str, &str, &str), opts: &MathOptions) -> (bool, String) {
    let sides_match = |l: &str, r: &str| scalars_equivalent(a.0, l, opts).0 && scalars_equivalent(a.2, r, opts).0;
    let direct = a.1 == b.1 && sides_match(b.0, b.2);
    let mirrored = a.1 == flipped(b.1) && sides_match(b.2, b.0);
    let shown = |r: (&str, &str, &str)| format!("{}{}{}", r.0, r.1, r.2);
    if direct || mirrored {
        (true, format!("equivalent relations: {} and {}", shown(a), shown(b)))
    } else {
        (false, format!("relations differ: {} vs {}", shown(a), shown(b)))
    }
}

/// A plain integer literal ("-12", "007"), as its value without leading zeros.
fn integer_literal(s: &str) -> Option<String> {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", s),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0".to_string() } else { format!("{sign}{trimmed}") })
}

fn numbers_close(a: f64, b: f64, rel_tol: f64) -> bool {
    if a == b {
        return true;
    }
    a.is_finite() && b.is_finite() && (a - b).abs() <= rel_tol * a.abs().max(b.abs())
}

/// Compare two single expressions: string, word, numeric, then symbolic.
fn scalars_equivalent(a: &str, b: &str, opts: &MathOptions) -> (bool, String) {
    if a == b {
        return (true, format!("exact match after normalisation: '{a}'"));
    }
    if let (Some((la, rel_a, ra)), Some((lb, rel_b, rb))) = (split_relation(a), split_relation(b)) {
        return relations_equivalent((&la, rel_a, &ra), (&lb, rel_b, &rb), opts);
    }
    if let (Some(x), Some(y)) = (integer_literal(a), integer_literal(b)) {
        // Two integers are equal only exactly: 1000000 ≠ 1000001 although they are within
        // 1e-6 relative; AIME-style "033" equals "33".
        return (x == y, format!("integers {x} vs {y}"));
    }
    if has_prose_word(a) || has_prose_word(b) {
        // Words ("Monday", "even") are compared as text, never as products of letters.
        let same = a.eq_ignore_ascii_case(b);
        return (same, format!("text answers '{a}' vs '{b}' compared case-insensitively"));
    }
    let ea = match parse_expr(a) {
        Ok(e) => e,
        Err(why) => return (false, format!("could not parse '{a}': {why}")),
    };
    let eb = match parse_expr(b) {
        Ok(e) => e,
        Err(why) => return (false, format!("could not parse gold '{b}': {why}")),
    };
    let mut vars = BTreeSet::new();
    ea.variables(&mut vars);
    eb.variables(&mut vars);
    if vars.is_empty() {
        let (va, vb) = (ea.eval(&HashMap::new()), eb.eval(&HashMap::new()));
        return if numbers_close(va, vb, opts.rel_tol) {
            (true, format!("numerically equal: {va} vs {vb}"))
        } else {
            (false, format!("not equal: {va} vs {vb}"))
        };
    }
    symbolic_equivalent(&ea, &eb, &vars, opts)
}

/// Evaluate both at seeded random points with every variable in [0.3, 3.3): equal when at
/// least half the points are defined for both and all defined points agree.
fn symbolic_equivalent(a: &Expr, b: &Expr, vars: &BTreeSet<String>, opts: &MathOptions) -> (bool, String) {
    let mut rng = Rng::new(opts.seed);
    let points = opts.sample_points.max(1);
    let mut defined = 0;
    for _ in 0..points {
        let env: HashMap<String, f64> = vars.iter().map(|v| (v.clone(), 0.3 + 3.0 * rng.f64())).collect();
        let (va, vb) = (a.eval(&env), b.eval(&env));
        if !va.is_finite() || !vb.is_finite() {
            continue;
        }
        defined += 1;
        let scale = va.abs().max(vb.abs()).max(1.0);
        if (va - vb).abs() > opts.rel_tol * scale {
            return (false, format!("differ at a random point: {va} vs {vb}"));
        }
    }
    if defined * 2 < points {
        return (false, format!("only {defined} of {points} random points were defined for both"));
    }
    (true, format!("symbolically equal at {defined} random points"))
}

// ───────────────────────────── expression parser ─────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq)]
enum Func {
    Sqrt,
    Sin,
    Cos,
    Tan,
    Ln,
    Exp,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Var(String),
    Const(f64),
    Func(Func),
    Frac,
    Plus,
    Minus,
    Star,
    Slash,
    Caret,
    Bang,
    Open(char),
    Close(char),
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Num(f64),
    Var(String),
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Call(Func, Box<Expr>),
    /// n-th root: (index, radicand).
    Root(Box<Expr>, Box<Expr>),
    Factorial(Box<Expr>),
}

const GREEK: [&str; 20] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi", "varphi", "omega",
];

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let lit: String = chars[start..i].iter().collect();
            let v: f64 = lit.parse().map_err(|_| format!("bad number '{lit}'"))?;
            toks.push(Tok::Num(v));
        } else if c == '\\' {
            let start = i + 1;
            i = start;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i == start {
                // "\{" "\}" "\|" and friends.
                let sym = chars.get(i).copied().ok_or("trailing backslash")?;
                i += 1;
                match sym {
                    '{' => toks.push(Tok::Open('(')),
                    '}' => toks.push(Tok::Close(')')),
                    other => return Err(format!("unsupported symbol '\\{other}'")),
                }
                continue;
            }
            let name: String = chars[start..i].iter().collect();
            toks.push(command_token(&name)?);
        } else if c.is_ascii_alphabetic() {
            // A known name at i, compared in place: collecting the rest of the word at every
            // letter was quadratic in the length of the word.
            let at_i = |w: &&str| w.chars().enumerate().all(|(k, wc)| chars.get(i + k) == Some(&wc));
            let known = ["sqrt", "pi", "sin", "cos", "tan", "ln", "exp"].into_iter().find(at_i);
            if let Some(w) = known {
                toks.push(command_token(w)?);
                i += w.len();
            } else {
                toks.push(Tok::Var(c.to_string()));
                i += 1;
            }
        } else {
            i += 1;
            toks.push(match c {
                '+' => Tok::Plus,
                '-' => Tok::Minus,
                '*' | '×' | '·' => Tok::Star,
                '/' | '÷' => Tok::Slash,
                '^' => Tok::Caret,
                '!' => Tok::Bang,
                '(' | '[' | '{' => Tok::Open(c),
                ')' | ']' | '}' => Tok::Close(c),
                'π' => Tok::Const(std::f64::consts::PI),
                '∞' => Tok::Const(f64::INFINITY),
                other => return Err(format!("unexpected character '{other}'")),
            });
        }
    }
    Ok(toks)
}

fn command_token(name: &str) -> Result<Tok, String> {
    Ok(match name {
        "frac" => Tok::Frac,
        "sqrt" => Tok::Func(Func::Sqrt),
        "sin" => Tok::Func(Func::Sin),
        "cos" => Tok::Func(Func::Cos),
        "tan" => Tok::Func(Func::Tan),
        "ln" | "log" => Tok::Func(Func::Ln),
        "exp" => Tok::Func(Func::Exp),
        "pi" => Tok::Const(std::f64::consts::PI),
        "infty" | "infin" => Tok::Const(f64::INFINITY),
        "cdot" | "times" | "ast" => Tok::Star,
        "div" => Tok::Slash,
        g if GREEK.contains(&g) => Tok::Var(g.to_string()),
        other => return Err(format!("unsupported command '\\{other}'")),
    })
}

fn parse_expr(s: &str) -> Result<Expr, String> {
    tally(s.len());
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    if toks.len() > MAX_TOKENS {
        return Err(format!("longer than {MAX_TOKENS} tokens"));
    }
    let mut p = Parser { toks, pos: 0, depth: 0, mixed_attempt: None };
    let e = p.sum()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} at token {}", p.pos)),
    }
}

/// Recursive descent: sum → product (explicit or implicit) → unary minus → power → atom.
/// `-x^2` is −(x²); `2^-1` is allowed; implicit products bind like `*` and `/` (left to right).
struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Current nesting of sums, unary signs and unbraced command arguments, bounded so hostile
    /// input cannot overflow the stack (model outputs can contain thousands of brackets).
    depth: usize,
    /// The arguments of the `\frac` at token `.0`, parsed (ending at token `.3`) when reading it
    /// as the fraction part of a mixed number failed. Parsing them again from scratch when the
    /// `\frac` is then read on its own doubled the work per level of `2\frac{2\frac{…}}{…}`.
    mixed_attempt: Option<(usize, Expr, Expr, usize)>,
}

/// Deepest nesting the parser accepts; real answers stay far below.
const MAX_DEPTH: usize = 200;

/// Longest expression the parser accepts. Evaluating and dropping an expression recurse over
/// its tree, whose height can reach its length (`1+1+…+1` is a chain), so length is bounded
/// too; real answers stay far below.
const MAX_TOKENS: usize = 1000;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        tally(1);
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    /// `parse` one level deeper.
    fn nested(&mut self, parse: impl FnOnce(&mut Self) -> Result<Expr, String>) -> Result<Expr, String> {
        self.enter()?;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn sum(&mut self) -> Result<Expr, String> {
        self.nested(Self::sum_inner)
    }

    fn sum_inner(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            match self.peek() {
                Some(Tok::Plus) => {
                    self.pos += 1;
                    left = Expr::Add(Box::new(left), Box::new(self.product()?));
                }
                Some(Tok::Minus) => {
                    self.pos += 1;
                    left = Expr::Sub(Box::new(left), Box::new(self.product()?));
                }
                _ => return Ok(left),
            }
        }
    }

    fn starts_atom(t: Option<&Tok>) -> bool {
        matches!(t, Some(Tok::Num(_) | Tok::Var(_) | Tok::Const(_) | Tok::Func(_) | Tok::Frac | Tok::Open(_)))
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::Star) => {
                    self.pos += 1;
                    left = Expr::Mul(Box::new(left), Box::new(self.unary()?));
                }
                Some(Tok::Slash) => {
                    self.pos += 1;
                    left = Expr::Div(Box::new(left), Box::new(self.unary()?));
                }
                t if Self::starts_atom(t) => {
                    left = Expr::Mul(Box::new(left), Box::new(self.power()?));
                }
                _ => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.nested(Self::unary_inner)
    }

    fn unary_inner(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Expr, String> {
        let mut base = self.atom()?;
        while self.peek() == Some(&Tok::Bang) {
            self.pos += 1;
            base = Expr::Factorial(Box::new(base));
        }
        if self.peek() == Some(&Tok::Caret) {
            self.pos += 1;
            let exponent = self.unary()?;
            return Ok(Expr::Pow(Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    /// A LaTeX argument: a braced group (an atom that starts with `{`) or a single atom, as
    /// in `\frac12` (normalisation has already braced most of these). A braced group counts
    /// its nesting in `sum`; an unbraced one (`\frac\frac\frac…`) is counted here.
    fn latex_argument(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Open(_)) => self.atom(),
            _ => self.nested(Self::atom),
        }
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Num(v)) => {
                // Mixed number: 2\frac{1}{2} = 2 + 1/2 when both parts are plain numbers.
                if self.peek() == Some(&Tok::Frac) {
                    let save = self.pos;
                    self.pos += 1;
                    let num = self.latex_argument()?;
                    let den = self.latex_argument()?;
                    if let (Expr::Num(n), Expr::Num(d)) = (&num, &den) {
                        return Ok(Expr::Num(v + n / d));
                    }
                    // Not a mixed number: the \frac is read next as a factor of its own, with
                    // these same arguments.
                    self.mixed_attempt = Some((save, num, den, self.pos));
                    self.pos = save;
                }
                Ok(Expr::Num(v))
            }
            Some(Tok::Var(name)) => Ok(Expr::Var(name)),
            Some(Tok::Const(v)) => Ok(Expr::Num(v)),
            Some(Tok::Frac) => {
                let frac = self.pos - 1;
                if let Some((_, num, den, end)) = self.mixed_attempt.take_if(|(at, ..)| *at == frac) {
                    self.pos = end;
                    return Ok(Expr::Div(Box::new(num), Box::new(den)));
                }
                let num = self.latex_argument()?;
                let den = self.latex_argument()?;
                Ok(Expr::Div(Box::new(num), Box::new(den)))
            }
            Some(Tok::Func(Func::Sqrt)) => {
                if self.peek() == Some(&Tok::Open('[')) {
                    self.pos += 1;
                    let index = self.sum()?;
                    self.expect_close()?;
                    let radicand = self.latex_argument()?;
                    return Ok(Expr::Root(Box::new(index), Box::new(radicand)));
                }
                Ok(Expr::Call(Func::Sqrt, Box::new(self.latex_argument()?)))
            }
            Some(Tok::Func(f)) => {
                // As for `latex_argument`: `\sin\sin\sin…` nests without brackets.
                let arg = match self.peek() {
                    Some(Tok::Open(_)) => self.atom()?,
                    _ => self.nested(Self::power)?,
                };
                Ok(Expr::Call(f, Box::new(arg)))
            }
            Some(Tok::Open(_)) => {
                let inner = self.sum()?;
                self.expect_close()?;
                Ok(inner)
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("expression ends too early".into()),
        }
    }

    fn expect_close(&mut self) -> Result<(), String> {
        match self.next() {
            Some(Tok::Close(_)) => Ok(()),
            other => Err(format!("expected a closing bracket, found {other:?}")),
        }
    }
}

/// n! for integers 0..=170 (beyond, f64 overflows to ∞); NaN for other inputs.
fn factorial(n: f64) -> f64 {
    if n.fract() != 0.0 || !(0.0..=170.0).contains(&n) {
        return f64::NAN;
    }
    (1..=n as u32).map(f64::from).product()
}

impl Expr {
    fn eval(&self, env: &HashMap<String, f64>) -> f64 {
        match self {
            Expr::Num(v) => *v,
            Expr::Var(name) => env.get(name).copied().unwrap_or(f64::NAN),
            Expr::Neg(a) => -a.eval(env),
            Expr::Add(a, b) => a.eval(env) + b.eval(env),
            Expr::Sub(a, b) => a.eval(env) - b.eval(env),
            Expr::Mul(a, b) => a.eval(env) * b.eval(env),
            Expr::Div(a, b) => a.eval(env) / b.eval(env),
            Expr::Pow(a, b) => a.eval(env).powf(b.eval(env)),
            Expr::Call(f, a) => {
                let x = a.eval(env);
                match f {
                    Func::Sqrt => x.sqrt(),
                    Func::Sin => x.sin(),
                    Func::Cos => x.cos(),
                    Func::Tan => x.tan(),
                    Func::Ln => x.ln(),
                    Func::Exp => x.exp(),
                }
            }
            Expr::Factorial(a) => factorial(a.eval(env)),
            Expr::Root(n, a) => {
                let (n, x) = (n.eval(env), a.eval(env));
                // Odd integer roots of negatives are real: ∛(−8) = −2.
                if x < 0.0 && n.fract() == 0.0 && (n as i64) % 2 != 0 {
                    -(-x).powf(1.0 / n)
                } else {
                    x.powf(1.0 / n)
                }
            }
        }
    }

    fn variables(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(name) => {
                out.insert(name.clone());
            }
            Expr::Neg(a) | Expr::Call(_, a) | Expr::Factorial(a) => a.variables(out),
            Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) | Expr::Pow(a, b) | Expr::Root(a, b) => {
                a.variables(out);
                b.variables(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_const(s: &str) -> f64 {
        parse_expr(&normalize_answer(s).text).unwrap().eval(&HashMap::new())
    }

    #[test]
    fn extraction_methods_and_priority() {
        let order = MathOptions::default().order;
        let (a, m) = extract_answer("so \\boxed{\\frac{a}{b}} then \\boxed{x^{2}} done", &order).unwrap();
        assert_eq!((a.as_str(), m), ("x^{2}", Extraction::Boxed));
        let (a, m) = extract_answer("first \\boxed{1}, finally \\fbox{7}", &order).unwrap();
        assert_eq!((a.as_str(), m), ("7", Extraction::Boxed));
        let (a, m) = extract_answer("Work: 3+4=7.\nThe answer is 7 apples.", &order).unwrap();
        assert_eq!((a.as_str(), m), ("7 apples", Extraction::AnswerLine));
        let (a, m) = extract_answer("He pays 2 + 3 = 5\n#### 1,250", &order).unwrap();
        assert_eq!((a.as_str(), m), ("1,250", Extraction::AnswerLine));
        let (a, m) = extract_answer("  \\frac{\\sqrt2}{2} ", &order).unwrap();
        assert_eq!((a.as_str(), m), ("\\frac{\\sqrt2}{2}", Extraction::Bare));
        let (a, m) = extract_answer("so $p$ is $\\frac{5}{36}$ in the end", &order).unwrap();
        assert_eq!((a.as_str(), m), ("\\frac{5}{36}", Extraction::LastMath));
        let (a, m) = extract_answer("so \\(x\\) is \\(2^{10}\\).", &order).unwrap();
        assert_eq!((a.as_str(), m), ("2^{10}", Extraction::LastMath));
        let (a, _) = extract_answer("\\boxed 7 is it", &order).unwrap();
        assert_eq!(a, "7");
        let (a, m) = extract_answer("we add 12 and 30 to get 42 in total", &order).unwrap();
        assert_eq!((a.as_str(), m), ("42", Extraction::LastNumber));
        let (a, _) = extract_answer("costs 1,234.50 and -3/4 of it", &order).unwrap();
        assert_eq!(a, "-3/4");
        assert_eq!(extract_answer("no digits here at all", &order), None);
        // An unterminated box is skipped in favour of an earlier complete one.
        let (a, _) = extract_answer("\\boxed{5} and \\boxed{6", &order).unwrap();
        assert_eq!(a, "5");
        // Configurable order: answer line before box.
        let custom = [Extraction::AnswerLine, Extraction::Boxed];
        let (a, m) = extract_answer("\\boxed{3}\nAnswer: 4", &custom).unwrap();
        assert_eq!((a.as_str(), m), ("4", Extraction::AnswerLine));
    }

    #[test]
    fn normalisation_examples() {
        let n = |s: &str| normalize_answer(s).text;
        assert_eq!(n("\\dfrac12"), "\\frac{1}{2}");
        assert_eq!(n("\\tfrac{3}4"), "\\frac{3}{4}");
        assert_eq!(n("$\\left( 1, 2 \\right)$"), "(1,2)");
        assert_eq!(n("\\text{5 cm}^2"), "5");
        assert_eq!(n("5\\text{ dollars}"), "5");
        assert_eq!(n("30^\\circ"), "30");
        assert_eq!(n("1,234,567"), "1234567");
        assert_eq!(n("x = \\sqrt3"), "\\sqrt{3}");
        assert_eq!(n("f(x) = x^2"), "x^2");
        assert_eq!(n("x + y = 3"), "x+y=3");
        assert_eq!(n("\\$18.00"), "18.00");
        assert_eq!(n("12cm"), "12");
        assert_eq!(n("2x + 1"), "2x+1");
        assert_eq!(n("\\pi r^2"), "\\pi r^2");
        assert!(normalize_answer("10\\%").percent);
        assert_eq!(n("{5}"), "5");
        assert_eq!(n("Five"), "5");
        assert_eq!(n("6 (six)"), "6");
        assert_eq!(n("x \\leq 3"), "x\\le3");
        assert_eq!(n("x >= 3"), "x\\ge3");
        // 0.1(6) = 15/90; 0.(12) = 12/99; 2.(3) = 21/9.
        assert_eq!(n("0.1\\overline{6}"), "(15)/(90)");
        assert_eq!(n("0.\\overline{12}"), "(12)/(99)");
        assert_eq!(n("2.\\overline{3}"), "(21)/(9)");
    }

    #[test]
    fn relations_compare_side_by_side_and_mirrored() {
        let opts = MathOptions::default();
        let eq = |a: &str, b: &str| answers_equivalent(a, b, &opts).0;
        assert!(eq("x \\le 3", "3 \\geq x"));
        assert!(eq("x^2+y^2=1", "y^2+x^2=1"));
        assert!(!eq("x < 3", "x \\le 3"));
        assert!(!eq("x \\le 3", "x \\ge 3"));
        assert!(!eq("x \\le 3", "3"));
    }

    #[test]
    fn parser_precedence_and_latex() {
        assert_eq!(eval_const("-2^2"), -4.0);
        assert_eq!(eval_const("2^-1"), 0.5);
        assert_eq!(eval_const("2^{3}"), 8.0);
        assert_eq!(eval_const("2(3+4)"), 14.0);
        assert_eq!(eval_const("1/2*4"), 2.0);
        assert!((eval_const("\\frac{1}{2}+\\frac13") - 5.0 / 6.0).abs() < 1e-15);
        assert_eq!(eval_const("2\\frac12"), 2.5);
        assert_eq!(eval_const("\\sqrt[3]{-8}"), -2.0);
        assert!((eval_const("2\\pi") - 2.0 * std::f64::consts::PI).abs() < 1e-12);
        assert!((eval_const("\\frac{\\sqrt2}{2}") - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(eval_const("3\\cdot4"), 12.0);
        assert_eq!(eval_const("5!"), 120.0);
        assert_eq!(eval_const("0!+2"), 3.0);
        assert!(eval_const("2.5!").is_nan());
        assert!(parse_expr("2+").is_err());
        assert!(parse_expr("\\foo{2}").is_err());
    }

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
        let samples: Vec<crate::eval::Sample> =
            completions.iter().map(|c| (&verify_math(c, "0.5", &opts)).into()).collect();
        assert_eq!(samples[0].canonical.as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(samples[0].canonical, samples[2].canonical);
        assert_eq!(samples[3].canonical, None);
        assert_eq!(crate::eval::passk::maj_at_n(&samples), 1.0);
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
        assert!(parse_expr(&deep).is_err());
        let minus = format!("{}1", "-".repeat(5000));
        assert!(parse_expr(&minus).is_err());
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
        assert_eq!(parse_expr(&format!("{}2", r("\\sin", 300))).unwrap_err(), "nested deeper than 200 levels");
        assert!(parse_expr(&format!("{}2", r("\\sin", 150))).is_ok());
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
