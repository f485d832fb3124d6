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

use super::tools::{generate_with_tools, ToolCall, ToolCompletion, ToolsConfig};
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
    /// Generate with tool calls (STILL-3's Python tool), or without (None).
    pub tools: Option<ToolsConfig>,
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
    /// Tokens (with the stop token, if one was sampled), log-probs and entropies; with tools,
    /// the inserted outputs too (log-prob 0).
    pub completion: Completion,
    /// The tool calls of the response (empty without tools).
    pub calls: Vec<ToolCall>,
    /// Per token of `completion`: true where a tool wrote it.
    pub from_tool: Vec<bool>,
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
    let runner = opts.tools.as_ref().map(ToolsConfig::python);
    let settings = match (&opts.tools, &runner) {
        (Some(t), Some(r)) => Some(t.settings(r)?),
        _ => None,
    };
    for (index, chunk) in rows.chunks(batch).enumerate() {
        let inputs: Vec<Vec<u32>> = chunk.iter().map(|&p| prompts[p].clone()).collect();
        let mut chunk_rng;
        let rng: &mut Rng = match &mut seeds {
            Seeds::PerChunk { seed, label } => {
                chunk_rng = Rng::derive(*seed, &format!("{label}/{index}"));
                &mut chunk_rng
            }
            Seeds::Stream(rng) => rng,
        };
        let outs: Vec<ToolCompletion> = match &settings {
            Some(s) => generate_with_tools(decoder, tok, &inputs, &params, rng, s)?,
            None => generate(decoder, &inputs, &params, rng, None)?.into_iter().map(ToolCompletion::plain).collect(),
        };
        let mut rows_done = Vec::with_capacity(chunk.len());
        for (&problem, out) in chunk.iter().zip(outs) {
            let response = tok.decode(&out.completion.tokens, true)?;
            let verdict = set.verify(problem, &response);
            rows_done.push(Graded { problem, response, verdict, completion: out.completion, calls: out.calls, from_tool: out.from_tool });
        }
        done += chunk.len() as u64;
        on_chunk(&Chunk { index, rows: &rows_done, prompts: &prompts, done, total })?;
        for g in rows_done {
            graded[g.problem].push(g);
        }
    }
    Ok(graded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::tasks::math::MathOptions;
    use crate::tasks::problems::MathRow;

    fn tiny() -> (tempfile::TempDir, Model, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        crate::model::init::init_folder("tiny", dir.path(), 7).unwrap();
        let model = Model::load(dir.path(), &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
        let tok = Tokenizer::load(dir.path()).unwrap();
        (dir, model, tok)
    }

    fn math(prompts: &[&str]) -> ProblemSet {
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| MathRow { id: format!("p{i}"), prompt: p.to_string(), answer: "2".into(), source: String::new() })
            .collect();
        ProblemSet::Math { rows, options: MathOptions::default() }
    }

    fn opts(n: usize, batch_size: usize, chat: bool) -> GradeOptions {
        GradeOptions { n, temperature: 1.0, top_p: 1.0, greedy: false, max_new_tokens: 5, chat, batch_size, tools: None }
    }

    /// Rows go problem by problem, chunk by chunk; each response is decoded and verified as
    /// the set would verify it; the seed streams are the ones documented.
    #[test]
    fn rows_chunks_verdicts_and_seed_streams() {
        let (_dir, model, tok) = tiny();
        let set = math(&["1+1=", "3-1=", "0+2="]);
        let mut chunks = Vec::new();
        let graded = sample_and_grade(&model.decoder, &tok, &set, 2, &opts(3, 4, false), Seeds::PerChunk { seed: 9, label: "t" }, &mut |c| {
            chunks.push((c.index, c.rows.iter().map(|g| g.problem).collect::<Vec<_>>(), c.done, c.total));
            Ok(())
        })
        .unwrap();
        assert_eq!(chunks, vec![(0, vec![0, 0, 0, 1], 4, 6), (1, vec![1, 1], 6, 6)], "only the first 2 problems, n = 3 each");
        assert_eq!(graded.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3]);
        for g in graded.iter().flatten() {
            assert_eq!(g.response, tok.decode(&g.completion.tokens, true).unwrap());
            assert_eq!(g.verdict, set.verify(g.problem, &g.response));
        }
        // One chunk: the per-chunk stream of chunk 0 is the caller's stream derived alike.
        let all = |seeds: Seeds<'_>| sample_and_grade(&model.decoder, &tok, &set, 3, &opts(2, 64, false), seeds, &mut |_| Ok(())).unwrap();
        let mut rng = Rng::derive(9, "t/0");
        assert_eq!(all(Seeds::PerChunk { seed: 9, label: "t" }), all(Seeds::Stream(&mut rng)));
        // A stream continues across chunks: the second chunk does not restart it.
        let mut a = Rng::new(1);
        let split = sample_and_grade(&model.decoder, &tok, &set, 1, &opts(4, 2, false), Seeds::Stream(&mut a), &mut |_| Ok(())).unwrap();
        assert_ne!(split[0][0].completion, split[0][2].completion);
        // An error from the hook stops the sampling.
        let err = sample_and_grade(&model.decoder, &tok, &set, 3, &opts(2, 2, false), Seeds::Stream(&mut a), &mut |_| anyhow::bail!("stop"));
        assert_eq!(err.unwrap_err().to_string(), "stop");
    }

    /// With `chat`, prompts go through the chat template as one user turn.
    #[test]
    fn chat_renders_prompts_with_the_template() {
        let (_dir, model, tok) = tiny();
        let set = math(&["1+1="]);
        let mut seen = Vec::new();
        sample_and_grade(&model.decoder, &tok, &set, 1, &opts(1, 1, true), Seeds::Stream(&mut Rng::new(0)), &mut |c| {
            seen = c.prompts.to_vec();
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![encode_prompt(&tok, "1+1=", true).unwrap()]);
        assert_ne!(seen[0], encode_prompt(&tok, "1+1=", false).unwrap());
    }
}
