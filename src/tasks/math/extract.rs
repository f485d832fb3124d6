//! Extraction: the final answer of a completion, by the first method of a configurable
//! order that finds one ([`Extraction`]), and the gold answer of a reference solution.

use super::equiv::parse_answer;
use super::braces::Braces;
use super::conclusion::concluding_value;
use super::normalize::{has_prose_word, normalize_answer};
use super::tally;
use serde::{Deserialize, Serialize};

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
    /// The value stated in the concluding sentence: after "is", "=", "≡", "equals", "we
    /// get", … ("Therefore, the smallest value is 8, achieved when $a=b=c$."; see
    /// `conclusion.rs`).
    Conclusion,
    /// The last inline-math span `$…$` (or `\(…\)`) that parses as an answer, for prose
    /// that ends "… is $\frac{5}{36}$." without a box.
    LastMath,
    /// The last number in the text (integers, decimals, "1,234", fractions "3/4").
    LastNumber,
    /// Nothing found; only appears in verdicts.
    NotFound,
}

/// The final answer of a completion by the first method in `order` that finds one.
pub fn extract_answer(completion: &str, order: &[Extraction]) -> Option<(String, Extraction)> {
    order.iter().find_map(|&method| {
        let found = match method {
            Extraction::Boxed => last_boxed(completion),
            Extraction::AnswerLine => answer_line(completion),
            Extraction::Bare => bare_answer(completion),
            Extraction::Conclusion => concluding_value(completion),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::math::MathOptions;

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
        assert_eq!((a.as_str(), m), ("\\frac{5}{36}", Extraction::Conclusion));
        let (a, m) = extract_answer("so \\(x\\) is \\(2^{10}\\).", &order).unwrap();
        assert_eq!((a.as_str(), m), ("2^{10}", Extraction::Conclusion));
        let (a, m) = extract_answer("we draw $p$ and then $\\frac{5}{36}$ in the end", &order).unwrap();
        assert_eq!((a.as_str(), m), ("\\frac{5}{36}", Extraction::LastMath));
        let (a, _) = extract_answer("\\boxed 7 is it", &order).unwrap();
        assert_eq!(a, "7");
        let (a, m) = extract_answer("we add 12 and 30 to get 42 in total", &order).unwrap();
        assert_eq!((a.as_str(), m), ("42", Extraction::Conclusion));
        let (a, m) = extract_answer("we add 12 and 30: 42 in total", &order).unwrap();
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
}
