//! The code verifier: does the program in a completion pass the task's tests?
//!
//! The program is the completion's last fenced ```python block (or, when there is none, its
//! last untagged ``` block, or else the whole text), followed by the tests (plain `assert`
//! statements), run once in the [`crate::sandbox`]. It passes iff the tests ran to their end:
//! the process exits with 0 **and** prints the run's end-of-tests marker, a random token that
//! a small harness writes after the last test ([`harness`]). Exit status 0 alone is not
//! enough: `sys.exit(0)` before the tests, `os._exit(0)` in an `atexit` hook after a failed
//! assertion or in a daemon thread all exit with 0 without the tests having passed.
//! (1 for pass, 0 otherwise: the usual unit-test reward of code RL.)
//!
//! Problems come in two shapes ([`CodeTests`]): plain asserts appended after the program
//! (`{"prompt", "tests"}` rows), and HumanEval-style rows (`{"task_id", "prompt",
//! "entry_point", "test"}`) whose `test` defines `check(candidate)`: the program is the prompt
//! (signature and docstring) continued by the completion, then the test code runs and
//! `check(entry_point)` is called ([`CheckTest`]).

use crate::sandbox::{run_python, ExecResult, ExecStatus, Limits, SandboxError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeVerdict {
    pub correct: bool,
    pub reward: f64,
    /// How the program ended; `None` when it could not be run at all (see `reason`).
    pub status: Option<ExecStatus>,
    /// "ok", "tests failed: ...", "timeout after 5 s", the setup error, ...
    pub reason: String,
    /// stdout then stderr, each already cut in the middle by the sandbox.
    pub output: String,
}

/// One fenced block: its info string (language tag) and body.
#[derive(Debug, PartialEq)]
struct Fence<'a> {
    tag: &'a str,
    body: &'a str,
}

/// Fenced blocks in order. An opening fence is ``` at the start of a line followed by an
/// optional tag; the block runs to the next ``` (an unclosed last block runs to the end, as
/// when generation stopped inside it).
fn fences(text: &str) -> Vec<Fence<'_>> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = find_fence(rest) {
        let after = &rest[open + 3..];
        let (tag, body_start) = match after.find('\n') {
            Some(newline) => (after[..newline].trim(), newline + 1),
            None => (after.trim(), after.len()),
        };
        let body_and_rest = &after[body_start..];
        match find_fence(body_and_rest) {
            Some(close) => {
                blocks.push(Fence { tag, body: &body_and_rest[..close] });
                rest = &body_and_rest[close + 3..];
            }
            None => {
                blocks.push(Fence { tag, body: body_and_rest });
                break;
            }
        }
    }
    blocks
}

/// Byte offset of the first ``` that starts a line (after optional spaces).
fn find_fence(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if line[indent..].starts_with("```") {
            return Some(offset + indent);
        }
        offset += line.len();
    }
    None
}

fn is_python_tag(tag: &str) -> bool {
    let lang = tag.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    matches!(lang.as_str(), "python" | "python3" | "py")
}

/// The program a completion offers (see the module doc for the rule).
pub fn extract_program(completion: &str) -> &str {
    let blocks = fences(completion);
    blocks
        .iter()
        .rev()
        .find(|b| is_python_tag(b.tag))
        .or_else(|| blocks.iter().rev().find(|b| b.tag.is_empty()))
        .map_or(completion, |b| b.body)
}

/// The program with the tests appended.
pub fn assemble(completion: &str, tests: &str) -> String {
    let program = extract_program(completion);
    format!("{}\n\n{}\n", program.trim_end(), tests.trim_end())
}

/// A HumanEval-style problem: `prompt` is the code the completion continues (imports, the
/// signature of `entry_point` and its docstring), `test` defines `check(candidate)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckTest {
    pub prompt: String,
    pub test: String,
    pub entry_point: String,
}

/// Why a HumanEval-style row cannot be used; the caller adds file and line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CheckTestError {
    #[error("`entry_point` {0:?} is not a Python function name")]
    BadEntryPoint(String),
    #[error("`test` has no `def check(candidate)` function (a row with `entry_point` is graded by calling check(entry_point))")]
    NoCheck,
}

impl CheckTest {
    /// Validated: `entry_point` must be an identifier and `test` must define `check` at the
    /// start of a line (not only mention it in a comment or string on another line).
    pub fn new(prompt: &str, test: &str, entry_point: &str) -> Result<CheckTest, CheckTestError> {
        let name = entry_point.trim();
        let identifier = name.chars().next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && name.chars().all(|c| c == '_' || c.is_alphanumeric());
        if !identifier {
            return Err(CheckTestError::BadEntryPoint(entry_point.to_string()));
        }
        if !defines_check(test) {
            return Err(CheckTestError::NoCheck);
        }
        Ok(CheckTest { prompt: prompt.to_string(), test: test.to_string(), entry_point: name.to_string() })
    }

    /// The candidate program: the completion read the way it was most likely meant.
    /// - No fenced block: a raw continuation of the prompt (HumanEval's own rule, prompt +
    ///   completion, byte for byte, since the prompt may end mid-line).
    /// - A fenced block that defines `entry_point` itself (a chat model restating the whole
    ///   function): the prompt up to its `def`, which keeps the prompt's imports and helper
    ///   functions, then the block.
    /// - A fenced block that does not: the block continues the prompt on a new line.
    ///
    /// A prompt that does not define `entry_point` is prose for a chat model, not code: the
    /// program is then the completion's code alone.
    pub fn program(&self, completion: &str) -> String {
        let Some(def_at) = def_line(&self.prompt, &self.entry_point) else {
            return extract_program(completion).to_string();
        };
        if fences(completion).is_empty() {
            return format!("{}{completion}", self.prompt);
        }
        let block = extract_program(completion);
        if def_line(block, &self.entry_point).is_some() {
            format!("{}{block}", &self.prompt[..def_at])
        } else {
            let newline = if self.prompt.ends_with('\n') { "" } else { "\n" };
            format!("{}{newline}{block}", self.prompt)
        }
    }

    /// The test code followed by the call that runs it.
    pub fn test_source(&self) -> String {
        format!("{}\n\ncheck({})\n", self.test.trim_end(), self.entry_point)
    }
}

/// Whether `test` has a line starting `def check(`: the mark of a HumanEval-style test.
pub fn defines_check(test: &str) -> bool {
    test.lines().any(|l| l.trim_start().strip_prefix("def").is_some_and(|r| r.trim_start().starts_with("check(")))
}

/// Byte offset of the first top-level line `def NAME(` of `code`.
fn def_line(code: &str, name: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let defines = line.strip_prefix("def ").is_some_and(|r| {
            r.trim_start().strip_prefix(name).is_some_and(|after| after.trim_start().starts_with('('))
        });
        if defines {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// What a code problem's program is tested with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeTests {
    /// Statements (usually asserts) run after the program in the same file.
    Asserts(String),
    /// A HumanEval-style `check(candidate)`.
    Check(CheckTest),
}

/// The file name tracebacks show for the program and its tests.
const SOLUTION_FILE: &str = "solution.py";
/// The file name tracebacks show for a HumanEval-style test and its `check` call.
const TEST_FILE: &str = "test.py";

/// The script the sandbox runs: it reads the end-of-tests marker from stdin, runs `source`
/// (program + tests) with `__name__ == "__main__"`, and only when that returns normally
/// writes the marker on its own line. Any exit before the end of the tests (SystemExit,
/// `os._exit`, a signal) therefore leaves the marker out. The source travels as a JSON
/// string literal (valid Python) so that no program text can break out of the harness, and
/// it is registered with `linecache`; an exception is printed by the `traceback` module
/// (which reads `linecache`, unlike the interpreter's own printer) without the harness's
/// frame, so a failing assert is quoted as if the program had run alone.
/// What this cannot stop: a program that deliberately digs the marker out of the harness's
/// frame and prints it (docs/SANDBOX.md).
pub fn harness(source: &str) -> String {
    harness_files(&[(SOLUTION_FILE, source)])
}

/// [`harness`] for several files run one after the other in one namespace, each compiled on
/// its own: a program cannot reach into the next file (an unclosed `"""` swallows nothing but
/// its own file, which then fails to compile) and tracebacks name the file that failed.
pub fn harness_files(files: &[(&str, &str)]) -> String {
    let mut lines = vec![
        "def _retort_run_tests():".to_string(),
        "    import linecache, os, sys".to_string(),
        "    marker = sys.stdin.readline().strip()".to_string(),
        "    namespace = {\"__name__\": \"__main__\"}".to_string(),
        "    try:".to_string(),
    ];
    for (file, source) in files {
        let literal = serde_json::to_string(source).expect("a string always serialises");
        lines.push(format!("        source = {literal}"));
        lines.push(format!("        linecache.cache[{file:?}] = (len(source), None, source.splitlines(True), {file:?})"));
        lines.push(format!("        exec(compile(source, {file:?}, \"exec\"), namespace)"));
    }
    lines.extend(
        [
            "    except SystemExit:",
            "        raise",
            "    except BaseException as error:",
            "        import traceback",
            "        traceback.print_exception(type(error), error, error.__traceback__.tb_next)",
            "        sys.exit(1)",
            "    sys.stdout.flush()",
            "    os.write(1, (\"\\n\" + marker + \"\\n\").encode())",
            "_retort_run_tests()",
            "",
        ]
        .map(String::from),
    );
    lines.join("\n")
}

/// A fresh marker per run, so a program cannot print it by guessing.
fn end_marker() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // No /dev/urandom: the clock, the process and a counter still differ per run.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128;
        bytes = (nanos ^ (n << 64) ^ ((std::process::id() as u128) << 96)).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("retort-tests-done-{hex}")
}

/// Removes the marker line from stdout; says whether it was there.
fn take_marker(stdout: &str, marker: &str) -> (bool, String) {
    let mut found = false;
    let kept: Vec<&str> = stdout
        .split_inclusive('\n')
        .filter(|line| {
            let is_marker = line.trim_end() == marker;
            found |= is_marker;
            !is_marker
        })
        .collect();
    let mut text = kept.concat();
    if found && text.ends_with('\n') {
        // The harness wrote a newline before the marker in case the output lacked one.
        text.pop();
    }
    (found, text)
}

/// The last `n` informative lines of `text` (not blank, not Python 3.11's `^^^~~~` markers),
/// joined by " | ": for a failed assert, the assert statement and the AssertionError.
fn last_lines(text: &str, n: usize) -> String {
    let informative = |l: &&str| !l.is_empty() && !l.chars().all(|c| c == '^' || c == '~' || c == ' ');
    let lines: Vec<&str> = text.lines().map(str::trim).filter(informative).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn reason_for(result: &ExecResult, limits: &Limits) -> String {
    match result.status {
        ExecStatus::Pass => "ok".to_string(),
        ExecStatus::Fail => format!("tests failed: {}", last_lines(&result.stderr, 2)),
        ExecStatus::Timeout => format!("timeout (wall {} s, cpu {} s)", limits.wall_s, limits.cpu_s),
        ExecStatus::Memory => format!("out of memory (limit {} MiB)", limits.memory_bytes >> 20),
        ExecStatus::Crash => format!("crashed with signal {}", result.signal.unwrap_or(0)),
    }
}

/// Like [`verify_code`], but setup problems (no Python, no temp dir) are errors, so that a
/// caller can stop at the first one instead of scoring every sample 0.
pub fn try_verify_code(completion: &str, tests: &str, limits: &Limits) -> Result<CodeVerdict, SandboxError> {
    run_harness(&harness(&assemble(completion, tests)), limits)
}

/// [`try_verify_code`] for either shape of problem.
pub fn try_verify_tests(completion: &str, tests: &CodeTests, limits: &Limits) -> Result<CodeVerdict, SandboxError> {
    match tests {
        CodeTests::Asserts(asserts) => try_verify_code(completion, asserts, limits),
        CodeTests::Check(check) => {
            let program = check.program(completion);
            let script = harness_files(&[(SOLUTION_FILE, &program), (TEST_FILE, &check.test_source())]);
            run_harness(&script, limits)
        }
    }
}

/// [`verify_code`] for either shape of problem: a HumanEval-style row passes iff its
/// `check(entry_point)` returned (same marker rule).
pub fn verify_tests(completion: &str, tests: &CodeTests, limits: &Limits) -> CodeVerdict {
    try_verify_tests(completion, tests, limits).unwrap_or_else(setup_failed)
}

/// Runs a harness script and grades the run by its status and the end-of-tests marker.
fn run_harness(script: &str, limits: &Limits) -> Result<CodeVerdict, SandboxError> {
    let marker = end_marker();
    let mut result = run_python(script, &format!("{marker}\n"), limits)?;
    let (finished, stdout) = take_marker(&result.stdout, &marker);
    result.stdout = stdout;
    let mut reason = reason_for(&result, limits);
    if result.status == ExecStatus::Pass && !finished {
        result.status = ExecStatus::Fail;
        reason = "the program exited before its tests finished (status 0 without the end-of-tests marker: \
                  sys.exit, os._exit or a thread ended it early)"
            .to_string();
    }
    let correct = result.status == ExecStatus::Pass;
    Ok(CodeVerdict {
        correct,
        reward: if correct { 1.0 } else { 0.0 },
        status: Some(result.status),
        reason,
        output: format!("{}{}", result.stdout, result.stderr),
    })
}

/// Runs the completion's program followed by `tests`; correct iff the tests ran to their end
/// (exit 0 and the end-of-tests marker, see the module doc).
/// When the program cannot be run at all, the verdict is wrong with the error as reason
/// (e.g. "python3 not found: install Python 3 ...").
pub fn verify_code(completion: &str, tests: &str, limits: &Limits) -> CodeVerdict {
    try_verify_code(completion, tests, limits).unwrap_or_else(setup_failed)
}

/// The verdict when the program could not be run at all: wrong, with the error as reason.
fn setup_failed(error: SandboxError) -> CodeVerdict {
    CodeVerdict { correct: false, reward: 0.0, status: None, reason: error.to_string(), output: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_python_block_wins_over_output_and_earlier_blocks() {
        let completion = "First try:\n```python\nx = 1\n```\n```output\n1\n```\nBetter:\n```python\ndef f(n):\n    return n * 2\n```\nDone.";
        assert_eq!(extract_program(completion), "def f(n):\n    return n * 2\n");
    }

    #[test]
    fn untagged_block_is_used_when_no_python_block_exists() {
        let completion = "```text\nnot code\n```\n```\nprint(1)\n```\n";
        assert_eq!(extract_program(completion), "print(1)\n");
        assert_eq!(extract_program("```Python3 \nprint(2)\n```"), "print(2)\n");
        assert_eq!(extract_program("```py\nprint(3)\n```"), "print(3)\n");
    }

    #[test]
    fn whole_text_without_fences_and_unclosed_block_to_the_end() {
        assert_eq!(extract_program("def f():\n    return 1\n"), "def f():\n    return 1\n");
        assert_eq!(extract_program("Here:\n```python\ndef g():\n    return 2\n"), "def g():\n    return 2\n");
        // Only tagged blocks of another language: fall back to the whole text.
        assert_eq!(extract_program("```cpp\nint main(){}\n```"), "```cpp\nint main(){}\n```");
    }

    #[test]
    fn fence_must_start_a_line() {
        // Inline ``` in prose does not open a block.
        let completion = "Use ``` to fence.\n```python\nprint(4)\n```";
        assert_eq!(extract_program(completion), "print(4)\n");
    }

    #[test]
    fn assemble_appends_tests_after_the_program() {
        let program = assemble("```python\ndef f(x):\n    return x\n```", "assert f(1) == 1\n\n");
        assert_eq!(program, "def f(x):\n    return x\n\nassert f(1) == 1\n");
    }

    #[test]
    fn harness_carries_any_source_as_a_literal_and_marker_lines_are_removed() {
        let source = "print(\"a\\\\b\")\n'''\n\u{0}\u{e9}\n";
        let script = harness(source);
        let literal = serde_json::to_string(source).unwrap();
        assert!(script.contains(&format!("    source = {literal}\n")), "{script}");
        assert!(script.ends_with("_retort_run_tests()\n"));
        let (found, rest) = take_marker("out\nretort-tests-done-ab\n", "retort-tests-done-ab");
        assert!(found);
        assert_eq!(rest, "out");
        let (found, rest) = take_marker("retort-tests-done-abc\n", "retort-tests-done-ab");
        assert!(!found, "a longer token is not the marker");
        assert_eq!(rest, "retort-tests-done-abc\n");
        assert_ne!(end_marker(), end_marker());
    }

    #[test]
    fn humaneval_style_programs_continue_the_prompt() {
        let prompt = "import math\n\n\ndef area(r):\n    \"\"\"Area of a circle.\"\"\"\n";
        let check = CheckTest::new(prompt, "def check(candidate):\n    assert candidate(1) > 3\n", "area").unwrap();
        // A raw continuation: prompt + completion, byte for byte.
        assert_eq!(check.program("    return math.pi * r * r\n"), format!("{prompt}    return math.pi * r * r\n"));
        // A fenced body continues the prompt.
        assert_eq!(check.program("```python\n    return 3.2\n```"), format!("{prompt}    return 3.2\n"));
        // A fenced full definition replaces the prompt's stub but keeps its imports.
        let full = "Sure:\n```python\ndef area(r):\n    return math.pi * r ** 2\n```";
        assert_eq!(check.program(full), "import math\n\n\ndef area(r):\n    return math.pi * r ** 2\n");
        assert_eq!(check.test_source(), "def check(candidate):\n    assert candidate(1) > 3\n\ncheck(area)\n");
        // A prose prompt (for a chat model) is not code: the completion's program alone.
        let chat = CheckTest::new("Write area(r).", "def check(candidate):\n    pass\n", "area").unwrap();
        assert_eq!(chat.program("```python\ndef area(r):\n    return 0\n```"), "def area(r):\n    return 0\n");
        // Malformed rows.
        assert_eq!(CheckTest::new(prompt, "assert area(1) > 3", "area"), Err(CheckTestError::NoCheck));
        assert_eq!(CheckTest::new(prompt, "# def check(candidate)", "area"), Err(CheckTestError::NoCheck));
        assert_eq!(CheckTest::new(prompt, "def check(c):\n    pass", "area(r)"), Err(CheckTestError::BadEntryPoint("area(r)".into())));
        assert_eq!(CheckTest::new(prompt, "def check(c):\n    pass", ""), Err(CheckTestError::BadEntryPoint(String::new())));
    }

    #[test]
    fn missing_python_gives_the_install_hint() {
        let limits = Limits { python: "python3-not-installed-here".to_string(), ..Limits::default() };
        let verdict = verify_code("print(1)", "assert True", &limits);
        assert!(!verdict.correct);
        assert_eq!(verdict.reward, 0.0);
        assert_eq!(verdict.status, None);
        assert_eq!(
            verdict.reason,
            "python3-not-installed-here not found: install Python 3 (e.g. apt-get install python3) to use the code verifier; other tasks still run"
        );
    }
}
