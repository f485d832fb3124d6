//! The stated answer of a free-form solution without `\boxed{}`: the value after "is", "=",
//! "≡" (or "equals", "we get", …) in the concluding sentence.
//!
//! Real models (GPT-3.5/4, PaLM 2 on competition problems) mostly end in prose: "Therefore,
//! the smallest value is $8$, achieved when $a = b = c$.", "So $n = 5$.", "Thus, the sum
//! equals 12.", "… is 23." after a long polynomial. The last math span of such a text is often
//! not the answer (`c`, the polynomial), so this reads the text as sentences:
//!
//! 1. The text is cut into prose and math pieces (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`; a `$`
//!    before a number that "closes" only after prose is a currency sign, not math).
//! 2. Sentences end at ". ", "! ", "? " or a blank line in prose; math never ends one.
//! 3. The concluding sentence is the last one that has a number or math and is not an aside
//!    ("Note that …", "We can check: …", "I hope it is correct.", a check mark, a question).
//!    A sentence without a stated value is passed over for the one before, at most
//!    [`LOOK_BACK`] sentences back, unless it opens with "Therefore"/"Thus"/"So"/… (then its
//!    last number or math is the answer).
//! 4. In that sentence, a trailing subordinate clause is cut ("…is 8, achieved when a=b=c",
//!    "…is 3 at x = 1"), and the value after the last cue is taken: the math piece or the
//!    run of number-like tokens after "is", the rest of the last equation in a math piece
//!    after "=" (kept as "lhs = rhs", which [`super::answers_equivalent`] compares by its right
//!    side when the gold is a single value), the residue after "≡".

use super::tally;

/// Sentences before the last that may still hold the stated value.
const LOOK_BACK: usize = 3;

/// A piece of a sentence: prose, or the content of a math span.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Piece<'a> {
    Prose(&'a str),
    Math(&'a str),
}

/// The stated answer of the concluding sentence, if the text has one (see the module doc).
pub(super) fn concluding_value(text: &str) -> Option<String> {
    let text = tail(text);
    tally(text.len());
    let sentences = sentences(&pieces(text));
    let candidates = sentences
        .iter()
        .rev()
        .filter(|s| has_value_material(s) && !is_aside(s));
    for sentence in candidates.take(LOOK_BACK) {
        let main = main_clause(sentence);
        if let Some(value) = stated_value(&main) {
            return Some(value);
        }
        if opens_with_conclusion(sentence) {
            return last_value_material(&main);
        }
    }
    None
}

/// Bytes at the end of a completion in which the conclusion is looked for. The search for
/// closing delimiters and the cues of a sentence can cost up to quadratic work in the text
/// read (an unclosed `\(` repeated, a run of "= = = …"), so only the tail is read: a
/// conclusion is in the last few sentences, and verification stays linear in the input.
const WINDOW: usize = 4096;

/// The last [`WINDOW`] bytes, from the first line start in them (so that a `$…$` span is not
/// cut in half, which would pair every later `$` wrongly).
fn tail(text: &str) -> &str {
    if text.len() <= WINDOW {
        return text;
    }
    let mut cut = text.len() - WINDOW;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let window = &text[cut..];
    match window.find('\n') {
        Some(nl) if nl + 1 < window.len() => &window[nl + 1..],
        _ => window,
    }
}

// ---- pieces and sentences ----------------------------------------------------------------

/// The text as prose and math pieces, in order.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut prose_start = 0;
    let mut i = 0;
    while i < text.len() {
        match math_span_at(text, i) {
            Some((inner_start, inner_end, end)) => {
                if prose_start < i {
                    out.push(Piece::Prose(&text[prose_start..i]));
                }
                out.push(Piece::Math(&text[inner_start..inner_end]));
                i = end;
                prose_start = end;
            }
            None => i += text[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    if prose_start < text.len() {
        out.push(Piece::Prose(&text[prose_start..]));
    }
    out
}

/// A math span opening at byte `i`: (content start, content end, span end).
fn math_span_at(text: &str, i: usize) -> Option<(usize, usize, usize)> {
    let rest = &text[i..];
    let (open, close) = if rest.starts_with("$$") {
        ("$$", "$$")
    } else if rest.starts_with('$') {
        if i > 0 && text.as_bytes()[i - 1] == b'\\' {
            return None; // "\$": a dollar sign
        }
        ("$", "$")
    } else if rest.starts_with("\\(") {
        ("\\(", "\\)")
    } else if rest.starts_with("\\[") {
        ("\\[", "\\]")
    } else {
        return None;
    };
    let start = i + open.len();
    let end = start + text[start..].find(close)?;
    let content = &text[start..end];
    // "$18 and she has $5": a currency sign, not an opener, when prose sits before the next `$`.
    let currency =
        open == "$" && content.starts_with(|c: char| c.is_ascii_digit()) && has_plain_word(content);
    (!currency).then_some((start, end, end + close.len()))
}

/// A word of three or more letters not inside a `\command` name or `\text{…}`-like group:
/// prose, as opposed to math.
fn has_plain_word(s: &str) -> bool {
    s.split(|c: char| !c.is_ascii_alphabetic() && c != '\\')
        .any(|w| !w.starts_with('\\') && w.len() >= 3)
}

/// Sentences: prose is cut after '.', '!' or '?' followed by whitespace, and at blank lines.
fn sentences<'a>(pieces: &[Piece<'a>]) -> Vec<Vec<Piece<'a>>> {
    let mut out: Vec<Vec<Piece<'a>>> = Vec::new();
    let mut current: Vec<Piece<'a>> = Vec::new();
    for &piece in pieces {
        let Piece::Prose(prose) = piece else {
            current.push(piece);
            continue;
        };
        let mut start = 0;
        for end in sentence_ends(prose) {
            current.push(Piece::Prose(&prose[start..end]));
            out.push(std::mem::take(&mut current));
            start = end;
        }
        if start < prose.len() {
            current.push(Piece::Prose(&prose[start..]));
        }
    }
    out.push(current);
    out.retain(|s| !s.is_empty());
    out
}

/// Byte offsets just past each sentence end in a prose piece.
fn sentence_ends(prose: &str) -> Vec<usize> {
    let b = prose.as_bytes();
    let mut ends = Vec::new();
    for i in 0..b.len() {
        let next_is_space = b.get(i + 1).is_some_and(u8::is_ascii_whitespace);
        let punct = matches!(b[i], b'.' | b'!' | b'?') && (next_is_space || i + 1 == b.len());
        let blank_line = b[i] == b'\n' && b.get(i + 1) == Some(&b'\n');
        if (punct && !is_abbreviation(&prose[..=i])) || blank_line {
            ends.push(i + 1);
        }
    }
    ends
}

/// "e.g." and "i.e." do not end a sentence.
fn is_abbreviation(upto_dot: &str) -> bool {
    // Only the last few bytes: lowering the whole prefix at every '.' was quadratic.
    let mut from = upto_dot.len().saturating_sub(5);
    while !upto_dot.is_char_boundary(from) {
        from += 1;
    }
    let lower = upto_dot[from..].to_ascii_lowercase();
    ["e.g.", "i.e.", "etc.", "vs."]
        .iter()
        .any(|a| lower.ends_with(a))
}

/// A sentence's prose, lower-cased, with each math piece as a placeholder "$".
fn prose_of(sentence: &[Piece<'_>]) -> String {
    sentence
        .iter()
        .map(|p| match p {
            Piece::Prose(t) => t.to_lowercase(),
            Piece::Math(_) => " $ ".to_string(),
        })
        .collect()
}

fn has_value_material(sentence: &[Piece<'_>]) -> bool {
    sentence.iter().any(|p| match p {
        Piece::Math(m) => !m.trim().is_empty(),
        Piece::Prose(t) => t.chars().any(|c| c.is_ascii_digit()),
    })
}

/// A remark after the conclusion: a check, a note, a sign-off, a question.
fn is_aside(sentence: &[Piece<'_>]) -> bool {
    const OPENERS: [&str; 23] = [
        "note",
        "check",
        "verify",
        "verification",
        "indeed",
        "recall",
        "we can check",
        "we can verify",
        "double-check",
        "double check",
        "let me",
        "let's check",
        "let us check",
        "i hope",
        "hope",
        "as a check",
        "sanity check",
        "this is consistent",
        "this matches",
        "this agrees",
        "this confirms",
        "which confirms",
        "this checks",
    ];
    let prose = prose_of(sentence);
    let opening = prose.trim_start_matches(|c: char| c.is_whitespace() || "*#->(".contains(c));
    let starts_with_word = |w: &str| {
        opening
            .strip_prefix(w)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphabetic()))
    };
    let math_text: String = sentence
        .iter()
        .filter_map(|p| {
            if let Piece::Math(m) = p {
                Some(*m)
            } else {
                None
            }
        })
        .collect();
    OPENERS.iter().any(|w| starts_with_word(w))
        || prose.trim_end().ends_with('?')
        || prose.contains('✓')
        || math_text.contains("\\checkmark")
}

/// Whether the sentence opens with a conclusion word ("Therefore, $\frac12$.").
fn opens_with_conclusion(sentence: &[Piece<'_>]) -> bool {
    const MARKERS: [&str; 10] = [
        "therefore",
        "thus",
        "hence",
        "so",
        "finally",
        "in conclusion",
        "in total",
        "altogether",
        "consequently",
        "the answer",
    ];
    let prose = prose_of(sentence);
    let opening = prose.trim_start_matches(|c: char| c.is_whitespace() || "*#->".contains(c));
    MARKERS.iter().any(|m| {
        opening
            .strip_prefix(m)
            .is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_alphabetic()))
    })
}

// ---- cues and values ---------------------------------------------------------------------

/// A position in a sentence: piece index and byte offset in that piece.
type At = (usize, usize);

/// Where a cue ends (the value starts) and whether it was found in a math piece.
#[derive(Clone, Copy, Debug)]
struct Cue {
    after: At,
    in_math: bool,
    congruence: bool,
    /// "… is the answer": the value is what came before the cue.
    before: Option<At>,
}

/// Words after which a value is stated.
const CUE_WORDS: [&str; 17] = [
    "is", "are", "was", "be", "equals", "equal to", "get", "gives", "give", "giving", "obtain",
    "yields", "becomes", "makes", "leaving", "leaves", "remain",
];

/// Adverbs between a cue and its value ("is therefore $\frac{\sqrt3}{2}$", "is exactly 12").
const FILLERS: [&str; 12] = [
    "therefore",
    "thus",
    "then",
    "now",
    "exactly",
    "just",
    "simply",
    "also",
    "still",
    "clearly",
    "precisely",
    "hence",
];

/// Words that open a subordinate clause: after a first stated value, the rest of the sentence
/// is a condition or a comment, not the answer ("…is 8, achieved when $a = b = c$").
const CLAUSE_WORDS: [&str; 15] = [
    "when", "where", "whenever", "if", "since", "because", "as", "for", "with", "which", "at",
    "achieved", "attained", "given", "by",
];

/// Every cue of a sentence in order.
fn cues(sentence: &[Piece<'_>]) -> Vec<Cue> {
    let mut out = Vec::new();
    for (k, piece) in sentence.iter().enumerate() {
        match piece {
            Piece::Prose(text) => {
                for (start, word) in words(text) {
                    let lower = word.to_ascii_lowercase();
                    let two = format!(
                        "{lower} {}",
                        text[start + word.len()..]
                            .trim_start()
                            .split(|c: char| !c.is_ascii_alphabetic())
                            .next()
                            .unwrap_or("")
                    );
                    let (matched, len) = if two == "equal to" {
                        (true, text[start..].find("to").map_or(word.len(), |p| p + 2))
                    } else {
                        (CUE_WORDS.contains(&lower.as_str()), word.len())
                    };
                    if matched {
                        let before = answer_follows(&text[start + len..]).then_some((k, start));
                        out.push(Cue {
                            after: (k, start + len),
                            in_math: false,
                            congruence: false,
                            before,
                        });
                    }
                }
                for (pos, sym) in symbols(text, &["=", "≡"]) {
                    out.push(Cue {
                        after: (k, pos + sym.len()),
                        in_math: false,
                        congruence: sym == "≡",
                        before: None,
                    });
                }
            }
            Piece::Math(math) => {
                for (pos, sym) in symbols(math, &["=", "\\equiv", "≡"]) {
                    out.push(Cue {
                        after: (k, pos + sym.len()),
                        in_math: true,
                        congruence: sym != "=",
                        before: None,
                    });
                }
            }
        }
    }
    out
}

/// Alphabetic words of a prose piece with their byte offsets.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphabetic(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Positions of relation symbols outside braces, skipping "==", "<=", ">=", "!=", "\ne".
fn symbols<'a>(text: &str, syms: &[&'a str]) -> Vec<(usize, &'a str)> {
    let b = text.as_bytes();
    let mut depth = 0i32;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ => {}
        }
        let boundary = text.is_char_boundary(i);
        let found = (depth == 0 && boundary)
            .then(|| syms.iter().find(|s| text[i..].starts_with(**s)))
            .flatten();
        if let Some(&sym) = found {
            let prev = i.checked_sub(1).map(|p| b[p]);
            let next = b.get(i + sym.len());
            let compound = sym == "="
                && (matches!(prev, Some(b'<' | b'>' | b'!' | b'=')) || next == Some(&b'='));
            let command_prefix = sym.starts_with('\\') && next.is_some_and(u8::is_ascii_alphabetic);
            if !compound && !command_prefix {
                out.push((i, sym));
            }
            i += sym.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Whether prose right after "is" says "the answer" ("$5$ is the final answer").
fn answer_follows(rest: &str) -> bool {
    let lower = rest.trim_start().to_ascii_lowercase();
    [
        "the answer",
        "the final answer",
        "our answer",
        "our final answer",
        "the correct answer",
        "the solution",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
}

/// The sentence without a trailing subordinate clause: a clause word right after a stated
/// value ("…is 8, achieved when $a = b = c$", "…is 3 at $x = 1$", "$x = 4$, which …") drops
/// the rest of the sentence. Only right after a value: "Setting $x = 2$ in the formula for
/// the area, the area is 8" keeps its "for".
fn main_clause<'a>(sentence: &[Piece<'a>]) -> Vec<Piece<'a>> {
    for cue in cues(sentence) {
        let Some((_, (k, off))) = value_at(sentence, &cue) else {
            continue;
        };
        let Some(Piece::Prose(text)) = sentence.get(k) else {
            continue;
        };
        let Some(&(pos, word)) = words(&text[off..]).first() else {
            continue;
        };
        let between = &text[off..off + pos];
        let adjacent = !between
            .chars()
            .any(|c| c.is_alphanumeric() || c == '$' || c == '\\');
        if adjacent && CLAUSE_WORDS.contains(&word.to_ascii_lowercase().as_str()) {
            let mut kept = sentence[..k].to_vec();
            kept.push(Piece::Prose(&text[..off + pos]));
            return kept;
        }
    }
    sentence.to_vec()
}

/// The value stated by the last cue of the sentence that states one. A list after "are"
/// covers the cues inside its items: "are $x = 2$ and $x = -3$" states both, not "-3".
fn stated_value(sentence: &[Piece<'_>]) -> Option<String> {
    let mut stated = None;
    let mut covered_until: At = (0, 0);
    for cue in cues(sentence) {
        if cue.after < covered_until {
            continue;
        }
        if let Some((value, end)) = value_at(sentence, &cue) {
            if value.contains(LIST_JOINT) {
                covered_until = end;
            }
            stated = Some(value);
        }
    }
    stated.map(|v| v.replace(LIST_JOINT, ", "))
}

/// Joins the items of a list value until [`stated_value`] has seen it.
const LIST_JOINT: &str = "\u{1f}";

/// The value a cue states, if what follows it is a value, and where the value ends.
fn value_at(sentence: &[Piece<'_>], cue: &Cue) -> Option<(String, At)> {
    if let Some(before) = cue.before {
        return value_before(sentence, before).map(|v| (v, (sentence.len(), 0)));
    }
    let (k, off) = cue.after;
    let (value, end) = match sentence[k] {
        Piece::Math(math) if cue.in_math => {
            let rest = math[off..].trim();
            let value = if cue.congruence {
                rest.to_string()
            } else {
                if rest.is_empty() || !symbols(rest, &["="]).is_empty() {
                    return None; // not the last "=" of the piece
                }
                // The last equation of the piece: "a + b = 5 + 7 = 12" → "5 + 7 = 12".
                let eq_at = off - 1;
                let lhs_start = symbols(&math[..eq_at], &["="])
                    .last()
                    .map_or(0, |(p, s)| p + s.len());
                let lhs = math[lhs_start..eq_at].trim();
                if lhs.is_empty() {
                    rest.to_string()
                } else {
                    format!("{lhs} = {rest}")
                }
            };
            (value, (k + 1, 0))
        }
        Piece::Prose(text) => {
            let off = off + filler_len(&text[off..]);
            let rest = &text[off..];
            if rest.trim().is_empty() {
                // The value is the math piece right after the cue word; after "are", the list
                // of pieces joined by "and" / "," ("the solutions are $x = 2$ and $x = -3$").
                match sentence.get(k + 1) {
                    Some(Piece::Math(m)) if !m.trim().is_empty() => {
                        let plural = text[..off].to_ascii_lowercase().ends_with("are");
                        let mut items = vec![m.trim()];
                        let mut next = k + 2;
                        while let (true, Some(Piece::Prose(joint)), Some(Piece::Math(item))) =
                            (plural, sentence.get(next), sentence.get(next + 1))
                        {
                            if !matches!(joint.trim(), "," | "and" | ", and" | "or" | ", or") {
                                break;
                            }
                            items.push(item.trim());
                            next += 2;
                        }
                        (items.join(LIST_JOINT), (next, 0))
                    }
                    _ => return None,
                }
            } else {
                let (run, used) = number_run(rest)?;
                (run, (k, off + used))
            }
        }
        Piece::Math(_) => return None,
    };
    // "\frac{\sqrt3}{2} \approx 0.866": the exact value, not its rounding.
    let exact = ["\\approx", "≈"]
        .iter()
        .filter_map(|a| value.find(a))
        .min()
        .map_or(value.as_str(), |p| &value[..p]);
    let value = exact
        .trim()
        .trim_end_matches(['.', ',', ';', ':'])
        .trim()
        .to_string();
    (!value.is_empty()).then_some((value, end))
}

/// Bytes of filler adverbs (and the spaces and commas around them) at the start of `rest`.
fn filler_len(rest: &str) -> usize {
    let mut used = 0;
    loop {
        let tail = &rest[used..];
        let skipped = tail.len() - tail.trim_start_matches([' ', ',']).len();
        let word: String = tail[skipped..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        if word.is_empty() || !FILLERS.contains(&word.to_ascii_lowercase().as_str()) {
            return used;
        }
        used += skipped + word.len();
    }
}

/// "$5$ is the answer" / "5 is the answer": the math piece or number just before the cue.
fn value_before(sentence: &[Piece<'_>], (k, word_start): At) -> Option<String> {
    let Piece::Prose(text) = sentence[k] else {
        return None;
    };
    let before = text[..word_start].trim_end();
    if before.is_empty() {
        return match k.checked_sub(1).map(|p| sentence[p]) {
            Some(Piece::Math(m)) if !m.trim().is_empty() => Some(m.trim().to_string()),
            _ => None,
        };
    }
    let token = before.rsplit(char::is_whitespace).next()?;
    token
        .chars()
        .any(|c| c.is_ascii_digit())
        .then(|| token.to_string())
}

/// Number-like tokens at the start of prose ("23.", "-3/4 of", "1,000 ways", "25%",
/// "\frac{1}{2}"): whitespace-separated tokens up to the first word or clause end, and the
/// bytes of `rest` they span. None unless the run has a digit or a LaTeX command: "is a
/// prime" states no value.
fn number_run(rest: &str) -> Option<(String, usize)> {
    let mut taken: Vec<&str> = Vec::new();
    let mut used = 0;
    for token in rest.split_whitespace() {
        let letters = token.chars().filter(|c| c.is_ascii_alphabetic()).count();
        let command = token.contains('\\');
        let wordy = letters >= 2 && !command && !token.chars().any(|c| c.is_ascii_digit());
        if wordy || (letters == 1 && token.len() == 1 && taken.is_empty()) {
            break; // a word ("cm", "ways", "is") or an article ("a")
        }
        let ends_clause =
            token.ends_with([',', '.', ';', ':', '!', '?']) && !token.ends_with("...");
        taken.push(token);
        // `token` is a slice of `rest`: its end is where the run ends so far.
        used = token.as_ptr() as usize - rest.as_ptr() as usize + token.len();
        if ends_clause {
            break;
        }
    }
    let run = taken.join(" ");
    let has_value = run.chars().any(|c| c.is_ascii_digit())
        || run.contains('\\')
        || run.contains(['π', '∞', '√']);
    has_value.then_some((run, used))
}

/// The last math piece or number of a sentence, for a cue-less conclusion ("Thus $\frac12$.").
fn last_value_material(sentence: &[Piece<'_>]) -> Option<String> {
    sentence.iter().rev().find_map(|p| match p {
        Piece::Math(m) if !m.trim().is_empty() => Some(m.trim().to_string()),
        Piece::Prose(t) => t
            .split_whitespace()
            .rev()
            .find(|tok| tok.chars().any(|c| c.is_ascii_digit()))
            .map(|tok| tok.trim_end_matches(['.', ',', ';', ':', '!']).to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tasks::math::{verify_math, Extraction, MathOptions};

    fn value(text: &str) -> Option<String> {
        concluding_value(text)
    }

    /// The verdict of the whole verifier with the default order, and the method that won.
    fn graded(completion: &str, gold: &str) -> (bool, Extraction, Option<String>) {
        let v = verify_math(completion, gold, &MathOptions::default());
        (v.correct, v.method, v.extracted)
    }

    /// The four misses found against math-verify on real GPT-3.5/4 and PaLM 2 outputs.
    #[test]
    fn the_reported_misses() {
        let c = "By AM-GM, $a^2 + b^2 + c^2 \\ge 3(abc)^{2/3} = 8$. The smallest value of \\(a^2+b^2+c^2\\) is 8, achieved when \\(a = b = c\\).";
        assert_eq!(value(c).as_deref(), Some("8"));
        assert_eq!(
            graded(c, "8"),
            (true, Extraction::Conclusion, Some("8".into()))
        );
        let c = "Expanding, $p(x) = 2x^3 + 5x^2 - 3x + 19$. So the sum of its coefficients is 23.";
        assert!(graded(c, "23").0);
        assert!(!graded(c, "2x^3 + 5x^2 - 3x + 19").0);
        let c = "By Fermat's little theorem, $3^{105} + 4^{105} \\equiv 2 \\pmod{11}$.";
        assert_eq!(value(c).as_deref(), Some("2 \\pmod{11}"));
        assert!(graded(c, "2").0);
        assert!(!graded(c, "11").0);
        assert!(graded("The count is 100.", "100 (i.e., all values)").0);
        assert!(!graded("The count is 10.", "100 (i.e., all values)").0);
    }

    /// How real models phrase their conclusions.
    #[test]
    fn conclusion_phrasings() {
        assert!(graded("Therefore, the answer is $\\frac{3}{4}$.", "0.75").0);
        assert_eq!(
            graded(
                "Squaring both sides, $n^2 = 25$ and $n > 0$. So $n = 5$.",
                "5"
            ),
            (true, Extraction::Conclusion, Some("n = 5".into()))
        );
        assert!(graded("The final answer is 3", "3").0);
        assert_eq!(
            value("Adding the terms pairwise, we see that the sum equals 12").as_deref(),
            Some("12")
        );
        assert_eq!(
            value("Thus, the sum is equal to $-\\frac{1}{2}$.").as_deref(),
            Some("-\\frac{1}{2}")
        );
        assert_eq!(
            value("Hence there are 35 ways to choose the committee.").as_deref(),
            Some("35")
        );
        assert_eq!(
            value("Plugging in, we get $f(3) = 2 \\cdot 9 - 1 = 17$.").as_deref(),
            Some("2 \\cdot 9 - 1 = 17")
        );
        assert_eq!(
            value("Checking each case, $7$ is the final answer.").as_deref(),
            Some("7")
        );
        assert_eq!(
            value("The remainder is 2 when $2^{100}$ is divided by 7.").as_deref(),
            Some("2")
        );
        assert_eq!(
            value("The minimum is $-3$ at $x = 1$.").as_deref(),
            Some("-3")
        );
        assert_eq!(
            value("Solving gives $x = 4$, which satisfies $x > 0$.").as_deref(),
            Some("x = 4")
        );
        // A cue-less conclusion that opens with "Therefore"/"In total".
        assert_eq!(
            value("Therefore, $\\dfrac{2}{9}$.").as_deref(),
            Some("\\dfrac{2}{9}")
        );
        assert!(graded("In total, Janet pays $18.", "18").0);
        // Display math across lines belongs to its sentence.
        assert_eq!(
            value("Therefore the answer is\n\\[\n  x = \\frac{7}{2}.\n\\]").as_deref(),
            Some("x = \\frac{7}{2}")
        );
    }

    /// Sentences with "is" that conclude nothing, asides after the answer, several equations.
    #[test]
    fn hostile_sentences() {
        // Remarks after the conclusion are passed over.
        assert_eq!(
            value("So the total is 14. Note that 14 is even.").as_deref(),
            Some("14")
        );
        assert_eq!(
            value("Thus $k = 6$. We can check: $6 \\cdot 7 = 42$.").as_deref(),
            Some("k = 6")
        );
        assert_eq!(
            value("So the count is 6. This is consistent with $x = 3$.").as_deref(),
            Some("6")
        );
        assert_eq!(
            value("Hence $m = 9$. I hope it is correct.").as_deref(),
            Some("m = 9")
        );
        assert_eq!(
            value("So the answer is 9. Is that right?").as_deref(),
            Some("9")
        );
        // "is" followed by words states nothing; a later cue does.
        assert_eq!(
            value("The function is increasing, so its largest value is $f(2) = 11$.").as_deref(),
            Some("f(2) = 11")
        );
        assert_eq!(
            value("Since 7 is prime and $7 \\mid n$, we get $n = 14$.").as_deref(),
            Some("n = 14")
        );
        assert_eq!(value("It is a prime number."), None);
        // Several equations: the last one, compared by its right side against a single value.
        let c = "So $x = 2$ and $y = 3$, giving $x + y = 5$.";
        assert_eq!(value(c).as_deref(), Some("x + y = 5"));
        assert!(graded(c, "5").0);
        assert!(!graded(c, "2").0);
        // An equation that is itself the answer still compares as an equation.
        assert!(!graded("Thus the plane is $2x - y + z = 3$.", "2x - y + z = 4").0);
        assert!(graded("Thus the plane is $2x - y + z = 3$.", "2x - y + z = 3").0);
        // Units, percentages, negatives, fractions, text after the answer.
        assert!(graded("Therefore the area is 24 square centimeters.", "24").0);
        assert!(graded("So the probability is 25%.", "25").0);
        assert!(graded("Hence the minimum value is -7.", "-7").0);
        assert!(!graded("Hence the minimum value is -7.", "7").0);
        assert!(
            graded(
                "Therefore, the ratio is \\frac{a}{b} = \\frac{3}{4}.",
                "\\frac34"
            )
            .0
        );
        assert!(
            graded(
                "The probability is $\\frac{5}{36}$, which is about 0.14.",
                "\\frac{5}{36}"
            )
            .0
        );
        assert!(
            graded(
                "So there are 1,260 arrangements. Let me know if you need more help!",
                "1260"
            )
            .0
        );
        assert_eq!(value("So the answer is 5 (not 6)."), Some("5".into()));
        // "are" lists its values.
        let c = "The solutions are $x = 2$ and $x = -3$.";
        assert_eq!(value(c).as_deref(), Some("x = 2, x = -3"));
        assert!(graded(c, "-3, 2").0);
        assert!(!graded(c, "2").0);
        // Adverbs after the cue, an approximation after the exact value, "leaving".
        assert_eq!(
            value("The value is therefore $\\frac{\\sqrt{3}}{2} \\approx 0.866$.").as_deref(),
            Some("\\frac{\\sqrt{3}}{2}")
        );
        assert_eq!(
            value("There are $4! = 24$ orders, but half are wrong, leaving 12.").as_deref(),
            Some("12")
        );
        // No number or math at all: nothing stated.
        assert_eq!(value("I could not solve this problem."), None);
    }

    #[test]
    fn pieces_and_sentences() {
        let p = pieces("So $x = 1$ and \\(y\\) is \\[ 2 \\]. It costs $18 and $5 more.");
        assert_eq!(
            p,
            vec![
                Piece::Prose("So "),
                Piece::Math("x = 1"),
                Piece::Prose(" and "),
                Piece::Math("y"),
                Piece::Prose(" is "),
                Piece::Math(" 2 "),
                Piece::Prose(". It costs $18 and $5 more."),
            ]
        );
        // "$18 and $5": currency signs, not a math span.
        let s = sentences(&p);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[1], vec![Piece::Prose(" It costs $18 and $5 more.")]);
        // A decimal point and "e.g." do not end a sentence; math never does.
        assert_eq!(sentences(&pieces("It is 3.5, e.g. here. Next")).len(), 2);
        assert_eq!(sentences(&pieces("We get $x = 5. $ Done")).len(), 1);
    }
}
