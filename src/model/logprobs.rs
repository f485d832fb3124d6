//! Per-token log-probabilities and entropies from logits: the quantity every policy-gradient
//! loss (GRPO/PPO/FlowRL, rl-spec.md) and the rollout sampler agree on.
//!
//! Kept a small, replaceable function: a later version may fuse it (chunked over rows) to
//! avoid materialising several (B, L, V) copies for the backward pass.

use candle_core::{Result, Tensor, D};

/// `logp[b,t] = log softmax(logits[b,t] / T)[targets[b,t]]` and the entropy of that
/// temperature-scaled distribution, `H = logsumexp(z) - Σ softmax(z)·z` with `z = logits / T`.
///
/// `logits` is (B, L, V) f32, `targets` (B, L) u32. Both outputs are (B, L) f32 and
/// differentiable with respect to `logits`.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, Tensor)> {
    if temperature.is_nan() || temperature <= 0.0 {
        candle_core::bail!("token_logprobs: temperature must be positive, got {temperature}");
    }
    let (b, l, _) = logits.dims3()?;
    if targets.dims() != [b, l] {
        candle_core::bail!("token_logprobs: targets shape {:?} does not match logits {:?}", targets.dims(), logits.dims());
    }
    let z = (logits / temperature)?;
    // The shift only stabilises exp(); detaching it leaves the value and gradient unchanged
    // (logsumexp's gradient does not depend on the shift).
    let shift = z.max_keepdim(D::Minus1)?.detach();
    let shifted = z.broadcast_sub(&shift)?;
    let lse = (shifted.exp()?.sum_keepdim(D::Minus1)?.log()? + &shift)?; // (B, L, 1)
    let picked = z.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?; // (B, L, 1)
    let logp = (picked - &lse)?.squeeze(D::Minus1)?;
    let probs = z.broadcast_sub(&lse)?.exp()?;
    let entropy = (lse.squeeze(D::Minus1)? - (probs * &z)?.sum(D::Minus1)?)?;
    Ok((logp, entropy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_hand_computed_values() {
        // Row logits [0, ln 2, ln 3] → probs 1/6, 2/6, 3/6.
        let logits = Tensor::new(&[[[0.0f32, 2f32.ln(), 3f32.ln()], [1.0, 1.0, 1.0]]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[[2u32, 0]], &Device::Cpu).unwrap();
        let (logp, ent) = token_logprobs(&logits, &targets, 1.0).unwrap();
        let logp = logp.to_vec2::<f32>().unwrap();
        let ent = ent.to_vec2::<f32>().unwrap();
        assert!((logp[0][0] - 0.5f32.ln()).abs() < 1e-6);
        assert!((logp[0][1] - (1.0f32 / 3.0).ln()).abs() < 1e-6);
        let h0 = -(1.0 / 6.0 * (1.0f32 / 6.0).ln() + 2.0 / 6.0 * (2.0f32 / 6.0).ln() + 0.5 * 0.5f32.ln());
        assert!((ent[0][0] - h0).abs() < 1e-6);
        assert!((ent[0][1] - 3f32.ln()).abs() < 1e-6);
        // Temperature 2 halves the logits: probs ∝ [1, √2, √3].
        let (logp2, _) = token_logprobs(&logits, &targets, 2.0).unwrap();
        let s = 1.0 + 2f32.sqrt() + 3f32.sqrt();
        assert!((logp2.to_vec2::<f32>().unwrap()[0][0] - (3f32.sqrt() / s).ln()).abs() < 1e-6);
        assert!(token_logprobs(&logits, &targets, 0.0).is_err());
    }

    #[test]
    fn gradient_is_onehot_minus_softmax() {
        let logits = Var::new(&[[[0.5f32, -1.0, 2.0, 0.0]]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[[1u32]], &Device::Cpu).unwrap();
        let (logp, _) = token_logprobs(logits.as_tensor(), &targets, 1.0).unwrap();
        let grads = logp.sum_all().unwrap().backward().unwrap();
        let g = grads.get(&logits).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let z = [0.5f32, -1.0, 2.0, 0.0];
        let s: f32 = z.iter().map(|v| v.exp()).sum();
        for (i, gi) in g.iter().enumerate() {
            let want = (i == 1) as i32 as f32 - z[i].exp() / s;
            assert!((gi - want).abs() < 1e-6, "{g:?}");
        }
    }
}
