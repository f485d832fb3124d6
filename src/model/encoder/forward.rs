//! `Encoder`: the forward pass over a padded batch, from token ids or from embeddings.

use super::config::{EncoderConfig, EncoderType};
use super::inputs;
use super::layers::{Embeddings, Layer, MlmHead, Pooler};
use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// Which optional heads a checkpoint carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Heads {
    /// `pooler.dense`: `tanh(dense(h[:, 0]))`.
    pub pooler: bool,
    /// The masked-LM head (`cls.predictions.*` for BERT, `lm_head.*` for RoBERTa).
    pub mlm: bool,
}

#[derive(Clone, Debug)]
pub struct Encoder {
    cfg: EncoderConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Pooler>,
    mlm: Option<MlmHead>,
}

impl Encoder {
    /// Builds from a `VarBuilder` over canonical names: the base model's without its
    /// `bert.` / `roberta.` prefix (`embeddings.word_embeddings.weight`, `encoder.layer.0...`,
    /// `pooler.dense.weight`), the MLM head's as in transformers (`cls.predictions...`,
    /// `lm_head...`). `EncoderModel::load` maps a checkpoint's names onto these.
    pub fn new(cfg: &EncoderConfig, heads: Heads, vb: VarBuilder) -> Result<Encoder> {
        let embeddings = Embeddings::load(cfg, &vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|n| Layer::load(cfg, &vb.pp("encoder").pp("layer").pp(n)))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if heads.pooler { Some(Pooler::load(cfg, &vb.pp("pooler"))?) } else { None };
        let mlm = if heads.mlm { Some(MlmHead::load(cfg, &vb, &embeddings.word)?) } else { None };
        Ok(Encoder { cfg: cfg.clone(), embeddings, layers, pooler, mlm })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn heads(&self) -> Heads {
        Heads { pooler: self.pooler.is_some(), mlm: self.mlm.is_some() }
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.word.dtype()
    }

    /// The word embeddings of (B, L) ids, (B, L, H): what [`Encoder::forward_embeds`] takes.
    pub fn embed_tokens(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = self.checked_ids(input_ids)?;
        self.embeddings.words(&ids)
    }

    /// Last hidden states (B, L, H) of a padded batch. `attention_mask` (B, L) is 1 at tokens
    /// and 0 at padding (any numeric dtype); attention is bidirectional and padded keys are
    /// masked, so padding never changes the real positions' outputs. `token_type_ids` (B, L)
    /// default to 0. Positions follow transformers: 0..L for BERT, and for RoBERTa counted
    /// over the ids that are not `pad_token_id`, from `pad_token_id + 1`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
        let x = self.embedding_output(input_ids, attention_mask, token_type_ids)?;
        let valid = inputs::mask_rows(attention_mask, x.dim(0)?, x.dim(1)?)?;
        self.run_layers(x, &valid)
    }

    /// The embedding layer's output (B, L, H): word + position + token-type embeddings, then
    /// LayerNorm (transformers' `model.embeddings(input_ids)`; no dropout here). Positions as
    /// in [`Encoder::forward`]. The diffusion denoiser noises this and feeds it to
    /// [`Encoder::layers_from`].
    pub fn embedding_output(&self, input_ids: &Tensor, attention_mask: &Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
        let ids = self.checked_ids(input_ids)?;
        let (b, l) = ids.dims2()?;
        let valid = inputs::mask_rows(attention_mask, b, l)?;
        let position_source = match self.cfg.model_type {
            EncoderType::Bert => valid.clone(),
            EncoderType::Roberta => inputs::non_pad(&ids.to_vec2::<u32>()?, self.cfg.pad_token_id),
        };
        let positions = inputs::position_tensor(&self.cfg, inputs::position_ids(&self.cfg, &position_source), ids.device())?;
        let types = match token_type_ids {
            Some(t) => Some(self.checked_types(t, b, l)?),
            None => None,
        };
        self.embeddings.forward(&self.embeddings.words(&ids)?, &positions, types.as_ref())
    }

    /// The transformer layers run on a given first hidden state `h0` (B, L, H), skipping the
    /// embedding layer: the hidden states after each layer, `[layer 1, …, layer N]`
    /// (transformers' `hidden_states[1..]`; `hidden_states[-2]` is the second-to-last entry
    /// here, or `h0` itself for a one-layer model).
    pub fn layers_from(&self, h0: &Tensor, attention_mask: &Tensor) -> Result<Vec<Tensor>> {
        let (b, l, h) = h0.dims3()?;
        if h != self.cfg.hidden_size {
            bail!("the hidden state is {:?}; the model's hidden size is {}", h0.dims(), self.cfg.hidden_size);
        }
        let valid = inputs::mask_rows(attention_mask, b, l)?;
        let bias = inputs::attention_bias(&valid, h0.device())?;
        let mut out = Vec::with_capacity(self.layers.len());
        let mut x = h0.clone();
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
            out.push(x.clone());
        }
        Ok(out)
    }

    /// As [`Encoder::forward`] from word-level embeddings (B, L, H) instead of ids, e.g. a
    /// noised copy of `embed_tokens(ids)`; position and token-type (0) embeddings and the
    /// embedding LayerNorm are added here, as transformers does for `inputs_embeds`. RoBERTa
    /// positions count the tokens of `attention_mask` (there are no ids to compare with the
    /// pad id); with padding exactly where the mask is 0 this equals `forward(ids, ...)`.
    pub fn forward_embeds(&self, inputs_embeds: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, l, h) = inputs_embeds.dims3()?;
        if h != self.cfg.hidden_size {
            bail!("inputs_embeds is {:?}; the model's hidden size is {}", inputs_embeds.dims(), self.cfg.hidden_size);
        }
        let valid = inputs::mask_rows(attention_mask, b, l)?;
        let positions = inputs::position_tensor(&self.cfg, inputs::position_ids(&self.cfg, &valid), inputs_embeds.device())?;
        let x = self.embeddings.forward(inputs_embeds, &positions, None)?;
        self.run_layers(x, &valid)
    }

    fn run_layers(&self, mut x: Tensor, valid: &[Vec<bool>]) -> Result<Tensor> {
        let bias = inputs::attention_bias(valid, x.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }

    /// The pooler's output (B, H): `tanh(dense(hidden[:, 0]))`, as transformers'
    /// `pooler_output`. An error when the checkpoint has no pooler.
    pub fn pooler_output(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.pooler {
            Some(p) => p.forward(hidden),
            None => bail!("this checkpoint has no pooler (no `pooler.dense` tensors); use mean or CLS pooling"),
        }
    }

    /// Masked-LM logits (B, L, V). An error when the checkpoint has no MLM head.
    pub fn mlm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.mlm {
            Some(m) => m.forward(hidden),
            None => bail!(
                "this checkpoint has no masked-LM head (no `{}` tensors; sentence-transformers folders \
                 keep only the base model)",
                match self.cfg.model_type {
                    EncoderType::Bert => "cls.predictions",
                    EncoderType::Roberta => "lm_head",
                }
            ),
        }
    }

    /// (B, L) ids as u32, each below the vocabulary size (an out-of-range id would otherwise
    /// surface as an opaque index error).
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = input_ids.to_dtype(DType::U32)?;
        ids.dims2()?;
        if let Some(&bad) = ids.flatten_all()?.to_vec1::<u32>()?.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary of {} (wrong tokenizer for this model?)", self.cfg.vocab_size);
        }
        Ok(ids)
    }

    fn checked_types(&self, types: &Tensor, b: usize, l: usize) -> Result<Tensor> {
        if types.dims() != [b, l] {
            bail!("token_type_ids is {:?}, expected [{b}, {l}] like input_ids", types.dims());
        }
        let types = types.to_dtype(DType::U32)?;
        if let Some(&bad) = types.flatten_all()?.to_vec1::<u32>()?.iter().find(|&&t| t as usize >= self.cfg.type_vocab_size) {
            bail!("token type {bad} is outside the model's {} token types", self.cfg.type_vocab_size);
        }
        Ok(types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::checkpoint::parameter_shapes;
    use crate::model::encoder::config::Activation;
    use crate::model::encoder::pooling::{pool, Pooling};
    use candle_core::Var;
    use candle_nn::VarMap;

    fn cfg(model_type: EncoderType) -> EncoderConfig {
        EncoderConfig {
            model_type,
            vocab_size: 20,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 24,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            tie_word_embeddings: true,
            architecture: None,
        }
    }

    const ALL: Heads = Heads { pooler: true, mlm: true };

    /// Random trainable parameters: every tensor N(0, 0.5²) (LayerNorm weights too, so a
    /// missing norm would show).
    fn random(model_type: EncoderType) -> (Encoder, VarMap) {
        let c = cfg(model_type);
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (name, shape) in parameter_shapes(&c, ALL) {
                let mut rng = crate::rng::Rng::derive(7, &name);
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.5) as f32).collect();
                data.insert(name, Var::from_vec(values, shape, &Device::Cpu).unwrap());
            }
        }
        let enc = Encoder::new(&c, ALL, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        (enc, varmap)
    }

    fn t(rows: &[&[u32]]) -> Tensor {
        let len = rows[0].len();
        Tensor::from_vec(rows.concat(), (rows.len(), len), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn padded_tokens_do_not_influence_real_positions() {
        for model_type in EncoderType::ALL {
            let (enc, _) = random(model_type);
            // Row 1 has two trailing pads; swapping their ids (even to non-pad ids, for the
            // mask is what counts for attention) must leave its real positions unchanged.
            let mask = t(&[&[1, 1, 1, 1, 1], &[1, 1, 1, 0, 0]]);
            let a = enc.forward(&t(&[&[0, 5, 6, 7, 2], &[0, 9, 2, 1, 1]]), &mask, None).unwrap();
            let b = enc.forward(&t(&[&[0, 5, 6, 7, 2], &[0, 9, 2, 13, 17]]), &mask, None).unwrap();
            let real = |h: &Tensor| h.narrow(1, 0, 3).unwrap();
            // RoBERTa positions follow the ids, so the changed pads change their own positions;
            // still, no real position may move.
            assert_eq!(max_diff(&real(&a), &real(&b)), 0.0, "{model_type:?}");
            assert_eq!(max_diff(&a.get(0).unwrap(), &b.get(0).unwrap()), 0.0, "{model_type:?}: other row");
            // And a padded row equals the same tokens alone.
            let alone = enc.forward(&t(&[&[0, 9, 2]]), &t(&[&[1, 1, 1]]), None).unwrap();
            let d = max_diff(&real(&a).get(1).unwrap(), &alone.get(0).unwrap());
            assert!(d < 1e-5, "{model_type:?}: padded row differs from unpadded by {d}");
            let pooled = pool(&a, &mask, Pooling::Mean).unwrap().get(1).unwrap();
            let pooled_alone = pool(&alone, &t(&[&[1, 1, 1]]), Pooling::Mean).unwrap().get(0).unwrap();
            assert!(max_diff(&pooled, &pooled_alone) < 1e-5, "{model_type:?}: mean pooling sees padding");
        }
    }

    #[test]
    fn roberta_left_padding_matches_unpadded() {
        let (enc, _) = random(EncoderType::Roberta);
        let padded = enc.forward(&t(&[&[1, 1, 0, 9, 2]]), &t(&[&[0, 0, 1, 1, 1]]), None).unwrap();
        let alone = enc.forward(&t(&[&[0, 9, 2]]), &t(&[&[1, 1, 1]]), None).unwrap();
        assert!(max_diff(&padded.narrow(1, 2, 3).unwrap(), &alone) < 1e-5);
    }

    #[test]
    fn forward_embeds_of_the_word_embeddings_equals_forward() {
        for model_type in EncoderType::ALL {
            let (enc, _) = random(model_type);
            let ids = t(&[&[0, 5, 6, 7, 2], &[0, 9, 2, 1, 1]]);
            let mask = t(&[&[1, 1, 1, 1, 1], &[1, 1, 1, 0, 0]]);
            let a = enc.forward(&ids, &mask, None).unwrap();
            let b = enc.forward_embeds(&enc.embed_tokens(&ids).unwrap(), &mask).unwrap();
            assert!(max_diff(&a.narrow(1, 0, 3).unwrap(), &b.narrow(1, 0, 3).unwrap()) < 1e-6, "{model_type:?}");
            assert!(max_diff(&a.get(0).unwrap(), &b.get(0).unwrap()) < 1e-6, "{model_type:?}");
        }
    }

    #[test]
    fn token_types_change_the_output_and_are_checked() {
        let (enc, _) = random(EncoderType::Bert);
        let ids = t(&[&[0, 5, 6]]);
        let mask = t(&[&[1, 1, 1]]);
        let zero = enc.forward(&ids, &mask, None).unwrap();
        let explicit = enc.forward(&ids, &mask, Some(&t(&[&[0, 0, 0]]))).unwrap();
        assert_eq!(max_diff(&zero, &explicit), 0.0);
        let ones = enc.forward(&ids, &mask, Some(&t(&[&[0, 1, 1]]))).unwrap();
        assert!(max_diff(&zero, &ones) > 1e-3);
        assert!(enc.forward(&ids, &mask, Some(&t(&[&[0, 2, 1]]))).is_err());
        let err = enc.forward(&t(&[&[0, 20, 1]]), &mask, None).unwrap_err().to_string();
        assert!(err.contains("token id 20") && err.contains("vocabulary of 20"), "{err}");
    }

    #[test]
    fn gradients_reach_every_parameter() {
        for model_type in EncoderType::ALL {
            let (enc, varmap) = random(model_type);
            let ids = t(&[&[0, 5, 6, 7, 2], &[0, 9, 2, 1, 1]]);
            let mask = t(&[&[1, 1, 1, 1, 1], &[1, 1, 1, 0, 0]]);
            let hidden = enc.forward(&ids, &mask, Some(&t(&[&[0, 0, 1, 1, 1], &[0, 1, 1, 0, 0]]))).unwrap();
            let loss = (enc.mlm_logits(&hidden).unwrap().sqr().unwrap().mean_all().unwrap()
                + enc.pooler_output(&hidden).unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let data = varmap.data().lock().unwrap();
            for (name, var) in data.iter() {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{model_type:?}: no gradient for {name}"));
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                // The position/type rows used get gradients; a whole table of zeros would mean
                // the path is cut.
                assert!(norm > 0.0, "{model_type:?}: zero gradient for {name}");
            }
        }
    }

    #[test]
    fn missing_heads_say_what_is_missing() {
        let c = cfg(EncoderType::Roberta);
        let map: std::collections::HashMap<String, Tensor> = parameter_shapes(&c, Heads::default())
            .into_iter()
            .map(|(n, s)| (n, Tensor::ones(s, DType::F32, &Device::Cpu).unwrap()))
            .collect();
        let enc = Encoder::new(&c, Heads::default(), VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)).unwrap();
        let h = Tensor::zeros((1, 2, 16), DType::F32, &Device::Cpu).unwrap();
        assert!(enc.mlm_logits(&h).unwrap_err().to_string().contains("lm_head"));
        assert!(enc.pooler_output(&h).unwrap_err().to_string().contains("no pooler"));
    }
}
