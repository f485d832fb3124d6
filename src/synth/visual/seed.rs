//! AdaMLLM step (A): the visual instruction synthesizer's training data (synth-spec §2.2).
//!
//! Seed data comes in three LLaMA-Factory / ShareGPT files over the same images: captions,
//! *precise* question–answer pairs (VisionFLAN's short answers) and *informative* ones
//! (ALLaVA's GPT-4V answers). They are joined per image **basename**; an image is kept when
//! it has a caption, at least one precise and at least one informative pair. Each kept image
//! becomes one conversation: the caption round first, then every precise and informative
//! pair as its own round with the exact hint strings, shuffled per image index. The whole
//! first round is context (masked); every later token is trained, user turns included, so the
//! synthesizer learns to *write* the instructions; the EOS after the conversation is trained
//! so generation stops ([`crate::train::data::encode_synthesizer_chat`]). One image in ten is
//! swapped for a blank image, chosen from the image's id, so the synthesizer learns to lean
//! on the caption.

use crate::rng::Rng;
use crate::text::Message;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The first round's user turn (after the image marker).
pub const DESCRIBE_HINT: &str = "Describe the image.";
/// The hint of a precise answer, joined to the question with `"\n"`.
pub const PRECISE_HINT: &str = "Answer with a precise response.";
/// The hint of an informative answer, joined to the question with `"\n"`.
pub const INFORMATIVE_HINT: &str = "Answer with an informative response.";
/// The image placeholder of LLaMA-Factory conversations.
pub const IMAGE_MARKER: &str = "<image>";
/// The share of images replaced by a blank one (the reference: weights 10 / 90).
pub const BLANK_SHARE: f64 = 0.1;

/// One ShareGPT row: `{"messages": [{"role", "content"}, ...], "images": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRow {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub images: Vec<String>,
}

impl ChatRow {
    /// The (user, assistant) pairs of the row, with image markers and surrounding
    /// whitespace removed from the user turns.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.messages
            .windows(2)
            .filter(|w| w[0].role == "user" && w[1].role == "assistant")
            .map(|w| (w[0].content.replace(IMAGE_MARKER, "").trim().to_string(), w[1].content.trim().to_string()))
            .collect()
    }
}

/// Reads a ShareGPT file: a JSON array (LLaMA-Factory's) or JSONL, one [`ChatRow`] each.
pub fn read_chat_rows(path: &Path) -> Result<Vec<ChatRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let format = "{\"messages\": [{\"role\": \"user\", \"content\": \"<image>...\"}, {\"role\": \"assistant\", \"content\": \"...\"}], \"images\": [\"x.jpg\"]}";
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).with_context(|| format!("{}: not a JSON array of rows like {format}", path.display()));
    }
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        rows.push(serde_json::from_str(line).with_context(|| format!("{}:{}: not a row like {format}", path.display(), i + 1))?);
    }
    Ok(rows)
}

/// One seed image with everything known about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedImage {
    /// The image path as the caption file gives it.
    pub image: String,
    pub caption: String,
    /// (question, precise answer) pairs.
    pub precise: Vec<(String, String)>,
    /// (question, informative answer) pairs.
    pub informative: Vec<(String, String)>,
}

/// The file name of an image path (the join key).
pub fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Joins the three seed sources per image basename, in the caption file's order. A row
/// without an image is an error naming the source and row; images lacking a caption, a
/// precise or an informative pair are left out (counted in the second value).
pub fn join(captions: &[ChatRow], precise: &[ChatRow], informative: &[ChatRow]) -> Result<(Vec<SeedImage>, usize)> {
    fn by_image<'a>(rows: &'a [ChatRow], what: &str) -> Result<BTreeMap<&'a str, Vec<(String, String)>>> {
        let mut map: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let Some(image) = r.images.first() else {
                bail!("{what} row {}: no `images`; every seed row needs the image it is about", i + 1);
            };
            map.entry(basename(image)).or_default().extend(r.pairs());
        }
        Ok(map)
    }
    let precise = by_image(precise, "precise")?;
    let informative = by_image(informative, "informative")?;
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut left_out = 0;
    for (i, r) in captions.iter().enumerate() {
        let Some(image) = r.images.first() else {
            bail!("caption row {}: no `images`; every seed row needs the image it is about", i + 1);
        };
        let key = basename(image);
        if !seen.insert(key) {
            continue;
        }
        let caption = r.pairs().into_iter().next().map(|(_, a)| a);
        match (caption, precise.get(key), informative.get(key)) {
            (Some(caption), Some(p), Some(f)) if !caption.is_empty() && !p.is_empty() && !f.is_empty() => {
                out.push(SeedImage { image: image.clone(), caption, precise: p.clone(), informative: f.clone() })
            }
            _ => left_out += 1,
        }
    }
    Ok((out, left_out))
}

/// The synthesizer's training conversation of seed image number `idx`: the caption round,
/// then all precise and informative rounds shuffled with a generator seeded by `idx`.
pub fn synthesizer_conversation(seed: &SeedImage, idx: u64) -> Vec<Message> {
    let mut rounds: Vec<(String, &str)> = seed
        .precise
        .iter()
        .map(|(q, a)| (format!("{PRECISE_HINT}\n{q}"), a.as_str()))
        .chain(seed.informative.iter().map(|(q, a)| (format!("{INFORMATIVE_HINT}\n{q}"), a.as_str())))
        .collect();
    Rng::new(idx).shuffle(&mut rounds);
    let mut messages = vec![Message::user(format!("{IMAGE_MARKER}\n{DESCRIBE_HINT}")), Message::assistant(seed.caption.clone())];
    for (q, a) in rounds {
        messages.push(Message::user(q));
        messages.push(Message::assistant(a));
    }
    messages
}

/// Whether the image with this id is replaced by a blank image: a pure function of the id
/// (one draw of a generator seeded by it), true for about [`BLANK_SHARE`] of ids.
pub fn is_blank(id: &str) -> bool {
    Rng::derive(0, &format!("adamllm/blank/{id}")).bool(BLANK_SHARE)
}

/// The 90/10 split of the synthesizer's conversations (shuffled with seed 42, as the
/// reference): (train, validation) indices.
pub fn split_indices(n: usize, valid_share: f64) -> (Vec<usize>, Vec<usize>) {
    let mut ids: Vec<usize> = (0..n).collect();
    Rng::new(42).shuffle(&mut ids);
    let n_valid = ((n as f64) * valid_share).round() as usize;
    let n_valid = if n >= 2 { n_valid.clamp(1, n - 1) } else { 0 };
    let train = ids.split_off(n_valid);
    (train, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(image: &str, turns: &[(&str, &str)]) -> ChatRow {
        let mut messages = Vec::new();
        for (q, a) in turns {
            messages.push(Message::user(*q));
            messages.push(Message::assistant(*a));
        }
        ChatRow { messages, images: vec![image.to_string()] }
    }

    #[test]
    fn sources_join_per_basename_and_incomplete_images_are_left_out() {
        let captions = [row("a/1.jpg", &[("<image>Describe.", "A red dot.")]), row("2.jpg", &[("<image>x", "Two dots.")]), row("3.jpg", &[("<image>x", "Three.")])];
        let precise = [row("p/1.jpg", &[("<image>\nHow many dots?", "1")]), row("3.jpg", &[("Colour?", "red")])];
        let informative = [row("i/1.jpg", &[("How many dots?", "There is one dot, so the answer is 1.")]), row("2.jpg", &[("q", "a")])];
        let (seeds, left_out) = join(&captions, &precise, &informative).unwrap();
        assert_eq!(left_out, 2, "2.jpg has no precise pair, 3.jpg no informative one");
        assert_eq!(seeds.len(), 1);
        assert_eq!(seeds[0].image, "a/1.jpg");
        assert_eq!(seeds[0].caption, "A red dot.");
        assert_eq!(seeds[0].precise, vec![("How many dots?".to_string(), "1".to_string())]);
        let no_image = ChatRow { messages: vec![], images: vec![] };
        let err = join(&captions, &[no_image], &informative).unwrap_err().to_string();
        assert!(err.contains("precise row 1: no `images`"), "{err}");
    }

    #[test]
    fn the_conversation_opens_with_the_caption_and_carries_the_exact_hints() {
        let seed = SeedImage {
            image: "1.jpg".into(),
            caption: "A red dot.".into(),
            precise: vec![("How many?".into(), "1".into()), ("Colour?".into(), "red".into())],
            informative: vec![("How many?".into(), "One dot, so 1.".into())],
        };
        let m = synthesizer_conversation(&seed, 7);
        assert_eq!(m[0].content, "<image>\nDescribe the image.");
        assert_eq!((m[1].role.as_str(), m[1].content.as_str()), ("assistant", "A red dot."));
        assert_eq!(m.len(), 2 + 2 * 3);
        let users: Vec<&str> = m[2..].iter().step_by(2).map(|x| x.content.as_str()).collect();
        for want in ["Answer with a precise response.\nHow many?", "Answer with a precise response.\nColour?", "Answer with an informative response.\nHow many?"] {
            assert!(users.contains(&want), "{users:?}");
        }
        assert_eq!(m, synthesizer_conversation(&seed, 7), "the shuffle is a function of the index");
        let orders: std::collections::BTreeSet<Vec<String>> = (0..20).map(|i| synthesizer_conversation(&seed, i).iter().map(|x| x.content.clone()).collect()).collect();
        assert!(orders.len() > 1, "different images get different orders");
    }

    #[test]
    fn about_one_image_in_ten_is_blank_and_the_choice_follows_the_id() {
        let blank = (0..2000).filter(|i| is_blank(&i.to_string())).count();
        assert!((150..250).contains(&blank), "{blank} of 2000");
        assert_eq!(is_blank("img-17"), is_blank("img-17"));
    }

    #[test]
    fn split_is_ninety_ten_and_disjoint() {
        let (train, valid) = split_indices(50, 0.1);
        assert_eq!((train.len(), valid.len()), (45, 5));
        let mut all: Vec<usize> = train.iter().chain(&valid).copied().collect();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
    }
}
