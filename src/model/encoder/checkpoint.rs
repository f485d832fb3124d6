//! Encoder checkpoints in the Hugging Face layout: `config.json` + `model.safetensors` (or
//! shards), from a task model (`bert.` / `roberta.` prefix, maybe a pooler and an MLM head)
//! or a bare base model (no prefix, as sentence-transformers saves it).
//!
//! Every tensor is checked against the shape the config implies; the tensors that are read
//! but not used (buffers, duplicates of tied weights, task heads this encoder does not
//! implement) are listed; anything else is an error naming the tensor and its file.

use crate::model::inspect::{dtype_counts, read_header};
use super::config::{EncoderConfig, EncoderType};
use super::forward::{Encoder, Heads};
use crate::model::weights::{checkpoint_files, read_checkpoint};
use crate::model::{ModelError, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Task heads of transformers' BERT/RoBERTa classes that this encoder does not implement;
/// a checkpoint may carry them and they are skipped (and listed).
const UNUSED_HEADS: [(&str, &str); 3] = [
    ("cls.seq_relationship.", "next-sentence prediction head (not used)"),
    ("classifier.", "classification head (not used)"),
    ("qa_outputs.", "question-answering head (not used)"),
];

/// Where each of the encoder's tensors lives in a checkpoint, and what else it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointLayout {
    /// `bert.` / `roberta.` for task-model checkpoints, empty for bare base models.
    pub prefix: String,
    pub heads: Heads,
    /// (canonical name, name in the checkpoint, shape), in model order.
    pub tensors: Vec<(String, String, Vec<usize>)>,
    /// Checkpoint tensors not used, each with the reason.
    pub ignored: Vec<(String, &'static str)>,
}

impl CheckpointLayout {
    /// Parameters the encoder uses (a tied MLM decoder counted once, as the embedding).
    pub fn num_parameters(&self) -> usize {
        self.tensors.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum()
    }
}

/// The MLM head's prefix and the names of its tensors after the prefix.
fn mlm_names(t: EncoderType) -> (&'static str, [&'static str; 5], &'static str) {
    match t {
        EncoderType::Bert => (
            "cls.predictions.",
            ["transform.dense.weight", "transform.dense.bias", "transform.LayerNorm.weight", "transform.LayerNorm.bias", "bias"],
            "decoder.weight",
        ),
        EncoderType::Roberta => (
            "lm_head.",
            ["dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"],
            "decoder.weight",
        ),
    }
}

/// Every parameter of the encoder with `heads`, by canonical name (see [`Encoder::new`]).
pub fn parameter_shapes(cfg: &EncoderConfig, heads: Heads) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let mut out: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![v, h]),
        ("embeddings.position_embeddings.weight".into(), vec![cfg.max_position_embeddings, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![cfg.type_vocab_size, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    // A dense layer (out × in weight and bias) or, with `cols` None, a LayerNorm.
    let add = |out: &mut Vec<(String, Vec<usize>)>, name: String, rows: usize, cols: Option<usize>| {
        out.push((format!("{name}.weight"), cols.map_or(vec![rows], |c| vec![rows, c])));
        out.push((format!("{name}.bias"), vec![rows]));
    };
    for n in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{n}");
        for proj in ["query", "key", "value"] {
            add(&mut out, format!("{p}.attention.self.{proj}"), h, Some(h));
        }
        add(&mut out, format!("{p}.attention.output.dense"), h, Some(h));
        add(&mut out, format!("{p}.attention.output.LayerNorm"), h, None);
        add(&mut out, format!("{p}.intermediate.dense"), i, Some(h));
        add(&mut out, format!("{p}.output.dense"), h, Some(i));
        add(&mut out, format!("{p}.output.LayerNorm"), h, None);
    }
    if heads.pooler {
        add(&mut out, "pooler.dense".into(), h, Some(h));
    }
    if heads.mlm {
        let (p, names, decoder) = mlm_names(cfg.model_type);
        let shapes = [vec![h, h], vec![h], vec![h], vec![h], vec![v]];
        out.extend(names.iter().zip(shapes).map(|(n, s)| (format!("{p}{n}"), s)));
        if !cfg.tie_word_embeddings {
            out.push((format!("{p}{decoder}"), vec![v, h]));
        }
    }
    out
}

/// Matches the checkpoint's tensors (name → (shape, file)) to the encoder's parameters.
pub fn plan(cfg: &EncoderConfig, found: &HashMap<String, (Vec<usize>, PathBuf)>, dir: &Path) -> Result<CheckpointLayout> {
    let base = cfg.model_type.base_prefix();
    let anchor = "embeddings.word_embeddings.weight";
    let prefix = if found.contains_key(&format!("{base}{anchor}")) {
        base
    } else if found.contains_key(anchor) {
        ""
    } else {
        return Err(ModelError::MissingTensor {
            name: format!("{anchor}` (or `{base}{anchor}`"),
            files: dir.display().to_string(),
        });
    };
    let (mlm_prefix, mlm, decoder) = mlm_names(cfg.model_type);
    let heads = Heads {
        pooler: found.contains_key(&format!("{prefix}pooler.dense.weight")),
        mlm: found.contains_key(&format!("{mlm_prefix}{}", mlm[0])),
    };
    // Older checkpoints keep the MLM bias only as the decoder's bias.
    let bias_alias = |name: &str| (name == format!("{mlm_prefix}bias")).then(|| format!("{mlm_prefix}decoder.bias"));

    let mut used = std::collections::HashSet::new();
    let mut tensors = Vec::new();
    for (canonical, shape) in parameter_shapes(cfg, heads) {
        let in_file = if canonical.starts_with(mlm_prefix) { canonical.clone() } else { format!("{prefix}{canonical}") };
        let name = match (found.contains_key(&in_file), bias_alias(&in_file)) {
            (false, Some(alias)) if found.contains_key(&alias) => alias,
            _ => in_file,
        };
        let Some((file_shape, file)) = found.get(&name) else {
            return Err(ModelError::MissingTensor { name, files: dir.display().to_string() });
        };
        if *file_shape != shape {
            return Err(ModelError::ShapeMismatch { name, file: file.clone(), expected: shape, found: file_shape.clone() });
        }
        used.insert(name.clone());
        tensors.push((canonical, name, shape));
    }

    let tied_decoder = format!("{mlm_prefix}{decoder}");
    let mut rest: Vec<(&String, &(Vec<usize>, PathBuf))> = found.iter().filter(|(n, _)| !used.contains(*n)).collect();
    rest.sort_by(|a, b| a.0.cmp(b.0));
    let mut ignored = Vec::new();
    for (name, (shape, file)) in rest {
        let reason = if name.ends_with("embeddings.position_ids") || name.ends_with("embeddings.token_type_ids") {
            "buffer transformers recomputes"
        } else if *name == tied_decoder && cfg.tie_word_embeddings {
            let expected = vec![cfg.vocab_size, cfg.hidden_size];
            if *shape != expected {
                return Err(ModelError::ShapeMismatch { name: name.clone(), file: file.clone(), expected, found: shape.clone() });
            }
            "tied to the word embeddings"
        } else if *name == format!("{mlm_prefix}decoder.bias") && heads.mlm {
            "duplicate of the MLM bias"
        } else if let Some((_, why)) = UNUSED_HEADS.iter().find(|(p, _)| name.starts_with(p)) {
            why
        } else {
            return Err(ModelError::UnexpectedTensor { name: name.clone(), file: file.clone() });
        };
        ignored.push((name.clone(), reason));
    }
    Ok(CheckpointLayout { prefix: prefix.to_string(), heads, tensors, ignored })
}

/// An encoder folder's config and layout from the safetensors headers only (for
/// `retort model info`): every check of [`EncoderModel::load`] but the data's integrity.
pub fn inspect(dir: &Path) -> Result<(EncoderConfig, CheckpointLayout)> {
    let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
    let mut found = HashMap::new();
    for file in checkpoint_files(dir)? {
        for t in read_header(&file)? {
            found.insert(t.name, (t.shape, file.clone()));
        }
    }
    let layout = plan(&cfg, &found, dir)?;
    Ok((cfg, layout))
}

/// A loaded encoder with its config and checkpoint layout.
pub struct EncoderModel {
    pub config: EncoderConfig,
    pub encoder: Encoder,
    pub layout: CheckpointLayout,
    /// `Some` when the parameters are trainable `Var`s (by canonical name).
    pub varmap: Option<VarMap>,
}

impl EncoderModel {
    /// Loads an encoder folder, converting the weights to `dtype`. `trainable` puts them in a
    /// `VarMap`; otherwise they are frozen tensors.
    pub fn load(dir: &Path, device: &Device, dtype: DType, trainable: bool) -> Result<EncoderModel> {
        let config = EncoderConfig::from_file(&dir.join("config.json"))?;
        let mut loaded = read_checkpoint(dir, device)?;
        let found = loaded.iter().map(|(n, l)| (n.clone(), (l.tensor.dims().to_vec(), l.file.clone()))).collect();
        let layout = plan(&config, &found, dir)?;
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(layout.tensors.len());
        for (canonical, name, _) in &layout.tensors {
            let item = loaded
                .remove(name)
                .ok_or_else(|| ModelError::MissingTensor { name: name.clone(), files: dir.display().to_string() })?;
            tensors.push((canonical.clone(), item.tensor.to_dtype(dtype)?));
        }
        let heads = layout.heads;
        let (encoder, varmap) = if trainable {
            let varmap = VarMap::new();
            {
                let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
                for (name, tensor) in tensors {
                    data.insert(name, Var::from_tensor(&tensor)?);
                }
            }
            let encoder = Encoder::new(&config, heads, VarBuilder::from_varmap(&varmap, dtype, device))?;
            (encoder, Some(varmap))
        } else {
            let map: HashMap<String, Tensor> = tensors.into_iter().collect();
            (Encoder::new(&config, heads, VarBuilder::from_tensors(map, dtype, device))?, None)
        };
        Ok(EncoderModel { config, encoder, layout, varmap })
    }

    /// Trainable parameters by canonical name, in model order (empty when frozen).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let Some(varmap) = &self.varmap else { return vec![] };
        let Ok(data) = varmap.data().lock() else { return vec![] };
        self.layout.tensors.iter().filter_map(|(c, _, _)| data.get(c).map(|v| (c.clone(), v.clone()))).collect()
    }
}

/// Dtype on disk of the tensors the encoder uses: dtype → (tensors, elements).
pub fn used_dtypes(dir: &Path, layout: &CheckpointLayout) -> Result<BTreeMap<String, (usize, usize)>> {
    let used: std::collections::HashSet<&str> = layout.tensors.iter().map(|(_, n, _)| n.as_str()).collect();
    let mut tensors = Vec::new();
    for file in checkpoint_files(dir)? {
        tensors.extend(read_header(&file)?.into_iter().filter(|t| used.contains(t.name.as_str())));
    }
    Ok(dtype_counts(&tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::config::Activation;

    fn cfg(model_type: EncoderType) -> EncoderConfig {
        EncoderConfig {
            model_type,
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 12,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            tie_word_embeddings: true,
            architecture: None,
        }
    }

    /// A checkpoint's name → (shape, file) for `heads`, base names under `prefix`.
    fn found(c: &EncoderConfig, heads: Heads, prefix: &str) -> HashMap<String, (Vec<usize>, PathBuf)> {
        parameter_shapes(c, heads)
            .into_iter()
            .map(|(n, s)| {
                let name = if n.starts_with("cls.") || n.starts_with("lm_head.") { n } else { format!("{prefix}{n}") };
                (name, (s, PathBuf::from("m/model.safetensors")))
            })
            .collect()
    }

    fn plan_of(c: &EncoderConfig, f: &HashMap<String, (Vec<usize>, PathBuf)>) -> Result<CheckpointLayout> {
        plan(c, f, Path::new("m"))
    }

    #[test]
    fn heads_and_prefix_are_detected() {
        let c = cfg(EncoderType::Bert);
        for (heads, prefix) in [
            (Heads { pooler: true, mlm: true }, "bert."),
            (Heads { pooler: true, mlm: false }, ""),
            (Heads { pooler: false, mlm: false }, ""),
            (Heads { pooler: false, mlm: true }, "bert."),
        ] {
            let layout = plan_of(&c, &found(&c, heads, prefix)).unwrap();
            assert_eq!((layout.heads, layout.prefix.as_str()), (heads, prefix));
            assert_eq!(layout.tensors.len(), parameter_shapes(&c, heads).len());
        }
        let r = cfg(EncoderType::Roberta);
        let layout = plan_of(&r, &found(&r, Heads { pooler: false, mlm: true }, "roberta.")).unwrap();
        assert!(layout.heads.mlm && layout.tensors.iter().any(|(_, n, _)| n == "lm_head.layer_norm.weight"));
    }

    #[test]
    fn parameter_count_by_hand() {
        // h 8, i 12, v 20, positions 16, types 2, one layer; pooler; tied MLM head.
        let c = cfg(EncoderType::Bert);
        let embeddings = 20 * 8 + 16 * 8 + 2 * 8 + 2 * 8;
        let layer = 4 * (8 * 8 + 8) + 2 * (2 * 8) + (12 * 8 + 12) + (8 * 12 + 8);
        let pooler = 8 * 8 + 8;
        let mlm = 8 * 8 + 8 + 2 * 8 + 20;
        let layout = plan_of(&c, &found(&c, Heads { pooler: true, mlm: true }, "bert.")).unwrap();
        assert_eq!(layout.num_parameters(), embeddings + layer + pooler + mlm);
    }

    #[test]
    fn wrong_shape_names_tensor_file_and_both_shapes() {
        let c = cfg(EncoderType::Bert);
        let mut f = found(&c, Heads::default(), "");
        f.insert("encoder.layer.0.intermediate.dense.weight".into(), (vec![13, 8], PathBuf::from("m/model.safetensors")));
        let err = plan_of(&c, &f).unwrap_err().to_string();
        assert!(err.contains("`encoder.layer.0.intermediate.dense.weight`") && err.contains("m/model.safetensors"), "{err}");
        assert!(err.contains("[13, 8]") && err.contains("[12, 8]"), "{err}");
    }

    #[test]
    fn missing_and_unexpected_tensors_are_named() {
        let c = cfg(EncoderType::Roberta);
        let mut f = found(&c, Heads { pooler: false, mlm: true }, "roberta.");
        f.remove("lm_head.dense.bias");
        let err = plan_of(&c, &f).unwrap_err().to_string();
        assert!(err.contains("`lm_head.dense.bias` is missing"), "{err}");

        let mut f = found(&c, Heads::default(), "roberta.");
        f.insert("roberta.encoder.layer.0.extra.weight".into(), (vec![2], PathBuf::from("m/model.safetensors")));
        let err = plan_of(&c, &f).unwrap_err().to_string();
        assert!(err.contains("unexpected tensor `roberta.encoder.layer.0.extra.weight`"), "{err}");

        let err = plan_of(&c, &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("embeddings.word_embeddings.weight") && err.contains("roberta."), "{err}");
    }

    #[test]
    fn buffers_tied_copies_and_unused_heads_are_listed_not_fatal() {
        let c = cfg(EncoderType::Bert);
        let mut f = found(&c, Heads { pooler: true, mlm: true }, "bert.");
        let file = PathBuf::from("m/model.safetensors");
        f.insert("bert.embeddings.position_ids".into(), (vec![1, 16], file.clone()));
        f.insert("cls.predictions.decoder.weight".into(), (vec![20, 8], file.clone()));
        f.insert("cls.predictions.decoder.bias".into(), (vec![20], file.clone()));
        f.insert("cls.seq_relationship.weight".into(), (vec![2, 8], file.clone()));
        let layout = plan_of(&c, &f).unwrap();
        let names: Vec<&str> = layout.ignored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["bert.embeddings.position_ids", "cls.predictions.decoder.bias", "cls.predictions.decoder.weight", "cls.seq_relationship.weight"]
        );
        // A tied copy must still have the embedding's shape.
        f.insert("cls.predictions.decoder.weight".into(), (vec![21, 8], file));
        assert!(plan_of(&c, &f).unwrap_err().to_string().contains("[21, 8]"));
    }

    #[test]
    fn old_checkpoints_with_only_the_decoder_bias_load_it_as_the_mlm_bias() {
        let c = cfg(EncoderType::Bert);
        let mut f = found(&c, Heads { pooler: false, mlm: true }, "bert.");
        let bias = f.remove("cls.predictions.bias").unwrap();
        f.insert("cls.predictions.decoder.bias".into(), bias);
        let layout = plan_of(&c, &f).unwrap();
        assert!(layout.tensors.iter().any(|(c, n, _)| c == "cls.predictions.bias" && n == "cls.predictions.decoder.bias"));
    }

    #[test]
    fn untied_decoder_is_required_and_used() {
        let mut c = cfg(EncoderType::Bert);
        c.tie_word_embeddings = false;
        let f = found(&c, Heads { pooler: false, mlm: true }, "bert.");
        assert!(f.contains_key("cls.predictions.decoder.weight"));
        let layout = plan_of(&c, &f).unwrap();
        assert!(layout.tensors.iter().any(|(_, n, _)| n == "cls.predictions.decoder.weight"));
        assert!(layout.ignored.is_empty());
    }
}
