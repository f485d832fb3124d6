//! AdaMLLM, domain post-training of multimodal LLMs (synth-spec §2; "On Domain-Specific
//! Post-Training for Multimodal Large Language Models", 2024). Three steps, one file each:
//!
//! - (A) [`seed`]: the visual instruction synthesizer's training conversations from general
//!   seed data (caption round, then precise and informative rounds with the exact hints;
//!   the first round masked, every later token trained; one image in ten blank);
//! - (B) [`parse`]: the synthesizer's output on domain image–caption pairs cut into rounds
//!   and the image's one task `{Q, precise, informative}`; [`filter`]: the consistency judge's
//!   prompt and label rule (only "yes" keeps a task), the stand-in rule of the tiny
//!   experiment, and how a kept task's answer is written;
//! - (C) [`post_train`]: one example per image mixing the caption and the task (single
//!   stage), or captions then tasks (two stages).
//!
//! [`shapes`]: the procedural scenes of the `adamllm-tiny` experiment (images, captions,
//! seed questions and a grader that answers any templated question about a scene).
//!
//! The `visual` synth method runs step (B) ([`method`]: [`pairs`] in, [`synthesizer`] on
//! the vision-language model, [`checker`] judging, [`journal`] for resume, [`grade`] against
//! known truth in the tiny experiment); `visual-seed` ([`seed_method`]) writes step (A)'s
//! training conversations for the `sft` stage's synthesizer mask.

pub mod checker;
pub mod filter;
pub mod grade;
pub mod journal;
pub mod method;
pub mod pairs;
pub mod parse;
pub mod post_train;
pub mod seed;
pub mod seed_method;
pub mod shapes;
pub mod synthesizer;
