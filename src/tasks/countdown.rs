//! Countdown-lite (docs/METHODS.md §10.1 task 1): reach a target from a few numbers.
//!
//! Prompt: `countdown 3 5 7 -> 22\n` (numbers sorted ascending, so a problem has exactly one
//! prompt and train/test de-duplication by prompt is sound). Response: one expression such as
//! `3*5+7`, optionally followed by `=22`; no trailing newline is needed (the trainer appends
//! its end-of-sequence token). Every given number may be used at most once (a number listed
//! twice may be used twice); not all numbers must be used. Operators are `+ - *` and, when the
//! instance allows it, `/` with an exact quotient. Intermediate results may be negative.
//!
//! Distinct canonical forms stand in for FlowRL's "distinct approaches": a sum is the multiset
//! of its signed terms and a product the multiset of its factors and divisors, so
//! `a+(b+c)`, `(a+b)+c` and `c+b+a` are one solution, as are `a-b+c` and `a+c-b`. Nothing is
//! cancelled or simplified (`3*5+7` and `(3*5+7)*1` are different approaches).

use super::{decimal_len, instance_data, parse_options, Instance, Task, TaskError, Verdict};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

pub const NAME: &str = "countdown";
pub const DESCRIPTION: &str = "reach a target with + - * (/ if exact) using each given number at most once";

/// Longest prompt the options may produce: tiny models read a character context of ~64-96.
pub const MAX_PROMPT_CHARS: usize = 40;
/// The enumerator visits every expression tree, which grows super-exponentially with the
/// count; five numbers still take well under a second.
pub const MAX_NUMBERS: usize = 5;
/// Parentheses nest at most this deep, so a hostile response cannot overflow the stack.
const MAX_NESTING: usize = 32;
/// Number draws per generated instance before settling for the best one seen.
const MAX_DRAWS: usize = 10_000;
/// Number draws `Countdown::new` spends proving the options can meet `min_solutions`.
const PROBE_DRAWS: usize = 2_000;

/// Generator options (`[task.options]` in a profile). Defaults suit a ~1M-parameter
/// character-level model: four one-digit numbers and a target in 10..=50 with at least five
/// distinct solutions (prompts of at most 24 characters, solutions of at most 13). Three
/// numbers in 1..=9 never give a target in 10..=50 more than four solutions without
/// division, so `min_numbers = 3` needs a lower `min_solutions` (`new` checks every count).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountdownOptions {
    pub min_numbers: usize,
    pub max_numbers: usize,
    pub min_value: i64,
    pub max_value: i64,
    /// Targets are drawn from reachable values in `min_target..=max_target` that are not
    /// themselves one of the given numbers (that would be a one-token answer).
    pub min_target: i64,
    pub max_target: i64,
    pub allow_division: bool,
    /// Redraw numbers until the chosen target has at least this many distinct canonical
    /// solutions.
    pub min_solutions: usize,
}

impl Default for CountdownOptions {
    fn default() -> Self {
        CountdownOptions {
            min_numbers: 4,
            max_numbers: 4,
            min_value: 1,
            max_value: 9,
            min_target: 10,
            max_target: 50,
            allow_division: false,
            min_solutions: 5,
        }
    }
}

impl CountdownOptions {
    fn validate(&self) -> Result<(), String> {
        if self.min_numbers < 2 || self.max_numbers > MAX_NUMBERS || self.min_numbers > self.max_numbers {
            return Err(format!(
                "need 2 <= min_numbers <= max_numbers <= {MAX_NUMBERS}, got min_numbers = {}, max_numbers = {}",
                self.min_numbers, self.max_numbers
            ));
        }
        if self.min_value < 1 || self.min_value > self.max_value {
            return Err(format!(
                "need 1 <= min_value <= max_value, got min_value = {}, max_value = {}",
                self.min_value, self.max_value
            ));
        }
        if self.min_target > self.max_target {
            return Err(format!(
                "need min_target <= max_target, got {} > {}",
                self.min_target, self.max_target
            ));
        }
        if self.min_solutions == 0 {
            return Err("min_solutions must be at least 1".to_string());
        }
        let longest = self.longest_prompt();
        if longest > MAX_PROMPT_CHARS {
            return Err(format!(
                "prompts could reach {longest} characters (limit {MAX_PROMPT_CHARS}); lower max_numbers, max_value or max_target"
            ));
        }
        Ok(())
    }

    fn longest_prompt(&self) -> usize {
        let value_len = decimal_len(self.max_value);
        let target_len = decimal_len(self.max_target).max(decimal_len(self.min_target));
        "countdown".len() + self.max_numbers * (1 + value_len) + " -> ".len() + target_len + 1
    }
}

/// The facts the verifier needs, stored in `Instance::data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountdownData {
    pub numbers: Vec<i64>,
    pub target: i64,
    pub allow_division: bool,
}

pub struct Countdown {
    options: CountdownOptions,
}

enum Search {
    Found(CountdownData),
    Best(CountdownData),
    Nothing,
}

impl Countdown {
    /// Validates the options and checks, with a fixed-seed probe, that instances with
    /// `min_solutions` solutions exist, so `generate` never has to settle for less in practice.
    pub fn new(options: CountdownOptions) -> Result<Self, TaskError> {
        let bad = |message: String| TaskError::BadOptions { task: NAME.to_string(), message };
        options.validate().map_err(bad)?;
        let task = Countdown { options };
        let o = &task.options;
        for count in o.min_numbers..=o.max_numbers {
            if !matches!(task.search(&mut Rng::new(0), count, PROBE_DRAWS), Search::Found(_)) {
                return Err(bad(format!(
                    "no instance of {count} numbers with at least {} solutions and a target in {}..={} found in \
                     {PROBE_DRAWS} draws; lower min_solutions, raise min_numbers or widen the value/target ranges",
                    o.min_solutions, o.min_target, o.max_target
                )));
            }
        }
        Ok(task)
    }

    pub fn from_table(options: &toml::Table) -> Result<Self, TaskError> {
        Countdown::new(parse_options(NAME, options)?)
    }

    pub fn options(&self) -> &CountdownOptions {
        &self.options
    }

    /// Draws number sets until one has an eligible target: `Found`, or after `draws`
    /// attempts the candidate with the most solutions seen (`Best`), if any was in range.
    /// The count of numbers is fixed for the whole search so that the options' count range,
    /// not the solution filter, decides how often each count appears.
    fn search(&self, rng: &mut Rng, count: usize, draws: usize) -> Search {
        let o = &self.options;
        let mut best: Option<(usize, CountdownData)> = None;
        for _ in 0..draws {
            let mut numbers: Vec<i64> = (0..count).map(|_| rng.range(o.min_value, o.max_value)).collect();
            numbers.sort_unstable();
            let by_value = solutions_by_value(&numbers, o.allow_division);
            let candidates: Vec<(i64, usize)> = by_value
                .iter()
                .filter(|(v, _)| (o.min_target..=o.max_target).contains(*v) && !numbers.contains(v))
                .map(|(v, s)| (*v, s.len()))
                .collect();
            let eligible: Vec<i64> = candidates.iter().filter(|(_, n)| *n >= o.min_solutions).map(|(v, _)| *v).collect();
            if let Some(target) = rng.choose(&eligible) {
                let data = CountdownData { numbers, target: *target, allow_division: o.allow_division };
                return Search::Found(data);
            }
            if let Some((target, n)) = candidates.iter().max_by_key(|(v, n)| (*n, -*v)) {
                if best.as_ref().is_none_or(|(b, _)| n > b) {
                    best = Some((*n, CountdownData { numbers, target: *target, allow_division: o.allow_division }));
                }
            }
        }
        match best {
            Some((_, data)) => Search::Best(data),
            None => Search::Nothing,
        }
    }
}

/// The prompt for a set of numbers and a target.
pub fn prompt(numbers: &[i64], target: i64) -> String {
    let listed: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
    format!("countdown {} -> {target}\n", listed.join(" "))
}

fn instance_for(data: &CountdownData) -> Instance {
    let prompt = prompt(&data.numbers, data.target);
    let listed: Vec<String> = data.numbers.iter().map(|n| n.to_string()).collect();
    // `generate_split` renumbers ids; this one just names the problem.
    let id = format!("{NAME}-{}-{}", listed.join("_"), data.target);
    Instance { task: NAME.to_string(), id, prompt, data: serde_json::json!(data) }
}

impl Task for Countdown {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        DESCRIPTION
    }

    fn generate(&self, rng: &mut Rng) -> Instance {
        let o = &self.options;
        let count = rng.range(o.min_numbers as i64, o.max_numbers as i64) as usize;
        let data = match self.search(rng, count, MAX_DRAWS) {
            Search::Found(data) | Search::Best(data) => data,
            // `new` proved eligible instances exist, so reaching here needs 10 000 unlucky
            // draws in a row; the sum of all numbers is always a valid (if lonely) target.
            Search::Nothing => {
                let numbers: Vec<i64> = vec![o.min_value; count];
                let target = numbers.iter().sum();
                CountdownData { numbers, target, allow_division: o.allow_division }
            }
        };
        instance_for(&data)
    }

    fn verify(&self, instance: &Instance, response: &str) -> Verdict {
        match instance_data::<CountdownData>(instance) {
            Ok(data) => verify_response(&data, response),
            Err(message) => Verdict::wrong(message, None),
        }
    }

    fn solutions(&self, instance: &Instance) -> Option<Vec<String>> {
        let data = instance_data::<CountdownData>(instance).ok()?;
        // More numbers than the enumerator handles only come from hand-made instances.
        (data.numbers.len() <= MAX_NUMBERS).then(|| solutions(&data))
    }

    fn render_solution(&self, _instance: &Instance, canonical: &str) -> String {
        // Canonical strings are already expressions the verifier accepts (tested).
        canonical.to_string()
    }

    fn wrong_response(&self, instance: &Instance, rng: &mut Rng) -> String {
        let Ok(data) = instance_data::<CountdownData>(instance) else {
            return "0".to_string();
        };
        let wrong: Vec<String> = all_expressions(&data.numbers, data.allow_division)
            .into_iter()
            .filter(|(_, value)| *value != data.target)
            .map(|(c, _)| c.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Any single number differs from the target or, if all equal it, their sum does not,
        // so `wrong` is non-empty; the fallback only guards malformed data.
        rng.choose(&wrong).cloned().unwrap_or_else(|| "0".to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Canonical forms

/// A solution up to commutativity and associativity. Invariants (kept by the constructors
/// below): a `Sum`'s terms are never sums, a `Prod`'s factors never products, every list is
/// sorted, and `pos`/`num` are non-empty because the first operand of a written sum or
/// product always lands there. Variant order makes products print before plain numbers
/// (`3*5+7`, `(1+2)*4`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Canon {
    Prod { num: Vec<Canon>, den: Vec<Canon> },
    Sum { pos: Vec<Canon>, neg: Vec<Canon> },
    Num(i64),
}

impl Canon {
    fn into_terms(self) -> (Vec<Canon>, Vec<Canon>) {
        match self {
            Canon::Sum { pos, neg } => (pos, neg),
            other => (vec![other], vec![]),
        }
    }

    fn into_factors(self) -> (Vec<Canon>, Vec<Canon>) {
        match self {
            Canon::Prod { num, den } => (num, den),
            other => (vec![other], vec![]),
        }
    }

    fn sum(mut pos: Vec<Canon>, mut neg: Vec<Canon>) -> Canon {
        pos.sort();
        neg.sort();
        Canon::Sum { pos, neg }
    }

    fn prod(mut num: Vec<Canon>, mut den: Vec<Canon>) -> Canon {
        num.sort();
        den.sort();
        Canon::Prod { num, den }
    }

    /// `self op rhs`, flattening into the existing sum or product.
    pub fn combine(self, op: Op, rhs: Canon) -> Canon {
        match op {
            Op::Add | Op::Sub => {
                let (mut pos, mut neg) = self.into_terms();
                let (rpos, rneg) = rhs.into_terms();
                if op == Op::Add {
                    pos.extend(rpos);
                    neg.extend(rneg);
                } else {
                    pos.extend(rneg);
                    neg.extend(rpos);
                }
                Canon::sum(pos, neg)
            }
            Op::Mul | Op::Div => {
                let (mut num, mut den) = self.into_factors();
                let (rnum, rden) = rhs.into_factors();
                if op == Op::Mul {
                    num.extend(rnum);
                    den.extend(rden);
                } else {
                    num.extend(rden);
                    den.extend(rnum);
                }
                Canon::prod(num, den)
            }
        }
    }

    fn write_factor(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Canon::Sum { .. } => write!(out, "({self})"),
            _ => write!(out, "{self}"),
        }
    }
}

/// Prints the canonical string: positive terms then negative ones, factors then divisors,
/// sums inside products parenthesised. Written left to right it evaluates exactly whenever
/// the solution it came from did: the product of all factors is divisible by the product of
/// all divisors, hence by every prefix of them.
impl std::fmt::Display for Canon {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Canon::Num(n) => write!(out, "{n}"),
            Canon::Sum { pos, neg } => {
                for (i, term) in pos.iter().enumerate() {
                    if i > 0 {
                        out.write_str("+")?;
                    }
                    write!(out, "{term}")?;
                }
                for term in neg {
                    write!(out, "-{term}")?;
                }
                Ok(())
            }
            Canon::Prod { num, den } => {
                for (i, factor) in num.iter().enumerate() {
                    if i > 0 {
                        out.write_str("*")?;
                    }
                    factor.write_factor(out)?;
                }
                for factor in den {
                    out.write_str("/")?;
                    factor.write_factor(out)?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing and evaluation

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }
}

/// An expression as written; `col` is the 1-based column of a number or operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num { value: i64, col: usize },
    Bin { op: Op, lhs: Box<Expr>, rhs: Box<Expr>, col: usize },
}

/// A parsed response: the expression and the optional `=N` claim after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub expr: Expr,
    pub claim: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "parse error at col {}: {}", self.col, self.message)
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn col(&self) -> usize {
        self.pos + 1
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { col: self.col(), message: message.into() })
    }

    fn skip_spaces(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_spaces();
        self.chars.get(self.pos).copied()
    }

    fn unexpected<T>(&mut self, wanted: &str) -> Result<T, ParseError> {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => self.error(format!("expected {wanted}, found '{c}'")),
            Some(c) => self.error(format!("expected {wanted}, found {:?}", c)),
            None => self.error(format!("expected {wanted}, found end of response")),
        }
    }

    fn number(&mut self) -> Result<(i64, usize), ParseError> {
        self.skip_spaces();
        let start = self.pos;
        let mut value: i64 = 0;
        while let Some(d) = self.chars.get(self.pos).and_then(|c| c.to_digit(10)) {
            value = match value.checked_mul(10).and_then(|v| v.checked_add(i64::from(d))) {
                Some(v) => v,
                None => return Err(ParseError { col: start + 1, message: "number too large".to_string() }),
            };
            self.pos += 1;
        }
        if self.pos == start {
            return self.unexpected("a number or '('");
        }
        Ok((value, start + 1))
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.term()?;
        while let Some(c @ ('+' | '-')) = self.peek() {
            let col = self.col();
            self.pos += 1;
            let rhs = self.term()?;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            lhs = Expr::Bin { op, lhs: Box::new(lhs), rhs: Box::new(rhs), col };
        }
        Ok(lhs)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.atom()?;
        while let Some(c @ ('*' | '/')) = self.peek() {
            let col = self.col();
            self.pos += 1;
            let rhs = self.atom()?;
            let op = if c == '*' { Op::Mul } else { Op::Div };
            lhs = Expr::Bin { op, lhs: Box::new(lhs), rhs: Box::new(rhs), col };
        }
        Ok(lhs)
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == Some('(') {
            if self.depth >= MAX_NESTING {
                return self.error(format!("parentheses nested deeper than {MAX_NESTING}"));
            }
            self.pos += 1;
            self.depth += 1;
            let inner = self.expr()?;
            self.depth -= 1;
            if self.peek() != Some(')') {
                return self.unexpected("')'");
            }
            self.pos += 1;
            return Ok(inner);
        }
        let (value, col) = self.number()?;
        Ok(Expr::Num { value, col })
    }
}

/// Parses `expr` or `expr = N`, with any whitespace between tokens.
pub fn parse(response: &str) -> Result<Parsed, ParseError> {
    let mut p = Parser { chars: response.chars().collect(), pos: 0, depth: 0 };
    if response.trim().is_empty() {
        return Err(ParseError { col: 1, message: "empty response".to_string() });
    }
    let expr = p.expr()?;
    let claim = if p.peek() == Some('=') {
        p.pos += 1;
        Some(p.number()?.0)
    } else {
        None
    };
    if p.peek().is_some() {
        let wanted = if claim.is_some() { "end of response" } else { "an operator, '=' or end of response" };
        return p.unexpected(wanted);
    }
    Ok(Parsed { expr, claim })
}

impl Expr {
    pub fn canonical(&self) -> Canon {
        match self {
            Expr::Num { value, .. } => Canon::Num(*value),
            Expr::Bin { op, lhs, rhs, .. } => lhs.canonical().combine(*op, rhs.canonical()),
        }
    }

    fn leaves(&self, out: &mut Vec<i64>) {
        match self {
            Expr::Num { value, .. } => out.push(*value),
            Expr::Bin { lhs, rhs, .. } => {
                lhs.leaves(out);
                rhs.leaves(out);
            }
        }
    }

    /// Integer value in written order; division must be allowed and exact.
    pub fn evaluate(&self, allow_division: bool) -> Result<i64, String> {
        match self {
            Expr::Num { value, .. } => Ok(*value),
            Expr::Bin { op, lhs, rhs, col } => {
                let a = lhs.evaluate(allow_division)?;
                let b = rhs.evaluate(allow_division)?;
                apply(*op, a, b, allow_division).map_err(|e| format!("{e} at col {col}"))
            }
        }
    }
}

fn apply(op: Op, a: i64, b: i64, allow_division: bool) -> Result<i64, String> {
    let overflow = || format!("overflow in {a}{}{b}", op.symbol());
    match op {
        Op::Add => a.checked_add(b).ok_or_else(overflow),
        Op::Sub => a.checked_sub(b).ok_or_else(overflow),
        Op::Mul => a.checked_mul(b).ok_or_else(overflow),
        Op::Div if !allow_division => Err("division not allowed in this instance".to_string()),
        Op::Div if b == 0 => Err(format!("division by zero in {a}/{b}")),
        Op::Div if a % b != 0 => Err(format!("division not exact: {a}/{b}")),
        Op::Div => a.checked_div(b).ok_or_else(overflow),
    }
}

/// Checks that every number written is available, counting multiplicity.
fn check_numbers(used: &[i64], given: &[i64]) -> Result<(), String> {
    let mut left: BTreeMap<i64, usize> = BTreeMap::new();
    for n in given {
        *left.entry(*n).or_default() += 1;
    }
    for n in used {
        match left.get_mut(n) {
            None => return Err(format!("uses {n} which is not available")),
            Some(0) => return Err(format!("reused number {n}")),
            Some(k) => *k -= 1,
        }
    }
    Ok(())
}

/// The verifier proper: parse, check numbers, evaluate, compare with the target.
pub fn verify_response(data: &CountdownData, response: &str) -> Verdict {
    let parsed = match parse(response) {
        Ok(p) => p,
        Err(e) => return Verdict::wrong(e.to_string(), None),
    };
    let canonical = parsed.expr.canonical().to_string();
    let mut used = Vec::new();
    parsed.expr.leaves(&mut used);
    if let Err(reason) = check_numbers(&used, &data.numbers) {
        return Verdict::wrong(reason, Some(canonical));
    }
    let value = match parsed.expr.evaluate(data.allow_division) {
        Ok(v) => v,
        Err(reason) => return Verdict::wrong(reason, Some(canonical)),
    };
    if value != data.target {
        return Verdict::wrong(format!("evaluates to {value}, target {}", data.target), Some(canonical));
    }
    if let Some(claim) = parsed.claim.filter(|c| *c != data.target) {
        return Verdict::wrong(format!("claims ={claim}, target {}", data.target), Some(canonical));
    }
    Verdict::correct(canonical)
}

// ---------------------------------------------------------------------------------------
// Enumeration

/// Every distinct canonical expression over every non-empty sub-multiset of `numbers`, with
/// its value. Dynamic programming over index subsets: the expressions using exactly the
/// indices in `mask` are all `x op y` for a split of `mask` into two non-empty halves. This
/// covers every parenthesisation a response can write, with the same exact-division rule as
/// the verifier, so the enumeration and the verifier agree (tested).
pub fn all_expressions(numbers: &[i64], allow_division: bool) -> Vec<(Canon, i64)> {
    let n = numbers.len().min(MAX_NUMBERS);
    let full = (1usize << n) - 1;
    let mut by_mask: Vec<Vec<(Canon, i64)>> = vec![Vec::new(); full + 1];
    for mask in 1..=full {
        if mask.count_ones() == 1 {
            let value = numbers[mask.trailing_zeros() as usize];
            by_mask[mask] = vec![(Canon::Num(value), value)];
            continue;
        }
        let mut seen: HashSet<Canon> = HashSet::new();
        let mut out = Vec::new();
        // Each unordered split once: `left` holds the lowest set bit of `mask`.
        let low = mask & mask.wrapping_neg();
        let mut left = (mask - 1) & mask;
        while left > 0 {
            if left & low != 0 {
                let right = mask & !left;
                for (x, xv) in &by_mask[left] {
                    for (y, yv) in &by_mask[right] {
                        for (a, av, op, b, bv) in [
                            (x, *xv, Op::Add, y, *yv),
                            (x, *xv, Op::Sub, y, *yv),
                            (y, *yv, Op::Sub, x, *xv),
                            (x, *xv, Op::Mul, y, *yv),
                            (x, *xv, Op::Div, y, *yv),
                            (y, *yv, Op::Div, x, *xv),
                        ] {
                            let Ok(value) = apply(op, av, bv, allow_division) else { continue };
                            let canon = a.clone().combine(op, b.clone());
                            if seen.insert(canon.clone()) {
                                out.push((canon, value));
                            }
                        }
                    }
                }
            }
            left = (left - 1) & mask;
        }
        by_mask[mask] = out;
    }
    by_mask.into_iter().flatten().collect()
}

/// Canonical solution strings for each reachable value (deduplicated across index subsets,
/// which matters when a number is listed twice).
pub fn solutions_by_value(numbers: &[i64], allow_division: bool) -> BTreeMap<i64, BTreeSet<String>> {
    let mut by_value: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (canon, value) in all_expressions(numbers, allow_division) {
        by_value.entry(value).or_default().insert(canon.to_string());
    }
    by_value
}

/// All canonical solutions of an instance, sorted.
pub fn solutions(data: &CountdownData) -> Vec<String> {
    let mut by_value = solutions_by_value(&data.numbers, data.allow_division);
    by_value.remove(&data.target).map(|s| s.into_iter().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(numbers: &[i64], target: i64, allow_division: bool) -> CountdownData {
        CountdownData { numbers: numbers.to_vec(), target, allow_division }
    }

    fn reason(d: &CountdownData, response: &str) -> String {
        verify_response(d, response).reason
    }

    fn canon(expr: &str) -> String {
        parse(expr).unwrap().expr.canonical().to_string()
    }

    #[test]
    fn verifier_accepts_valid_answers_in_any_layout() {
        let d = data(&[3, 5, 7], 22, false);
        for ok in ["3*5+7", " ( 3 * 5 ) + 7 ", "7+5*3", "7+(3*5)=22", "3*5+7 = 22\n", "((7))+3*5"] {
            let v = verify_response(&d, ok);
            assert!(v.correct, "{ok:?}: {}", v.reason);
            assert_eq!(v.reward, 1.0);
            assert_eq!(v.reason, "ok");
            assert_eq!(v.canonical.as_deref(), Some("3*5+7"), "{ok:?}");
        }
    }

    #[test]
    fn verifier_rejects_with_the_hand_worked_reason() {
        let d = data(&[3, 5, 7], 22, false);
        assert_eq!(reason(&d, "3*7+5"), "evaluates to 26, target 22");
        assert_eq!(reason(&d, "3*5+7+3"), "reused number 3");
        assert_eq!(reason(&d, "4*5+2"), "uses 4 which is not available");
        assert_eq!(reason(&d, "3*5+7=21"), "claims =21, target 22");
        assert_eq!(reason(&d, "3*5+"), "parse error at col 5: expected a number or '(', found end of response");
        assert_eq!(reason(&d, "3*5+7x"), "parse error at col 6: expected an operator, '=' or end of response, found 'x'");
        assert_eq!(reason(&d, "3 5"), "parse error at col 3: expected an operator, '=' or end of response, found '5'");
        assert_eq!(reason(&d, "(3+5"), "parse error at col 5: expected ')', found end of response");
        assert_eq!(reason(&d, "-3+25"), "parse error at col 1: expected a number or '(', found '-'");
        assert_eq!(reason(&d, "  \n"), "parse error at col 1: empty response");
        assert_eq!(reason(&d, "3*5+7=22=22"), "parse error at col 9: expected end of response, found '='");
        assert_eq!(reason(&d, "7*3/3"), "reused number 3");
        assert_eq!(reason(&d, "5*7/3"), "division not allowed in this instance at col 4");
        let wrong = verify_response(&d, "3*7+5");
        assert!(!wrong.correct);
        assert_eq!(wrong.reward, 0.0);
        assert_eq!(wrong.canonical.as_deref(), Some("3*7+5"));
        assert_eq!(verify_response(&d, "3*").canonical, None);
    }

    #[test]
    fn division_must_be_exact_and_nonzero() {
        let d = data(&[3, 4, 8], 6, true);
        assert!(verify_response(&d, "8/4*3").correct);
        assert!(verify_response(&d, "3/(4/8)").reason.starts_with("division not exact: 4/8"));
        assert_eq!(reason(&d, "8/3"), "division not exact: 8/3 at col 2");
        let z = data(&[2, 2, 5], 5, true);
        assert_eq!(reason(&z, "5/(2-2)"), "division by zero in 5/0 at col 2");
        assert!(verify_response(&z, "5*2/2").correct);
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_stack_overflow() {
        let deep = format!("{}3{}", "(".repeat(100), ")".repeat(100));
        assert!(reason(&data(&[3], 3, false), &deep).contains("nested deeper than 32"));
        let fine = format!("{}3{}", "(".repeat(10), ")".repeat(10));
        assert!(verify_response(&data(&[3, 4], 3, false), &fine).correct);
    }

    #[test]
    fn canonical_forms_identify_commutative_and_associative_rewrites() {
        let same = [
            ("1+(2+3)", "(1+2)+3"),
            ("3+2+1", "1+2+3"),
            ("1-2+3", "1+3-2"),
            ("4-(2-1)", "4-2+1"),
            ("4-(2+1)", "4-1-2"),
            ("2*(3*4)", "4*3*2"),
            ("8/2/2", "8/(2*2)"),
            ("8/(4/2)", "8*2/4"),
            ("(1+2)*4", "4*(2+1)"),
            ("7+3*5", "5*3+7"),
        ];
        for (a, b) in same {
            assert_eq!(canon(a), canon(b), "{a} vs {b}");
        }
        let different = [("1+2*3", "(1+2)*3"), ("5-3", "3-5"), ("8/2", "2/8"), ("6-(2+1)", "6-2+1"), ("3*5+7", "(3*5+7)*1")];
        for (a, b) in different {
            assert_ne!(canon(a), canon(b), "{a} vs {b}");
        }
        // The printed form: products before numbers, sums parenthesised inside products.
        assert_eq!(canon("7+3*5"), "3*5+7");
        assert_eq!(canon("4*(2+1)"), "(1+2)*4");
        assert_eq!(canon("2-(3-1)"), "1+2-3");
        assert_eq!(canon("9/(8-5)*(1+2)"), "(1+2)*9/(8-5)");
    }

    // Hand-worked solution sets. Each pair expression over {a, b} is one of a+b, a-b, b-a,
    // a*b (and a/b, b/a when exact); a triple is a pair expression combined with the third
    // number the same ways.
    //
    // [1,2,3] -> 6, no division. Pairs: {2,3}: 2*3 = 6. Triples reaching 6: (1+2)+3,
    // (1+3)+2, (2+3)+1 (all "1+2+3"); (1*2)*3, (1*3)*2, (2*3)*1 (all "1*2*3"). No other
    // combination gives 6 (e.g. 3-(1-2) = 4, (3-1)*2 = 4, 2*3-1 = 5).
    // With division the only extra exact route is a product divided by 1: 2*3/1, 2/1*3,
    // 3/1*2, (2*3)/1 (all "2*3/1"); 3/(1/2) and 2/(1/3) are not exact.
    //
    // [2,3,5] -> 10, no division: 2*5 and 2+3+5; checked all 4x3 combinations of a pair
    // expression with the remaining number, e.g. (5-3)*2 = 4, 5*(3-2) = 5, (2+3)*5 = 25.
    //
    // [2,2,3] -> 7, no division (2 listed twice): 2+2+3 and (2*2)+3; 2*3+2 = 8, 3-2+2 = 3.
    //
    // [2,3,4] -> 10, no division: 2*3+4 and 3*4-2; {3,4} never makes 5 (7, +-1, 12), so
    // 2*(..) fails, and 2+3+4 = 9, 2*4+3 = 11, (4-2)*3 = 6.
    #[test]
    fn enumeration_matches_hand_worked_solution_sets() {
        assert_eq!(solutions(&data(&[1, 2, 3], 6, false)), ["1*2*3", "1+2+3", "2*3"]);
        assert_eq!(solutions(&data(&[1, 2, 3], 6, true)), ["1*2*3", "1+2+3", "2*3", "2*3/1"]);
        assert_eq!(solutions(&data(&[2, 3, 5], 10, false)), ["2*5", "2+3+5"]);
        assert_eq!(solutions(&data(&[2, 2, 3], 7, false)), ["2*2+3", "2+2+3"]);
        assert_eq!(solutions(&data(&[2, 3, 4], 10, false)), ["2*3+4", "3*4-2"]);
        assert!(solutions(&data(&[1, 1, 1], 50, false)).is_empty());
    }

    /// Every written expression over every ordering of every subset, fully parenthesised:
    /// an enumeration that shares nothing with `all_expressions` but the verifier.
    fn brute_force_solutions(d: &CountdownData) -> BTreeSet<String> {
        fn trees(leaves: &[String]) -> Vec<String> {
            if leaves.len() == 1 {
                return leaves.to_vec();
            }
            let mut out = Vec::new();
            for k in 1..leaves.len() {
                for l in trees(&leaves[..k]) {
                    for r in trees(&leaves[k..]) {
                        for op in ['+', '-', '*', '/'] {
                            out.push(format!("({l}{op}{r})"));
                        }
                    }
                }
            }
            out
        }
        fn orderings(pool: &[usize], chosen: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if !chosen.is_empty() {
                out.push(chosen.clone());
            }
            for &i in pool {
                if !chosen.contains(&i) {
                    chosen.push(i);
                    orderings(pool, chosen, out);
                    chosen.pop();
                }
            }
        }
        let mut all = Vec::new();
        orderings(&(0..d.numbers.len()).collect::<Vec<_>>(), &mut Vec::new(), &mut all);
        let mut found = BTreeSet::new();
        for order in all {
            let leaves: Vec<String> = order.iter().map(|i| d.numbers[*i].to_string()).collect();
            for expr in trees(&leaves) {
                let v = verify_response(d, &expr);
                if v.correct {
                    found.insert(v.canonical.unwrap());
                }
            }
        }
        found
    }

    #[test]
    fn enumeration_agrees_with_brute_force_over_written_expressions() {
        for d in [
            data(&[1, 2, 3], 6, true),
            data(&[2, 3, 5, 7], 24, true),
            data(&[2, 2, 3, 4], 12, true),
            data(&[1, 3, 4, 6], 24, false),
            data(&[4, 5, 6, 9], 30, false),
        ] {
            let enumerated = solutions(&d);
            let brute: Vec<String> = brute_force_solutions(&d).into_iter().collect();
            assert!(!enumerated.is_empty(), "{d:?}");
            assert_eq!(enumerated, brute, "{d:?}");
        }
    }

    #[test]
    fn every_enumerated_solution_verifies_and_renders_to_itself() {
        let task = Countdown::new(CountdownOptions { allow_division: true, ..Default::default() }).unwrap();
        let mut rng = Rng::new(11);
        for _ in 0..20 {
            let instance = task.generate(&mut rng);
            let sols = task.solutions(&instance).unwrap();
            assert!(sols.len() >= 5, "{}: {sols:?}", instance.prompt);
            let mut sorted = sols.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, sols);
            for s in &sols {
                let rendered = task.render_solution(&instance, s);
                let v = task.verify(&instance, &rendered);
                assert!(v.correct, "{} {rendered}: {}", instance.prompt, v.reason);
                assert_eq!(v.canonical.as_deref(), Some(s.as_str()));
                assert!(rendered.len() <= 24 && rendered.bytes().all(|b| b.is_ascii_graphic()), "{rendered:?}");
            }
            for _ in 0..5 {
                let wrong = task.wrong_response(&instance, &mut rng);
                let v = task.verify(&instance, &wrong);
                assert!(!v.correct && v.reason.starts_with("evaluates to"), "{wrong}: {}", v.reason);
            }
        }
    }

    #[test]
    fn default_instances_fit_a_tiny_character_model() {
        let o = CountdownOptions::default();
        let task = Countdown::new(o.clone()).unwrap();
        let mut rng = Rng::new(5);
        for _ in 0..100 {
            let inst = task.generate(&mut rng);
            let d: CountdownData = serde_json::from_value(inst.data.clone()).unwrap();
            assert!(inst.prompt.len() <= MAX_PROMPT_CHARS);
            assert!(inst.prompt.bytes().all(|b| b == b'\n' || b.is_ascii_graphic() || b == b' '));
            assert!((o.min_numbers..=o.max_numbers).contains(&d.numbers.len()));
            assert!(d.numbers.windows(2).all(|w| w[0] <= w[1]));
            assert!(d.numbers.iter().all(|n| (o.min_value..=o.max_value).contains(n)));
            assert!((o.min_target..=o.max_target).contains(&d.target) && !d.numbers.contains(&d.target));
            assert_eq!(inst.prompt, prompt(&d.numbers, d.target));
            assert!(solutions(&d).len() >= o.min_solutions);
        }
        assert_eq!(prompt(&[3, 5, 7], 22), "countdown 3 5 7 -> 22\n");
    }

    #[test]
    fn same_seed_same_instances() {
        let task = Countdown::new(CountdownOptions::default()).unwrap();
        let draw = |seed| (0..10).map(|_| task.generate(&mut Rng::new(seed))).collect::<Vec<_>>();
        assert_eq!(draw(3), draw(3));
        let mut a = Rng::new(3);
        let mut b = Rng::new(4);
        let xs: Vec<_> = (0..10).map(|_| task.generate(&mut a).prompt).collect();
        let ys: Vec<_> = (0..10).map(|_| task.generate(&mut b).prompt).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn options_are_validated() {
        let err = |o: CountdownOptions| Countdown::new(o).err().unwrap().to_string();
        assert!(err(CountdownOptions { max_numbers: 6, ..Default::default() }).contains("max_numbers <= 5"));
        assert!(err(CountdownOptions { max_value: 999, max_numbers: 5, max_target: 9_999_999, ..Default::default() })
            .contains("limit 40"));
        assert!(err(CountdownOptions { min_solutions: 10_000, ..Default::default() }).contains("lower min_solutions"));
        // Three numbers in 1..=9 reach a target in 10..=50 in at most four canonical ways
        // without division (measured by enumerating all 165 multisets while choosing the
        // defaults), so the probe must refuse min_numbers = 3 with min_solutions = 5.
        let three = err(CountdownOptions { min_numbers: 3, ..Default::default() });
        assert!(three.contains("no instance of 3 numbers"), "{three}");
        let easy = Countdown::new(CountdownOptions { min_numbers: 3, min_solutions: 2, ..Default::default() }).unwrap();
        let mut rng = Rng::new(9);
        let lens: BTreeSet<usize> = (0..40).map(|_| serde_json::from_value::<CountdownData>(easy.generate(&mut rng).data).unwrap().numbers.len()).collect();
        assert_eq!(lens, BTreeSet::from([3, 4]));
    }

    #[test]
    fn malformed_instance_data_is_a_verdict_not_a_panic() {
        let task = Countdown::new(CountdownOptions::default()).unwrap();
        let inst = Instance { task: NAME.into(), id: "x".into(), prompt: "p".into(), data: serde_json::json!({"n": 1}) };
        let v = task.verify(&inst, "1+2");
        assert!(!v.correct && v.reason.contains("malformed instance data"), "{}", v.reason);
        assert_eq!(task.solutions(&inst), None);
        let six = serde_json::json!(CountdownData { numbers: vec![1; 6], target: 6, allow_division: false });
        let inst = Instance { data: six, ..inst };
        assert_eq!(task.solutions(&inst), None);
        assert!(task.verify(&inst, "1+1+1+1+1+1").correct);
    }
}
