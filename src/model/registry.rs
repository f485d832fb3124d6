//! Which architecture family a model folder holds, by its `config.json`'s `model_type`, so
//! commands can dispatch (`retort model info`, `retort embed`) and refuse the wrong kind with
//! a clear message.

use super::config::ModelType;
use super::encoder::EncoderType;
use super::{ModelError, Result};
use std::path::Path;

/// An architecture family and the model type within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Causal language models (`model::Decoder`).
    Decoder(ModelType),
    /// Bidirectional encoders (`model::encoder::Encoder`).
    Encoder(EncoderType),
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Decoder(_) => "decoder",
            Family::Encoder(_) => "encoder",
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Decoder(t) => t.as_str(),
            Family::Encoder(t) => t.as_str(),
        }
    }
}

/// Every supported `model_type` with its family.
pub fn supported() -> Vec<(&'static str, Family)> {
    let decoders = ModelType::ALL.into_iter().map(|t| (t.as_str(), Family::Decoder(t)));
    let encoders = EncoderType::ALL.into_iter().map(|t| (t.as_str(), Family::Encoder(t)));
    decoders.chain(encoders).collect()
}

/// The family of a `model_type` string, if supported.
pub fn family_of_type(model_type: &str) -> Option<Family> {
    supported().into_iter().find(|(name, _)| *name == model_type).map(|(_, f)| f)
}

/// The family of the model folder `dir`, from `dir/config.json`'s `model_type`.
pub fn family_of(dir: &Path) -> Result<Family> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.clone(), source })?;
    let found = json
        .get("model_type")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ModelError::MissingKey { path: path.clone(), key: "model_type".into() })?;
    found.as_str().and_then(family_of_type).ok_or_else(|| ModelError::UnsupportedModelType {
        path,
        found: found.as_str().map(str::to_string).unwrap_or_else(|| found.to_string()),
        supported: supported().iter().map(|(n, f)| format!("{n} ({})", f.name())).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn model_types_map_to_their_family() {
        assert_eq!(family_of(folder(r#"{"model_type": "qwen2"}"#).path()).unwrap(), Family::Decoder(ModelType::Qwen2));
        assert_eq!(family_of(folder(r#"{"model_type": "llama"}"#).path()).unwrap(), Family::Decoder(ModelType::Llama));
        assert_eq!(family_of(folder(r#"{"model_type": "bert"}"#).path()).unwrap(), Family::Encoder(EncoderType::Bert));
        assert_eq!(family_of(folder(r#"{"model_type": "roberta"}"#).path()).unwrap(), Family::Encoder(EncoderType::Roberta));
    }

    #[test]
    fn unknown_and_missing_types_are_explained() {
        let err = family_of(folder(r#"{"model_type": "t5"}"#).path()).unwrap_err().to_string();
        assert!(err.contains("`t5`") && err.contains("qwen2 (decoder)") && err.contains("bert (encoder)"), "{err}");
        let err = family_of(folder(r#"{"hidden_size": 8}"#).path()).unwrap_err().to_string();
        assert!(err.contains("model_type") && err.contains("missing"), "{err}");
        let err = family_of(Path::new("/nonexistent/retort")).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
