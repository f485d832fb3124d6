//! A safetensors file's header, read and checked against the file's length without reading
//! any tensor data: `model info` (through [`super::inspect`]) and loading ([`super::weights`])
//! both start here, so both refuse a truncated file the same way.

use super::{ModelError, Result};
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
    /// The tensor's bytes in the file: absolute begin and end offsets (checked to lie inside).
    pub bytes: (u64, u64),
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
        let base = 8 + header_len;
        let bytes = (base + offsets[0], base + offsets[1]);
        out.push(HeaderTensor { name: name.clone(), dtype: dtype.to_string(), shape, file: path.to_path_buf(), bytes });
    }
    Ok(out)
}

