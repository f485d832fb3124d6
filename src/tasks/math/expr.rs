//! The expression tokenizer, parser and evaluator behind symbolic equivalence: LaTeX
//! (`\frac12`, `\sqrt[3]{x}`, `\pi`), implicit multiplication (`2x`, `(x-1)(x+1)`),
//! factorials; nesting and length are bounded so that any input is refused, not overflowed.

use super::tally;
use std::collections::{BTreeSet, HashMap};


#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Func {
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
pub(super) enum Expr {
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

pub(super) fn parse_expr(s: &str) -> Result<Expr, String> {
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
    pub(super) fn eval(&self, env: &HashMap<String, f64>) -> f64 {
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

    pub(super) fn variables(&self, out: &mut BTreeSet<String>) {
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
    use super::super::normalize_answer;

    fn eval_const(s: &str) -> f64 {
        parse_expr(&normalize_answer(s).text).unwrap().eval(&HashMap::new())
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
}
