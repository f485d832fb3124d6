//! Reward shaping beyond the verifier, as pure functions: the format rewards some recipes
//! fold into the score (docs/METHODS.md §1 step 3, §7.1, §7.2), each a function of the
//! response text and the verifier's verdict, and DAPO's overlong penalty (§2.2), a function
//! of the response length.
//!
//! - `think_answer` — STILL-Zero (`VERL-STILL/.../reward_manager/still.py`): the score is 1
//!   only if the answer is correct **and** the text is `<think>…</think><answer>…</answer>`:
//!   starts with `<think>`, ends with `</answer>`, exactly one of each tag, in order, with a
//!   non-empty think and answer and nothing but white space between `</think>` and `<answer>`.
//! - `boxed` — STILL-3-1.5B's reward server: +1 correct, −1 wrong, −2 when the response has
//!   no `\boxed` at all (unfinished); the three values are configurable.

use serde::{Deserialize, Serialize};

/// DAPO overlong penalty (§2.2): `min(−(len − (L − buffer))/buffer · penalty, 0)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlong {
    pub buffer: usize,
    #[serde(default = "d_one")]
    pub penalty: f64,
}

fn d_one() -> f64 {
    1.0
}

impl Overlong {
    /// The penalty (≤ 0) added to the score of a response of `len` tokens.
    pub fn penalty(&self, len: usize, max_new_tokens: usize) -> f64 {
        overlong_penalty(len, max_new_tokens, self.buffer, self.penalty)
    }

    /// `Err((key, message))` unless `1 ≤ buffer < max_new_tokens`.
    pub fn check(&self, max_new_tokens: usize) -> Result<(), (String, String)> {
        if self.buffer == 0 || self.buffer >= max_new_tokens {
            return Err(("overlong.buffer".into(), format!("the overlong buffer must be between 1 and max_new_tokens − 1 = {}", max_new_tokens - 1)));
        }
        Ok(())
    }
}

/// DAPO's soft overlong punishment (§2.2): 0 up to `max_new_tokens − buffer` tokens, then
/// falling linearly to `−penalty` at `max_new_tokens`.
pub fn overlong_penalty(len: usize, max_new_tokens: usize, buffer: usize, penalty: f64) -> f64 {
    let expected = (max_new_tokens - buffer) as f64;
    (-(len as f64 - expected) / buffer as f64 * penalty).min(0.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FormatReward {
    ThinkAnswer,
    Boxed {
        #[serde(default = "d_correct")]
        correct: f64,
        #[serde(default = "d_wrong")]
        wrong: f64,
        #[serde(default = "d_missing")]
        missing: f64,
    },
}

fn d_correct() -> f64 {
    1.0
}
fn d_wrong() -> f64 {
    -1.0
}
fn d_missing() -> f64 {
    -2.0
}

/// What a format rule made of one response: its score and, when the format failed, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Formatted {
    pub score: f64,
    pub format_ok: bool,
    pub reason: Option<&'static str>,
}

impl FormatReward {
    /// The score of `response` given whether the verifier judged its answer correct.
    pub fn score(&self, response: &str, correct: bool) -> Formatted {
        match self {
            FormatReward::ThinkAnswer => match think_answer_format(response) {
                Ok(()) => Formatted { score: f64::from(u8::from(correct)), format_ok: true, reason: None },
                Err(why) => Formatted { score: 0.0, format_ok: false, reason: Some(why) },
            },
            FormatReward::Boxed { correct: c, wrong, missing } => {
                if !response.contains("\\boxed") {
                    Formatted { score: *missing, format_ok: false, reason: Some("no \\boxed answer") }
                } else {
                    Formatted { score: if correct { *c } else { *wrong }, format_ok: true, reason: None }
                }
            }
        }
    }
}

/// STILL-Zero's strict `<think>…</think><answer>…</answer>` check.
pub fn think_answer_format(text: &str) -> Result<(), &'static str> {
    let t = text.trim();
    if !t.starts_with("<think>") {
        return Err("does not start with <think>");
    }
    if !t.ends_with("</answer>") {
        return Err("does not end with </answer>");
    }
    for tag in ["<think>", "</think>", "<answer>", "</answer>"] {
        if t.matches(tag).count() != 1 {
            return Err("each of <think>, </think>, <answer>, </answer> must appear exactly once");
        }
    }
    // All four exist once, so the positions are defined.
    let pos = |tag: &str| t.find(tag).unwrap_or(0);
    let (open_t, close_t, open_a, close_a) = (pos("<think>"), pos("</think>"), pos("<answer>"), pos("</answer>"));
    if !(open_t < close_t && close_t < open_a && open_a < close_a) {
        return Err("tags out of order");
    }
    if t[open_t + "<think>".len()..close_t].trim().is_empty() {
        return Err("empty <think>");
    }
    if t[open_a + "<answer>".len()..close_a].trim().is_empty() {
        return Err("empty <answer>");
    }
    if !t[close_t + "</think>".len()..open_a].trim().is_empty() {
        return Err("text between </think> and <answer>");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_penalty_is_zero_then_linear_in_the_buffer() {
        // L = 24, buffer 4: free up to 20 tokens, then −penalty/4 per token.
        let o = Overlong { buffer: 4, penalty: 0.5 };
        for (len, want) in [(1, 0.0), (20, 0.0), (21, -0.125), (22, -0.25), (24, -0.5)] {
            assert_eq!(o.penalty(len, 24), want, "len {len}");
        }
        assert!(o.check(24).is_ok());
        assert_eq!(o.check(4).unwrap_err().0, "overlong.buffer");
        assert!(Overlong { buffer: 0, penalty: 1.0 }.check(24).is_err());
    }

    #[test]
    fn think_answer_accepts_only_the_strict_shape() {
        assert_eq!(think_answer_format("<think>2+2</think>\n<answer>4</answer>"), Ok(()));
        assert_eq!(think_answer_format("  <think>a</think><answer>b</answer>\n"), Ok(()));
        let bad = [
            ("<answer>4</answer>", "does not start with <think>"),
            ("<think>x</think><answer>4</answer> done", "does not end with </answer>"),
            ("<think>x</think><think>y</think><answer>4</answer>", "each of <think>, </think>, <answer>, </answer> must appear exactly once"),
            ("<think></answer></think><answer>4", "does not end with </answer>"),
            ("<think> </think><answer>4</answer>", "empty <think>"),
            ("<think>x</think><answer> </answer>", "empty <answer>"),
            ("<think>x</think>so<answer>4</answer>", "text between </think> and <answer>"),
            ("<think>x<answer></think>4</answer>", "tags out of order"),
        ];
        for (text, why) in bad {
            assert_eq!(think_answer_format(text), Err(why), "{text}");
        }
    }

    #[test]
    fn think_answer_needs_correct_and_well_formed() {
        let f = FormatReward::ThinkAnswer;
        assert_eq!(f.score("<think>x</think><answer>4</answer>", true).score, 1.0);
        assert_eq!(f.score("<think>x</think><answer>5</answer>", false).score, 0.0);
        let bad = f.score("4", true);
        assert_eq!((bad.score, bad.format_ok), (0.0, false));
    }

    #[test]
    fn boxed_scores_correct_wrong_and_missing() {
        let f: FormatReward = toml::from_str::<toml::Table>("kind = \"boxed\"").unwrap().try_into().unwrap();
        assert_eq!(f.score("so \\boxed{4}", true).score, 1.0);
        assert_eq!(f.score("so \\boxed{5}", false).score, -1.0);
        assert_eq!(f.score("I think 4", true).score, -2.0, "no box is 'unfinished' whatever the answer");
        let g: FormatReward = toml::from_str::<toml::Table>("kind = \"boxed\"\nwrong = 0.0\nmissing = -0.5").unwrap().try_into().unwrap();
        assert_eq!(g.score("x", false).score, -0.5);
        assert_eq!(g.score("\\boxed{x}", false).score, 0.0);
        assert!(toml::from_str::<toml::Table>("kind = \"boxed\"\nmisssing = 1").unwrap().try_into::<FormatReward>().is_err());
    }
}
