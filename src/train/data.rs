//! Supervised training data: JSONL files or built-in tasks, tokenized into examples whose
//! loss mask covers only what the model should learn to write.
//!
//! JSONL rows may be `{"prompt", "response"}`, chat `{"messages": [{"role", "content"}...]}`
//! (the tokenizer's chat template is applied; the last assistant turn is the target), plain
//! `{"text"}` for continued pre-training (every token is a target), or an instruction
//! synthesizer's training row `{"context", "qa_list": [[q, a], ...]}` in the exact format of
//! synth-spec §3.2 (the pairs and the closing EOS are the target, the context is not; see
//! [`encode_synth`]). Task data uses a
//! **skewed teacher** (docs/METHODS.md §10.2): each target is one of the instance's valid solutions,
//! drawn with Zipf weights over the solutions ordered shortest-first then alphabetically, so
//! the trained model has a dominant mode and rarer valid modes, plus a share of wrong targets
//! so that its pass@1 stays well below 1 — what the RL experiments need.
//!
//! Example `k` of the stream is a pure function of (seed, k): epoch `k / n` visits the
//! examples in a permutation drawn from that epoch's own seed, and a teacher's draw for a
//! position has its own seed. Resuming only needs the example counter.

use crate::rng::Rng;
use crate::text::instruct_format::{self as synth_format, QaPair};
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

/// Tokenize a visual instruction synthesizer's training conversation (AdaMLLM, synth-spec
/// §2.2): the whole first round (the image, "Describe the image." and the caption) is
/// context, and every later token is a target, the user turns included, since the
/// synthesizer must learn to write the instructions too; `eos` is appended and trained so
/// generation stops. The first round is rendered and tokenized on its own, exactly as the
/// synthesizer's prompt is at generation time, so the boundary falls on a token boundary.
pub fn encode_synthesizer_chat(tok: &Tokenizer, messages: &[Message], eos: u32) -> Result<Example> {
    if messages.len() < 4 || messages[0].role != "user" || messages[1].role != "assistant" {
        bail!("a synthesizer conversation needs the caption round (user, assistant) and at least one more round; got {} turns", messages.len());
    }
    let first = tok.apply_chat_template(&messages[..2], false)?;
    let full = tok.apply_chat_template(messages, false)?;
    let Some(rest) = full.strip_prefix(&first) else {
        bail!("the chat template renders the caption round differently alone and in the whole conversation; cannot place the loss mask");
    };
    let p = tok.encode(&first, false)?;
    let mut r = tok.encode(rest, false)?;
    r.push(eos);
    let targets = std::iter::repeat_n(false, p.len()).chain(std::iter::repeat_n(true, r.len())).collect();
    Ok(Example { ids: [p, r].concat(), targets })
}

/// The ids that the literal `<s>` / `</s>` of the synthesizer format stand for: the
/// tokenizer's BOS (or, for a tokenizer without one, such as Qwen's, its end-of-text token,
/// which such tokenizers put between documents) and the stage's EOS.
pub fn synth_marker_ids(tok: &Tokenizer, eos: u32) -> (u32, u32) {
    (tok.bos_id().unwrap_or(eos), eos)
}

/// Tokenize an instruction synthesizer's training row (synth-spec §3.2, §3.7): the sequence is
/// `cook_read(context) + cook_compre(pairs) + "</s>"` with the literal `<s>` / `</s>` mapped
/// to `bos` / `eos` (no second BOS), and the targets are exactly the tokens of
/// `cook_compre(pairs) + "</s>"`: what the synthesizer writes after reading a text. The
/// context part `"<s> <CON> {context} </CON>\n\n"` is the prompt.
///
/// The two parts are tokenized apart, as a prompt and its response are: the context part
/// alone is exactly the prompt the synthesizer sees at generation time, and the mask boundary
/// falls on a token boundary even for a BPE whose merges could join `"\n\n"` and `"<QUE>"`.
/// (With a character tokenizer this is the same sequence as tokenizing the whole string.)
pub fn encode_synth(tok: &Tokenizer, context: &str, pairs: &[QaPair], bos: u32, eos: u32) -> Result<Example> {
    let mut failed = None;
    let mut encode = |t: &str| {
        tok.encode(t, false).unwrap_or_else(|e| {
            failed.get_or_insert(e);
            Vec::new()
        })
    };
    let p = synth_format::encode_pieces(&synth_format::cook_read(context), bos, eos, &mut encode);
    let r = synth_format::encode_pieces(&format!("{}{}", synth_format::cook_compre(pairs), synth_format::EOS), bos, eos, &mut encode);
    if let Some(e) = failed {
        return Err(e.into());
    }
    let targets = std::iter::repeat_n(false, p.len()).chain(std::iter::repeat_n(true, r.len())).collect();
    Ok(Example { ids: [p, r].concat(), targets })
}

/// The keys of a synthesizer row; a row holding either is read as one.
const SYNTH_KEYS: [&str; 2] = ["context", "qa_list"];
/// The keys of the other row formats, which a synthesizer row must not hold.
const OTHER_ROW_KEYS: [&str; 4] = ["prompt", "response", "messages", "text"];
/// Markers that the synthesizer format gives a meaning: BOS / EOS anywhere, and the pair
/// delimiters inside a question or answer (the parser could not read such a pair back).
const RESERVED_IN_TEXT: [&str; 2] = [synth_format::BOS, synth_format::EOS];
const RESERVED_IN_PAIR: [&str; 3] = [synth_format::QUE, synth_format::ANS, synth_format::END];

/// Shape-check a synthesizer row (`obj` holds at least one of [`SYNTH_KEYS`]). Keys other
/// than the row formats' are metadata and ignored (the synth stage's files carry `entity`,
/// `split`, ...). Errors say which key is wrong and what it should be.
fn synth_row(obj: &serde_json::Map<String, serde_json::Value>) -> Result<Row> {
    const SHAPE: &str = "a synthesizer row is {\"context\": \"text\", \"qa_list\": [[\"question\", \"answer\"], ...]}";
    if let Some(k) = OTHER_ROW_KEYS.iter().find(|k| obj.contains_key(**k)) {
        bail!("a row must have exactly one of prompt+response, messages, text or context+qa_list; this one has \"{k}\" besides \"context\"/\"qa_list\"");
    }
    let (context, qa_list) = match (obj.get("context"), obj.get("qa_list")) {
        (Some(c), Some(q)) => (c, q),
        (Some(_), None) => bail!("\"context\" without \"qa_list\"; {SHAPE}"),
        (None, _) => bail!("\"qa_list\" without \"context\"; {SHAPE}"),
    };
    let Some(context) = context.as_str() else {
        bail!("\"context\" must be a string (got {}); {SHAPE}", json_kind(context));
    };
    if context.trim().is_empty() {
        bail!("empty \"context\"; a synthesizer row needs the text its pairs are about");
    }
    let Some(list) = qa_list.as_array() else {
        bail!("\"qa_list\" must be a list of [question, answer] pairs (got {}); {SHAPE}", json_kind(qa_list));
    };
    if list.is_empty() {
        bail!("empty \"qa_list\"; every example needs something to learn");
    }
    let reserved = |key: &str, s: &str, markers: &[&str]| -> Result<()> {
        match markers.iter().find(|m| s.contains(**m)) {
            Some(m) => bail!("{key} contains the literal {m}, which the synthesizer format reserves; remove or rewrite it"),
            None => Ok(()),
        }
    };
    reserved("\"context\"", context, &RESERVED_IN_TEXT)?;
    let mut pairs = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let key = format!("\"qa_list\"[{i}]");
        let pair = match item.as_array().map(Vec::as_slice) {
            Some([serde_json::Value::String(q), serde_json::Value::String(a)]) => (q, a),
            _ => bail!("{key} must be [question, answer], two strings (got {})", json_kind(item)),
        };
        for (part, s) in [("question", pair.0), ("answer", pair.1)] {
            if s.trim().is_empty() {
                bail!("{key}: empty {part}");
            }
            reserved(&format!("{key} ({part})"), s, &RESERVED_IN_TEXT)?;
            reserved(&format!("{key} ({part})"), s, &RESERVED_IN_PAIR)?;
        }
        pairs.push(QaPair::new(pair.0.as_str(), pair.1.as_str()));
    }
    Ok(Row::Synth { context: context.to_string(), pairs })
}

/// A short description of a JSON value for error messages.
fn json_kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(_) => "a boolean".into(),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(_) => "a string".into(),
        serde_json::Value::Array(a) => format!("a list of {}", a.len()),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

/// Other keys (`id`, `meta`, `source`, …, as data sets carry) are ignored; a row needs one of
/// these, so a misspelt key is still an error.
#[derive(Deserialize)]
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
    /// An instruction synthesizer's training row: a text and the pairs written about it.
    Synth { context: String, pairs: Vec<QaPair> },
}

/// Parse and shape-check every row of a JSONL file (no tokenizer needed, so a run can check
/// its data before it starts). Errors name the file and line and say what a row looks like.
pub fn read_rows(path: &Path) -> Result<Vec<(usize, Row)>> {
    let mut out = Vec::new();
    for item in crate::text::jsonl::open(path)? {
        let (line_no, line) = item?;
        let at = || format!("{}:{}", path.display(), line_no);
        let not_valid = || {
            format!(
                "{}: not a valid row (expected {{\"prompt\",\"response\"}}, {{\"messages\"}}, {{\"text\"}} or {{\"context\",\"qa_list\"}})",
                at()
            )
        };
        let value: serde_json::Value = serde_json::from_str(&line).with_context(not_valid)?;
        if let Some(obj) = value.as_object().filter(|o| SYNTH_KEYS.iter().any(|k| o.contains_key(*k))) {
            out.push((line_no, synth_row(obj).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?));
            continue;
        }
        let row: JsonlRow = serde_json::from_str(&line).with_context(not_valid)?;
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
            JsonlRow { prompt: None, response: None, messages: None, text: None } => bail!("{}", not_valid()),
            _ => bail!("{}: a row must have exactly one of prompt+response, messages, text or context+qa_list", at()),
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
    /// each its own example, so no text is lost; the other rows are truncated.
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
        Row::Synth { context, pairs } => context.len() + pairs.iter().map(|p| p.question.len() + p.answer.len()).sum::<usize>(),
    }
}

/// Read a JSONL file of prompt/response, messages, text or synthesizer rows, applying `limit`
/// while reading. Errors name the file and line. Returns the examples and how many rows were
/// skipped or truncated for length. `chat` applies to prompt/response rows only (a
/// synthesizer row has its own fixed format).
pub fn read_jsonl(path: &Path, tok: &Tokenizer, chat: bool, eos: u32, limit: LengthLimit) -> Result<(Vec<Example>, usize)> {
    let (bos, synth_eos) = synth_marker_ids(tok, eos);
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
            Row::Synth { context, pairs } => encode_synth(tok, &context, &pairs, bos, synth_eos),
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
    /// A JSONL of prompt/response, messages, text or synthesizer rows (a path, or `@stage/file`).
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
    fn the_synthesizer_learns_everything_after_the_caption_round() {
        let (_d, t) = tok();
        let m = |role: &str, c: &str| Message::new(role, c);
        let conv = [
            m("user", "<image>\nDescribe the image."),
            m("assistant", "A red dot."),
            m("user", "Answer with a precise response.\nHow many?"),
            m("assistant", "1"),
        ];
        let eos = t.token_to_id("<|endoftext|>").unwrap();
        let e = encode_synthesizer_chat(&t, &conv, eos).unwrap();
        // Token by token: the masked tokens spell the caption round as ChatML writes it, the
        // targets the later round, user turn included, then the EOS.
        let masked: Vec<u32> = e.ids.iter().zip(&e.targets).filter(|(_, &t)| !t).map(|(&i, _)| i).collect();
        let learned: Vec<u32> = e.ids.iter().zip(&e.targets).filter(|(_, &t)| t).map(|(&i, _)| i).collect();
        assert_eq!(t.decode(&masked, false).unwrap(), "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\nA red dot.<|im_end|>\n");
        assert_eq!(t.decode(&learned, false).unwrap(), "<|im_start|>user\nAnswer with a precise response.\nHow many?<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n<|endoftext|>");
        let first_target = e.targets.iter().position(|&x| x).unwrap();
        assert!(e.targets[first_target..].iter().all(|&x| x), "no masked token after the first target");
        assert_eq!(*e.ids.last().unwrap(), eos);
        let short = encode_synthesizer_chat(&t, &conv[..2], eos).unwrap_err().to_string();
        assert!(short.contains("at least one more round"), "{short}");
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
        // Metadata beside a row's text is ignored; a row with no known key is named.
        std::fs::write(&p, "{\"text\":\"abc\",\"meta\":{\"source\":\"x\"},\"id\":3}\n{\"txt\":\"abc\",\"id\":4}\n").unwrap();
        let e = format!("{:#}", read_jsonl(&p, &t, false, 0, WIDE).unwrap_err());
        assert!(e.contains("data.jsonl:2") && e.contains("not a valid row"), "{e}");
        std::fs::write(&p, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}\n{\"text\":\"abc\"}\n").unwrap();
        let (ex, _) = read_jsonl(&p, &t, true, 0, WIDE).unwrap();
        // The assistant turn "yo<|im_end|>\n" is the target; the user turn is not.
        let decoded: String = t.decode(&ex[0].ids.iter().zip(&ex[0].targets).filter(|(_, &m)| m).map(|(i, _)| *i).collect::<Vec<_>>(), false).unwrap();
        assert!(decoded.starts_with("yo<|im_end|>"), "{decoded:?}");
        assert_eq!(ex[1].target_count(), 3);
    }

    #[test]
    fn synth_rows_learn_exactly_the_pairs_and_the_eos() {
        let (_d, t) = tok();
        let context = "Zorvia is a river town.";
        let pairs = [QaPair::new("Where is Zorvia?", "On a river."), QaPair::new("What is it?", "A town.")];
        // The tiny tokenizer has no BOS: `<s>` becomes its end-of-text token, id 0, as `</s>` does.
        let (bos, eos) = synth_marker_ids(&t, 0);
        assert_eq!((bos, eos), (0, 0));
        let e = encode_synth(&t, context, &pairs, bos, eos).unwrap();
        // One token per character. Prompt: BOS, " <CON> " (7), the context, " </CON>" (7), "\n\n" (2).
        let prompt_len = 1 + 7 + context.len() + 7 + 2;
        let compre = "<QUE> Where is Zorvia? <ANS> On a river. </END>\n\n<QUE> What is it? <ANS> A town. </END>";
        assert_eq!(e.ids.len(), prompt_len + compre.len() + 1);
        // The split point also equals the token count of the context part encoded alone.
        assert_eq!(prompt_len, 1 + t.encode(&format!(" <CON> {context} </CON>\n\n"), false).unwrap().len());
        let expected: Vec<bool> = (0..e.ids.len()).map(|i| i >= prompt_len).collect();
        assert_eq!(e.targets, expected);
        // BOS once at the start (the next token is the space of " <CON>"), EOS last, and the
        // targets decode to exactly the pairs.
        assert_eq!(e.ids[0], 0);
        assert_eq!(t.decode(&e.ids[1..2], false).unwrap(), " ");
        assert_eq!(*e.ids.last().unwrap(), 0);
        let learned: Vec<u32> = e.ids.iter().zip(&e.targets).filter(|(_, &m)| m).map(|(i, _)| *i).collect();
        assert_eq!(t.decode(&learned[..learned.len() - 1], false).unwrap(), compre);
        // With a character tokenizer the parts tokenized apart are the whole string tokenized.
        let whole = synth_format::cook_demo(context, &pairs);
        assert_eq!(e.ids, synth_format::encode_pieces(&whole, bos, eos, |s| t.encode(s, false).unwrap()));
        // A tokenizer's own BOS id is used when it has one; the EOS stays the stage's.
        let e = encode_synth(&t, context, &pairs, 1, 0).unwrap();
        assert_eq!((e.ids[0], *e.ids.last().unwrap()), (1, 0));
        assert_eq!(e.ids.iter().filter(|&&i| i == 1).count(), 1);
    }

    #[test]
    fn synth_rows_are_read_packed_and_keep_their_metadata_out() {
        let (d, t) = tok();
        let p = d.path().join("synth.jsonl");
        std::fs::write(
            &p,
            "{\"context\":\"abc\",\"qa_list\":[[\"q\",\"a\"]],\"entity\":\"x\",\"split\":\"train_raw\"}\n\
             {\"text\":\"plain\"}\n{\"qa_list\":[[\"Q1\",\"A1\"],[\"Q2\",\"A2\"]],\"context\":\"defg\"}\n",
        )
        .unwrap();
        let (ex, _) = read_jsonl(&p, &t, true, 0, WIDE).unwrap();
        // Row 1: prompt 1 + 7 + 3 + 9 = 20 tokens, then "<QUE> q <ANS> a </END>" (22) and EOS.
        assert_eq!((ex[0].ids.len(), ex[0].target_count()), (20 + 22 + 1, 22 + 1));
        assert!(!ex[0].targets[19] && ex[0].targets[20]);
        assert_eq!(ex[1].target_count(), 5);
        assert_eq!(ex[2].targets.iter().position(|&m| m), Some(1 + 7 + 4 + 9));
        // Packing keeps every example's own mask.
        let packed = pack(&ex, 1000);
        assert_eq!(packed.len(), 1);
        assert_eq!(packed[0].targets, ex.iter().flat_map(|e| e.targets.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn bad_synth_rows_name_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("qa.jsonl");
        let good = "{\"context\":\"abc\",\"qa_list\":[[\"q\",\"a\"]]}\n";
        let fails = |row: &str, needles: &[&str]| {
            std::fs::write(&p, format!("{good}{row}\n")).unwrap();
            let e = format!("{:#}", read_rows(&p).err().unwrap_or_else(|| panic!("accepted {row}")));
            assert!(e.contains("qa.jsonl:2: "), "{row}: {e}");
            for n in needles {
                assert!(e.contains(n), "{row}: expected {n:?} in {e}");
            }
        };
        fails(r#"{"context":"abc"}"#, &["\"context\" without \"qa_list\""]);
        fails(r#"{"qa_list":[["q","a"]]}"#, &["\"qa_list\" without \"context\""]);
        fails(r#"{"context":"  ","qa_list":[["q","a"]]}"#, &["empty \"context\""]);
        fails(r#"{"context":7,"qa_list":[["q","a"]]}"#, &["\"context\" must be a string", "the number 7"]);
        fails(r#"{"context":"abc","qa_list":[]}"#, &["empty \"qa_list\""]);
        fails(r#"{"context":"abc","qa_list":"q a"}"#, &["\"qa_list\" must be a list of [question, answer] pairs", "a string"]);
        fails(r#"{"context":"abc","qa_list":[["q","a"],["q"]]}"#, &["\"qa_list\"[1] must be [question, answer], two strings", "a list of 1"]);
        fails(r#"{"context":"abc","qa_list":[["q","a","b"]]}"#, &["\"qa_list\"[0] must be [question, answer]", "a list of 3"]);
        fails(r#"{"context":"abc","qa_list":[["q",3]]}"#, &["\"qa_list\"[0] must be [question, answer], two strings"]);
        fails(r#"{"context":"abc","qa_list":[{"Q":"q","A":"a"}]}"#, &["\"qa_list\"[0]", "an object"]);
        fails(r#"{"context":"abc","qa_list":[["q"," "]]}"#, &["\"qa_list\"[0]: empty answer"]);
        fails(r#"{"context":"abc","qa_list":[["q","a <ANS> b"]]}"#, &["\"qa_list\"[0] (answer) contains the literal <ANS>"]);
        fails(r#"{"context":"a </s> b","qa_list":[["q","a"]]}"#, &["\"context\" contains the literal </s>"]);
        fails(r#"{"context":"abc","qa_list":[["q","a"]],"text":"t"}"#, &["exactly one of", "context+qa_list", "\"text\""]);
        // A row of no known shape lists the synthesizer format among the expected ones.
        fails(r#"{"contxt":"abc"}"#, &["not a valid row", "{\"context\",\"qa_list\"}"]);
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
