//! Texts to sentence embeddings: tokenize as transformers does for an encoder (special tokens,
//! truncation, right padding with the model's pad id), run the encoder, pool.

use super::config::EncoderConfig;
use super::forward::Encoder;
use super::pooling::{l2_normalize, pool, Pooling};
use crate::text::{TextError, Tokenizer};
use candle_core::Tensor;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("cannot tokenize {text:?}: {message}")]
    Tokenize { text: String, message: String },
    #[error("{path}: {message}")]
    Config { path: std::path::PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, EmbedError>;

/// A folder's tokenizer set up for an encoder: no padding or fixed length of its own (some
/// `tokenizer.json` files pad every text to 128), truncation at `max_len` tokens including the
/// special tokens.
pub struct EncoderTokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: u32,
    max_len: usize,
}

/// A right-padded batch: ids, attention mask and token types, each (B, L) u32.
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
}

/// sentence-transformers' `max_seq_length` from `sentence_bert_config.json`, if the folder has one.
fn sentence_transformers_max_len(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EmbedError::Config { path: path.clone(), message: e.to_string() })?;
    Ok(json.get("max_seq_length").and_then(|v| v.as_u64()).map(|v| v as usize))
}

impl EncoderTokenizer {
    /// `max_len`: tokens a text keeps (default: sentence-transformers' `max_seq_length` when
    /// the folder has one, else all the positions the model has), never above the model's limit.
    pub fn load(dir: &Path, cfg: &EncoderConfig, max_len: Option<usize>) -> Result<EncoderTokenizer> {
        let tok = Tokenizer::load(dir)?;
        let limit = cfg.max_tokens();
        let max_len = match max_len {
            Some(n) => n.min(limit),
            None => sentence_transformers_max_len(dir)?.unwrap_or(limit).min(limit),
        };
        if max_len < 2 {
            return Err(EmbedError::Config {
                path: dir.to_path_buf(),
                message: format!("a text needs room for its two special tokens; max length {max_len} is too short"),
            });
        }
        let mut inner = tok.inner().clone();
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| EmbedError::Config { path: dir.join("tokenizer.json"), message: e.to_string() })?;
        // The model's pad id decides RoBERTa's positions, so it pads the batch.
        Ok(EncoderTokenizer { inner, pad_id: cfg.pad_token_id, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids and token types of one text, with the special tokens (`[CLS] … [SEP]`).
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize { text: text.chars().take(80).collect(), message: e.to_string() })?;
        Ok((e.get_ids().to_vec(), e.get_type_ids().to_vec()))
    }

    /// Texts as one right-padded batch.
    pub fn batch(&self, texts: &[&str], device: &candle_core::Device) -> Result<Batch> {
        let rows = texts.iter().map(|t| self.encode(t)).collect::<Result<Vec<_>>>()?;
        let len = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0).max(1);
        let (mut ids, mut mask, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for (row_ids, row_types) in &rows {
            let pad = len - row_ids.len();
            ids.extend(row_ids.iter().copied().chain(std::iter::repeat_n(self.pad_id, pad)));
            mask.extend(std::iter::repeat_n(1u32, row_ids.len()).chain(std::iter::repeat_n(0, pad)));
            types.extend(row_types.iter().copied().chain(std::iter::repeat_n(0, pad)));
        }
        let shape = (rows.len(), len);
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            attention_mask: Tensor::from_vec(mask, shape, device)?,
            token_type_ids: Tensor::from_vec(types, shape, device)?,
        })
    }
}

/// One embedding per text, in order, computed `batch_size` texts at a time.
pub fn embed_texts(
    encoder: &Encoder,
    tok: &EncoderTokenizer,
    texts: &[&str],
    pooling: Pooling,
    normalize: bool,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch_size.max(1)) {
        let b = tok.batch(chunk, encoder.device())?;
        let hidden = encoder.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids))?;
        let mut pooled = pool(&hidden, &b.attention_mask, pooling)?;
        if normalize {
            pooled = l2_normalize(&pooled)?;
        }
        out.extend(pooled.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(out)
}
