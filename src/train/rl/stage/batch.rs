//! Token layout of one rollout for the scoring and training forwards (rl-spec §0).
//!
//! Every row is `[left padding; prompt; response; right padding]` with one prompt width `P`
//! and one response width `T` for the whole step, so that per-token data of any subset of
//! rows lines up as `(B, T)` matrices. The log-prob of response token `j` comes from the
//! logits at position `P − 1 + j` (verl slices `logits[:, -T-1:-1]`).

use crate::model::{AttnMask, Decoder, Mode};
use crate::train::rl::advantage::Mat;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::ops::Range;

/// Padded tensors for a contiguous range of rollout rows.
pub struct SeqBatch {
    /// (B, P + T) token ids.
    pub ids: Tensor,
    pub attn: AttnMask,
    /// (B, T) u32 response tokens (padding where the mask is 0).
    pub targets: Tensor,
    /// (B, T) f32 response mask m.
    pub mask: Tensor,
    /// (B, P + T) f32: 1 on real prompt tokens (for FlowRL's pooled prompt state, §4.2).
    pub prompt_mask: Tensor,
    pub prompt_width: usize,
    pub response_width: usize,
}

/// Widths of the whole step: the longest prompt and the longest response.
pub fn widths(prompts: &[Vec<u32>], responses: &[Vec<u32>]) -> (usize, usize) {
    let p = prompts.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let t = responses.iter().map(Vec::len).max().unwrap_or(1).max(1);
    (p, t)
}

/// The response mask `(B, T)` of all rows: 1 for each generated token (EOS included).
pub fn response_mask(responses: &[Vec<u32>], width: usize) -> Mat {
    let mut m = Mat::zeros(responses.len(), width);
    for (r, resp) in responses.iter().enumerate() {
        m.row_mut(r)[..resp.len()].iter_mut().for_each(|x| *x = 1.0);
    }
    m
}

pub fn build(
    prompts: &[Vec<u32>],
    responses: &[Vec<u32>],
    rows: Range<usize>,
    (p, t): (usize, usize),
    pad: u32,
    device: &Device,
) -> Result<SeqBatch> {
    let b = rows.len();
    let len = p + t;
    let mut ids = vec![pad; b * len];
    let mut valid = vec![vec![false; len]; b];
    let mut targets = vec![pad; b * t];
    let mut mask = vec![0f32; b * t];
    let mut prompt_mask = vec![0f32; b * len];
    for (i, row) in rows.enumerate() {
        let (prompt, resp) = (&prompts[row], &responses[row]);
        let start = p - prompt.len();
        for (j, &tok) in prompt.iter().enumerate() {
            ids[i * len + start + j] = tok;
            valid[i][start + j] = true;
            prompt_mask[i * len + start + j] = 1.0;
        }
        for (j, &tok) in resp.iter().enumerate() {
            ids[i * len + p + j] = tok;
            valid[i][p + j] = true;
            targets[i * t + j] = tok;
            mask[i * t + j] = 1.0;
        }
    }
    Ok(SeqBatch {
        ids: Tensor::from_vec(ids, (b, len), device)?,
        attn: AttnMask::new(&valid, len, device)?,
        targets: Tensor::from_vec(targets, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        prompt_mask: Tensor::from_vec(prompt_mask, (b, len), device)?,
        prompt_width: p,
        response_width: t,
    })
}

/// Log-probs and entropies `(B, T)` of the response tokens under `softmax(z / temperature)`
/// (rl-spec §0), plus the final hidden states `(B, P + T, H)`.
pub fn score(decoder: &Decoder, batch: &SeqBatch, temperature: f64, mode: Mode) -> Result<(Tensor, Tensor, Tensor)> {
    let hidden = decoder.forward_hidden(&batch.ids, &batch.attn, None, mode)?;
    // Logits only where a response token is predicted: the LM head and the (B, T, V) logits
    // (and their gradient) are the largest tensors of a step at a real vocabulary.
    let scored = hidden.narrow(1, batch.prompt_width - 1, batch.response_width)?;
    let (logp, entropy) = decoder.token_logprobs(&scored, &batch.targets, temperature)?;
    Ok((logp, entropy, hidden))
}

/// Rows `rows` of a `(B, T)` matrix as an f32 tensor.
pub fn rows_tensor(m: &Mat, rows: Range<usize>, device: &Device) -> Result<Tensor> {
    let data = m.data[rows.start * m.cols..rows.end * m.cols].to_vec();
    Ok(Tensor::from_vec(data, (rows.len(), m.cols), device)?)
}

/// Writes a `(b, T)` tensor into rows `start..start + b` of `m`.
pub fn put_rows(m: &mut Mat, start: usize, t: &Tensor) -> Result<()> {
    let (b, cols) = t.dims2()?;
    let data = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    m.data[start * cols..(start + b) * cols].copy_from_slice(&data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_left_pads_prompts_and_right_pads_responses() {
        let prompts = vec![vec![5, 6, 7], vec![8]];
        let responses = vec![vec![1], vec![2, 3]];
        let w = widths(&prompts, &responses);
        assert_eq!(w, (3, 2));
        let b = build(&prompts, &responses, 0..2, w, 0, &Device::Cpu).unwrap();
        assert_eq!(b.ids.to_vec2::<u32>().unwrap(), vec![vec![5, 6, 7, 1, 0], vec![0, 0, 8, 2, 3]]);
        assert_eq!(b.mask.to_vec2::<f32>().unwrap(), vec![vec![1.0, 0.0], vec![1.0, 1.0]]);
        assert_eq!(b.targets.to_vec2::<u32>().unwrap(), vec![vec![1, 0], vec![2, 3]]);
        assert_eq!(b.prompt_mask.to_vec2::<f32>().unwrap(), vec![vec![1.0, 1.0, 1.0, 0.0, 0.0], vec![0.0, 0.0, 1.0, 0.0, 0.0]]);
        assert_eq!(response_mask(&responses, 2).data, vec![1.0, 0.0, 1.0, 1.0]);
        // A sub-range keeps the step's widths.
        let one = build(&prompts, &responses, 1..2, w, 0, &Device::Cpu).unwrap();
        assert_eq!(one.ids.to_vec2::<u32>().unwrap(), vec![vec![0, 0, 8, 2, 3]]);
    }
}
