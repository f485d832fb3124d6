//! The eval stage's `images` sets: questions about images answered by a vision-language model
//! with greedy decoding, scored per row, as AdaMLLM's benchmarks score them (synth-spec §2.5).
//!
//! ```toml
//! images = [
//!   { file = "slake_open.jsonl", metric = "recall" },    # open VQA: recall of the gold words
//!   { file = "slake_closed.jsonl" },                     # metric = "exact" (the default)
//!   { file = "pmc_vqa.jsonl", metric = "choice" },       # rows carry "options"
//!   { file = "recipes.jsonl", metric = "rouge_l", chat = false },
//! ]
//! image_batch_size = 4     # rows generated at once
//! max_new_tokens = 24      # the stage's key
//! ```
//!
//! Rows are `{"images": ["img/1.png"], "prompt": "...", "answer": "..."}` (image paths relative
//! to the JSONL file; `<image>` markers in the prompt say where each image goes, else the
//! images come first), plus `"options": [...]` for `choice` (the answer is an option's letter
//! or text). The metrics: `exact` (SQuAD-normalised equality, [`answer_match::exact_match`]),
//! `math` (the math verifier), `choice` (the option the response names, by letter or text,
//! is the gold one), `recall` and `rouge_l` ([`open_answer`]). Every row's outcome records all
//! three text scores beside the set's metric. A set is named by its file stem.

use crate::generate::{vision::generate_with_images, FinishReason, SamplingParams};
use crate::metrics::{answer_match, open_answer};
use crate::model::vision::{load_and_preprocess, prompt, ImagePatches, Qwen2Vl};
use crate::rng::Rng;
use crate::text::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a set's responses are scored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageMetric {
    #[default]
    Exact,
    Math,
    Choice,
    Recall,
    RougeL,
}

impl ImageMetric {
    /// The summary key's prefix: accuracy for the verdicts, the metric's name otherwise.
    pub fn key(self) -> &'static str {
        match self {
            ImageMetric::Exact | ImageMetric::Math | ImageMetric::Choice => "acc",
            ImageMetric::Recall => "recall",
            ImageMetric::RougeL => "rouge_l",
        }
    }
}

fn d_true() -> bool {
    true
}

/// One entry of the eval stage's `images` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSetSpec {
    /// A JSONL of rows (or `@stage/file`).
    pub file: String,
    #[serde(default)]
    pub metric: ImageMetric,
    /// Render the prompt as a user turn with the model's chat template.
    #[serde(default = "d_true")]
    pub chat: bool,
}

/// One checked row.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    pub line: usize,
    /// As written in the file, and resolved against the file's folder.
    pub images: Vec<(String, PathBuf)>,
    pub prompt: String,
    pub answer: String,
    pub options: Vec<String>,
    /// For `choice`: the gold option.
    pub gold_index: Option<usize>,
}

const ROW_FORMAT: &str = "{\"images\": [\"path.png\"], \"prompt\": \"...\", \"answer\": \"...\"}";

/// The index of the option `answer` names: its letter ("B", "(B)", "B.") or its text.
pub fn option_named(answer: &str, options: &[String]) -> Option<usize> {
    let t = answer.trim();
    let t = t.strip_prefix('(').unwrap_or(t);
    let mut chars = t.chars();
    if let Some(c) = chars.next().filter(char::is_ascii_uppercase) {
        let after = chars.next();
        let i = (c as u8 - b'A') as usize;
        if i < options.len() && after.is_none_or(|a| !a.is_alphanumeric()) {
            return Some(i);
        }
    }
    let norm = answer_match::normalize(answer);
    if let Some(i) = options.iter().position(|o| answer_match::normalize(o) == norm) {
        return Some(i);
    }
    // A sentence naming exactly one option's text.
    let named: Vec<usize> = (0..options.len())
        .filter(|&i| {
            let o = answer_match::normalize(&options[i]);
            !o.is_empty() && format!(" {norm} ").contains(&format!(" {o} "))
        })
        .collect();
    (named.len() == 1).then(|| named[0])
}

/// Reads and checks every row of `path`: keys and types, every image present with a readable
/// header, `options` and a gold option for `choice`. Errors name the file and line.
pub fn read_rows(path: &Path, metric: ImageMetric) -> Result<Vec<ImageRow>> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for item in crate::text::jsonl::open(path)? {
        let (line, text) = item?;
        let at = format!("{}:{line}", path.display());
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{at}: not a JSON object; each line must be {ROW_FORMAT}"))?;
        let string = |key: &str| -> Result<String> {
            match v.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => bail!("{at}: `{key}` must be a string, not {other}"),
                None => bail!("{at}: missing key `{key}`; each line must be {ROW_FORMAT}"),
            }
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            match v.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(xs)) => xs
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).with_context(|| format!("{at}: every entry of `{key}` must be a string")))
                    .collect(),
                Some(other) => bail!("{at}: `{key}` must be a list of strings, not {other}"),
            }
        };
        let (prompt_text, answer, listed, options) = (string("prompt")?, string("answer")?, strings("images")?, strings("options")?);
        let markers = prompt::count_markers(&prompt_text);
        if markers != 0 && markers != listed.len() {
            bail!("{at}: the prompt has {markers} <image> marker(s) but {} image(s) are listed", listed.len());
        }
        let mut images = Vec::new();
        for p in listed {
            let full = base.join(&p);
            check_image(&full).with_context(|| format!("{at}: image `{p}`"))?;
            images.push((p, full));
        }
        let gold_index = if metric == ImageMetric::Choice {
            if options.is_empty() {
                bail!("{at}: metric \"choice\" needs `options`: [\"...\", ...] on every row");
            }
            Some(option_named(&answer, &options).with_context(|| {
                format!("{at}: the answer {answer:?} names none of the {} option(s) (give its letter, A = the first, or its text)", options.len())
            })?)
        } else {
            None
        };
        rows.push(ImageRow { line, images, prompt: prompt_text, answer, options, gold_index });
    }
    if rows.is_empty() {
        bail!("{}: no rows; each line must be {ROW_FORMAT}", path.display());
    }
    Ok(rows)
}

/// The file is there, not empty, and its header decodes (the pixels are decoded at run time).
fn check_image(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() == 0 {
        bail!("{} is empty (0 bytes)", path.display());
    }
    image::io::Reader::open(path)
        .and_then(|r| r.with_guessed_format())
        .with_context(|| format!("cannot read {}", path.display()))?
        .into_dimensions()
        .map_err(|e| anyhow::anyhow!("{} is not a readable image ({e}); PNG, JPEG and WebP are supported", path.display()))?;
    Ok(())
}

/// A row's scores: the set's metric and the three text scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowScores {
    pub score: f64,
    pub exact: f64,
    pub recall: f64,
    pub rouge_l: f64,
}

pub fn score_row(metric: ImageMetric, row: &ImageRow, response: &str) -> RowScores {
    let exact = answer_match::exact_match(response, &row.answer);
    let recall = open_answer::recall(response, &row.answer);
    let rouge_l = open_answer::rouge_l(response, &row.answer);
    let score = match metric {
        ImageMetric::Exact => exact,
        ImageMetric::Recall => recall,
        ImageMetric::RougeL => rouge_l,
        ImageMetric::Math => {
            let v = crate::tasks::math::verify_math(response, &row.answer, &crate::tasks::math::MathOptions::default());
            f64::from(u8::from(v.correct))
        }
        ImageMetric::Choice => f64::from(u8::from(row.gold_index.is_some() && option_named(response, &row.options) == row.gold_index)),
    };
    RowScores { score, exact, recall, rouge_l }
}

/// The image sets of one evaluation, read and checked before any model loads.
pub struct ImageSets {
    pub sets: Vec<(String, PathBuf, ImageSetSpec, Vec<ImageRow>)>,
}

impl ImageSets {
    /// `files[i]` is `specs[i].file` resolved.
    pub fn open(specs: &[ImageSetSpec], files: &[PathBuf]) -> Result<ImageSets> {
        let mut sets: Vec<(String, PathBuf, ImageSetSpec, Vec<ImageRow>)> = Vec::new();
        for (spec, path) in specs.iter().zip(files) {
            let base = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
            let mut name = base.clone();
            let mut i = 2;
            while sets.iter().any(|s| s.0 == name) {
                name = format!("{base}-{i}");
                i += 1;
            }
            let rows = read_rows(path, spec.metric)?;
            sets.push((name, path.clone(), spec.clone(), rows));
        }
        Ok(ImageSets { sets })
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

/// A vision-language model with its tokenizer, as the image sets use it. Everything specific
/// to one model family is in [`VisionModel::load`] and [`VisionModel::answer`].
pub struct VisionModel {
    pub model: Qwen2Vl,
    pub tok: Tokenizer,
}

impl VisionModel {
    /// Frozen weights (f32 on the CPU, bf16 on a GPU) and the tokenizer with the model's eos ids.
    pub fn load(dir: &Path, device: &Device) -> Result<VisionModel> {
        let dtype: DType = crate::device::resolve_dtype(None, device);
        let model = Qwen2Vl::load(dir, device, dtype, false).with_context(|| format!("loading the vision-language model in {}", dir.display()))?;
        let eos = crate::text::model_eos_ids(dir)?;
        let tok = Tokenizer::load(dir)?.with_model_eos(&eos);
        Ok(VisionModel { model, tok })
    }

    /// Greedy answers of a batch of rows: (response text, new tokens, finish reason) each.
    pub fn answer(&self, rows: &[&ImageRow], at: &str, chat: bool, max_new_tokens: usize) -> Result<Vec<(String, usize, FinishReason)>> {
        let merge = self.model.config.vision.spatial_merge_size;
        let mut prompts = Vec::with_capacity(rows.len());
        let mut images: Vec<Vec<ImagePatches>> = Vec::with_capacity(rows.len());
        for row in rows {
            let here = || format!("{at}:{}", row.line);
            let patches = row
                .images
                .iter()
                .map(|(_, p)| load_and_preprocess(p, &self.model.processor))
                .collect::<std::result::Result<Vec<_>, _>>()
                .with_context(here)?;
            let counts: Vec<usize> = patches.iter().map(|im| im.tokens(merge)).collect();
            let ids = prompt::prompt_with_images(&self.tok, &self.model.config, &row.prompt, &counts, chat).map_err(|e| anyhow::anyhow!("{}: {e}", here()))?;
            prompts.push(ids);
            images.push(patches);
        }
        let context = self.model.config.text.max_position_embeddings;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest >= context {
            bail!("{at}: a prompt with its images is {longest} tokens, not shorter than the model's context of {context}");
        }
        let params = SamplingParams {
            greedy: true,
            max_new_tokens: max_new_tokens.min(context - longest),
            // A chat answer is one assistant turn: it ends at the turn's end too.
            stop_token_ids: if chat { self.tok.chat_stop_ids() } else { self.tok.eos_ids() },
            ..SamplingParams::default()
        };
        // Greedy decoding draws nothing; the generator takes an rng all the same.
        let mut rng = Rng::new(0);
        let out = generate_with_images(&self.model, &prompts, &images, &params, &mut rng, None)?;
        out.into_iter().map(|c| Ok((self.tok.decode(&c.tokens, true)?.trim().to_string(), c.tokens.len(), c.finish))).collect()
    }
}

/// One set's result on one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSetResult {
    pub file: String,
    pub metric: ImageMetric,
    pub rows: usize,
    /// The mean of the set's metric.
    pub score: f64,
    pub exact: f64,
    pub recall: f64,
    pub rouge_l: f64,
    pub mean_new_tokens: f64,
    /// Responses cut by `max_new_tokens`.
    pub truncated: usize,
}

/// One model's image results (`results.json`: an entry of `images`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    pub label: String,
    pub model: String,
    pub sets: BTreeMap<String, ImageSetResult>,
}

/// Every image set on one model; one JSON object a row is appended to `outcomes` (the
/// per-row file). `on_batch` runs after each batch (`Err` stops); `log` gets a line per set.
pub fn evaluate(
    m: &VisionModel,
    label: &str,
    model: &str,
    sets: &ImageSets,
    (batch_size, max_new_tokens): (usize, usize),
    outcomes: &mut Vec<Value>,
    on_batch: &mut dyn FnMut(usize) -> Result<()>,
    log: &mut dyn FnMut(String),
) -> Result<ImageResult> {
    let mut out = ImageResult { label: label.to_string(), model: model.to_string(), sets: BTreeMap::new() };
    for (name, path, spec, rows) in &sets.sets {
        let at = path.display().to_string();
        let mut sums = [0.0f64; 4];
        let (mut tokens, mut truncated) = (0usize, 0usize);
        for chunk in rows.chunks(batch_size.max(1)) {
            let refs: Vec<&ImageRow> = chunk.iter().collect();
            let answers = m.answer(&refs, &at, spec.chat, max_new_tokens)?;
            for (row, (response, n, finish)) in chunk.iter().zip(answers) {
                let s = score_row(spec.metric, row, &response);
                for (acc, x) in sums.iter_mut().zip([s.score, s.exact, s.recall, s.rouge_l]) {
                    *acc += x;
                }
                tokens += n;
                truncated += usize::from(finish == FinishReason::Length);
                outcomes.push(serde_json::json!({
                    "set": name, "line": row.line, "images": row.images.iter().map(|(p, _)| p).collect::<Vec<_>>(),
                    "prompt": row.prompt, "answer": row.answer, "response": response, "metric": spec.metric,
                    "score": s.score, "exact": s.exact, "recall": s.recall, "rouge_l": s.rouge_l,
                    "tokens": n, "finish": format!("{finish:?}").to_lowercase(),
                }));
            }
            on_batch(chunk.len())?;
        }
        let n = rows.len() as f64;
        let r = ImageSetResult {
            file: at,
            metric: spec.metric,
            rows: rows.len(),
            score: sums[0] / n,
            exact: sums[1] / n,
            recall: sums[2] / n,
            rouge_l: sums[3] / n,
            mean_new_tokens: tokens as f64 / n,
            truncated,
        };
        log(format!("{label}: {name}: {} {:.3} over {} rows ({truncated} cut at max_new_tokens)", spec.metric.key(), r.score, r.rows));
        out.sets.insert(name.clone(), r);
    }
    Ok(out)
}

/// Summary keys of one model's image results: `<acc|recall|rouge_l>/<set>`.
pub fn headline(r: &ImageResult) -> BTreeMap<String, f64> {
    r.sets.iter().map(|(set, s)| (format!("{}/{set}", s.metric.key()), s.score)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_named_by_letter_or_text() {
        let o = opts(&["CT", "MRI", "X-ray"]);
        assert_eq!(option_named("B", &o), Some(1));
        assert_eq!(option_named("(C) X-ray", &o), Some(2));
        assert_eq!(option_named("A. CT", &o), Some(0));
        assert_eq!(option_named("mri", &o), Some(1));
        assert_eq!(option_named("The image is an MRI scan.", &o), Some(1));
        // "D" is past the options; "Both" names no option; two named texts are ambiguous.
        assert_eq!(option_named("D", &o), None);
        assert_eq!(option_named("Both", &o), None);
        assert_eq!(option_named("CT or MRI", &o), None);
    }

    #[test]
    fn rows_are_checked_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        image::RgbImage::from_pixel(16, 16, image::Rgb([128, 128, 128])).save(&img).unwrap();
        std::fs::write(dir.path().join("empty.png"), b"").unwrap();
        std::fs::write(dir.path().join("text.png"), b"not an image").unwrap();
        let p = dir.path().join("vqa.jsonl");
        let good = r#"{"images": ["a.png"], "prompt": "<image>What colour?", "answer": "grey"}"#;
        std::fs::write(&p, format!("{good}\n\n{good}\n")).unwrap();
        let rows = read_rows(&p, ImageMetric::Recall).unwrap();
        assert_eq!((rows.len(), rows[1].line), (2, 3));
        assert_eq!(rows[0].images[0].1, img);
        let cases = [
            (r#"{"images": ["missing.png"], "prompt": "q", "answer": "a"}"#, "vqa.jsonl:2: image `missing.png`"),
            (r#"{"images": ["empty.png"], "prompt": "q", "answer": "a"}"#, "is empty (0 bytes)"),
            (r#"{"images": ["text.png"], "prompt": "q", "answer": "a"}"#, "is not a readable image"),
            (r#"{"images": ["a.png"], "answer": "a"}"#, "vqa.jsonl:2: missing key `prompt`"),
            (r#"{"images": "a.png", "prompt": "q", "answer": "a"}"#, "vqa.jsonl:2: `images` must be a list of strings"),
            (r#"{"images": ["a.png"], "prompt": "<image><image>q", "answer": "a"}"#, "2 <image> marker(s) but 1 image(s)"),
            ("nope", "vqa.jsonl:2: not a JSON object"),
        ];
        for (line, want) in cases {
            std::fs::write(&p, format!("{good}\n{line}\n")).unwrap();
            let err = format!("{:#}", read_rows(&p, ImageMetric::Exact).unwrap_err());
            assert!(err.contains(want), "{line}: {err}");
            assert!(err.contains("vqa.jsonl:2"), "{line}: {err}");
        }
        std::fs::write(&p, r#"{"images": ["a.png"], "prompt": "q", "answer": "E", "options": ["x", "y"]}"#).unwrap();
        let err = format!("{:#}", read_rows(&p, ImageMetric::Choice).unwrap_err());
        assert!(err.contains("vqa.jsonl:1: the answer \"E\" names none of the 2 option(s)"), "{err}");
        std::fs::write(&p, r#"{"images": ["a.png"], "prompt": "q", "answer": "y"}"#).unwrap();
        assert!(format!("{:#}", read_rows(&p, ImageMetric::Choice).unwrap_err()).contains("needs `options`"));
    }

    #[test]
    fn rows_score_by_their_set_metric() {
        let row = |answer: &str, options: &[&str]| ImageRow {
            line: 1,
            images: vec![],
            prompt: "q".into(),
            answer: answer.into(),
            options: opts(options),
            gold_index: option_named(answer, &opts(options)),
        };
        let r = row("left lung", &[]);
        // "The left lung." is an exact match once normalised (articles and punctuation dropped).
        assert_eq!(score_row(ImageMetric::Exact, &r, "The left lung.").score, 1.0);
        let s = score_row(ImageMetric::Recall, &r, "In the left lung.");
        assert_eq!((s.score, s.exact, s.recall), (1.0, 0.0, 1.0));
        // rouge-l: "in the left lung" (4 tokens) vs "left lung" (2): LCS 2 → P 1/2, R 1 → 2/3.
        assert!((s.rouge_l - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(score_row(ImageMetric::Exact, &r, "Left lung!").score, 1.0);
        assert_eq!(score_row(ImageMetric::RougeL, &r, "left lung").score, 1.0);
        let c = row("B", &["cat", "dog"]);
        assert_eq!(score_row(ImageMetric::Choice, &c, "B. dog").score, 1.0);
        // A leading "A " reads as the letter A.
        assert_eq!(score_row(ImageMetric::Choice, &c, "A dog").score, 0.0);
        assert_eq!(score_row(ImageMetric::Choice, &c, "It is a dog.").score, 1.0);
        let m = row("1/2", &[]);
        assert_eq!(score_row(ImageMetric::Math, &m, "The answer is \\boxed{0.5}").score, 1.0);
        assert_eq!(score_row(ImageMetric::Math, &m, "\\boxed{2}").score, 0.0);
    }
}
