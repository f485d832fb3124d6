//! The attention mask of one forward call: an additive bias (causal or bidirectional, with
//! padding) and the RoPE position of every query token, counted over valid tokens only.

use candle_core::{Device, Result, Tensor};

/// Large finite negative used for masked attention scores. `-inf` makes fully masked rows
/// (pad queries) NaN, and `0 * NaN` then leaks into real tokens (docs/ENGINE.md §2.5).
pub const MASK_VALUE: f32 = -1e9;

/// Additive attention bias (causal + padding) and per-row position ids for one forward call.
///
/// Keys are everything in the cache plus the new tokens; queries are the last `query_len`
/// keys. Positions count only valid tokens, so a left-padded row sees exactly the positions
/// (and logits) it would see unpadded.
#[derive(Clone, Debug)]
pub struct AttnMask {
    /// (B, 1, Lq, S) f32: 0 where attention is allowed, `MASK_VALUE` elsewhere.
    bias: Tensor,
    /// (B, Lq) u32 RoPE positions of the query tokens.
    positions: Tensor,
    batch: usize,
    query_len: usize,
    key_len: usize,
}

impl AttnMask {
    /// `key_valid[b][j]` says whether key `j` of row `b` is a real token (false for padding).
    /// All rows must have the same length S; the queries are the last `query_len` of the S
    /// tokens (S for a full forward or prefill, 1 for a decoding step after a cache of S-1).
    pub fn new(key_valid: &[Vec<bool>], query_len: usize, device: &Device) -> Result<AttnMask> {
        AttnMask::build(key_valid, query_len, true, device)
    }

    /// Like [`AttnMask::new`] for a full forward, but every query may attend to every valid
    /// key, before and after it: the mask of an encoder, or of a denoiser that reconstructs a
    /// whole noised sequence at once. Padding keys stay masked.
    pub fn bidirectional(key_valid: &[Vec<bool>], device: &Device) -> Result<AttnMask> {
        let len = key_valid.first().map_or(0, Vec::len);
        AttnMask::build(key_valid, len, false, device)
    }

    fn build(key_valid: &[Vec<bool>], query_len: usize, causal: bool, device: &Device) -> Result<AttnMask> {
        let batch = key_valid.len();
        if batch == 0 {
            candle_core::bail!("AttnMask::new: empty batch");
        }
        let key_len = key_valid[0].len();
        if let Some((b, row)) = key_valid.iter().enumerate().find(|(_, r)| r.len() != key_len) {
            candle_core::bail!("AttnMask::new: row {b} has {} flags, row 0 has {key_len}", row.len());
        }
        if query_len == 0 || query_len > key_len {
            candle_core::bail!("AttnMask::new: query_len {query_len} must be in 1..={key_len}");
        }
        let first_query = key_len - query_len;
        let mut bias = Vec::with_capacity(batch * query_len * key_len);
        let mut positions = Vec::with_capacity(batch * query_len);
        for row in key_valid {
            let valid_before: Vec<u32> = row
                .iter()
                .scan(0u32, |count, &v| {
                    let before = *count;
                    *count += v as u32;
                    Some(before)
                })
                .collect();
            for (q, &position) in valid_before.iter().enumerate().skip(first_query) {
                positions.push(position);
                bias.extend(row.iter().enumerate().map(|(k, &v)| if v && (k <= q || !causal) { 0.0 } else { MASK_VALUE }));
            }
        }
        Ok(AttnMask {
            bias: Tensor::from_vec(bias, (batch, 1, query_len, key_len), device)?,
            positions: Tensor::from_vec(positions, (batch, query_len), device)?,
            batch,
            query_len,
            key_len,
        })
    }

    /// Every token valid: a plain causal mask.
    pub fn causal(batch: usize, len: usize, device: &Device) -> Result<AttnMask> {
        AttnMask::new(&vec![vec![true; len]; batch], len, device)
    }

    /// Rows of `lengths[b]` real tokens, left-padded to `total_len`.
    pub fn left_padded(lengths: &[usize], total_len: usize, device: &Device) -> Result<AttnMask> {
        let rows: Vec<Vec<bool>> = lengths
            .iter()
            .map(|&n| (0..total_len).map(|j| j + n.min(total_len) >= total_len).collect())
            .collect();
        AttnMask::new(&rows, total_len, device)
    }

    /// From a transformers-style `attention_mask` (1 = token, 0 = padding), full forward.
    pub fn from_attention_mask(mask: &[Vec<u32>], device: &Device) -> Result<AttnMask> {
        let rows: Vec<Vec<bool>> = mask.iter().map(|r| r.iter().map(|&m| m != 0).collect()).collect();
        let len = rows.first().map_or(0, Vec::len);
        AttnMask::new(&rows, len, device)
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn query_len(&self) -> usize {
        self.query_len
    }
    pub fn key_len(&self) -> usize {
        self.key_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_positions_count_only_valid_tokens() {
        let dev = Device::Cpu;
        let m = AttnMask::left_padded(&[3, 1], 3, &dev).unwrap();
        assert_eq!(m.positions().to_vec2::<u32>().unwrap(), vec![vec![0, 1, 2], vec![0, 0, 0]]);
        let bias = m.bias().squeeze(1).unwrap().to_vec3::<f32>().unwrap();
        let n = MASK_VALUE;
        assert_eq!(bias[0], vec![vec![0.0, n, n], vec![0.0, 0.0, n], vec![0.0, 0.0, 0.0]]);
        // Row 1: only the last token is real; pad queries see nothing (all MASK_VALUE, finite).
        assert_eq!(bias[1], vec![vec![n, n, n], vec![n, n, n], vec![n, n, 0.0]]);
    }

    #[test]
    fn bidirectional_mask_sees_every_valid_key_both_ways() {
        let dev = Device::Cpu;
        let m = AttnMask::bidirectional(&[vec![true, false, true]], &dev).unwrap();
        let n = MASK_VALUE;
        let bias = m.bias().squeeze(1).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(bias[0], vec![vec![0.0, n, 0.0]; 3], "every query sees keys 0 and 2, never the pad");
        assert_eq!(m.positions().to_vec2::<u32>().unwrap(), vec![vec![0, 1, 1]]);
    }

    #[test]
    fn decode_step_mask_is_last_row_of_the_full_mask() {
        let dev = Device::Cpu;
        let valid = vec![vec![false, true, true, true], vec![true, true, false, true]];
        let full = AttnMask::new(&valid, 4, &dev).unwrap();
        let step = AttnMask::new(&valid, 1, &dev).unwrap();
        let full_last = full.bias().narrow(2, 3, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(step.bias().flatten_all().unwrap().to_vec1::<f32>().unwrap(), full_last);
        assert_eq!(step.positions().to_vec2::<u32>().unwrap(), vec![vec![2], vec![2]]);
        assert!(AttnMask::new(&valid, 5, &dev).is_err());
        assert!(AttnMask::new(&[vec![true], vec![true, true]], 1, &dev).is_err());
    }
}
