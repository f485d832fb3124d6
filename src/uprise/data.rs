//! Task rows, templates, class-balanced sampling and held-out clusters (research/synth-spec.md
//! §6.2, §6.7).
//!
//! A row is `{"id", "task", "cluster", "input", "options"?, "answer"}`: a multiple-choice row
//! lists its options (the answer must be one of them), a completion row has none. The input
//! is already filled into one of its task's templates (the template is chosen per example
//! from its id, [`pick_template`], as the reference does with `random.seed(entry["id"])`).
//! A prompt's text is its input and its answer (`demo = question + answer`), with runs of
//! spaces collapsed.

use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One task example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: String,
    pub task: String,
    pub cluster: String,
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    pub answer: String,
}

impl TaskRow {
    /// The gold option's index (multiple choice), `None` for completion rows.
    pub fn gold(&self) -> Option<usize> {
        self.options.as_ref().and_then(|o| o.iter().position(|x| x == &self.answer))
    }

    /// The prompt's text when it serves as a demonstration: input then answer.
    pub fn demo(&self) -> String {
        collapse_spaces(&format!("{} {}", self.input, self.answer))
    }
}

const ROW_FORMAT: &str = "{\"id\": \"...\", \"task\": \"...\", \"cluster\": \"...\", \"input\": \"...\", \"options\": [\"...\"] (optional), \"answer\": \"...\"}";

/// Every row of a JSONL file, checked: missing or mistyped keys, an answer that is not among
/// the options, and a repeated id are errors naming the file and line.
pub fn read_rows(path: &Path) -> Result<Vec<TaskRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open the task file {}", path.display()))?;
    let mut rows = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.with_context(|| format!("{at}: cannot read the line"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{at}: not a JSON object; each line must be {ROW_FORMAT}"))?;
        let text = |key: &str| -> Result<String> {
            match v.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                // Numeric ids are common in exported data sets; they are read as text.
                Some(serde_json::Value::Number(n)) if key == "id" => Ok(n.to_string()),
                Some(_) => bail!("{at}: `{key}` must be a string; each line must be {ROW_FORMAT}"),
                None => bail!("{at}: missing key `{key}`; each line must be {ROW_FORMAT}"),
            }
        };
        let options = match v.get("options") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(a)) => Some(
                a.iter()
                    .map(|o| o.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| format!("{at}: every entry of `options` must be a string"))?,
            ),
            Some(_) => bail!("{at}: `options` must be a list of strings"),
        };
        let row = TaskRow { id: text("id")?, task: text("task")?, cluster: text("cluster")?, input: text("input")?, options, answer: text("answer")? };
        if let Some(o) = &row.options {
            if o.len() < 2 {
                bail!("{at}: `options` has {} entry; a multiple-choice row needs at least two", o.len());
            }
            if row.gold().is_none() {
                bail!("{at}: the answer {:?} is not one of the options {:?}", row.answer, o);
            }
        }
        if let Some(first) = seen.insert(row.id.clone(), i + 1) {
            bail!("{at}: id {:?} repeats the id of line {first}; ids must be unique", row.id);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no rows; each line must be {ROW_FORMAT}", path.display());
    }
    Ok(rows)
}

/// Runs of whitespace as one space, ends trimmed (the reference collapses multiple spaces).
pub fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The template of an example: a pure function of its id (FNV-1a of the id, modulo the
/// number of templates), so the same example always reads the same way.
pub fn pick_template<'a>(id: &str, templates: &'a [String]) -> Option<&'a str> {
    if templates.is_empty() {
        return None;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    Some(&templates[(h % templates.len() as u64) as usize])
}

/// Fills `{name}` placeholders of a template from `fields`; an unknown placeholder is an error.
pub fn fill_template(template: &str, fields: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else { bail!("template {template:?}: `{{` without a closing `}}`") };
        let name = &rest[start + 1..start + len];
        let Some(value) = fields.get(name) else { bail!("template {template:?}: no field `{name}`") };
        out.push_str(value);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(collapse_spaces(&out))
}

/// Up to `cap` rows of each task, shuffled by `rng`. Multiple-choice tasks are class
/// balanced: `cap / classes` rows of each answer (fewer when a class has fewer), the way
/// the reference's `balance_class` takes 2.5k per class of a 4-class task at a 10k cap.
/// The result keeps tasks in first-appearance order, rows shuffled within each task.
pub fn sample_balanced(rows: &[TaskRow], cap: usize, rng: &mut Rng) -> Vec<TaskRow> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_task: BTreeMap<&str, Vec<&TaskRow>> = BTreeMap::new();
    for r in rows {
        if !by_task.contains_key(r.task.as_str()) {
            order.push(&r.task);
        }
        by_task.entry(&r.task).or_default().push(r);
    }
    let mut out = Vec::new();
    for task in order {
        let mut rows = by_task[task].clone();
        rng.shuffle(&mut rows);
        let multiple_choice = rows.iter().all(|r| r.options.is_some());
        let mut taken: Vec<&TaskRow> = if multiple_choice {
            let classes: BTreeSet<&str> = rows.iter().map(|r| r.answer.as_str()).collect();
            let per_class = cap / classes.len().max(1);
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            rows.into_iter()
                .filter(|r| {
                    let c = count.entry(r.answer.as_str()).or_default();
                    *c += 1;
                    *c <= per_class
                })
                .collect()
        } else {
            rows.truncate(cap);
            rows
        };
        rng.shuffle(&mut taken);
        out.extend(taken.into_iter().cloned());
    }
    out
}

/// Rows of clusters not held out (the pool and the retriever's training data) and rows of
/// held-out clusters. An unknown held-out cluster name is an error listing the clusters.
pub fn split_held_out(rows: Vec<TaskRow>, held_out: &[String]) -> Result<(Vec<TaskRow>, Vec<TaskRow>)> {
    let clusters: BTreeSet<&str> = rows.iter().map(|r| r.cluster.as_str()).collect();
    for h in held_out {
        if !clusters.contains(h.as_str()) {
            bail!("held-out cluster {h:?} has no rows; the data's clusters are {:?}", clusters);
        }
    }
    let (seen, held): (Vec<TaskRow>, Vec<TaskRow>) = rows.into_iter().partition(|r| !held_out.contains(&r.cluster));
    if seen.is_empty() {
        bail!("`held_out` names every cluster of the data ({:?}): no rows are left for the prompt pool; hold out fewer clusters", clusters_of(&held));
    }
    Ok((seen, held))
}

fn clusters_of(rows: &[TaskRow]) -> BTreeSet<&str> {
    rows.iter().map(|r| r.cluster.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, task: &str, answer: &str, mc: bool) -> TaskRow {
        TaskRow {
            id: id.into(),
            task: task.into(),
            cluster: format!("c-{task}"),
            input: format!("q{id}"),
            options: mc.then(|| vec!["Yes".into(), "No".into(), "Maybe".into()]),
            answer: answer.into(),
        }
    }

    #[test]
    fn bad_rows_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let good = r#"{"id": "1", "task": "a", "cluster": "x", "input": "q", "options": ["Yes", "No"], "answer": "No"}"#;
        for (bad, want) in [
            (r#"{"id": "2", "task": "a", "cluster": "x", "input": "q", "options": ["Yes", "No"], "answer": "Perhaps"}"#, "t.jsonl:2: the answer \"Perhaps\" is not one of the options"),
            (r#"{"id": "1", "task": "a", "cluster": "x", "input": "q", "answer": "z"}"#, "t.jsonl:2: id \"1\" repeats the id of line 1"),
            (r#"{"id": "2", "task": "a", "input": "q", "answer": "z"}"#, "t.jsonl:2: missing key `cluster`"),
            (r#"{"id": "2", "task": 3, "cluster": "x", "input": "q", "answer": "z"}"#, "t.jsonl:2: `task` must be a string"),
            (r#"{"id": "2", "task": "a", "cluster": "x", "input": "q", "options": ["Yes"], "answer": "Yes"}"#, "t.jsonl:2: `options` has 1 entry"),
            ("[1", "t.jsonl:2: not a JSON object"),
        ] {
            std::fs::write(&p, format!("{good}\n{bad}\n")).unwrap();
            let err = format!("{:#}", read_rows(&p).unwrap_err());
            assert!(err.contains(want), "{bad}: {err}");
        }
        std::fs::write(&p, format!("{good}\n\n{{\"id\": 7, \"task\": \"b\", \"cluster\": \"y\", \"input\": \"in  put\", \"answer\": \"out\"}}\n")).unwrap();
        let rows = read_rows(&p).unwrap();
        assert_eq!(rows[0].gold(), Some(1));
        assert_eq!((rows[1].id.as_str(), rows[1].gold(), rows[1].demo()), ("7", None, "in put out".to_string()));
    }

    #[test]
    fn templates_follow_the_id() {
        let t: Vec<String> = vec!["A: {x}".into(), "B: {x}?".into(), "C {x}".into()];
        let first: Vec<&str> = (0..30).map(|i| pick_template(&i.to_string(), &t).unwrap()).collect();
        let again: Vec<&str> = (0..30).map(|i| pick_template(&i.to_string(), &t).unwrap()).collect();
        assert_eq!(first, again);
        for tpl in &t {
            assert!(first.contains(&tpl.as_str()), "every template is used over 30 ids");
        }
        let fields: BTreeMap<&str, String> = [("x", "cat  sat".to_string())].into();
        assert_eq!(fill_template("B: {x}?", &fields).unwrap(), "B: cat sat?");
        assert!(fill_template("{y}", &fields).unwrap_err().to_string().contains("no field `y`"));
        assert!(pick_template("1", &[]).is_none());
    }

    #[test]
    fn sampling_balances_classes_up_to_the_cap() {
        // Task a: 10 Yes, 2 No, 5 Maybe; cap 9 → 3 per class: 3 Yes, 2 No, 3 Maybe.
        let mut rows = Vec::new();
        for i in 0..17 {
            let answer = if i < 10 { "Yes" } else if i < 12 { "No" } else { "Maybe" };
            rows.push(row(&format!("a{i}"), "a", answer, true));
        }
        // Task b (completion): 12 rows, cap 9 → 9 rows.
        for i in 0..12 {
            rows.push(row(&format!("b{i}"), "b", "x", false));
        }
        let got = sample_balanced(&rows, 9, &mut Rng::new(42));
        let count = |task: &str, answer: &str| got.iter().filter(|r| r.task == task && r.answer == answer).count();
        assert_eq!((count("a", "Yes"), count("a", "No"), count("a", "Maybe")), (3, 2, 3));
        assert_eq!(count("b", "x"), 9);
        assert_eq!(got, sample_balanced(&rows, 9, &mut Rng::new(42)), "seeded");
        let ids: BTreeSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), got.len(), "no row twice");
    }

    #[test]
    fn held_out_clusters_split_off() {
        let rows = vec![row("1", "a", "Yes", true), row("2", "b", "x", false), row("3", "a", "No", true)];
        let (seen, held) = split_held_out(rows.clone(), &["c-b".into()]).unwrap();
        assert_eq!(seen.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["1", "3"]);
        assert_eq!(held.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["2"]);
        assert!(split_held_out(rows.clone(), &["nope".into()]).unwrap_err().to_string().contains("\"nope\" has no rows"));
        // Holding out every cluster would leave an empty pool: refused, not written.
        let err = split_held_out(rows, &["c-a".into(), "c-b".into()]).unwrap_err().to_string();
        assert!(err.contains("`held_out` names every cluster") && err.contains("\"c-a\""), "{err}");
    }
}
