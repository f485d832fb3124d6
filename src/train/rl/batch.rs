//! Token layout of one rollout for the scoring and training forwards (docs/METHODS.md §0). The
//! shared-prompt scoring forward the reference pass and the update use lives in
//! [`crate::model::score`] (eval's option scoring uses it too).
//!
//! Every row is `[left padding; prompt; response; right padding]` with one prompt width `P`
//! and one response width `T` for the whole step, so that per-token data of any subset of
//! rows lines up as `(B, T)` matrices. The log-prob of response token `j` comes from the
//! logits at position `P − 1 + j` (verl slices `logits[:, -T-1:-1]`).

#[cfg(test)]
use crate::model::{Decoder, Mode};
use crate::model::AttnMask;
use crate::train::rl::advantage::Mat;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::ops::Range;

/// Padded tensors for a contiguous range of rollout rows.
pub struct SeqBatch {
    /// (B, P + T) token ids.
    pub ids: Tensor,
    pub attn: AttnMask,
    /// (B, T) u32 response tokens (padding where the mask is 0); read by the full-sequence
    /// [`score`] of the tests (the stage scores with
    /// [`crate::model::score::score_shared_prompts`]).
    #[cfg_attr(not(test), allow(dead_code))]
    pub targets: Tensor,
    /// (B, T) f32 response mask m.
    pub mask: Tensor,
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

/// The loss mask `(B, T)`: the response mask with every tool-written token set to 0
/// (`from_tool[r][j]`; rows without flags have no tool tokens).
pub fn loss_mask(responses: &[Vec<u32>], from_tool: &[Vec<bool>], width: usize) -> Mat {
    let mut m = response_mask(responses, width);
    for (r, flags) in from_tool.iter().enumerate() {
        for (j, _) in flags.iter().enumerate().filter(|(_, &tool)| tool) {
            m.row_mut(r)[j] = 0.0;
        }
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
    for (i, row) in rows.enumerate() {
        let (prompt, resp) = (&prompts[row], &responses[row]);
        let start = p - prompt.len();
        for (j, &tok) in prompt.iter().enumerate() {
            ids[i * len + start + j] = tok;
            valid[i][start + j] = true;
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
        prompt_width: p,
        response_width: t,
    })
}

/// Log-probs and entropies `(B, T)` of the response tokens under `softmax(z / temperature)`
/// (docs/METHODS.md §0), plus the final hidden states `(B, P + T, H)`: one forward over every row's
/// full sequence. The reference [`crate::model::score::score_shared_prompts`] is tested against.
#[cfg(test)]
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
    use crate::model::score::score_shared_prompts;
    use crate::model::{Model, ModelConfig};

    #[test]
    fn shared_prompt_scoring_matches_the_full_forward_in_values_and_gradients() {
        let dev = Device::Cpu;
        let mut cfg = ModelConfig::preset("tiny", 40).unwrap();
        cfg.num_hidden_layers = 2;
        let model = Model::init_random(cfg, 3, &dev).unwrap();
        // Two groups of three (prompts of different lengths, so one is left-padded), a third
        // prompt alone, responses of 1 to 4 tokens (right padding), and a range that starts
        // inside a group (as a micro-batch can).
        let prompts: Vec<Vec<u32>> =
            [vec![5, 6, 7, 8], vec![5, 6, 7, 8], vec![5, 6, 7, 8], vec![9, 3], vec![9, 3], vec![9, 3], vec![11, 12, 13]].to_vec();
        let responses: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4], vec![2], vec![3, 3], vec![4, 5, 6], vec![7], vec![8, 9, 10, 11], vec![12, 13]];
        let widths = widths(&prompts, &responses);
        for rows in [0..7, 1..6] {
            let run = |shared: bool| {
                let weights: Vec<f32> = (0..rows.len() * widths.1).map(|i| ((i * 7 % 5) as f32 - 2.0) / 3.0).collect();
                let sb = build(&prompts, &responses, rows.clone(), widths, 0, &dev).unwrap();
                let (logp, ent) = if shared {
                    let s = score_shared_prompts(&model.decoder, (&prompts, &responses), rows.clone(), widths, 0, 0.8, Mode::Train).unwrap();
                    assert_eq!(s.mask.to_vec2::<f32>().unwrap(), sb.mask.to_vec2::<f32>().unwrap());
                    let left_padded: Vec<Vec<f32>> =
                        prompts[rows.clone()].iter().map(|q| (0..widths.0).map(|j| (j + q.len() >= widths.0) as u8 as f32).collect()).collect();
                    assert_eq!(s.prompt_mask.to_vec2::<f32>().unwrap(), left_padded);
                    (s.logp, s.entropy)
                } else {
                    let (l, e, _) = score(&model.decoder, &sb, 0.8, Mode::Train).unwrap();
                    (l, e)
                };
                let w = Tensor::from_vec(weights, (rows.len(), widths.1), &dev).unwrap();
                let loss = ((&logp * &sb.mask).unwrap() * &w).unwrap().sum_all().unwrap() + (&ent * &sb.mask).unwrap().sum_all().unwrap();
                let grads = loss.unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let masked = |t: &Tensor| flat(&(t * &sb.mask).unwrap());
                let g: Vec<Vec<f32>> = model.vars().iter().map(|(_, v)| flat(grads.get(v).expect("every parameter gets a gradient"))).collect();
                (masked(&logp), masked(&ent), g)
            };
            let (full, shared) = (run(false), run(true));
            for (what, a, b) in [("logp", &full.0, &shared.0), ("entropy", &full.1, &shared.1)] {
                for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                    assert!((x - y).abs() <= 1e-5 + 1e-5 * x.abs(), "rows {rows:?} {what}[{i}]: full {x} vs shared {y}");
                }
            }
            for (p, (a, b)) in full.2.iter().zip(&shared.2).enumerate() {
                let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(scale > 0.0, "parameter {p} has a zero gradient: the check would compare nothing");
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!((x - y).abs() <= 1e-5 + 1e-4 * scale, "rows {rows:?} parameter {p} grad[{i}]: full {x} vs shared {y}");
                }
            }
        }
    }

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
        assert_eq!(response_mask(&responses, 2).data, vec![1.0, 0.0, 1.0, 1.0]);
        // A sub-range keeps the step's widths.
        let one = build(&prompts, &responses, 1..2, w, 0, &Device::Cpu).unwrap();
        assert_eq!(one.ids.to_vec2::<u32>().unwrap(), vec![vec![0, 0, 8, 2, 3]]);
    }

    #[test]
    fn tool_tokens_are_out_of_the_loss_mask_token_by_token() {
        // Row 0: model, model, tool, tool, model (EOS); row 1 no tools and shorter; row 2 a
        // response cut inside a tool output.
        let responses = vec![vec![5, 6, 7, 8, 0], vec![9, 0], vec![1, 2, 3]];
        let from_tool = vec![vec![false, false, true, true, false], vec![false, false], vec![false, true, true]];
        let m = loss_mask(&responses, &from_tool, 5);
        assert_eq!(m.data, vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // The outcome reward goes to the last token the model wrote, not to tool output.
        let r = crate::train::rl::advantage::token_rewards_from_scores(&[1.0, 2.0, 3.0], &m).unwrap();
        assert_eq!(r.row(0), &[0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(r.row(2), &[3.0, 0.0, 0.0, 0.0, 0.0]);
        // Without tools it is the response mask.
        assert_eq!(loss_mask(&responses, &[], 5).data, response_mask(&responses, 5).data);
    }
}
