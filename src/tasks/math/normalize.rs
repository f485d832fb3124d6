//! Normalisation: LaTeX and prose decorations that do not change an answer's value are
//! stripped, so that equal answers written alike compare as equal text.

use super::braces::Braces;
use super::tally;


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
    s = strip_modulus(&s).to_string();
    s = strip_parenthetical_note(&s).to_string();
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

/// "2 \pmod{11}" → "2": a residue stated with its modulus (`\pmod`, `\bmod`, `\mod`, "(mod
/// 11)", "\text{ mod } 11") is the residue. Only a modulus after something: a lone
/// "\pmod{11}" is left for the comparison to reject.
fn strip_modulus(s: &str) -> &str {
    tally(s.len());
    let lower = s.to_ascii_lowercase(); // ASCII lowering keeps byte offsets
    let is_command_end = |at: usize| !lower[at..].starts_with(|c: char| c.is_ascii_alphabetic());
    let cut = ["\\pmod", "\\bmod", "\\mod", "(mod", " mod "]
        .iter()
        .filter_map(|m| lower.find(m).filter(|&p| is_command_end(p + m.len()) || m.ends_with(' ')))
        .min();
    match cut {
        Some(p) => {
            let head = s[..p].trim_end().trim_end_matches('(').trim_end();
            if head.is_empty() { s } else { head }
        }
        None => s,
    }
}

/// "100 (i.e., all values)" → "100": a trailing parenthesised remark in words after a value.
/// Parentheses holding math ("2 (x+1)", "(1, 2)") are kept.
fn strip_parenthetical_note(s: &str) -> &str {
    tally(s.len());
    let t = s.trim_end();
    if !t.ends_with(')') {
        return s;
    }
    // The '(' that the final ')' closes.
    let mut depth = 0i32;
    let open = t.char_indices().rev().find_map(|(i, c)| {
        match c {
            ')' => depth += 1,
            '(' => depth -= 1,
            _ => {}
        }
        (depth == 0).then_some(i)
    });
    match open {
        Some(p) if !t[..p].trim().is_empty() && has_prose_word(&t[p..]) => t[..p].trim_end(),
        _ => s,
    }
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
    // "x \in (1, \infty)": membership of a single variable states the set.
    let member = s.find("\\in").filter(|&p| !s[p + 3..].starts_with(|c: char| c.is_ascii_alphabetic()));
    let (lhs, rhs) = match member {
        Some(p) if !s.contains('=') => (&s[..p], &s[p + 3..]),
        _ if s.matches('=').count() == 1 => s.split_once('=')?,
        _ => return None,
    };
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

/// Short words allowed in a bare answer: function and constant names the parser knows.
const KNOWN_WORDS: [&str; 9] = ["sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "infty"];

/// True when `s` has a run of three or more letters that is not a LaTeX command or a known
/// function name, i.e. prose rather than a formula.
pub(super) fn has_prose_word(s: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // A modulus after a residue, a remark in words after a value.
        assert_eq!(n("2 \\pmod{11}"), "2");
        assert_eq!(n("2 \\pmod {11}"), "2");
        assert_eq!(n("5 \\; (\\text{mod } 7)"), "5");
        assert_eq!(n("5 (mod 7)"), "5");
        assert_eq!(n("4 \\bmod 9"), "4");
        assert_eq!(n("\\pmod{11}"), "\\pmod{11}");
        assert_eq!(n("100 (i.e., all values)"), "100");
        assert_eq!(n("x \\in (1, \\infty)"), "(1,\\infty)");
        assert_eq!(n("\\infty"), "\\infty");
        assert_eq!(n("(1, 2) (the vertex)"), "(1,2)");
        assert_eq!(n("2 (x+1)"), "2(x+1)");
        assert_eq!(n("(x+1)(x-1)"), "(x+1)(x-1)");
    }
}
