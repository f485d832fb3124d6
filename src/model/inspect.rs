//! What a checkpoint holds, from its safetensors headers alone (no tensor data is read), with
//! the same checks as loading: a well-formed header, every tensor's bytes inside the file and
//! of the size its dtype and shape imply, and names and shapes equal to what the config needs.
//! `retort model info` uses it, so a truncated or mismatched folder is an error there too.

use super::config::ModelConfig;
use super::config::parameter_shapes;
use super::weights::{checkpoint_files, ignorable};
use super::{ModelError, Result};
use std::collections::BTreeMap;
use std::path::Path;

pub use super::st_header::{read_header, HeaderTensor};

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
