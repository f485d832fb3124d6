//! Equivalence of two extracted answers: their structure (one expression, an ordered tuple or
//! interval, an unordered list, a relation), then exact text after normalisation, numeric
//! within a relative tolerance, or symbolic by evaluating both at seeded random points.

use super::expr::{parse_expr, Expr};
use super::normalize::{has_prose_word, normalize_answer};
use super::{MathOptions, PercentRule};
use crate::rng::Rng;
use std::collections::{BTreeSet, HashMap};

// Answer structure


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
pub(super) fn parse_answer(s: &str) -> Result<(), String> {
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

// Equivalence

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
    match (split_relation(a), split_relation(b)) {
        (Some((la, rel_a, ra)), Some((lb, rel_b, rb))) => {
            return relations_equivalent((&la, rel_a, &ra), (&lb, rel_b, &rb), opts);
        }
        // "a + b = 12" against the gold 12: the equation states the value on its right (a
        // free-form conclusion "So $a + b = 12$." is extracted whole, so that an equation
        // answer such as a plane "2x - y + z = 0" is still compared as an equation).
        (Some((lhs, "=", rhs)), None) if !rhs.is_empty() => {
            let (ok, why) = scalars_equivalent(&rhs, b, opts);
            return (ok, format!("right side of '{lhs}={rhs}': {why}"));
        }
        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
