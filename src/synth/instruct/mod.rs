//! Instruction Pre-Training (synth-spec §3): a synthesizer model reads a raw text and writes
//! instruction–response pairs about it; texts are chained over several rounds into few-shot
//! documents and rendered into pre-training text.
//!
//! This module is the pure, model-free core:
//! - [`format`]: the synthesizer's exact prompt and output format, parsing and the CoT /
//!   option conventions (§3.2);
//! - [`chain`]: M-round chaining with the length guard and the inherit / followed-by-next
//!   bookkeeping, as a state machine a batched generator drives (§3.3);
//! - [`render`]: rendering chains into pre-training documents with retort's own, smaller
//!   pattern bank (§3.4).
//!
//! [`method`] is the `instruct` synth method that drives a real synthesizer model through
//! this core.

pub mod chain;
/// The format lives in `text`, below both this method and the sft stage that tokenizes it.
pub use crate::text::instruct_format as format;
pub mod method;
pub mod render;
