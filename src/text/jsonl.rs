//! Line-by-line reading of JSONL files with bounded memory: the one reader behind every
//! JSONL that retort takes from a user (training rows, problems, task instances).
//!
//! - A line is never held beyond [`MAX_LINE_BYTES`]: a longer one is an error naming the
//!   file and line as soon as the limit is passed, without reading the rest of it.
//! - A UTF-8 byte-order mark at the start of the file is skipped (editors on Windows write one).
//! - Invalid UTF-8 is an error naming the file, the line and the byte offset within it.
//! - Blank lines are skipped; line numbers stay those of the file (1-based).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The longest line any JSONL reader accepts: 8 MiB, about two million tokens of text,
/// far beyond any context a model here can take; a longer line is a mistake (a file
/// with no newlines, a base64 blob) and would only exhaust memory downstream.
pub const MAX_LINE_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: the line is longer than {limit} bytes (the limit on one row); split the row or the file — is it JSONL (one object per line)?", path.display())]
    TooLong { path: PathBuf, line: usize, limit: usize },
    #[error("{}:{line}: invalid UTF-8 at byte {offset} of the line; save the file as UTF-8", path.display())]
    Utf8 { path: PathBuf, line: usize, offset: usize },
}

/// The non-blank lines of a JSONL file with their 1-based line numbers.
pub struct Lines<R> {
    reader: BufReader<R>,
    path: PathBuf,
    line: usize,
    limit: usize,
    buf: Vec<u8>,
    failed: bool,
}

/// Open `path` for line-by-line reading.
pub fn open(path: &Path) -> Result<Lines<File>, JsonlError> {
    let file = File::open(path).map_err(|source| JsonlError::Io { path: path.to_path_buf(), source })?;
    Ok(Lines::new(file, path, MAX_LINE_BYTES))
}

impl<R: Read> Lines<R> {
    pub fn new(inner: R, path: &Path, limit: usize) -> Self {
        Lines { reader: BufReader::new(inner), path: path.to_path_buf(), line: 0, limit, buf: Vec::new(), failed: false }
    }

    /// Read the next raw line into `self.buf` (without its newline); false at end of file.
    fn read_line(&mut self) -> Result<bool, JsonlError> {
        self.buf.clear();
        let mut any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(JsonlError::Io { path: self.path.clone(), source }),
            };
            if chunk.is_empty() {
                return Ok(any);
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take > self.limit {
                return Err(JsonlError::TooLong { path: self.path.clone(), line: self.line + 1, limit: self.limit });
            }
            self.buf.extend_from_slice(&chunk[..take]);
            self.reader.consume(if done { take + 1 } else { take });
            if done {
                return Ok(true);
            }
        }
    }
}

impl<R: Read> Iterator for Lines<R> {
    type Item = Result<(usize, String), JsonlError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            match self.read_line() {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            self.line += 1;
            let mut bytes: &[u8] = &self.buf;
            if self.line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.last() == Some(&b'\r') {
                bytes = &bytes[..bytes.len() - 1];
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(JsonlError::Utf8 { path: self.path.clone(), line: self.line, offset: e.valid_up_to() }));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(Ok((self.line, text.to_string())));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8], limit: usize) -> Vec<Result<(usize, String), String>> {
        Lines::new(bytes, Path::new("x.jsonl"), limit).map(|r| r.map_err(|e| e.to_string())).collect()
    }

    #[test]
    fn numbers_lines_skips_blanks_bom_and_carriage_returns() {
        let got = lines(b"\xEF\xBB\xBF{\"a\":1}\r\n\n  \n{\"b\":2}", 100);
        assert_eq!(got, vec![Ok((1, "{\"a\":1}".to_string())), Ok((4, "{\"b\":2}".to_string()))]);
        // A BOM later in the file is not skipped (it is part of the data there).
        let got = lines(b"{}\n\xEF\xBB\xBF{}\n", 100);
        assert_eq!(got[1], Ok((2, "\u{feff}{}".to_string())));
    }

    #[test]
    fn a_line_over_the_limit_stops_at_the_limit_naming_the_line() {
        let mut data = b"{}\n".to_vec();
        data.extend(std::iter::repeat_n(b'a', 1000));
        data.extend(b"\n{}\n");
        let got = lines(&data, 64);
        assert_eq!(got[0], Ok((1, "{}".to_string())));
        let e = got[1].clone().unwrap_err();
        assert!(e.starts_with("x.jsonl:2: the line is longer than 64 bytes"), "{e}");
        assert_eq!(got.len(), 2, "reading stops at the first error");
        // Exactly at the limit is fine.
        assert_eq!(lines(&[b'a'; 64], 64), vec![Ok((1, "a".repeat(64)))]);
    }

    #[test]
    fn invalid_utf8_names_line_and_byte() {
        let got = lines(b"{}\n{\"a\":\"\xff\"}\n", 100);
        assert_eq!(got[1], Err("x.jsonl:2: invalid UTF-8 at byte 6 of the line; save the file as UTF-8".to_string()));
    }
}
