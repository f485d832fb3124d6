//! What a forward call derives from its inputs before the layers: which keys each row may
//! attend to (the padding mask) and the position ids.

use super::config::{EncoderConfig, EncoderType};
use crate::model::mask::MASK_VALUE;
use candle_core::{bail, DType, Device, Result, Tensor};

/// Rows of a transformers-style `attention_mask` (B, L), any numeric dtype: nonzero = token.
pub fn mask_rows(attention_mask: &Tensor, batch: usize, len: usize) -> Result<Vec<Vec<bool>>> {
    if attention_mask.dims() != [batch, len] {
        bail!("attention_mask is {:?}, expected [{batch}, {len}] like the inputs", attention_mask.dims());
    }
    let rows = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.into_iter().map(|r| r.into_iter().map(|m| m != 0.0).collect()).collect())
}

/// Additive attention bias (B, 1, L, L): 0 where the key is a token, `MASK_VALUE` at padded
/// keys, for every query. Bidirectional: no causal part. A padded query still attends to the
/// row's real tokens, so no row is fully masked; its output is meaningless and ignored.
pub fn attention_bias(rows: &[Vec<bool>], device: &Device) -> Result<Tensor> {
    let batch = rows.len();
    let len = rows.first().map_or(0, Vec::len);
    let mut bias = Vec::with_capacity(batch * len * len);
    for row in rows {
        if !row.iter().any(|&v| v) {
            bail!("attention_mask has a row with no tokens; every row needs at least one");
        }
        let key_bias: Vec<f32> = row.iter().map(|&v| if v { 0.0 } else { MASK_VALUE }).collect();
        for _ in 0..len {
            bias.extend_from_slice(&key_bias);
        }
    }
    Tensor::from_vec(bias, (batch, 1, len, len), device)
}

/// Position ids of each row, from which tokens are real (`valid`):
/// - BERT: `0, 1, …, L−1` whatever the padding (transformers' absolute positions);
/// - RoBERTa: `pad + 1, pad + 2, …` counting only real tokens, and `pad` at padded slots
///   (transformers' `create_position_ids_from_input_ids`), so a left-padded row gets the same
///   positions as unpadded.
pub fn position_ids(cfg: &EncoderConfig, valid: &[Vec<bool>]) -> Vec<Vec<u32>> {
    valid
        .iter()
        .map(|row| match cfg.model_type {
            EncoderType::Bert => (0..row.len() as u32).collect(),
            EncoderType::Roberta => {
                let pad = cfg.pad_token_id;
                let mut count = 0u32;
                row.iter()
                    .map(|&v| {
                        count += v as u32;
                        if v {
                            pad + count
                        } else {
                            pad
                        }
                    })
                    .collect()
            }
        })
        .collect()
}

/// The (B, L) u32 tensor of `position_ids`, checked against the position table.
pub fn position_tensor(cfg: &EncoderConfig, positions: Vec<Vec<u32>>, device: &Device) -> Result<Tensor> {
    let (batch, len) = (positions.len(), positions.first().map_or(0, Vec::len));
    let max = positions.iter().flatten().copied().max().unwrap_or(0) as usize;
    if max >= cfg.max_position_embeddings {
        bail!(
            "a sequence of {len} tokens needs position {max}, but the model has {} positions \
             (at most {} tokens a sequence); truncate the input",
            cfg.max_position_embeddings,
            cfg.max_tokens()
        );
    }
    Tensor::from_vec(positions.concat(), (batch, len), device)
}

/// Whether each id is a real token by RoBERTa's rule: `id != pad_token_id`.
pub fn non_pad(ids: &[Vec<u32>], pad: u32) -> Vec<Vec<bool>> {
    ids.iter().map(|r| r.iter().map(|&t| t != pad).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::config::Activation;

    fn cfg(model_type: EncoderType, pad: u32) -> EncoderConfig {
        EncoderConfig {
            model_type,
            vocab_size: 10,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 8,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: pad,
            tie_word_embeddings: true,
            architecture: None,
        }
    }

    #[test]
    fn roberta_positions_count_only_real_tokens_from_pad_plus_one() {
        // transformers: mask = ids.ne(pad); (cumsum(mask) * mask) + pad, worked by hand.
        let c = cfg(EncoderType::Roberta, 1);
        let ids = vec![vec![0, 5, 6, 2, 1, 1], vec![1, 1, 0, 7, 2, 1], vec![0, 1, 4, 2, 3, 3]];
        let got = position_ids(&c, &non_pad(&ids, 1));
        assert_eq!(got, vec![vec![2, 3, 4, 5, 1, 1], vec![1, 1, 2, 3, 4, 1], vec![2, 1, 3, 4, 5, 6]]);
    }

    #[test]
    fn bert_positions_ignore_padding() {
        let c = cfg(EncoderType::Bert, 0);
        let got = position_ids(&c, &[vec![false, true, true], vec![true, true, false]]);
        assert_eq!(got, vec![vec![0, 1, 2], vec![0, 1, 2]]);
    }

    #[test]
    fn too_long_sequences_are_refused_with_the_limit() {
        let c = cfg(EncoderType::Roberta, 1);
        // 6 real tokens fit (positions 2..7); 7 need position 8 of a table of 8.
        assert!(position_tensor(&c, position_ids(&c, &[vec![true; 6]]), &Device::Cpu).is_ok());
        let err = position_tensor(&c, position_ids(&c, &[vec![true; 7]]), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("at most 6 tokens"), "{err}");
    }

    #[test]
    fn bias_masks_padded_keys_for_every_query() {
        let rows = vec![vec![true, false, true]];
        let b = attention_bias(&rows, &Device::Cpu).unwrap();
        assert_eq!(b.dims(), [1, 1, 3, 3]);
        let v = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for q in 0..3 {
            assert_eq!(&v[q * 3..q * 3 + 3], &[0.0, MASK_VALUE, 0.0]);
        }
        assert!(attention_bias(&[vec![false, false]], &Device::Cpu).is_err());
    }
}
