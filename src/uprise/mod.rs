//! UPRISE: universal prompt retrieval (research/synth-spec.md §6; docs/METHODS.md).
//!
//! A frozen LM scores candidate demonstrations for each training example; a bi-encoder is
//! trained contrastively to retrieve the good ones; at test time, for a zero-shot input from
//! a task cluster never trained on, the retriever's top-K prompts from the pool of the other
//! clusters are prepended and the frozen LM predicts. Read in this order:
//!
//! - [`data`]: task rows, templates, class-balanced sampling, held-out clusters (§6.2);
//! - [`scoring`]: Eq. 4, positive / hard / other negatives with resampling, the 90/10 split,
//!   the resumable scored JSONL (§6.3);
//! - [`retriever`]: the InfoNCE over all batch contexts, accuracy@1 and rank (§6.4);
//! - [`index`]: the saved index, exact top-K inner-product search, the token budget and
//!   the prompt order (§6.5);
//! - [`bm25`]: the lexical baseline;
//! - [`lm`]: the frozen LM's option NLLs; [`biencoder`]: the two encoders and the saved
//!   retriever folder;
//! - stages: [`score_stage`] (`prompt-score`), [`train_stage`] (`retrieve`), [`eval_stage`]
//!   (`uprise-eval`).

pub mod biencoder;
pub mod bm25;
pub mod eval_stage;
pub mod lm;
pub mod score_stage;
pub mod train_stage;
pub mod data;
pub mod index;
pub mod retriever;
pub mod scoring;
