//! Text evaluation: perplexity on held-out text ([`ppl`]) and multiple-choice accuracy by
//! option scoring ([`choice`]), for the eval stage's `ppl` / `choice` keys and `retort eval
//! --ppl / --choice`. Nothing is sampled: every number comes from teacher-forced log-probs.
//!
//! A set is named by its file's stem (`held.jsonl` → `held`, repeats get "-2", "-3").

pub mod choice;
pub mod documents;
pub mod ppl;

use crate::eval::run::EvalModel;
use anyhow::{bail, Context, Result};
use choice::{ChoiceResult, ChoiceRow};
use ppl::{PplConfig, PplResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The BOS id the tokenizer puts in front of a text when asked to add special tokens, if any
/// (found by encoding a probe text with and without them, so it follows the tokenizer's own
/// post-processor rather than the mere presence of a `bos_token`).
pub fn bos_prefix(tok: &crate::text::Tokenizer) -> Result<Option<u32>> {
    let with = tok.encode("a", true)?;
    let without = tok.encode("a", false)?;
    Ok(match (with.first(), without.first()) {
        (Some(&b), first) if with.len() > without.len() && first != Some(&b) => Some(b),
        _ => None,
    })
}

/// Five quantiles and the mean of a sample. Quantiles interpolate linearly between the
/// closest ranks (numpy's default: the q-quantile sits at rank q·(n − 1) of the sorted values).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: usize,
    pub p10: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub p90: f64,
    pub mean: f64,
}

/// The [`Distribution`] of `values` (None when empty; NaNs sort last).
pub fn distribution(values: &[f64]) -> Option<Distribution> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| {
        let rank = q * (v.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
    };
    Some(Distribution {
        count: v.len(),
        p10: q(0.10),
        p25: q(0.25),
        median: q(0.5),
        p75: q(0.75),
        p90: q(0.90),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    })
}

/// What to read and how to window it, shared by the stage and the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// JSONL key of the text in `ppl` files.
    pub text_key: String,
    /// Window length for perplexity (tokens); None = the model's context, at most
    /// [`DEFAULT_MAX_LEN`]. Choice rows always fit the model's whole context.
    pub max_len: Option<usize>,
    /// Window stride; None = half the window.
    pub stride: Option<usize>,
    /// Windows (perplexity) or option rows (choice) per forward.
    pub batch_size: usize,
}

/// The longest default perplexity window: enough context for a small model's NLL to settle,
/// small enough that a batch of windows fits memory on a workstation.
pub const DEFAULT_MAX_LEN: usize = 1024;

impl TextConfig {
    /// The perplexity windows for a model with context `context`.
    pub fn ppl_config(&self, context: usize) -> PplConfig {
        let max_len = self.max_len.unwrap_or(context.min(DEFAULT_MAX_LEN)).min(context);
        PplConfig { max_len, stride: self.stride.unwrap_or((max_len / 2).max(1)).min(max_len), batch_size: self.batch_size }
    }
}

/// The text sets of one evaluation: names (file stems) and files, choice rows read and checked.
pub struct TextSets {
    pub ppl: Vec<(String, PathBuf)>,
    pub choice: Vec<(String, PathBuf, Vec<ChoiceRow>)>,
}

impl TextSets {
    /// Reads and checks every file before any model is loaded: choice rows fully, `ppl`
    /// documents by one pass of the reader (a bad line is reported now, not mid-run).
    pub fn open(ppl: &[PathBuf], choice: &[PathBuf], text_key: &str) -> Result<TextSets> {
        let mut names = Vec::new();
        let mut name = |p: &Path| {
            let base = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
            let mut n = base.clone();
            let mut i = 2;
            while names.contains(&n) {
                n = format!("{base}-{i}");
                i += 1;
            }
            names.push(n.clone());
            n
        };
        let mut out = TextSets { ppl: Vec::new(), choice: Vec::new() };
        for p in ppl {
            let mut count = 0usize;
            for doc in documents::documents(p, text_key)? {
                doc?;
                count += 1;
            }
            // An empty file would give a perplexity of NaN (null in results.json), not an error.
            if count == 0 {
                bail!("{}: no documents; each line must be {{\"{text_key}\": \"...\"}}", p.display());
            }
            out.ppl.push((name(p), p.clone()));
        }
        for p in choice {
            let rows = choice::read_rows(p)?;
            out.choice.push((name(p), p.clone(), rows));
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.ppl.is_empty() && self.choice.is_empty()
    }
}

/// One model's text results (`results.json`: an entry of `text`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextResult {
    pub label: String,
    pub model: String,
    /// Per set (file stem).
    pub ppl: BTreeMap<String, PplResult>,
    pub choice: BTreeMap<String, ChoiceResult>,
}

/// Every text set on one model. `on_batch` runs after each forward (`Err` stops);
/// `log` gets one line per finished set.
pub fn evaluate(
    m: &EvalModel,
    label: &str,
    model: &str,
    sets: &TextSets,
    cfg: &TextConfig,
    on_batch: &mut dyn FnMut() -> Result<()>,
    log: &mut dyn FnMut(String),
) -> Result<TextResult> {
    let context = m.model.decoder.config().max_position_embeddings;
    let bos = bos_prefix(&m.tok)?;
    let mut out = TextResult { label: label.to_string(), model: model.to_string(), ppl: BTreeMap::new(), choice: BTreeMap::new() };
    for (set, path) in &sets.ppl {
        let pc = cfg.ppl_config(context);
        let tokens = documents::documents(path, &cfg.text_key)?.map(|d| {
            let (origin, text) = d?;
            let mut ids: Vec<u32> = bos.into_iter().collect();
            ids.extend(m.tok.encode(&text, false).with_context(|| format!("{origin}: cannot tokenize the text"))?);
            Ok(ids)
        });
        let per_doc = ppl::perplexity(&m.model.decoder, tokens, &pc, on_batch)?;
        if per_doc.iter().all(|d| d.1 == 0) {
            // A perplexity of nothing would be NaN (null in results.json): say why instead.
            anyhow::bail!(
                "{}: no token could be scored: every document is at most one token long and {label}'s tokenizer adds no BOS to predict the first from; give longer documents",
                path.display()
            );
        }
        let r = ppl::summarize(&path.display().to_string(), &per_doc, &pc, bos.is_some());
        log(format!("{label}: {set}: perplexity {:.3} over {} tokens in {} documents", r.ppl, r.tokens, r.documents));
        out.ppl.insert(set.clone(), r);
    }
    for (set, path, rows) in &sets.choice {
        let r = choice::evaluate(&m.model.decoder, &m.tok, &path.display().to_string(), rows, (context, cfg.batch_size), on_batch)?;
        log(format!("{label}: {set}: accuracy {:.3} over {} rows", r.accuracy, r.rows));
        out.choice.insert(set.clone(), r);
    }
    Ok(out)
}

/// Summary keys of one model's text results: `ppl/<set>`, `acc/<set>`, `macro_f1/<set>`.
pub fn headline(r: &TextResult) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (set, p) in &r.ppl {
        out.insert(format!("ppl/{set}"), p.ppl);
    }
    for (set, c) in &r.choice {
        out.insert(format!("acc/{set}"), c.accuracy);
        if let Some(f) = c.macro_f1 {
            out.insert(format!("macro_f1/{set}"), f);
        }
    }
    out
}

/// One row per model, one column per summary key (the union over models; "-" where a model
/// has none).
pub fn table(results: &[TextResult]) -> String {
    headline_table(&results.iter().map(|r| (r.label.as_str(), headline(r))).collect::<Vec<_>>())
}

/// A row per (label, summary keys), a column per key (the union; "-" where a row has none).
pub fn headline_table(rows: &[(&str, BTreeMap<String, f64>)]) -> String {
    let mut keys: Vec<String> = Vec::new();
    for (_, h) in rows {
        for k in h.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(5).max(5) + 2;
    let widths: Vec<usize> = keys.iter().map(|k| k.len().max(8) + 2).collect();
    let mut lines = vec![format!("{:<label_width$}{}", "model", keys.iter().zip(&widths).map(|(k, w)| format!("{k:>w$}")).collect::<String>())];
    for (label, h) in rows {
        let cells: String = keys
            .iter()
            .zip(&widths)
            .map(|(k, w)| format!("{:>w$}", h.get(k).map_or("-".to_string(), |v| format!("{v:.3}"))))
            .collect();
        lines.push(format!("{label:<label_width$}{cells}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        // Sorted 1, 2, 3, 4, 10: rank q·4. p10 → 1.4, p25 → 2, median 3, p75 4, p90 → 4 + 0.6·6.
        let d = distribution(&[10.0, 3.0, 1.0, 4.0, 2.0]).unwrap();
        let want = [1.4, 2.0, 3.0, 4.0, 7.6, 4.0];
        let got = [d.p10, d.p25, d.median, d.p75, d.p90, d.mean];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(distribution(&[5.0]).unwrap().p10, 5.0);
        assert!(distribution(&[]).is_none());
    }

    #[test]
    fn windows_default_to_the_context_and_half_strides() {
        let cfg = TextConfig { text_key: "text".into(), max_len: None, stride: None, batch_size: 4 };
        assert_eq!(cfg.ppl_config(256), PplConfig { max_len: 256, stride: 128, batch_size: 4 });
        assert_eq!(cfg.ppl_config(32768).max_len, DEFAULT_MAX_LEN);
        let set = TextConfig { max_len: Some(4096), stride: Some(100), ..cfg };
        assert_eq!(set.ppl_config(256), PplConfig { max_len: 256, stride: 100, batch_size: 4 });
    }

    #[test]
    fn table_has_a_row_per_model_and_a_column_per_key() {
        let mk = |label: &str, ppl: f64| TextResult {
            label: label.into(),
            model: label.into(),
            ppl: [("held".to_string(), ppl::summarize("f", &[(ppl.ln() * 2.0, 2)], &PplConfig { max_len: 4, stride: 2, batch_size: 1 }, false))].into(),
            choice: BTreeMap::new(),
        };
        let t = table(&[mk("base", 3.0), mk("sft", 2.0)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].contains("ppl/held"), "{t}");
        assert!(lines[1].starts_with("base") && lines[1].ends_with("3.000"), "{t}");
        assert!(lines[2].starts_with("sft") && lines[2].ends_with("2.000"), "{t}");
    }
}
