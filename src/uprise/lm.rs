//! The frozen LM's side of UPRISE (synth-spec §6.3, §6.5). Multiple-choice rows: option NLLs
//! of scoring inputs (`demos \n x`), through the AdaptLLM option scorer
//! ([`crate::eval::text::choice`]): each option's mean per-token NLL as the continuation
//! `" " + option`, the options of one input sharing its prefill. Completion rows: greedy
//! generation up to `max_new_tokens`, stopping at the first `"\n"`, scored by token F1 and
//! exact match against the answer ([`crate::metrics::answer_match`]).
//!
//! What is shared: the candidates of one example differ in their demonstration, which comes
//! *first*, so with a causal cache only the options share a prefix with their input; the
//! example's suffix `x` cannot be reused across candidates (its keys depend on the demo in
//! front of it). Each (candidate, example) input is therefore prefilled once for all of its
//! options, `batch_size` option rows per forward.

use super::data::TaskRow;
use crate::eval::run::EvalModel;
use crate::eval::text::choice::{self, ChoiceRow};
use crate::generate::{generate, SamplingParams};
use crate::metrics::answer_match::{exact_match, token_f1};
use anyhow::{bail, Result};

/// The scoring input of `x` after `demos` (most similar last), joined with `" \n "`.
pub fn scoring_input(demos_in_order: &[String], x: &str) -> String {
    let mut parts: Vec<&str> = demos_in_order.iter().map(String::as_str).collect();
    parts.push(x);
    parts.join(" \n ")
}

/// New tokens of a completion answer at most (the reference: 100, within 2048 in all).
pub const MAX_ANSWER_TOKENS: usize = 100;

/// How the LM did on one `(input, row)` pair: `acc` is 1/0 for a multiple-choice row (the
/// argmin-NLL option is the answer) and the token F1 for a completion row; `em` is exact
/// match for completion rows; `nll` the options' mean NLLs (multiple choice) and `text` the
/// generated answer (completion).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub acc: f64,
    pub em: Option<f64>,
    pub nll: Vec<f64>,
    pub text: Option<String>,
}

/// Predicts every `(input, row)` pair by the §6.3 rule of its row: option scoring for
/// multiple-choice rows, greedy generation for completion rows (each kind batched apart).
pub fn predict(m: &EvalModel, items: &[(String, &TaskRow)], batch_size: usize, on_batch: &mut dyn FnMut() -> Result<()>) -> Result<Vec<Prediction>> {
    let (choice_idx, completion_idx): (Vec<usize>, Vec<usize>) = (0..items.len()).partition(|&i| items[i].1.options.is_some());
    let mut out: Vec<Option<Prediction>> = vec![None; items.len()];
    let choice_items: Vec<(String, &TaskRow)> = choice_idx.iter().map(|&i| items[i].clone()).collect();
    for (&i, nll) in choice_idx.iter().zip(option_nlls(m, &choice_items, batch_size, on_batch)?) {
        let gold = items[i].1.gold().unwrap_or(0);
        let acc = f64::from(u8::from(choice::argmin(&nll) == gold));
        out[i] = Some(Prediction { acc, em: None, nll, text: None });
    }
    let inputs: Vec<&str> = completion_idx.iter().map(|&i| items[i].0.as_str()).collect();
    for (&i, text) in completion_idx.iter().zip(greedy_answers(m, &inputs, MAX_ANSWER_TOKENS, batch_size, on_batch)?) {
        let answer = &items[i].1.answer;
        out[i] = Some(Prediction { acc: token_f1(&text, answer), em: Some(exact_match(&text, answer)), nll: Vec::new(), text: Some(text) });
    }
    Ok(out.into_iter().map(|p| p.expect("every item is one kind or the other")).collect())
}

/// Greedy continuations of `inputs` (each after the tokenizer's BOS, if it adds one), cut at
/// the first `"\n"` and trimmed. An input too long for the context keeps its last tokens.
pub fn greedy_answers(m: &EvalModel, inputs: &[&str], max_new_tokens: usize, batch_size: usize, on_batch: &mut dyn FnMut() -> Result<()>) -> Result<Vec<String>> {
    let bos = crate::eval::text::bos_prefix(&m.tok)?;
    let context = m.model.decoder.config().max_position_embeddings;
    let max_new = max_new_tokens.min(context.saturating_sub(1)).max(1);
    let mut prompts = Vec::with_capacity(inputs.len());
    for x in inputs {
        let mut p: Vec<u32> = bos.into_iter().collect();
        p.extend(m.tok.encode(x, false)?);
        if p.len() + max_new > context {
            p.drain(..p.len() + max_new - context);
        }
        if p.is_empty() {
            bail!("a completion input is empty and the tokenizer adds no BOS: nothing to generate from");
        }
        prompts.push(p);
    }
    let params = SamplingParams { greedy: true, max_new_tokens: max_new, stop_token_ids: m.tok.eos_ids(), ..SamplingParams::default() };
    let tok = &m.tok;
    let stop = |tokens: &[u32]| tok.decode(tokens, true).map_or(false, |t| t.contains('\n'));
    let mut answers = Vec::with_capacity(prompts.len());
    // Greedy decoding draws nothing, so the generator's RNG does not matter.
    let mut rng = crate::rng::Rng::new(0);
    for chunk in prompts.chunks(batch_size.max(1)) {
        for c in generate(&m.model.decoder, chunk, &params, &mut rng, Some(&stop))? {
            let text = tok.decode(&c.tokens, true)?;
            answers.push(text.split('\n').next().unwrap_or("").trim().to_string());
        }
        on_batch()?;
    }
    Ok(answers)
}

/// Mean per-token NLL of every option of every `(input, row)` pair. Completion rows (no
/// options) are refused: [`predict`] sends them to [`greedy_answers`].
pub fn option_nlls(m: &EvalModel, items: &[(String, &TaskRow)], batch_size: usize, on_batch: &mut dyn FnMut() -> Result<()>) -> Result<Vec<Vec<f64>>> {
    let mut rows = Vec::with_capacity(items.len());
    for (i, (input, row)) in items.iter().enumerate() {
        let Some(options) = &row.options else {
            bail!("internal: task {:?} (row id {:?}) is a completion task (no `options`); it is predicted by generation, not option scoring", row.task, row.id);
        };
        rows.push(ChoiceRow { line: i + 1, input: input.clone(), options: options.clone(), gold: row.gold().unwrap_or(0) });
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let context = m.model.decoder.config().max_position_embeddings;
    let r = choice::evaluate(&m.model.decoder, &m.tok, "uprise", &rows, (context, batch_size), on_batch)?;
    Ok(r.predictions.into_iter().map(|p| p.nll).collect())
}
