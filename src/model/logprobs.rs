//! Per-token log-probabilities and entropies from logits: the quantity every policy-gradient
//! loss (GRPO/PPO/FlowRL, docs/METHODS.md) and the rollout sampler agree on.
//!
//! On the CPU with f32 logits this runs a fused, multi-threaded custom op ([`fused`]) that
//! never materialises a (B, L, V) log-softmax; elsewhere (GPU devices, other dtypes) it runs
//! the unfused candle expression, which is also the reference the fused op is tested against.

mod fused;
mod head;

use candle_core::{DType, Result, Tensor, D};

/// `logp[b,t] = log softmax(logits[b,t] / T)[targets[b,t]]` and the entropy of that
/// temperature-scaled distribution, `H = logsumexp(z) - Σ softmax(z)·z` with `z = logits / T`.
///
/// `logits` is (B, L, V) f32, `targets` (B, L) u32. Both outputs are (B, L) f32 and
/// differentiable with respect to `logits` (their gradients combine).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, Tensor)> {
    check_args(logits, targets, temperature)?;
    if !logits.device().is_cpu() || logits.dtype() != DType::F32 || targets.dtype() != DType::U32 {
        return token_logprobs_reference(logits, targets, temperature);
    }
    // The kernel reads rows in place (a narrow over L is fine) but needs unit stride along V.
    let logits = if logits.stride()[2] == 1 { logits.clone() } else { logits.contiguous()? };
    // z = x · (1/T) in f32, the same rounding as the reference's `logits / T` (an affine op).
    let inv_t = (1.0 / temperature) as f32;
    let out = logits.apply_op2(targets, fused::TokenLogprobs { inv_t })?; // (2, B, L)
    Ok((out.get(0)?, out.get(1)?))
}

/// [`token_logprobs`] of the logits `hidden · weightᵀ` (the LM head), without keeping the
/// (B, L, V) logits: on the CPU in f32 the product and the log-softmax run fused in row
/// chunks, forward and backward ([`head`]); elsewhere, the product then [`token_logprobs`].
///
/// `hidden` is (B, L, H), `weight` (V, H), `targets` (B, L) u32. Differentiable with respect to
/// `hidden` and `weight`.
pub fn head_token_logprobs(hidden: &Tensor, weight: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, Tensor)> {
    let (b, l, h) = hidden.dims3()?;
    let (v, hw) = weight.dims2()?;
    if hw != h {
        candle_core::bail!("head_token_logprobs: hidden {:?} does not end in the weight's input size (weight {:?})", hidden.dims(), weight.dims());
    }
    if targets.dims() != [b, l] {
        candle_core::bail!("head_token_logprobs: targets shape {:?} does not match hidden {:?}", targets.dims(), hidden.dims());
    }
    if temperature.is_nan() || temperature <= 0.0 {
        candle_core::bail!("token_logprobs: temperature must be positive, got {temperature}");
    }
    let fusable = [hidden, weight].iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32) && targets.dtype() == DType::U32;
    if !fusable {
        let logits = crate::model::fused::linear::linear(hidden, weight, None)?.to_dtype(DType::F32)?;
        return token_logprobs(&logits, targets, temperature);
    }
    let inv_t = (1.0 / temperature) as f32;
    let rows = hidden.contiguous()?.reshape((b * l, h))?;
    let out = rows.apply_op3(&weight.contiguous()?, &targets.contiguous()?.reshape(b * l)?, head::HeadLogprobs::new(inv_t, v))?; // (2, B·L)
    Ok((out.get(0)?.reshape((b, l))?, out.get(1)?.reshape((b, l))?))
}

fn check_args(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<()> {
    if temperature.is_nan() || temperature <= 0.0 {
        candle_core::bail!("token_logprobs: temperature must be positive, got {temperature}");
    }
    let (b, l, _) = logits.dims3()?;
    if targets.dims() != [b, l] {
        candle_core::bail!("token_logprobs: targets shape {:?} does not match logits {:?}", targets.dims(), logits.dims());
    }
    Ok(())
}

/// The unfused candle expression of [`token_logprobs`]: the fallback off the CPU or for
/// non-f32 logits, and the independent reference the fused op is tested against.
pub fn token_logprobs_reference(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, Tensor)> {
    check_args(logits, targets, temperature)?;
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

    /// Seeded logits with a spread like a trained model's (a few large, most small) and targets.
    fn random_case(rng: &mut crate::rng::Rng, b: usize, l: usize, v: usize) -> (Vec<f32>, Vec<u32>) {
        let logits = (0..b * l * v).map(|_| (rng.f32() * 2.0 - 1.0) * 4.0 + if rng.f32() < 0.05 { 6.0 } else { 0.0 }).collect();
        let targets = (0..b * l).map(|_| (rng.next_u64() % v as u64) as u32).collect();
        (logits, targets)
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 2e-5 + 2e-5 * w.abs(), "{what}[{i}]: fused {g} vs reference {w}");
        }
    }

    /// Values of (logp, H) and the gradient of `Σ a·logp + Σ c·H` (random a, c: both outputs
    /// feed the loss), from `f` on `logits[:, :l_used]` (a row-strided view, as the callers pass).
    fn run(
        f: fn(&Tensor, &Tensor, f64) -> Result<(Tensor, Tensor)>,
        logits: &[f32],
        targets: &[u32],
        (b, l, v): (usize, usize, usize),
        l_used: usize,
        temperature: f64,
        weights: (&[f32], &[f32]),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let dev = Device::Cpu;
        let x = Var::from_slice(logits, (b, l, v), &dev).unwrap();
        let view = x.as_tensor().narrow(1, 0, l_used).unwrap();
        let t = Tensor::from_slice(targets, (b, l), &dev).unwrap().narrow(1, 0, l_used).unwrap();
        let (logp, ent) = f(&view, &t, temperature).unwrap();
        assert_eq!((logp.dims(), ent.dims()), (&[b, l_used][..], &[b, l_used][..]));
        let wa = Tensor::from_slice(&weights.0[..b * l_used], (b, l_used), &dev).unwrap();
        let wc = Tensor::from_slice(&weights.1[..b * l_used], (b, l_used), &dev).unwrap();
        let loss = ((&logp * &wa).unwrap().sum_all().unwrap() + (&ent * &wc).unwrap().sum_all().unwrap()).unwrap();
        let grad = loss.backward().unwrap().get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (flat(&logp), flat(&ent), grad)
    }

    #[test]
    fn fused_matches_the_unfused_reference() {
        let mut rng = crate::rng::Rng::new(11);
        // Odd vocabularies (not multiples of 8), L = 1, B = 3, a large row, and a row-strided
        // view (l_used < l) like the next-token narrow in sft and bench.
        let cases = [(3, 5, 13, 5), (1, 1, 7, 1), (3, 1, 99, 1), (2, 6, 1001, 5), (3, 4, 40_003, 4), (2, 9, 257, 8)];
        for (case, &(b, l, v, l_used)) in cases.iter().enumerate() {
            let (logits, targets) = random_case(&mut rng, b, l, v);
            let wa: Vec<f32> = (0..b * l).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let wc: Vec<f32> = (0..b * l).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let zero = vec![0.0f32; b * l];
            for temperature in [1.0, 0.7, 2.5] {
                // Both outputs in the loss, then each alone (their gradients must also combine).
                for weights in [(&wa[..], &wc[..]), (&wa[..], &zero[..]), (&zero[..], &wc[..])] {
                    let shape = (b, l, v);
                    let got = run(token_logprobs, &logits, &targets, shape, l_used, temperature, weights);
                    let want = run(token_logprobs_reference, &logits, &targets, shape, l_used, temperature, weights);
                    let what = format!("case {case} {shape:?} l_used {l_used} T {temperature}");
                    close(&got.0, &want.0, &format!("{what} logp"));
                    close(&got.1, &want.1, &format!("{what} entropy"));
                    close(&got.2, &want.2, &format!("{what} grad"));
                }
            }
        }
    }

    #[test]
    fn fused_is_stable_for_large_logits_and_rejects_bad_targets() {
        // Logits around 1e4: a naive exp overflows; the shifted form does not.
        let logits = Tensor::new(&[[[1.0e4f32, 1.0e4 + 1.0, 1.0e4 - 2.0]]], &Device::Cpu).unwrap();
        let (logp, ent) = token_logprobs(&logits, &Tensor::new(&[[1u32]], &Device::Cpu).unwrap(), 1.0).unwrap();
        let (want_logp, want_ent) = token_logprobs_reference(&(&logits - 1.0e4).unwrap(), &Tensor::new(&[[1u32]], &Device::Cpu).unwrap(), 1.0).unwrap();
        close(&logp.flatten_all().unwrap().to_vec1().unwrap(), &want_logp.flatten_all().unwrap().to_vec1().unwrap(), "logp");
        close(&ent.flatten_all().unwrap().to_vec1().unwrap(), &want_ent.flatten_all().unwrap().to_vec1().unwrap(), "entropy");
        assert!(token_logprobs(&logits, &Tensor::new(&[[3u32]], &Device::Cpu).unwrap(), 1.0).is_err());
    }

    #[test]
    fn other_dtypes_fall_back_to_the_reference() {
        let logits = Tensor::new(&[[[0.0f64, 2f64.ln(), 3f64.ln()]]], &Device::Cpu).unwrap();
        let (logp, _) = token_logprobs(&logits, &Tensor::new(&[[2u32]], &Device::Cpu).unwrap(), 1.0).unwrap();
        assert!((logp.to_vec2::<f64>().unwrap()[0][0] - 0.5f64.ln()).abs() < 1e-12);
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
