//! Multiple-choice accuracy by option scoring, as the AdaptLLM evaluation harness does it
//! (docs: research/synth-spec.md §4.5): each option is scored by its mean per-token NLL as
//! the continuation `" " + option` of the row's `input`, and the option with the lowest mean
//! NLL is the prediction (ties go to the lowest index).
//!
//! Rows are `{"input": str, "options": [str], "gold_index": int}` (the AdaptLLM task sets'
//! format). The continuation's tokens are those of `input + " " + option` after the longest
//! prefix it shares with the tokens of `input` alone, so a tokenizer that merges across the
//! boundary is handled the way lm-evaluation-harness splits context and continuation. The
//! tokenizer's BOS, when it adds one, is put in front of the input. An input too long for the
//! model loses tokens from its left (counted in `truncated`).

use super::Distribution;
use crate::model::score::score_shared_prompts;
use crate::model::{Decoder, Mode};
use crate::text::Tokenizer;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One validated row of a choice file.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceRow {
    pub line: usize,
    pub input: String,
    pub options: Vec<String>,
    pub gold: usize,
}

const ROW_FORMAT: &str = "{\"input\": \"...\", \"options\": [\"...\", ...], \"gold_index\": 0}";

/// Every row of `path`, checked before anything is scored: a line that is not a JSON object,
/// a missing or mistyped key, empty options or a gold index out of range is an error naming
/// the file and line.
pub fn read_rows(path: &Path) -> Result<Vec<ChoiceRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open the choice file {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.with_context(|| format!("{at}: cannot read the line"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{at}: not a JSON object; each line must be {ROW_FORMAT}"))?;
        let input = match v.get("input") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => bail!("{at}: `input` must be a string; each line must be {ROW_FORMAT}"),
            None => bail!("{at}: missing key `input`; each line must be {ROW_FORMAT}"),
        };
        let options: Vec<String> = match v.get("options") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|o| o.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .with_context(|| format!("{at}: every entry of `options` must be a string"))?,
            Some(_) => bail!("{at}: `options` must be a list of strings"),
            None => bail!("{at}: missing key `options`; each line must be {ROW_FORMAT}"),
        };
        if options.is_empty() {
            bail!("{at}: `options` is empty; a row needs at least one option to choose from");
        }
        let gold = match v.get("gold_index") {
            Some(g) => g.as_u64().with_context(|| format!("{at}: `gold_index` must be a non-negative integer, found {g}"))? as usize,
            None => bail!("{at}: missing key `gold_index` (rows with a `label` instead are generation tasks, not scored here); each line must be {ROW_FORMAT}"),
        };
        if gold >= options.len() {
            bail!("{at}: gold_index {gold} is out of range for {} option(s) (indices start at 0)", options.len());
        }
        rows.push(ChoiceRow { line: i + 1, input, options, gold });
    }
    if rows.is_empty() {
        bail!("{}: no rows; each line must be {ROW_FORMAT}", path.display());
    }
    Ok(rows)
}

/// The class labels when every row offers the same options in the same order (a
/// classification task such as PubMedQA's yes / no / maybe), else None.
pub fn class_labels(rows: &[ChoiceRow]) -> Option<Vec<String>> {
    let first = &rows.first()?.options;
    rows.iter().all(|r| &r.options == first).then(|| first.clone())
}

/// Prompt and continuation tokens of `option` after `input` (see the module doc).
pub fn split_tokens(tok: &Tokenizer, bos: Option<u32>, input: &str, option: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let context = tok.encode(input, false)?;
    let whole = tok.encode(&format!("{input} {option}"), false)?;
    let shared = context.iter().zip(&whole).take_while(|(a, b)| a == b).count();
    let mut prompt: Vec<u32> = bos.into_iter().collect();
    prompt.extend_from_slice(&whole[..shared]);
    Ok((prompt, whole[shared..].to_vec()))
}

/// Index of the lowest score; ties go to the lowest index, NaN never wins.
pub fn argmin(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s < scores[best] || scores[best].is_nan() && !s.is_nan() {
            best = i;
        }
    }
    best
}

/// Macro-F1 over classes: the mean of per-class F1 = 2·TP / (2·TP + FP + FN) over the classes
/// that occur among the gold labels or the predictions (scikit-learn's `f1_score(average =
/// "macro")` with its default labels).
pub fn macro_f1(gold: &[usize], pred: &[usize]) -> f64 {
    let classes: std::collections::BTreeSet<usize> = gold.iter().chain(pred).copied().collect();
    if classes.is_empty() {
        return f64::NAN;
    }
    let f1 = |c: usize| {
        let tp = gold.iter().zip(pred).filter(|(g, p)| **g == c && **p == c).count() as f64;
        let fp = gold.iter().zip(pred).filter(|(g, p)| **g != c && **p == c).count() as f64;
        let fneg = gold.iter().zip(pred).filter(|(g, p)| **g == c && **p != c).count() as f64;
        2.0 * tp / (2.0 * tp + fp + fneg)
    };
    classes.iter().map(|&c| f1(c)).sum::<f64>() / classes.len() as f64
}

/// One row's scores and prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChoicePrediction {
    pub line: usize,
    pub gold: usize,
    pub pred: usize,
    /// Mean per-token NLL (nats) of each option.
    pub nll: Vec<f64>,
}

/// Accuracy (and macro-F1 for class-label tasks) over one file (`results.json`:
/// `text[..].choice.<set>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChoiceResult {
    pub file: String,
    pub rows: usize,
    pub accuracy: f64,
    /// Present when every row has the same option list (the options are class labels).
    pub macro_f1: Option<f64>,
    pub classes: Option<Vec<String>>,
    /// Rows whose input lost tokens on the left to fit the model's context.
    pub truncated: usize,
    /// Spread of the gold option's mean NLL over rows.
    pub gold_nll: Option<Distribution>,
    pub predictions: Vec<ChoicePrediction>,
}

/// Scores every option of every row (`rows_per_forward` option rows at a time, each distinct
/// input run once per forward) and summarizes. `max_len` is the model's context; `on_batch`
/// runs after each forward.
pub fn evaluate(
    decoder: &Decoder,
    tok: &Tokenizer,
    file: &str,
    rows: &[ChoiceRow],
    (max_len, rows_per_forward): (usize, usize),
    on_batch: &mut dyn FnMut() -> Result<()>,
) -> Result<ChoiceResult> {
    let decoder = &decoder.detached();
    let bos = super::bos_prefix(tok)?;
    let mut pairs: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    let mut truncated = 0usize;
    for r in rows {
        let mut cut = false;
        for o in &r.options {
            let (mut prompt, cont) = split_tokens(tok, bos, &r.input, o)?;
            if cont.is_empty() {
                bail!("{file}:{}: option {o:?} adds no tokens after the input", r.line);
            }
            if cont.len() >= max_len {
                bail!("{file}:{}: option {o:?} is {} tokens, longer than the model's context ({max_len}) leaves room for", r.line, cont.len());
            }
            if prompt.len() + cont.len() > max_len {
                prompt.drain(..prompt.len() + cont.len() - max_len);
                cut = true;
            }
            if prompt.is_empty() {
                bail!("{file}:{}: the input is empty and the tokenizer adds no BOS, so the option's first token has nothing to be conditioned on", r.line);
            }
            pairs.push((prompt, cont));
        }
        truncated += usize::from(cut);
    }
    let mut nll = Vec::with_capacity(pairs.len());
    let (prompts, conts): (Vec<Vec<u32>>, Vec<Vec<u32>>) = pairs.into_iter().unzip();
    let step = rows_per_forward.max(1);
    for start in (0..prompts.len()).step_by(step) {
        let range = start..(start + step).min(prompts.len());
        let p = prompts[range.clone()].iter().map(Vec::len).max().unwrap_or(1);
        let t = conts[range.clone()].iter().map(Vec::len).max().unwrap_or(1);
        let s = score_shared_prompts(decoder, (&prompts, &conts), range.clone(), (p, t), 0, 1.0, Mode::Infer)?;
        let logp = (s.logp * &s.mask)?.to_vec2::<f32>()?;
        for (lp, cont) in logp.iter().zip(&conts[range]) {
            nll.push(-lp.iter().map(|&x| x as f64).sum::<f64>() / cont.len() as f64);
        }
        on_batch()?;
    }
    let mut scores = nll.into_iter();
    let predictions: Vec<ChoicePrediction> = rows
        .iter()
        .map(|r| {
            let nll: Vec<f64> = scores.by_ref().take(r.options.len()).collect();
            ChoicePrediction { line: r.line, gold: r.gold, pred: argmin(&nll), nll }
        })
        .collect();
    Ok(summarize(file, rows, predictions, truncated))
}

/// Accuracy, macro-F1 (class-label tasks) and the gold NLL spread of scored rows.
pub fn summarize(file: &str, rows: &[ChoiceRow], predictions: Vec<ChoicePrediction>, truncated: usize) -> ChoiceResult {
    let correct = predictions.iter().filter(|p| p.pred == p.gold).count();
    let classes = class_labels(rows);
    let gold: Vec<usize> = predictions.iter().map(|p| p.gold).collect();
    let pred: Vec<usize> = predictions.iter().map(|p| p.pred).collect();
    let gold_nll: Vec<f64> = predictions.iter().map(|p| p.nll[p.gold]).collect();
    ChoiceResult {
        file: file.to_string(),
        rows: predictions.len(),
        accuracy: correct as f64 / predictions.len().max(1) as f64,
        macro_f1: classes.as_ref().map(|_| macro_f1(&gold, &pred)),
        classes,
        truncated,
        gold_nll: super::distribution(&gold_nll),
        predictions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("task.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_rows_are_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = "{\"input\": \"q\", \"options\": [\"a\", \"b\"], \"gold_index\": 1}\n";
        for (bad, want) in [
            ("{\"input\": \"q\", \"options\": [\"a\"], \"gold_index\": 1}", "task.jsonl:2: gold_index 1 is out of range for 1 option(s)"),
            ("{\"input\": \"q\", \"options\": [], \"gold_index\": 0}", "task.jsonl:2: `options` is empty"),
            ("{\"input\": \"q\", \"options\": [\"a\"]}", "task.jsonl:2: missing key `gold_index`"),
            ("{\"options\": [\"a\"], \"gold_index\": 0}", "task.jsonl:2: missing key `input`"),
            ("{\"input\": \"q\", \"gold_index\": 0}", "task.jsonl:2: missing key `options`"),
            ("{\"input\": \"q\", \"options\": [\"a\"], \"gold_index\": -1}", "task.jsonl:2: `gold_index` must be a non-negative integer"),
            ("{\"input\": \"q\", \"options\": [\"a\", 2], \"gold_index\": 0}", "task.jsonl:2: every entry of `options` must be a string"),
            ("not json", "task.jsonl:2: not a JSON object"),
        ] {
            let p = write(dir.path(), &format!("{good}{bad}\n"));
            let err = format!("{:#}", read_rows(&p).unwrap_err());
            assert!(err.contains(want), "{bad}: {err}");
        }
        let p = write(dir.path(), &format!("{good}\n{good}"));
        let rows = read_rows(&p).unwrap();
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(rows[0], ChoiceRow { line: 1, input: "q".into(), options: vec!["a".into(), "b".into()], gold: 1 });
        assert!(read_rows(&write(dir.path(), "\n")).unwrap_err().to_string().contains("no rows"));
    }

    #[test]
    fn argmin_breaks_ties_toward_the_lowest_index() {
        assert_eq!(argmin(&[2.0, 1.0, 1.0, 3.0]), 1);
        assert_eq!(argmin(&[1.0, 1.0]), 0);
        assert_eq!(argmin(&[f64::NAN, 5.0, 4.0]), 2);
        assert_eq!(argmin(&[7.0]), 0);
    }

    #[test]
    fn macro_f1_by_hand() {
        // Gold / predicted over classes 0, 1, 2:
        //   class 0: TP 2 (rows 0, 1), FP 1 (row 4), FN 1 (row 2) → F1 = 4 / 6
        //   class 1: TP 1 (row 3), FP 1 (row 2), FN 1 (row 5)    → F1 = 2 / 4
        //   class 2: TP 0, FP 1 (row 5), FN 1 (row 4)            → F1 = 0
        let gold = [0, 0, 0, 1, 2, 1];
        let pred = [0, 0, 1, 1, 0, 2];
        let want = (4.0 / 6.0 + 0.5 + 0.0) / 3.0;
        assert!((macro_f1(&gold, &pred) - want).abs() < 1e-12, "{}", macro_f1(&gold, &pred));
        // A class never gold nor predicted does not count; perfect predictions give 1.
        assert_eq!(macro_f1(&[0, 1], &[0, 1]), 1.0);
        assert_eq!(macro_f1(&[1, 1], &[1, 1]), 1.0);
    }

    #[test]
    fn summary_counts_and_labels() {
        let row = |line, options: &[&str], gold| ChoiceRow { line, input: "q".into(), options: options.iter().map(|s| s.to_string()).collect(), gold };
        let rows = vec![row(1, &["yes", "no"], 0), row(2, &["yes", "no"], 1), row(3, &["yes", "no"], 1)];
        let preds = vec![
            ChoicePrediction { line: 1, gold: 0, pred: 0, nll: vec![1.0, 2.0] },
            ChoicePrediction { line: 2, gold: 1, pred: 0, nll: vec![1.0, 3.0] },
            ChoicePrediction { line: 3, gold: 1, pred: 1, nll: vec![2.0, 0.5] },
        ];
        let r = summarize("f", &rows, preds.clone(), 0);
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.classes, Some(vec!["yes".to_string(), "no".to_string()]));
        // yes: TP 1 FP 1 FN 0 → 2/3; no: TP 1 FP 0 FN 1 → 2/3.
        assert!((r.macro_f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        let mixed = vec![row(1, &["yes", "no"], 0), row(2, &["a", "b"], 1), row(3, &["yes", "no"], 1)];
        let r = summarize("f", &mixed, preds, 0);
        assert_eq!((r.macro_f1, r.classes), (None, None));
    }
}
