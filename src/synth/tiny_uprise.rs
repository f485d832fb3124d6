//! The generated task families of the `uprise-tiny` experiment (research/synth-spec.md §6.9).
//!
//! Five families of yes/no-style statements, each in its own cluster but arithmetic:
//! `parity` ("34 is even") and `compare` ("7 is more than 3") in `arithmetic`, `sentiment`
//! (a lexicon word decides), `inclusion` ("red blue green has blue", entailment by set
//! inclusion, cluster `nli`) and `synonym` ("big dog means large dog", paraphrase by a
//! synonym table, cluster `paraphrase`).
//!
//! A *task* is a family in one of four styles. A style is a pair of templates and a
//! verbalizer pair: `qa` (yes / no), `label` (A / B), `verdict` (true / false) and `switch`
//! (on / off). Styles are shared by every family: that is the format cue a retriever can carry
//! across families.
//!
//! The frozen LM is made demonstration-sensitive by its training text (`lm.jsonl`,
//! `{"prompt", "response"}` rows: the loss on the query's answer only), 0 to `max_demos`
//! demonstrations and a query per row. Two mixtures:
//!
//! - `format` (the default, [`lm_sequence_format`]): which verbaliser pair a style's template
//!   is answered with is drawn anew for every sequence, so a lone query cannot tell its words
//!   and a demo of its style can; task rows are completions (the LM must produce the word).
//! - `flip` (the earlier design, [`lm_sequence`]): pairs fixed, which word of a pair means
//!   "true" drawn per sequence, multiple-choice task rows (`verdict` and `switch` flipped in
//!   the task data), plus an anchor style `fact` (right / wrong, never flipped) that teaches
//!   what is true. Reading the meaning off a demo needs the demo's truth and its label
//!   combined; the tiny decoder never learnt it (the README's UPRISE section has the runs).
//!
//! Files (written atomically): `train.jsonl` and `test.jsonl` (task rows of §6.7:
//! `{"id","task","cluster","input","options","answer"}`), `lm.jsonl` (`{"prompt","response"}`, or `{"text"}` with `answer_only = false`),
//! `vocab.jsonl` (its first 2000 rows as `{"text"}`, the word vocabulary of the tiny
//! decoder's tokenizer)
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
    /// Demos before an LM sequence's query at most.
    pub max_demos: usize,
    /// Rows of the encoders' text (`corpus.jsonl`).
    pub corpus: usize,
    /// The LM's rows as `{"prompt", "response"}` (the loss on the query's answer only) rather
    /// than one `{"text"}` (the loss on every token, statements and demo answers included).
    pub answer_only: bool,
    /// What makes the LM need demonstrations: `format` (default; a task style's verbaliser
    /// pair is drawn per LM sequence, task rows are completions) or `flip` (the earlier
    /// mixture: a style's pair fixed, its meaning flipped per sequence, multiple-choice rows,
    /// the `fact` anchor). See [`lm_sequence_format`] and [`lm_sequence`].
    pub mixture: Mixture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mixture {
    Format,
    Flip,
}

impl Default for TinyUpriseConfig {
    fn default() -> Self {
        TinyUpriseConfig { seed: 0, train: 60, test: 40, lm: 6000, max_demos: 4, corpus: 6000, answer_only: true, mixture: Mixture::Format }
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

/// The anchor style of the LM's text only (never a task): its verbalisers always mean the
/// same thing (`right` = true), so the LM can learn what is true from the statement alone;
/// the task styles' meaning, drawn per sequence, it can then only learn from demonstrations.
pub const ANCHOR: (&str, [&str; 2], [&str; 2]) = ("fact", ["Fact: {x}. Answer:", "Fact: {x} Answer:"], ["right", "wrong"]);
/// The anchor's style index in the LM's text (after the task styles).
pub const ANCHOR_STYLE: usize = STYLES.len();

/// The LM mixture's shares (one draw per sequence; see [`lm_sequence`]).
const ANCHOR_SHARE: f64 = 0.2;
const ZERO_DEMO_SHARE: f64 = 0.1;
/// How the demos of a sequence with a task-style query are drawn: all of the query's family
/// and style (the few-shot condition), all of its style and any family (what a retriever
/// that keeps the format finds), or any style and family (distractors, the random baseline).
const DEMO_KINDS: [f64; 3] = [0.5, 0.3, 0.2];
const RESTATE_SHARE: f64 = 0.15;
/// The LM rows copied to `vocab.jsonl`, the text its word tokenizer is built from: every word
/// of the LM's text occurs in them hundreds of times, and building from all 64k rows took
/// over a minute and a half.
const VOCAB_ROWS: usize = 2000;

fn style_spec(style: usize) -> (&'static str, [&'static str; 2], [&'static str; 2]) {
    if style == ANCHOR_STYLE { ANCHOR } else { STYLES[style] }
}

fn templates(style: usize) -> Vec<String> {
    style_spec(style).1.iter().map(|s| s.to_string()).collect()
}

/// A task row of `family` in `style`, its template picked by its id.
pub fn task_row(id: String, family: usize, style: usize, rng: &mut Rng) -> TaskRow {
    let (x, truth) = statement(FAMILIES[family].0, rng);
    row_of(id, family, style, x, truth)
}

/// A task row of the data set of `mixture` (a completion row in the `format` mixture).
fn task_row_of(mixture: Mixture, id: String, family: usize, style: usize, rng: &mut Rng) -> TaskRow {
    match mixture {
        Mixture::Flip => task_row(id, family, style, rng),
        Mixture::Format => {
            let (x, truth) = statement(FAMILIES[family].0, rng);
            format_row(id, family, style, x, truth, FORMAT_PAIRS[style])
        }
    }
}

/// The task row of statement `x` (true or not) of `family` in `style` (the anchor style
/// too), answered with the style's fixed meaning.
pub fn row_of(id: String, family: usize, style: usize, x: String, truth: bool) -> TaskRow {
    let (fam, cluster) = FAMILIES[family];
    let (name, _, words) = style_spec(style);
    let tpls = templates(style);
    let tpl = pick_template(&id, &tpls).unwrap_or("{x}").to_string();
    let fields: BTreeMap<&str, String> = [("x", x)].into();
    // The templates are constants with only `{x}`; filling cannot fail.
    let input = fill_template(&tpl, &fields).unwrap_or_default();
    TaskRow {
        id,
        task: format!("{fam}-{name}"),
        cluster: cluster.into(),
        input,
        options: Some(vec![words[0].to_string(), words[1].to_string()]),
        answer: (if truth { words[0] } else { words[1] }).to_string(),
    }
}

/// One statement of an LM sequence, answered with the sequence's meaning of its style.
#[derive(Debug, Clone)]
pub struct LmPart {
    pub row: TaskRow,
    pub style: usize,
    pub statement: String,
    pub truth: bool,
}

/// One training sequence of the LM: demos, then the query; `flip[s]` says whether style
/// `s`'s verbalisers mean the opposite of the task data in this sequence (never the anchor's).
#[derive(Debug, Clone)]
pub struct LmSequence {
    pub demos: Vec<LmPart>,
    pub query: LmPart,
    pub flip: Vec<bool>,
}

impl LmSequence {
    /// The prompt: the demos and the query's input joined by `" \n "` (the scoring input of
    /// §6.3 with these demos).
    pub fn prompt(&self) -> String {
        let mut parts: Vec<String> = self.demos.iter().map(|d| d.row.demo()).collect();
        parts.push(self.query.row.input.clone());
        parts.join(" \n ")
    }

    /// The response: the query's answer after a space, as option scoring continues.
    pub fn response(&self) -> String {
        format!(" {}", self.query.row.answer)
    }
}

fn part(id: String, family: usize, style: usize, x: String, truth: bool, flip: &[bool]) -> LmPart {
    let mut row = row_of(id, family, style, x.clone(), truth);
    if flip[style] {
        let words = style_spec(style).2;
        row.answer = (if row.answer == words[0] { words[1] } else { words[0] }).to_string();
    }
    LmPart { row, style, statement: x, truth }
}

/// One training sequence of the LM: 0 to `max_demos` demos and a query. Which word of each
/// task style's verbaliser pair means "true" is drawn anew for every sequence (the anchor
/// style's never changes), so a task-style query alone is a coin flip and only demos of its
/// style (any family) tell which word is meant. One in five queries is in the anchor style:
/// they teach what is true, which the in-context rule needs. One in ten sequences has no
/// demo. The demos of a task-style query are, per sequence, all of its task (family and
/// style; half), all of its style (three in ten) or of any style (the rest); in 15% of the
/// sequences with demos one of them restates the query's statement, the copy that is the
/// easy first step towards reading the meaning off unrelated demos.
pub fn lm_sequence(i: usize, max_demos: usize, rng: &mut Rng) -> LmSequence {
    let mut flip: Vec<bool> = (0..STYLES.len()).map(|_| rng.bool(0.5)).collect();
    flip.push(false);
    let query_style = if rng.bool(ANCHOR_SHARE) { ANCHOR_STYLE } else { rng.usize(STYLES.len()) };
    let query_family = rng.usize(FAMILIES.len());
    let (qx, qtruth) = statement(FAMILIES[query_family].0, rng);
    let n = if max_demos == 0 || rng.bool(ZERO_DEMO_SHARE) { 0 } else { 1 + rng.usize(max_demos) };
    // The anchor query's demos are of any kind (its meaning needs none).
    let kind = if query_style == ANCHOR_STYLE { 2 } else { rng.weighted(&DEMO_KINDS) };
    let restated = (n > 0 && rng.bool(RESTATE_SHARE)).then(|| rng.usize(n));
    let mut demos = Vec::with_capacity(n);
    for d in 0..n {
        let id = format!("lm{i}-{d}");
        if Some(d) == restated {
            demos.push(part(id, query_family, query_style, qx.clone(), qtruth, &flip));
            continue;
        }
        let (family, style) = match kind {
            0 => (query_family, query_style),
            1 => (rng.usize(FAMILIES.len()), query_style),
            _ => (rng.usize(FAMILIES.len()), rng.usize(STYLES.len() + 1)),
        };
        let (x, truth) = statement(FAMILIES[family].0, rng);
        demos.push(part(id, family, style, x, truth, &flip));
    }
    let query = part(format!("lm{i}-q"), query_family, query_style, qx, qtruth, &flip);
    LmSequence { demos, query, flip }
}

/// The `format` mixture's verbaliser pairs, word for true first: the task styles' pairs of
/// [`STYLES`] with none flipped (`verdict` answers a true statement "true").
pub const FORMAT_PAIRS: [[&str; 2]; 4] = [["yes", "no"], ["A", "B"], ["true", "false"], ["on", "off"]];

/// The task row of statement `x` in the `format` mixture: `style`'s templates and its pair of
/// [`FORMAT_PAIRS`], never flipped, and no options: the row is a completion, so the LM has to
/// produce the word itself and a wrong format is a wrong answer (with options to score, the
/// format would not matter).
pub fn format_row(id: String, family: usize, style: usize, x: String, truth: bool, pair: [&str; 2]) -> TaskRow {
    let mut row = row_of(id, family, style, x, truth);
    row.options = None;
    row.answer = (if truth { pair[0] } else { pair[1] }).to_string();
    row
}

/// One training sequence of the LM in the `format` mixture (synth-spec §6.9: "sequences where
/// the verbalizer or format is implied only by preceding demonstrations"). Every sequence
/// assigns the four verbaliser pairs of [`FORMAT_PAIRS`] to the four task styles by a fresh
/// permutation, so a style's template never tells its words and a lone query has one chance in
/// four of the pair its task uses; a demo of the query's style (any family) shows it, one of
/// another style shows a different pair, a distractor. Meanings never flip: what is true is
/// learnt from every row, and what demonstrations add is the format, copied from a demo with
/// the query's template (an induction step a small decoder can learn, unlike the `flip`
/// mixture's meaning read off a demo's truth). Demos: none in one sequence in ten; otherwise
/// all of the query's task (half), all of its style (three in ten) or of any style.
pub fn lm_sequence_format(i: usize, max_demos: usize, rng: &mut Rng) -> LmSequence {
    let mut pair_of: Vec<usize> = (0..STYLES.len()).collect();
    rng.shuffle(&mut pair_of);
    let query_style = rng.usize(STYLES.len());
    let query_family = rng.usize(FAMILIES.len());
    let n = if max_demos == 0 || rng.bool(ZERO_DEMO_SHARE) { 0 } else { 1 + rng.usize(max_demos) };
    let kind = rng.weighted(&DEMO_KINDS);
    let part = |id: String, family: usize, style: usize, rng: &mut Rng| {
        let (x, truth) = statement(FAMILIES[family].0, rng);
        let row = format_row(id, family, style, x.clone(), truth, FORMAT_PAIRS[pair_of[style]]);
        LmPart { row, style, statement: x, truth }
    };
    let mut demos = Vec::with_capacity(n);
    for d in 0..n {
        let (family, style) = match kind {
            0 => (query_family, query_style),
            1 => (rng.usize(FAMILIES.len()), query_style),
            _ => (rng.usize(FAMILIES.len()), rng.usize(STYLES.len())),
        };
        demos.push(part(format!("lm{i}-{d}"), family, style, rng));
    }
    let query = part(format!("lm{i}-q"), query_family, query_style, rng);
    // `flip` says whether a style's words differ from its task data's in this sequence.
    let flip = (0..STYLES.len()).map(|s| pair_of[s] != s).collect();
    LmSequence { demos, query, flip }
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
                    let row = task_row_of(cfg.mixture, format!("{split}-{}-{}-{i}", FAMILIES[f].0, STYLES[s].0), f, s, &mut rng);
                    text.push_str(&serde_json::to_string(&row)?);
                    text.push('\n');
                    count += 1;
                }
            }
        }
        out.push((format!("{split}.jsonl"), text, count));
    }
    let mut rng = Rng::derive(cfg.seed, "tiny-uprise/lm");
    let mut text = String::new();
    let mut vocab = String::new();
    for i in 0..cfg.lm {
        let seq = match cfg.mixture {
            Mixture::Format => lm_sequence_format(i, cfg.max_demos, &mut rng),
            Mixture::Flip => lm_sequence(i, cfg.max_demos, &mut rng),
        };
        let whole = json!({ "text": format!("{}{}", seq.prompt(), seq.response()) });
        // The loss on every token (`{"text"}`): each demo's answer follows from the demos before it.
        let row = if cfg.answer_only { json!({ "prompt": seq.prompt(), "response": seq.response() }) } else { whole.clone() };
        text.push_str(&format!("{row}\n"));
        if i < VOCAB_ROWS {
            vocab.push_str(&format!("{whole}\n"));
        }
    }
    out.push(("lm.jsonl".into(), text, cfg.lm as u64));
    out.push(("vocab.jsonl".into(), vocab, cfg.lm.min(VOCAB_ROWS) as u64));
    // The encoders' text: the demos of a fresh draw of task rows, every family and style.
    let mut rng = Rng::derive(cfg.seed, "tiny-uprise/corpus");
    let mut text = String::new();
    for i in 0..cfg.corpus {
        let row = task_row_of(cfg.mixture, format!("corpus-{i}"), rng.usize(FAMILIES.len()), rng.usize(STYLES.len()), &mut rng);
        text.push_str(&format!("{}\n", json!({ "text": row.demo() })));
    }
    out.push(("corpus.jsonl".into(), text, cfg.corpus as u64));
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
    if c.train < 2 || c.test == 0 || c.lm == 0 || c.corpus == 0 {
        return Err(("train".into(), "train must be at least 2 (a prompt needs another of its task), test, lm and corpus at least 1".into()));
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
        &["train.jsonl", "test.jsonl", "lm.jsonl", "vocab.jsonl", "corpus.jsonl"]
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

    /// The truth of a statement, judged from its words alone (not by the generator).
    fn judge(s: &str) -> bool {
        let w: Vec<&str> = s.split(' ').collect();
        if s.ends_with(" is even") {
            w[0].parse::<usize>().unwrap() % 2 == 0
        } else if s.contains(" is more than ") {
            w[0].parse::<usize>().unwrap() > w[4].parse::<usize>().unwrap()
        } else if s.contains(" has ") {
            let (premise, probe) = s.split_once(" has ").unwrap();
            premise.split(' ').any(|w| w == probe)
        } else if s.contains(" means ") {
            // "first thing means second thing": words 0 and 3.
            w[0] == w[3] || SYNONYMS.iter().any(|&(a, b)| (a, b) == (w[0], w[3]) || (b, a) == (w[0], w[3]))
        } else {
            assert!(s.starts_with("the ") && s.ends_with(" is good"), "{s}");
            POSITIVE.contains(&w[3])
        }
    }

    #[test]
    fn statements_are_true_as_labelled() {
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            for (family, _) in FAMILIES {
                let (s, t) = statement(family, &mut rng);
                assert_eq!(judge(&s), t, "{family}: {s}");
            }
        }
    }

    #[test]
    fn an_lm_sequence_gives_demos_and_query_of_a_style_one_meaning() {
        let mut rng = Rng::new(11);
        let (mut informative, mut flipped, mut task_queries, mut zero, mut anchors) = (0, 0, 0, 0, 0);
        let n = 4000;
        for i in 0..n {
            let seq = lm_sequence(i, 4, &mut rng);
            assert!(seq.demos.len() <= 4);
            // The word meaning "true" in this sequence, per style, read off every part.
            let mut word_for_true: BTreeMap<usize, String> = BTreeMap::new();
            for p in seq.demos.iter().chain([&seq.query]) {
                assert_eq!(judge(&p.statement), p.truth, "{}", p.statement);
                assert!(p.row.input.contains(&p.statement), "{:?}", p.row);
                let opts = p.row.options.clone().unwrap();
                assert!(opts.contains(&p.row.answer), "{:?}", p.row);
                let other = if p.row.answer == opts[0] { &opts[1] } else { &opts[0] };
                let w = if p.truth { p.row.answer.clone() } else { other.clone() };
                let seen = word_for_true.entry(p.style).or_insert_with(|| w.clone());
                assert_eq!(seen, &w, "sequence {i}: style {} means two things: {}", p.style, seq.prompt());
            }
            // The anchor's meaning never changes; a task style's is flipped or not per sequence.
            if let Some(w) = word_for_true.get(&ANCHOR_STYLE) {
                assert_eq!(w, "right");
            }
            let q = &seq.query;
            if q.style == ANCHOR_STYLE {
                anchors += 1;
            } else {
                task_queries += 1;
                flipped += usize::from(word_for_true[&q.style] != STYLES[q.style].2[0]);
                informative += usize::from(seq.demos.iter().any(|d| d.style == q.style));
            }
            zero += usize::from(seq.demos.is_empty());
            // The prompt is the demos and the query's input; the response its answer.
            let prompt = seq.prompt();
            assert_eq!(prompt.split(" \n ").count(), seq.demos.len() + 1, "{prompt}");
            assert!(prompt.ends_with(&q.row.input), "{prompt}");
            assert_eq!(seq.response(), format!(" {}", q.row.answer));
        }
        let share = |k: usize, of: usize| k as f64 / of as f64;
        // Seeded: these are fixed numbers, the bounds say what the mixture is meant to be.
        assert!((0.45..0.55).contains(&share(flipped, task_queries)), "flipped {flipped}/{task_queries}");
        assert!((0.17..0.23).contains(&share(anchors, n)), "anchors {anchors}");
        assert!((0.08..0.12).contains(&share(zero, n)), "zero-demo {zero}");
        // Demos of the query's task or style (80%) or a random style that happens to match.
        assert!((0.75..0.9).contains(&share(informative, task_queries)), "informative {informative}/{task_queries}");
    }

    #[test]
    fn same_seed_same_files_and_styles_fix_the_verbalizer() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = TinyUpriseConfig { seed: 1, train: 5, test: 3, lm: 20, max_demos: 4, corpus: 10, answer_only: true, mixture: Mixture::Flip };
        write(a.path(), &cfg).unwrap();
        write(b.path(), &cfg).unwrap();
        for f in ["train.jsonl", "test.jsonl", "lm.jsonl", "vocab.jsonl", "corpus.jsonl"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap(), "{f}");
        }
        let rows = crate::uprise::data::read_rows(&a.path().join("train.jsonl")).unwrap();
        assert_eq!(rows.len(), 5 * 5 * 4);
        for r in &rows {
            assert!(!r.task.ends_with("-fact"), "the anchor style is not a task: {}", r.task);
            let style = STYLES.iter().find(|s| r.task.ends_with(&format!("-{}", s.0))).unwrap();
            assert_eq!(r.options.as_ref().unwrap(), &vec![style.2[0].to_string(), style.2[1].to_string()]);
        }
    }

    #[test]
    fn a_format_sequence_shows_a_style_s_words_only_through_its_demos() {
        let mut rng = Rng::new(13);
        let (mut other_words, mut informative, mut zero) = (0, 0, 0);
        let n = 4000;
        for i in 0..n {
            let seq = lm_sequence_format(i, 4, &mut rng);
            // Per style, the pair this sequence uses, read off every part's answer and truth.
            let mut pair_of: BTreeMap<usize, [String; 2]> = BTreeMap::new();
            for p in seq.demos.iter().chain([&seq.query]) {
                assert_eq!(judge(&p.statement), p.truth, "{}", p.statement);
                assert!(p.row.options.is_none(), "format rows are completions: {:?}", p.row);
                assert!(p.row.input.contains(&p.statement), "{:?}", p.row);
                // Never flipped: the answer is the first word of some pair exactly when true.
                let pair = FORMAT_PAIRS.iter().find(|w| w.contains(&p.row.answer.as_str())).unwrap();
                assert_eq!(p.row.answer == pair[0], p.truth, "{:?}", p.row);
                let pair = [pair[0].to_string(), pair[1].to_string()];
                assert_eq!(pair_of.entry(p.style).or_insert_with(|| pair.clone()), &pair, "sequence {i}: {}", seq.prompt());
            }
            // Two styles of one sequence never share a pair (a distractor shows other words).
            let pairs: Vec<&[String; 2]> = pair_of.values().collect();
            for (a, pa) in pairs.iter().enumerate() {
                assert!(pairs[a + 1..].iter().all(|pb| pb != pa), "sequence {i}: {}", seq.prompt());
            }
            let q = &seq.query;
            other_words += usize::from(pair_of[&q.style][0] != FORMAT_PAIRS[q.style][0]);
            informative += usize::from(seq.demos.iter().any(|d| d.style == q.style));
            zero += usize::from(seq.demos.is_empty());
        }
        let share = |k: usize| k as f64 / n as f64;
        // A query's style uses its task's pair in one sequence in four (a random permutation).
        assert!((0.71..0.79).contains(&share(other_words)), "other words {other_words}");
        assert!((0.08..0.12).contains(&share(zero)), "zero-demo {zero}");
        assert!((0.75..0.9).contains(&share(informative)), "informative {informative}");
    }

    #[test]
    fn format_task_rows_are_completions_in_their_style_s_own_words() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TinyUpriseConfig { seed: 2, train: 4, test: 2, lm: 10, max_demos: 4, corpus: 10, answer_only: true, mixture: Mixture::Format };
        write(dir.path(), &cfg).unwrap();
        let rows = crate::uprise::data::read_rows(&dir.path().join("test.jsonl")).unwrap();
        assert_eq!(rows.len(), 5 * 4 * 2);
        for r in &rows {
            let s = STYLES.iter().position(|s| r.task.ends_with(&format!("-{}", s.0))).unwrap();
            assert!(r.options.is_none(), "{r:?}");
            let statement = STYLES[s].1.iter().find_map(|t| {
                let (pre, post) = t.split_once("{x}").unwrap();
                r.input.strip_prefix(pre)?.strip_suffix(post).map(str::to_string)
            });
            let truth = judge(statement.as_deref().unwrap());
            assert_eq!(r.answer, FORMAT_PAIRS[s][usize::from(!truth)], "{r:?}");
        }
    }
}
