//! Grading synthesized tasks against the known truth of procedural scenes (the `adamllm-tiny`
//! experiment, synth-spec §2.8 (i), the direction of the paper's Table 7): each triplet's
//! question is answered from its image's scene ([`super::shapes::answer`]); the precise
//! answer is right when it normalises to the truth, the informative one when the truth occurs
//! in it in whole words. Before the filter: both accuracies over every triplet; after: the
//! accuracy of the kept tasks' final (precise) answers. A question the grader cannot answer
//! (not a template, or no single answer) counts as wrong. Answerable colour questions are
//! also counted apart: when the captions leave colours out (`tiny-visual`'s
//! `caption_colours = false`), a synthesizer gets those right only by reading the image.

use super::journal::Record;
use super::shapes::{answer, colour_question, Scene};
use crate::metrics::answer_match::normalize;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The truth table: scene by image path (as the pairs file writes it).
pub fn read_scenes(path: &Path) -> Result<BTreeMap<String, Scene>> {
    #[derive(serde::Deserialize)]
    struct Row {
        image: String,
        scene: Scene,
    }
    let mut scenes = BTreeMap::new();
    for item in crate::text::jsonl::open(path)? {
        let (line_no, line) = item?;
        let row: Row = serde_json::from_str(&line).with_context(|| format!("{}:{line_no}: not a {{\"image\", \"scene\"}} row", path.display()))?;
        scenes.insert(row.image, row.scene);
    }
    Ok(scenes)
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Grades {
    pub triplets: u64,
    /// Triplets whose question the grader can answer.
    pub answerable: u64,
    pub precise_correct: u64,
    pub informative_correct: u64,
    pub kept: u64,
    pub kept_correct: u64,
    /// Answerable colour questions ...
    pub colour: u64,
    /// ... whose precise answer is right.
    pub colour_correct: u64,
}

impl Grades {
    pub fn rates(&self) -> Vec<(String, f64)> {
        let rate = |a: u64, b: u64| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
        vec![
            ("acc_precise_unfiltered".into(), rate(self.precise_correct, self.triplets)),
            ("acc_informative_unfiltered".into(), rate(self.informative_correct, self.triplets)),
            ("acc_kept".into(), rate(self.kept_correct, self.kept)),
            ("answerable".into(), rate(self.answerable, self.triplets)),
            ("acc_precise_colour".into(), rate(self.colour_correct, self.colour)),
            ("colour_questions".into(), rate(self.colour, self.triplets)),
        ]
    }
}

fn contains_words(haystack: &str, needle: &str) -> bool {
    let needle = normalize(needle);
    !needle.is_empty() && format!(" {} ", normalize(haystack)).contains(&format!(" {needle} "))
}

/// Grades the records; `image_of(syn_id)` is the image path the scenes are keyed by.
pub fn grade(records: &[&Record], scenes: &BTreeMap<String, Scene>, image_of: &dyn Fn(u64) -> Option<String>) -> Grades {
    let mut g = Grades::default();
    for r in records {
        let Some(t) = &r.triplet else { continue };
        g.triplets += 1;
        let kept = r.label.is_some_and(|l| l.keeps());
        g.kept += kept as u64;
        let Some(truth) = image_of(r.syn_id).and_then(|i| scenes.get(&i)).and_then(|s| answer(s, &t.question)) else { continue };
        g.answerable += 1;
        let precise = normalize(&t.precise) == normalize(&truth);
        g.precise_correct += precise as u64;
        if colour_question(&t.question).is_some() {
            g.colour += 1;
            g.colour_correct += precise as u64;
        }
        g.informative_correct += contains_words(&t.informative, &truth) as u64;
        g.kept_correct += (kept && precise) as u64;
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::synth::visual::filter::Label;
    use crate::synth::visual::parse::Triplet;
    use crate::synth::visual::shapes::Domain;

    #[test]
    fn grades_against_the_scene() {
        let scene = Scene::draw(Domain::Target, &mut Rng::new(4));
        let n = scene.shapes.len().to_string();
        let wrong = (scene.shapes.len() % 3 + 1).to_string();
        let rec = |id: u64, q: &str, p: &str, i: &str, label: Label| Record {
            syn_id: id,
            raw: String::new(),
            rounds: 2,
            triplet: Some(Triplet { question: q.into(), precise: p.into(), informative: i.into() }),
            label: Some(label),
            judged: None,
        };
        let records = [
            rec(0, "How many shapes are there?", &n, &format!("I count them, so the answer is {n}."), Label::Yes),
            rec(1, "How many shapes are there?", &wrong, &format!("so the answer is {n}."), Label::No),
            rec(2, "Who painted it?", "Monet", "Monet did.", Label::Yes),
        ];
        let (colour_q, colour) = scene.questions().into_iter().find_map(|(q, p, _)| colour_question(&q).is_some().then_some((q, p))).expect("a target scene with a lone kind");
        let records = [&records[..], &[rec(3, &colour_q, &colour, &colour, Label::Yes), rec(4, &colour_q, "blue and red", &colour, Label::Yes)]].concat();
        let scenes: BTreeMap<String, Scene> = [("a.png".to_string(), scene)].into();
        let refs: Vec<&Record> = records.iter().collect();
        let g = grade(&refs, &scenes, &|_| Some("a.png".into()));
        let counts = Grades { triplets: 5, answerable: 4, precise_correct: 2, informative_correct: 4, kept: 4, kept_correct: 2, colour: 2, colour_correct: 1 };
        assert_eq!(g, counts);
        assert_eq!(g.rates()[2], ("acc_kept".to_string(), 0.5));
        assert_eq!(g.rates()[4], ("acc_precise_colour".to_string(), 0.5));
    }
}
