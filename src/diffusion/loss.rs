//! The denoiser and its losses (research/synth-spec.md §5.2–5.3).
//!
//! ```text
//! x₀      = embedding layer(ids)                       (word + position + type, LayerNorm; not detached)
//! x_t     = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε                  (one t per sequence, every position noised)
//! x̂₀      = encoder layers(x_t + temb(t))              (the unchanged encoder as x₀-predictor)
//! L_mse   = mean_{L,d} (x₀ − x̂₀)²                      (per sequence)
//! L_T     = mean_{L,d} (√ᾱ_{T−1} · x₀)²                 (per sequence)
//! L_round = CE(mlm_head(x̂₀), ids), over real tokens    (the OOD score, per text)
//! L_total = mean_batch(L_mse + L_T) + L_round
//! ```
//!
//! Padding ([`Padding`]): retort pads with the model's pad id, masks padded keys in attention
//! and averages L_mse and L_T over real positions only. The reference implementation pads
//! ids with 0 (RoBERTa's `<s>`), passes no attention mask, and averages L_mse and L_T over
//! every position, padding included; [`Padding::Reference`] reproduces that. In both, L_round
//! ignores padding (the reference's labels are −100 there).

use super::schedule::{timestep_embeddings, NoiseSchedule};
use crate::model::encoder::Encoder;
use candle_core::{bail, DType, Device, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// How a batch is padded and what its losses average over (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// The model's pad id, padded keys masked, L_mse and L_T over real positions.
    #[default]
    Masked,
    /// The reference code's behaviour: pad with `bos` (`<s>`), attend to every position,
    /// L_mse and L_T over every position.
    Reference,
}

/// A right-padded batch of token rows for the denoiser.
pub struct DenoiseBatch {
    /// (B, L) u32.
    pub ids: Tensor,
    /// (B, L) u32: the attention mask the encoder gets (all ones for `Reference`).
    pub attention: Tensor,
    /// (B, L) f32: 1 at real tokens (the L_round labels).
    pub real: Tensor,
    /// (B, L) f32: the positions L_mse and L_T average over.
    pub mse_weight: Tensor,
    /// Real tokens of each row.
    pub lengths: Vec<usize>,
}

impl DenoiseBatch {
    /// `pad` is the model's pad id; `bos` the id the reference pads with (`<s>`).
    pub fn new(rows: &[Vec<u32>], pad: u32, bos: u32, padding: Padding, device: &Device) -> Result<DenoiseBatch> {
        if rows.is_empty() || rows.iter().any(|r| r.is_empty()) {
            bail!("a denoising batch needs at least one row, each with at least one token");
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(1);
        let b = rows.len();
        let fill = match padding {
            Padding::Masked => pad,
            Padding::Reference => bos,
        };
        let (mut ids, mut attention, mut real) = (Vec::with_capacity(b * len), Vec::with_capacity(b * len), Vec::with_capacity(b * len));
        for r in rows {
            for j in 0..len {
                let is_real = j < r.len();
                ids.push(if is_real { r[j] } else { fill });
                attention.push(if is_real || padding == Padding::Reference { 1u32 } else { 0 });
                real.push(if is_real { 1f32 } else { 0.0 });
            }
        }
        let real = Tensor::from_vec(real, (b, len), device)?;
        let mse_weight = match padding {
            Padding::Masked => real.clone(),
            Padding::Reference => Tensor::ones((b, len), DType::F32, device)?,
        };
        Ok(DenoiseBatch {
            ids: Tensor::from_vec(ids, (b, len), device)?,
            attention: Tensor::from_vec(attention, (b, len), device)?,
            real,
            mse_weight,
            lengths: rows.iter().map(Vec::len).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The padded length L.
    pub fn width(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
}

/// One denoising pass: the target, the prediction and the features the Mahalanobis score uses.
pub struct Denoised {
    /// x₀ (B, L, d), differentiable.
    pub x0: Tensor,
    /// x̂₀ (B, L, d): the encoder's last hidden state.
    pub x0_hat: Tensor,
    /// transformers' `hidden_states[-2]` (B, L, d): the input of the last layer.
    pub second_last: Tensor,
}

/// Runs the denoiser on `batch` at timesteps `t` (one per row) with `noise` (B, L, d).
pub fn denoise(enc: &Encoder, schedule: &NoiseSchedule, batch: &DenoiseBatch, t: &[usize], noise: &Tensor) -> Result<Denoised> {
    let x0 = enc.embedding_output(&batch.ids, &batch.attention, None)?;
    let xt = schedule.q_sample(&x0, t, noise)?;
    let h0 = xt.broadcast_add(&timestep_embeddings(t, enc.hidden_size(), x0.device())?.to_dtype(x0.dtype())?)?;
    let mut hidden = enc.layers_from(&h0, &batch.attention)?;
    let x0_hat = hidden.pop().ok_or_else(|| candle_core::Error::Msg("the encoder has no layers".into()))?;
    let second_last = hidden.pop().unwrap_or(h0);
    Ok(Denoised { x0, x0_hat, second_last })
}

/// The loss terms of one batch.
pub struct Losses {
    /// L_mse per sequence (B).
    pub mse: Tensor,
    /// L_T per sequence (B).
    pub t_loss: Tensor,
    /// mean_batch(L_mse + L_T), a scalar.
    pub diff: Tensor,
    /// L_round over the batch's real tokens (a scalar).
    pub round: Tensor,
    /// L_diff + L_round (a scalar): what training minimises.
    pub total: Tensor,
    /// L_round of each text alone: the mean CE over its own tokens (B), the OOD score.
    pub round_per_row: Tensor,
}

/// The §5.3 losses from their ingredients: x₀ and x̂₀ (B, L, d), MLM logits (B, L, V), the
/// batch (ids and weights) and `√ᾱ_{T−1}`. Pure formulas, so a hand-computed case tests them.
pub fn loss_terms(x0: &Tensor, x0_hat: &Tensor, logits: &Tensor, batch: &DenoiseBatch, sqrt_alpha_bar_last: f64) -> Result<Losses> {
    let w = &batch.mse_weight;
    let positions = w.sum(1)?; // (B)
    // The mean over d, then the weighted mean over positions: mean_{L,d} over the kept positions.
    let row_mean = |sq: Tensor| -> Result<Tensor> { (sq.mean(D::Minus1)? * w)?.sum(1)? / &positions };
    let mse = row_mean((x0 - x0_hat)?.sqr()?)?;
    let t_loss = row_mean((x0 * sqrt_alpha_bar_last)?.sqr()?)?;
    let diff = (&mse + &t_loss)?.mean_all()?;

    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let nll = logp.gather(&batch.ids.unsqueeze(2)?, 2)?.squeeze(2)?.neg()?; // (B, L)
    let masked = (nll * &batch.real)?;
    let tokens = batch.real.sum(1)?;
    let round_per_row = (masked.sum(1)? / &tokens)?;
    let round = (masked.sum_all()? / batch.real.sum_all()?)?;
    let total = (&diff + &round)?;
    Ok(Losses { mse, t_loss, diff, round, total, round_per_row })
}

/// [`denoise`] then [`loss_terms`]: the training loss of a batch.
pub fn losses(enc: &Encoder, schedule: &NoiseSchedule, batch: &DenoiseBatch, t: &[usize], noise: &Tensor) -> Result<(Losses, Denoised)> {
    let out = denoise(enc, schedule, batch, t, noise)?;
    let logits = enc.mlm_logits(&out.x0_hat)?;
    let last = schedule.sqrt_alpha_bar(schedule.steps() - 1);
    Ok((loss_terms(&out.x0, &out.x0_hat, &logits, batch, last)?, out))
}

/// Standard-normal noise (B, L, d) for a batch, row `r` drawn from `rng_for(r)` over its own
/// real length only (padding gets zeros), so a text's noise does not depend on what it is
/// batched with or how long the batch is.
pub fn row_noise(lengths: &[usize], width: usize, dim: usize, mut rng_for: impl FnMut(usize) -> crate::rng::Rng, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; lengths.len() * width * dim];
    for (r, &n) in lengths.iter().enumerate() {
        let mut rng = rng_for(r);
        let start = r * width * dim;
        for x in &mut v[start..start + n * dim] {
            *x = rng.normal() as f32;
        }
    }
    Tensor::from_vec(v, (lengths.len(), width, dim), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t3(v: &[f32], shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn scalars(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Two rows, d = 2, vocabulary 2: row 0 has two tokens, row 1 one token and a pad.
    fn case(padding: Padding) -> Losses {
        let batch = DenoiseBatch::new(&[vec![0, 1], vec![1]], 1, 0, padding, &Device::Cpu).unwrap();
        let x0 = t3(&[1., 2., 3., 4., /* row 1 */ 1., 1., 2., 0.], (2, 2, 2));
        let x0_hat = t3(&[0., 2., 3., 2., /* row 1 */ 1., 3., 0., 0.], (2, 2, 2));
        // Logits (0, 0) → CE ln 2 for either id; (ln 3, 0) → CE of id 0 is ln(4/3), of id 1 ln 4.
        let l3 = 3f32.ln();
        let logits = t3(&[0., 0., l3, 0., /* row 1 */ l3, 0., 0., 0.], (2, 2, 2));
        loss_terms(&x0, &x0_hat, &logits, &batch, 0.5).unwrap()
    }

    #[test]
    fn losses_match_a_hand_computed_case() {
        let m = case(Padding::Masked);
        // Row 0: squared errors (1, 0) and (0, 4): per-position means 0.5, 2 → L_mse 1.25.
        // Row 1: only position 0 is real: (0, 4) → 2.
        let mse = scalars(&m.mse);
        assert!((mse[0] - 1.25).abs() < 1e-6 && (mse[1] - 2.0).abs() < 1e-6, "{mse:?}");
        // L_T with √ᾱ = 0.5: row 0 (0.25·(1+4) + 0.25·(9+16)) / 2 / 2 = 1.875; row 1 0.25·2/2 = 0.25.
        let tl = scalars(&m.t_loss);
        assert!((tl[0] - 1.875).abs() < 1e-6 && (tl[1] - 0.25).abs() < 1e-6, "{tl:?}");
        assert!((scalars(&m.diff)[0] - (1.25 + 1.875 + 2.0 + 0.25) / 2.0).abs() < 1e-6);
        // Row 0: ids (0, 1): ln 2 + ln 4 = 3 ln 2 over 2 tokens; row 1: id 1 at logits (ln 3, 0): ln 4.
        let ln2 = std::f32::consts::LN_2;
        let per_row = scalars(&m.round_per_row);
        assert!((per_row[0] - 1.5 * ln2).abs() < 1e-6 && (per_row[1] - 2.0 * ln2).abs() < 1e-6, "{per_row:?}");
        assert!((scalars(&m.round)[0] - 5.0 * ln2 / 3.0).abs() < 1e-6);
        assert!((scalars(&m.total)[0] - (2.6875 + 5.0 * ln2 / 3.0)).abs() < 1e-5);

        // The reference averages L_mse and L_T over the pad too: row 1 gets (2 + (4 + 0)/2)/2 = 2
        // and L_T (0.25·2/2 + 0.25·4/2)/2 = 0.375; L_round is unchanged (labels −100 at pads).
        let r = case(Padding::Reference);
        let mse = scalars(&r.mse);
        assert!((mse[0] - 1.25).abs() < 1e-6 && (mse[1] - 2.0).abs() < 1e-6, "{mse:?}");
        assert!((scalars(&r.t_loss)[1] - 0.375).abs() < 1e-6);
        assert!((scalars(&r.round)[0] - 5.0 * ln2 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn batches_pad_as_asked() {
        let m = DenoiseBatch::new(&[vec![0, 5, 2], vec![0, 2]], 1, 0, Padding::Masked, &Device::Cpu).unwrap();
        assert_eq!(m.ids.to_vec2::<u32>().unwrap(), vec![vec![0, 5, 2], vec![0, 2, 1]]);
        assert_eq!(m.attention.to_vec2::<u32>().unwrap(), vec![vec![1, 1, 1], vec![1, 1, 0]]);
        let r = DenoiseBatch::new(&[vec![0, 5, 2], vec![0, 2]], 1, 0, Padding::Reference, &Device::Cpu).unwrap();
        assert_eq!(r.ids.to_vec2::<u32>().unwrap(), vec![vec![0, 5, 2], vec![0, 2, 0]]);
        assert_eq!(r.attention.to_vec2::<u32>().unwrap(), vec![vec![1, 1, 1], vec![1, 1, 1]]);
        assert_eq!(r.real.to_vec2::<f32>().unwrap(), vec![vec![1., 1., 1.], vec![1., 1., 0.]]);
        assert!(DenoiseBatch::new(&[], 1, 0, Padding::Masked, &Device::Cpu).is_err());
    }

    #[test]
    fn row_noise_depends_only_on_the_row_stream() {
        let rng = |r: usize| crate::rng::Rng::derive(7, &format!("row/{r}"));
        let a = row_noise(&[2, 1], 2, 3, rng, &Device::Cpu).unwrap();
        let b = row_noise(&[1], 4, 3, |_| rng(1), &Device::Cpu).unwrap();
        let a1 = a.get(1).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        let b0 = b.get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a1, b0);
        assert_eq!(scalars(&a.get(1).unwrap().get(1).unwrap()), vec![0.0; 3]);
    }
}
