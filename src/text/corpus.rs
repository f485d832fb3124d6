//! Corpus readers: the one way every stage that reads raw text (synthesis, pre-training
//! style data, OOD corpora) turns files and folders into [`Document`]s.
//!
//! - Formats: plain text (one document per file, or per blank-line-separated paragraph),
//!   JSONL (one object per line, the text under `text_key`) and Parquet (the string column
//!   `text_key`, streamed row group by row group without arrow).
//! - Memory is bounded: a text file is read whole only when its size is within
//!   `max_doc_bytes`; a JSONL or text line longer than that is read and dropped, never held.
//! - Bad rows are skipped and counted by reason ([`Skips`]), never fatal; what is fatal is an
//!   I/O failure, or an input that yields no document at all (named, with its skips).
//! - Document ids count the documents yielded from 0, so the same input gives the same ids
//!   and a resumed run can skip those below its checkpoint.

use anyhow::{bail, Context, Result};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// How to read a file. `None` in [`CorpusConfig::format`] means: from each file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Jsonl,
    Parquet,
}

/// What one document of a text file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The whole file.
    Document,
    /// Each block of lines between blank (whitespace-only) lines.
    Paragraph,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusConfig {
    pub format: Option<Format>,
    pub split: Split,
    /// JSONL key / Parquet column holding the text.
    pub text_key: String,
    /// Larger documents are skipped as "too large" (and a JSONL line longer than this).
    pub max_doc_bytes: usize,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig { format: None, split: Split::Document, text_key: "text".into(), max_doc_bytes: 8 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Index among the documents yielded (0, 1, 2, …).
    pub id: u64,
    /// Where it came from: `path` or `path:LINE` (text), `path:LINE` (JSONL), `path#ROW` (Parquet, rows from 0).
    pub origin: String,
    pub text: String,
    /// Input bytes this document consumed (for text and JSONL including newlines and the
    /// blank or bad lines since the previous row; for Parquet the value's bytes).
    pub raw_bytes: u64,
}

/// How many rows were skipped, by reason, with the first few examples.
#[derive(Debug, Clone, Default)]
pub struct Skips {
    total: u64,
    counts: BTreeMap<String, u64>,
    examples: Vec<String>,
}

/// Examples kept in [`Skips`]: enough to see the problem, few enough for stats.json.
const MAX_EXAMPLES: usize = 5;

impl Skips {
    pub fn total(&self) -> u64 {
        self.total
    }
    /// Skipped rows by reason ("invalid utf-8", "empty", "too large", "missing key",
    /// "not a string", "not json", "null").
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }
    /// The first few skips, each naming `file:line` (or `file#row`) and the reason.
    pub fn examples(&self) -> &[String] {
        &self.examples
    }
    fn add(&mut self, reason: &str, example: &str) {
        self.total += 1;
        *self.counts.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(example.to_string());
        }
    }
}

/// One file to read, and which of the paths given to [`Corpus::open`] it came from.
struct FileEntry {
    path: PathBuf,
    format: Format,
    input: usize,
    size: u64,
    /// Parquet: the index of the text column among the leaf columns (checked at open).
    column: usize,
}

/// Per path given to `open`: what it yielded, for the "yielded no document" error.
struct InputState {
    path: PathBuf,
    docs: u64,
    skipped: u64,
    first_skip: Option<String>,
    failed: bool,
}

pub struct Corpus {
    cfg: CorpusConfig,
    files: Vec<FileEntry>,
    inputs: Vec<InputState>,
    next_file: usize,
    current: Option<(usize, Reader)>,
    next_id: u64,
    total_bytes: u64,
    /// Bytes of the files already finished.
    done_bytes: u64,
    skips: Skips,
}

impl Corpus {
    /// Check every path and list the files to read: folders are expanded recursively, in
    /// sorted order, skipping hidden entries; Parquet files are checked for the text column.
    pub fn open(paths: &[PathBuf], cfg: &CorpusConfig) -> Result<Corpus> {
        if paths.is_empty() {
            bail!("no corpus input given; list files or folders in `input`");
        }
        if cfg.max_doc_bytes == 0 {
            bail!("`max_doc_bytes` is 0, so every document would be skipped; give a size in bytes (default 8388608)");
        }
        let mut files = Vec::new();
        let mut inputs = Vec::new();
        for (input, path) in paths.iter().enumerate() {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("{}: cannot open this corpus input; check the path in `input`", path.display()))?;
            let mut found = Vec::new();
            if meta.is_dir() {
                list_folder(path, &mut found, 0)?;
                if found.is_empty() {
                    bail!("{}: the folder holds no files (hidden ones are skipped); put the corpus in it or fix `input`", path.display());
                }
            } else {
                found.push(path.clone());
            }
            for file in found {
                files.push(check_file(file, input, cfg, meta.is_dir())?);
            }
            inputs.push(InputState { path: path.clone(), docs: 0, skipped: 0, first_skip: None, failed: false });
        }
        let total_bytes = files.iter().map(|f| f.size).sum();
        Ok(Corpus {
            cfg: cfg.clone(),
            files,
            inputs,
            next_file: 0,
            current: None,
            next_id: 0,
            total_bytes,
            done_bytes: 0,
            skips: Skips::default(),
        })
    }

    /// Sum of the file sizes at open (for progress and ETA).
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Input bytes consumed so far; equals `total_bytes` at the end unless a file changed meanwhile.
    pub fn bytes_read(&self) -> u64 {
        self.done_bytes + self.current.as_ref().map_or(0, |(_, r)| r.consumed())
    }

    pub fn skipped(&self) -> &Skips {
        &self.skips
    }

    /// The current file is done: account its bytes, and if it was the last file of its input
    /// and that input yielded nothing, the error saying so.
    fn finish_file(&mut self, index: usize, consumed: u64) -> Option<anyhow::Error> {
        let file = &self.files[index];
        // Parquet values are a fraction of the file (footer, compression), so a finished
        // Parquet file counts whole; text and JSONL count what was actually read.
        self.done_bytes += if file.format == Format::Parquet { file.size } else { consumed };
        let last_of_input = self.files.get(index + 1).is_none_or(|next| next.input != file.input);
        let input = &self.inputs[file.input];
        if !last_of_input || input.docs > 0 || input.failed {
            return None;
        }
        let what = match &input.first_skip {
            Some(first) => format!("{} skipped; first: {first}", input.skipped),
            None => "it holds no text".to_string(),
        };
        Some(anyhow::anyhow!(
            "input {} yielded no document ({what}); check `format`, `text_key` and `max_doc_bytes`",
            input.path.display()
        ))
    }
}

impl Iterator for Corpus {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (index, reader) = match &mut self.current {
                Some((index, reader)) => (*index, reader),
                None => {
                    let index = self.next_file;
                    let file = self.files.get(index)?;
                    self.next_file += 1;
                    match Reader::open(file, &self.cfg) {
                        Ok(reader) => self.current = Some((index, reader)),
                        Err(e) => {
                            self.inputs[file.input].failed = true;
                            self.done_bytes += file.size;
                            return Some(Err(e));
                        }
                    }
                    continue;
                }
            };
            let input = self.files[index].input;
            match reader.next_item() {
                Some(Ok(Item::Doc { origin, text, raw_bytes })) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.inputs[input].docs += 1;
                    return Some(Ok(Document { id, origin, text, raw_bytes }));
                }
                Some(Ok(Item::Skip { reason, example })) => {
                    self.skips.add(reason, &example);
                    let state = &mut self.inputs[input];
                    state.skipped += 1;
                    state.first_skip.get_or_insert(example);
                }
                Some(Err(e)) => {
                    // An I/O failure leaves the rest of this file unreadable: report it and
                    // move on (a caller that stops here has the error; one that goes on, the rest).
                    let consumed = reader.consumed();
                    self.current = None;
                    self.inputs[input].failed = true;
                    let _ = self.finish_file(index, consumed);
                    return Some(Err(e));
                }
                None => {
                    let consumed = reader.consumed();
                    self.current = None;
                    if let Some(e) = self.finish_file(index, consumed) {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// Folders deeper than this are refused: a symlink loop would otherwise recurse forever.
const MAX_DEPTH: usize = 32;

/// The files under `dir`, recursively, sorted by name, hidden entries skipped.
fn list_folder(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{}: folders nested more than {MAX_DEPTH} deep (a symlink loop?); give a shallower folder", dir.display());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list this folder; check its permissions", dir.display()))? {
        let entry = entry.with_context(|| format!("{}: cannot list this folder", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        entries.push(entry.path());
    }
    entries.sort();
    for path in entries {
        // Follows symlinks, so a linked file or folder is read like a real one.
        let meta = std::fs::metadata(&path).with_context(|| format!("{}: cannot open it (a broken symlink?)", path.display()))?;
        if meta.is_dir() {
            list_folder(&path, out, depth + 1)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The format of `path`: the configured one, else from the extension.
fn format_of(path: &Path, cfg: &CorpusConfig, in_folder: bool) -> Result<Format> {
    if let Some(format) = cfg.format {
        return Ok(format);
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    Ok(match ext.as_str() {
        "txt" | "text" | "md" => Format::Text,
        // Hugging Face data sets often name JSON-lines files `.json`.
        "jsonl" | "ndjson" | "json" => Format::Jsonl,
        "parquet" => Format::Parquet,
        _ => {
            let ext = if ext.is_empty() { "no extension".to_string() } else { format!("extension `.{ext}`") };
            let folder = if in_folder { " (or move the file out of the folder)" } else { "" };
            bail!(
                "{}: cannot tell the corpus format from its {ext}; set `format` to \"text\", \"jsonl\" or \"parquet\"{folder}",
                path.display()
            )
        }
    })
}

/// Check one file can be read (and, for Parquet, has a string column `text_key`).
fn check_file(path: PathBuf, input: usize, cfg: &CorpusConfig, in_folder: bool) -> Result<FileEntry> {
    let format = format_of(&path, cfg, in_folder)?;
    let file = File::open(&path).with_context(|| format!("{}: cannot read this corpus file; check its permissions", path.display()))?;
    let size = file.metadata().with_context(|| format!("{}: cannot read its size", path.display()))?.len();
    let column = if format == Format::Parquet { parquet_column(file, &path, &cfg.text_key)? } else { 0 };
    Ok(FileEntry { path, format, input, size, column })
}

/// The leaf index of the top-level string column `key` of a Parquet file, or an error
/// saying what the file holds instead.
fn parquet_column(file: File, path: &Path, key: &str) -> Result<usize> {
    let reader = SerializedFileReader::new(file).map_err(|e| {
        anyhow::anyhow!("{}: not a readable Parquet file ({e}); if it is another format, set `format`", path.display())
    })?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let fields = schema.root_schema().get_fields();
    let Some(field) = fields.iter().find(|f| f.name() == key) else {
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        bail!("{}: no column `{key}`; its columns are: {}; set `text_key` to the one holding the text", path.display(), names.join(", "));
    };
    let repeated = field.get_basic_info().has_repetition() && field.get_basic_info().repetition() == parquet::basic::Repetition::REPEATED;
    if field.is_group() || repeated {
        bail!(
            "{}: column `{key}` is nested (a list or struct); nested columns are not supported, give a flat string column in `text_key`",
            path.display()
        );
    }
    if field.get_physical_type() != parquet::basic::Type::BYTE_ARRAY {
        bail!(
            "{}: column `{key}` holds {} values, not strings; set `text_key` to a string column",
            path.display(),
            field.get_physical_type()
        );
    }
    schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [key])
        .with_context(|| format!("{}: column `{key}` is in the schema but has no column chunk; the file looks corrupt", path.display()))
}

/// What a file reader produces: a document, or a skipped row and why.
enum Item {
    Doc { origin: String, text: String, raw_bytes: u64 },
    Skip { reason: &'static str, example: String },
}

fn skip(reason: &'static str, example: String) -> Option<Result<Item>> {
    Some(Ok(Item::Skip { reason, example }))
}

enum Reader {
    /// A whole text file: one item, then done.
    Whole { path: PathBuf, size: u64, max: usize, consumed: u64, done: bool },
    Paragraphs { lines: LineReader, max: usize, pending: u64 },
    Jsonl { lines: LineReader, max: usize, key: String, pending: u64 },
    Parquet(Box<ParquetRows>),
}

impl Reader {
    fn open(file: &FileEntry, cfg: &CorpusConfig) -> Result<Reader> {
        let max = cfg.max_doc_bytes;
        Ok(match (file.format, cfg.split) {
            (Format::Text, Split::Document) => Reader::Whole { path: file.path.clone(), size: file.size, max, consumed: 0, done: false },
            (Format::Text, Split::Paragraph) => Reader::Paragraphs { lines: LineReader::open(&file.path)?, max, pending: 0 },
            (Format::Jsonl, _) => Reader::Jsonl { lines: LineReader::open(&file.path)?, max, key: cfg.text_key.clone(), pending: 0 },
            (Format::Parquet, _) => Reader::Parquet(Box::new(ParquetRows::open(file, max)?)),
        })
    }

    fn consumed(&self) -> u64 {
        match self {
            Reader::Whole { consumed, .. } => *consumed,
            Reader::Paragraphs { lines, .. } | Reader::Jsonl { lines, .. } => lines.offset,
            Reader::Parquet(rows) => rows.consumed,
        }
    }

    fn next_item(&mut self) -> Option<Result<Item>> {
        match self {
            Reader::Whole { path, size, max, consumed, done } => {
                if std::mem::replace(done, true) {
                    return None;
                }
                Some(read_whole(path, *size, *max, consumed))
            }
            Reader::Paragraphs { lines, max, pending } => next_paragraph(lines, *max, pending),
            Reader::Jsonl { lines, max, key, pending } => next_jsonl(lines, *max, key, pending),
            Reader::Parquet(rows) => rows.next_item(),
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A whole text file as one document. Too large is decided by the size at open, before
/// reading; the read is bounded anyway in case the file grew since.
fn read_whole(path: &Path, size: u64, max: usize, consumed: &mut u64) -> Result<Item> {
    let name = path.display();
    let too_large = |n: u64| Item::Skip { reason: "too large", example: format!("{name}: too large ({n} bytes > max_doc_bytes = {max})") };
    if size > max as u64 {
        *consumed = size;
        return Ok(too_large(size));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("{name}: cannot read"))?;
    *consumed = bytes.len() as u64;
    if bytes.len() > max {
        return Ok(too_large(bytes.len() as u64));
    }
    let body = bytes.strip_prefix(BOM).unwrap_or(&bytes);
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            let line = body[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            let offset = at + (bytes.len() - body.len());
            return Ok(Item::Skip { reason: "invalid utf-8", example: format!("{name}:{line}: invalid utf-8 at byte {offset} of the file") });
        }
    };
    if text.trim().is_empty() {
        return Ok(Item::Skip { reason: "empty", example: format!("{name}: empty (whitespace only)") });
    }
    // A Windows file reads like a Unix one.
    let text = if text.contains('\r') { text.replace("\r\n", "\n") } else { text.to_string() };
    Ok(Item::Doc { origin: name.to_string(), text, raw_bytes: bytes.len() as u64 })
}

/// Lines of a file, each held to a byte limit: the rest of a longer line is read and dropped.
struct LineReader {
    reader: BufReader<File>,
    path: PathBuf,
    /// Bytes consumed from the file so far.
    offset: u64,
    /// 1-based number of the line last read.
    number: u64,
    /// The last line read, without its newline, `\r` or (on line 1) BOM; at most limit + 1 bytes.
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
struct LineInfo {
    number: u64,
    /// File offset of `buf[0]` (for byte offsets of invalid UTF-8).
    start: u64,
    /// Bytes of the file this line took, newline included.
    len: u64,
    /// Longer than the limit (`buf` then holds only a prefix).
    over: bool,
}

impl LineReader {
    fn open(path: &Path) -> Result<LineReader> {
        let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Ok(LineReader { reader: BufReader::new(file), path: path.to_path_buf(), offset: 0, number: 0, buf: Vec::new() })
    }

    fn next_line(&mut self, limit: usize) -> Result<Option<LineInfo>> {
        self.buf.clear();
        let mut start = self.offset;
        let mut len = 0u64; // bytes of the line, newline excluded
        let mut newline = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::Error::new(e).context(format!("{}:{}: cannot read", self.path.display(), self.number + 1))),
            };
            if chunk.is_empty() {
                break;
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            // Keep one byte past the limit: a trailing `\r` may still bring it back within.
            let room = (limit + 1).saturating_sub(self.buf.len()).min(take);
            self.buf.extend_from_slice(&chunk[..room]);
            len += take as u64;
            self.reader.consume(if done { take + 1 } else { take });
            if done {
                newline = true;
                break;
            }
        }
        if len == 0 && !newline {
            return Ok(None);
        }
        self.number += 1;
        let total = len + newline as u64;
        self.offset += total;
        let mut over = len > self.buf.len() as u64;
        if !over {
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            over = self.buf.len() > limit;
        }
        if self.number == 1 && self.buf.starts_with(BOM) {
            self.buf.drain(..BOM.len());
            start += BOM.len() as u64;
        }
        Ok(Some(LineInfo { number: self.number, start, len: total, over }))
    }
}

/// The next blank-line-separated block of a text file.
fn next_paragraph(lines: &mut LineReader, max: usize, pending: &mut u64) -> Option<Result<Item>> {
    let mut first_line = None;
    let mut text = String::new();
    let mut too_large = false;
    let mut bad_at = None; // file offset of the first invalid UTF-8 byte
    loop {
        let info = match lines.next_line(max) {
            Ok(Some(info)) => info,
            Ok(None) => break,
            Err(e) => return Some(Err(e)),
        };
        *pending += info.len;
        let decoded = if info.over { None } else { Some(std::str::from_utf8(&lines.buf)) };
        if let Some(Ok(line)) = &decoded {
            if line.trim().is_empty() {
                if first_line.is_some() {
                    break;
                }
                continue;
            }
        }
        first_line.get_or_insert(info.number);
        if too_large || bad_at.is_some() {
            continue; // the block is skipped; read on to its end
        }
        match decoded {
            None => too_large = true,
            Some(Err(e)) => bad_at = Some(info.start + e.valid_up_to() as u64),
            Some(Ok(line)) => {
                let newline = usize::from(!text.is_empty());
                if text.len() + newline + line.len() > max {
                    too_large = true;
                } else {
                    if newline == 1 {
                        text.push('\n');
                    }
                    text.push_str(line);
                }
            }
        }
        if too_large {
            text = String::new(); // free it: the block is skipped anyway
        }
    }
    let line = first_line?;
    let origin = format!("{}:{line}", lines.path.display());
    let raw_bytes = std::mem::take(pending);
    if let Some(at) = bad_at {
        return skip("invalid utf-8", format!("{origin}: invalid utf-8 at byte {at} of the file"));
    }
    if too_large {
        return skip("too large", format!("{origin}: paragraph too large (over max_doc_bytes = {max})"));
    }
    Some(Ok(Item::Doc { origin, text, raw_bytes }))
}

/// The next JSONL row with text (or the next skipped one).
fn next_jsonl(lines: &mut LineReader, max: usize, key: &str, pending: &mut u64) -> Option<Result<Item>> {
    loop {
        let info = match lines.next_line(max) {
            Ok(Some(info)) => info,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        *pending += info.len;
        let origin = format!("{}:{}", lines.path.display(), info.number);
        if info.over {
            *pending = 0;
            return skip("too large", format!("{origin}: line too large (over max_doc_bytes = {max})"));
        }
        let line = match std::str::from_utf8(&lines.buf) {
            Ok(l) => l,
            Err(e) => {
                *pending = 0;
                let at = info.start + e.valid_up_to() as u64;
                return skip("invalid utf-8", format!("{origin}: invalid utf-8 at byte {at} of the file"));
            }
        };
        if line.trim().is_empty() {
            continue; // blank lines are layout, not rows
        }
        let found = text_field(line, key);
        let raw_bytes = std::mem::take(pending);
        return match found {
            Err(e) => {
                let message = e.to_string();
                // serde_json appends " at line 1 column N"; the line is ours, the column is the news.
                let message = message.split(" at line ").next().unwrap_or(&message);
                skip("not json", format!("{origin}: not json at column {}: {message}", e.column()))
            }
            Ok(None) => skip("missing key", format!("{origin}: no key `{key}`")),
            Ok(Some(serde_json::Value::Null)) => skip("null", format!("{origin}: `{key}` is null")),
            Ok(Some(serde_json::Value::String(text))) => {
                if text.trim().is_empty() {
                    skip("empty", format!("{origin}: `{key}` is empty (whitespace only)"))
                } else {
                    Some(Ok(Item::Doc { origin, text, raw_bytes }))
                }
            }
            Ok(Some(other)) => skip("not a string", format!("{origin}: `{key}` is {}, not a string", json_kind(&other))),
        };
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The value under `key` of the JSON object `line` (None: no such key), decoding only that
/// value: the other keys of a wide row are checked and dropped, never built.
fn text_field(line: &str, key: &str) -> serde_json::Result<Option<serde_json::Value>> {
    struct Field<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for Field<'_> {
        type Value = Option<serde_json::Value>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<serde_json::Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<String>()? {
                if k == self.0 {
                    // A repeated key: the last one wins, as in Python's json.loads.
                    found = Some(map.next_value::<serde_json::Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let found = Field(key).deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Values read from a Parquet column at a time: a page's worth, not a row group's.
const PARQUET_BATCH: usize = 256;

/// The text column of a Parquet file, one row group at a time.
struct ParquetRows {
    file: SerializedFileReader<File>,
    path: PathBuf,
    column: usize,
    max: usize,
    /// Definition level of a present value (below it: null).
    max_def: i16,
    next_group: usize,
    reader: Option<ColumnReaderImpl<ByteArrayType>>,
    defs: Vec<i16>,
    values: Vec<ByteArray>,
    /// Records in the current batch, the next one, and the next non-null value.
    records: usize,
    record: usize,
    value: usize,
    /// Row index in the file of the next record.
    row: u64,
    consumed: u64,
}

impl ParquetRows {
    fn open(entry: &FileEntry, max: usize) -> Result<ParquetRows> {
        let name = entry.path.display();
        let file = File::open(&entry.path).with_context(|| format!("{name}: cannot read"))?;
        let file = SerializedFileReader::new(file).with_context(|| format!("{name}: not a readable Parquet file"))?;
        let max_def = file.metadata().file_metadata().schema_descr().column(entry.column).max_def_level();
        Ok(ParquetRows {
            file,
            path: entry.path.clone(),
            column: entry.column,
            max,
            max_def,
            next_group: 0,
            reader: None,
            defs: Vec::new(),
            values: Vec::new(),
            records: 0,
            record: 0,
            value: 0,
            row: 0,
            consumed: 0,
        })
    }

    fn next_item(&mut self) -> Option<Result<Item>> {
        while self.record == self.records {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        let record = self.record;
        self.record += 1;
        let origin = format!("{}#{}", self.path.display(), self.row);
        self.row += 1;
        // With an optional column, a definition level below the maximum is a null; a
        // required column has no levels (and no nulls).
        if self.defs.get(record).is_some_and(|&d| d < self.max_def) {
            return skip("null", format!("{origin}: null"));
        }
        let Some(value) = self.values.get(self.value) else {
            return Some(Err(anyhow::anyhow!("{origin}: fewer values than rows in the column chunk; the file looks corrupt")));
        };
        self.value += 1;
        let bytes = value.data();
        self.consumed += bytes.len() as u64;
        if bytes.len() > self.max {
            return skip("too large", format!("{origin}: too large ({} bytes > max_doc_bytes = {})", bytes.len(), self.max));
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return skip("invalid utf-8", format!("{origin}: invalid utf-8 at byte {} of the value", e.valid_up_to())),
        };
        if text.trim().is_empty() {
            return skip("empty", format!("{origin}: empty (whitespace only)"));
        }
        Some(Ok(Item::Doc { origin, text: text.to_string(), raw_bytes: bytes.len() as u64 }))
    }

    /// Read the next batch of records, opening the next row group when one ends; false at the end.
    fn refill(&mut self) -> Result<bool> {
        let name = self.path.display();
        if self.reader.is_none() {
            if self.next_group == self.file.num_row_groups() {
                return Ok(false);
            }
            let group = self.file.get_row_group(self.next_group).with_context(|| format!("{name}: row group {}", self.next_group))?;
            self.next_group += 1;
            match group.get_column_reader(self.column).with_context(|| format!("{name}: row group {}", self.next_group - 1))? {
                ColumnReader::ByteArrayColumnReader(r) => self.reader = Some(r),
                // `open` checked the column's type; a row group disagreeing is a broken file.
                _ => bail!("{name}: the text column changes type within the file; the file looks corrupt"),
            }
        }
        let Some(reader) = self.reader.as_mut() else { return Ok(false) };
        self.defs.clear();
        self.values.clear();
        let (records, _, _) = reader
            .read_records(PARQUET_BATCH, Some(&mut self.defs), None, &mut self.values)
            .with_context(|| format!("{name}: reading row group {}", self.next_group - 1))?;
        if records == 0 {
            self.reader = None; // this row group is done
        }
        self.records = records;
        self.record = 0;
        self.value = 0;
        Ok(true)
    }
}
