//! The `visual-seed` synth method, AdaMLLM step (A)'s data (synth-spec §2.2): the three seed
//! files (captions, precise pairs, informative pairs; LLaMA-Factory / ShareGPT rows) joined
//! per image basename ([`super::seed::join`]), one conversation per kept image
//! ([`super::seed::synthesizer_conversation`]), one image in ten swapped for `blank.png` (a
//! white image the size of the first seed image) as a function of the image's basename, and
//! the 90/10 split. Rows are `{"messages", "images"}` with absolute image paths; train them
//! with the `sft` stage on a vision-language model and `[stage.vision] mask = "synthesizer"`
//! (the caption round masked, every later token trained, EOS included).
//!
//! Options: `captions`, `precise`, `informative` (files or `@stage/file`; required),
//! `blank_share` (0.1; 0 turns blank images off, the paper's "w/o blank image" ablation),
//! `valid_share` (0.1).

use super::seed::{basename, join, read_chat_rows, synthesizer_conversation, split_indices, ChatRow, SeedImage, BLANK_SHARE};
use crate::rng::Rng;
use crate::stage::{refs, Artifact, Reference, StageCtx};
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::Counts;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOptions {
    pub captions: String,
    pub precise: String,
    pub informative: String,
    #[serde(default = "d_blank")]
    pub blank_share: f64,
    #[serde(default = "d_valid")]
    pub valid_share: f64,
}

fn d_blank() -> f64 {
    BLANK_SHARE
}
fn d_valid() -> f64 {
    0.1
}

pub const BLANK_IMAGE: &str = "blank.png";

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    let o: SeedOptions = parse_options(options)?;
    for (k, v) in [("captions", &o.captions), ("precise", &o.precise), ("informative", &o.informative)] {
        if v.trim().is_empty() {
            return Err((k.into(), "give the seed file (LLaMA-Factory / ShareGPT rows) or `@stage/file`".into()));
        }
    }
    for (k, v) in [("blank_share", o.blank_share), ("valid_share", o.valid_share)] {
        if !(0.0..1.0).contains(&v) {
            return Err((k.into(), format!("{v} is not a share in [0, 1)")));
        }
    }
    Ok(())
}

pub fn references(options: &toml::Table) -> Vec<Reference> {
    let s = |k: &str| options.get(k).and_then(|v| v.as_str());
    refs(Artifact::Text, [("options.captions", s("captions")), ("options.precise", s("precise")), ("options.informative", s("informative"))])
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let opts: SeedOptions = parse_options(options).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    let resolve = |s: &str| if s.starts_with('@') { env.resolve(s) } else { Ok(PathBuf::from(s)) };
    Ok(Box::new(VisualSeed { files: [resolve(&opts.captions)?, resolve(&opts.precise)?, resolve(&opts.informative)?], opts }))
}

struct VisualSeed {
    opts: SeedOptions,
    files: [PathBuf; 3],
}

/// Whether the image is swapped for the blank one at this share: a pure function of its
/// basename (at the default share, exactly [`super::seed::is_blank`]).
pub fn blank_at(image: &str, share: f64) -> bool {
    if share == BLANK_SHARE {
        return super::seed::is_blank(basename(image));
    }
    Rng::derive(0, &format!("adamllm/blank/{}", basename(image))).bool(share)
}

impl Method for VisualSeed {
    fn files(&self) -> &'static [&'static str] {
        &["synthesizer.jsonl", "synthesizer_valid.jsonl", BLANK_IMAGE]
    }

    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        let [c, p, i] = &self.files;
        let read = |f: &Path, what: &str| read_chat_rows(f).with_context(|| format!("options.{what}"));
        let (seeds, left_out) = join(&read(c, "captions")?, &read(p, "precise")?, &read(i, "informative")?)?;
        anyhow::ensure!(!seeds.is_empty(), "no seed image has a caption, a precise and an informative pair ({left_out} left out)");
        let base = c.parent().unwrap_or(Path::new("."));
        let abs = |s: &SeedImage| std::path::absolute(base.join(&s.image)).unwrap_or_else(|_| base.join(&s.image));
        // The blank image is the first seed image's size.
        let first = abs(&seeds[0]);
        let (w, h) = ::image::image_dimensions(&first).with_context(|| format!("reading the seed image {}", first.display()))?;
        let blank = std::path::absolute(dir.join(BLANK_IMAGE))?;
        let png = ::image::RgbImage::from_pixel(w, h, ::image::Rgb([255, 255, 255]));
        crate::fsutil::write_atomic_with(&blank, |tmp| png.save_with_format(tmp, ::image::ImageFormat::Png)).with_context(|| format!("writing {}", blank.display()))?;
        let mut blanks = 0;
        let rows: Vec<ChatRow> = seeds
            .iter()
            .enumerate()
            .map(|(idx, s)| {
                let is_blank = blank_at(&s.image, self.opts.blank_share);
                blanks += is_blank as u64;
                let image = if is_blank { blank.clone() } else { abs(s) };
                ChatRow { messages: synthesizer_conversation(s, idx as u64), images: vec![image.to_string_lossy().into_owned()] }
            })
            .collect();
        let (train, valid) = split_indices(rows.len(), self.opts.valid_share);
        let mut counts = Counts::default();
        for (name, ids) in [("synthesizer.jsonl", &train), ("synthesizer_valid.jsonl", &valid)] {
            let text: String = ids.iter().map(|&k| -> Result<String> { Ok(format!("{}\n", serde_json::to_string(&rows[k])?)) }).collect::<Result<_>>()?;
            crate::fsutil::write_atomic(&dir.join(name), text.as_bytes())?;
            counts.rows.insert(name.into(), ids.len() as u64);
        }
        counts.tasks.insert("seed_images".into(), seeds.len() as u64);
        counts.tasks.insert("left_out".into(), left_out as u64);
        counts.tasks.insert("blank_images".into(), blanks);
        ctx.events.info(format!("{} seed conversations ({} with the blank image), {left_out} images left out", seeds.len(), blanks));
        Ok(counts)
    }
}
