//! Sentence embeddings from hidden states: mean over the real tokens or the first token,
//! optionally L2-normalised (what sentence-transformers' Pooling and Normalize modules do).

use candle_core::{bail, DType, Result, Tensor, D};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the hidden states at the tokens of the attention mask.
    Mean,
    /// The hidden state of the first token (`[CLS]` / `<s>`), unchanged (not the pooler).
    Cls,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Pooling> {
        match s {
            "mean" => Some(Pooling::Mean),
            "cls" => Some(Pooling::Cls),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

/// Pools `hidden` (B, L, H) to (B, H). For `Mean`, `attention_mask` (B, L) weights the
/// positions (1 token, 0 padding; any numeric dtype), and the count is clamped at 1e-9 as
/// sentence-transformers does. Differentiable in `hidden`.
pub fn pool(hidden: &Tensor, attention_mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    let (b, l, _) = hidden.dims3()?;
    if attention_mask.dims() != [b, l] {
        bail!("attention_mask is {:?}, expected [{b}, {l}] like the hidden states", attention_mask.dims());
    }
    match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => {
            let mask = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&count)
        }
    }
}

/// Each row divided by its L2 norm (clamped at 1e-12, like `torch.nn.functional.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.to_dtype(DType::F32)?.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm.to_dtype(x.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn hidden() -> Tensor {
        // Row 0: three tokens; row 1: two tokens then padding with large values.
        let v: Vec<f32> = vec![1., 2., 3., 4., 5., 6., /* row 1 */ 2., 0., 4., 2., 100., -100.];
        Tensor::from_vec(v, (2, 3, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn mean_pooling_averages_only_real_tokens() {
        let mask = Tensor::new(&[[1u32, 1, 1], [1, 1, 0]], &Device::Cpu).unwrap();
        let got = pool(&hidden(), &mask, Pooling::Mean).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, vec![vec![3.0, 4.0], vec![3.0, 1.0]]);
    }

    #[test]
    fn cls_pooling_takes_the_first_token() {
        let mask = Tensor::new(&[[1f32, 1., 1.], [1., 1., 0.]], &Device::Cpu).unwrap();
        let got = pool(&hidden(), &mask, Pooling::Cls).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, vec![vec![1.0, 2.0], vec![2.0, 0.0]]);
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows_finite() {
        let x = Tensor::new(&[[3f32, 4.], [0., 0.]], &Device::Cpu).unwrap();
        let got = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }

    #[test]
    fn mask_shape_is_checked() {
        let mask = Tensor::new(&[[1u32, 1]], &Device::Cpu).unwrap();
        assert!(pool(&hidden(), &mask, Pooling::Mean).is_err());
    }
}
