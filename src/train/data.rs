//! Supervised training data: JSONL files or built-in tasks, tokenized into examples whose
//! loss mask covers only what the model should learn to write.
//!
//! JSONL rows may be `{"prompt", "response"}`, chat `{"messages": [{"role", "content"}...]}`
//! (the tokenizer's chat template is applied; the last assistant turn is the target) or plain
//! `{"text"}` for continued pre-training (every token is a target). Task data uses a
//! **skewed teacher** (docs/METHODS.md §10.2): each target is one of the instance's valid solutions,
//! drawn with Zipf weights over the solutions ordered shortest-first then alphabetically, so
//! the trained model has a dominant mode and rarer valid modes, plus a share of wrong targets
//! so that its pass@1 stays well below 1 — what the RL experiments need.
//!
//! Example `k` of the stream is a pure function of (seed, k): epoch `k / n` visits the
//! examples in a permutation drawn from that epoch's own seed, and a teacher's draw for a
//! position has its own seed. Resuming only needs the example counter.

use crate::rng::Rng;
use crate::tasks::{Instance, Task};
use crate::text::{Message, Tokenizer};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One tokenized training sequence. `targets[i]` says whether token `i` is learned
/// (predicted from the tokens before it).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub targets: Vec<bool>,
}

impl Example {
    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|&&t| t).count()
    }
}

/// The skewed teacher of the tiny warm start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    /// Zipf exponent over the ranked valid solutions (0 = uniform).
    #[serde(default = "default_zipf")]
    pub zipf: f64,
    /// Share of targets that are well-formed but wrong.
    #[serde(default = "default_wrong")]
    pub wrong: f64,
}

fn default_zipf() -> f64 {
    1.5
}
fn default_wrong() -> f64 {
    0.15
}

impl Default for Teacher {
    fn default() -> Self {
        Teacher { zipf: default_zipf(), wrong: default_wrong() }
    }
}

/// Solutions in the teacher's preference order: shortest first, then alphabetical.
pub fn ranked_solutions(task: &dyn Task, inst: &Instance) -> Vec<String> {
    let mut sols = task.solutions(inst).unwrap_or_default();
    sols.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    sols
}

/// The teacher's response for one instance.
pub fn teacher_response(task: &dyn Task, inst: &Instance, teacher: &Teacher, rng: &mut Rng) -> Result<String> {
    if rng.bool(teacher.wrong) {
        return Ok(task.wrong_response(inst, rng));
    }
    let sols = ranked_solutions(task, inst);
    if sols.is_empty() {
        bail!("instance {} of task {} has no enumerable solution to teach", inst.id, task.name());
    }
    let weights: Vec<f64> = (0..sols.len()).map(|r| 1.0 / ((r + 1) as f64).powf(teacher.zipf)).collect();
    Ok(task.render_solution(inst, &sols[rng.weighted(&weights)]))
}

/// Tokenize a prompt/response pair: prompt tokens are context, response tokens and the end
/// token are targets. With `chat`, the tokenizer's template renders the pair as a user turn
/// and an assistant turn.
pub fn encode_pair(tok: &Tokenizer, prompt: &str, response: &str, chat: bool, eos: u32) -> Result<Example> {
    if chat {
        let msgs = vec![Message::user(prompt), Message::assistant(response)];
        return encode_chat(tok, &msgs);
    }
    let p = tok.encode(prompt, false)?;
    let mut r = tok.encode(response, false)?;
    r.push(eos);
    let targets = std::iter::repeat_n(false, p.len()).chain(std::iter::repeat_n(true, r.len())).collect();
    Ok(Example { ids: [p, r].concat(), targets })
}

/// Render a conversation with the chat template; the last assistant turn is the target.
pub fn encode_chat(tok: &Tokenizer, messages: &[Message]) -> Result<Example> {
    let Some(last) = messages.iter().rposition(|m| m.role == "assistant") else {
        bail!("the conversation has no assistant turn to learn from");
    };
    let prefix = tok.apply_chat_template(&messages[..last], true)?;
    let full = tok.apply_chat_template(&messages[..=last], false)?;
    if !full.starts_with(&prefix) {
        bail!("the chat template renders the conversation prefix differently from the whole; cannot locate the assistant turn");
    }
    let p = tok.encode(&prefix, false)?;
    let r = tok.encode(&full[prefix.len()..], false)?;
    let targets = std::iter::repeat_n(false, p.len()).chain(std::iter::repeat_n(true, r.len())).collect();
    Ok(Example { ids: [p, r].concat(), targets })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlRow {
    prompt: Option<String>,
    response: Option<String>,
    messages: Option<Vec<Message>>,
    text: Option<String>,
}

/// One training row of a JSONL file, checked for shape but not yet tokenized.
pub enum Row {
    Pair { prompt: String, response: String },
    Chat(Vec<Message>),
    Text(String),
}

/// Parse and shape-check every row of a JSONL file (no tokenizer needed, so a run can check
/// its data before it starts). Errors name the file and line and say what a row looks like.
pub fn read_rows(path: &Path) -> Result<Vec<(usize, Row)>> {
    let mut out = Vec::new();
    for item in crate::text::jsonl::open(path)? {
        let (line_no, line) = item?;
        let at = || format!("{}:{}", path.display(), line_no);
        let row: JsonlRow = serde_json::from_str(&line).with_context(|| {
            format!("{}: not a valid row (expected {{\"prompt\",\"response\"}}, {{\"messages\"}} or {{\"text\"}})", at())
        })?;
        let row = match row {
            JsonlRow { prompt: Some(prompt), response: Some(response), messages: None, text: None } => {
                if response.trim().is_empty() {
                    bail!("{}: empty \"response\"; every example needs something to learn", at());
                }
                Row::Pair { prompt, response }
            }
            JsonlRow { prompt: Some(_), response: None, .. } => bail!("{}: \"prompt\" without \"response\"", at()),
            JsonlRow { messages: Some(m), prompt: None, response: None, text: None } => Row::Chat(m),
            JsonlRow { text: Some(t), prompt: None, response: None, messages: None } => Row::Text(t),
            _ => bail!("{}: a row must have exactly one of prompt+response, messages or text", at()),
        };
        out.push((line_no, row));
    }
    if out.is_empty() {
        bail!("{} has no examples", path.display());
    }
    Ok(out)
}

/// How long a training example may be, and what happens to a longer one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthLimit {
    pub max_len: usize,
    pub policy: TooLongRow,
}

/// `too_long` of the sft stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLongRow {
    /// Text rows (continued pre-training) are cut into consecutive pieces of `max_len` tokens,
    /// each its own example, so no text is lost; prompt/response and chat rows are truncated.
    Split,
    /// Cut to `max_len` tokens (counted in the log).
    Truncate,
    /// Refuse the file, naming the first row that does not fit.
    Error,
    /// Leave such rows out (counted in the log).
    Skip,
}

/// No tokenizer makes tokens longer than this on average: a row with more bytes than this
/// many times `max_len` is too long without tokenizing it.
const MAX_BYTES_PER_TOKEN: usize = 64;

fn row_bytes(row: &Row) -> usize {
    match row {
        Row::Pair { prompt, response } => prompt.len() + response.len(),
        Row::Chat(m) => m.iter().map(|m| m.content.len()).sum(),
        Row::Text(t) => t.len(),
    }
}

/// Read a JSONL file of prompt/response, messages or text rows, applying `limit` while
/// reading. Errors name the file and line. Returns the examples and how many rows were
/// skipped or truncated for length.
pub fn read_jsonl(path: &Path, tok: &Tokenizer, chat: bool, eos: u32, limit: LengthLimit) -> Result<(Vec<Example>, usize)> {
    let mut out = Vec::new();
    let mut cut = 0;
    for (line, row) in read_rows(path)? {
        let hopeless = row_bytes(&row) > MAX_BYTES_PER_TOKEN * limit.max_len;
        let is_text = matches!(row, Row::Text(_));
        if hopeless && matches!(limit.policy, TooLongRow::Error | TooLongRow::Skip) {
            if limit.policy == TooLongRow::Skip {
                cut += 1;
                continue;
            }
            bail!(
                "{}:{line}: the row has {} bytes, far more than max_len = {} tokens; shorten it, raise max_len, \
                 or set too_long = \"skip\" or \"truncate\"",
                path.display(),
                row_bytes(&row),
                limit.max_len
            );
        }
        let ex = match row {
            Row::Pair { prompt, response } => encode_pair(tok, &prompt, &response, chat, eos),
            Row::Chat(m) => encode_chat(tok, &m),
            Row::Text(t) => tok.encode(&t, false).map_err(anyhow::Error::from).map(|mut ids| {
                ids.push(eos);
                let mut targets = vec![true; ids.len()];
                targets[0] = false; // nothing predicts the first token
                Example { ids, targets }
            }),
        }
        .with_context(|| format!("{}:{line}", path.display()))?;
        let mut ex = ex;
        if ex.ids.len() > limit.max_len {
            match limit.policy {
                TooLongRow::Error => bail!(
                    "{}:{line}: the example is {} tokens, longer than max_len = {}; shorten it, raise max_len, \
                     or set too_long = \"skip\" or \"truncate\"",
                    path.display(),
                    ex.ids.len(),
                    limit.max_len
                ),
                TooLongRow::Skip => {
                    cut += 1;
                    continue;
                }
                TooLongRow::Truncate => {
                    cut += truncate(std::slice::from_mut(&mut ex), limit.max_len);
                }
                TooLongRow::Split if is_text => {
                    cut += 1;
                    out.extend(split(ex, limit.max_len));
                    continue;
                }
                TooLongRow::Split => {
                    cut += truncate(std::slice::from_mut(&mut ex), limit.max_len);
                }
            }
        }
        out.push(ex);
    }
    if out.is_empty() {
        bail!("{}: every row is longer than max_len = {} (too_long = \"skip\" left none)", path.display(), limit.max_len);
    }
    Ok((out, cut))
}

/// Greedy packing: concatenate examples into rows of at most `max_len` tokens. Examples see
/// the earlier ones in their row (no block-diagonal mask, as in TRL's classic packing).
pub fn pack(examples: &[Example], max_len: usize) -> Vec<Example> {
    let mut rows = Vec::new();
    let mut cur = Example { ids: vec![], targets: vec![] };
    for e in examples {
        if !cur.ids.is_empty() && cur.ids.len() + e.ids.len() > max_len {
            rows.push(std::mem::replace(&mut cur, Example { ids: vec![], targets: vec![] }));
        }
        cur.ids.extend(&e.ids);
        cur.targets.extend(&e.targets);
    }
    if !cur.ids.is_empty() {
        rows.push(cur);
    }
    rows
}

/// A long text example as consecutive pieces of at most `max_len` tokens. The first token of
/// each piece has nothing before it in its row, so it is not a target.
pub fn split(ex: Example, max_len: usize) -> Vec<Example> {
    ex.ids
        .chunks(max_len)
        .zip(ex.targets.chunks(max_len))
        .map(|(ids, targets)| {
            let mut targets = targets.to_vec();
            targets[0] = false;
            Example { ids: ids.to_vec(), targets }
        })
        .collect()
}

/// Cut examples to `max_len` tokens; returns how many were cut.
pub fn truncate(examples: &mut [Example], max_len: usize) -> usize {
    let mut cut = 0;
    for e in examples.iter_mut() {
        if e.ids.len() > max_len {
            e.ids.truncate(max_len);
            e.targets.truncate(max_len);
            cut += 1;
        }
    }
    cut
}

/// Where example `k` of an endless stream over `n` items comes from: (epoch, item index).
pub fn stream_position(seed: u64, k: u64, n: usize) -> (u64, usize) {
    let epoch = k / n as u64;
    let mut order: Vec<usize> = (0..n).collect();
    Rng::derive(seed, &format!("epoch/{epoch}")).shuffle(&mut order);
    (epoch, order[(k % n as u64) as usize])
}

/// One source of a weighted mixture (`[stage.data] mix = [{ jsonl, weight }, ...]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSource {
    /// A JSONL of prompt/response, messages or text rows (a path, or `@stage/file`).
    pub jsonl: String,
    /// Relative share of the stream (weights 1 and 3 give 25% and 75%).
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

/// Checks of a mixture beyond types: at least one source, a file named, weights finite and
/// > 0. `Err((key, message))`, the key relative to `[stage.data]`'s parent (`data.mix[2].weight`).
pub fn check_mix(mix: &[MixSource]) -> Result<(), (String, String)> {
    if mix.is_empty() {
        return Err(("data.mix".into(), "a mixture needs at least one source: mix = [{ jsonl = \"rows.jsonl\", weight = 1.0 }]".into()));
    }
    for (i, s) in mix.iter().enumerate() {
        if s.jsonl.trim().is_empty() {
            return Err((format!("data.mix[{i}].jsonl"), "name a JSONL file (a path, or \"@stage/file.jsonl\")".into()));
        }
        if !(s.weight > 0.0 && s.weight.is_finite()) {
            return Err((
                format!("data.mix[{i}].weight"),
                format!("a weight must be finite and > 0 (got {}); weights are relative shares, e.g. 1.0 and 3.0 for 25% and 75%", s.weight),
            ));
        }
    }
    Ok(())
}

/// The deterministic interleaving of a weighted mixture: which source position `k` of the
/// stream draws from, and which of that source's own examples it is.
///
/// Position `k` (0-based) goes to the source that the **quota method** of Balinski and Young
/// picks, given the counts `n_i` of the first `k` positions: among the sources still under
/// their upper quota (`n_i < (k+1)·w_i/W`, W the sum of weights) the one whose next example
/// is due first (smallest `(n_i+1)/w_i`, ties to the lower index). The method keeps every
/// source within its quota at every prefix: after `k` positions `floor(k·w_i/W) ≤ n_i ≤
/// ceil(k·w_i/W)`, so the realized share is exact up to one example per source. (A plain
/// smooth weighted round-robin, the largest-deficit rule, can fall more than one example
/// behind with three or more sources.) Source `i`'s `j`-th example is `j = n_i(k)`, a
/// position in that source's own stream of epoch permutations.
///
/// The schedule uses no randomness and no history beyond `k`: it is a pure function of `k`,
/// computed by replaying positions from 0 (a cursor makes consecutive positions O(sources)),
/// so a resumed run needs only its example counter.
#[derive(Debug, Clone)]
pub struct MixSchedule {
    weights: Vec<f64>,
    total: f64,
    /// The cursor: `counts[i]` = positions among the first `next` that went to source `i`.
    next: u64,
    counts: Vec<u64>,
}

impl MixSchedule {
    /// `weights` are checked by [`check_mix`] (finite, > 0, at least one).
    pub fn new(weights: &[f64]) -> Self {
        MixSchedule { weights: weights.to_vec(), total: weights.iter().sum(), next: 0, counts: vec![0; weights.len()] }
    }

    /// Position `k` of the stream: (source, that source's example index).
    pub fn at(&mut self, k: u64) -> (usize, u64) {
        self.seek(k);
        let i = self.pick();
        let j = self.counts[i];
        self.counts[i] += 1;
        self.next += 1;
        (i, j)
    }

    /// How many of the first `k` positions each source gets.
    pub fn counts(&mut self, k: u64) -> Vec<u64> {
        self.seek(k);
        self.counts.clone()
    }

    /// Move the cursor to just before position `k` (rewinding to 0 when behind).
    fn seek(&mut self, k: u64) {
        if k < self.next {
            self.next = 0;
            self.counts.iter_mut().for_each(|c| *c = 0);
        }
        while self.next < k {
            let i = self.pick();
            self.counts[i] += 1;
            self.next += 1;
        }
    }

    /// The source of position `self.next`.
    fn pick(&self) -> usize {
        let k1 = (self.next + 1) as f64;
        let due = |i: usize| (self.counts[i] + 1) as f64 / self.weights[i];
        let best = |eligible: &dyn Fn(usize) -> bool| {
            (0..self.weights.len()).filter(|&i| eligible(i)).min_by(|&a, &b| due(a).total_cmp(&due(b)).then(a.cmp(&b)))
        };
        // Some source is always under its upper quota (the counts sum to k < k+1, the sum of
        // the quotas); the fallback only guards against rounding of the quotas.
        best(&|i| (self.counts[i] as f64) * self.total < k1 * self.weights[i]).or_else(|| best(&|_| true)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: LengthLimit = LengthLimit { max_len: 1000, policy: TooLongRow::Error };

    #[test]
    fn too_long_rows_are_refused_skipped_or_truncated_while_reading() {
        let (d, t) = tok();
        let p = d.path().join("data.jsonl");
        // Row 1: 2 + 3 + eos = 6 tokens; row 3: 2 + 9 + eos = 12 tokens; row 4: far too long by size alone.
        let huge = "x".repeat(64 * 8 + 1);
        std::fs::write(&p, format!("{{\"prompt\":\"ab\",\"response\":\"xyz\"}}\n\n{{\"prompt\":\"ab\",\"response\":\"123456789\"}}\n{{\"text\":\"{huge}\"}}\n")).unwrap();
        let limit = |policy| LengthLimit { max_len: 8, policy };
        let e = format!("{:#}", read_jsonl(&p, &t, false, 0, limit(TooLongRow::Error)).unwrap_err());
        assert!(e.contains("data.jsonl:3: the example is 12 tokens, longer than max_len = 8"), "{e}");
        let (ex, skipped) = read_jsonl(&p, &t, false, 0, limit(TooLongRow::Skip)).unwrap();
        assert_eq!((ex.len(), skipped), (1, 2));
        assert_eq!(ex[0].ids.len(), 6);
        let (ex, cut) = read_jsonl(&p, &t, false, 0, limit(TooLongRow::Truncate)).unwrap();
        assert_eq!((ex.len(), cut), (3, 2));
        assert!(ex.iter().all(|e| e.ids.len() <= 8));
        std::fs::write(&p, format!("{{\"text\":\"{huge}\"}}\n")).unwrap();
        let e = format!("{:#}", read_jsonl(&p, &t, false, 0, limit(TooLongRow::Error)).unwrap_err());
        assert!(e.contains("data.jsonl:1: the row has 513 bytes, far more than max_len = 8"), "{e}");
    }

    #[test]
    fn split_cuts_text_rows_into_pieces_and_truncates_the_others() {
        let (d, t) = tok();
        let p = d.path().join("data.jsonl");
        // A text row of 19 characters + eos = 20 tokens; a pair of 12 tokens (as above).
        std::fs::write(&p, "{\"text\":\"abcdefghijklmnopqrs\"}\n{\"prompt\":\"ab\",\"response\":\"123456789\"}\n").unwrap();
        let whole = read_jsonl(&p, &t, false, 0, LengthLimit { max_len: 100, policy: TooLongRow::Error }).unwrap().0;
        let (ex, cut) = read_jsonl(&p, &t, false, 0, LengthLimit { max_len: 8, policy: TooLongRow::Split }).unwrap();
        assert_eq!(cut, 2);
        // The text row: pieces of 8, 8 and 4 tokens whose concatenation is the row, each
        // piece's first token unpredicted, every other token a target as before.
        assert_eq!(ex.iter().map(|e| e.ids.len()).collect::<Vec<_>>(), vec![8, 8, 4, 8]);
        let joined: Vec<u32> = ex[..3].iter().flat_map(|e| e.ids.clone()).collect();
        assert_eq!(joined, whole[0].ids);
        for (i, piece) in ex[..3].iter().enumerate() {
            assert!(!piece.targets[0]);
            assert!(piece.targets[1..].iter().all(|&t| t), "piece {i}");
        }
        // The pair is truncated, as with "truncate".
        assert_eq!(ex[3].ids, whole[1].ids[..8]);
    }

    fn tok() -> (tempfile::TempDir, Tokenizer) {
        let d = tempfile::tempdir().unwrap();
        crate::text::tiny::build_char_tokenizer(d.path()).unwrap();
        let t = Tokenizer::load(d.path()).unwrap();
        (d, t)
    }

    #[test]
    fn only_response_tokens_are_targets() {
        let (_d, t) = tok();
        let e = encode_pair(&t, "ab", "xyz", false, 0).unwrap();
        assert_eq!(e.ids.len(), 2 + 3 + 1);
        assert_eq!(e.targets, vec![false, false, true, true, true, true]);
        assert_eq!(*e.ids.last().unwrap(), 0);
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let (d, t) = tok();
        let p = d.path().join("data.jsonl");
        std::fs::write(&p, "{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\": \"a\"\n").unwrap();
        let e = format!("{:#}", read_jsonl(&p, &t, false, 0, WIDE).unwrap_err());
        assert!(e.contains("data.jsonl:2") && e.contains("not a valid row"), "{e}");
        std::fs::write(&p, "{\"prompt\":\"a\"}\n").unwrap();
        let e = format!("{:#}", read_jsonl(&p, &t, false, 0, WIDE).unwrap_err());
        assert!(e.contains("data.jsonl:1") && e.contains("without \"response\""), "{e}");
        std::fs::write(&p, "\n\n").unwrap();
        assert!(format!("{:#}", read_jsonl(&p, &t, false, 0, WIDE).unwrap_err()).contains("no examples"));
        std::fs::write(&p, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}\n{\"text\":\"abc\"}\n").unwrap();
        let (ex, _) = read_jsonl(&p, &t, true, 0, WIDE).unwrap();
        // The assistant turn "yo<|im_end|>\n" is the target; the user turn is not.
        let decoded: String = t.decode(&ex[0].ids.iter().zip(&ex[0].targets).filter(|(_, &m)| m).map(|(i, _)| *i).collect::<Vec<_>>(), false).unwrap();
        assert!(decoded.starts_with("yo<|im_end|>"), "{decoded:?}");
        assert_eq!(ex[1].target_count(), 3);
    }

    #[test]
    fn stream_positions_cover_each_epoch_once() {
        let mut seen: Vec<usize> = (0..7).map(|k| stream_position(5, k, 7).1).collect();
        seen.sort();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert_eq!(stream_position(5, 9, 7).0, 1);
        assert_eq!(stream_position(5, 3, 7), stream_position(5, 3, 7));
    }

    #[test]
    fn mixture_schedule_follows_the_hand_computed_order() {
        // Weights 1 : 2. Position 0: both under quota (0 < 1/3, 0 < 2/3), source 1 is due
        // first (1/2 < 1/1). Position 1: counts (0, 1), due 1/1 and 2/2 tie, the lower index
        // wins. Position 2: source 0 is at its quota (1 < 3·1/3 fails), so source 1. Period 3.
        let mut s = MixSchedule::new(&[1.0, 2.0]);
        let order: Vec<usize> = (0..6).map(|k| s.at(k).0).collect();
        assert_eq!(order, vec![1, 0, 1, 1, 0, 1]);
        // Each source walks its own counter: position 3 is source 1's third example.
        assert_eq!(s.at(3), (1, 2));
        assert_eq!(s.at(4), (0, 1));
    }

    #[test]
    fn mixture_schedule_stays_within_one_example_of_every_share() {
        let mut rng = Rng::new(11);
        for trial in 0..60 {
            let m = 2 + trial % 5;
            // Shares from balanced to very skewed (down to 1e-3 of the largest).
            let w: Vec<f64> = (0..m).map(|_| if rng.bool(0.3) { 1e-3 + rng.f64() * 1e-2 } else { 0.1 + rng.f64() * 5.0 }).collect();
            let total: f64 = w.iter().sum();
            let mut s = MixSchedule::new(&w);
            let mut n = vec![0u64; m];
            for k in 1..=2000u64 {
                n[s.at(k - 1).0] += 1;
                for i in 0..m {
                    let quota = k as f64 * w[i] / total;
                    assert!((n[i] as f64 - quota).abs() < 1.0 + 1e-9, "weights {w:?}: after {k}, source {i} has {} for quota {quota}", n[i]);
                }
            }
            assert_eq!(s.counts(2000), n);
        }
    }

    #[test]
    fn mixture_position_is_a_pure_function_of_k() {
        let w = [0.5, 3.0, 1.25];
        let mut walked = MixSchedule::new(&w);
        let seq: Vec<(usize, u64)> = (0..500).map(|k| walked.at(k)).collect();
        // A fresh schedule jumping straight to k (what a resumed run does), and one rewound
        // from further on, agree with the walk.
        for k in [0u64, 1, 17, 250, 499] {
            assert_eq!(MixSchedule::new(&w).at(k), seq[k as usize]);
            assert_eq!(walked.at(k), seq[k as usize]);
        }
    }

    #[test]
    fn bad_mixtures_name_the_key() {
        let src = |w: f64| MixSource { jsonl: "a.jsonl".into(), weight: w };
        assert!(check_mix(&[src(1.0), src(0.25)]).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let (key, msg) = check_mix(&[src(1.0), src(1.0), src(bad)]).unwrap_err();
            assert_eq!(key, "data.mix[2].weight");
            assert!(msg.contains("finite and > 0"), "{msg}");
        }
        assert_eq!(check_mix(&[]).unwrap_err().0, "data.mix");
        assert_eq!(check_mix(&[MixSource { jsonl: " ".into(), weight: 1.0 }]).unwrap_err().0, "data.mix[0].jsonl");
    }

    #[test]
    fn teacher_prefers_the_first_ranked_solution_and_mixes_in_wrong_ones() {
        let task = crate::tasks::build("countdown", &Default::default()).unwrap();
        let mut rng = Rng::new(1);
        let inst = task.generate(&mut rng);
        let ranked = ranked_solutions(task.as_ref(), &inst);
        let first = task.render_solution(&inst, &ranked[0]);
        let teacher = Teacher { zipf: 1.5, wrong: 0.2 };
        let (mut top, mut wrong) = (0, 0);
        for _ in 0..2000 {
            let r = teacher_response(task.as_ref(), &inst, &teacher, &mut rng).unwrap();
            if r == first {
                top += 1;
            }
            if !task.verify(&inst, &r).correct {
                wrong += 1;
            }
        }
        let z: f64 = (1..=ranked.len()).map(|r| 1.0 / (r as f64).powf(1.5)).sum();
        let expect_top = 2000.0 * 0.8 / z;
        assert!((top as f64 - expect_top).abs() < 0.15 * expect_top, "top {top} vs {expect_top}");
        assert!((300..500).contains(&wrong), "wrong {wrong}");
    }
}
