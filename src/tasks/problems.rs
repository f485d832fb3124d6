//! Problem sets: what a model is asked and how each answer is judged.
//!
//! A [`ProblemSet`] is built-in task instances (generated from a seed, or read from the JSONL
//! a `tasks` stage wrote, [`read_instances`]), a math JSONL (`{"prompt", "answer"}`, graded
//! by [`super::math`]) or a code JSONL (`{"prompt", "tests"}` or HumanEval-style
//! `{"task_id", "prompt", "entry_point", "test"}`, run in the [`crate::sandbox`] by
//! [`super::code`]). Readers name the file and line of a bad row; [`ProblemSet::fit_context`]
//! checks every prompt against a model's context before anything is sampled. The eval stage,
//! the rl stage and `retort eval` all read their problems here.

use super::code::{CheckTest, CodeTests};
use super::math::{verify_math, MathOptions};
use super::{self as tasks, Instance, Task, Verdict};
use crate::rng::Rng;
use crate::sandbox::Limits;
use crate::text::{Message, Tokenizer};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// No tokenizer here makes tokens longer than this on average, so a prompt with more bytes
/// than this many times the context cannot fit, whatever its tokens.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// What to do with a problem (or row) whose prompt and response cannot fit the model's
/// context: refuse the run naming the row (default), or leave it out and count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TooLong {
    #[default]
    Error,
    Skip,
}

/// Verifier names accepted for JSONL problem files (`verifier = ...`).
pub const JSONL_VERIFIERS: &[&str] = &["math", "code"];

/// A problem file that cannot be read as problems.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProblemError {
    #[error("unknown verifier `{name}`; known verifiers: {known}")]
    UnknownVerifier { name: String, known: String },
    #[error("{path}:{line}: missing field `{field}` (each row needs {expected})")]
    MissingField { path: String, line: usize, field: String, expected: String },
    #[error("{path}:{line}: {message}")]
    BadRow { path: String, line: usize, message: String },
    #[error("{0}: no problems to evaluate (the file is empty or the limit is 0)")]
    NoProblems(String),
}

/// One row of a math JSONL: the prompt and the gold answer (`answer`, or `gold`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MathRow {
    pub id: String,
    pub prompt: String,
    pub answer: String,
    /// "file:line" of the row, for errors.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// One row of a code JSONL: the prompt and what the program is tested with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeRow {
    pub id: String,
    pub prompt: String,
    pub tests: CodeTests,
    /// "file:line" of the row, for errors.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// What is evaluated and how each response is judged.
pub enum ProblemSet {
    /// Built-in task instances; `tasks` maps each instance's task name to its verifier.
    Task { tasks: BTreeMap<String, Box<dyn Task>>, instances: Vec<Instance> },
    Math { rows: Vec<MathRow>, options: MathOptions },
    Code { rows: Vec<CodeRow>, limits: Limits },
}

/// A JSONL file's non-blank lines as JSON objects with their 1-based line numbers.
pub fn read_json_lines(path: &Path) -> Result<Vec<(usize, serde_json::Map<String, serde_json::Value>)>> {
    let mut out = Vec::new();
    for item in crate::text::jsonl::open(path)? {
        let (line_no, line) = item?;
        let bad = |message: String| ProblemError::BadRow { path: path.display().to_string(), line: line_no, message };
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        match value {
            serde_json::Value::Object(map) => out.push((line_no, map)),
            _ => return Err(bad("expected a JSON object".to_string()).into()),
        }
    }
    Ok(out)
}

/// A string field of a row, or text made of a list of strings joined by newlines.
pub fn text_field(row: &serde_json::Map<String, serde_json::Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match row.get(*n)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let parts: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
            parts.map(|p| p.join("\n"))
        }
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The field or a [`ProblemError::MissingField`] naming file and line.
pub fn required(
    row: &serde_json::Map<String, serde_json::Value>,
    names: &[&str],
    path: &Path,
    line: usize,
    expected: &str,
) -> Result<String, ProblemError> {
    text_field(row, names).ok_or_else(|| ProblemError::MissingField {
        path: path.display().to_string(),
        line,
        field: names[0].to_string(),
        expected: expected.to_string(),
    })
}

fn row_id(row: &serde_json::Map<String, serde_json::Value>, line: usize) -> String {
    text_field(row, &["id", "task_id", "problem_id"]).unwrap_or_else(|| format!("line-{line}"))
}

/// Rows of a math JSONL: `prompt` (or `problem`/`question`) and `answer` (or `gold`).
pub fn read_math_jsonl(path: &Path) -> Result<Vec<MathRow>> {
    const EXPECTED: &str = "\"prompt\" and \"answer\"";
    let mut rows = Vec::new();
    for (line, row) in read_json_lines(path)? {
        let prompt = required(&row, &["prompt", "problem", "question"], path, line, EXPECTED)?;
        let answer = required(&row, &["answer", "gold"], path, line, EXPECTED)?;
        rows.push(MathRow { id: row_id(&row, line), prompt, answer, source: format!("{}:{line}", path.display()) });
    }
    Ok(rows)
}

/// Rows of a code JSONL: `prompt` and `tests` (a string or a list of assert lines), or
/// HumanEval-style `prompt`, `entry_point` and `test` (see [`code_tests`]).
pub fn read_code_jsonl(path: &Path) -> Result<Vec<CodeRow>> {
    let mut rows = Vec::new();
    for (line, row) in read_json_lines(path)? {
        let expected = if is_check_row(&row) { CHECK_FIELDS } else { ASSERT_FIELDS };
        let prompt = required(&row, &["prompt"], path, line, expected)?;
        let tests = code_tests(&row, path, line)?;
        rows.push(CodeRow { id: row_id(&row, line), prompt, tests, source: format!("{}:{line}", path.display()) });
    }
    Ok(rows)
}

const ASSERT_FIELDS: &str = "\"prompt\" and \"tests\"";
const CHECK_FIELDS: &str = "\"prompt\", \"entry_point\" and a \"test\" defining check(candidate)";

/// Whether a row is HumanEval-style: it names an `entry_point`, or its test defines `check`
/// (then a missing `entry_point` is the error, not a plain-assert reading of the test).
fn is_check_row(row: &serde_json::Map<String, serde_json::Value>) -> bool {
    row.contains_key("entry_point")
        || text_field(row, &["test", "tests"]).is_some_and(|t| super::code::defines_check(&t))
}

/// What a code row's program is tested with: a HumanEval-style `check(candidate)` when the
/// row has `entry_point` or its test defines `check`, else the `tests` (or `test`) run after
/// the program. A malformed HumanEval-style row is an error naming file, line and key.
pub fn code_tests(row: &serde_json::Map<String, serde_json::Value>, path: &Path, line: usize) -> Result<CodeTests, ProblemError> {
    if !is_check_row(row) {
        return Ok(CodeTests::Asserts(required(row, &["tests", "test"], path, line, ASSERT_FIELDS)?));
    }
    let bad = |message: String| ProblemError::BadRow { path: path.display().to_string(), line, message };
    let entry_point = match row.get("entry_point") {
        None => return Err(bad("missing field `entry_point`: the test defines check(candidate), so the row needs the name of the function to pass to it".into())),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("`entry_point` must be a string (a function name), found {other}"))),
    };
    let test = required(row, &["test", "tests"], path, line, CHECK_FIELDS)?;
    let prompt = text_field(row, &["prompt"]).unwrap_or_default();
    CheckTest::new(&prompt, &test, &entry_point).map(CodeTests::Check).map_err(|e| bad(e.to_string()))
}

/// Parse a problems JSONL for `verifier` without loading anything else (a run's preflight):
/// bad rows and missing fields are reported with file and line before the run starts.
pub fn check_jsonl(path: &Path, verifier: &str) -> Result<()> {
    if ProblemSet::from_jsonl(path, verifier)?.is_empty() {
        return Err(ProblemError::NoProblems(path.display().to_string()).into());
    }
    Ok(())
}

/// An unknown verifier name as the error users see.
pub fn unknown_verifier(name: &str) -> ProblemError {
    ProblemError::UnknownVerifier { name: name.to_string(), known: JSONL_VERIFIERS.join(", ") }
}

/// Task instances from a JSONL (a `tasks` stage's split, or any JSONL of instances), naming
/// the line on error.
pub fn read_instances(path: &Path) -> Result<Vec<Instance>> {
    let mut out = Vec::new();
    for item in crate::text::jsonl::open(path)? {
        let (line_no, line) = item?;
        let inst: Instance = serde_json::from_str(&line).with_context(|| {
            format!("{}:{line_no}: not a task instance (expected {{\"task\",\"id\",\"prompt\",\"data\"}})", path.display())
        })?;
        out.push(inst);
    }
    Ok(out)
}

impl ProblemSet {
    /// `count` instances of a built-in task generated from `seed` (the same ones for a seed).
    pub fn from_task(name: &str, options: &toml::Table, count: usize, seed: u64) -> Result<ProblemSet> {
        let task = tasks::build(name, options)?;
        let mut rng = Rng::derive(seed, "eval/problems");
        let instances = tasks::generate_split(task.as_ref(), &mut rng, count, &Default::default())?;
        ProblemSet::of_task(name, options, instances)
    }

    /// `instances` of the one built-in task `name`, graded by that task built with `options`.
    pub fn of_task(name: &str, options: &toml::Table, instances: Vec<Instance>) -> Result<ProblemSet> {
        let task = tasks::build(name, options)?;
        // Instances name their task canonically; key the verifier the same way.
        let mut map = BTreeMap::new();
        map.insert(task.name().to_string(), task);
        Ok(ProblemSet::Task { tasks: map, instances })
    }

    /// Task instances from a JSONL (a `tasks` stage's `test.jsonl`); each instance carries
    /// what its verifier needs, so the task is built with default options.
    pub fn from_instances(path: &Path) -> Result<ProblemSet> {
        let instances = read_instances(path)?;
        let mut map: BTreeMap<String, Box<dyn Task>> = BTreeMap::new();
        for inst in &instances {
            if !map.contains_key(&inst.task) {
                let task = tasks::build(&inst.task, &toml::Table::new()).with_context(|| format!("{}: instance {}", path.display(), inst.id))?;
                map.insert(inst.task.clone(), task);
            }
        }
        Ok(ProblemSet::Task { tasks: map, instances })
    }

    /// A JSONL graded by `verifier` ("math" or "code").
    pub fn from_jsonl(path: &Path, verifier: &str) -> Result<ProblemSet> {
        match verifier {
            "math" => Ok(ProblemSet::Math { rows: read_math_jsonl(path)?, options: MathOptions::default() }),
            "code" => {
                let limits = Limits::default();
                crate::sandbox::resolve_python(&limits.python)?;
                Ok(ProblemSet::Code { rows: read_code_jsonl(path)?, limits })
            }
            other => Err(unknown_verifier(other).into()),
        }
    }

    /// No problems, graded like a `from_jsonl(_, verifier)` set (an RL stage without a
    /// test file).
    pub fn empty_for(verifier: &str) -> ProblemSet {
        match verifier {
            "code" => ProblemSet::Code { rows: Vec::new(), limits: Limits::default() },
            _ => ProblemSet::Math { rows: Vec::new(), options: MathOptions::default() },
        }
    }

    /// The task instances (empty for JSONL problems).
    pub fn instances(&self) -> &[Instance] {
        match self {
            ProblemSet::Task { instances, .. } => instances,
            _ => &[],
        }
    }

    /// The task and the instances of a set of one built-in task's instances.
    pub fn into_task(self) -> Option<(Box<dyn Task>, Vec<Instance>)> {
        match self {
            ProblemSet::Task { tasks, instances } if tasks.len() == 1 => tasks.into_values().next().map(|t| (t, instances)),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ProblemSet::Task { instances, .. } => instances.len(),
            ProblemSet::Math { rows, .. } => rows.len(),
            ProblemSet::Code { rows, .. } => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where problem `i` comes from: "file:line" for a JSONL row, else "problem ID".
    pub fn location(&self, i: usize) -> String {
        let source = match self {
            ProblemSet::Task { .. } => "",
            ProblemSet::Math { rows, .. } => &rows[i].source,
            ProblemSet::Code { rows, .. } => &rows[i].source,
        };
        if source.is_empty() {
            format!("problem {}", self.id(i))
        } else {
            source.to_string()
        }
    }

    /// Keep the problems whose `keep` entry is true, in order.
    fn retain(&mut self, keep: &[bool]) {
        fn filter<T>(items: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            items.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        match self {
            ProblemSet::Task { instances, .. } => filter(instances, keep),
            ProblemSet::Math { rows, .. } => filter(rows, keep),
            ProblemSet::Code { rows, .. } => filter(rows, keep),
        }
    }

    /// Check that every prompt (as the model will see it, chat template included) plus
    /// `max_new_tokens` fits in the model's `context`, before any sampling: the attention of
    /// an over-long row grows with its length squared and runs past the positions the model
    /// was trained on. Too-long problems are an error naming the first one, or are left out
    /// (`TooLong::Skip`), returning how many. Prompts far longer than any context are judged
    /// by their size alone, so a multi-megabyte row is never tokenized.
    pub fn fit_context(&mut self, tok: &Tokenizer, chat: bool, max_new_tokens: usize, context: usize, policy: TooLong) -> Result<usize> {
        let mut keep = vec![true; self.len()];
        for (i, kept) in keep.iter_mut().enumerate() {
            let prompt = self.prompt(i);
            let tokens = if prompt.len() > MAX_BYTES_PER_TOKEN * context { None } else { Some(encode_prompt(tok, prompt, chat)?.len()) };
            if tokens.is_some_and(|n| n + max_new_tokens <= context) {
                continue;
            }
            if policy == TooLong::Skip {
                *kept = false;
                continue;
            }
            let size = match tokens {
                Some(n) => format!("{n} tokens"),
                None => format!("{} bytes, far more than {context} tokens", prompt.len()),
            };
            bail!(
                "{}: the prompt is {size}; with max_new_tokens = {max_new_tokens} it does not fit the model's context of \
                 {context} tokens (max_position_embeddings in config.json, or an rl stage's max_prompt_tokens + max_new_tokens). \
                 Shorten the prompt, lower max_new_tokens, or set too_long = \"skip\" to leave such problems out",
                self.location(i)
            );
        }
        let skipped = keep.iter().filter(|k| !**k).count();
        self.retain(&keep);
        Ok(skipped)
    }

    /// Keep the first `limit` problems.
    pub fn truncate(&mut self, limit: usize) {
        match self {
            ProblemSet::Task { instances, .. } => instances.truncate(limit),
            ProblemSet::Math { rows, .. } => rows.truncate(limit),
            ProblemSet::Code { rows, .. } => rows.truncate(limit),
        }
    }

    pub fn id(&self, i: usize) -> &str {
        match self {
            ProblemSet::Task { instances, .. } => &instances[i].id,
            ProblemSet::Math { rows, .. } => &rows[i].id,
            ProblemSet::Code { rows, .. } => &rows[i].id,
        }
    }

    pub fn prompt(&self, i: usize) -> &str {
        match self {
            ProblemSet::Task { instances, .. } => &instances[i].prompt,
            ProblemSet::Math { rows, .. } => &rows[i].prompt,
            ProblemSet::Code { rows, .. } => &rows[i].prompt,
        }
    }

    /// The verdict on `response` to problem `i`; its `canonical` is what diversity counts.
    /// Code: the canonical form is the extracted program with trailing spaces trimmed.
    pub fn verify(&self, i: usize, response: &str) -> Verdict {
        match self {
            ProblemSet::Task { tasks, instances } => {
                let inst = &instances[i];
                match tasks.get(&inst.task) {
                    Some(task) => task.verify(inst, response),
                    None => Verdict::wrong(format!("no verifier for task `{}`", inst.task), None),
                }
            }
            ProblemSet::Math { rows, options } => {
                let v = verify_math(response, &rows[i].answer, options);
                Verdict { correct: v.correct, reward: f64::from(u8::from(v.correct)), canonical: v.canonical(), reason: v.reason }
            }
            ProblemSet::Code { rows, limits } => {
                let v = super::code::verify_tests(response, &rows[i].tests, limits);
                let program = super::code::extract_program(response).trim_end().to_string();
                Verdict { correct: v.correct, reward: v.reward, canonical: Some(program), reason: v.reason }
            }
        }
    }

    /// What a verifier needs to grade a response to problem `i` again, as JSON fields that
    /// `retort reward test` reads: `task` + `data` for a built-in task, `gold` for math,
    /// `tests` (or HumanEval's `test` and `entry_point`) for code (and the `prompt` for all).
    pub fn grading_fields(&self, i: usize) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("prompt".into(), self.prompt(i).into());
        match self {
            ProblemSet::Task { instances, .. } => {
                m.insert("task".into(), instances[i].task.clone().into());
                m.insert("data".into(), instances[i].data.clone());
            }
            ProblemSet::Math { rows, .. } => {
                m.insert("gold".into(), rows[i].answer.clone().into());
            }
            ProblemSet::Code { rows, .. } => match &rows[i].tests {
                CodeTests::Asserts(tests) => {
                    m.insert("tests".into(), tests.clone().into());
                }
                // HumanEval's own keys, so that `reward test` reads the row the same way.
                CodeTests::Check(check) => {
                    m.insert("test".into(), check.test.clone().into());
                    m.insert("entry_point".into(), check.entry_point.clone().into());
                }
            },
        }
        m
    }

    /// Every valid canonical solution of problem `i`, when the task can enumerate them.
    pub fn solutions(&self, i: usize) -> Option<Vec<String>> {
        match self {
            ProblemSet::Task { tasks, instances } => tasks.get(&instances[i].task)?.solutions(&instances[i]),
            _ => None,
        }
    }

    /// One line for reports: what the problems are.
    pub fn describe(&self) -> String {
        match self {
            ProblemSet::Task { tasks, instances } => {
                format!("{} instances of {}", instances.len(), tasks.keys().cloned().collect::<Vec<_>>().join(", "))
            }
            ProblemSet::Math { rows, .. } => format!("{} math problems", rows.len()),
            ProblemSet::Code { rows, .. } => format!("{} code problems", rows.len()),
        }
    }
}

/// Fit `set` to the context of every model in `models` (their tokenizers and config.json
/// only; no weights are read), so that a comparison samples the same problems for each and
/// a too-long prompt stops the run before any model samples. Returns how many were skipped.
pub fn fit_models_context(set: &mut ProblemSet, models: &[PathBuf], chat: bool, max_new_tokens: usize, policy: TooLong) -> Result<usize> {
    let mut skipped = 0;
    for dir in models {
        let tok = Tokenizer::load(dir)?;
        let config = crate::model::ModelConfig::from_file(&crate::model::config::config_path(dir))?;
        skipped += set.fit_context(&tok, chat, max_new_tokens, config.max_position_embeddings, policy)?;
    }
    if set.is_empty() {
        bail!("every problem is too long for the model's context (too_long = \"skip\" left none)");
    }
    Ok(skipped)
}

/// The token ids of one prompt, rendered through the chat template as one user turn when
/// `chat` is set (the same rendering for evaluation and RL rollouts).
pub fn encode_prompt(tok: &Tokenizer, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    let text = if chat { tok.apply_chat_template(&[Message::user(prompt)], true)? } else { prompt.to_string() };
    Ok(tok.encode(&text, false)?)
}

/// The prompt token ids of each problem; a prompt that encodes to nothing is an error.
pub fn encode_prompts(set: &ProblemSet, tok: &Tokenizer, chat: bool) -> Result<Vec<Vec<u32>>> {
    (0..set.len())
        .map(|i| {
            let ids = encode_prompt(tok, set.prompt(i), chat)?;
            anyhow::ensure!(!ids.is_empty(), "problem {}: the prompt encodes to no tokens", set.id(i));
            Ok(ids)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_rows_missing_fields_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, "{\"prompt\":\"1+1\",\"answer\":\"2\"}\n\n{\"prompt\":\"2+2\"}\n").unwrap();
        let err = read_math_jsonl(&path).unwrap_err().downcast::<ProblemError>().unwrap();
        assert_eq!(err.to_string(), format!("{}:3: missing field `answer` (each row needs \"prompt\" and \"answer\")", path.display()));
        std::fs::write(&path, "{\"prompt\":\"f\",\"tests\":[\"assert f()==1\",\"assert True\"],\"id\":\"t1\"}\n").unwrap();
        let rows = read_code_jsonl(&path).unwrap();
        assert_eq!(rows[0].tests, CodeTests::Asserts("assert f()==1\nassert True".into()));
        assert_eq!(rows[0].id, "t1");
        let err = ProblemSet::from_jsonl(&path, "regex").err().unwrap();
        assert!(err.to_string().contains("known verifiers: math, code"), "{err}");
    }
}
