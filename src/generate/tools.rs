//! Generation with a tool (STILL-3's "coding while thinking", docs/METHODS.md §7.3): a row
//! generates until it writes the tool stop string after a ```` ```python ```` block; the block
//! runs in the sandbox while the other rows keep decoding; its output is appended in the
//! configured format and the row continues from its KV cache, up to `max_calls` calls per row
//! and the token limit.
//!
//! How a batch with rows at different places stays one tensor: every step feeds each row its
//! own new tokens (one sampled token while decoding, the last sampled token plus the tool's
//! output when it resumes, nothing while it waits), right-aligned and left-padded to the
//! longest feed. Padding is masked and positions count valid tokens only ([`AttnMask`]), so a
//! row sees exactly what a fresh prefill of its text would show (tested below).
//!
//! Determinism: a call's output rejoins its row `lag_steps` decode steps after the call was
//! made, or earlier when no row is left decoding; the wait is counted in steps, not seconds,
//! so a seed gives the same rollout however long the tools take, while the tool still runs in
//! parallel with the decoding of the others (and with other calls, up to `workers`).
//!
//! Tool tokens are part of the context but not of the model's output: they carry log-prob 0
//! and are flagged in [`ToolCompletion::from_tool`], which the learners turn into a loss mask.

use super::{check_context, pick_tokens, validate, Completion, FinishReason, SamplingParams};
use crate::model::{distinct_rows, AttnMask, Decoder, KvCache, Mode};
use crate::rng::Rng;
use crate::sandbox::tool::run_tool_call;
use crate::sandbox::{ExecStatus, Limits};
use crate::text::Tokenizer;
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Where a call's output goes and how a call is recognised.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolFormat {
    /// Opens a code block; the code is what follows the last opener.
    pub open: String,
    /// Ends generation for a call (STILL-3: "```\n\n", the close of the code block).
    pub stop: String,
    /// Appended after the stop string; `{output}` becomes the tool's result.
    pub output_template: String,
}

impl ToolFormat {
    /// `"prompt"`: the format STILL-3's `r1_code` prompt asks for and its evaluation loop
    /// writes (```` ```output ```` block); `"synthesis"`: its data-synthesis script's, with a
    /// capital "Output" (train on traces in the format they were made in).
    pub fn preset(name: &str) -> Option<ToolFormat> {
        let output = match name {
            "prompt" => "```output\n{output}\n```\n\n",
            "synthesis" => "```Output\n{output}\n```\n\n",
            _ => return None,
        };
        Some(ToolFormat { open: "```python".into(), stop: "```\n\n".into(), output_template: output.into() })
    }

    pub fn render(&self, output: &str) -> String {
        self.output_template.replace("{output}", output)
    }

    /// The code of a call, if `text` (a row's output so far, ending in the stop string) closes
    /// a code block: everything after the last opener, trimmed. None when no block is open
    /// (the stop string closed something else, e.g. an output block).
    pub fn code_of(&self, text: &str) -> Option<String> {
        let body = text.strip_suffix(self.stop.as_str()).unwrap_or(text);
        let start = body.rfind(self.open.as_str())? + self.open.len();
        let code = body[start..].trim_end_matches('`').trim();
        // An opener followed by its own closing fence and more text is not an open block.
        (!code.contains("```")).then(|| code.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolStatus {
    /// The code ran to the end.
    Ok,
    /// An exception (the output is the traceback's last line), a crash or a memory error.
    Error,
    /// Killed by the time limit ("Timeout Error").
    Timeout,
}

/// What one call returned.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutcome {
    /// The text that goes into the `{output}` slot (already truncated).
    pub output: String,
    pub status: ToolStatus,
}

/// Runs code for the loop; the sandbox in production, a scripted stand-in in tests.
pub trait ToolRunner: Sync {
    fn run(&self, code: &str) -> ToolOutcome;
}

/// The STILL-3 executor semantics of `sandbox/tool.rs` under `limits`.
pub struct PythonTool {
    pub limits: Limits,
}

impl ToolRunner for PythonTool {
    fn run(&self, code: &str) -> ToolOutcome {
        match run_tool_call(code, &self.limits) {
            Ok(r) => {
                let status = match r.exec.status {
                    ExecStatus::Pass => ToolStatus::Ok,
                    ExecStatus::Timeout => ToolStatus::Timeout,
                    _ => ToolStatus::Error,
                };
                ToolOutcome { output: r.output, status }
            }
            // The sandbox could not start the interpreter: the model sees the reason.
            Err(e) => ToolOutcome { output: format!("Sandbox error: {e}"), status: ToolStatus::Error },
        }
    }
}

/// The loop's settings besides sampling.
pub struct ToolSettings<'a> {
    pub format: ToolFormat,
    /// Calls per row at most; a row that asks for one more finishes (`FinishReason::Stop`).
    pub max_calls: usize,
    /// Calls running at once.
    pub workers: usize,
    /// Decode steps between a call and the return of its output (see the module docs).
    pub lag_steps: usize,
    pub runner: &'a dyn ToolRunner,
}

/// The `tools` table of the rl and eval stages (and `--tools python` of `retort eval`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// `"prompt"` (STILL-3's evaluation / `r1_code` format) or `"synthesis"` (its trace
    /// synthesis format, capital "Output"); `stop` and `output_template` override parts.
    #[serde(default = "d_format")]
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_template: Option<String>,
    #[serde(default = "d_max_calls")]
    pub max_calls: usize,
    /// Calls running at once (each is one Python process).
    #[serde(default = "d_workers")]
    pub workers: usize,
    #[serde(default = "d_lag")]
    pub lag_steps: usize,
    /// Wall-clock limit of one call (STILL-3: 5 s; then "Timeout Error").
    #[serde(default = "d_timeout")]
    pub timeout_s: f64,
    /// rl only: added to the score of a response with at least one call whose code ran to
    /// the end (tool reward shaping; 0 = off, the default).
    #[serde(default)]
    pub call_bonus: f64,
}

fn d_format() -> String {
    "prompt".into()
}
fn d_max_calls() -> usize {
    4
}
fn d_workers() -> usize {
    2
}
fn d_lag() -> usize {
    4
}
fn d_timeout() -> f64 {
    5.0
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            format: d_format(),
            stop: None,
            output_template: None,
            max_calls: d_max_calls(),
            workers: d_workers(),
            lag_steps: d_lag(),
            timeout_s: d_timeout(),
            call_bonus: 0.0,
        }
    }
}

impl ToolsConfig {
    /// The format after overrides, or the key and what is wrong.
    pub fn format(&self) -> Result<ToolFormat, (String, String)> {
        let mut f = ToolFormat::preset(&self.format)
            .ok_or_else(|| ("tools.format".to_string(), format!("unknown tool format `{}`; expected \"prompt\" or \"synthesis\"", self.format)))?;
        if let Some(stop) = &self.stop {
            f.stop = stop.clone();
        }
        if let Some(t) = &self.output_template {
            f.output_template = t.clone();
        }
        if f.stop.is_empty() {
            return Err(("tools.stop".into(), "the stop string must not be empty".into()));
        }
        if !f.output_template.contains("{output}") {
            return Err(("tools.output_template".into(), "the template must contain {output}, where the tool's result goes".into()));
        }
        Ok(f)
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        self.format()?;
        if self.max_calls == 0 {
            return Err(("tools.max_calls".into(), "must be at least 1 (leave `tools` out for no tools)".into()));
        }
        if self.workers == 0 {
            return Err(("tools.workers".into(), "must be at least 1".into()));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return Err(("tools.timeout_s".into(), "must be a positive number of seconds".into()));
        }
        if !self.call_bonus.is_finite() {
            return Err(("tools.call_bonus".into(), "must be a finite number".into()));
        }
        Ok(())
    }

    /// The sandbox limits of one call.
    pub fn python(&self) -> PythonTool {
        PythonTool { limits: Limits { wall_s: self.timeout_s, ..Limits::default() } }
    }

    /// Loop settings running `runner` (checked config: the format is valid).
    pub fn settings<'a>(&self, runner: &'a dyn ToolRunner) -> Result<ToolSettings<'a>> {
        let format = self.format().map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
        Ok(ToolSettings { format, max_calls: self.max_calls, workers: self.workers, lag_steps: self.lag_steps, runner })
    }
}

/// One call of one row.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub code: String,
    pub output: String,
    pub status: ToolStatus,
    /// Wall time of the run (not of the wait).
    pub seconds: f64,
    /// Index in the row's tokens where the inserted output starts, and its length.
    pub at: usize,
    pub tokens: usize,
}

/// A row's continuation with tools.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCompletion {
    /// Tokens include the inserted outputs (log-prob and entropy 0 there).
    pub completion: Completion,
    /// Per token: true where the tool wrote it (out of the loss, in the context).
    pub from_tool: Vec<bool>,
    pub calls: Vec<ToolCall>,
}

impl ToolCompletion {
    /// A completion made without tools.
    pub fn plain(completion: Completion) -> ToolCompletion {
        let from_tool = vec![false; completion.tokens.len()];
        ToolCompletion { completion, from_tool, calls: vec![] }
    }

    /// True when a call's code ran to the end.
    pub fn ran_code(&self) -> bool {
        self.calls.iter().any(|c| c.status == ToolStatus::Ok)
    }
}

/// Feeds each row its new tokens and returns, for rows fed at least one token, the logits
/// after the last one. The decoder in production, a scripted stand-in in tests.
pub trait StepModel {
    fn vocab_size(&self) -> usize;
    fn step(&mut self, feeds: &[Vec<u32>]) -> Result<Vec<Option<Vec<f32>>>>;
}

/// The decoder with its KV cache and the validity of every cached column.
pub struct DecoderSteps {
    model: Decoder,
    cache: KvCache,
    key_valid: Vec<Vec<bool>>,
}

impl DecoderSteps {
    pub fn new(decoder: &Decoder, rows: usize) -> DecoderSteps {
        let model = decoder.detached();
        let cache = KvCache::new(model.config().num_hidden_layers);
        DecoderSteps { model, cache, key_valid: vec![vec![]; rows] }
    }

    /// The first feed (the prompts): each distinct prompt is prefilled once and its cache
    /// spread to its rows, as in [`super::generate`].
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Option<Vec<f32>>>> {
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let device = self.model.device().clone();
        self.key_valid = prompts.iter().map(|p| (0..width).map(|j| j + p.len() >= width).collect()).collect();
        let (distinct, of_row) = distinct_rows(prompts);
        let padded: Vec<u32> =
            distinct.iter().flat_map(|&i| std::iter::repeat_n(0, width - prompts[i].len()).chain(prompts[i].iter().copied())).collect();
        let input = Tensor::from_vec(padded, (distinct.len(), width), &device)?;
        let valid: Vec<Vec<bool>> = distinct.iter().map(|&i| self.key_valid[i].clone()).collect();
        let mask = AttnMask::new(&valid, width, &device)?;
        let hidden = self.model.forward_hidden(&input, &mask, Some(&mut self.cache), Mode::Infer)?;
        let per_prompt = self.model.logits(&hidden.narrow(1, width - 1, 1)?)?.squeeze(1)?.to_vec2::<f32>()?;
        if distinct.len() < prompts.len() {
            self.cache.select_rows(&of_row)?;
        }
        Ok(of_row.iter().map(|&u| Some(per_prompt[u as usize].clone())).collect())
    }
}

impl StepModel for DecoderSteps {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn step(&mut self, feeds: &[Vec<u32>]) -> Result<Vec<Option<Vec<f32>>>> {
        if self.key_valid.iter().all(Vec::is_empty) {
            return self.prefill(feeds);
        }
        let width = feeds.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Ok(vec![None; feeds.len()]);
        }
        let device = self.model.device().clone();
        let mut ids = Vec::with_capacity(feeds.len() * width);
        for (row, feed) in feeds.iter().enumerate() {
            let pad = width - feed.len();
            ids.extend(std::iter::repeat_n(0, pad).chain(feed.iter().copied()));
            self.key_valid[row].extend((0..width).map(|j| j >= pad));
        }
        let input = Tensor::from_vec(ids, (feeds.len(), width), &device)?;
        let mask = AttnMask::new(&self.key_valid, width, &device)?;
        let hidden = self.model.forward_hidden(&input, &mask, Some(&mut self.cache), Mode::Infer)?;
        let logits = self.model.logits(&hidden.narrow(1, width - 1, 1)?)?.squeeze(1)?.to_vec2::<f32>()?;
        Ok(logits.into_iter().zip(feeds).map(|(l, f)| (!f.is_empty()).then_some(l)).collect())
    }
}

/// Where a row is.
enum RowState {
    /// Sampling; `pending` is fed next step.
    Decoding { pending: Vec<u32> },
    /// A call is out; its output rejoins at step `due`. `last` is the stop token, not yet fed.
    Waiting { due: usize, last: u32 },
    Done,
}

/// Generates each prompt with tool calls (see the module docs).
pub fn generate_with_tools(
    decoder: &Decoder,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    rng: &mut Rng,
    tools: &ToolSettings,
) -> Result<Vec<ToolCompletion>> {
    check_context(decoder, prompts, params)?;
    let mut steps = DecoderSteps::new(decoder, prompts.len());
    run_tool_loop(&mut steps, tok, prompts, params, rng, tools)
}

/// True when the row's newest token completes `stop` (it ends inside that token's text).
fn completes_stop(tok: &Tokenizer, tokens: &[u32], stop: &str) -> Result<bool> {
    // The stop string spans at most its own length in tokens (each token is ≥ 1 character),
    // plus one for a token that holds text after it.
    let span = stop.chars().count() + 1;
    let tail = &tokens[tokens.len().saturating_sub(span)..];
    let with = tok.decode(tail, false)?;
    if !with.contains(stop) {
        return Ok(false);
    }
    let without = tok.decode(&tail[..tail.len() - 1], false)?;
    Ok(!without.contains(stop))
}

struct Job {
    row: usize,
    code: String,
}

/// The loop, on any [`StepModel`] (the decoder, or a scripted stand-in in tests).
pub fn run_tool_loop(
    model: &mut dyn StepModel,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    rng: &mut Rng,
    tools: &ToolSettings,
) -> Result<Vec<ToolCompletion>> {
    validate(params, prompts, model.vocab_size())?;
    if tools.format.stop.is_empty() || tools.format.open.is_empty() {
        bail!("tools: the stop string and the code opener must not be empty");
    }
    let batch = prompts.len();
    let t = if params.greedy { 1.0 } else { params.temperature };
    let mut out: Vec<ToolCompletion> = (0..batch)
        .map(|_| ToolCompletion {
            completion: Completion { tokens: vec![], logprobs: vec![], entropies: vec![], finish: FinishReason::Length },
            from_tool: vec![],
            calls: vec![],
        })
        .collect();
    if params.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut state: Vec<RowState> = prompts.iter().map(|p| RowState::Decoding { pending: p.clone() }).collect();
    let workers = tools.workers.max(1);
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, ToolOutcome, f64)>();

    std::thread::scope(|scope| -> Result<Vec<ToolCompletion>> {
        for _ in 0..workers {
            let (jobs, results) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for job in jobs.iter() {
                    let start = Instant::now();
                    // A runner that panics must not leave its row waiting forever.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tools.runner.run(&job.code)))
                        .unwrap_or_else(|_| ToolOutcome { output: "Tool runner panicked".into(), status: ToolStatus::Error });
                    if results.send((job.row, outcome, start.elapsed().as_secs_f64())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Outputs that came back before their row's turn.
        let mut arrived: HashMap<usize, (ToolOutcome, f64)> = HashMap::new();
        let mut step = 0usize;
        let result = (|| -> Result<()> {
            loop {
                // Rows whose call is due rejoin; with no row decoding, the earliest due ones do.
                let decoding = state.iter().any(|s| matches!(s, RowState::Decoding { .. }));
                let earliest = state.iter().filter_map(|s| if let RowState::Waiting { due, .. } = s { Some(*due) } else { None }).min();
                let Some(rejoin_at) = (match earliest {
                    Some(due) if !decoding => Some(due.max(step)),
                    Some(_) => Some(step),
                    None if decoding => Some(step),
                    None => None,
                }) else {
                    return Ok(());
                };
                step = rejoin_at;
                let rejoining: Vec<usize> = (0..batch).filter(|&r| matches!(state[r], RowState::Waiting { due, .. } if due <= step)).collect();
                for row in rejoining {
                    let (outcome, seconds) = loop {
                        if let Some(got) = arrived.remove(&row) {
                            break got;
                        }
                        let (r, o, s) = done_rx.recv().map_err(|_| anyhow::anyhow!("tools: the tool workers stopped"))?;
                        arrived.insert(r, (o, s));
                    };
                    let RowState::Waiting { last, .. } = state[row] else { unreachable!("rejoining rows wait") };
                    state[row] = resume(&mut out[row], tok, tools, params, outcome, seconds, last)?;
                }

                let feeds: Vec<Vec<u32>> = state
                    .iter_mut()
                    .map(|s| match s {
                        RowState::Decoding { pending } => std::mem::take(pending),
                        _ => vec![],
                    })
                    .collect();
                if feeds.iter().all(Vec::is_empty) {
                    continue;
                }
                let logits = model.step(&feeds)?;
                step += 1;
                // One uniform draw per decoding row, in row order (one stream for the batch: tool rows
                // pause and rejoin, so their decoding steps do not line up with `generate`'s).
                let draws: Vec<(Option<Option<f64>>, &[u32])> = (0..batch)
                    .map(|r| ((!feeds[r].is_empty()).then(|| (!params.greedy).then(|| rng.f64())), super::excluded(params, out[r].completion.tokens.len())))
                    .collect();
                let rows: Vec<Option<&[f32]>> = logits.iter().map(Option::as_deref).collect();
                let picks = pick_tokens(&rows, &draws, params, t);
                for row in 0..batch {
                    let Some((token, logp, entropy)) = picks[row] else { continue };
                    let token = token as u32;
                    let row_out = &mut out[row];
                    let c = &mut row_out.completion;
                    c.tokens.push(token);
                    c.logprobs.push(logp);
                    c.entropies.push(entropy);
                    row_out.from_tool.push(false);
                    state[row] = if params.stop_token_ids.contains(&token) {
                        c.finish = FinishReason::Eos;
                        RowState::Done
                    } else if c.tokens.len() >= params.max_new_tokens {
                        // No room left for a call's output either.
                        c.finish = FinishReason::Length;
                        RowState::Done
                    } else if completes_stop(tok, &c.tokens, &tools.format.stop)? {
                        let text = tok.decode(&c.tokens, false)?;
                        match tools.format.code_of(&text) {
                            Some(_) if row_out.calls.len() >= tools.max_calls => {
                                c.finish = FinishReason::Stop;
                                RowState::Done
                            }
                            Some(code) => {
                                job_tx.send(Job { row, code: code.clone() }).map_err(|_| anyhow::anyhow!("tools: the tool workers stopped"))?;
                                row_out.calls.push(ToolCall { code, output: String::new(), status: ToolStatus::Ok, seconds: 0.0, at: 0, tokens: 0 });
                                RowState::Waiting { due: step + tools.lag_steps, last: token }
                            }
                            None => RowState::Decoding { pending: vec![token] },
                        }
                    } else {
                        RowState::Decoding { pending: vec![token] }
                    };
                }
            }
        })();
        drop(job_tx);
        result?;
        Ok(std::mem::take(&mut out))
    })
}

/// A call's output joins its row: the output is rendered and tokenized, appended (cut at the
/// token limit) and queued to be fed after the stop token.
fn resume(
    row: &mut ToolCompletion,
    tok: &Tokenizer,
    tools: &ToolSettings,
    params: &SamplingParams,
    outcome: ToolOutcome,
    seconds: f64,
    last: u32,
) -> Result<RowState> {
    let mut inserted = tok.encode(&tools.format.render(&outcome.output), false)?;
    let room = params.max_new_tokens.saturating_sub(row.completion.tokens.len());
    let cut = inserted.len() > room;
    inserted.truncate(room);
    let call = row.calls.last_mut().expect("a waiting row has a call");
    *call = ToolCall { output: outcome.output, status: outcome.status, seconds, at: row.completion.tokens.len(), tokens: inserted.len(), code: std::mem::take(&mut call.code) };
    let c = &mut row.completion;
    c.tokens.extend(&inserted);
    c.logprobs.extend(std::iter::repeat_n(0.0, inserted.len()));
    c.entropies.extend(std::iter::repeat_n(0.0, inserted.len()));
    row.from_tool.extend(std::iter::repeat_n(true, inserted.len()));
    if cut || c.tokens.len() >= params.max_new_tokens {
        c.finish = FinishReason::Length;
        return Ok(RowState::Done);
    }
    Ok(RowState::Decoding { pending: std::iter::once(last).chain(inserted).collect() })
}

/// Per-batch tool figures (docs/SANDBOX.md): calls per response, outcome rates, tokens from
/// tools vs the model, wall time in tools.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ToolStats {
    pub responses: usize,
    pub calls: usize,
    pub ok: usize,
    pub errors: usize,
    pub timeouts: usize,
    pub tool_tokens: usize,
    pub model_tokens: usize,
    pub tool_seconds: f64,
    /// Responses with at least one call.
    pub with_call: usize,
}

impl ToolStats {
    pub fn of(rows: &[ToolCompletion]) -> ToolStats {
        let mut s = ToolStats::default();
        for r in rows {
            s.add(&r.calls, &r.from_tool);
        }
        s
    }

    /// Counts one response: its calls and its per-token tool flags.
    pub fn add(&mut self, calls: &[ToolCall], from_tool: &[bool]) {
        self.responses += 1;
        self.calls += calls.len();
        self.with_call += !calls.is_empty() as usize;
        for c in calls {
            match c.status {
                ToolStatus::Ok => self.ok += 1,
                ToolStatus::Error => self.errors += 1,
                ToolStatus::Timeout => self.timeouts += 1,
            }
            self.tool_seconds += c.seconds;
        }
        let tool = from_tool.iter().filter(|&&t| t).count();
        self.tool_tokens += tool;
        self.model_tokens += from_tool.len() - tool;
    }

    /// `tools/…` metrics for the event log and the dashboard.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let per = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        BTreeMap::from([
            ("tools/calls_per_response".to_string(), per(self.calls, self.responses)),
            ("tools/call_rate".to_string(), per(self.with_call, self.responses)),
            ("tools/success_rate".to_string(), per(self.ok, self.calls)),
            ("tools/error_rate".to_string(), per(self.errors, self.calls)),
            ("tools/timeout_rate".to_string(), per(self.timeouts, self.calls)),
            ("tools/tool_token_share".to_string(), per(self.tool_tokens, self.tool_tokens + self.model_tokens)),
            ("tools/seconds".to_string(), self.tool_seconds),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, ModelConfig};
    use candle_core::Device;

    fn char_tok() -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        crate::text::tiny::build_char_tokenizer(dir.path()).unwrap();
        let tok = Tokenizer::load(dir.path()).unwrap();
        (dir, tok)
    }

    /// A model stand-in that writes a fixed text per row (one character a step, then EOS),
    /// whatever it is fed, and records every token it was fed.
    struct Scripted {
        scripts: Vec<Vec<u32>>,
        next: Vec<usize>,
        fed: Vec<Vec<u32>>,
        /// Logit of the scripted token; the rest are 0 (large = deterministic).
        margin: f32,
    }

    impl Scripted {
        fn new(tok: &Tokenizer, texts: &[&str], margin: f32) -> Scripted {
            let scripts = texts.iter().map(|t| tok.encode(t, false).unwrap()).collect::<Vec<_>>();
            Scripted { next: vec![0; scripts.len()], fed: vec![vec![]; scripts.len()], scripts, margin }
        }
    }

    impl StepModel for Scripted {
        fn vocab_size(&self) -> usize {
            crate::text::tiny::VOCAB_SIZE
        }
        fn step(&mut self, feeds: &[Vec<u32>]) -> Result<Vec<Option<Vec<f32>>>> {
            Ok(feeds
                .iter()
                .enumerate()
                .map(|(row, feed)| {
                    if feed.is_empty() {
                        return None;
                    }
                    self.fed[row].extend(feed);
                    let want = self.scripts[row].get(self.next[row]).copied().unwrap_or(0);
                    self.next[row] += 1;
                    let mut logits = vec![0.0; crate::text::tiny::VOCAB_SIZE];
                    logits[want as usize] = self.margin;
                    Some(logits)
                })
                .collect())
        }
    }

    /// Answers each call with a fixed table, optionally after a sleep that depends on the code
    /// (so calls finish out of order).
    struct Table {
        answers: Vec<(&'static str, &'static str, ToolStatus)>,
        sleep_ms: fn(&str) -> u64,
    }

    impl ToolRunner for Table {
        fn run(&self, code: &str) -> ToolOutcome {
            std::thread::sleep(std::time::Duration::from_millis((self.sleep_ms)(code)));
            // Code the script did not plan (a sampled stray character) gets an error, like
            // Python would give.
            match self.answers.iter().find(|(c, _, _)| *c == code) {
                Some((_, out, status)) => ToolOutcome { output: out.to_string(), status: *status },
                None => ToolOutcome { output: format!("SyntaxError: {code}"), status: ToolStatus::Error },
            }
        }
    }

    fn settings(runner: &dyn ToolRunner, max_calls: usize, lag_steps: usize) -> ToolSettings<'_> {
        ToolSettings { format: ToolFormat::preset("prompt").unwrap(), max_calls, workers: 2, lag_steps, runner }
    }

    fn greedy(max_new_tokens: usize) -> SamplingParams {
        SamplingParams { greedy: true, max_new_tokens, stop_token_ids: vec![0], ..Default::default() }
    }

    fn text_of(tok: &Tokenizer, c: &ToolCompletion) -> String {
        tok.decode(&c.completion.tokens, true).unwrap()
    }

    #[test]
    fn code_of_finds_the_open_block_only() {
        let f = ToolFormat::preset("prompt").unwrap();
        assert_eq!(f.code_of("Let me check.\n```python\nprint(1 + 2)\n```\n\n").as_deref(), Some("print(1 + 2)"));
        // The last opener counts.
        assert_eq!(f.code_of("```python\na\n```\n\n```output\n1\n```\n\nAgain:\n```python\nb = 2\nb\n```\n\n").as_deref(), Some("b = 2\nb"));
        // The stop closed an output block, not a code block.
        assert_eq!(f.code_of("```python\na\n```\n\n```output\n1\n```\n\n"), None);
        assert_eq!(f.code_of("no code here```\n\n"), None);
        assert_eq!(f.render("42"), "```output\n42\n```\n\n");
        assert_eq!(ToolFormat::preset("synthesis").unwrap().render("42"), "```Output\n42\n```\n\n");
        assert!(ToolFormat::preset("nope").is_none());
    }

    #[test]
    fn rows_call_at_different_steps_and_continue_after_the_output() {
        let (_d, tok) = char_tok();
        let texts = [
            "A\n```python\nprint(6*7)\n```\n\nSo 42.",
            "Longer thinking first, then\n```python\nx\n```\n\nDone.",
            "No tool at all.",
        ];
        let mut model = Scripted::new(&tok, &texts, 50.0);
        let runner = Table { answers: vec![("print(6*7)", "42", ToolStatus::Ok), ("x", "NameError: name 'x' is not defined", ToolStatus::Error)], sleep_ms: |_| 0 };
        let prompts = vec![vec![5u32], vec![6, 7], vec![8]];
        let out = run_tool_loop(&mut model, &tok, &prompts, &greedy(200), &mut Rng::new(1), &settings(&runner, 4, 3)).unwrap();
        assert_eq!(text_of(&tok, &out[0]), "A\n```python\nprint(6*7)\n```\n\n```output\n42\n```\n\nSo 42.");
        assert_eq!(text_of(&tok, &out[1]), "Longer thinking first, then\n```python\nx\n```\n\n```output\nNameError: name 'x' is not defined\n```\n\nDone.");
        assert_eq!(text_of(&tok, &out[2]), "No tool at all.");
        for (row, o) in out.iter().enumerate() {
            assert_eq!(o.completion.finish, FinishReason::Eos, "row {row}");
            // The tool flags cover exactly the inserted outputs.
            let flagged: Vec<u32> = o.completion.tokens.iter().zip(&o.from_tool).filter(|(_, &t)| t).map(|(&id, _)| id).collect();
            let inserted: String = o.calls.iter().map(|c| format!("```output\n{}\n```\n\n", c.output)).collect();
            assert_eq!(tok.decode(&flagged, false).unwrap(), inserted, "row {row}");
            for c in &o.calls {
                assert!(o.from_tool[c.at..c.at + c.tokens].iter().all(|&t| t));
                assert!(o.completion.logprobs[c.at..c.at + c.tokens].iter().all(|&l| l == 0.0));
            }
            // The model was fed its prompt and then every token of its row but the last, in
            // order: the cache holds the row's text and nothing else.
            let mut want = prompts[row].clone();
            want.extend(&o.completion.tokens[..o.completion.tokens.len() - 1]);
            assert_eq!(model.fed[row], want, "row {row}");
        }
        assert_eq!(out[0].calls[0].status, ToolStatus::Ok);
        assert_eq!(out[1].calls[0].status, ToolStatus::Error);
        let s = ToolStats::of(&out);
        assert_eq!((s.responses, s.calls, s.ok, s.errors, s.with_call), (3, 2, 1, 1, 2));
        assert_eq!(s.tool_tokens, out.iter().map(|o| o.calls.iter().map(|c| c.tokens).sum::<usize>()).sum::<usize>());
        assert!((s.metrics()["tools/success_rate"] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_row_over_max_calls_stops_and_a_long_output_is_cut_at_the_token_limit() {
        let (_d, tok) = char_tok();
        let call = "```python\n1\n```\n\n";
        let texts = [format!("{call}{call}{call}tail"), format!("{call}rest")];
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut model = Scripted::new(&tok, &texts, 50.0);
        let runner = Table { answers: vec![("1", "1", ToolStatus::Ok)], sleep_ms: |_| 0 };
        let out = run_tool_loop(&mut model, &tok, &[vec![5], vec![6]], &greedy(200), &mut Rng::new(1), &settings(&runner, 2, 0)).unwrap();
        assert_eq!(out[0].calls.len(), 2);
        assert_eq!(out[0].completion.finish, FinishReason::Stop);
        assert!(text_of(&tok, &out[0]).ends_with(&format!("```output\n1\n```\n\n{call}")), "{}", text_of(&tok, &out[0]));

        // Row 1's call output does not fit in the budget: it is cut and the row ends there.
        let limit = call.len() + 5;
        let mut model = Scripted::new(&tok, &texts, 50.0);
        let out = run_tool_loop(&mut model, &tok, &[vec![5], vec![6]], &greedy(limit), &mut Rng::new(1), &settings(&runner, 2, 0)).unwrap();
        assert_eq!(out[1].completion.tokens.len(), limit);
        assert_eq!(out[1].completion.finish, FinishReason::Length);
        assert_eq!(text_of(&tok, &out[1]), format!("{call}```ou"));
        assert_eq!(out[1].calls[0].tokens, 5);
    }

    #[test]
    fn the_rollout_does_not_depend_on_how_long_tools_take() {
        // Sampling (not greedy) from a stand-in that sometimes strays from its script, with
        // tools that finish in reverse order: the same seed gives the same tokens as instant
        // tools, since outputs rejoin at a step count, not when they arrive.
        let (_d, tok) = char_tok();
        let texts = ["a```python\nq1\n```\n\nb```python\nq2\n```\n\nc", "```python\nq2\n```\n\nd", "xy```python\nq1\n```\n\nz"];
        let answers = vec![("q1", "one", ToolStatus::Ok), ("q2", "two", ToolStatus::Ok)];
        let params = SamplingParams { temperature: 1.0, max_new_tokens: 80, stop_token_ids: vec![0], ..Default::default() };
        let run = |sleep_ms: fn(&str) -> u64| {
            let mut model = Scripted::new(&tok, &texts, 8.0);
            let runner = Table { answers: answers.clone(), sleep_ms };
            let out = run_tool_loop(&mut model, &tok, &[vec![5], vec![6], vec![7]], &params, &mut Rng::new(9), &settings(&runner, 3, 2)).unwrap();
            out.iter().map(|o| (o.completion.tokens.clone(), o.from_tool.clone())).collect::<Vec<_>>()
        };
        let instant = run(|_| 0);
        let slow_first = run(|code| if code == "q1" { 150 } else { 0 });
        assert_eq!(instant, slow_first);
        assert!(instant.iter().any(|(_, tool)| tool.iter().any(|&t| t)), "no call happened: the test checks nothing");
    }

    struct Panics;
    impl ToolRunner for Panics {
        fn run(&self, _: &str) -> ToolOutcome {
            panic!("runner bug")
        }
    }

    #[test]
    fn a_panicking_runner_reports_an_error_instead_of_hanging() {
        let (_d, tok) = char_tok();
        let mut model = Scripted::new(&tok, &["```python\n1\n```\n\nok"], 50.0);
        let out = run_tool_loop(&mut model, &tok, &[vec![5]], &greedy(100), &mut Rng::new(1), &settings(&Panics, 2, 1)).unwrap();
        assert_eq!(out[0].calls[0].status, ToolStatus::Error);
        assert_eq!(out[0].calls[0].output, "Tool runner panicked");
        assert!(text_of(&tok, &out[0]).ends_with("Tool runner panicked\n```\n\nok"));
    }

    #[test]
    fn python_calls_report_results_exceptions_timeouts_and_truncate() {
        // The default 5 s limit for the calls that must finish (a loaded machine starts Python
        // slowly); a short one only where the limit itself is under test.
        let tool = PythonTool { limits: Limits::default() };
        let quick = PythonTool { limits: Limits { wall_s: 1.0, ..Limits::default() } };
        if crate::sandbox::run_python("print(1)", "", &tool.limits).is_err() {
            eprintln!("skipping: no python3 here");
            return;
        }
        assert_eq!(tool.run("x = 6\nx * 7"), ToolOutcome { output: "42".into(), status: ToolStatus::Ok });
        assert_eq!(tool.run("1/0"), ToolOutcome { output: "ZeroDivisionError: division by zero".into(), status: ToolStatus::Error });
        assert_eq!(quick.run("while True:\n    pass"), ToolOutcome { output: "Timeout Error".into(), status: ToolStatus::Timeout });
        let long = tool.run("print('a' * 300 + 'b' * 300)");
        assert_eq!(long.output, format!("{}...{}", "a".repeat(200), "b".repeat(200)));
    }

    #[test]
    fn a_continued_row_has_the_logits_of_a_fresh_prefill_of_its_text() {
        // Rows fed in segments of different lengths (a decode step, a tool output, nothing)
        // end with the same logits as a prefill of their whole text: the cache with holes is
        // the text and only the text.
        let dev = Device::Cpu;
        let model = Model::init_random(ModelConfig::preset("tiny", 40).unwrap(), 11, &dev).unwrap();
        let mut steps = DecoderSteps::new(&model.decoder, 3);
        let prompts = vec![vec![1u32, 2, 3], vec![4, 5], vec![6, 7, 8, 9]];
        steps.step(&prompts).unwrap();
        let segments: Vec<Vec<Vec<u32>>> = vec![
            vec![vec![10], vec![11], vec![12]],
            vec![vec![13, 14, 15, 16, 17, 18], vec![19], vec![]],
            vec![vec![], vec![20, 21, 22], vec![23]],
            vec![vec![24], vec![25], vec![26, 27]],
        ];
        let mut texts = prompts.clone();
        let mut last = vec![];
        for seg in &segments {
            let got = steps.step(seg).unwrap();
            for (row, feed) in seg.iter().enumerate() {
                texts[row].extend(feed);
            }
            last = got;
        }
        for row in 0..3 {
            let mut fresh = DecoderSteps::new(&model.decoder, 1);
            let want = fresh.step(&[texts[row].clone()]).unwrap().remove(0).unwrap();
            let got = last[row].as_ref().unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "row {row} logit {i}: continued {a} vs fresh {b}");
            }
        }
    }
}
