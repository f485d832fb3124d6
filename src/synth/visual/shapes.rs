//! The procedural images of the `adamllm-tiny` experiment (synth-spec §2.8): 32 × 32 RGB
//! scenes of one to three shapes (circle, square, triangle) in the four quarters of the
//! image, each with a known colour and size, so every caption, question and answer about
//! them is known exactly. Two domains draw scenes from different distributions: `general`
//! (the seed data: four primary colours, any shape, one to three shapes) and `target` (the
//! domain to adapt to: purple and orange among the colours, mostly triangles, usually three
//! shapes).
//!
//! Captions come from a small grammar; the seed questions are templates with a precise answer
//! (a word or number) and an informative one (a sentence that gives the reason, sometimes with
//! a concluding "so the answer is ..."). [`answer`] answers any templated question about a
//! scene, which grades what a synthesizer writes.

use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Image side in pixels.
pub const SIDE: u32 = 32;

pub const KINDS: [&str; 3] = ["circle", "square", "triangle"];
/// Colour names and their RGB values.
pub const COLOURS: [(&str, [u8; 3]); 6] =
    [("red", [220, 40, 40]), ("green", [40, 170, 60]), ("blue", [40, 80, 220]), ("yellow", [235, 210, 40]), ("purple", [140, 60, 170]), ("orange", [245, 140, 30])];
/// The quarters, row-major: (name, row, column).
pub const PLACES: [(&str, u32, u32); 4] = [("top left", 0, 0), ("top right", 0, 1), ("bottom left", 1, 0), ("bottom right", 1, 1)];
const BACKGROUND: [u8; 3] = [245, 245, 245];
const NUMBERS: [&str; 4] = ["zero", "one", "two", "three"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Index into [`KINDS`].
    pub kind: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    pub large: bool,
    /// Index into [`PLACES`].
    pub place: usize,
}

impl Shape {
    fn kind(&self) -> &'static str {
        KINDS[self.kind]
    }
    fn colour(&self) -> &'static str {
        COLOURS[self.colour].0
    }
    fn place(&self) -> &'static str {
        PLACES[self.place].0
    }
    fn size(&self) -> &'static str {
        if self.large {
            "large"
        } else {
            "small"
        }
    }
    /// "a large red circle at the top left".
    fn phrase(&self) -> String {
        format!("a {} {} {} at the {}", self.size(), self.colour(), self.kind(), self.place())
    }
    /// "a large circle at the top left": what a caption that leaves the colours to the image
    /// says of the shape.
    fn phrase_without_colour(&self) -> String {
        format!("a {} {} at the {}", self.size(), self.kind(), self.place())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    pub shapes: Vec<Shape>,
}

/// The two domains of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    General,
    Target,
}

impl Scene {
    /// A random scene of `domain`: distinct places, weights per domain.
    pub fn draw(domain: Domain, rng: &mut Rng) -> Scene {
        let (count_w, kind_w, colour_w): (&[f64], &[f64], &[f64]) = match domain {
            Domain::General => (&[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]),
            Domain::Target => (&[0.15, 0.25, 0.6], &[0.25, 0.1, 0.65], &[0.15, 0.0, 0.15, 0.0, 0.35, 0.35]),
        };
        let n = 1 + rng.weighted(count_w);
        let mut places: Vec<usize> = (0..PLACES.len()).collect();
        rng.shuffle(&mut places);
        let mut shapes: Vec<Shape> = places[..n].iter().map(|&place| Shape { kind: rng.weighted(kind_w), colour: rng.weighted(colour_w), large: rng.bool(0.5), place }).collect();
        shapes.sort_by_key(|s| s.place);
        Scene { shapes }
    }

    /// The RGB pixels, row-major, 3 bytes a pixel.
    pub fn pixels(&self) -> Vec<u8> {
        let mut px = Vec::with_capacity((SIDE * SIDE * 3) as usize);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let hit = self.shapes.iter().find(|s| covers(s, x, y));
                px.extend_from_slice(&hit.map_or(BACKGROUND, |s| COLOURS[s.colour].1));
            }
        }
        px
    }

    /// The caption: "Two shapes: a large red circle at the top left and a small blue square
    /// at the bottom right."
    pub fn caption(&self) -> String {
        self.caption_with(Shape::phrase)
    }

    /// The caption without colour words ("Two shapes: a large circle at the top left and a
    /// small square at the bottom right."): the colours are then only in the image, so a
    /// model that answers a colour question right has read the picture.
    pub fn caption_without_colours(&self) -> String {
        self.caption_with(Shape::phrase_without_colour)
    }

    fn caption_with(&self, phrase: fn(&Shape) -> String) -> String {
        let phrases: Vec<String> = self.shapes.iter().map(phrase).collect();
        let list = match phrases.len() {
            1 => phrases[0].clone(),
            n => format!("{} and {}", phrases[..n - 1].join(", "), phrases[n - 1]),
        };
        let n = self.shapes.len();
        format!("{} shape{}: {list}.", capitalise(NUMBERS[n]), if n == 1 { "" } else { "s" })
    }

    /// The seed questions about this scene: (question, precise answer, informative answer).
    pub fn questions(&self) -> Vec<(String, String, String)> {
        let n = self.shapes.len();
        let listing: Vec<String> = self.shapes.iter().map(Shape::phrase).collect();
        let mut out = vec![(
            "How many shapes are there?".to_string(),
            n.to_string(),
            format!("I can see {}, so the answer is {n}.", listing.join(" and ")),
        )];
        for kind in 0..KINDS.len() {
            let of_kind: Vec<&Shape> = self.shapes.iter().filter(|s| s.kind == kind).collect();
            if let [s] = of_kind[..] {
                out.push((format!("What colour is the {}?", s.kind()), s.colour().to_string(), format!("The {} at the {} is painted {}.", s.kind(), s.place(), s.colour())));
                out.push((format!("Where is the {}?", s.kind()), s.place().to_string(), format!("The {} {} sits in the {} quarter of the image.", s.colour(), s.kind(), s.place())));
            }
            if of_kind.is_empty() {
                out.push((format!("Is there a {}?", KINDS[kind]), "no".into(), format!("There is no {}: the image shows only {}.", KINDS[kind], plural_kinds(self))));
            }
        }
        out
    }
}

/// Answers a templated question about `scene` (the forms of [`Scene::questions`]), or `None`
/// when the question is not one of them or has no single answer.
pub fn answer(scene: &Scene, question: &str) -> Option<String> {
    let q = question.trim();
    if q == "How many shapes are there?" {
        return Some(scene.shapes.len().to_string());
    }
    let one_of = |kind: &str| -> Option<&Shape> {
        let k = KINDS.iter().position(|x| *x == kind)?;
        let found: Vec<&Shape> = scene.shapes.iter().filter(|s| s.kind == k).collect();
        (found.len() == 1).then(|| found[0])
    };
    if let Some(kind) = colour_question(q) {
        return one_of(kind).map(|s| s.colour().to_string());
    }
    if let Some(kind) = q.strip_prefix("Where is the ").and_then(|r| r.strip_suffix('?')) {
        return one_of(kind).map(|s| s.place().to_string());
    }
    if let Some(kind) = q.strip_prefix("Is there a ").and_then(|r| r.strip_suffix('?')) {
        let k = KINDS.iter().position(|x| *x == kind)?;
        return Some(if scene.shapes.iter().any(|s| s.kind == k) { "yes" } else { "no" }.to_string());
    }
    None
}

/// The shape a "What colour is the X?" question asks about: the questions whose answer only
/// the image gives when the captions leave colours out.
pub fn colour_question(question: &str) -> Option<&str> {
    question.trim().strip_prefix("What colour is the ").and_then(|r| r.strip_suffix('?'))
}

fn plural_kinds(scene: &Scene) -> String {
    let mut kinds: Vec<&str> = scene.shapes.iter().map(|s| s.kind()).collect();
    kinds.sort();
    kinds.dedup();
    kinds.iter().map(|k| format!("{k}s")).collect::<Vec<_>>().join(" and ")
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Whether pixel (x, y) lies inside the shape: its quarter's centre, radius 7 (large) or 4.
fn covers(s: &Shape, x: u32, y: u32) -> bool {
    let (_, row, col) = PLACES[s.place];
    let half = SIDE / 2;
    let (cx, cy) = ((col * half + half / 2) as f64, (row * half + half / 2) as f64);
    let r = if s.large { 7.0 } else { 4.0 };
    let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
    match s.kind {
        0 => dx * dx + dy * dy <= r * r,
        1 => dx.abs() <= r && dy.abs() <= r,
        // An upright triangle: apex at the top, base at the bottom of the square of side 2r.
        _ => dy.abs() <= r && dx.abs() <= (dy + r) / 2.0,
    }
}

/// Writes `pixels` (row-major RGB, [`SIDE`] square) as a PNG, atomically.
pub fn write_png(path: &Path, pixels: &[u8]) -> Result<()> {
    use plotters::prelude::*;
    if pixels.len() != (SIDE * SIDE * 3) as usize {
        bail!("internal: {} bytes for a {SIDE}×{SIDE} RGB image", pixels.len());
    }
    // The bitmap backend picks the format from the extension, so the temporary name keeps it.
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (SIDE, SIDE)).into_drawing_area();
        for (i, p) in pixels.chunks(3).enumerate() {
            let (x, y) = ((i as u32 % SIDE) as i32, (i as u32 / SIDE) as i32);
            root.draw_pixel((x, y), &RGBColor(p[0], p[1], p[2])).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: usize, colour: usize, large: bool, place: usize) -> Shape {
        Shape { kind, colour, large, place }
    }

    #[test]
    fn pixels_show_each_shape_in_its_quarter() {
        let scene = Scene { shapes: vec![shape(0, 0, true, 0), shape(2, 4, false, 3)] };
        let px = scene.pixels();
        let at = |x: u32, y: u32| -> [u8; 3] {
            let i = ((y * SIDE + x) * 3) as usize;
            [px[i], px[i + 1], px[i + 2]]
        };
        assert_eq!(at(8, 8), COLOURS[0].1, "the red circle's centre");
        assert_eq!(at(1, 1), BACKGROUND, "a circle leaves its cell's corner empty");
        assert_eq!(at(24, 25), COLOURS[4].1, "the small purple triangle near its base");
        assert_eq!(at(21, 21), BACKGROUND, "a small triangle is narrow at the top");
        assert_eq!(at(24, 8), BACKGROUND, "the top right quarter is empty");
        let filled = px.chunks(3).filter(|p| *p == COLOURS[0].1).count();
        // A circle of radius 7 covers about π·49 ≈ 154 pixels.
        assert!((140..170).contains(&filled), "{filled}");
    }

    #[test]
    fn captions_and_questions_state_the_scene() {
        let scene = Scene { shapes: vec![shape(0, 0, true, 0), shape(1, 2, false, 3)] };
        assert_eq!(scene.caption(), "Two shapes: a large red circle at the top left and a small blue square at the bottom right.");
        let one = Scene { shapes: vec![shape(2, 5, false, 1)] };
        assert_eq!(one.caption(), "One shape: a small orange triangle at the top right.");
        assert_eq!(scene.caption_without_colours(), "Two shapes: a large circle at the top left and a small square at the bottom right.");
        assert_eq!(one.caption_without_colours(), "One shape: a small triangle at the top right.");
        let qs = scene.questions();
        let find = |q: &str| qs.iter().find(|(x, _, _)| x == q).map(|(_, p, i)| (p.clone(), i.clone()));
        assert_eq!(find("How many shapes are there?").unwrap().0, "2");
        assert_eq!(find("What colour is the square?").unwrap().0, "blue");
        assert_eq!(find("Where is the circle?").unwrap().0, "top left");
        assert_eq!(find("Is there a triangle?").unwrap().0, "no");
        // Every seed question is answered alike by the grader, and its informative answer
        // contains the precise one.
        for (q, p, i) in &qs {
            assert_eq!(answer(&scene, q).as_deref(), Some(p.as_str()), "{q}");
            let t = super::super::parse::Triplet { question: q.clone(), precise: p.clone(), informative: i.clone() };
            assert!(super::super::filter::rule_label(&t).keeps(), "{q}: {i}");
        }
        assert_eq!(answer(&scene, "What is the meaning of this?"), None);
        let two_circles = Scene { shapes: vec![shape(0, 0, true, 0), shape(0, 2, true, 1)] };
        assert_eq!(answer(&two_circles, "What colour is the circle?"), None, "no single answer");
    }

    #[test]
    fn the_domains_differ_in_colour_and_count() {
        let mut rng = Rng::new(5);
        let general: Vec<Scene> = (0..400).map(|_| Scene::draw(Domain::General, &mut rng)).collect();
        let target: Vec<Scene> = (0..400).map(|_| Scene::draw(Domain::Target, &mut rng)).collect();
        let purple = |v: &[Scene]| v.iter().flat_map(|s| &s.shapes).filter(|s| COLOURS[s.colour].0 == "purple").count();
        assert_eq!(purple(&general), 0);
        assert!(purple(&target) > 200);
        let mean = |v: &[Scene]| v.iter().map(|s| s.shapes.len()).sum::<usize>() as f64 / v.len() as f64;
        assert!(mean(&target) > mean(&general) + 0.3, "{} vs {}", mean(&target), mean(&general));
        for s in general.iter().chain(&target) {
            let mut places: Vec<usize> = s.shapes.iter().map(|x| x.place).collect();
            places.dedup();
            assert_eq!(places.len(), s.shapes.len(), "distinct places");
        }
    }

    #[test]
    fn a_png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let scene = Scene { shapes: vec![shape(1, 3, true, 2)] };
        let p = dir.path().join("x.png");
        write_png(&p, &scene.pixels()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(!dir.path().join("x.tmp.png").exists());
    }
}
