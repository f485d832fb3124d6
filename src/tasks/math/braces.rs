//! The brace table every pass of the verifier shares (extraction of `\\boxed{…}`, LaTeX
//! argument scanning in normalisation): built once per string, so nested input stays linear.

use super::tally;

/// Where every `{` of a string closes, found in one pass with a stack. Callers look groups up
/// here instead of scanning forward from each brace: a scan per brace costs O(depth · n) on
/// nested input and O(n²) on a run of unclosed braces (`\boxed{\boxed{…`, `{{{…`).
pub(super) struct Braces {
    /// `close[i]`: byte index of the `}` matching a `{` at byte `i`; `usize::MAX` for bytes
    /// that are not a `{` or whose group never closes.
    pub(super) close: Vec<usize>,
}

impl Braces {
    pub(super) fn new(s: &str) -> Self {
        tally(s.len());
        let mut close = vec![usize::MAX; s.len()];
        let mut open = Vec::new();
        for (i, b) in s.bytes().enumerate() {
            match b {
                b'{' => open.push(i),
                // A `}` with nothing open closes nothing, as for a forward scan from any `{`.
                b'}' => {
                    if let Some(o) = open.pop() {
                        close[o] = i;
                    }
                }
                _ => {}
            }
        }
        Braces { close }
    }

    /// Content of the balanced `{…}` group that opens at byte `open` of `s` (the string the
    /// table was built from), and the byte index just past its closing brace.
    pub(super) fn group<'a>(&self, s: &'a str, open: usize) -> Option<(&'a str, usize)> {
        let close = *self.close.get(open)?;
        (close != usize::MAX).then(|| (&s[open + 1..close], close + 1))
    }
}

