//! The `visual` synth method, AdaMLLM step (B) end to end (synth-spec §2.3), then the step
//! (C) data (§2.4):
//!
//! 1. read the domain image–caption pairs ([`super::pairs`]; every image checked first);
//! 2. per batch of pairs not yet in the resume journal: the synthesizer continues each
//!    caption round ([`super::synthesizer`]), the continuation is cut into rounds and the
//!    image's one task collected ([`super::parse`]), the judge labels it ([`super::checker`]),
//!    and the batch's records are appended to the journal ([`super::journal`]);
//! 3. once every image is done: the final files, written under temporary names and renamed
//!    ([`crate::fsutil::write_atomic`]), then the journal removed.
//!
//! Files in the output folder:
//! - `triplets.jsonl`: every image's record (`syn_id`, image, raw output, rounds, triplet,
//!   label, the judge's output), for auditing the filter;
//! - `single_stage.jsonl`: the single-stage post-training rows (caption turn and kept task in
//!   one conversation; a dropped task keeps the caption; no task drops the image);
//! - `single_stage_nofilter.jsonl`: the same with every parsed task kept (the ablation);
//! - `captions.jsonl`, `tasks.jsonl`: the two-stage data (captions, then kept tasks).
//!
//! Rows are `{"messages", "images"}` with absolute image paths, ready for the `sft` stage on
//! a vision-language model.
//!
//! Options (`[stage.options]` or `retort synth visual PAIRS --synthesizer M --checker C`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `pairs` | required | the image–caption pairs (JSON array or JSONL; `@stage/file`) |
//! | `synthesizer` | required | the visual instruction synthesizer (a `qwen2_vl` folder or `@stage`) |
//! | `checker` | required | a text-only LM folder / `@stage` judging consistency, or `"rule"` (the stand-in) |
//! | `max_new_tokens` | 512 | tokens the synthesizer writes per image (the reference's `max_tokens`) |
//! | `batch_size` | 8 | images generated together (and appended to the journal together) |
//! | `blank_images` | false | show the synthesizer a white image instead of each image (how much it leans on the caption) |
//! | `train_on_syn_only` | false | leave the captions out of `single_stage.jsonl` (the ablation) |
//! | `scenes` | none | known truth, `{"image", "scene"}` rows of procedural scenes: grade the tasks ([`super::grade`]) |
//! | `limit` | 0 | synthesize for the first N pairs only (0: all) |

use super::checker::{Checker, RULE};
use super::filter::Label;
use super::grade::{grade, read_scenes, Grades};
use super::journal::{Journal, Record};
use super::pairs::{read_pairs, Pair};
use super::parse::{collect_triplet, parse_rounds};
use super::post_train::{single_stage, two_stage, Synthesized};
use super::seed::ChatRow;
use super::synthesizer::{Job, Synthesizer};
use crate::stage::{refs, Artifact, Reference, StageCtx};
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::Counts;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisualOptions {
    pub pairs: String,
    pub synthesizer: String,
    pub checker: String,
    #[serde(default = "d_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub blank_images: bool,
    #[serde(default)]
    pub train_on_syn_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenes: Option<String>,
    #[serde(default)]
    pub limit: usize,
}

fn d_max_new_tokens() -> usize {
    512
}
fn d_batch_size() -> usize {
    8
}

pub const FILES: &[&str] = &["triplets.jsonl", "single_stage.jsonl", "single_stage_nofilter.jsonl", "captions.jsonl", "tasks.jsonl"];
/// The journal, inside the output folder.
const JOURNAL: &str = ".visual-partial/journal.jsonl";

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    let o: VisualOptions = parse_options(options)?;
    let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    for (k, v, what) in [("pairs", &o.pairs, "the image–caption pairs file (PAIRS.json)"), ("synthesizer", &o.synthesizer, "the synthesizer, a vision-language model folder or `@stage` (--synthesizer MODEL)"), ("checker", &o.checker, "the consistency judge: a text-only LM folder, `@stage`, or \"rule\" (--checker)")] {
        if v.trim().is_empty() {
            return bad(k, &format!("say which: {what}"));
        }
    }
    if o.max_new_tokens == 0 {
        return bad("max_new_tokens", "must be at least 1");
    }
    if o.batch_size == 0 {
        return bad("batch_size", "must be at least 1");
    }
    Ok(())
}

pub fn references(options: &toml::Table) -> Vec<Reference> {
    let s = |k: &str| options.get(k).and_then(|v| v.as_str());
    let mut r = refs(Artifact::Model, [("options.synthesizer", s("synthesizer")), ("options.checker", s("checker"))]);
    r.extend(refs(Artifact::Text, [("options.pairs", s("pairs")), ("options.scenes", s("scenes"))]));
    r
}

/// Before the run starts: what lies outside the run must be there and be what it should.
pub fn preflight(options: &toml::Table) -> Result<()> {
    let Ok(o) = parse_options::<VisualOptions>(options) else { return Ok(()) };
    if !o.pairs.starts_with('@') {
        read_pairs(Path::new(&o.pairs)).context("options.pairs")?;
    }
    if !o.synthesizer.starts_with('@') {
        let dir = Path::new(&o.synthesizer);
        if !crate::model::vision::is_vlm_folder(dir) {
            bail!("options.synthesizer: {} is not a vision-language model folder (no config.json with model_type qwen2_vl); the visual synthesizer reads images", dir.display());
        }
    }
    if o.checker != RULE && !o.checker.starts_with('@') && !Path::new(&o.checker).join("config.json").is_file() {
        bail!("options.checker: {} is not a model folder (no config.json there); give a text-only LM folder, or `rule` for the stand-in rule", o.checker);
    }
    Ok(())
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let opts: VisualOptions = parse_options(options).map_err(|(k, m)| anyhow::anyhow!("options.{k}: {m}"))?;
    let resolve = |s: &str| if s.starts_with('@') { env.resolve(s) } else { Ok(PathBuf::from(s)) };
    Ok(Box::new(Visual {
        pairs: resolve(&opts.pairs)?,
        synthesizer: resolve(&opts.synthesizer)?,
        checker: if opts.checker == RULE { PathBuf::from(RULE) } else { resolve(&opts.checker)? },
        scenes: opts.scenes.as_deref().map(resolve).transpose()?,
        device: env.device.clone(),
        opts,
        grades: None,
    }))
}

struct Visual {
    opts: VisualOptions,
    pairs: PathBuf,
    synthesizer: PathBuf,
    checker: PathBuf,
    scenes: Option<PathBuf>,
    device: candle_core::Device,
    grades: Option<Grades>,
}

impl Method for Visual {
    fn files(&self) -> &'static [&'static str] {
        FILES
    }

    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        // 1. The pairs, every image checked before a model is loaded.
        let mut pairs = read_pairs(&self.pairs).context("options.pairs")?;
        if self.opts.limit > 0 {
            pairs.truncate(self.opts.limit);
        }
        let scenes = self.scenes.as_deref().map(read_scenes).transpose().context("options.scenes")?;
        let mut journal = Journal::open(&dir.join(JOURNAL), &self.fingerprint()?)?;
        let todo: Vec<&Pair> = pairs.iter().filter(|p| !journal.done.contains_key(&p.syn_id)).collect();
        if todo.len() < pairs.len() {
            ctx.events.info(format!("resuming: {} of {} images already synthesized ({})", pairs.len() - todo.len(), pairs.len(), dir.join(JOURNAL).display()));
        }

        // 2. Synthesize, parse, judge, journal: a batch at a time.
        if !todo.is_empty() {
            let synthesizer = Synthesizer::load(&self.synthesizer, &self.device).context("options.synthesizer")?;
            let checker = Checker::load(&self.opts.checker, &self.checker, &self.device).context("options.checker")?;
            let total = pairs.len() as u64;
            let started = Instant::now();
            let mut fresh = 0usize;
            for batch in todo.chunks(self.opts.batch_size) {
                let jobs: Vec<Job> = batch.iter().map(|p| Job { caption: &p.caption, image: &p.image }).collect();
                let raws = synthesizer.generate(&jobs, self.opts.blank_images, self.opts.max_new_tokens).with_context(|| format!("synthesizing for {}", batch[0].at))?;
                let mut records: Vec<Record> = batch
                    .iter()
                    .zip(raws)
                    .map(|(p, raw)| {
                        let rounds = parse_rounds(&raw, &synthesizer.markers);
                        Record { syn_id: p.syn_id, triplet: collect_triplet(&rounds), rounds: rounds.len(), raw, label: None, judged: None }
                    })
                    .collect();
                let triplets: Vec<&super::parse::Triplet> = records.iter().filter_map(|r| r.triplet.as_ref()).collect();
                let mut labels = checker.judge(&triplets)?.into_iter();
                for r in records.iter_mut().filter(|r| r.triplet.is_some()) {
                    let (label, judged) = labels.next().context("internal: the judge returned fewer labels than triplets")?;
                    (r.label, r.judged) = (Some(label), Some(judged));
                }
                journal.append(records)?;
                fresh += batch.len();
                let rate = fresh as f64 / started.elapsed().as_secs_f64().max(1e-9);
                ctx.events.progress(journal.done.len() as u64, Some(total), "images", Some(&format!("{rate:.2} images/s")));
                if ctx.control.poll().stop {
                    return Err(crate::stage::Interrupted.into());
                }
            }
        }

        // 3. The final files, from the journal in input order.
        let records: Vec<&Record> = pairs.iter().map(|p| journal.done.get(&p.syn_id).context("internal: an image is missing from the journal")).collect::<Result<_>>()?;
        let counts = self.write_outputs(dir, &pairs, &records)?;
        if let Some(scenes) = &scenes {
            // The scenes are keyed by the image path as the pairs file writes it.
            let image_of = |id: u64| pairs.get(id as usize).and_then(|p| p.row.images.first()).cloned();
            self.grades = Some(grade(&records, scenes, &image_of));
        }
        journal.remove()?;
        Ok(counts)
    }

    fn live(&self, _counts: &Counts) -> Vec<(String, f64)> {
        self.grades.as_ref().map(Grades::rates).unwrap_or_default()
    }

    fn stats(&self, counts: &Counts) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "counts": counts.tasks, "grades": self.grades, "options": self.opts }))
    }
}

impl Visual {
    /// What the journal's records depend on: the inputs, the models and the options.
    fn fingerprint(&self) -> Result<serde_json::Value> {
        let meta = |p: &Path| {
            let m = std::fs::metadata(p).ok();
            let modified = m.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos().to_string());
            serde_json::json!({"path": p, "len": m.map(|m| m.len()), "modified": modified})
        };
        let mut opts = serde_json::to_value(&self.opts)?;
        // Where the run stops, and whether the tasks are graded, change no record.
        if let Some(o) = opts.as_object_mut() {
            for k in ["limit", "scenes", "train_on_syn_only"] {
                o.remove(k);
            }
        }
        Ok(serde_json::json!({
            "pairs": meta(&self.pairs),
            "synthesizer": meta(&self.synthesizer.join("model.safetensors")),
            "checker": meta(&self.checker.join("model.safetensors")),
            "options": opts,
            "version": env!("CARGO_PKG_VERSION"),
        }))
    }

    fn write_outputs(&self, dir: &Path, pairs: &[Pair], records: &[&Record]) -> Result<Counts> {
        let mut counts = Counts::default();
        let mut items = Vec::with_capacity(pairs.len());
        let mut audit = String::new();
        for (p, r) in pairs.iter().zip(records) {
            let image = std::path::absolute(&p.image).unwrap_or_else(|_| p.image.clone()).to_string_lossy().into_owned();
            let row = ChatRow { images: vec![image], ..p.row.clone() };
            items.push(Synthesized { syn_id: p.syn_id, pair: row, triplet: r.triplet.clone(), label: r.label });
            let line = serde_json::json!({"syn_id": r.syn_id, "image": p.row.images[0], "rounds": r.rounds, "triplet": r.triplet, "label": r.label, "judged": r.judged, "raw": r.raw});
            audit.push_str(&format!("{line}\n"));
            counts.add_task("images");
            match (&r.triplet, r.label) {
                (None, _) => counts.add_task("no_task"),
                (Some(_), label) => {
                    counts.add_task("tasks_parsed");
                    match label {
                        Some(Label::Yes) => counts.add_task("kept"),
                        Some(l) => counts.add_task(&format!("dropped/{}", l.name())),
                        None => counts.add_task("dropped/unjudged"),
                    }
                }
            }
        }
        let unfiltered: Vec<Synthesized> = items.iter().map(|s| Synthesized { label: s.triplet.as_ref().map(|_| Label::Yes), ..s.clone() }).collect();
        let (captions, tasks) = two_stage(&items);
        let single: Vec<ChatRow> = items.iter().filter_map(|s| single_stage(s, self.opts.train_on_syn_only)).collect();
        let nofilter: Vec<ChatRow> = unfiltered.iter().filter_map(|s| single_stage(s, self.opts.train_on_syn_only)).collect();
        let jsonl = |rows: &[ChatRow]| -> Result<String> { rows.iter().map(|r| -> Result<String> { Ok(format!("{}\n", serde_json::to_string(r)?)) }).collect() };
        let files = [
            ("triplets.jsonl", audit, pairs.len()),
            ("single_stage.jsonl", jsonl(&single)?, single.len()),
            ("single_stage_nofilter.jsonl", jsonl(&nofilter)?, nofilter.len()),
            ("captions.jsonl", jsonl(&captions)?, captions.len()),
            ("tasks.jsonl", jsonl(&tasks)?, tasks.len()),
        ];
        for (name, text, n) in files {
            crate::fsutil::write_atomic(&dir.join(name), text.as_bytes()).with_context(|| format!("writing {}", dir.join(name).display()))?;
            counts.rows.insert(name.to_string(), n as u64);
        }
        counts.documents = pairs.len() as u64;
        counts.documents_out = single.len() as u64;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::visual::parse::Triplet;
    use crate::text::Message;

    fn pair(dir: &Path, id: u64) -> Pair {
        let image = dir.join(format!("{id}.png"));
        let row = ChatRow { messages: vec![Message::user("<image>Describe the picture."), Message::assistant(format!("Caption {id}."))], images: vec![format!("{id}.png")] };
        Pair { syn_id: id, row, image, caption: format!("Caption {id}."), at: format!("pairs.json: entry {}", id + 1) }
    }

    fn record(id: u64, label: Option<Label>) -> Record {
        let triplet = label.map(|_| Triplet { question: format!("How many shapes are there in {id}?"), precise: "2".into(), informative: "Two shapes, so the answer is 2.".into() });
        Record { syn_id: id, raw: format!("raw {id}"), rounds: if label.is_some() { 2 } else { 0 }, triplet, label, judged: label.map(|_| RULE.into()) }
    }

    /// Every count agrees with the files: one audit line per image, the single-stage rows are
    /// the images with a task (a dropped task keeps its caption), the two-stage files split
    /// captions from kept tasks, and the unfiltered data keeps every parsed task.
    #[test]
    fn counts_and_files_agree_with_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let labels = [Some(Label::Yes), Some(Label::No), None, Some(Label::Open), Some(Label::Yes), Some(Label::Other)];
        let pairs: Vec<Pair> = (0..labels.len() as u64).map(|i| pair(dir.path(), i)).collect();
        let records: Vec<Record> = labels.iter().enumerate().map(|(i, l)| record(i as u64, *l)).collect();
        let refs: Vec<&Record> = records.iter().collect();
        let opts: VisualOptions = parse_options(&toml::toml! { pairs = "p" synthesizer = "s" checker = "rule" }).unwrap();
        let v = Visual { opts, pairs: "p".into(), synthesizer: "s".into(), checker: "rule".into(), scenes: None, device: candle_core::Device::Cpu, grades: None };
        let counts = v.write_outputs(dir.path(), &pairs, &refs).unwrap();
        let t = |k: &str| counts.tasks.get(k).copied().unwrap_or(0);
        assert_eq!((t("images"), t("tasks_parsed"), t("kept"), t("no_task")), (6, 5, 2, 1));
        assert_eq!((t("dropped/no"), t("dropped/open"), t("dropped/other")), (1, 1, 1));
        let read = |f: &str| -> Vec<serde_json::Value> { std::fs::read_to_string(dir.path().join(f)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
        let audit = read("triplets.jsonl");
        assert_eq!(audit.len(), 6);
        assert_eq!(audit.iter().filter(|r| r["label"] == "yes").count() as u64, t("kept"));
        assert_eq!(audit[2]["triplet"], serde_json::Value::Null);
        assert_eq!(audit[1]["label"], "no");
        let single = read("single_stage.jsonl");
        assert_eq!(single.len(), 5, "the image without a task is dropped");
        let turns: Vec<usize> = single.iter().map(|r| r["messages"].as_array().unwrap().len()).collect();
        assert_eq!(turns, [4, 2, 2, 4, 2], "kept: caption + task; dropped: caption alone");
        assert!(single.iter().all(|r| Path::new(r["images"][0].as_str().unwrap()).is_absolute()));
        assert_eq!(read("single_stage_nofilter.jsonl").iter().map(|r| r["messages"].as_array().unwrap().len()).collect::<Vec<_>>(), [4, 4, 4, 4, 4]);
        assert_eq!((read("captions.jsonl").len(), read("tasks.jsonl").len()), (5, 2));
        assert_eq!(counts.rows["tasks.jsonl"], 2);
    }
}
