//! The bi-encoder (research/synth-spec.md §6.4): a query encoder E_X and a prompt encoder
//! E_P, independent weights, each text pooled to one vector (CLS by default, no projection),
//! similarity by dot product. Also the retriever folder a `retrieve` stage writes, which
//! `retort retrieve` and the `uprise-eval` stage read:
//!
//! ```text
//! retriever/
//!   query/  prompt/        encoder folders (config, weights, tokenizer)
//!   index.safetensors      the pool's prompt embeddings and pool ids (index.rs)
//!   pool.jsonl             the pool rows; a pool id is a line index
//!   retriever.json         pooling and max length
//! ```

use super::data::{read_rows, TaskRow};
use super::index::Index;
use crate::model::encoder::{embed_texts, pool, EncoderModel, EncoderTokenizer, Pooling};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One side of the bi-encoder.
pub struct Side {
    pub model: EncoderModel,
    pub tok: EncoderTokenizer,
    pub dir: PathBuf,
}

impl Side {
    pub fn load(dir: &Path, device: &Device, trainable: bool, max_len: usize) -> Result<Side> {
        let model = EncoderModel::load(dir, device, DType::F32, trainable).with_context(|| format!("encoder {}", dir.display()))?;
        let tok = EncoderTokenizer::load(dir, &model.config, Some(max_len))?;
        Ok(Side { model, tok, dir: dir.to_path_buf() })
    }

    /// (B, H) pooled vectors of `texts`, differentiable when the encoder is trainable.
    pub fn encode(&self, texts: &[&str], pooling: Pooling) -> Result<Tensor> {
        let enc = &self.model.encoder;
        let b = self.tok.batch(texts, enc.device())?;
        let hidden = enc.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids))?;
        Ok(pool(&hidden, &b.attention_mask, pooling)?)
    }

    /// Vectors of many texts, `batch` at a time, as plain rows.
    pub fn embed(&self, texts: &[&str], pooling: Pooling, batch: usize) -> Result<Vec<Vec<f32>>> {
        Ok(embed_texts(&self.model.encoder, &self.tok, texts, pooling, false, batch)?)
    }
}

/// `retriever.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetrieverMeta {
    pub pooling: String,
    pub max_len: usize,
}

/// A saved retriever, ready to search.
pub struct Retriever {
    pub query: Side,
    pub pooling: Pooling,
    pub index: Index,
    pub pool: Vec<TaskRow>,
}

impl Retriever {
    /// The retriever folder a user names: the folder itself, the `retrieve` stage's folder
    /// above it, or its `index.safetensors`. Anything else is an error naming the path given.
    pub fn locate(path: &Path) -> Result<PathBuf> {
        if !path.exists() {
            bail!("{}: no such file or folder; give a retriever folder (<run>/<retrieve stage>, or its retriever/ folder)", path.display());
        }
        let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")).to_path_buf() } else { path.to_path_buf() };
        for d in [dir.clone(), dir.join("retriever")] {
            if d.join("retriever.json").is_file() {
                return Ok(d);
            }
        }
        bail!("{} is not a retriever folder (no retriever.json in it or in its retriever/; a `retrieve` stage writes one under <run>/<stage>/retriever)", path.display())
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Retriever> {
        let meta_path = dir.join("retriever.json");
        let text = std::fs::read_to_string(&meta_path)
            .with_context(|| format!("{} is not a retriever folder (no retriever.json; a `retrieve` stage writes one under <run>/<stage>/retriever)", dir.display()))?;
        let meta: RetrieverMeta = serde_json::from_str(&text).with_context(|| format!("{}: not a retriever description", meta_path.display()))?;
        let Some(pooling) = Pooling::parse(&meta.pooling) else { bail!("{}: unknown pooling {:?}", meta_path.display(), meta.pooling) };
        let query = Side::load(&dir.join("query"), device, false, meta.max_len)?;
        let index_path = dir.join("index.safetensors");
        let index = Index::load(&index_path)?;
        // A query vector must be as wide as the prompt vectors it is compared with.
        let width = query.model.config.hidden_size;
        if index.dim != width {
            bail!("{}: the prompt vectors are {} wide but the query encoder {} gives {width}; the index was built by another encoder (a `retrieve` stage writes both together: run its profile again)", index_path.display(), index.dim, query.dir.display());
        }
        if index.is_empty() {
            bail!("{}: the index holds no prompts (was the pool empty?)", index_path.display());
        }
        let pool = read_rows(&dir.join("pool.jsonl"))?;
        if let Some(bad) = index.ids.iter().find(|&&i| i as usize >= pool.len()) {
            bail!("{}: pool id {bad} is past the pool's {} rows", dir.display(), pool.len());
        }
        Ok(Retriever { query, pooling, index, pool })
    }

    /// The top-`k` pool rows for `query`: (pool id, similarity), best first.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(usize, f32)>> {
        let q = self.query.embed(&[query], self.pooling, 1)?;
        Ok(self.index.top_k(&q[0], k).into_iter().map(|(row, s)| (self.index.ids[row] as usize, s)).collect())
    }
}

/// Encodes every pool prompt (input + answer) with `prompt` into an index.
pub fn build_index(prompt: &Side, pool_rows: &[TaskRow], pooling: Pooling, batch: usize) -> Result<Index> {
    let demos: Vec<String> = pool_rows.iter().map(TaskRow::demo).collect();
    let refs: Vec<&str> = demos.iter().map(String::as_str).collect();
    let rows = prompt.embed(&refs, pooling, batch)?;
    Index::new(rows, (0..pool_rows.len() as u32).collect())
}
