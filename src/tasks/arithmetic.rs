//! Multi-digit arithmetic with a written scratchpad (docs/METHODS.md §10.1 task 4): one
//! right answer reached through many token-level forks, the test bed for the entropy
//! advantage at large pass@K.
//!
//! Prompt: `347+586=\n` or `347*6=\n`. Response: a scratchpad, then `=> ` and the answer.
//! - Addition: the column sums from the right, each including the carry from the column
//!   before: `347+586` gives `13 13 9 => 933` (7+6=13, 4+8+1=13, 3+5+1=9).
//! - Multiplication by a one-digit number: the same chain of column products:
//!   `347*6` gives `42 28 20 => 2082` (7*6=42, 4*6+4=28, 3*6+2=20).
//! - Multiplication by a longer number: the shifted partial products, right digit first:
//!   `347*86` gives `2082+27760 => 29842`.
//!
//! The verifier checks only the number after the last `=>`; the scratchpad is free text and
//! is not required to be right (it is the teacher's format, not a rule).

use super::{decimal_len, instance_data, parse_options, Instance, Task, TaskError, Verdict};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

pub const NAME: &str = "arithmetic";
pub const DESCRIPTION: &str = "multi-digit addition or multiplication with a scratchpad, one final answer after '=>'";

/// Longest prompt the options may produce.
pub const MAX_PROMPT_CHARS: usize = 40;
/// Operands stay below 10^9 so every product fits in an `i64`.
pub const MAX_DIGITS: usize = 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArithOp {
    Add,
    Mul,
}

impl ArithOp {
    fn symbol(self) -> char {
        match self {
            ArithOp::Add => '+',
            ArithOp::Mul => '*',
        }
    }
}

/// Generator options. Defaults give 3-digit addition and 3-digit by 1-digit multiplication,
/// whose responses stay under 20 characters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithmeticOptions {
    /// Which operations to draw from, uniformly.
    pub ops: Vec<ArithOp>,
    /// Digits of both addends, and of the multiplicand.
    pub digits: usize,
    /// Digits of the multiplier.
    pub multiplier_digits: usize,
    /// Share of instances whose teacher response calls Python instead of working the
    /// scratchpad (STILL-3's "coding while thinking", trace synthesis format): the code block,
    /// the real executor's output, then the answer. Chosen per instance from its id.
    pub tool_rate: f64,
}

impl Default for ArithmeticOptions {
    fn default() -> Self {
        ArithmeticOptions { ops: vec![ArithOp::Add, ArithOp::Mul], digits: 3, multiplier_digits: 1, tool_rate: 0.0 }
    }
}

impl ArithmeticOptions {
    fn validate(&self) -> Result<(), String> {
        if self.ops.is_empty() {
            return Err("ops must name at least one of \"add\", \"mul\"".to_string());
        }
        for (key, value) in [("digits", self.digits), ("multiplier_digits", self.multiplier_digits)] {
            if !(1..=MAX_DIGITS).contains(&value) {
                return Err(format!("{key} must be in 1..={MAX_DIGITS}, got {value}"));
            }
        }
        if !(0.0..=1.0).contains(&self.tool_rate) {
            return Err(format!("tool_rate must be in [0, 1], got {}", self.tool_rate));
        }
        let longest = self.digits + 1 + self.digits.max(self.multiplier_digits) + 2;
        if longest > MAX_PROMPT_CHARS {
            return Err(format!("prompts could reach {longest} characters (limit {MAX_PROMPT_CHARS})"));
        }
        Ok(())
    }
}

/// The facts the verifier needs, stored in `Instance::data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArithmeticData {
    pub op: ArithOp,
    pub a: i64,
    pub b: i64,
}

impl ArithmeticData {
    pub fn answer(&self) -> i64 {
        match self.op {
            ArithOp::Add => self.a + self.b,
            ArithOp::Mul => self.a * self.b,
        }
    }
}

pub struct Arithmetic {
    options: ArithmeticOptions,
}

impl Arithmetic {
    pub fn new(options: ArithmeticOptions) -> Result<Self, TaskError> {
        options.validate().map_err(|message| TaskError::BadOptions { task: NAME.to_string(), message })?;
        Ok(Arithmetic { options })
    }

    pub fn from_table(options: &toml::Table) -> Result<Self, TaskError> {
        Arithmetic::new(parse_options(NAME, options)?)
    }
}

/// A uniform number with exactly `digits` digits (leading digit non-zero).
fn draw_with_digits(rng: &mut Rng, digits: usize) -> i64 {
    let low = if digits == 1 { 1 } else { 10_i64.pow(digits as u32 - 1) };
    rng.range(low, 10_i64.pow(digits as u32) - 1)
}

pub fn prompt(data: &ArithmeticData) -> String {
    format!("{}{}{}=\n", data.a, data.op.symbol(), data.b)
}

/// Decimal digits of `n >= 0`, least significant first.
fn digits_lsb_first(n: i64) -> Vec<i64> {
    n.to_string().bytes().rev().map(|b| i64::from(b - b'0')).collect()
}

/// A deliberate slip in a carry chain, for wrong responses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slip {
    /// The carry out of this column is not added to the next one.
    DropCarry(usize),
    /// This column's value is off by the given amount.
    Miscount(usize, i64),
}

/// Runs a carry chain: column `i` shows `base[i]` plus the carry from column `i-1`; the
/// answer takes each column's last digit and the whole value of the final column.
/// Returns the shown column values and the answer.
fn carry_chain(base: &[i64], slip: Option<Slip>) -> (Vec<i64>, i64) {
    let mut shown = Vec::with_capacity(base.len());
    let mut carry = 0;
    let mut answer = 0;
    let mut place = 1;
    for (i, b) in base.iter().enumerate() {
        let mut value = b + carry;
        if let Some(Slip::Miscount(at, delta)) = slip {
            if at == i {
                value += delta;
            }
        }
        shown.push(value);
        if i + 1 == base.len() {
            answer += value * place;
        } else {
            answer += (value % 10) * place;
            carry = if slip == Some(Slip::DropCarry(i)) { 0 } else { value / 10 };
            place *= 10;
        }
    }
    (shown, answer)
}

fn join(values: &[i64], sep: &str) -> String {
    values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(sep)
}

/// The column bases of `a*digit` (least significant first).
fn product_bases(a: i64, digit: i64) -> Vec<i64> {
    digits_lsb_first(a).into_iter().map(|x| x * digit).collect()
}

/// The column bases of `a+b` (least significant first), padding the shorter with zeros.
fn sum_bases(a: i64, b: i64) -> Vec<i64> {
    let (da, db) = (digits_lsb_first(a), digits_lsb_first(b));
    (0..da.len().max(db.len())).map(|i| da.get(i).unwrap_or(&0) + db.get(i).unwrap_or(&0)).collect()
}

/// The scratchpad and the answer it leads to, with an optional slip (`partial` picks which
/// partial product slips in long multiplication).
fn work(data: &ArithmeticData, slip: Option<(usize, Slip)>) -> (String, i64) {
    let chain_slip = slip.map(|(_, s)| s);
    match data.op {
        ArithOp::Add => {
            let (shown, answer) = carry_chain(&sum_bases(data.a, data.b), chain_slip);
            (join(&shown, " "), answer)
        }
        ArithOp::Mul if data.b < 10 => {
            let (shown, answer) = carry_chain(&product_bases(data.a, data.b), chain_slip);
            (join(&shown, " "), answer)
        }
        ArithOp::Mul => {
            let mut partials = Vec::new();
            let mut place = 1;
            for (j, digit) in digits_lsb_first(data.b).into_iter().enumerate() {
                let s = slip.filter(|(partial, _)| *partial == j).map(|(_, s)| s);
                let (_, value) = carry_chain(&product_bases(data.a, digit), s);
                partials.push(value * place);
                place *= 10;
            }
            (join(&partials, "+"), partials.iter().sum())
        }
    }
}

/// The teacher's response for a given final answer.
pub fn render(data: &ArithmeticData, answer: &str) -> String {
    format!("{} => {answer}", work(data, None).0)
}

/// Whether the teacher answers this instance with a tool call: a fixed hash of the id, so an
/// instance always gets the same form whoever asks.
fn uses_tool(id: &str, tool_rate: f64) -> bool {
    tool_rate > 0.0 && Rng::derive(0, &format!("arithmetic/tool/{id}")).f64() < tool_rate
}

/// The teacher's tool trace, in STILL-3's synthesis format (`ToolFormat::preset("synthesis")`:
/// the model stops after the code block's "```\n\n" and the output block is inserted). The
/// output comes from running the code in the sandbox, as STILL-3's traces do; without a
/// Python interpreter the scratchpad is used instead.
pub fn render_with_tool(data: &ArithmeticData, answer: &str) -> String {
    let code = tool_code(data);
    match run_cached(&code) {
        Some(output) => format!("```python\n{code}\n```\n\n```Output\n{output}\n```\n\n=> {answer}"),
        None => render(data, answer),
    }
}

/// The one line of Python a tool trace runs.
fn tool_code(data: &ArithmeticData) -> String {
    format!("print({}{}{})", data.a, data.op.symbol(), data.b)
}

/// The sandbox's output of `code`, once per distinct code (teachers render the same instance
/// many times over an SFT run).
fn run_cached(code: &str) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(code).cloned()) {
        return hit;
    }
    let out = crate::sandbox::tool::run_tool_call(code, &crate::sandbox::Limits::default()).ok().filter(|r| r.ok).map(|r| r.output);
    if let Ok(mut c) = cache.lock() {
        c.insert(code.to_string(), out.clone());
    }
    out
}

/// Reads the number after the last `=>`.
pub fn final_answer(response: &str) -> Result<i64, String> {
    let Some(at) = response.rfind("=>") else {
        return Err("no final answer: expected '=> N' at the end".to_string());
    };
    let tail = response[at + 2..].trim();
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) || tail.len() > 18 {
        return Err(format!("final answer {tail:?} is not a number (expected '=> N' at the end)"));
    }
    tail.parse::<i64>().map_err(|e| format!("final answer {tail:?}: {e}"))
}

pub fn verify_response(data: &ArithmeticData, response: &str) -> Verdict {
    match final_answer(response) {
        Err(reason) => Verdict::wrong(reason, None),
        Ok(given) if given == data.answer() => Verdict::correct(given.to_string()),
        Ok(given) => Verdict::wrong(format!("answer {given}, expected {}", data.answer()), Some(given.to_string())),
    }
}

/// A response with a realistic slip: a dropped carry where there is one, otherwise a column
/// miscounted by one. Either changes the answer by a non-zero multiple of a power of ten.
pub fn wrong(data: &ArithmeticData, rng: &mut Rng) -> String {
    let partial_count = if data.op == ArithOp::Mul && data.b >= 10 { decimal_len(data.b) } else { 1 };
    let partial = rng.usize(partial_count);
    let digit = if partial_count > 1 { digits_lsb_first(data.b)[partial] } else { data.b };
    let bases = match data.op {
        ArithOp::Add => sum_bases(data.a, data.b),
        ArithOp::Mul => product_bases(data.a, digit),
    };
    let (shown, _) = carry_chain(&bases, None);
    let carrying: Vec<usize> = (0..shown.len().saturating_sub(1)).filter(|i| shown[*i] >= 10).collect();
    let slip = match rng.choose(&carrying) {
        Some(i) if rng.bool(0.7) => Slip::DropCarry(*i),
        _ => {
            let column = rng.usize(shown.len());
            let delta = if shown[column] == 0 || rng.bool(0.5) { 1 } else { -1 };
            Slip::Miscount(column, delta)
        }
    };
    let (scratch, answer) = work(data, Some((partial, slip)));
    format!("{scratch} => {answer}")
}

impl Task for Arithmetic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        DESCRIPTION
    }

    fn generate(&self, rng: &mut Rng) -> Instance {
        let o = &self.options;
        let op = o.ops[rng.usize(o.ops.len())];
        let a = draw_with_digits(rng, o.digits);
        let b = match op {
            ArithOp::Add => draw_with_digits(rng, o.digits),
            ArithOp::Mul => draw_with_digits(rng, o.multiplier_digits),
        };
        let data = ArithmeticData { op, a, b };
        let prompt = prompt(&data);
        let id = format!("{NAME}-{}", prompt.trim().replace('*', "x"));
        Instance { task: NAME.to_string(), id, prompt, data: serde_json::json!(data) }
    }

    fn verify(&self, instance: &Instance, response: &str) -> Verdict {
        match instance_data::<ArithmeticData>(instance) {
            Ok(data) => verify_response(&data, response),
            Err(message) => Verdict::wrong(message, None),
        }
    }

    fn solutions(&self, instance: &Instance) -> Option<Vec<String>> {
        let data = instance_data::<ArithmeticData>(instance).ok()?;
        Some(vec![data.answer().to_string()])
    }

    fn render_solution(&self, instance: &Instance, canonical: &str) -> String {
        match instance_data::<ArithmeticData>(instance) {
            Ok(data) if uses_tool(&instance.id, self.options.tool_rate) => render_with_tool(&data, canonical),
            Ok(data) => render(&data, canonical),
            Err(_) => format!("=> {canonical}"),
        }
    }

    fn wrong_response(&self, instance: &Instance, rng: &mut Rng) -> String {
        match instance_data::<ArithmeticData>(instance) {
            Ok(data) => wrong(&data, rng),
            Err(_) => "=> 0".to_string(),
        }
    }

    /// Runs the code of every tool trace the teacher will write, a few interpreters at a
    /// time, so the SFT stream finds the outputs cached instead of starting ~1000 Pythons one
    /// after another in its first steps.
    fn prepare_teacher(&self, instances: &[Instance]) -> usize {
        let codes: Vec<String> = instances
            .iter()
            .filter(|inst| uses_tool(&inst.id, self.options.tool_rate))
            .filter_map(|inst| instance_data::<ArithmeticData>(inst).ok())
            .map(|data| tool_code(&data))
            .collect();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(code) = codes.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        run_cached(code);
                    }
                });
            }
        });
        codes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: i64, b: i64) -> ArithmeticData {
        ArithmeticData { op: ArithOp::Add, a, b }
    }

    fn mul(a: i64, b: i64) -> ArithmeticData {
        ArithmeticData { op: ArithOp::Mul, a, b }
    }

    #[test]
    fn tool_traces_carry_the_executors_output_and_the_share_asked_for() {
        if crate::sandbox::run_python("print(1)", "", &crate::sandbox::Limits::default()).is_err() {
            eprintln!("skipping: no python3 here");
            return;
        }
        let trace = render_with_tool(&mul(4821, 93), "448353");
        assert_eq!(trace, "```python\nprint(4821*93)\n```\n\n```Output\n448353\n```\n\n=> 448353");
        assert_eq!(verify_response(&mul(4821, 93), &trace), Verdict::correct("448353".into()));
        // The trace is the synthesis format the tool loop stops and resumes on.
        let f = crate::generate::tools::ToolFormat::preset("synthesis").unwrap();
        let (call, rest) = trace.split_at(trace.find(&f.stop).unwrap() + f.stop.len());
        assert_eq!(f.code_of(call).as_deref(), Some("print(4821*93)"));
        assert!(rest.starts_with(&f.render("448353")));
        let share = (0..2000).filter(|i| uses_tool(&format!("arithmetic-{i}"), 0.3)).count() as f64 / 2000.0;
        assert!((share - 0.3).abs() < 0.04, "{share}");
        assert!(!uses_tool("arithmetic-1", 0.0));
        assert!(Arithmetic::new(ArithmeticOptions { tool_rate: 1.5, ..Default::default() }).is_err());
        // The up-front pass runs exactly the tool instances' code, in parallel, into the cache
        // the traces then read.
        let task = Arithmetic::new(ArithmeticOptions { tool_rate: 0.5, ..Default::default() }).unwrap();
        let mut rng = Rng::new(7);
        let instances: Vec<Instance> = (0..12).map(|_| task.generate(&mut rng)).collect();
        let tools = instances.iter().filter(|i| uses_tool(&i.id, 0.5)).count();
        assert_eq!(task.prepare_teacher(&instances), tools);
        for inst in instances.iter().filter(|i| uses_tool(&i.id, 0.5)) {
            let data = instance_data::<ArithmeticData>(inst).unwrap();
            let answer = data.answer().to_string();
            assert!(task.render_solution(inst, &answer).contains(&format!("```Output\n{answer}\n```")), "{inst:?}");
        }
    }

    #[test]
    fn scratchpads_match_hand_worked_columns() {
        // 7+6=13, 4+8+1=13, 3+5+1=9.
        assert_eq!(render(&add(347, 586), "933"), "13 13 9 => 933");
        // 9+9=18, 9+9+1=19, 9+9+1=19 -> 1998.
        assert_eq!(render(&add(999, 999), "1998"), "18 19 19 => 1998");
        // 7*6=42, 4*6+4=28, 3*6+2=20.
        assert_eq!(render(&mul(347, 6), "2082"), "42 28 20 => 2082");
        // 347*6 = 2082, 347*80 = 27760.
        assert_eq!(render(&mul(347, 86), "29842"), "2082+27760 => 29842");
        // 125*8 = 1000, 125*0 = 0, 125*200 = 25000.
        assert_eq!(render(&mul(125, 208), "26000"), "1000+0+25000 => 26000");
        for d in [add(347, 586), add(999, 999), mul(347, 6), mul(347, 86), mul(125, 208), add(5, 4)] {
            assert_eq!(work(&d, None).1, d.answer(), "{d:?}");
        }
    }

    #[test]
    fn verifier_reads_only_the_final_answer() {
        let d = add(347, 586);
        let ok = verify_response(&d, "13 13 9 => 933");
        assert!(ok.correct && ok.reward == 1.0);
        assert_eq!(ok.canonical.as_deref(), Some("933"));
        // A wrong scratchpad does not matter; a bare final answer is enough.
        assert!(verify_response(&d, "1 2 3 => 933").correct);
        assert!(verify_response(&d, "=> 933\n").correct);
        assert!(verify_response(&d, "=> 934 => 933").correct);
        let wrong = verify_response(&d, "13 13 9 => 934");
        assert_eq!(wrong.reason, "answer 934, expected 933");
        assert_eq!(wrong.canonical.as_deref(), Some("934"));
        assert_eq!(verify_response(&d, "933").reason, "no final answer: expected '=> N' at the end");
        assert!(verify_response(&d, "=> 93x").reason.starts_with("final answer \"93x\" is not a number"));
        assert!(verify_response(&d, "=> -933").reason.contains("is not a number"));
        assert!(verify_response(&d, "=>").reason.contains("is not a number"));
    }

    #[test]
    fn wrong_responses_are_well_formed_and_wrong() {
        let task = Arithmetic::new(ArithmeticOptions { multiplier_digits: 2, ..Default::default() }).unwrap();
        let plain = Arithmetic::new(ArithmeticOptions::default()).unwrap();
        let mut rng = Rng::new(2);
        for t in [&task, &plain] {
            for _ in 0..200 {
                let inst = t.generate(&mut rng);
                let wrong = t.wrong_response(&inst, &mut rng);
                let v = t.verify(&inst, &wrong);
                assert!(!v.correct && v.reason.starts_with("answer "), "{} {wrong}: {}", inst.prompt, v.reason);
                let right = t.render_solution(&inst, &t.solutions(&inst).unwrap()[0]);
                assert!(t.verify(&inst, &right).correct);
                // Same shape as the teacher's response: same number of scratchpad entries.
                let shape = |s: &str| s.split([' ', '+']).count();
                assert_eq!(shape(&wrong), shape(&right), "{wrong} vs {right}");
            }
        }
        // A dropped carry: 347+586 without the carry out of the units column gives 923.
        let d = add(347, 586);
        assert_eq!(work(&d, Some((0, Slip::DropCarry(0)))), ("13 12 9".to_string(), 923));
    }

    #[test]
    fn default_instances_are_short_and_deterministic() {
        let task = Arithmetic::new(ArithmeticOptions::default()).unwrap();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..50).map(|_| task.generate(&mut rng)).collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        let mut ops = std::collections::BTreeSet::new();
        for inst in &a {
            let d: ArithmeticData = serde_json::from_value(inst.data.clone()).unwrap();
            ops.insert(format!("{:?}", d.op));
            assert!((100..=999).contains(&d.a));
            assert_eq!(inst.prompt, prompt(&d));
            let answer = task.solutions(inst).unwrap();
            assert_eq!(answer, [d.answer().to_string()]);
            assert!(task.render_solution(inst, &answer[0]).len() <= 30);
        }
        assert_eq!(ops.len(), 2);
        assert_eq!(prompt(&mul(347, 6)), "347*6=\n");
    }

    #[test]
    fn options_are_validated() {
        let err = |o: ArithmeticOptions| Arithmetic::new(o).err().unwrap().to_string();
        assert!(err(ArithmeticOptions { ops: vec![], ..Default::default() }).contains("ops must name"));
        assert!(err(ArithmeticOptions { digits: 10, ..Default::default() }).contains("digits must be in 1..=9, got 10"));
        let mut table = toml::Table::new();
        table.insert("ops".into(), toml::Value::Array(vec!["div".into()]));
        let msg = Arithmetic::from_table(&table).err().unwrap().to_string();
        assert!(msg.contains("div"), "{msg}");
    }
}
