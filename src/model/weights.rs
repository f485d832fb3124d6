//! Checkpoints in the Hugging Face layout: `config.json`, `generation_config.json` and
//! `model.safetensors` (or a sharded `model.safetensors.index.json`), with HF tensor names,
//! so checkpoints move both ways between retort and transformers.
//!
//! Loading checks every tensor against the shapes the config implies and converts dtypes
//! itself, because `VarMap::load` neither converts (bf16 hub weights into f32 vars fail) nor
//! reports extra tensors (docs/ENGINE.md §2.8).

use super::config::ModelConfig;
use super::config::parameter_shapes;
use super::decoder::Decoder;
use super::st_header::read_header;
use super::{ModelError, Result};
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A config, its decoder, and (when trainable) the `VarMap` owning the parameters.
pub struct Model {
    pub config: ModelConfig,
    pub decoder: Decoder,
    /// `Some` when the parameters are trainable `Var`s (hand `all_vars()` to the optimizer).
    pub varmap: Option<VarMap>,
}

/// A tensor read from disk, remembering its file for error messages.
pub(crate) struct Loaded {
    pub(crate) tensor: Tensor,
    pub(crate) file: PathBuf,
}

/// Tensors some checkpoints carry that the decoder recomputes or shares.
pub(crate) fn ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && name == "lm_head.weight")
}

/// Reads one safetensors file tensor by tensor: the checked header ([`read_header`]), then each
/// tensor's bytes into its own storage. Reading the whole file into memory and copying every
/// tensor out of it held the checkpoint twice at the peak (16.5 GiB for Qwen2-VL-2B's 8.2 GiB of
/// f32 weights); now the peak is the weights plus one chunk of [`CHUNK_BYTES`] (f32) or one
/// tensor (other dtypes).
fn read_safetensors(path: &Path, device: &Device, out: &mut HashMap<String, Loaded>) -> Result<()> {
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let corrupt = |detail: String| ModelError::CorruptSafetensors { path: path.to_path_buf(), detail };
    let mut headers = read_header(path)?;
    // In file order, so the reads are sequential.
    headers.sort_by_key(|h| h.bytes.0);
    let mut file = std::fs::File::open(path).map_err(io)?;
    // One read buffer for the file's f32 tensors (zeroed once, not once a tensor).
    let mut chunk = Vec::new();
    for h in headers {
        let (begin, end) = h.bytes;
        file.seek(SeekFrom::Start(begin)).map_err(io)?;
        let short = |e: std::io::Error| corrupt(format!("tensor `{}`: {e}", h.name));
        let tensor = if h.dtype == "F32" {
            // Decoded straight into the tensor's Vec, a chunk at a time.
            let mut values = Vec::with_capacity(((end - begin) / 4) as usize);
            let mut left = (end - begin) as usize;
            if chunk.len() < left.min(CHUNK_BYTES) {
                chunk.resize(left.min(CHUNK_BYTES), 0u8);
            }
            while left > 0 {
                let n = left.min(CHUNK_BYTES);
                file.read_exact(&mut chunk[..n]).map_err(short)?;
                values.extend(chunk[..n].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
                left -= n;
            }
            Tensor::from_vec(values, h.shape.as_slice(), device)?
        } else {
            let dtype = stored_dtype(&h.dtype).ok_or_else(|| corrupt(format!("tensor `{}`: dtype {} is not supported", h.name, h.dtype)))?;
            let mut raw = vec![0u8; (end - begin) as usize];
            file.read_exact(&mut raw).map_err(short)?;
            Tensor::from_raw_buffer(&raw, dtype, &h.shape, device)?
        };
        out.insert(h.name, Loaded { tensor, file: path.to_path_buf() });
    }
    Ok(())
}

/// The read buffer of an f32 tensor's bytes.
const CHUNK_BYTES: usize = 64 << 20;

/// The candle dtype of a safetensors dtype name.
fn stored_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

/// The safetensors files of the checkpoint in `dir`: `model.safetensors` if present, else the
/// shards listed in `model.safetensors.index.json`.
pub(crate) fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !dir.is_dir() {
        return Err(ModelError::Io { path: dir.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such model folder") });
    }
    if single.exists() {
        Ok(vec![single])
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io { path: index.clone(), source })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.clone(), source })?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::MissingKey {
            path: index.clone(),
            key: "weight_map".into(),
        })?;
        let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        Ok(shards.into_iter().map(|s| dir.join(s)).collect())
    } else {
        Err(ModelError::MissingWeights { dir: dir.to_path_buf() })
    }
}

/// Every tensor of the checkpoint in `dir` (see [`checkpoint_files`]).
pub(crate) fn read_checkpoint(dir: &Path, device: &Device) -> Result<HashMap<String, Loaded>> {
    let mut out = HashMap::new();
    for file in checkpoint_files(dir)? {
        read_safetensors(&file, device, &mut out)?;
    }
    Ok(out)
}

/// A vision-language checkpoint in `dir`, checked and converted to `dtype`: names mapped by
/// `canonical`; those `is_vision` claims (tower, projector) must be exactly `vision_shapes`
/// (each present with its shape, none extra), in that order; the rest is the decoder `text`
/// ([`validate`]), after them.
pub(crate) fn read_vision_language(
    dir: &Path,
    device: &Device,
    dtype: DType,
    canonical: fn(&str) -> String,
    is_vision: impl Fn(&str) -> bool,
    vision_shapes: Vec<(String, Vec<usize>)>,
    text: &ModelConfig,
) -> Result<Vec<(String, Tensor)>> {
    let loaded: HashMap<String, Loaded> = read_checkpoint(dir, device)?.into_iter().map(|(n, t)| (canonical(&n), t)).collect();
    let (mut vision_part, llm_part): (HashMap<String, Loaded>, HashMap<String, Loaded>) = loaded.into_iter().partition(|(n, _)| is_vision(n));
    let mut tensors = Vec::new();
    for (name, shape) in vision_shapes {
        let Some(item) = vision_part.remove(&name) else {
            return Err(ModelError::MissingTensor { name, files: dir.display().to_string() });
        };
        if item.tensor.dims() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch { name, file: item.file, expected: shape, found: item.tensor.dims().to_vec() });
        }
        tensors.push((name, item.tensor.to_dtype(dtype)?));
    }
    if let Some((name, item)) = vision_part.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
        return Err(ModelError::UnexpectedTensor { name, file: item.file });
    }
    tensors.extend(validate(text, llm_part, dtype, dir)?);
    Ok(tensors)
}

/// Checks names and shapes against the config and converts to `dtype`, in model order.
pub(crate) fn validate(cfg: &ModelConfig, mut loaded: HashMap<String, Loaded>, dtype: DType, source: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (name, shape) in parameter_shapes(cfg) {
        let Some(item) = loaded.remove(&name) else {
            return Err(ModelError::MissingTensor { name, files: source.display().to_string() });
        };
        if item.tensor.dims() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                name,
                file: item.file,
                expected: shape,
                found: item.tensor.dims().to_vec(),
            });
        }
        out.push((name, item.tensor.to_dtype(dtype)?));
    }
    let mut extra: Vec<(String, Loaded)> = loaded.into_iter().filter(|(n, _)| !ignorable(n, cfg)).collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some((name, item)) = extra.into_iter().next() {
        return Err(ModelError::UnexpectedTensor { name, file: item.file });
    }
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so a crash never
/// leaves a half-written file under the real name.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    crate::fsutil::write_atomic_with(path, write).map_err(|source| ModelError::Write { path: path.to_path_buf(), source })
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serde_json::Value always serializes");
    write_atomic(path, |tmp| std::fs::write(tmp, text + "\n"))
}

impl Model {
    /// Loads a model folder. `trainable` puts the parameters in a `VarMap` (converted to
    /// `dtype`); otherwise they are plain frozen tensors.
    pub fn load(dir: &Path, device: &Device, dtype: DType, trainable: bool) -> Result<Model> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let loaded = read_checkpoint(dir, device)?;
        let tensors = validate(&config, loaded, dtype, dir)?;
        Model::from_named_tensors(config, tensors, device, dtype, trainable)
    }

    /// A fresh model with transformers' initialisation: linear and embedding weights
    /// N(0, 0.02²), norm weights 1, biases 0. Each tensor draws from its own stream
    /// `Rng::derive(seed, name)`, so the result depends only on the seed and the config.
    pub fn init_random(config: ModelConfig, seed: u64, device: &Device) -> Result<Model> {
        let tensors = random_tensors(parameter_shapes(&config), seed, device, |name| name.ends_with("norm.weight"))?;
        Model::from_named_tensors(config, tensors, device, DType::F32, true)
    }

    /// Builds from tensors already checked against `parameter_shapes(&config)`.
    fn from_named_tensors(
        config: ModelConfig,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
        dtype: DType,
        trainable: bool,
    ) -> Result<Model> {
        if trainable {
            let varmap = VarMap::new();
            {
                let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
                for (name, tensor) in tensors {
                    data.insert(name, Var::from_tensor(&tensor)?);
                }
            }
            let decoder = Decoder::new(&config, VarBuilder::from_varmap(&varmap, dtype, device))?;
            Ok(Model { config, decoder, varmap: Some(varmap) })
        } else {
            let map: HashMap<String, Tensor> = tensors.into_iter().collect();
            let decoder = Decoder::new(&config, VarBuilder::from_tensors(map, dtype, device))?;
            Ok(Model { config, decoder, varmap: None })
        }
    }

    /// Trainable parameters in model order (empty for a frozen model).
    pub fn vars(&self) -> Vec<(String, Var)> {
        let Some(varmap) = &self.varmap else { return vec![] };
        let Ok(data) = varmap.data().lock() else { return vec![] };
        parameter_shapes(&self.config).into_iter().filter_map(|(name, _)| data.get(&name).map(|v| (name, v.clone()))).collect()
    }

    /// Saves `config.json`, `generation_config.json` and `model.safetensors` (HF names, the
    /// parameters' current dtype) into `dir`, creating it. Each file is written atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Write { path: dir.to_path_buf(), source })?;
        let tensors: BTreeMap<String, Tensor> = self
            .decoder
            .named_tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.detach().contiguous()?)))
            .collect::<Result<_>>()?;
        // transformers rejects safetensors files whose metadata lacks format=pt.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_atomic(&dir.join("model.safetensors"), |tmp| {
            safetensors::serialize_to_file(&tensors, Some(metadata), tmp).map_err(std::io::Error::other)
        })?;
        write_json(&dir.join("config.json"), &self.config.to_hf_json())?;
        write_json(&dir.join("generation_config.json"), &self.config.generation_config_json())
    }
}

/// transformers' initialisation of named parameters: the norm weights (`is_norm(name)`) 1,
/// biases 0, everything else N(0, 0.02²), each tensor drawn from its own stream
/// `Rng::derive(seed, name)`.
pub(crate) fn random_tensors(shapes: Vec<(String, Vec<usize>)>, seed: u64, device: &Device, is_norm: impl Fn(&str) -> bool) -> Result<Vec<(String, Tensor)>> {
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if is_norm(&name) {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let mut rng = Rng::derive(seed, &name);
                (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
            };
            Ok((name, Tensor::from_vec(values, shape, device)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        let mut c = ModelConfig::preset("tiny", 64).unwrap();
        c.hidden_size = 32;
        c.head_dim = 8;
        c.intermediate_size = 48;
        c.num_hidden_layers = 2;
        c
    }

    #[test]
    fn init_random_is_deterministic_per_seed() {
        let dev = Device::Cpu;
        let a = Model::init_random(tiny(), 7, &dev).unwrap();
        let b = Model::init_random(tiny(), 7, &dev).unwrap();
        let c = Model::init_random(tiny(), 8, &dev).unwrap();
        let flat = |m: &Model, i: usize| m.decoder.named_tensors()[i].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a, 0), flat(&b, 0));
        assert_ne!(flat(&a, 0), flat(&c, 0));
        let w = flat(&a, 0);
        let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "init std {std}");
        assert_eq!(a.vars().len(), parameter_shapes(&tiny()).len());
    }

    #[test]
    fn save_load_round_trip_is_exact_and_bf16_converts() {
        let dev = Device::Cpu;
        let mut cfg = tiny();
        cfg.tie_word_embeddings = false;
        cfg.eos_token_ids = vec![5];
        let m = Model::init_random(cfg.clone(), 3, &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        for trainable in [true, false] {
            let back = Model::load(dir.path(), &dev, DType::F32, trainable).unwrap();
            assert_eq!(back.config, cfg);
            assert_eq!(back.varmap.is_some(), trainable);
            for ((n1, t1), (n2, t2)) in m.decoder.named_tensors().iter().zip(back.decoder.named_tensors()) {
                assert_eq!(n1, &n2);
                let d = (t1 - &t2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(d, 0.0, "{n1}");
            }
        }
        let gen: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("generation_config.json")).unwrap()).unwrap();
        assert_eq!(gen["eos_token_id"], 5);
        // A bf16 checkpoint loads into f32 vars (VarMap::load alone would fail here).
        let bf16: HashMap<String, Tensor> =
            m.decoder.named_tensors().into_iter().map(|(n, t)| (n, t.to_dtype(DType::BF16).unwrap())).collect();
        candle_core::safetensors::save(&bf16, dir.path().join("model.safetensors")).unwrap();
        let back = Model::load(dir.path(), &dev, DType::F32, true).unwrap();
        let (_, t) = &back.decoder.named_tensors()[1];
        assert_eq!(t.dtype(), DType::F32);
    }

    #[test]
    fn detached_decoder_shares_storage_but_not_the_graph() {
        use crate::model::{AttnMask, Mode};
        let dev = Device::Cpu;
        let m = Model::init_random(tiny(), 1, &dev).unwrap();
        let frozen = m.decoder.detached();
        let ids = Tensor::new(&[[1u32, 2, 3]], &dev).unwrap();
        let mask = AttnMask::causal(1, 3, &dev).unwrap();
        assert!(m.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits.track_op());
        let before = frozen.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        assert!(!before.track_op(), "a rollout on detached weights records no graph");
        // An optimizer step (Var::set) on the trainable weights is visible through the copy.
        let (_, norm) = m.vars().into_iter().find(|(n, _)| n == "model.norm.weight").unwrap();
        norm.set(&(norm.as_tensor() * 2.0).unwrap()).unwrap();
        let after = frozen.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        let d = (after - before).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d > 1e-3, "detached copy did not see the update ({d})");
    }

    #[test]
    fn sharded_checkpoint_loads() {
        let dev = Device::Cpu;
        let m = Model::init_random(tiny(), 4, &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let named = m.decoder.named_tensors();
        let (first, second) = named.split_at(named.len() / 2);
        let mut weight_map = serde_json::Map::new();
        for (i, part) in [first, second].into_iter().enumerate() {
            let file = format!("model-0000{}-of-00002.safetensors", i + 1);
            let map: HashMap<String, Tensor> = part.iter().cloned().collect();
            candle_core::safetensors::save(&map, dir.path().join(&file)).unwrap();
            for (n, _) in part {
                weight_map.insert(n.clone(), serde_json::json!(file));
            }
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
        let back = Model::load(dir.path(), &dev, DType::F32, false).unwrap();
        assert_eq!(back.decoder.named_tensors().len(), named.len());
    }

    fn saved_with(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
        let dev = Device::Cpu;
        let m = Model::init_random(tiny(), 5, &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let mut map: HashMap<String, Tensor> = m.decoder.named_tensors().into_iter().collect();
        edit(&mut map);
        candle_core::safetensors::save(&map, dir.path().join("model.safetensors")).unwrap();
        dir
    }

    #[test]
    fn missing_tensor_is_named() {
        let dir = saved_with(|m| {
            m.remove("model.layers.1.mlp.up_proj.weight");
        });
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, true).err().unwrap().to_string();
        assert!(err.contains("`model.layers.1.mlp.up_proj.weight` is missing"), "{err}");
    }

    #[test]
    fn wrong_shape_is_named_with_both_shapes_and_file() {
        let dir = saved_with(|m| {
            m.insert("model.norm.weight".into(), Tensor::ones(31, DType::F32, &Device::Cpu).unwrap());
        });
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
        assert!(err.contains("`model.norm.weight`") && err.contains("[31]") && err.contains("[32]"), "{err}");
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn unexpected_tensor_is_named() {
        let dir = saved_with(|m| {
            m.insert("model.layers.0.mlp.extra.weight".into(), Tensor::ones(2, DType::F32, &Device::Cpu).unwrap());
            // Tolerated: recomputed rotary buffers and a duplicated tied head.
            m.insert("model.layers.0.self_attn.rotary_emb.inv_freq".into(), Tensor::ones(4, DType::F32, &Device::Cpu).unwrap());
        });
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
        assert!(err.contains("unexpected tensor `model.layers.0.mlp.extra.weight`"), "{err}");
    }

    #[test]
    fn truncated_file_is_reported_as_corrupt() {
        let dir = saved_with(|_| {});
        let path = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
        assert!(err.contains("truncated or corrupt") && err.contains("model.safetensors"), "{err}");
        std::fs::write(&path, b"\x08\x00").unwrap();
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");
    }

    #[test]
    fn missing_weights_and_config_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), tiny().to_hf_json().to_string()).unwrap();
        let err = Model::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
        assert!(err.contains("no weights") && err.contains("model.safetensors"), "{err}");
    }
}
