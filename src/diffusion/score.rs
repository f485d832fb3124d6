//! OOD scoring of texts (research/synth-spec.md §5.4): each text's score is its L_round at a
//! fixed timestep, from one noise draw seeded by (seed, set, line), special tokens included.
//! Batched: texts are grouped by length and padding is masked, so a text's score is the
//! score it gets alone (the reference scores one text at a time) whatever its batch.
//!
//! Text sets are JSONL (§5.7): `{"text": …}` with optional `"source"` and `"ood"`; a line
//! that does not parse, lacks `text`, or is longer than the model's position table is an
//! error naming the file and line.

use super::loss::{denoise, loss_terms, DenoiseBatch, Padding};
use super::schedule::NoiseSchedule;
use crate::model::encoder::{pool, Encoder, Pooling};
use crate::rng::Rng;
use crate::text::Tokenizer;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One text of a scoring set.
#[derive(Clone, Debug)]
pub struct TextRow {
    /// 1-based line in its file.
    pub line: usize,
    pub text: String,
    pub source: Option<String>,
}

/// A JSONL file of texts.
#[derive(Clone, Debug)]
pub struct TextSet {
    pub path: PathBuf,
    /// `source` of the first row, else the file stem: the set's name in tables.
    pub name: String,
    pub rows: Vec<TextRow>,
}

impl TextSet {
    /// Reads `{"text", "source"?, ...}` rows; an empty file is an error (nothing to score).
    pub fn read(path: &Path) -> Result<TextSet> {
        let mut rows = Vec::new();
        for item in crate::text::jsonl::open(path)? {
            let (line, raw) = item?;
            let v: serde_json::Value =
                serde_json::from_str(&raw).with_context(|| format!("{}:{line}: not a JSON object", path.display()))?;
            let Some(text) = v.get("text").and_then(|t| t.as_str()) else {
                bail!("{}:{line}: the row has no string `text` (scoring sets are JSONL rows {{\"text\": …, \"source\": …}})", path.display());
            };
            let source = v.get("source").and_then(|s| s.as_str()).map(str::to_string);
            rows.push(TextRow { line, text: text.to_string(), source });
        }
        if rows.is_empty() {
            bail!("{}: no texts (an empty set cannot be scored)", path.display());
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "set".into());
        let name = rows[0].source.clone().unwrap_or(stem);
        Ok(TextSet { path: path.to_path_buf(), name, rows })
    }

    /// Token ids of every row with the special tokens. A row longer than `max_tokens` is an
    /// error naming its line, unless `truncate` (the reference truncates to 512 silently).
    pub fn tokenize(&self, tok: &Tokenizer, max_tokens: usize, truncate: bool) -> Result<Vec<Vec<u32>>> {
        self.rows
            .iter()
            .map(|r| {
                let mut ids = tok.encode(&r.text, true).with_context(|| format!("{}:{}", self.path.display(), r.line))?;
                if ids.len() > max_tokens {
                    if !truncate {
                        bail!(
                            "{}:{}: the text is {} tokens, longer than the model's {} positions; shorten it or pass --truncate",
                            self.path.display(),
                            r.line,
                            ids.len(),
                            max_tokens
                        );
                    }
                    // Keep the closing special token, as a tokenizer's truncation does.
                    let last = *ids.last().unwrap_or(&0);
                    ids.truncate(max_tokens);
                    if let Some(end) = ids.last_mut() {
                        *end = last;
                    }
                }
                if ids.is_empty() {
                    bail!("{}:{}: the text has no tokens", self.path.display(), r.line);
                }
                Ok(ids)
            })
            .collect()
    }
}

/// How texts are scored.
#[derive(Clone, Copy, Debug)]
pub struct ScoreOptions {
    pub t: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Also return the Mahalanobis feature: the mean over tokens of `hidden_states[-2]`.
    pub features: bool,
}

/// A text's reconstruction loss and, when asked, its feature.
#[derive(Clone, Debug)]
pub struct Scored {
    pub recon: f64,
    pub feature: Option<Vec<f32>>,
}

/// Scores `rows` (token ids); `label` names the set in the noise seed, so the same text in
/// the same set gets the same noise in every run, whatever else is scored.
pub fn score_rows(enc: &Encoder, schedule: &NoiseSchedule, rows: &[Vec<u32>], pad: u32, label: &str, opts: &ScoreOptions) -> Result<Vec<Scored>> {
    schedule.check(opts.t)?;
    // Similar lengths together: less padding, the same scores (padding is masked).
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].len());
    let mut out: Vec<Option<Scored>> = vec![None; rows.len()];
    let last = schedule.sqrt_alpha_bar(schedule.steps() - 1);
    for chunk in order.chunks(opts.batch_size.max(1)) {
        let batch_rows: Vec<Vec<u32>> = chunk.iter().map(|&i| rows[i].clone()).collect();
        let batch = DenoiseBatch::new(&batch_rows, pad, pad, Padding::Masked, enc.device())?;
        let noise = super::loss::row_noise(
            &batch.lengths,
            batch.width(),
            enc.hidden_size(),
            |r| Rng::derive(opts.seed, &format!("ood-noise/{label}/{}", chunk[r])),
            enc.device(),
        )?;
        let t = vec![opts.t; chunk.len()];
        let d = denoise(enc, schedule, &batch, &t, &noise)?;
        let logits = enc.mlm_logits(&d.x0_hat)?;
        let losses = loss_terms(&d.x0, &d.x0_hat, &logits, &batch, last)?;
        let recon = losses.round_per_row.to_vec1::<f32>()?;
        let features = if opts.features {
            Some(pool(&d.second_last, &batch.attention, Pooling::Mean)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
        } else {
            None
        };
        for (k, &i) in chunk.iter().enumerate() {
            out[i] = Some(Scored { recon: recon[k] as f64, feature: features.as_ref().map(|f| f[k].clone()) });
        }
    }
    out.into_iter().map(|s| s.context("internal: a text was not scored")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, "{\"text\": \"hi\", \"source\": \"sst2\"}\n\n{\"txt\": 1}\n").unwrap();
        let err = TextSet::read(&p).unwrap_err().to_string();
        assert!(err.contains("a.jsonl:3") && err.contains("`text`"), "{err}");
        std::fs::write(&p, "\n").unwrap();
        assert!(TextSet::read(&p).unwrap_err().to_string().contains("no texts"));
        std::fs::write(&p, "{\"text\": \"hi\", \"source\": \"sst2\"}\n").unwrap();
        let s = TextSet::read(&p).unwrap();
        assert_eq!((s.name.as_str(), s.rows[0].line), ("sst2", 1));
    }
}
