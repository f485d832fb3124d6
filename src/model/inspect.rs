//! What a checkpoint holds, from its safetensors headers alone (no tensor data is read), with
//! the same checks as loading: a well-formed header, every tensor's bytes inside the file and
//! of the size its dtype and shape imply, and names and shapes equal to what the config needs.
//! `retort model info` uses it, so a truncated or mismatched folder is an error there too.

use super::config::ModelConfig;
use super::config::parameter_shapes;
use super::weights::{checkpoint_files, ignorable};
use super::{ModelError, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A header larger than this is not a real checkpoint's (they are a few hundred KB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor as a header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub file: PathBuf,
}

fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// The tensors of one safetensors file, checked against the file's length.
pub fn read_header(path: &Path) -> Result<Vec<HeaderTensor>> {
    let corrupt = |detail: String| ModelError::CorruptSafetensors { path: path.to_path_buf(), detail };
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| corrupt(format!("{file_len} bytes, shorter than a header")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(corrupt(format!("the header claims {header_len} bytes in a file of {file_len}")));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| corrupt(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let obj = json.as_object().ok_or_else(|| corrupt("the header is not a JSON object".into()))?;
    let data_len = file_len - 8 - header_len;
    let mut out = Vec::new();
    for (name, entry) in obj.iter().filter(|(n, _)| n.as_str() != "__metadata__") {
        let bad = |what: &str| corrupt(format!("tensor `{name}`: {what}"));
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a dimension is not a whole number"))?;
        let offsets: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("no data_offsets [begin, end]"))?;
        let elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(|| bad("shape overflows"))?;
        let expected = dtype_bytes(dtype).map(|b| elements.saturating_mul(b));
        if offsets[0] > offsets[1] || offsets[1] > data_len {
            return Err(bad(&format!("bytes {}..{} lie outside the file's {data_len} data bytes", offsets[0], offsets[1])));
        }
        if expected.is_some_and(|e| e != offsets[1] - offsets[0]) {
            return Err(bad(&format!("{} bytes for a {dtype} tensor of shape {shape:?}", offsets[1] - offsets[0])));
        }
        out.push(HeaderTensor { name: name.clone(), dtype: dtype.to_string(), shape, file: path.to_path_buf() });
    }
    Ok(out)
}

/// Every tensor of the checkpoint in `dir`, checked against `cfg` as loading would.
pub fn inspect_checkpoint(dir: &Path, cfg: &ModelConfig) -> Result<Vec<HeaderTensor>> {
    let mut found: BTreeMap<String, HeaderTensor> = BTreeMap::new();
    for file in checkpoint_files(dir)? {
        for t in read_header(&file)? {
            found.insert(t.name.clone(), t);
        }
    }
    let mut out = Vec::new();
    for (name, shape) in parameter_shapes(cfg) {
        let Some(t) = found.remove(&name) else {
            return Err(ModelError::MissingTensor { name, files: dir.display().to_string() });
        };
        if t.shape != shape {
            return Err(ModelError::ShapeMismatch { name, file: t.file, expected: shape, found: t.shape });
        }
        out.push(t);
    }
    if let Some(t) = found.into_values().find(|t| !ignorable(&t.name, cfg)) {
        return Err(ModelError::UnexpectedTensor { name: t.name, file: t.file });
    }
    Ok(out)
}

/// The config of the model folder `dir`, with errors that say what is missing and how to
/// get a model folder (a run's preflight and the model commands use it).
pub fn model_folder_config(dir: &Path) -> anyhow::Result<ModelConfig> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: no such model folder (`retort model init --preset tiny --out DIR` builds one, `retort pull ORG/NAME` downloads one)",
            dir.display()
        );
    }
    let path = super::config::config_path(dir);
    if !path.exists() {
        anyhow::bail!("{} has no config.json: not a model folder (make one with `retort model init --preset tiny --out DIR`)", dir.display());
    }
    Ok(ModelConfig::from_file(&path)?)
}

/// Per dtype: (tensor count, element count).
pub fn dtype_counts(tensors: &[HeaderTensor]) -> BTreeMap<String, (usize, usize)> {
    let mut out = BTreeMap::new();
    for t in tensors {
        let e = out.entry(t.dtype.clone()).or_insert((0, 0));
        e.0 += 1;
        e.1 += t.shape.iter().product::<usize>();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_folder() -> (tempfile::TempDir, ModelConfig) {
        let d = tempfile::tempdir().unwrap();
        let cfg = crate::model::init::init_folder("tiny", d.path(), 0).unwrap();
        (d, cfg)
    }

    #[test]
    fn a_whole_folder_passes_and_counts_every_parameter() {
        let (d, cfg) = tiny_folder();
        let tensors = inspect_checkpoint(d.path(), &cfg).unwrap();
        let counts = dtype_counts(&tensors);
        assert_eq!(counts["F32"].1, cfg.num_parameters());
    }

    #[test]
    fn truncated_and_mismatched_folders_are_errors() {
        let (d, cfg) = tiny_folder();
        let weights = d.path().join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        let e = inspect_checkpoint(d.path(), &cfg).unwrap_err().to_string();
        assert!(e.contains("truncated or corrupt") && e.contains("outside the file"), "{e}");
        std::fs::write(&weights, &bytes[..4]).unwrap();
        assert!(inspect_checkpoint(d.path(), &cfg).unwrap_err().to_string().contains("shorter than a header"));
        std::fs::write(&weights, &bytes).unwrap();
        let mut other = cfg.clone();
        other.num_hidden_layers += 1;
        let e = inspect_checkpoint(d.path(), &other).unwrap_err().to_string();
        assert!(e.contains("is missing from the checkpoint"), "{e}");
        let mut wider = cfg.clone();
        wider.intermediate_size += 8;
        let e = inspect_checkpoint(d.path(), &wider).unwrap_err().to_string();
        assert!(e.contains("has shape"), "{e}");
    }
}
