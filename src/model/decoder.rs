//! The decoder-only transformer shared by qwen2, qwen3, llama and mistral: token embedding,
//! N blocks of (RMSNorm → GQA attention with RoPE → residual, RMSNorm → SwiGLU → residual),
//! final RMSNorm, tied or untied LM head.
//!
//! Two execution modes exist because candle's fast RMSNorm, softmax and RoPE kernels have no
//! backward pass: a model trained through them silently updates only its embedding
//! (docs/ENGINE.md §2.1). `Mode::Train` uses only ops with a backward: retort's own fused CPU
//! kernels (`model::fused`: dense projections, RMSNorm, RoPE, masked softmax, SwiGLU) for f32
//! on the CPU, their candle-primitive references elsewhere. `Mode::Infer` may use candle's
//! kernels without backward. Both compute the same function.

use super::config::ModelConfig;
use super::fused;
pub use super::mask::{AttnMask, MASK_VALUE};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// Which kernels the forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable primitives everywhere, so `backward()` reaches every parameter.
    Train,
    /// Fused kernels without backward; for sampling and scoring without gradients.
    Infer,
}

/// Output of a forward pass over every position of the batch.
pub struct ForwardOut {
    /// (B, L, V) f32, whatever the weight dtype.
    pub logits: Tensor,
    /// (B, L, H) final hidden states after the final norm, in the weight dtype.
    pub hidden: Tensor,
}

/// Keys and values of past tokens, one entry per layer, owned by the caller so that one set of
/// weights can serve many sequences (docs/ENGINE.md §2.6). Stored after RoPE, before the GQA
/// grouping, as (B, kv heads, positions, D).
///
/// New positions are written in place into buffers that grow by doubling, so a decoding step
/// copies only its own keys rather than the whole cache (as a `cat` would). Keys that carry an
/// autograd graph (a `Mode::Train` forward on trainable weights) are concatenated instead, so
/// gradients still reach them. Not `Clone`: two caches must never share a buffer.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    /// The most positions this cache will hold (the prompt plus every token to come; 0:
    /// unknown): growth by doubling stops there instead of overshooting up to twice the need.
    limit: usize,
}

#[derive(Debug)]
struct LayerCache {
    /// (B, n_kv, capacity, D) buffers; positions `0..len` hold data.
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerCache {
    fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }

    /// The cached keys and values, (B, n_kv, len, D) views into the buffers.
    fn view(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.k.narrow(2, 0, self.len)?, self.v.narrow(2, 0, self.len)?))
    }
}

/// Appends `k`, `v` (B, n_kv, n, D) to one layer's cache and returns all its keys and values;
/// growth doubles the capacity but never past `limit` positions (when that is known, > 0).
fn cache_append(slot: &mut Option<LayerCache>, limit: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
    let tracked = k.track_op() || v.track_op();
    let Some(layer) = slot.as_mut() else {
        let len = k.dim(2)?;
        *slot = Some(LayerCache { k: k.clone(), v: v.clone(), len });
        return Ok((k, v));
    };
    if tracked || layer.k.track_op() {
        let (past_k, past_v) = layer.view()?;
        let (k, v) = (Tensor::cat(&[&past_k, &k], 2)?, Tensor::cat(&[&past_v, &v], 2)?);
        *layer = LayerCache { k: k.clone(), v: v.clone(), len: k.dim(2)? };
        return Ok((k, v));
    }
    let n = k.dim(2)?;
    if layer.len + n > layer.capacity() {
        // Grow to twice the need (at least 64 positions, at most the limit), copying what is
        // there once.
        let (b, kv_heads, _, d) = k.dims4()?;
        let need = layer.len + n;
        let capacity = match (2 * need).max(64) {
            c if limit >= need => c.min(limit),
            c => c,
        };
        let (old_k, old_v) = layer.view()?;
        let grown = |old: &Tensor| -> Result<Tensor> {
            let buf = Tensor::zeros((b, kv_heads, capacity, d), old.dtype(), old.device())?;
            buf.slice_set(&old.contiguous()?, 2, 0)?;
            Ok(buf)
        };
        layer.k = grown(&old_k)?;
        layer.v = grown(&old_v)?;
    }
    layer.k.slice_set(&k.contiguous()?, 2, layer.len)?;
    layer.v.slice_set(&v.contiguous()?, 2, layer.len)?;
    layer.len += n;
    layer.view()
}

impl KvCache {
    pub fn new(num_layers: usize) -> KvCache {
        KvCache { layers: (0..num_layers).map(|_| None).collect(), limit: 0 }
    }

    /// A cache that never grows past `positions` (prompt + new tokens) when it doubles.
    pub fn with_limit(num_layers: usize, positions: usize) -> KvCache {
        KvCache { limit: positions, ..KvCache::new(num_layers) }
    }

    /// Number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        match self.layers.first() {
            Some(Some(layer)) => layer.len,
            _ => 0,
        }
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Keeps row `rows[i]` of the cache as row `i` (rows may repeat): after a prefill of the
    /// distinct prompts of a batch, this gives every sequence its prompt's keys and values.
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        let Some(device) = self.layers.iter().flatten().next().map(|l| l.k.device().clone()) else {
            return Ok(());
        };
        let index = Tensor::new(rows, &device)?;
        for layer in self.layers.iter_mut().flatten() {
            layer.k = layer.k.contiguous()?.index_select(&index, 0)?;
            layer.v = layer.v.contiguous()?.index_select(&index, 0)?;
        }
        Ok(())
    }
}

impl KvCache {
    /// Layer `n`'s cached keys and values, (B, n_kv, len, D), if anything is cached: what the
    /// batch decoder ([`super::decode_batch`]) copies out of a prefill.
    pub(crate) fn layer_view(&self, n: usize) -> Result<Option<(Tensor, Tensor)>> {
        self.layers.get(n).and_then(Option::as_ref).map(LayerCache::view).transpose()
    }
}

/// The distinct sequences of `rows` in order of first appearance, and for each row the index
/// of its sequence among them: GRPO groups and pass@k samples repeat each prompt n times, and
/// a prompt needs its forward pass only once.
pub fn distinct_rows(rows: &[Vec<u32>]) -> (Vec<usize>, Vec<u32>) {
    let mut first: std::collections::HashMap<&[u32], u32> = std::collections::HashMap::new();
    let mut distinct = Vec::new();
    let of_row = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            *first.entry(r.as_slice()).or_insert_with(|| {
                distinct.push(i);
                (distinct.len() - 1) as u32
            })
        })
        .collect();
    (distinct, of_row)
}

/// Rotary positions given explicitly rather than counted from the mask.
#[derive(Clone, Debug)]
pub enum RopePositions {
    /// Qwen2-VL's M-RoPE: `ids` (3, B, L) u32 temporal / height / width positions of the
    /// query tokens, `sections` the number of frequencies each band takes (`mrope_section`).
    Multi { ids: Tensor, sections: Vec<usize> },
}

/// A dense projection `x @ W^T (+ b)` with the weight stored as (out, in) like PyTorch.
#[derive(Clone, Debug)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// A low-rank update `scale · B·A` added to the frozen weight (LoRA), when attached.
    lora: Option<LoraDelta>,
}

/// LoRA factors of one projection: `a` is (r, in), `b` is (out, r), `scale = alpha / r`.
#[derive(Clone, Debug)]
struct LoraDelta {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: Option<LoraDropout>,
}

/// Dropout on the adapter's input, `B·A·dropout(x)` as PEFT does. The mask is drawn from
/// `(seed, module path)`, where the trainer sets the seed for each forward pass, so a resumed
/// run redraws the same masks; with no seed set (evaluation, sampling) nothing is dropped.
#[derive(Clone, Debug)]
pub(crate) struct LoraDropout {
    p: f64,
    path: String,
    seed: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
}

impl LoraDropout {
    #[cfg(test)]
    pub(crate) fn for_test(p: f64, seed: u64) -> LoraDropout {
        LoraDropout { p, path: "test".into(), seed: std::sync::Arc::new(std::sync::Mutex::new(Some(seed))) }
    }

    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        // A poisoned lock only means another thread panicked mid-set; the value is a u64.
        let seed = *self.seed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(seed) = seed else { return Ok(x.clone()) };
        let mut rng = crate::rng::Rng::derive(seed, &self.path);
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = (0..x.elem_count()).map(|_| if rng.f64() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

impl Linear {
    fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize, with_bias: bool) -> Result<Linear> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if with_bias { Some(vb.get(out_dim, "bias")?) } else { None };
        Ok(Linear { weight, bias, lora: None })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = fused::linear::linear(x, &self.weight, self.bias.as_ref())?;
        match &self.lora {
            Some(l) => {
                let x = match &l.dropout {
                    Some(d) => d.apply(x)?,
                    None => x.clone(),
                };
                let delta = fused::linear::linear(&fused::linear::linear(&x, &l.a, None)?, &l.b, None)?;
                y + (delta * l.scale)?
            }
            None => Ok(y),
        }
    }

    fn named(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.weight"), self.weight.clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{prefix}.bias"), b.clone()));
        }
    }

    fn detached(&self) -> Linear {
        Linear {
            weight: self.weight.detach(),
            bias: self.bias.as_ref().map(Tensor::detach),
            // A detached copy samples and scores: no dropout there.
            lora: self.lora.as_ref().map(|l| LoraDelta { a: l.a.detach(), b: l.b.detach(), scale: l.scale, dropout: None }),
        }
    }

    /// The same projection with the LoRA update folded into the weight: `W + scale·B·A`.
    fn merged(&self) -> Result<Linear> {
        let weight = match &self.lora {
            Some(l) => (self.weight.detach() + (l.b.detach().matmul(&l.a.detach())? * l.scale)?.to_dtype(self.weight.dtype())?)?,
            None => self.weight.detach(),
        };
        Ok(Linear { weight, bias: self.bias.as_ref().map(Tensor::detach), lora: None })
    }
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Train => fused::rms_norm::rms_norm_train(x, weight, eps as f32),
        Mode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32),
    }
}

/// Attention probabilities `softmax(scale · scores + mask)` in f32 (as transformers' eager
/// attention computes them, so bf16 weights stay accurate), returned in the scores' dtype.
fn attention_probs(scores: &Tensor, mask: &Tensor, scale: f64, mode: Mode) -> Result<Tensor> {
    let dtype = scores.dtype();
    if mode == Mode::Train || fused::fusable(&[scores]) {
        // Fused on the CPU in f32; the differentiable reference elsewhere.
        return fused::softmax::masked_softmax(&scores.to_dtype(DType::F32)?, mask, scale)?.to_dtype(dtype);
    }
    let scores = (scores * scale)?.to_dtype(DType::F32)?.broadcast_add(mask)?;
    candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)
}

/// Rotates the (first half, second half) pairs of each head (the transformers convention) and
/// moves heads before tokens: (B, L, n, D) → (B, n, L, D). `cos`/`sin` are (B, L, D/2).
fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Infer && !fused::fusable(&[x, cos, sin]) {
        // candle's fast kernel has no backward but is the quickest for sampling on a GPU.
        return candle_nn::rotary_emb::rope(&x.transpose(1, 2)?.contiguous()?, cos, sin);
    }
    fused::rope::rope_heads(x, cos, sin)
}

/// Inverse RoPE frequencies `theta^(-2i/d)`, with the Llama-3 rescaling when configured:
/// low frequencies (wavelength above `orig/low_freq_factor`) are divided by `factor`, high ones
/// kept, and the band between interpolated smoothly (transformers `_compute_llama3_parameters`).
pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    (0..d / 2)
        .map(|i| {
            // Computed in f32 like transformers, so positions × freq round the same way.
            let exponent = (2 * i) as f32 / d as f32;
            let base = 1.0f32 / (cfg.rope_theta as f32).powf(exponent);
            match &cfg.rope_scaling {
                None => base,
                Some(s) => {
                    let old = s.original_max_position_embeddings as f32;
                    let low_wavelen = old / s.low_freq_factor as f32;
                    let high_wavelen = old / s.high_freq_factor as f32;
                    let factor = s.factor as f32;
                    let wavelen = 2.0 * std::f32::consts::PI / base;
                    if wavelen < high_wavelen {
                        base
                    } else if wavelen > low_wavelen {
                        base / factor
                    } else {
                        let smooth = (old / wavelen - s.low_freq_factor as f32)
                            / (s.high_freq_factor as f32 - s.low_freq_factor as f32);
                        (1.0 - smooth) * base / factor + smooth * base
                    }
                }
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

impl Attention {
    fn load(cfg: &ModelConfig, vb: &VarBuilder) -> Result<Attention> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q_out = cfg.num_attention_heads * d;
        let kv_out = cfg.num_key_value_heads * d;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (Some(vb.pp("q_norm").get(d, "weight")?), Some(vb.pp("k_norm").get(d, "weight")?))
        } else {
            (None, None)
        };
        Ok(Attention {
            q: Linear::load(&vb.pp("q_proj"), q_out, h, cfg.qkv_bias)?,
            k: Linear::load(&vb.pp("k_proj"), kv_out, h, cfg.qkv_bias)?,
            v: Linear::load(&vb.pp("v_proj"), kv_out, h, cfg.qkv_bias)?,
            o: Linear::load(&vb.pp("o_proj"), h, q_out, cfg.o_bias)?,
            q_norm,
            k_norm,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            eps: cfg.rms_norm_eps,
        })
    }

    /// (B, L, n*D) → (B, n, L, D), optionally RMS-normalised per head (qwen3), then rotated.
    fn heads(&self, x: &Tensor, n: usize, norm: Option<&Tensor>, rope: Option<(&Tensor, &Tensor)>, mode: Mode) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let x = x.reshape((b, l, n, self.head_dim))?;
        let x = match norm {
            Some(w) => rms_norm(&x, w, self.eps, mode)?,
            None => x,
        };
        match rope {
            Some((cos, sin)) => rope_heads(&x, cos, sin, mode),
            None => x.transpose(1, 2)?.contiguous(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&mut Option<LayerCache>, usize)>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let (n, n_kv, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self.heads(&self.q.forward(x)?, n, self.q_norm.as_ref(), Some((cos, sin)), mode)?;
        let k = self.heads(&self.k.forward(x)?, n_kv, self.k_norm.as_ref(), Some((cos, sin)), mode)?;
        let v = self.heads(&self.v.forward(x)?, n_kv, None, None, mode)?;
        let (k, v) = match cache {
            Some((slot, limit)) => cache_append(slot, limit, k, v)?,
            None => (k, v),
        };
        let s = k.dim(2)?;
        // Grouped-query attention without repeating k and v: query heads j·rep … (j+1)·rep − 1
        // share kv head j (transformers' `repeat_kv`), so they are the rows of one matrix per
        // kv head. The reshapes are free (q and the scores are contiguous).
        let rep = n / n_kv;
        let grouped_q = q.reshape((b, n_kv, rep * l, d))?;
        let scores = grouped_q.matmul(&k.t()?)?.reshape((b, n, l, s))?;
        let scale = 1.0 / (d as f64).sqrt();
        let probs = attention_probs(&scores, mask, scale, mode)?.reshape((b, n_kv, rep * l, s))?;
        let out = probs.matmul(&v)?.reshape((b, n, l, d))?.transpose(1, 2)?.reshape((b, l, n * d))?;
        self.o.forward(&out)
    }

    fn named(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.q.named(&format!("{prefix}.q_proj"), out);
        self.k.named(&format!("{prefix}.k_proj"), out);
        self.v.named(&format!("{prefix}.v_proj"), out);
        self.o.named(&format!("{prefix}.o_proj"), out);
        if let Some(w) = &self.q_norm {
            out.push((format!("{prefix}.q_norm.weight"), w.clone()));
        }
        if let Some(w) = &self.k_norm {
            out.push((format!("{prefix}.k_norm.weight"), w.clone()));
        }
    }

    fn detached(&self) -> Attention {
        Attention {
            q: self.q.detached(),
            k: self.k.detached(),
            v: self.v.detached(),
            o: self.o.detached(),
            q_norm: self.q_norm.as_ref().map(Tensor::detach),
            k_norm: self.k_norm.as_ref().map(Tensor::detach),
            ..*self
        }
    }
}

#[derive(Clone, Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(cfg: &ModelConfig, vb: &VarBuilder) -> Result<Mlp> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate: Linear::load(&vb.pp("gate_proj"), i, h, false)?,
            up: Linear::load(&vb.pp("up_proj"), i, h, false)?,
            down: Linear::load(&vb.pp("down_proj"), h, i, false)?,
        })
    }

    /// SwiGLU: down(silu(gate(x)) * up(x)).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = fused::swiglu::swiglu(&self.gate.forward(x)?, &self.up.forward(x)?)?;
        self.down.forward(&gated)
    }
}

#[derive(Clone, Debug)]
struct Block {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    mlp: Mlp,
    eps: f64,
}

impl Block {
    fn load(cfg: &ModelConfig, vb: &VarBuilder) -> Result<Block> {
        Ok(Block {
            input_norm: vb.pp("input_layernorm").get(cfg.hidden_size, "weight")?,
            attn: Attention::load(cfg, &vb.pp("self_attn"))?,
            post_norm: vb.pp("post_attention_layernorm").get(cfg.hidden_size, "weight")?,
            mlp: Mlp::load(cfg, &vb.pp("mlp"))?,
            eps: cfg.rms_norm_eps,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&mut Option<LayerCache>, usize)>,
        mode: Mode,
    ) -> Result<Tensor> {
        let attn = self.attn.forward(&rms_norm(x, &self.input_norm, self.eps, mode)?, cos, sin, mask, cache, mode)?;
        let x = (x + attn)?;
        let mlp = self.mlp.forward(&rms_norm(&x, &self.post_norm, self.eps, mode)?)?;
        x + mlp
    }

    fn named(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.input_layernorm.weight"), self.input_norm.clone()));
        self.attn.named(&format!("{prefix}.self_attn"), out);
        out.push((format!("{prefix}.post_attention_layernorm.weight"), self.post_norm.clone()));
        self.mlp.gate.named(&format!("{prefix}.mlp.gate_proj"), out);
        self.mlp.up.named(&format!("{prefix}.mlp.up_proj"), out);
        self.mlp.down.named(&format!("{prefix}.mlp.down_proj"), out);
    }

    /// The projections LoRA can target, by their Hugging Face module name.
    fn projections_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("q_proj", &mut self.attn.q),
            ("k_proj", &mut self.attn.k),
            ("v_proj", &mut self.attn.v),
            ("o_proj", &mut self.attn.o),
            ("gate_proj", &mut self.mlp.gate),
            ("up_proj", &mut self.mlp.up),
            ("down_proj", &mut self.mlp.down),
        ]
    }

    fn merged(&self) -> Result<Block> {
        let mut b = self.detached();
        for (_, lin) in b.projections_mut() {
            *lin = lin.merged()?;
        }
        Ok(b)
    }

    fn detached(&self) -> Block {
        Block {
            input_norm: self.input_norm.detach(),
            attn: self.attn.detached(),
            post_norm: self.post_norm.detach(),
            mlp: Mlp { gate: self.mlp.gate.detached(), up: self.mlp.up.detached(), down: self.mlp.down.detached() },
            eps: self.eps,
        }
    }
}

/// The causal LM. Cloning is cheap (tensors are shared).
#[derive(Clone, Debug)]
pub struct Decoder {
    cfg: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    /// `None` when the head is tied to the embedding.
    lm_head: Option<Tensor>,
    /// (1, 1, D/2) f32 inverse frequencies.
    inv_freq: Tensor,
    /// Shared by the LoRA dropouts of this decoder (see [`LoraDropout`]).
    lora_dropout_seed: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
}

impl Decoder {
    /// Builds the decoder from a `VarBuilder` rooted at the checkpoint's top level (names like
    /// `model.layers.0.self_attn.q_proj.weight`). With `VarBuilder::from_varmap` the parameters
    /// are trainable `Var`s; with `from_tensors` they are frozen. Tying follows the config,
    /// never the presence of `lm_head.weight` (docs/ENGINE.md §2.3).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Decoder> {
        let m = vb.pp("model");
        let embed = m.pp("embed_tokens").get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|n| Block::load(cfg, &m.pp("layers").pp(n)))
            .collect::<Result<Vec<_>>>()?;
        let norm = m.pp("norm").get(cfg.hidden_size, "weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(vb.pp("lm_head").get((cfg.vocab_size, cfg.hidden_size), "weight")?)
        };
        let inv_freq = rope_inv_freq(cfg);
        let half = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, 1, half), vb.device())?;
        Ok(Decoder { cfg: cfg.clone(), embed, blocks, norm, lm_head, inv_freq, lora_dropout_seed: Default::default() })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
    pub fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// The parameters under their Hugging Face names (the tied head is not repeated).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (n, block) in self.blocks.iter().enumerate() {
            block.named(&format!("model.layers.{n}"), &mut out);
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), head.clone()));
        }
        out
    }

    /// A copy whose weights share storage with this one but carry no autograd link, so a
    /// rollout on trainable weights keeps no graph alive (docs/ENGINE.md §2.7). Optimizer
    /// updates (`Var::set`) stay visible because the storage is shared.
    pub fn detached(&self) -> Decoder {
        Decoder {
            cfg: self.cfg.clone(),
            embed: self.embed.detach(),
            blocks: self.blocks.iter().map(Block::detached).collect(),
            norm: self.norm.detach(),
            lm_head: self.lm_head.as_ref().map(Tensor::detach),
            inv_freq: self.inv_freq.clone(),
            lora_dropout_seed: Default::default(),
        }
    }

    /// Attach LoRA factors to every projection named in `targets` (HF module names such as
    /// `q_proj`). `make(module_path, out, in)` returns the (A, B) pair for one projection;
    /// the factors' gradients train, the base weights stay as they are.
    pub fn attach_lora(
        &mut self,
        targets: &[String],
        scale: f64,
        dropout: f64,
        make: &mut dyn FnMut(&str, usize, usize) -> Result<(Tensor, Tensor)>,
    ) -> Result<usize> {
        let mut attached = 0;
        for (n, block) in self.blocks.iter_mut().enumerate() {
            for (name, lin) in block.projections_mut() {
                if targets.iter().any(|t| t == name) {
                    let (out_dim, in_dim) = lin.weight.dims2()?;
                    let prefix = if ["q_proj", "k_proj", "v_proj", "o_proj"].contains(&name) { "self_attn" } else { "mlp" };
                    let path = format!("model.layers.{n}.{prefix}.{name}");
                    let (a, b) = make(&path, out_dim, in_dim)?;
                    let dropout = (dropout > 0.0).then(|| LoraDropout { p: dropout, path: path.clone(), seed: self.lora_dropout_seed.clone() });
                    lin.lora = Some(LoraDelta { a, b, scale, dropout });
                    attached += 1;
                }
            }
        }
        Ok(attached)
    }

    /// The seed of the LoRA dropout masks for the next forward passes (`None`: no dropout).
    /// Training sets a fresh seed for each micro-batch and clears it afterwards.
    pub fn set_lora_dropout_seed(&self, seed: Option<u64>) {
        *self.lora_dropout_seed.lock().unwrap_or_else(|e| e.into_inner()) = seed;
    }

    /// A copy with every LoRA update folded into its base weight (what a merged save writes).
    pub fn merged(&self) -> Result<Decoder> {
        let mut d = self.detached();
        d.blocks = self.blocks.iter().map(Block::merged).collect::<Result<_>>()?;
        Ok(d)
    }

    /// The weights as plain tensors for the CPU batch decoder ([`super::decode_batch`]), or
    /// `None` when a LoRA adapter is attached (it decodes through the unfused path).
    pub(crate) fn decode_weights(&self) -> Option<super::decode_batch::Weights> {
        use super::decode_batch::{BlockWeights, Weights};
        let lin = |l: &Linear| l.lora.is_none().then(|| (l.weight.detach(), l.bias.as_ref().map(Tensor::detach)));
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Some(BlockWeights {
                    input_norm: b.input_norm.detach(),
                    post_norm: b.post_norm.detach(),
                    q: lin(&b.attn.q)?,
                    k: lin(&b.attn.k)?,
                    v: lin(&b.attn.v)?,
                    o: lin(&b.attn.o)?,
                    q_norm: b.attn.q_norm.as_ref().map(Tensor::detach),
                    k_norm: b.attn.k_norm.as_ref().map(Tensor::detach),
                    gate: lin(&b.mlp.gate)?.0,
                    up: lin(&b.mlp.up)?.0,
                    down: lin(&b.mlp.down)?.0,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Weights {
            embed: self.embed.detach(),
            blocks,
            norm: self.norm.detach(),
            head: self.head_weight().detach(),
            inv_freq: rope_inv_freq(&self.cfg),
            eps: self.cfg.rms_norm_eps as f32,
            n_heads: self.cfg.num_attention_heads,
            n_kv_heads: self.cfg.num_key_value_heads,
            head_dim: self.cfg.head_dim,
        })
    }

    /// cos/sin tables (B, L, D/2) for explicit per-row positions, in the weight dtype.
    fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let freqs = positions.to_dtype(DType::F32)?.unsqueeze(2)?.broadcast_mul(&self.inv_freq)?;
        let dtype = self.dtype();
        Ok((freqs.cos()?.to_dtype(dtype)?.contiguous()?, freqs.sin()?.to_dtype(dtype)?.contiguous()?))
    }

    /// cos/sin tables (B, L, D/2) for multimodal positions: frequency band `j` of
    /// `sections` (in order, summing to D/2) rotates by axis `j % 3` of the (3, B, L)
    /// positions, as transformers' `Qwen2VLRotaryEmbedding` recomposes them.
    fn mrope_tables(&self, positions: &RopePositions, b: usize, l: usize) -> Result<(Tensor, Tensor)> {
        let RopePositions::Multi { ids, sections } = positions;
        if ids.dims() != [3, b, l] {
            candle_core::bail!("multimodal positions are {:?}, expected [3, {b}, {l}]", ids.dims());
        }
        let half = self.inv_freq.dim(2)?;
        if sections.iter().sum::<usize>() != half {
            candle_core::bail!("mrope_section {sections:?} must sum to head_dim / 2 = {half}");
        }
        let freqs: Vec<Tensor> = (0..3)
            .map(|axis| ids.get(axis)?.to_dtype(DType::F32)?.unsqueeze(2)?.broadcast_mul(&self.inv_freq))
            .collect::<Result<_>>()?;
        let mut parts = Vec::with_capacity(sections.len());
        let mut start = 0;
        for (j, &width) in sections.iter().enumerate() {
            parts.push(freqs[j % 3].narrow(2, start, width)?);
            start += width;
        }
        let freqs = Tensor::cat(&parts, 2)?;
        let dtype = self.dtype();
        Ok((freqs.cos()?.to_dtype(dtype)?.contiguous()?, freqs.sin()?.to_dtype(dtype)?.contiguous()?))
    }

    /// Final hidden states (B, L, H) after the final norm. `cache`, when given, supplies the
    /// past keys/values and receives the new ones; the mask must then cover past + new keys.
    pub fn forward_hidden(&self, input_ids: &Tensor, mask: &AttnMask, cache: Option<&mut KvCache>, mode: Mode) -> Result<Tensor> {
        self.forward_embeds(&self.embed_tokens(input_ids)?, mask, cache, mode)
    }

    /// The token embeddings (B, L, H) of `input_ids` (B, L): what [`Decoder::forward_hidden`]
    /// feeds the blocks.
    pub fn embed_tokens(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        self.embed.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, l, self.cfg.hidden_size))
    }

    /// Final hidden states from embeddings (B, L, H) instead of ids (transformers'
    /// `inputs_embeds`): the way in for image features from a vision projector or a noised
    /// embedding sequence. The mask may be causal ([`AttnMask::new`]) or bidirectional
    /// ([`AttnMask::bidirectional`]); positions come from the mask as for ids.
    pub fn forward_embeds(&self, embeds: &Tensor, mask: &AttnMask, cache: Option<&mut KvCache>, mode: Mode) -> Result<Tensor> {
        self.forward_embeds_at(embeds, mask, None, cache, mode)
    }

    /// [`Decoder::forward_embeds`] with explicit rotary positions instead of the mask's:
    /// `Some(&RopePositions::Multi { .. })` gives Qwen2-VL's multimodal RoPE, where an image's
    /// tokens carry (temporal, height, width) positions and each band of frequencies rotates by
    /// one of the three (`mrope_section`). `None` is the text path, unchanged.
    pub fn forward_embeds_at(
        &self,
        embeds: &Tensor,
        mask: &AttnMask,
        positions: Option<&RopePositions>,
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, l, h) = embeds.dims3()?;
        if h != self.cfg.hidden_size {
            candle_core::bail!("inputs_embeds have width {h}, the model's hidden size is {}", self.cfg.hidden_size);
        }
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        if mask.batch() != b || mask.query_len() != l || mask.key_len() != past + l {
            candle_core::bail!(
                "attention mask is (batch {}, queries {}, keys {}) but the input is (batch {b}, tokens {l}) with {past} cached",
                mask.batch(),
                mask.query_len(),
                mask.key_len()
            );
        }
        if let Some(window) = self.cfg.sliding_window {
            if mask.key_len() > window {
                candle_core::bail!("sequence of {} tokens exceeds the sliding window {window}, which is not implemented", mask.key_len());
            }
        }
        if let Some(c) = cache.as_ref() {
            if c.layers.len() != self.blocks.len() {
                candle_core::bail!("KvCache has {} layers, the model {}", c.layers.len(), self.blocks.len());
            }
        }
        let (cos, sin) = match positions {
            None => self.rope_tables(mask.positions())?,
            Some(p) => self.mrope_tables(p, b, l)?,
        };
        let mut x = embeds.to_dtype(self.dtype())?;
        for (n, block) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| {
                let limit = c.limit;
                (&mut c.layers[n], limit)
            });
            x = block.forward(&x, &cos, &sin, &mask.bias(), slot, mode)?;
        }
        rms_norm(&x, &self.norm, self.cfg.rms_norm_eps, mode)
    }

    /// Logits (…, V) in f32 from final hidden states (…, H).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        fused::linear::linear(hidden, self.head_weight(), None)?.to_dtype(DType::F32)
    }

    /// Log-probs and entropies (B, L) of `targets` under `softmax(logits(hidden) / T)`, without
    /// keeping the (B, L, V) logits (see [`crate::model::logprobs::head_token_logprobs`]):
    /// what every loss over next-token predictions should call.
    pub fn token_logprobs(&self, hidden: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, Tensor)> {
        crate::model::logprobs::head_token_logprobs(hidden, self.head_weight(), targets, temperature)
    }

    /// The LM head's (V, H) weight: its own, or the embedding when they are tied.
    fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Logits for every position of a (possibly padded) batch. `input_ids` is (B, L) u32.
    pub fn forward(&self, input_ids: &Tensor, mask: &AttnMask, cache: Option<&mut KvCache>, mode: Mode) -> Result<ForwardOut> {
        let hidden = self.forward_hidden(input_ids, mask, cache, mode)?;
        let logits = self.logits(&hidden)?;
        Ok(ForwardOut { logits, hidden })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_in_equal_ids_in_and_the_mask_decides_what_is_seen() {
        let dev = Device::Cpu;
        let mut cfg = ModelConfig::preset("tiny", 50).unwrap();
        cfg.num_hidden_layers = 2;
        let model = crate::model::Model::init_random(cfg, 3, &dev).unwrap();
        let d = &model.decoder;
        let run = |ids: &[u32], mask: &AttnMask, via_embeds: bool| -> Vec<Vec<f32>> {
            let input = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &dev).unwrap();
            let h = if via_embeds {
                d.forward_embeds(&d.embed_tokens(&input).unwrap(), mask, None, Mode::Infer).unwrap()
            } else {
                d.forward_hidden(&input, mask, None, Mode::Infer).unwrap()
            };
            h.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
        };
        let causal = AttnMask::causal(1, 4, &dev).unwrap();
        let both = AttnMask::bidirectional(&[vec![true; 4]], &dev).unwrap();
        let (a, b) = ([5u32, 7, 9, 11], [5u32, 7, 9, 12]);
        assert_eq!(run(&a, &causal, true), run(&a, &causal, false), "inputs_embeds = embed(ids) gives the same states");
        // Causal: changing the last token leaves the first three positions alone.
        assert_eq!(run(&a, &causal, true)[..3], run(&b, &causal, true)[..3]);
        // Bidirectional: it reaches every position.
        let (x, y) = (run(&a, &both, true), run(&b, &both, true));
        assert!((0..3).all(|i| x[i] != y[i]), "bidirectional attention sees the future");
        let wrong = Tensor::zeros((1, 4, 7), DType::F32, &dev).unwrap();
        assert!(d.forward_embeds(&wrong, &causal, None, Mode::Infer).is_err());
    }

    #[test]
    fn cache_appends_equal_one_concatenation_across_growth() {
        // 1 + 70 single-position appends cross the first capacity (64) and a doubling; the
        // cached view must equal the concatenation of everything appended, for plain tensors
        // (written in place) and for tracked ones (concatenated, gradients kept).
        let dev = Device::Cpu;
        for tracked in [false, true] {
            let mut slot = None;
            let mut all_k = vec![];
            let mut last = None;
            for step in 0..71 {
                let n = if step == 0 { 3 } else { 1 };
                let k = Tensor::arange((step * 100) as f32, (step * 100 + 2 * 2 * n * 4) as f32, &dev).unwrap().reshape((2, 2, n, 4)).unwrap();
                let k = if tracked { candle_core::Var::from_tensor(&k).unwrap().as_tensor().clone() } else { k };
                let v = (&k * 2.0).unwrap();
                all_k.push(k.detach());
                last = Some(cache_append(&mut slot, 0, k, v).unwrap());
            }
            let (k, v) = last.unwrap();
            let want = Tensor::cat(&all_k, 2).unwrap();
            assert_eq!(k.dims(), [2, 2, 73, 4]);
            assert_eq!(k.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "tracked {tracked}");
            assert_eq!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), (want * 2.0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            assert_eq!(k.track_op(), tracked, "a tracked key keeps its graph");
        }
    }

    #[test]
    fn a_limited_cache_stops_doubling_at_its_limit_and_holds_the_same_keys() {
        let dev = Device::Cpu;
        let mut slot = None;
        let mut all_k = vec![];
        let mut last = None;
        let mut capacities = vec![];
        for step in 0..98 {
            let n = if step == 0 { 3 } else { 1 };
            let k = Tensor::arange((step * 100) as f32, (step * 100 + 2 * 2 * n * 4) as f32, &dev).unwrap().reshape((2, 2, n, 4)).unwrap();
            all_k.push(k.clone());
            last = Some(cache_append(&mut slot, 100, k.clone(), (&k * 2.0).unwrap()).unwrap());
            capacities.push(slot.as_ref().unwrap().capacity());
        }
        // 3 (the prefill as it is), then 64 (the minimum), then 100 (not 130: the limit).
        capacities.dedup();
        assert_eq!(capacities, [3, 64, 100]);
        let (k, _) = last.unwrap();
        let want = Tensor::cat(&all_k, 2).unwrap();
        assert_eq!(k.dims(), [2, 2, 100, 4]);
        assert_eq!(k.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn llama3_inv_freq_matches_hand_computation() {
        let mut cfg = ModelConfig::preset("tiny", 10).unwrap();
        cfg.head_dim = 8;
        cfg.rope_theta = 10000.0;
        cfg.rope_scaling = Some(super::super::RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 256,
        });
        // base freqs 1, 0.1, 0.01, 0.001 → wavelengths 6.28, 62.8, 628, 6283;
        // high band (< 64): kept; low band (> 256): /8; none in between.
        let f = rope_inv_freq(&cfg);
        let want = [1.0, 0.1, 0.01 / 8.0, 0.001 / 8.0];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() < 1e-6 * b.max(1e-3), "{f:?}");
        }
        // Move the band so that wavelength 62.8 is medium: old=128 → high_wavelen 32, low 128.
        if let Some(s) = cfg.rope_scaling.as_mut() {
            s.original_max_position_embeddings = 128;
        }
        let f = rope_inv_freq(&cfg);
        let wavelen = 2.0 * std::f64::consts::PI / 0.1;
        let smooth = (128.0 / wavelen - 1.0) / (4.0 - 1.0);
        let want1 = (1.0 - smooth) * 0.1 / 8.0 + smooth * 0.1;
        assert!((f[1] as f64 - want1).abs() < 1e-6, "{} vs {want1}", f[1]);
    }
}
