//! STILL-3 tool calls: the model writes a ```python block mid-reasoning, the code runs, and
//! its output goes back into the context (docs/METHODS.md §7.3, `PythonExecutor`).
//!
//! Semantics reproduced: a fresh process per call; the result is stdout; when stdout stays
//! empty and the last statement is an expression, its value (`str`) is the result, as if
//! the last line were evaluated; an exception reports only the traceback's last line; a
//! timeout reports "Timeout Error"; the text is cut to the first 200 + "..." + last 200
//! characters.

use super::{run_python, ExecResult, ExecStatus, Limits, SandboxError};

/// Characters kept at each end of a tool result (docs/METHODS.md §7.3: 200 + "..." + 200).
pub const TOOL_KEEP: usize = 200;

/// Runs the user's code inside `exec` with the last expression split off, tracking whether
/// anything reached stdout. `{CODE}` is replaced by the code as a JSON string literal, which
/// is also a valid Python string literal.
const WRAPPER: &str = r#"import ast as _ast, sys as _sys
class _Seen:
    def __init__(self, inner):
        self.inner, self.any = inner, False
    def write(self, text):
        self.any = self.any or bool(text)
        return self.inner.write(text)
    def __getattr__(self, name):
        return getattr(self.inner, name)
_out = _Seen(_sys.stdout)
_sys.stdout = _out
_tree = _ast.parse({CODE}, "<code>", "exec")
_last = None
if _tree.body and isinstance(_tree.body[-1], _ast.Expr):
    _last = _ast.Expression(_tree.body.pop().value)
_globals = {"__name__": "__main__", "__builtins__": __builtins__}
del _ast, _Seen
exec(compile(_tree, "<code>", "exec"), _globals)
if _last is not None:
    _value = eval(compile(_last, "<code>", "eval"), _globals)
    if not _out.any and _value is not None:
        print(_value)
"#;

/// What one tool call returns to the model, with the raw run for logging.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolReport {
    /// The text to insert after the code block.
    pub output: String,
    /// True when the code ran to the end ("Done" in STILL-3).
    pub ok: bool,
    pub exec: ExecResult,
}

/// `text` if it has at most 400 characters, else its first 200, "...", and its last 200.
pub fn tool_truncate(text: &str) -> String {
    let total = text.chars().count();
    if total <= 2 * TOOL_KEEP {
        return text.to_string();
    }
    let head: String = text.chars().take(TOOL_KEEP).collect();
    let tail: String = text.chars().skip(total - TOOL_KEEP).collect();
    format!("{head}...{tail}")
}

/// The program actually run for `code`.
pub fn wrap_tool_code(code: &str) -> String {
    // Invariant: serializing a &str to JSON cannot fail.
    let literal = serde_json::to_string(code).unwrap_or_default();
    WRAPPER.replace("{CODE}", &literal)
}

fn last_line(text: &str) -> String {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
}

/// Runs one tool call under `limits` (STILL-3 used a 5 s timeout: `Limits::default()`).
pub fn run_tool_call(code: &str, limits: &Limits) -> Result<ToolReport, SandboxError> {
    let exec = run_python(&wrap_tool_code(code), "", limits)?;
    let (ok, output) = match exec.status {
        ExecStatus::Pass => (true, exec.stdout.trim().to_string()),
        ExecStatus::Timeout => (false, "Timeout Error".to_string()),
        ExecStatus::Memory if !exec.stderr.contains("MemoryError") => (false, "MemoryError".to_string()),
        ExecStatus::Crash => (false, format!("Crashed (signal {})", exec.signal.unwrap_or(0))),
        _ => (false, last_line(&exec.stderr)),
    };
    Ok(ToolReport { output: tool_truncate(&output), ok, exec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_truncate_keeps_200_each_side() {
        let short = "x".repeat(400);
        assert_eq!(tool_truncate(&short), short);
        let text: String = (0..401).map(|i| if i < 200 { 'a' } else if i == 200 { 'M' } else { 'b' }).collect();
        assert_eq!(tool_truncate(&text), format!("{}...{}", "a".repeat(200), "b".repeat(200)));
    }

    #[test]
    fn wrapper_embeds_the_code_as_an_escaped_literal() {
        let program = wrap_tool_code("print(\"a\\nb\")\n'''x'''");
        assert!(program.contains(r#"_ast.parse("print(\"a\\nb\")\n'''x'''", "<code>", "exec")"#), "{program}");
    }
}
