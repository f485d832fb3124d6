//! The generated task families of the `uprise-tiny` experiment (research/synth-spec.md §6.9).
//!
//! Five families of yes/no-style statements, each in its own cluster but arithmetic:
//! `parity` ("34 is even") and `compare` ("7 is more than 3") in `arithmetic`, `sentiment`
//! (a lexicon word decides), `inclusion` ("red blue green has blue", entailment by set
//! inclusion, cluster `nli`) and `synonym` ("big dog means large dog", paraphrase by a
//! synonym table, cluster `paraphrase`).
//!
//! A *task* is a family in one of four styles. A style is a pair of templates and a
//! verbalizer pair whose meaning the style fixes: `qa` (yes / no), `label` (A / B), `verdict`
//! (true / false, **flipped**: a true statement is answered "false") and `switch` (on / off,
//! flipped). Styles are shared by every family: that is the format cue a retriever can carry
//! across families.
//!
//! The frozen LM is made demonstration-sensitive: in its training text (`lm.jsonl`) each
//! example is 0–3 demonstrations and a query, one `{"text"}` row (the loss is on every token,
//! so each demo's answer, which follows from the demos before it, is a target too), and which
//! word of a verbalizer pair means
//! "true" is drawn anew for every sequence and style. A lone query therefore cannot tell
//! which word to answer; demonstrations in the query's style can, and in the task data the
//! meaning of each style is fixed. Three in four examples use demos of the query's style
//! only, the rest demos of random styles; half of the examples with demos restate the query's
//! statement in one of them (see [`lm_example`]), so a demo of the same statement and style
//! is the one that helps most.
//!
//! Files (written atomically): `train.jsonl` and `test.jsonl` (task rows of §6.7:
//! `{"id","task","cluster","input","options","answer"}`), `lm.jsonl` (`{"text"}`, also the
//! word vocabulary of the tiny decoder's tokenizer)
//! and `corpus.jsonl` (`{"text"}`: every task row's demo, the tiny encoders' vocabulary and
//! MLM text).

use super::method::{parse_options, Method, MethodEnv};
use super::output::Counts;
use crate::rng::Rng;
use crate::stage::StageCtx;
use crate::uprise::data::{fill_template, pick_template, TaskRow};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyUpriseConfig {
    pub seed: u64,
    /// Training rows per task (the pool before sampling).
    pub train: usize,
    /// Test rows per task.
    pub test: usize,
    /// Sequences of the LM's training text.
    pub lm: usize,
}

impl Default for TinyUpriseConfig {
    fn default() -> Self {
        TinyUpriseConfig { seed: 0, train: 60, test: 40, lm: 6000 }
    }
}

/// (family, cluster).
pub const FAMILIES: [(&str, &str); 5] =
    [("parity", "arithmetic"), ("compare", "arithmetic"), ("sentiment", "sentiment"), ("inclusion", "nli"), ("synonym", "paraphrase")];

/// (style, templates, [word for true, word for false] in the task data).
pub const STYLES: [(&str, [&str; 2], [&str; 2]); 4] = [
    ("qa", ["Q: {x}? A:", "Question: {x}? Answer:"], ["yes", "no"]),
    ("label", ["Input: {x} Label:", "Text: {x} Label:"], ["A", "B"]),
    ("verdict", ["Claim: {x}. Verdict:", "Statement: {x}. Verdict:"], ["false", "true"]),
    ("switch", ["{x} ->", "{x} =>"], ["off", "on"]),
];

const POSITIVE: &[&str] = &["great", "lovely", "tasty", "fun", "bright", "kind", "superb", "warm"];
const NEGATIVE: &[&str] = &["awful", "boring", "bland", "rude", "dull", "cold", "grim", "sad"];
const NOUNS: &[&str] = &["movie", "soup", "trip", "book", "song", "room", "game", "show"];
const COLORS: &[&str] = &["red", "blue", "green", "pink", "gray", "gold", "teal", "plum"];
const SYNONYMS: &[(&str, &str)] = &[("big", "large"), ("small", "tiny"), ("fast", "quick"), ("happy", "glad"), ("old", "aged"), ("smart", "clever")];
const THINGS: &[&str] = &["dog", "car", "cat", "boat", "tree", "house"];

/// One statement of `family` and whether it is true; about half are true.
pub fn statement(family: &str, rng: &mut Rng) -> (String, bool) {
    let truth = rng.bool(0.5);
    match family {
        "parity" => {
            let n = 2 * rng.usize(50) + usize::from(!truth);
            (format!("{n} is even"), truth)
        }
        "compare" => {
            let a = rng.usize(10);
            let mut b = rng.usize(10);
            while b == a {
                b = rng.usize(10);
            }
            let (hi, lo) = (a.max(b), a.min(b));
            if truth {
                (format!("{hi} is more than {lo}"), true)
            } else {
                (format!("{lo} is more than {hi}"), false)
            }
        }
        "sentiment" => {
            let word = if truth { rng.choose(POSITIVE) } else { rng.choose(NEGATIVE) };
            let noun = rng.choose(NOUNS).copied().unwrap_or("movie");
            (format!("the {noun} was {} is good", word.copied().unwrap_or("fun")), truth)
        }
        "inclusion" => {
            let mut colors: Vec<&str> = COLORS.to_vec();
            rng.shuffle(&mut colors);
            let premise = colors[..3].join(" ");
            let probe = if truth { colors[rng.usize(3)] } else { colors[3 + rng.usize(colors.len() - 3)] };
            (format!("{premise} has {probe}"), truth)
        }
        _ => {
            let (a, b) = SYNONYMS[rng.usize(SYNONYMS.len())];
            let thing = rng.choose(THINGS).copied().unwrap_or("dog");
            let other = if truth {
                if rng.bool(0.5) { b } else { a }
            } else {
                let mut o = SYNONYMS[rng.usize(SYNONYMS.len())];
                while o.0 == a {
                    o = SYNONYMS[rng.usize(SYNONYMS.len())];
                }
                if rng.bool(0.5) { o.0 } else { o.1 }
            };
            let (first, second) = if rng.bool(0.5) { (a, other) } else { (other, a) };
            (format!("{first} {thing} means {second} {thing}"), truth)
        }
    }
}

fn templates(style: usize) -> Vec<String> {
    STYLES[style].1.iter().map(|s| s.to_string()).collect()
}

/// A task row of `family` in `style`, its template picked by its id.
pub fn task_row(id: String, family: usize, style: usize, rng: &mut Rng) -> TaskRow {
    let (x, truth) = statement(FAMILIES[family].0, rng);
    row_of(id, family, style, x, truth)
}

/// The task row of statement `x` (true or not) of `family` in `style`.
pub fn row_of(id: String, family: usize, style: usize, x: String, truth: bool) -> TaskRow {
    let (fam, cluster) = FAMILIES[family];
    let tpls = templates(style);
    let tpl = pick_template(&id, &tpls).unwrap_or("{x}").to_string();
    let fields: BTreeMap<&str, String> = [("x", x)].into();
    // The templates are constants with only `{x}`; filling cannot fail.
    let input = fill_template(&tpl, &fields).unwrap_or_default();
    let words = STYLES[style].2;
    TaskRow {
        id,
        task: format!("{fam}-{}", STYLES[style].0),
        cluster: cluster.into(),
        input,
        options: Some(vec![words[0].to_string(), words[1].to_string()]),
        answer: (if truth { words[0] } else { words[1] }).to_string(),
    }
}

/// One training example of the LM as (prompt, response): 0–3 demos and a query, the answer
/// of the query the target. Which word of each style's verbalizer pair means "true" is drawn
/// for this example. Three in four examples show demos of the query's style only; one in ten
/// shows none; in half of those with demos one demo restates the query's own statement (in
/// the query's style, perhaps another template), so copying its answer is the shortest way
/// to the right word, a lookup a tiny model learns long before it learns to infer the
/// meaning of the words from unrelated demos.
pub fn lm_example(i: usize, rng: &mut Rng) -> (String, String) {
    let flip: Vec<bool> = (0..STYLES.len()).map(|_| rng.bool(0.5)).collect();
    let query_style = rng.usize(STYLES.len());
    let query_family = rng.usize(FAMILIES.len());
    let (qx, qtruth) = statement(FAMILIES[query_family].0, rng);
    let same_style = rng.bool(0.75);
    let demos = if rng.bool(0.1) { 0 } else { 1 + rng.usize(3) };
    let restated = (demos > 0 && rng.bool(0.5)).then(|| rng.usize(demos));
    let answer_of = |row: &mut TaskRow, style: usize| {
        if flip[style] {
            let words = STYLES[style].2;
            row.answer = (if row.answer == words[0] { words[1] } else { words[0] }).to_string();
        }
    };
    let mut parts = Vec::new();
    for d in 0..demos {
        let id = format!("lm{i}-{d}");
        let mut row = if Some(d) == restated {
            row_of(id, query_family, query_style, qx.clone(), qtruth)
        } else {
            let style = if same_style { query_style } else { rng.usize(STYLES.len()) };
            task_row(id, rng.usize(FAMILIES.len()), style, rng)
        };
        let style = STYLES.iter().position(|s| row.task.ends_with(&format!("-{}", s.0))).unwrap_or(query_style);
        answer_of(&mut row, style);
        parts.push(row.demo());
    }
    let mut query = row_of(format!("lm{i}-q"), query_family, query_style, qx, qtruth);
    answer_of(&mut query, query_style);
    parts.push(query.input.clone());
    (parts.join(" \n "), format!(" {}", query.answer))
}

pub fn write(dir: &Path, cfg: &TinyUpriseConfig) -> Result<Vec<(String, u64)>> {
    crate::fsutil::ensure_dir(dir)?;
    let mut out = Vec::new();
    for (split, n) in [("train", cfg.train), ("test", cfg.test)] {
        let mut text = String::new();
        let mut count = 0u64;
        for f in 0..FAMILIES.len() {
            for s in 0..STYLES.len() {
                let mut rng = Rng::derive(cfg.seed, &format!("tiny-uprise/{split}/{f}/{s}"));
                for i in 0..n {
                    let row = task_row(format!("{split}-{}-{}-{i}", FAMILIES[f].0, STYLES[s].0), f, s, &mut rng);
                    text.push_str(&serde_json::to_string(&row)?);
                    text.push('\n');
                    count += 1;
                }
            }
        }
        out.push((format!("{split}.jsonl"), text, count));
    }
    let mut rng = Rng::derive(cfg.seed, "tiny-uprise/lm");
    let text: String = (0..cfg.lm)
        .map(|i| {
            let (prompt, response) = lm_example(i, &mut rng);
            // One text row: the loss is on every token, each demo's answer included (it follows
            // from the demos before it), not only on the query's answer.
            format!("{}\n", json!({ "text": format!("{prompt}{response}") }))
        })
        .collect();
    out.push(("lm.jsonl".into(), text, cfg.lm as u64));
    // The encoders' text: the demos of a fresh draw of task rows, every family and style.
    let mut rng = Rng::derive(cfg.seed, "tiny-uprise/corpus");
    let mut text = String::new();
    for i in 0..cfg.lm {
        let row = task_row(format!("corpus-{i}"), rng.usize(FAMILIES.len()), rng.usize(STYLES.len()), &mut rng);
        text.push_str(&format!("{}\n", json!({ "text": row.demo() })));
    }
    out.push(("corpus.jsonl".into(), text, cfg.lm as u64));
    let mut counts = Vec::new();
    for (name, text, n) in out {
        let path = dir.join(&name);
        crate::fsutil::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        counts.push((name, n));
    }
    Ok(counts)
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    let c = parse_options::<TinyUpriseConfig>(options)?;
    if c.train < 2 || c.test == 0 || c.lm == 0 {
        return Err(("train".into(), "train must be at least 2 (a prompt needs another of its task), test and lm at least 1".into()));
    }
    Ok(())
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let config: TinyUpriseConfig = super::method::generator_options(options, env, |c: &mut TinyUpriseConfig| &mut c.seed)?;
    Ok(Box::new(TinyUprise { config }))
}

struct TinyUprise {
    config: TinyUpriseConfig,
}

impl Method for TinyUprise {
    fn files(&self) -> &'static [&'static str] {
        &["train.jsonl", "test.jsonl", "lm.jsonl", "corpus.jsonl"]
    }
    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        ctx.events.info(format!("generating the tiny UPRISE task families (seed {})", self.config.seed));
        let mut counts = Counts::default();
        for (file, n) in write(dir, &self.config)? {
            counts.rows.insert(file, n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_true_as_labelled() {
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let (s, t) = statement("parity", &mut rng);
            let n: usize = s.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(n % 2 == 0, t, "{s}");
            let (s, t) = statement("compare", &mut rng);
            let w: Vec<&str> = s.split(' ').collect();
            assert_eq!(w[0].parse::<usize>().unwrap() > w[4].parse::<usize>().unwrap(), t, "{s}");
            let (s, t) = statement("inclusion", &mut rng);
            let (premise, probe) = s.split_once(" has ").unwrap();
            assert_eq!(premise.split(' ').any(|w| w == probe), t, "{s}");
            let (s, t) = statement("sentiment", &mut rng);
            assert_eq!(POSITIVE.iter().any(|p| s.contains(&format!(" {p} "))), t, "{s}");
            let (s, t) = statement("synonym", &mut rng);
            // "first thing means second thing": words 0 and 3.
            let w: Vec<&str> = s.split(' ').collect();
            let same = w[0] == w[3] || SYNONYMS.iter().any(|&(a, b)| (a, b) == (w[0], w[3]) || (b, a) == (w[0], w[3]));
            assert_eq!(same, t, "{s}");
        }
    }

    #[test]
    fn same_seed_same_files_and_styles_fix_the_verbalizer() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = TinyUpriseConfig { seed: 1, train: 5, test: 3, lm: 20 };
        write(a.path(), &cfg).unwrap();
        write(b.path(), &cfg).unwrap();
        for f in ["train.jsonl", "test.jsonl", "lm.jsonl", "corpus.jsonl"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap(), "{f}");
        }
        let rows = crate::uprise::data::read_rows(&a.path().join("train.jsonl")).unwrap();
        assert_eq!(rows.len(), 5 * 5 * 4);
        for r in &rows {
            let style = STYLES.iter().find(|s| r.task.ends_with(&format!("-{}", s.0))).unwrap();
            assert_eq!(r.options.as_ref().unwrap(), &vec![style.2[0].to_string(), style.2[1].to_string()]);
        }
    }
}
