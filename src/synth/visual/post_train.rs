//! AdaMLLM step (C): the post-training data (synth-spec §2.4).
//!
//! **Single stage**: one example per image, the caption turn (the pair's own user instruction
//! and caption) and the synthetic task turn in one conversation, the caption turn first or
//! last as a function of the image's synthesis id; `<image>\n` is prepended to the first user
//! message. An image whose task the filter dropped keeps its caption turn alone; an image for
//! which synthesis found no task at all is dropped, caption included (the reference's
//! `process_entry` returns nothing for it). `train_on_syn_only` leaves the captions out (the
//! ablation). **Two stages** (the paper's baseline): the caption turns as one data set, the
//! task turns as another, trained one after the other.

use super::filter::{render_answer, Label};
use super::parse::Triplet;
use super::seed::{ChatRow, IMAGE_MARKER};
use crate::rng::Rng;
use crate::text::Message;

/// What synthesis made of one domain image–caption pair.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Synthesized {
    /// The pair's index in the input (the reference's `syn_id`).
    pub syn_id: u64,
    pub pair: ChatRow,
    /// `None`: no question under both hints (or the image could not be read).
    pub triplet: Option<Triplet>,
    /// The judge's label of the triplet.
    pub label: Option<Label>,
}

/// Where the caption turn goes: a pure function of the synthesis id.
pub fn caption_first(syn_id: u64) -> bool {
    Rng::derive(syn_id, "adamllm/caption-place").bool(0.5)
}

/// The caption turn of a pair: its user instruction without the image marker, its caption.
fn caption_turn(pair: &ChatRow) -> Option<(String, String)> {
    let user = pair.messages.iter().find(|m| m.role == "user")?;
    let caption = pair.messages.iter().find(|m| m.role == "assistant")?;
    let question = user.content.replace("<image>\n", "").replace(IMAGE_MARKER, "");
    Some((question.trim().to_string(), caption.content.clone()))
}

/// The single-stage example of one synthesized pair, or `None` when it is dropped.
pub fn single_stage(s: &Synthesized, train_on_syn_only: bool) -> Option<ChatRow> {
    let triplet = s.triplet.as_ref()?;
    let task = s.label.is_some_and(Label::keeps).then(|| render_answer(triplet, s.syn_id));
    let caption = if train_on_syn_only { None } else { caption_turn(&s.pair) };
    let mut turns: Vec<(String, String)> = Vec::new();
    if caption_first(s.syn_id) {
        turns.extend(caption);
        turns.extend(task);
    } else {
        turns.extend(task);
        turns.extend(caption);
    }
    conversation(turns, &s.pair.images)
}

/// The two-stage data: (caption examples, task examples), each a one-turn conversation.
pub fn two_stage(items: &[Synthesized]) -> (Vec<ChatRow>, Vec<ChatRow>) {
    let mut captions = Vec::new();
    let mut tasks = Vec::new();
    for s in items {
        let Some(triplet) = &s.triplet else { continue };
        captions.extend(caption_turn(&s.pair).and_then(|t| conversation(vec![t], &s.pair.images)));
        if s.label.is_some_and(Label::keeps) {
            tasks.extend(conversation(vec![render_answer(triplet, s.syn_id)], &s.pair.images));
        }
    }
    (captions, tasks)
}

fn conversation(turns: Vec<(String, String)>, images: &[String]) -> Option<ChatRow> {
    if turns.is_empty() {
        return None;
    }
    let mut messages = Vec::with_capacity(2 * turns.len());
    for (i, (q, a)) in turns.into_iter().enumerate() {
        let q = if i == 0 { format!("{IMAGE_MARKER}\n{q}") } else { q };
        messages.push(Message::user(q));
        messages.push(Message::assistant(a));
    }
    Some(ChatRow { messages, images: images.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthesized(syn_id: u64, triplet: bool, label: Option<Label>) -> Synthesized {
        let pair = ChatRow { messages: vec![Message::user("<image>Describe this dish."), Message::assistant("A bowl of red soup.")], images: vec![format!("img{syn_id}.png")] };
        let triplet = triplet.then(|| Triplet { question: "What colour is the soup?".into(), precise: "red".into(), informative: "The soup is red, so the answer is red.".into() });
        Synthesized { syn_id, pair, triplet, label }
    }

    #[test]
    fn a_kept_task_and_the_caption_share_one_example_in_either_order() {
        let mut orders = std::collections::BTreeSet::new();
        for id in 0..16 {
            let row = single_stage(&synthesized(id, true, Some(Label::Yes)), false).unwrap();
            assert_eq!(row.messages.len(), 4);
            assert_eq!(row.images, vec![format!("img{id}.png")]);
            assert!(row.messages[0].content.starts_with("<image>\n"), "{:?}", row.messages[0]);
            assert_eq!(row.messages.iter().filter(|m| m.content.contains("<image>")).count(), 1, "one image marker");
            let caption_at = row.messages.iter().position(|m| m.content == "A bowl of red soup.").unwrap();
            assert_eq!(caption_at == 1, caption_first(id));
            orders.insert(caption_at);
            if caption_at == 1 {
                assert_eq!(row.messages[0].content, "<image>\nDescribe this dish.");
            }
        }
        assert_eq!(orders.len(), 2, "both places occur over 16 ids");
    }

    #[test]
    fn a_dropped_task_keeps_the_caption_and_no_task_drops_the_image() {
        for label in [Label::No, Label::Open, Label::Other] {
            let row = single_stage(&synthesized(1, true, Some(label)), false).unwrap();
            assert_eq!(row.messages.len(), 2);
            assert_eq!(row.messages[1].content, "A bowl of red soup.");
        }
        assert_eq!(single_stage(&synthesized(1, false, None), false), None);
        // Captions left out: a dropped task leaves nothing.
        assert_eq!(single_stage(&synthesized(1, true, Some(Label::No)), true), None);
        let only = single_stage(&synthesized(2, true, Some(Label::Yes)), true).unwrap();
        assert_eq!(only.messages.len(), 2);
        assert!(only.messages[0].content.starts_with("<image>\n") && only.messages[0].content.contains("What colour is the soup?"));
    }

    #[test]
    fn two_stage_splits_captions_from_tasks() {
        let items = [synthesized(0, true, Some(Label::Yes)), synthesized(1, true, Some(Label::No)), synthesized(2, false, None)];
        let (captions, tasks) = two_stage(&items);
        assert_eq!((captions.len(), tasks.len()), (2, 1));
        assert!(captions.iter().all(|c| c.messages[1].content == "A bowl of red soup."));
        assert!(tasks[0].messages[0].content.contains("What colour is the soup?"));
    }
}
