//! The frozen LM's side of UPRISE: option NLLs of scoring inputs (`demos \n x`), through the
//! AdaptLLM option scorer ([`crate::eval::text::choice`]): each option's mean per-token NLL
//! as the continuation `" " + option`, the options of one input sharing its prefill.
//!
//! What is shared: the candidates of one example differ in their demonstration, which comes
//! *first*, so with a causal cache only the options share a prefix with their input; the
//! example's suffix `x` cannot be reused across candidates (its keys depend on the demo in
//! front of it). Each (candidate, example) input is therefore prefilled once for all of its
//! options, `batch_size` option rows per forward.

use super::data::TaskRow;
use crate::eval::run::EvalModel;
use crate::eval::text::choice::{self, ChoiceRow};
use anyhow::{bail, Result};

/// The scoring input of `x` after `demos` (most similar last), joined with `" \n "`.
pub fn scoring_input(demos_in_order: &[String], x: &str) -> String {
    let mut parts: Vec<&str> = demos_in_order.iter().map(String::as_str).collect();
    parts.push(x);
    parts.join(" \n ")
}

/// Mean per-token NLL of every option of every `(input, row)` pair. Completion rows (no
/// options) are refused: retort's UPRISE scores multiple-choice tasks only.
pub fn option_nlls(m: &EvalModel, items: &[(String, &TaskRow)], batch_size: usize, on_batch: &mut dyn FnMut() -> Result<()>) -> Result<Vec<Vec<f64>>> {
    let mut rows = Vec::with_capacity(items.len());
    for (i, (input, row)) in items.iter().enumerate() {
        let Some(options) = &row.options else {
            bail!("task {:?} (row id {:?}) is a completion task (no `options`); only multiple-choice tasks are scored so far", row.task, row.id);
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
