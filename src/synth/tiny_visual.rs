//! The generated data of the `adamllm-tiny` experiment (synth-spec §2.8): procedural scenes
//! ([`crate::synth::visual::shapes`]) of two domains, rendered as 32 × 32 PNGs, with their
//! captions and seed questions, in the files the three AdaMLLM steps read.
//!
//! Files (JSON written atomically; images under `images/`):
//! - `seed_captions.json`, `seed_precise.json`, `seed_informative.json`: the general-domain
//!   seed data in LLaMA-Factory / ShareGPT form (one caption row per image, one row per
//!   question and answer), which [`crate::synth::visual::seed::join`] joins per image;
//! - `target_pairs.json`: the target domain's image–caption pairs (the synthesizer's input);
//! - `target_scenes.jsonl`: `{"image", "scene"}` of every target image, so a synthesized
//!   task's answer can be graded ([`crate::synth::visual::shapes::answer`]);
//! - `target_test.jsonl`: held-out target images with a templated question each,
//!   `{"images", "prompt", "answer"}` (the eval stage's image rows), and
//!   `target_captions_test.jsonl`, their captioning task in the same form;
//! - `target_test_chat.jsonl`, `target_captions_chat.jsonl`: the same two held-out sets as
//!   `{"messages", "images"}` rows, for the `sft` stage's held-out loss (`data.test_jsonl`).

use super::method::{parse_options, Method, MethodEnv};
use super::output::Counts;
use super::visual::seed::{ChatRow, DESCRIBE_HINT, IMAGE_MARKER};
use super::visual::shapes::{write_png, Domain, Scene};
use crate::rng::Rng;
use crate::stage::StageCtx;
use crate::text::Message;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyVisualConfig {
    pub seed: u64,
    /// General-domain seed images.
    pub seed_images: usize,
    /// Target-domain images to synthesize tasks for.
    pub target_images: usize,
    /// Held-out target images for evaluation.
    pub test_images: usize,
    /// Seed questions kept per general image, chosen at random (0: all). Fewer questions make
    /// shorter synthesizer conversations, which a CPU trains in minutes.
    pub seed_questions: usize,
    /// Whether captions name the shapes' colours. Without them (`false`) a colour is only in
    /// the image, so how much a synthesizer or a target reads the picture can be measured
    /// (the blank-image comparison, synth-spec §2.8 (iii)); with them every answer is in the
    /// caption and a model can ignore the image.
    pub caption_colours: bool,
}

impl Default for TinyVisualConfig {
    fn default() -> Self {
        TinyVisualConfig { seed: 0, seed_images: 400, target_images: 300, test_images: 100, seed_questions: 0, caption_colours: true }
    }
}

/// The instruction of the target domain's caption pairs (the reference's pairs carry their
/// own; the single-stage data keeps it).
pub const TARGET_INSTRUCTION: &str = "Describe the picture.";

fn row(image: &str, q: &str, a: &str) -> ChatRow {
    ChatRow { messages: vec![Message::user(format!("{IMAGE_MARKER}{q}")), Message::assistant(a)], images: vec![image.to_string()] }
}

pub fn write(dir: &Path, cfg: &TinyVisualConfig) -> Result<Vec<(String, u64)>> {
    let images = dir.join("images");
    crate::fsutil::ensure_dir(&images)?;
    let render = |name: &str, scene: &Scene| -> Result<String> {
        let rel = format!("images/{name}.png");
        write_png(&dir.join(&rel), &scene.pixels())?;
        Ok(rel)
    };
    let caption = |scene: &Scene| if cfg.caption_colours { scene.caption() } else { scene.caption_without_colours() };
    let (mut captions, mut precise, mut informative) = (Vec::new(), Vec::new(), Vec::new());
    let mut rng = Rng::derive(cfg.seed, "tiny-visual/general");
    let mut pick = Rng::derive(cfg.seed, "tiny-visual/seed-questions");
    for i in 0..cfg.seed_images {
        let scene = Scene::draw(Domain::General, &mut rng);
        let image = render(&format!("general-{i:05}"), &scene)?;
        captions.push(row(&image, &format!("\n{DESCRIBE_HINT}"), &caption(&scene)));
        let mut questions = scene.questions();
        if cfg.seed_questions > 0 && cfg.seed_questions < questions.len() {
            pick.shuffle(&mut questions);
            questions.truncate(cfg.seed_questions);
        }
        for (q, p, f) in questions {
            precise.push(row(&image, &format!("\n{q}"), &p));
            informative.push(row(&image, &format!("\n{q}"), &f));
        }
    }
    let (mut pairs, mut scenes) = (Vec::new(), String::new());
    let mut rng = Rng::derive(cfg.seed, "tiny-visual/target");
    for i in 0..cfg.target_images {
        let scene = Scene::draw(Domain::Target, &mut rng);
        let image = render(&format!("target-{i:05}"), &scene)?;
        pairs.push(row(&image, TARGET_INSTRUCTION, &caption(&scene)));
        scenes.push_str(&format!("{}\n", json!({ "image": image, "scene": scene })));
    }
    let (mut test, mut caption_test) = (String::new(), String::new());
    let (mut test_chat, mut caption_chat) = (String::new(), String::new());
    let mut rng = Rng::derive(cfg.seed, "tiny-visual/test");
    for i in 0..cfg.test_images {
        let scene = Scene::draw(Domain::Target, &mut rng);
        let image = render(&format!("test-{i:05}"), &scene)?;
        let qs = scene.questions();
        let (q, p, _) = &qs[rng.usize(qs.len())];
        test.push_str(&format!("{}\n", json!({ "images": [image], "prompt": format!("{IMAGE_MARKER}\n{q}"), "answer": p })));
        caption_test.push_str(&format!("{}\n", json!({ "images": [image], "prompt": format!("{IMAGE_MARKER}{TARGET_INSTRUCTION}"), "answer": caption(&scene) })));
        test_chat.push_str(&format!("{}\n", serde_json::to_string(&row(&image, &format!("\n{q}"), p))?));
        caption_chat.push_str(&format!("{}\n", serde_json::to_string(&row(&image, TARGET_INSTRUCTION, &caption(&scene)))?));
    }
    let as_json = |rows: &[ChatRow]| serde_json::to_string_pretty(rows).map(String::into_bytes);
    let files: Vec<(&str, Vec<u8>, usize)> = vec![
        ("seed_captions.json", as_json(&captions)?, captions.len()),
        ("seed_precise.json", as_json(&precise)?, precise.len()),
        ("seed_informative.json", as_json(&informative)?, informative.len()),
        ("target_pairs.json", as_json(&pairs)?, pairs.len()),
        ("target_scenes.jsonl", scenes.into_bytes(), cfg.target_images),
        ("target_test.jsonl", test.into_bytes(), cfg.test_images),
        ("target_captions_test.jsonl", caption_test.into_bytes(), cfg.test_images),
        ("target_test_chat.jsonl", test_chat.into_bytes(), cfg.test_images),
        ("target_captions_chat.jsonl", caption_chat.into_bytes(), cfg.test_images),
    ];
    let mut counts = Vec::new();
    for (name, bytes, n) in files {
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        counts.push((name.to_string(), n as u64));
    }
    Ok(counts)
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    let c = parse_options::<TinyVisualConfig>(options)?;
    if c.seed_images == 0 || c.target_images == 0 || c.test_images == 0 {
        return Err(("seed_images".into(), "seed_images, target_images and test_images must each be at least 1".into()));
    }
    Ok(())
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let config: TinyVisualConfig = super::method::generator_options(options, env, |c: &mut TinyVisualConfig| &mut c.seed)?;
    Ok(Box::new(TinyVisual { config }))
}

struct TinyVisual {
    config: TinyVisualConfig,
}

impl Method for TinyVisual {
    fn files(&self) -> &'static [&'static str] {
        &[
            "seed_captions.json",
            "seed_precise.json",
            "seed_informative.json",
            "target_pairs.json",
            "target_scenes.jsonl",
            "target_test.jsonl",
            "target_captions_test.jsonl",
            "target_test_chat.jsonl",
            "target_captions_chat.jsonl",
        ]
    }
    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        let c = &self.config;
        ctx.events.info(format!("rendering {} seed, {} target and {} test scenes (seed {})", c.seed_images, c.target_images, c.test_images, c.seed));
        let mut counts = Counts::default();
        for (file, n) in write(dir, c)? {
            counts.rows.insert(file, n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::visual::seed::{join, read_chat_rows};

    #[test]
    fn the_seed_files_join_and_every_image_exists() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TinyVisualConfig { seed: 3, seed_images: 12, target_images: 5, test_images: 4, seed_questions: 0, caption_colours: true };
        write(dir.path(), &cfg).unwrap();
        let read = |f: &str| read_chat_rows(&dir.path().join(f)).unwrap();
        let (seeds, left_out) = join(&read("seed_captions.json"), &read("seed_precise.json"), &read("seed_informative.json")).unwrap();
        assert_eq!((seeds.len(), left_out), (12, 0), "every seed image has a caption and both kinds of answer");
        for s in &seeds {
            assert!(dir.path().join(&s.image).is_file(), "{}", s.image);
            assert_eq!(s.precise.len(), s.informative.len());
        }
        assert_eq!(read("target_pairs.json").len(), 5);
        let test = std::fs::read_to_string(dir.path().join("target_test.jsonl")).unwrap();
        assert_eq!(test.lines().count(), 4);
        let again = tempfile::tempdir().unwrap();
        write(again.path(), &cfg).unwrap();
        for f in ["seed_captions.json", "target_scenes.jsonl", "target_test.jsonl", "images/target-00002.png"] {
            assert_eq!(std::fs::read(dir.path().join(f)).unwrap(), std::fs::read(again.path().join(f)).unwrap(), "{f}: same seed, same bytes");
        }
        // Two questions per seed image: two precise and two informative rows each, same scenes.
        let few = tempfile::tempdir().unwrap();
        write(few.path(), &TinyVisualConfig { seed_questions: 2, ..cfg.clone() }).unwrap();
        let read_few = |f: &str| read_chat_rows(&few.path().join(f)).unwrap();
        assert_eq!((read_few("seed_precise.json").len(), read_few("seed_informative.json").len()), (24, 24));
        assert_eq!(std::fs::read(few.path().join("target_scenes.jsonl")).unwrap(), std::fs::read(dir.path().join("target_scenes.jsonl")).unwrap());
        // Captions without colours: no colour word in any caption, the same scenes, and the
        // colour questions still asked (their answers are then only in the image).
        let plain = tempfile::tempdir().unwrap();
        write(plain.path(), &TinyVisualConfig { caption_colours: false, ..cfg.clone() }).unwrap();
        let colour_words: Vec<&str> = crate::synth::visual::shapes::COLOURS.iter().map(|(n, _)| *n).collect();
        for f in ["seed_captions.json", "target_pairs.json"] {
            for r in read_chat_rows(&plain.path().join(f)).unwrap() {
                let caption = &r.messages[1].content;
                assert!(!caption.split(|c: char| !c.is_alphabetic()).any(|w| colour_words.contains(&w)), "{f}: {caption}");
                assert!(caption.contains("shape"), "{f}: {caption}");
            }
        }
        assert_eq!(std::fs::read(plain.path().join("target_scenes.jsonl")).unwrap(), std::fs::read(dir.path().join("target_scenes.jsonl")).unwrap());
        let all = |d: &Path| std::fs::read_to_string(d.join("seed_precise.json")).unwrap();
        assert_eq!(all(plain.path()), all(dir.path()), "the questions and answers do not change");
    }

    /// The preset's setting: one seed question per image gives synthesizer conversations of
    /// exactly two rounds after the caption, the same question under both hints, so the one
    /// task the parser looks for is the whole of what the synthesizer learns to write.
    #[test]
    fn one_question_per_image_asks_it_under_both_hints() {
        use crate::synth::visual::seed::{synthesizer_conversation, INFORMATIVE_HINT, PRECISE_HINT};
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &TinyVisualConfig { seed: 1, seed_images: 30, target_images: 2, test_images: 2, seed_questions: 1, caption_colours: true }).unwrap();
        let read = |f: &str| read_chat_rows(&dir.path().join(f)).unwrap();
        let (seeds, _) = join(&read("seed_captions.json"), &read("seed_precise.json"), &read("seed_informative.json")).unwrap();
        assert_eq!(seeds.len(), 30);
        let mut asked = std::collections::BTreeSet::new();
        for (i, s) in seeds.iter().enumerate() {
            let m = synthesizer_conversation(s, i as u64);
            assert_eq!(m.len(), 6, "caption round + two rounds");
            let q = |k: usize, hint: &str| m.iter().skip(2).step_by(2).find_map(|x| x.content.strip_prefix(&format!("{hint}\n")).map(str::to_string)).unwrap_or_else(|| panic!("{k}: no {hint} round in {m:?}"));
            let (p, f) = (q(i, PRECISE_HINT), q(i, INFORMATIVE_HINT));
            assert_eq!(p, f, "the same question under both hints");
            asked.insert(p);
        }
        assert!(asked.len() >= 4, "the question is drawn per image: {asked:?}");
    }
}
