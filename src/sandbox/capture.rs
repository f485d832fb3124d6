//! Bounded capture of a program's output: the first and last characters survive, the middle
//! is replaced by a marker that says how much was dropped. A program that prints forever
//! costs a fixed amount of memory.

use std::collections::VecDeque;

/// The marker between head and tail; `{}` is the number of characters left out.
pub fn omission_marker(omitted: usize) -> String {
    format!("\n[... {omitted} characters omitted ...]\n")
}

/// `text` unchanged when it has at most `head + tail` characters, else its first `head`
/// characters, the omission marker, and its last `tail` characters.
pub fn truncate_middle(text: &str, head: usize, tail: usize) -> String {
    let total = text.chars().count();
    if total <= head + tail {
        return text.to_string();
    }
    let head_end = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let tail_start = text.char_indices().nth(total - tail).map_or(text.len(), |(i, _)| i);
    format!("{}{}{}", &text[..head_end], omission_marker(total - head - tail), &text[tail_start..])
}

/// Collects a byte stream, keeping at most `4 * head` bytes from the start and `4 * tail`
/// bytes from the end (4 = the longest UTF-8 character), and counting characters.
pub struct Capture {
    head_chars: usize,
    tail_chars: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total_bytes: usize,
    /// UTF-8 characters seen (bytes that are not continuation bytes).
    total_chars: usize,
}

impl Capture {
    pub fn new(head_chars: usize, tail_chars: usize) -> Self {
        Capture {
            head_chars,
            tail_chars,
            head: Vec::new(),
            tail: VecDeque::new(),
            total_bytes: 0,
            total_chars: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total_bytes += bytes.len();
        self.total_chars += bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count();
        let head_room = (4 * self.head_chars).saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..head_room]);
        let tail_cap = 4 * self.tail_chars;
        let rest = &bytes[head_room..];
        let rest = &rest[rest.len().saturating_sub(tail_cap)..];
        self.tail.extend(rest.iter().copied());
        while self.tail.len() > tail_cap {
            self.tail.pop_front();
        }
    }

    /// The captured text, truncated in the middle as [`truncate_middle`] would.
    pub fn finish(self) -> String {
        let kept_all = self.head.len() + self.tail.len() == self.total_bytes;
        let mut bytes = self.head;
        if kept_all {
            bytes.extend(self.tail);
            return truncate_middle(&String::from_utf8_lossy(&bytes), self.head_chars, self.tail_chars);
        }
        let head_text: String = String::from_utf8_lossy(&bytes).chars().take(self.head_chars).collect();
        let tail_bytes: Vec<u8> = self.tail.into_iter().collect();
        let tail_all = String::from_utf8_lossy(&tail_bytes);
        let tail_count = tail_all.chars().count();
        let tail_text: String = tail_all.chars().skip(tail_count.saturating_sub(self.tail_chars)).collect();
        let shown = head_text.chars().count() + tail_text.chars().count();
        format!("{head_text}{}{tail_text}", omission_marker(self.total_chars.saturating_sub(shown)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged() {
        assert_eq!(truncate_middle("hello", 3, 2), "hello");
        assert_eq!(truncate_middle("", 0, 0), "");
    }

    #[test]
    fn long_text_keeps_head_and_tail_by_characters() {
        // 10 characters, 2 of them two-byte: keep "αb" + "hi", omit 6.
        let text = "αbcdéfghhi";
        assert_eq!(truncate_middle(text, 2, 2), format!("αb{}hi", omission_marker(6)));
    }

    #[test]
    fn capture_matches_truncate_middle_whatever_the_chunking() {
        let text: String = (0..5000).map(|i| if i % 7 == 0 { 'é' } else { char::from(b'a' + (i % 26) as u8) }).collect();
        let expected = truncate_middle(&text, 100, 50);
        for chunk in [1usize, 3, 64, 4096, 100_000] {
            let mut capture = Capture::new(100, 50);
            for piece in text.as_bytes().chunks(chunk) {
                capture.push(piece);
            }
            assert_eq!(capture.finish(), expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn capture_keeps_everything_when_short() {
        let mut capture = Capture::new(10, 10);
        capture.push(b"0123456789");
        capture.push(b"abcdefghij");
        assert_eq!(capture.finish(), "0123456789abcdefghij");
        let mut capture = Capture::new(10, 10);
        capture.push(b"0123456789abcdefghijX");
        assert_eq!(capture.finish(), format!("0123456789{}bcdefghijX", omission_marker(1)));
    }
}
