//! The ViT vision towers LLaVA uses: CLIP's (`clip_vision_model`: a class token, a
//! pre-layernorm, quick_gelu) and SigLIP's (`siglip_vision_model`: no class token, a bias on the
//! patch embedding, gelu_pytorch_tanh). Both embed patches with a Conv2d whose kernel equals its
//! stride (one dense projection of each (channel, y, x) patch row here), add learned absolute
//! positions, and run pre-LN blocks with bidirectional attention inside each image. LLaVA reads
//! the hidden states after one layer (`vision_feature_layer`), so only the blocks up to it run;
//! the rest (and the post-layernorm, SigLIP's pooling head) are kept only to save them back.
//!
//! Reference: transformers' `CLIPVisionTransformer` (modeling_clip.py) and
//! `SiglipVisionTransformer` (modeling_siglip.py). Only ops with a backward are used.

use super::super::config::Keys;
use super::checkpoint::{Blocks, Checkpoints, TowerMode};
use super::super::fused;
use super::super::{ModelError, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitKind {
    Clip,
    Siglip,
}

/// The MLP activation of the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitAct {
    /// `x · sigmoid(1.702 x)` (CLIP).
    QuickGelu,
    /// The tanh approximation of GELU (`gelu_pytorch_tanh`, SigLIP).
    GeluTanh,
    /// The erf GELU.
    Gelu,
}

impl VitAct {
    pub fn parse(name: &str) -> Option<VitAct> {
        match name {
            "quick_gelu" => Some(VitAct::QuickGelu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(VitAct::GeluTanh),
            "gelu" => Some(VitAct::Gelu),
            _ => None,
        }
    }

    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            VitAct::QuickGelu => match super::infer_ops::quick_gelu(x) {
                Some(y) => y,
                None => x / ((x * -1.702)?.exp()? + 1.0)?,
            },
            VitAct::GeluTanh => x.gelu(),
            VitAct::Gelu => x.gelu_erf(),
        }
    }
}

/// A `vision_config` of model_type `clip_vision_model` or `siglip_vision_model`. `raw` keeps
/// every key of the file so a saved folder carries them unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    pub kind: VitKind,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: VitAct,
    /// SigLIP's attention-pooling head (unused by LLaVA, kept for the round trip).
    pub use_head: bool,
    pub raw: Map<String, Value>,
}

impl VitConfig {
    pub fn from_json(obj: &Map<String, Value>, path: &Path) -> Result<VitConfig> {
        let keys = Keys { obj, path };
        let kind = match obj.get("model_type").and_then(Value::as_str) {
            Some("clip_vision_model") | None => VitKind::Clip,
            Some("siglip_vision_model") => VitKind::Siglip,
            Some(other) => {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("vision_config.model_type `{other}` (supported: clip_vision_model, siglip_vision_model)"),
                })
            }
        };
        let (default_act, default_eps) = match kind {
            VitKind::Clip => ("quick_gelu", 1e-5),
            VitKind::Siglip => ("gelu_pytorch_tanh", 1e-6),
        };
        let act_name = keys.present("hidden_act").and_then(Value::as_str).unwrap_or(default_act);
        let hidden_act = VitAct::parse(act_name).ok_or_else(|| ModelError::Unsupported {
            path: path.to_path_buf(),
            what: format!("vision_config.hidden_act `{act_name}` (supported: quick_gelu, gelu_pytorch_tanh, gelu)"),
        })?;
        let cfg = VitConfig {
            kind,
            hidden_size: keys.opt_usize("hidden_size")?.unwrap_or(768),
            intermediate_size: keys.opt_usize("intermediate_size")?.unwrap_or(3072),
            num_hidden_layers: keys.opt_usize("num_hidden_layers")?.unwrap_or(12),
            num_attention_heads: keys.opt_usize("num_attention_heads")?.unwrap_or(12),
            num_channels: keys.opt_usize("num_channels")?.unwrap_or(3),
            image_size: keys.opt_usize("image_size")?.unwrap_or(224),
            patch_size: keys.opt_usize("patch_size")?.unwrap_or(if kind == VitKind::Clip { 32 } else { 16 }),
            layer_norm_eps: keys.opt_f64("layer_norm_eps")?.unwrap_or(default_eps),
            hidden_act,
            use_head: kind == VitKind::Siglip && keys.present("vision_use_head").and_then(Value::as_bool).unwrap_or(true),
            raw: obj.clone(),
        };
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(keys.bad("vision_config.num_attention_heads", "a divisor of hidden_size", &json!(cfg.num_attention_heads)));
        }
        if cfg.patch_size == 0 || cfg.image_size % cfg.patch_size != 0 {
            return Err(keys.bad("vision_config.patch_size", &format!("a divisor of image_size {}", cfg.image_size), &json!(cfg.patch_size)));
        }
        if cfg.num_channels != 3 {
            return Err(ModelError::Unsupported { path: path.to_path_buf(), what: format!("vision_config.num_channels = {} (RGB only)", cfg.num_channels) });
        }
        Ok(cfg)
    }

    pub fn to_json(&self) -> Value {
        let mut out = self.raw.clone();
        let kind = match self.kind {
            VitKind::Clip => "clip_vision_model",
            VitKind::Siglip => "siglip_vision_model",
        };
        let act = match self.hidden_act {
            VitAct::QuickGelu => "quick_gelu",
            VitAct::GeluTanh => "gelu_pytorch_tanh",
            VitAct::Gelu => "gelu",
        };
        for (k, v) in [
            ("model_type", json!(kind)),
            ("hidden_size", json!(self.hidden_size)),
            ("intermediate_size", json!(self.intermediate_size)),
            ("num_hidden_layers", json!(self.num_hidden_layers)),
            ("num_attention_heads", json!(self.num_attention_heads)),
            ("num_channels", json!(self.num_channels)),
            ("image_size", json!(self.image_size)),
            ("patch_size", json!(self.patch_size)),
            ("layer_norm_eps", json!(self.layer_norm_eps)),
            ("hidden_act", json!(act)),
        ] {
            out.insert(k.into(), v);
        }
        if self.kind == VitKind::Siglip {
            out.insert("vision_use_head".into(), json!(self.use_head));
        }
        Value::Object(out)
    }

    /// Patches per side of the (square) input image.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }

    /// Positions per image: the patches, plus CLIP's class token.
    pub fn num_positions(&self) -> usize {
        self.num_patches() + usize::from(self.kind == VitKind::Clip)
    }

    /// The hidden-states index `layer` refers to (0 = the embeddings, n = after the last
    /// block; negative counts from the end as in Python), checked.
    pub fn resolve_layer(&self, layer: i64) -> std::result::Result<usize, String> {
        let n = self.num_hidden_layers as i64;
        let k = if layer < 0 { n + 1 + layer } else { layer };
        if !(0..=n).contains(&k) {
            return Err(format!("vision_feature_layer {layer} is outside the tower's {} hidden states", n + 1));
        }
        Ok(k as usize)
    }

    /// Every tower parameter with its name under `vision_tower.` and shape, in model order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (e, m, p, c) = (self.hidden_size, self.intermediate_size, self.patch_size, self.num_channels);
        let mut out: Vec<(String, Vec<usize>)> = vec![];
        let mut push = |name: &str, shape: Vec<usize>| out.push((format!("vision_tower.{name}"), shape));
        if self.kind == VitKind::Clip {
            push("embeddings.class_embedding", vec![e]);
        }
        push("embeddings.patch_embedding.weight", vec![e, c, p, p]);
        if self.kind == VitKind::Siglip {
            push("embeddings.patch_embedding.bias", vec![e]);
        }
        push("embeddings.position_embedding.weight", vec![self.num_positions(), e]);
        if self.kind == VitKind::Clip {
            push("pre_layrnorm.weight", vec![e]);
            push("pre_layrnorm.bias", vec![e]);
        }
        for n in 0..self.num_hidden_layers {
            for (name, shape) in layer_shapes(e, m) {
                push(&format!("encoder.layers.{n}.{name}"), shape);
            }
        }
        push("post_layernorm.weight", vec![e]);
        push("post_layernorm.bias", vec![e]);
        if self.use_head {
            for (name, shape) in [
                ("head.probe", vec![1, 1, e]),
                ("head.attention.in_proj_weight", vec![3 * e, e]),
                ("head.attention.in_proj_bias", vec![3 * e]),
                ("head.attention.out_proj.weight", vec![e, e]),
                ("head.attention.out_proj.bias", vec![e]),
                ("head.layernorm.weight", vec![e]),
                ("head.layernorm.bias", vec![e]),
                ("head.mlp.fc1.weight", vec![m, e]),
                ("head.mlp.fc1.bias", vec![m]),
                ("head.mlp.fc2.weight", vec![e, m]),
                ("head.mlp.fc2.bias", vec![e]),
            ] {
                push(name, shape);
            }
        }
        out
    }

    /// Whether the forward pass up to hidden state `upto` reads the parameter `name`.
    pub fn is_used(&self, name: &str, upto: usize) -> bool {
        let Some(rest) = name.strip_prefix("vision_tower.") else { return false };
        if rest.starts_with("embeddings.") || rest.starts_with("pre_layrnorm.") {
            return true;
        }
        match rest.strip_prefix("encoder.layers.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n < upto,
            None => false,
        }
    }
}

fn layer_shapes(e: usize, m: usize) -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("self_attn.k_proj.weight", vec![e, e]),
        ("self_attn.k_proj.bias", vec![e]),
        ("self_attn.v_proj.weight", vec![e, e]),
        ("self_attn.v_proj.bias", vec![e]),
        ("self_attn.q_proj.weight", vec![e, e]),
        ("self_attn.q_proj.bias", vec![e]),
        ("self_attn.out_proj.weight", vec![e, e]),
        ("self_attn.out_proj.bias", vec![e]),
        ("layer_norm1.weight", vec![e]),
        ("layer_norm1.bias", vec![e]),
        ("mlp.fc1.weight", vec![m, e]),
        ("mlp.fc1.bias", vec![m]),
        ("mlp.fc2.weight", vec![e, m]),
        ("mlp.fc2.bias", vec![e]),
        ("layer_norm2.weight", vec![e]),
        ("layer_norm2.bias", vec![e]),
    ]
}

/// A LayerNorm in f32 from primitives (so it has a backward).
#[derive(Clone, Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> candle_core::Result<LayerNorm> {
        Ok(LayerNorm { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = super::infer_ops::layer_norm(x, &self.weight, &self.bias, self.eps) {
            return y;
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let y = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
        y.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// A dense layer with an optional bias.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Dense {
    pub(crate) fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize, bias: bool) -> candle_core::Result<Dense> {
        let b = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        Ok(Dense { weight: vb.get((out_dim, in_dim), "weight")?, bias: b })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::linear::linear(x, &self.weight, self.bias.as_ref())
    }
}

#[derive(Clone, Debug)]
struct Layer {
    norm1: LayerNorm,
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
    norm2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
}

/// The tower's blocks up to the layer LLaVA reads.
#[derive(Clone, Debug)]
pub struct VitTower {
    cfg: VitConfig,
    /// (E, C, P, P) as stored; used flattened to (E, C·P·P).
    patch: Tensor,
    patch_bias: Option<Tensor>,
    class: Option<Tensor>,
    /// (positions, E).
    position: Tensor,
    pre_norm: Option<LayerNorm>,
    layers: Vec<Layer>,
    /// What the forward keeps for backward ([`TowerMode`]).
    ck: Arc<Checkpoints<Tensor>>,
}

impl VitTower {
    /// Builds the tower from a `VarBuilder` rooted at `vision_tower`, with the blocks before
    /// hidden state `upto` (see [`VitConfig::resolve_layer`]).
    pub fn new(cfg: &VitConfig, upto: usize, vb: VarBuilder) -> candle_core::Result<VitTower> {
        let (e, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let clip = cfg.kind == VitKind::Clip;
        let patch = emb.pp("patch_embedding").get((e, cfg.num_channels, cfg.patch_size, cfg.patch_size), "weight")?;
        let patch_bias = if clip { None } else { Some(emb.pp("patch_embedding").get(e, "bias")?) };
        let class = if clip { Some(emb.get(e, "class_embedding")?) } else { None };
        let position = emb.pp("position_embedding").get((cfg.num_positions(), e), "weight")?;
        let pre_norm = if clip { Some(LayerNorm::load(&vb.pp("pre_layrnorm"), e, eps)?) } else { None };
        let layers = (0..upto)
            .map(|n| {
                let l = vb.pp("encoder").pp("layers").pp(n);
                let a = l.pp("self_attn");
                Ok(Layer {
                    norm1: LayerNorm::load(&l.pp("layer_norm1"), e, eps)?,
                    q: Dense::load(&a.pp("q_proj"), e, e, true)?,
                    k: Dense::load(&a.pp("k_proj"), e, e, true)?,
                    v: Dense::load(&a.pp("v_proj"), e, e, true)?,
                    out: Dense::load(&a.pp("out_proj"), e, e, true)?,
                    norm2: LayerNorm::load(&l.pp("layer_norm2"), e, eps)?,
                    fc1: Dense::load(&l.pp("mlp").pp("fc1"), m, e, true)?,
                    fc2: Dense::load(&l.pp("mlp").pp("fc2"), e, m, true)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(VitTower { cfg: cfg.clone(), patch, patch_bias, class, position, pre_norm, layers, ck: Arc::default() })
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The parameters the forward pass reads, under their checkpoint names.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        let mut push = |name: String, t: &Tensor| out.push((format!("vision_tower.{name}"), t.clone()));
        if let Some(c) = &self.class {
            push("embeddings.class_embedding".into(), c);
        }
        push("embeddings.patch_embedding.weight".into(), &self.patch);
        if let Some(b) = &self.patch_bias {
            push("embeddings.patch_embedding.bias".into(), b);
        }
        push("embeddings.position_embedding.weight".into(), &self.position);
        if let Some(n) = &self.pre_norm {
            push("pre_layrnorm.weight".into(), &n.weight);
            push("pre_layrnorm.bias".into(), &n.bias);
        }
        for (i, l) in self.layers.iter().enumerate() {
            let norm = |n: &LayerNorm| [(n.weight.clone(), "weight"), (n.bias.clone(), "bias")];
            for (part, d) in [("self_attn.q_proj", &l.q), ("self_attn.k_proj", &l.k), ("self_attn.v_proj", &l.v), ("self_attn.out_proj", &l.out), ("mlp.fc1", &l.fc1), ("mlp.fc2", &l.fc2)] {
                push(format!("encoder.layers.{i}.{part}.weight"), &d.weight);
                if let Some(b) = &d.bias {
                    push(format!("encoder.layers.{i}.{part}.bias"), b);
                }
            }
            for (part, n) in [("layer_norm1", &l.norm1), ("layer_norm2", &l.norm2)] {
                for (t, what) in norm(n) {
                    push(format!("encoder.layers.{i}.{part}.{what}"), &t);
                }
            }
        }
        out
    }

    /// Hidden states (images, positions, E) at the selected layer, from patch rows
    /// (images · patches, C·P·P) in row-major patch order.
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let (rows, dim) = pixels.dims2()?;
        let n = cfg.num_patches();
        if dim != cfg.patch_dim() || rows % n != 0 {
            candle_core::bail!("pixel rows are ({rows}, {dim}); the tower takes images of {n} patches of {} values", cfg.patch_dim());
        }
        let b = rows / n;
        let t = n + usize::from(self.class.is_some());
        let zero = Tensor::zeros((b, 1, t, t), DType::F32, pixels.device())?;
        self.ck.run(self, pixels, zero)
    }

    pub fn set_mode(&self, mode: TowerMode) {
        self.ck.set_mode(mode);
    }

    /// The blocks' weight gradients of checkpointed forwards, after `loss.backward()`.
    pub fn backward(&self, grads: &mut candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.ck.backward(self, grads)
    }
}

impl Blocks for VitTower {
    /// The attention's all-zero (images, 1, positions, positions) mask.
    type Aux = Tensor;

    /// Patch embedding, class token, positions and (CLIP) the pre-layernorm.
    fn embed(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let (rows, _) = pixels.dims2()?;
        let (n, e) = (cfg.num_patches(), cfg.hidden_size);
        let b = rows / n;
        let weight = self.patch.reshape((e, cfg.patch_dim()))?;
        let mut x = fused::linear::linear(&pixels.to_dtype(self.patch.dtype())?, &weight, self.patch_bias.as_ref())?.reshape((b, n, e))?;
        if let Some(c) = &self.class {
            x = Tensor::cat(&[&c.reshape((1, 1, e))?.broadcast_as((b, 1, e))?.contiguous()?, &x], 1)?;
        }
        x = x.broadcast_add(&self.position.unsqueeze(0)?)?;
        match &self.pre_norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }

    fn block(&self, i: usize, x: &Tensor, zero: &Tensor) -> candle_core::Result<Tensor> {
        let (cfg, l) = (&self.cfg, &self.layers[i]);
        let (b, t, e) = x.dims3()?;
        let (heads, d) = (cfg.num_attention_heads, e / cfg.num_attention_heads);
        let scale = 1.0 / (d as f64).sqrt();
        let split = |y: Tensor| y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous();
        let h = l.norm1.forward(x)?;
        let (q, k, v) = (split(l.q.forward(&h)?)?, split(l.k.forward(&h)?)?, split(l.v.forward(&h)?)?);
        let scores = q.matmul(&k.t()?.contiguous()?)?.to_dtype(DType::F32)?;
        let probs = fused::softmax::masked_softmax(&scores, zero, scale)?.to_dtype(x.dtype())?;
        let attn = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, e))?;
        let x = (x + l.out.forward(&attn)?)?;
        let h = l.fc2.forward(&cfg.hidden_act.apply(&l.fc1.forward(&l.norm2.forward(&x)?)?)?)?;
        x + h
    }

    fn depth(&self) -> usize {
        self.layers.len()
    }

    fn weights(&self) -> Vec<Tensor> {
        self.named_tensors().into_iter().map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip() -> VitConfig {
        let obj = json!({"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                         "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768});
        VitConfig::from_json(obj.as_object().unwrap(), Path::new("config.json")).unwrap()
    }

    #[test]
    fn clip_vit_l_336_has_the_known_shapes_and_layer_indices() {
        let c = clip();
        assert_eq!((c.kind, c.hidden_act, c.layer_norm_eps), (VitKind::Clip, VitAct::QuickGelu, 1e-5));
        assert_eq!((c.num_patches(), c.num_positions()), (576, 577));
        // CLIPVisionModel of ViT-L/14-336 (without the text side): 303,507,456 parameters
        // (the tower of llava-1.5-7b-hf as transformers counts it).
        let total: usize = c.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, 303_507_456);
        assert_eq!(c.resolve_layer(-2), Ok(23));
        assert_eq!(c.resolve_layer(-1), Ok(24));
        assert_eq!(c.resolve_layer(0), Ok(0));
        assert!(c.resolve_layer(-26).unwrap_err().contains("25 hidden states"));
        assert!(c.is_used("vision_tower.encoder.layers.22.mlp.fc1.weight", 23));
        assert!(!c.is_used("vision_tower.encoder.layers.23.mlp.fc1.weight", 23));
        assert!(!c.is_used("vision_tower.post_layernorm.weight", 23));
        // `raw` gains the defaults written out; every typed field survives.
        let back = VitConfig::from_json(c.to_json().as_object().unwrap(), Path::new("config.json")).unwrap();
        assert_eq!(VitConfig { raw: c.raw.clone(), ..back.clone() }, c);
        assert_eq!(back.to_json(), c.to_json());
        assert_eq!(back.to_json()["projection_dim"], 768);
    }

    #[test]
    fn bad_vision_configs_name_the_key() {
        let p = Path::new("config.json");
        let obj = json!({"model_type": "clip_vision_model", "hidden_size": 30, "num_attention_heads": 4});
        let err = VitConfig::from_json(obj.as_object().unwrap(), p).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads"), "{err}");
        let obj = json!({"model_type": "dinov2", "hidden_size": 32});
        let err = VitConfig::from_json(obj.as_object().unwrap(), p).unwrap_err().to_string();
        assert!(err.contains("dinov2"), "{err}");
        let obj = json!({"model_type": "siglip_vision_model", "image_size": 30, "patch_size": 14});
        let err = VitConfig::from_json(obj.as_object().unwrap(), p).unwrap_err().to_string();
        assert!(err.contains("patch_size"), "{err}");
    }
}
