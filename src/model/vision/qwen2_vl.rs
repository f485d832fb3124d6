//! Qwen2-VL's vision transformer: a patch embedding (a Conv3d whose kernel equals its stride,
//! so one dense projection of each (channel, temporal, y, x) patch row), pre-LN blocks with
//! bidirectional attention inside each image and 2D rotary positions (height and width
//! frequencies side by side), and the patch merger (LayerNorm, then each 2×2 block of
//! neighbouring patches concatenated and projected by a GELU MLP to the LLM's width).
//!
//! Reference: transformers' `Qwen2VisionTransformerPretrainedModel` (modeling_qwen2_vl.py) and
//! `get_vision_position_ids` (vision_utils.py). Only ops with a backward are used, so the tower
//! and the merger train; without a gradient the attention, LayerNorm and quick_gelu take fused
//! kernels ([`super::attention`], [`super::infer_ops`]) and a frozen load re-lays the matrices
//! for gemm ([`super::super::fused::transposed`]).

use super::super::fused;
use super::super::config::Keys;
use super::checkpoint::{Blocks, Checkpoints, TowerMode};
use super::super::{ModelError, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;

/// The tower's shape (`vision_config`).
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub embed_dim: usize,
    /// The LLM's hidden size: the merger's output width.
    pub hidden_size: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub hidden_act: Activation,
    pub rope_theta: f64,
}

/// The MLP activation of the vision blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (Qwen2-VL's default).
    QuickGelu,
    /// The erf GELU.
    Gelu,
}

impl Activation {
    fn name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
        }
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // Primitives only (sigmoid as 1 / (1 + e^-t)) so the backward exists.
            Activation::QuickGelu => match super::infer_ops::quick_gelu(x) {
                Some(y) => y,
                None => x / ((x * -1.702)?.exp()? + 1.0)?,
            },
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

impl VisionConfig {
    /// Reads a `vision_config` object (transformers 4.x spells `in_channels` as `in_chans`).
    pub fn from_json(obj: &Map<String, Value>, path: &Path) -> Result<VisionConfig> {
        let keys = Keys { obj, path };
        let hidden_act = match keys.present("hidden_act").and_then(Value::as_str).unwrap_or("quick_gelu") {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => return Err(ModelError::Unsupported { path: path.to_path_buf(), what: format!("vision_config.hidden_act `{other}` (supported: quick_gelu, gelu)") }),
        };
        let rope_theta = match keys.present("rope_parameters").and_then(Value::as_object) {
            Some(p) => Keys { obj: p, path }.opt_f64("rope_theta")?.unwrap_or(10000.0),
            None => 10000.0,
        };
        let cfg = VisionConfig {
            depth: keys.opt_usize("depth")?.unwrap_or(32),
            embed_dim: keys.opt_usize("embed_dim")?.unwrap_or(1280),
            hidden_size: keys.opt_usize("hidden_size")?.unwrap_or(3584),
            num_heads: keys.opt_usize("num_heads")?.unwrap_or(16),
            mlp_ratio: keys.opt_f64("mlp_ratio")?.unwrap_or(4.0),
            in_channels: match keys.opt_usize("in_channels")? {
                Some(c) => c,
                None => keys.opt_usize("in_chans")?.unwrap_or(3),
            },
            patch_size: keys.opt_usize("patch_size")?.unwrap_or(14),
            spatial_merge_size: keys.opt_usize("spatial_merge_size")?.unwrap_or(2),
            temporal_patch_size: keys.opt_usize("temporal_patch_size")?.unwrap_or(2),
            hidden_act,
            rope_theta,
        };
        if cfg.num_heads == 0 || cfg.embed_dim % cfg.num_heads != 0 || (cfg.embed_dim / cfg.num_heads) % 4 != 0 {
            return Err(keys.bad("vision_config.num_heads", "a divisor of embed_dim leaving a head size divisible by 4 (2D RoPE)", &json!(cfg.num_heads)));
        }
        if cfg.in_channels != 3 {
            return Err(ModelError::Unsupported { path: path.to_path_buf(), what: format!("vision_config.in_channels = {} (RGB only)", cfg.in_channels) });
        }
        Ok(cfg)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "model_type": "qwen2_vl_vision",
            "depth": self.depth,
            "embed_dim": self.embed_dim,
            "hidden_size": self.hidden_size,
            "hidden_act": self.hidden_act.name(),
            "mlp_ratio": if self.mlp_ratio.fract() == 0.0 { json!(self.mlp_ratio as usize) } else { json!(self.mlp_ratio) },
            "num_heads": self.num_heads,
            "in_channels": self.in_channels,
            "patch_size": self.patch_size,
            "spatial_merge_size": self.spatial_merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "rope_parameters": {"rope_type": "axial", "rope_theta": self.rope_theta},
        })
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    pub fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Every tower parameter with its name under `visual.` and shape, in model order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (e, m) = (self.embed_dim, self.mlp_dim());
        let merged = e * self.spatial_merge_size * self.spatial_merge_size;
        let mut out = vec![(
            "visual.patch_embed.proj.weight".to_string(),
            vec![e, self.in_channels, self.temporal_patch_size, self.patch_size, self.patch_size],
        )];
        for n in 0..self.depth {
            let p = format!("visual.blocks.{n}");
            for (name, shape) in [
                ("norm1.weight", vec![e]),
                ("norm1.bias", vec![e]),
                ("attn.qkv.weight", vec![3 * e, e]),
                ("attn.qkv.bias", vec![3 * e]),
                ("attn.proj.weight", vec![e, e]),
                ("attn.proj.bias", vec![e]),
                ("norm2.weight", vec![e]),
                ("norm2.bias", vec![e]),
                ("mlp.fc1.weight", vec![m, e]),
                ("mlp.fc1.bias", vec![m]),
                ("mlp.fc2.weight", vec![e, m]),
                ("mlp.fc2.bias", vec![e]),
            ] {
                out.push((format!("{p}.{name}"), shape));
            }
        }
        for (name, shape) in [
            ("ln_q.weight", vec![e]),
            ("ln_q.bias", vec![e]),
            ("mlp.0.weight", vec![merged, merged]),
            ("mlp.0.bias", vec![merged]),
            ("mlp.2.weight", vec![self.hidden_size, merged]),
            ("mlp.2.bias", vec![self.hidden_size]),
        ] {
            out.push((format!("visual.merger.{name}"), shape));
        }
        out
    }
}

/// A LayerNorm's weight and bias.
#[derive(Clone, Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(vb: &VarBuilder, dim: usize) -> candle_core::Result<Norm> {
        Ok(Norm { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")? })
    }

    /// LayerNorm (eps 1e-6, as the tower's) in f32 from primitives, so it has a backward.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = super::infer_ops::layer_norm(x, &self.weight, &self.bias, 1e-6) {
            return y;
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let y = centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?.to_dtype(dtype)?;
        y.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// A dense layer with bias.
#[derive(Clone, Debug)]
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize) -> candle_core::Result<Dense> {
        Ok(Dense { weight: vb.get((out_dim, in_dim), "weight")?, bias: vb.get(out_dim, "bias")? })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::linear::linear(x, &self.weight, Some(&self.bias))
    }

    fn detached(&self) -> Dense {
        Dense { weight: self.weight.detach(), bias: self.bias.detach() }
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: Norm,
    qkv: Dense,
    proj: Dense,
    norm2: Norm,
    fc1: Dense,
    fc2: Dense,
}

/// The vision tower and its patch merger (`visual.*` in a checkpoint).
#[derive(Clone, Debug)]
pub struct VisionTower {
    cfg: VisionConfig,
    /// (embed, C, T, P, P) as stored; used flattened to (embed, C·T·P·P).
    patch: Tensor,
    blocks: Vec<Block>,
    ln_q: Norm,
    merge_in: Dense,
    merge_out: Dense,
    /// (1, 1, head_dim/4) f32 inverse frequencies of the 2D rotary positions.
    inv_freq: Tensor,
    /// What the forward keeps for backward ([`TowerMode`]).
    ck: Arc<Checkpoints<BlockAux>>,
}

/// The blocks' per-forward constants: 2D rotary tables and the images' patch counts.
pub struct BlockAux {
    cos: Tensor,
    sin: Tensor,
    lengths: Vec<usize>,
}

impl VisionTower {
    /// Builds the tower from a `VarBuilder` rooted at `visual`.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> candle_core::Result<VisionTower> {
        let (e, m) = (cfg.embed_dim, cfg.mlp_dim());
        let merged = e * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let patch = vb.pp("patch_embed").pp("proj").get((e, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size), "weight")?;
        let blocks = (0..cfg.depth)
            .map(|n| {
                let b = vb.pp("blocks").pp(n);
                Ok(Block {
                    norm1: Norm::load(&b.pp("norm1"), e)?,
                    qkv: Dense::load(&b.pp("attn").pp("qkv"), 3 * e, e)?,
                    proj: Dense::load(&b.pp("attn").pp("proj"), e, e)?,
                    norm2: Norm::load(&b.pp("norm2"), e)?,
                    fc1: Dense::load(&b.pp("mlp").pp("fc1"), m, e)?,
                    fc2: Dense::load(&b.pp("mlp").pp("fc2"), e, m)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mg = vb.pp("merger");
        let ln_q = Norm::load(&mg.pp("ln_q"), e)?;
        let merge_in = Dense::load(&mg.pp("mlp").pp("0"), merged, merged)?;
        let merge_out = Dense::load(&mg.pp("mlp").pp("2"), cfg.hidden_size, merged)?;
        // transformers: dim = head_dim / 2; inv_freq = theta^(-arange(0, dim, 2) / dim), in f32.
        let half = cfg.head_dim() / 2;
        let inv: Vec<f32> = (0..half).step_by(2).map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / half as f32)).collect();
        let n = inv.len();
        let inv_freq = Tensor::from_vec(inv, (1, 1, n), vb.device())?;
        Ok(VisionTower { cfg: cfg.clone(), patch, blocks, ln_q, merge_in, merge_out, inv_freq, ck: Arc::default() })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.patch.device()
    }

    pub fn dtype(&self) -> DType {
        self.patch.dtype()
    }

    /// The parameters under their checkpoint names (`visual.…`).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("visual.patch_embed.proj.weight".to_string(), self.patch.clone())];
        for (n, b) in self.blocks.iter().enumerate() {
            let p = format!("visual.blocks.{n}");
            for (name, t) in [
                ("norm1.weight", &b.norm1.weight),
                ("norm1.bias", &b.norm1.bias),
                ("attn.qkv.weight", &b.qkv.weight),
                ("attn.qkv.bias", &b.qkv.bias),
                ("attn.proj.weight", &b.proj.weight),
                ("attn.proj.bias", &b.proj.bias),
                ("norm2.weight", &b.norm2.weight),
                ("norm2.bias", &b.norm2.bias),
                ("mlp.fc1.weight", &b.fc1.weight),
                ("mlp.fc1.bias", &b.fc1.bias),
                ("mlp.fc2.weight", &b.fc2.weight),
                ("mlp.fc2.bias", &b.fc2.bias),
            ] {
                out.push((format!("{p}.{name}"), t.clone()));
            }
        }
        for (name, t) in [
            ("ln_q.weight", &self.ln_q.weight),
            ("ln_q.bias", &self.ln_q.bias),
            ("mlp.0.weight", &self.merge_in.weight),
            ("mlp.0.bias", &self.merge_in.bias),
            ("mlp.2.weight", &self.merge_out.weight),
            ("mlp.2.bias", &self.merge_out.bias),
        ] {
            out.push((format!("visual.merger.{name}"), t.clone()));
        }
        out
    }

    /// A copy sharing storage but with no autograd link (for sampling on trainable weights).
    pub fn detached(&self) -> VisionTower {
        let norm = |n: &Norm| Norm { weight: n.weight.detach(), bias: n.bias.detach() };
        VisionTower {
            cfg: self.cfg.clone(),
            patch: self.patch.detach(),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    norm1: norm(&b.norm1),
                    qkv: b.qkv.detached(),
                    proj: b.proj.detached(),
                    norm2: norm(&b.norm2),
                    fc1: b.fc1.detached(),
                    fc2: b.fc2.detached(),
                })
                .collect(),
            ln_q: norm(&self.ln_q),
            merge_in: self.merge_in.detached(),
            merge_out: self.merge_out.detached(),
            inv_freq: self.inv_freq.clone(),
            ck: Arc::default(),
        }
    }

    pub fn set_mode(&self, mode: TowerMode) {
        self.ck.set_mode(mode);
    }

    /// The blocks' weight gradients of checkpointed forwards, after `loss.backward()`.
    pub fn backward(&self, grads: &mut candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.ck.backward(self, grads)
    }

    /// (height, width) patch coordinates of every patch row, in the processor's merge-block
    /// order (transformers' `get_vision_position_ids`), repeated over the temporal grid.
    pub fn patch_positions(grids: &[[usize; 3]], merge: usize) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / merge {
                    for bw in 0..w / merge {
                        for mh in 0..merge {
                            for mw in 0..merge {
                                out.push(((bh * merge + mh) as u32, (bw * merge + mw) as u32));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Image features (tokens, LLM hidden) from patch rows (N, C·T·P·P) of the images whose
    /// grids are `grids`, in order: each image attends only to itself; every 2×2 block of its
    /// patches becomes one token.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let lengths: Vec<usize> = grids.iter().map(|g| g[0] * g[1] * g[2]).collect();
        let n: usize = lengths.iter().sum();
        let (rows, dim) = pixels.dims2()?;
        if rows != n || dim != cfg.patch_dim() {
            candle_core::bail!("pixel rows are ({rows}, {dim}); the grids {grids:?} need ({n}, {})", cfg.patch_dim());
        }
        let m = cfg.spatial_merge_size;
        if grids.iter().any(|g| g[1] % m != 0 || g[2] % m != 0) {
            candle_core::bail!("image grids {grids:?} are not multiples of the merge size {m}");
        }
        let dtype = self.dtype();
        // 2D rotary tables (1, N, head_dim/2): height frequencies, then width frequencies.
        let pos = VisionTower::patch_positions(grids, m);
        let (hs, ws): (Vec<f32>, Vec<f32>) = pos.iter().map(|&(h, w)| (h as f32, w as f32)).unzip();
        let dev = self.device();
        let angle = |p: Vec<f32>| Tensor::from_vec(p, (1, n, 1), dev)?.broadcast_mul(&self.inv_freq);
        let freqs = Tensor::cat(&[angle(hs)?, angle(ws)?], 2)?;
        let (cos, sin) = (freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?);
        let x = self.ck.run(self, pixels, BlockAux { cos, sin, lengths })?;
        let merged = self.ln_q.forward(&x)?.reshape((n / (m * m), cfg.embed_dim * m * m))?;
        self.merge_out.forward(&self.merge_in.forward(&merged)?.gelu_erf()?)
    }
}

impl Blocks for VisionTower {
    type Aux = BlockAux;

    fn embed(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let patch = self.patch.reshape((self.cfg.embed_dim, self.cfg.patch_dim()))?;
        fused::linear::linear(&pixels.to_dtype(self.dtype())?, &patch, None)
    }

    /// Block `i`: attention inside each image with the 2D rotary positions, then the MLP.
    fn block(&self, i: usize, x: &Tensor, aux: &BlockAux) -> candle_core::Result<Tensor> {
        let (cfg, block) = (&self.cfg, &self.blocks[i]);
        let qkv = block.qkv.forward(&block.norm1.forward(x)?)?;
        let attn = super::attention::attention(&qkv, Some((&aux.cos, &aux.sin)), cfg.num_heads, &aux.lengths)?;
        let x = (x + block.proj.forward(&attn)?)?;
        let h = block.fc2.forward(&cfg.hidden_act.apply(&block.fc1.forward(&block.norm2.forward(&x)?)?)?)?;
        x + h
    }

    fn depth(&self) -> usize {
        self.blocks.len()
    }

    fn weights(&self) -> Vec<Tensor> {
        self.named_tensors().into_iter().filter(|(n, _)| !n.starts_with("visual.merger.")).map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_positions_walk_merge_blocks() {
        // A 4×4 grid with merge 2: block (0,0) is (0,0),(0,1),(1,0),(1,1), then block (0,1).
        let p = VisionTower::patch_positions(&[[1, 4, 4]], 2);
        assert_eq!(&p[..8], &[(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]);
        assert_eq!(p.len(), 16);
        assert_eq!(p[15], (3, 3));
    }

    #[test]
    fn quick_gelu_matches_its_formula() {
        let x = Tensor::new(&[-2.0f32, 0.0, 1.0], &Device::Cpu).unwrap();
        let y = Activation::QuickGelu.apply(&x).unwrap().to_vec1::<f32>().unwrap();
        for (got, x) in y.iter().zip([-2.0f32, 0.0, 1.0]) {
            let want = x / (1.0 + (-1.702 * x).exp());
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
