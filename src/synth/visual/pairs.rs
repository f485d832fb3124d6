//! AdaMLLM step (B), the input: domain image–caption pairs in LLaMA-Factory / ShareGPT form
//! (synth-spec §2.3 item 1), a JSON array or JSONL of
//! `{"images": ["x.jpg"], "messages": [{"role": "user", "content": "<image>..."}, {"role":
//! "assistant", "content": caption}]}`. Each entry's `syn_id` is its index; image paths are
//! relative to the file's folder. Every error names the file and the entry (and the line, for
//! JSONL), and a missing image file is reported before any model is loaded.

use super::seed::ChatRow;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One input pair, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// Its index in the input (the reference's `syn_id`).
    pub syn_id: u64,
    /// The row as given (written back into the post-training data).
    pub row: ChatRow,
    /// The image file, resolved against the input's folder.
    pub image: PathBuf,
    /// The first assistant turn.
    pub caption: String,
    /// Where it is, for messages: `pairs.json: entry 3` or `pairs.jsonl:3`.
    pub at: String,
}

/// Reads and checks the pairs: one image each, a caption, the image file present.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the image–caption pairs {}", path.display()))?;
    const FORMAT: &str = "{\"images\": [\"x.png\"], \"messages\": [{\"role\": \"user\", \"content\": \"<image>...\"}, {\"role\": \"assistant\", \"content\": \"caption\"}]}";
    let mut rows: Vec<(ChatRow, String)> = Vec::new();
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(&text).with_context(|| format!("{}: not a JSON array of rows like {FORMAT}", path.display()))?;
        for (i, v) in values.into_iter().enumerate() {
            let at = format!("{}: entry {}", path.display(), i + 1);
            let row = serde_json::from_value(v).with_context(|| format!("{at}: not a row like {FORMAT}"))?;
            rows.push((row, at));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{}:{}", path.display(), i + 1);
            let row = serde_json::from_str(line).with_context(|| format!("{at}: not a row like {FORMAT}"))?;
            rows.push((row, at));
        }
    }
    if rows.is_empty() {
        bail!("{}: no image–caption pairs", path.display());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::with_capacity(rows.len());
    for (syn_id, (row, at)) in rows.into_iter().enumerate() {
        let [image] = &row.images[..] else {
            bail!("{at}: {} images; a pair has exactly one (\"images\": [\"x.png\"])", row.images.len());
        };
        let Some(caption) = row.messages.iter().find(|m| m.role == "assistant").map(|m| m.content.trim().to_string()).filter(|c| !c.is_empty()) else {
            bail!("{at}: no caption (an assistant message with text)");
        };
        let image = base.join(image);
        if !image.is_file() {
            bail!("{at}: the image file {} does not exist", image.display());
        }
        pairs.push(Pair { syn_id: syn_id as u64, caption, image, row, at });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_the_entry_and_the_missing_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let row = |img: &str| format!("{{\"images\": [\"{img}\"], \"messages\": [{{\"role\": \"user\", \"content\": \"<image>Describe.\"}}, {{\"role\": \"assistant\", \"content\": \"A dot.\"}}]}}");
        let p = dir.path().join("pairs.jsonl");
        std::fs::write(&p, format!("{}\n\n{}\n", row("a.png"), row("gone.png"))).unwrap();
        let err = format!("{:#}", read_pairs(&p).unwrap_err());
        assert!(err.contains("pairs.jsonl:3") && err.contains("gone.png") && err.contains("does not exist"), "{err}");
        let j = dir.path().join("pairs.json");
        std::fs::write(&j, format!("[{}, {}]", row("a.png"), row("a.png"))).unwrap();
        let pairs = read_pairs(&j).unwrap();
        assert_eq!(pairs.iter().map(|p| p.syn_id).collect::<Vec<_>>(), [0, 1]);
        assert_eq!((pairs[1].caption.as_str(), pairs[1].image.clone()), ("A dot.", dir.path().join("a.png")));
        std::fs::write(&j, format!("[{}, {{\"images\": [], \"messages\": []}}]", row("a.png"))).unwrap();
        let err = format!("{:#}", read_pairs(&j).unwrap_err());
        assert!(err.contains("pairs.json: entry 2: 0 images"), "{err}");
    }
}
