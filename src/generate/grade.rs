//! Sampling and grading: n samples of each problem of a [`ProblemSet`], decoded and verified.
//!
//! The one loop behind every "how often does the model solve these?": the eval stage and
//! `retort eval` ([`crate::eval::run::evaluate`]), the sft stage's task accuracy and sample
//! events, and the rl stage's quick evals. It lives beside [`generate`](super::generate)
//! rather than in `eval/` because training stages use it too and `train/` does not import
//! `eval/`; it knows problems and their verifiers ([`crate::tasks`]) and nothing of metrics.
//!
//! Rows are laid end to end, problem 0's n samples, then problem 1's, …, and sampled in
//! chunks of `batch_size` rows. Where each chunk's randomness comes from is the caller's
//! choice ([`Seeds`]): a stream derived per chunk (the eval stage: any chunk can be redrawn
//! alone) or one stream the caller owns across chunks and calls (the rl stage's quick eval,
//! the sft stage's sampled-then-greedy accuracy), so each caller keeps its numbers.

use super::{generate, Completion, SamplingParams};
use crate::model::Decoder;
use crate::rng::Rng;
use crate::tasks::problems::{encode_prompt, ProblemSet};
use crate::tasks::Verdict;
use crate::text::Tokenizer;
use anyhow::{ensure, Result};

/// How to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct GradeOptions {
    /// Samples per problem.
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Argmax decoding (temperature and top_p are then ignored).
    pub greedy: bool,
    pub max_new_tokens: usize,
    /// Render each prompt through the tokenizer's chat template as one user turn.
    pub chat: bool,
    /// Rows per `generate` call.
    pub batch_size: usize,
}

/// Where each chunk's random draws come from.
pub enum Seeds<'a> {
    /// Chunk `c` draws from `Rng::derive(seed, "{label}/{c}")`.
    PerChunk { seed: u64, label: &'a str },
    /// Every chunk continues the caller's stream, in order.
    Stream(&'a mut Rng),
}

/// One sampled response with its verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Graded {
    /// Index of the problem in the set.
    pub problem: usize,
    /// The decoded response (special tokens skipped).
    pub response: String,
    pub verdict: Verdict,
    /// Tokens (with the stop token, if one was sampled), log-probs and entropies.
    pub completion: Completion,
}

/// One finished chunk, handed to the caller's hook before the next chunk is sampled.
pub struct Chunk<'a> {
    pub index: usize,
    /// The chunk's rows, in order.
    pub rows: &'a [Graded],
    /// The prompt token ids of each problem (index by [`Graded::problem`]).
    pub prompts: &'a [Vec<u32>],
    /// Rows sampled so far, this chunk included, and in all.
    pub done: u64,
    pub total: u64,
}

/// Samples `opts.n` responses to each of the first `problems` problems of `set`, decodes and
/// verifies them; returns them by problem. `on_chunk` runs after each chunk; an error from it
/// (a stop request) ends the sampling.
pub fn sample_and_grade(
    decoder: &Decoder,
    tok: &Tokenizer,
    set: &ProblemSet,
    problems: usize,
    opts: &GradeOptions,
    mut seeds: Seeds<'_>,
    on_chunk: &mut dyn FnMut(&Chunk<'_>) -> Result<()>,
) -> Result<Vec<Vec<Graded>>> {
    let count = problems.min(set.len());
    let prompts = (0..count)
        .map(|i| {
            let ids = encode_prompt(tok, set.prompt(i), opts.chat)?;
            ensure!(!ids.is_empty(), "problem {}: the prompt encodes to no tokens", set.id(i));
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let params = SamplingParams {
        temperature: opts.temperature,
        top_p: opts.top_p,
        greedy: opts.greedy,
        max_new_tokens: opts.max_new_tokens,
        stop_token_ids: tok.eos_ids(),
        ..Default::default()
    };
    let rows: Vec<usize> = (0..count).flat_map(|p| std::iter::repeat_n(p, opts.n)).collect();
    let total = rows.len() as u64;
    let batch = opts.batch_size.max(1);
    let mut graded: Vec<Vec<Graded>> = (0..count).map(|_| Vec::with_capacity(opts.n)).collect();
    let mut done = 0u64;
    for (index, chunk) in rows.chunks(batch).enumerate() {
        let inputs: Vec<Vec<u32>> = chunk.iter().map(|&p| prompts[p].clone()).collect();
        let outs = match &mut seeds {
            Seeds::PerChunk { seed, label } => generate(decoder, &inputs, &params, &mut Rng::derive(*seed, &format!("{label}/{index}")), None)?,
            Seeds::Stream(rng) => generate(decoder, &inputs, &params, rng, None)?,
        };
        let mut rows_done = Vec::with_capacity(chunk.len());
        for (&problem, completion) in chunk.iter().zip(outs) {
            let response = tok.decode(&completion.tokens, true)?;
            let verdict = set.verify(problem, &response);
            rows_done.push(Graded { problem, response, verdict, completion });
        }
        done += chunk.len() as u64;
        on_chunk(&Chunk { index, rows: &rows_done, prompts: &prompts, done, total })?;
        for g in rows_done {
            graded[g.problem].push(g);
        }
    }
    Ok(graded)
}
