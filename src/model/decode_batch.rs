//! Decoding many rows at once on the CPU: a slot KV cache, one token per live row per step,
//! attention over each row's own keys, and the LM head fused with the softmax statistics the
//! sampler needs (issue 24).
//!
//! Why: the tensor path ([`Decoder::forward_hidden`] with a [`super::KvCache`]) keeps a
//! rectangular batch. Rows are left-padded to the longest prompt, a finished row keeps its
//! place until the longest row ends, attention materialises (B, heads, 1, S) padded scores
//! plus a mask, each step allocates every activation, and the sampler converts the full
//! (B, V) logits to f64 and passes over them four times. Here a row lives in a *slot*; its
//! keys and values sit at positions `0..len` of the slot (no padding), a finished row's
//! slot is handed to the next row (continuous batching, scheduled by `generate`), all
//! activations live in buffers allocated once, and the head writes each block of 128
//! vocabulary logits for all rows while it computes their max, Σ e^z and Σ e^z·z: the
//! softmax statistics of the row come from those block sums, and drawing a token reads back
//! only the block the draw lands in.
//!
//! Only f32 weights on the CPU without a LoRA adapter take this path ([`BatchDecoder::new`]
//! returns `None` otherwise); `generate` then uses the tensor path, which computes the same
//! function with candle ops on any device. A GPU would need the same two pieces as kernels:
//! paged (per-slot) attention over a block KV cache and a fused head + online-softmax
//! reduction per vocabulary block, as vLLM and FlashInfer do.
//!
//! Prefill (the prompt of a row entering a slot) runs through the tensor path once per
//! distinct prompt among the entrants; its keys and values are copied into the slots.
//!
//! With `bf16` weights (`rollout_dtype = "bf16"`), the decoder makes bf16 copies of the
//! projection and head matrices when it is built (once per `generate` call, so a rollout
//! always reads the current policy) and the decode steps read those through
//! [`skinny::bf16`] (half the bytes; x, products and sums stay f32). Prefill, embeddings,
//! norms and biases stay f32. Where the CPU lacks AVX-512 (F, BW, VL), no copies are made
//! and the f32 weights are used.

use super::fused::gemm::{sgemm, MatRef};
use super::fused::{simd, skinny};
use super::{distinct_rows, AttnMask, Decoder, KvCache, Mode};
use candle_core::{bail, CpuStorage, Result, Storage, Tensor};
use rayon::prelude::*;

/// One block's weights as tensors, from [`Decoder::decode_weights`]: (weight, bias) of each
/// projection, weights (out, in) like PyTorch.
pub(crate) struct BlockWeights {
    pub input_norm: Tensor,
    pub post_norm: Tensor,
    pub q: (Tensor, Option<Tensor>),
    pub k: (Tensor, Option<Tensor>),
    pub v: (Tensor, Option<Tensor>),
    pub o: (Tensor, Option<Tensor>),
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// The decoder's weights (detached, storage shared with the model).
pub(crate) struct Weights {
    pub embed: Tensor,
    pub blocks: Vec<BlockWeights>,
    pub norm: Tensor,
    /// (V, H): the LM head, or the embedding when tied.
    pub head: Tensor,
    pub inv_freq: Vec<f32>,
    pub eps: f32,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Vocabulary rows per block of the fused head (a rayon task): 128 rows of a 576–896 wide
/// head are 295–459 KB of weights, and the block's logits (128 × 16 rows) stay in L1.
const VOCAB_BLOCK: usize = 128;

/// Read locks on the weight storages and the f32 range of each: the slices stay valid while
/// the decoder lives (nothing writes weights during a rollout).
struct Held<'a> {
    guards: Vec<(candle_core::StorageRef<'a>, usize, usize)>,
    /// bf16 copies of the held matrices that have one (same index).
    bf16: Vec<Option<Vec<u16>>>,
}

impl<'a> Held<'a> {
    /// Index of `t` in the held list, or `None` when it is not a contiguous f32 CPU tensor.
    fn hold(&mut self, t: &'a Tensor) -> Option<usize> {
        let (guard, layout) = t.storage_and_layout();
        let (a, b) = layout.contiguous_offsets()?;
        if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
            return None;
        }
        self.guards.push((guard, a, b));
        self.bf16.push(None);
        Some(self.guards.len() - 1)
    }

    /// Makes a bf16 copy of held matrix `i`.
    fn make_bf16(&mut self, i: usize) {
        let copy = skinny::bf16::convert(self.get(i));
        self.bf16[i] = Some(copy);
    }

    /// Matrix `i` as the products read it: f32, and its bf16 copy if it has one.
    fn mat(&self, i: usize) -> Wt<'_> {
        Wt { f32: self.get(i), bf16: self.bf16[i].as_deref() }
    }

    fn get(&self, i: usize) -> &[f32] {
        let (guard, a, b) = &self.guards[i];
        match &**guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[*a..*b],
            _ => unreachable!("checked in hold"),
        }
    }
}

/// Indices into [`Held`] of one block's weights.
struct BlockIds {
    input_norm: usize,
    post_norm: usize,
    q: (usize, Option<usize>),
    k: (usize, Option<usize>),
    v: (usize, Option<usize>),
    o: (usize, Option<usize>),
    q_norm: Option<usize>,
    k_norm: Option<usize>,
    gate: usize,
    up: usize,
    down: usize,
}

/// Softmax statistics of one vocabulary block for one row: max z, Σ e^(z−max),
/// Σ e^(z−max)·(z−max), and the first index of the max.
#[derive(Clone, Copy, Default)]
struct BlockStat {
    max: f32,
    sum: f32,
    zsum: f32,
    arg: u32,
}

/// The CPU batch decoder: weights, a slot KV cache and every buffer a step needs.
pub struct BatchDecoder<'a> {
    held: Held<'a>,
    embed: usize,
    norm: usize,
    head: usize,
    blocks: Vec<BlockIds>,
    inv_freq: Vec<f32>,
    eps: f32,
    h: usize,
    nh: usize,
    nkv: usize,
    d: usize,
    inter: usize,
    vocab: usize,
    slots: usize,
    cap: usize,
    /// Per layer: (slots, n_kv, cap, D) keys and values.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    /// Positions filled per slot.
    len: Vec<usize>,
    /// Final hidden states (after the final norm) of the rows of the last `step` / `prefill`.
    hidden: Vec<f32>,
    // Per-step buffers, `slots` rows each.
    x: Vec<f32>,
    hb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    yt: Vec<f32>,
    /// x of a bf16 product in the kernel's order (up to 16 rows of the widest input).
    xp: Vec<f32>,
    scores: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    pos: Vec<usize>,
    slot_of: Vec<usize>,
    logits: Vec<f32>,
    stats: Vec<BlockStat>,
}

impl<'a> BatchDecoder<'a> {
    /// A decoder with `slots` slots of `capacity` positions each, or `None` when the weights
    /// are not contiguous f32 on the CPU (the caller then decodes through the tensor path).
    /// With `bf16`, the matrices are read as bf16 copies where the CPU runs that kernel
    /// (see the module note).
    pub(crate) fn new(w: &'a Weights, slots: usize, capacity: usize, bf16: bool) -> Option<BatchDecoder<'a>> {
        let mut held = Held { guards: Vec::new(), bf16: Vec::new() };
        let embed = held.hold(&w.embed)?;
        let norm = held.hold(&w.norm)?;
        let head = held.hold(&w.head)?;
        let mut blocks = Vec::new();
        for b in &w.blocks {
            let mut lin = |(wt, bias): &'a (Tensor, Option<Tensor>)| -> Option<(usize, Option<usize>)> {
                let wi = held.hold(wt)?;
                let bi = match bias {
                    Some(b) => Some(held.hold(b)?),
                    None => None,
                };
                Some((wi, bi))
            };
            let (q, k, v, o) = (lin(&b.q)?, lin(&b.k)?, lin(&b.v)?, lin(&b.o)?);
            let mut opt = |t: &'a Option<Tensor>| -> Option<Option<usize>> {
                match t {
                    Some(t) => Some(Some(held.hold(t)?)),
                    None => Some(None),
                }
            };
            let (q_norm, k_norm) = (opt(&b.q_norm)?, opt(&b.k_norm)?);
            blocks.push(BlockIds {
                input_norm: held.hold(&b.input_norm)?,
                post_norm: held.hold(&b.post_norm)?,
                q,
                k,
                v,
                o,
                q_norm,
                k_norm,
                gate: held.hold(&b.gate)?,
                up: held.hold(&b.up)?,
                down: held.hold(&b.down)?,
            });
        }
        let (vocab, h) = w.head.dims2().ok()?;
        let (nh, nkv, d) = (w.n_heads, w.n_kv_heads, w.head_dim);
        let inter = w.blocks.first().and_then(|b| b.gate.dims2().ok()).map_or(0, |(i, _)| i);
        if nkv == 0 || nh % nkv != 0 || d % 2 != 0 || slots == 0 {
            return None;
        }
        if bf16 && skinny::bf16::available() {
            held.make_bf16(head);
            for b in &blocks {
                for i in [b.q.0, b.k.0, b.v.0, b.o.0, b.gate, b.up, b.down] {
                    held.make_bf16(i);
                }
            }
        }
        let layers = blocks.len();
        let kv = slots * nkv * capacity * d;
        // Scratch of the widest product group: q, k, v together, gate and up together.
        let widest = ((nh + 2 * nkv) * d).max(2 * inter).max(h);
        let blocks_n = vocab.div_ceil(VOCAB_BLOCK);
        Some(BatchDecoder {
            held,
            embed,
            norm,
            head,
            blocks,
            inv_freq: w.inv_freq.clone(),
            eps: w.eps,
            h,
            nh,
            nkv,
            d,
            inter,
            vocab,
            slots,
            cap: capacity,
            k_cache: (0..layers).map(|_| vec![0.0; kv]).collect(),
            v_cache: (0..layers).map(|_| vec![0.0; kv]).collect(),
            len: vec![0; slots],
            hidden: vec![0.0; slots * h],
            x: vec![0.0; slots * h],
            hb: vec![0.0; slots * h],
            q: vec![0.0; slots * nh * d],
            k: vec![0.0; slots * nkv * d],
            v: vec![0.0; slots * nkv * d],
            att: vec![0.0; slots * nh * d],
            proj: vec![0.0; slots * h],
            gate: vec![0.0; slots * inter],
            up: vec![0.0; slots * inter],
            yt: vec![0.0; slots * widest],
            xp: vec![0.0; slots.min(skinny::MAX_ROWS) * h.max(nh * d).max(inter)],
            scores: vec![0.0; slots * nh * capacity],
            cos: vec![0.0; slots * d / 2],
            sin: vec![0.0; slots * d / 2],
            pos: vec![0; slots],
            slot_of: vec![0; slots],
            logits: vec![0.0; vocab * skinny::MAX_ROWS],
            stats: vec![BlockStat::default(); blocks_n * skinny::MAX_ROWS],
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Prefills `entrants` (slot, prompt) through the tensor path of `decoder` (each distinct
    /// prompt once) and copies their keys and values into the slots. Their final hidden states
    /// go to rows `first..first + entrants.len()` of the hidden buffer (see [`Self::head`]).
    pub fn prefill(&mut self, decoder: &Decoder, entrants: &[(usize, &[u32])], first: usize) -> Result<()> {
        if entrants.is_empty() {
            return Ok(());
        }
        if first + entrants.len() > self.slots {
            bail!("batch decoder: {} prefill rows after row {first} exceed the {} slots", entrants.len(), self.slots);
        }
        let prompts: Vec<Vec<u32>> = entrants.iter().map(|(_, p)| p.to_vec()).collect();
        let (distinct, of_row) = distinct_rows(&prompts);
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 || width > self.cap {
            bail!("batch decoder: prompt of {width} tokens for slots of {} positions", self.cap);
        }
        let device = decoder.device();
        let padded: Vec<u32> = distinct.iter().flat_map(|&i| std::iter::repeat_n(0, width - prompts[i].len()).chain(prompts[i].iter().copied())).collect();
        let valid: Vec<Vec<bool>> = distinct.iter().map(|&i| (0..width).map(|j| j + prompts[i].len() >= width).collect()).collect();
        let mut cache = KvCache::new(self.blocks.len());
        let input = Tensor::from_vec(padded, (distinct.len(), width), device)?;
        let hidden = decoder.forward_hidden(&input, &AttnMask::new(&valid, width, device)?, Some(&mut cache), Mode::Infer)?;
        let last = hidden.narrow(1, width - 1, 1)?.squeeze(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let (h, nkv, d, cap) = (self.h, self.nkv, self.d, self.cap);
        for (e, &(slot, prompt)) in entrants.iter().enumerate() {
            if slot >= self.slots {
                bail!("batch decoder: slot {slot} of {}", self.slots);
            }
            self.hidden[(first + e) * h..(first + e + 1) * h].copy_from_slice(&last[of_row[e] as usize]);
            self.len[slot] = prompt.len();
        }
        for n in 0..self.blocks.len() {
            let Some((k, v)) = cache.layer_view(n)? else { bail!("batch decoder: the prefill cached nothing for layer {n}") };
            let flat = |t: Tensor| -> Result<Vec<f32>> { t.to_dtype(candle_core::DType::F32)?.contiguous()?.flatten_all()?.to_vec1::<f32>() };
            let (k, v) = (flat(k)?, flat(v)?);
            for (e, &(slot, prompt)) in entrants.iter().enumerate() {
                let u = of_row[e] as usize;
                let pl = prompt.len();
                for j in 0..nkv {
                    let src = ((u * nkv + j) * width + (width - pl)) * d;
                    let dst = (slot * nkv + j) * cap * d;
                    self.k_cache[n][dst..dst + pl * d].copy_from_slice(&k[src..src + pl * d]);
                    self.v_cache[n][dst..dst + pl * d].copy_from_slice(&v[src..src + pl * d]);
                }
            }
        }
        Ok(())
    }

    /// One decoding step: `rows[i] = (slot, token)` feeds `token` at the slot's next position
    /// and leaves the row's final hidden state in row `i` of the hidden buffer.
    pub fn step(&mut self, rows: &[(usize, u32)]) -> Result<()> {
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        if n > self.slots {
            bail!("batch decoder: {n} rows for {} slots", self.slots);
        }
        let (h, nh, nkv, d, inter, cap) = (self.h, self.nh, self.nkv, self.d, self.inter, self.cap);
        let half = d / 2;
        let embed = self.held.get(self.embed);
        for (i, &(slot, tok)) in rows.iter().enumerate() {
            if slot >= self.slots || self.len[slot] >= cap || tok as usize >= self.vocab {
                bail!("batch decoder: row {i} (slot {slot}, token {tok}) is out of range");
            }
            let t = tok as usize;
            self.x[i * h..(i + 1) * h].copy_from_slice(&embed[t * h..(t + 1) * h]);
            self.pos[i] = self.len[slot];
            self.slot_of[i] = slot;
            // RoPE tables as `Decoder::rope_tables` computes them: f32 position × inv_freq.
            for f in 0..half {
                let a = self.pos[i] as f32 * self.inv_freq[f];
                self.cos[i * half + f] = a.cos();
                self.sin[i * half + f] = a.sin();
            }
        }
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        let eps = self.eps;
        let rep = nh / nkv;
        for layer in 0..self.blocks.len() {
            let b = &self.blocks[layer];
            let held = &self.held;
            rms_rows(&self.x[..n * h], held.get(b.input_norm), eps, &mut self.hb[..n * h]);
            let hb = &self.hb[..n * h];
            let bias = |p: &(usize, Option<usize>)| p.1.map(|i| held.get(i));
            linear3(
                hb,
                [(held.mat(b.q.0), bias(&b.q), nh * d, &mut self.q[..n * nh * d]), (held.mat(b.k.0), bias(&b.k), nkv * d, &mut self.k[..n * nkv * d]), (held.mat(b.v.0), bias(&b.v), nkv * d, &mut self.v[..n * nkv * d])],
                n,
                h,
                (&mut self.xp, &mut self.yt),
            )?;
            if let Some(w) = b.q_norm {
                rms_rows_in_place(&mut self.q[..n * nh * d], held.get(w), eps);
            }
            if let Some(w) = b.k_norm {
                rms_rows_in_place(&mut self.k[..n * nkv * d], held.get(w), eps);
            }
            for i in 0..n {
                let (c, s) = (&self.cos[i * half..(i + 1) * half], &self.sin[i * half..(i + 1) * half]);
                self.q[i * nh * d..(i + 1) * nh * d].chunks_exact_mut(d).for_each(|x| rope(x, c, s));
                self.k[i * nkv * d..(i + 1) * nkv * d].chunks_exact_mut(d).for_each(|x| rope(x, c, s));
                let (slot, p) = (self.slot_of[i], self.pos[i]);
                for j in 0..nkv {
                    let dst = ((slot * nkv + j) * cap + p) * d;
                    self.k_cache[layer][dst..dst + d].copy_from_slice(&self.k[(i * nkv + j) * d..(i * nkv + j + 1) * d]);
                    self.v_cache[layer][dst..dst + d].copy_from_slice(&self.v[(i * nkv + j) * d..(i * nkv + j + 1) * d]);
                }
            }
            // Attention of each row over its own keys 0..=pos: no padding, no mask.
            let (kc, vc, q) = (&self.k_cache[layer], &self.v_cache[layer], &self.q);
            let (pos, slot_of) = (&self.pos, &self.slot_of);
            self.att[..n * nh * d].par_chunks_mut(nh * d).zip(self.scores[..n * nh * cap].par_chunks_mut(nh * cap)).enumerate().for_each(|(i, (out, scores))| {
                simd::with_best_isa(|| {
                    let (slot, keys) = (slot_of[i], pos[i] + 1);
                    for j in 0..nkv {
                        let base = (slot * nkv + j) * cap * d;
                        for r in 0..rep {
                            let hh = j * rep + r;
                            let qv = &q[(i * nh + hh) * d..(i * nh + hh + 1) * d];
                            let sc = &mut scores[hh * cap..hh * cap + keys];
                            for (t, s) in sc.iter_mut().enumerate() {
                                *s = simd::dot(qv, &kc[base + t * d..base + (t + 1) * d]) * scale;
                            }
                            let max = simd::max(sc);
                            sc.iter_mut().for_each(|s| *s = simd::exp(*s - max));
                            let inv = 1.0 / simd::sum(sc);
                            let o = &mut out[hh * d..(hh + 1) * d];
                            o.fill(0.0);
                            for (t, &p) in sc.iter().enumerate() {
                                let p = p * inv;
                                o.iter_mut().zip(&vc[base + t * d..base + (t + 1) * d]).for_each(|(o, v)| *o += p * v);
                            }
                        }
                    }
                })
            });
            linear(&self.att[..n * nh * d], held.mat(b.o.0), b.o.1.map(|i| held.get(i)), n, nh * d, h, (&mut self.xp, &mut self.yt), &mut self.proj[..n * h])?;
            self.x[..n * h].iter_mut().zip(&self.proj[..n * h]).for_each(|(x, p)| *x += p);
            rms_rows(&self.x[..n * h], held.get(b.post_norm), eps, &mut self.hb[..n * h]);
            let hb = &self.hb[..n * h];
            linear3(hb, [(held.mat(b.gate), None, inter, &mut self.gate[..n * inter]), (held.mat(b.up), None, inter, &mut self.up[..n * inter]), (Wt::EMPTY, None, 0, &mut [])], n, h, (&mut self.xp, &mut self.yt))?;
            simd::with_best_isa(|| {
                self.gate[..n * inter].iter_mut().zip(&self.up[..n * inter]).for_each(|(g, u)| *g = *g / (1.0 + simd::exp(-*g)) * u)
            });
            linear(&self.gate[..n * inter], held.mat(b.down), None, n, inter, h, (&mut self.xp, &mut self.yt), &mut self.proj[..n * h])?;
            self.x[..n * h].iter_mut().zip(&self.proj[..n * h]).for_each(|(x, p)| *x += p);
        }
        for &(slot, _) in rows {
            self.len[slot] += 1;
        }
        rms_rows(&self.x[..n * h], self.held.get(self.norm), eps, &mut self.hidden[..n * h]);
        Ok(())
    }

    /// Frees a slot for the next row.
    pub fn release(&mut self, slot: usize) {
        self.len[slot] = 0;
    }

    /// The LM head over hidden rows `0..rows` at temperature `t`, fused with the softmax
    /// statistics: for each row, in order, `pick(row, view)` chooses its token from a
    /// [`RowView`] (which reads back only the logits it needs).
    pub fn head<R>(&mut self, rows: usize, t: f64, mut pick: impl FnMut(usize, &RowView) -> R) -> Vec<R> {
        let (h, vocab) = (self.h, self.vocab);
        let inv_t = (1.0 / t) as f32;
        let head = self.held.mat(self.head);
        let n_blocks = vocab.div_ceil(VOCAB_BLOCK);
        let mut out = Vec::with_capacity(rows);
        for first in (0..rows).step_by(skinny::MAX_ROWS) {
            let g = (rows - first).min(skinny::MAX_ROWS);
            let x = &self.hidden[first * h..(first + g) * h];
            let logits = &mut self.logits[..vocab * g];
            let stats = &mut self.stats[..n_blocks * g];
            let stat = |blk: usize, l: &mut [f32], st: &mut [BlockStat]| simd::with_best_isa(|| block_stats(l, g, inv_t, (blk * VOCAB_BLOCK) as u32, st));
            match head.bf16 {
                None => logits.par_chunks_mut(VOCAB_BLOCK * g).zip(head.f32.par_chunks(VOCAB_BLOCK * h)).zip(stats.par_chunks_mut(g)).enumerate().for_each(|(blk, ((l, w), st))| {
                    skinny::dots(x, w, g, h, l);
                    stat(blk, l, st);
                }),
                Some(hb) => {
                    skinny::bf16::pack_x(x, g, h, &mut self.xp);
                    let xp = &self.xp[..g * h];
                    logits.par_chunks_mut(VOCAB_BLOCK * g).zip(hb.par_chunks(VOCAB_BLOCK * h)).zip(stats.par_chunks_mut(g)).enumerate().for_each(|(blk, ((l, w), st))| {
                        skinny::bf16::dots(xp, w, g, h, l);
                        stat(blk, l, st);
                    })
                }
            }
            for r in 0..g {
                let view = RowView::new(&self.logits[..vocab * g], &self.stats[..n_blocks * g], g, r, vocab);
                out.push(pick(first + r, &view));
            }
        }
        out
    }
}

/// z = logit / T in place over one vocabulary block (laid out (rows of the block, g)), and
/// per row the block's max, first argmax, Σ e^(z−max) and Σ e^(z−max)·(z−max).
#[inline(always)]
fn block_stats(l: &mut [f32], g: usize, inv_t: f32, offset: u32, st: &mut [BlockStat]) {
    let mut max = [f32::NEG_INFINITY; skinny::MAX_ROWS];
    let mut arg = [0u32; skinny::MAX_ROWS];
    for (j, row) in l.chunks_exact_mut(g).enumerate() {
        for r in 0..g {
            let z = row[r] * inv_t;
            row[r] = z;
            if z > max[r] {
                max[r] = z;
                arg[r] = offset + j as u32;
            }
        }
    }
    let (mut sum, mut zsum) = ([0.0f32; skinny::MAX_ROWS], [0.0f32; skinny::MAX_ROWS]);
    for row in l.chunks_exact(g) {
        for r in 0..g {
            let z = row[r] - max[r];
            let e = simd::exp(z);
            sum[r] += e;
            zsum[r] += e * z;
        }
    }
    for r in 0..g {
        st[r] = BlockStat { max: max[r], sum: sum[r], zsum: zsum[r], arg: arg[r] };
    }
}

/// One row's distribution softmax(z) over the vocabulary, from the head's block statistics
/// (combined in f64) and its scaled logits, which stay where the head wrote them.
pub struct RowView<'b> {
    /// (V, g): z of vocabulary j for row r at `j·g + r`.
    logits: &'b [f32],
    stats: &'b [BlockStat],
    g: usize,
    r: usize,
    vocab: usize,
    max: f64,
    /// Σ e^(z − max) and Σ e^(z − max)·(z − max) over the vocabulary.
    sum: f64,
    zsum: f64,
}

impl<'b> RowView<'b> {
    fn new(logits: &'b [f32], stats: &'b [BlockStat], g: usize, r: usize, vocab: usize) -> RowView<'b> {
        let mut view = RowView { logits, stats, g, r, vocab, max: 0.0, sum: 0.0, zsum: 0.0 };
        let max = (0..view.blocks()).map(|b| view.stat(b).max).fold(f32::NEG_INFINITY, f32::max) as f64;
        let (mut sum, mut zsum) = (0.0f64, 0.0f64);
        for b in 0..view.blocks() {
            let s = view.stat(b);
            let shift = s.max as f64 - max;
            let w = shift.exp();
            sum += s.sum as f64 * w;
            zsum += (s.zsum as f64 + shift * s.sum as f64) * w;
        }
        view.max = max;
        view.sum = sum;
        view.zsum = zsum;
        view
    }

    fn blocks(&self) -> usize {
        self.stats.len() / self.g
    }

    fn stat(&self, block: usize) -> BlockStat {
        self.stats[block * self.g + self.r]
    }

    fn z(&self, token: usize) -> f32 {
        self.logits[token * self.g + self.r]
    }

    /// e^(z − max) of one token.
    fn weight(&self, token: usize) -> f64 {
        (self.z(token) as f64 - self.max).exp()
    }

    /// log softmax(z)[token].
    pub fn logp(&self, token: usize) -> f64 {
        self.z(token) as f64 - self.max - self.sum.ln()
    }

    /// Entropy of softmax(z).
    pub fn entropy(&self) -> f64 {
        self.sum.ln() - self.zsum / self.sum
    }

    /// First index of the largest z not in `exclude`.
    pub fn argmax(&self, exclude: &[u32]) -> usize {
        let mut best = self.stat(0);
        for b in 1..self.blocks() {
            let s = self.stat(b);
            if s.max > best.max {
                best = s;
            }
        }
        if !exclude.contains(&best.arg) {
            return best.arg as usize;
        }
        // The largest is excluded (greedy with min_new_tokens): a full scan.
        let mut pick: Option<usize> = None;
        for j in 0..self.vocab {
            if !exclude.contains(&(j as u32)) && pick.is_none_or(|p| self.z(j) > self.z(p)) {
                pick = Some(j);
            }
        }
        pick.unwrap_or(best.arg as usize)
    }

    /// Inverse-CDF draw with `u` uniform in [0, 1) over the tokens in id order, `exclude`
    /// removed and the rest renormalised (what `generate`'s full-distribution sampler does):
    /// the block sums find the block the draw lands in, and only that block is read back.
    pub fn sample(&self, u: f64, exclude: &[u32]) -> usize {
        let excluded_in = |block: Option<usize>| -> f64 {
            exclude.iter().map(|&e| e as usize).filter(|&e| e < self.vocab && block.is_none_or(|b| e / VOCAB_BLOCK == b)).map(|e| self.weight(e)).sum()
        };
        let mut target = u * (self.sum - excluded_in(None));
        for b in 0..self.blocks() {
            let s = self.stat(b);
            let mut mass = s.sum as f64 * (s.max as f64 - self.max).exp();
            if !exclude.is_empty() {
                mass -= excluded_in(Some(b));
            }
            if target < mass {
                let mut last = None;
                for j in b * VOCAB_BLOCK..((b + 1) * VOCAB_BLOCK).min(self.vocab) {
                    if exclude.contains(&(j as u32)) {
                        continue;
                    }
                    target -= self.weight(j);
                    last = Some(j);
                    if target < 0.0 {
                        return j;
                    }
                }
                // Rounding between the block sum and the walk: the draw is at the block's end.
                if let Some(j) = last {
                    return j;
                }
            }
            target -= mass;
        }
        // Rounding left the draw past the last token: it is the last one allowed.
        (0..self.vocab).rev().find(|j| !exclude.contains(&(*j as u32))).unwrap_or(0)
    }

    /// The row's z over the whole vocabulary (for top-k / top-p, which need them sorted).
    pub fn gather(&self, out: &mut Vec<f32>) {
        out.clear();
        out.extend((0..self.vocab).map(|j| self.z(j)));
    }
}

/// A matrix as the products read it: the f32 weights and, with `rollout_dtype = "bf16"`,
/// their bf16 copy (which the products then read instead).
#[derive(Clone, Copy)]
struct Wt<'b> {
    f32: &'b [f32],
    bf16: Option<&'b [u16]>,
}

impl Wt<'_> {
    /// The unused third slot of [`linear3`].
    const EMPTY: Wt<'static> = Wt { f32: &[], bf16: None };
}

/// Scratch of the products: (x packed for the bf16 kernel, the transposed output).
type Scratch<'s> = (&'s mut Vec<f32>, &'s mut Vec<f32>);

/// `y = x · wᵀ (+ b)` for `rows` rows into `y`: the skinny kernel for up to 16 rows (bound by
/// reading W once), gemm above; bf16 weights always go through the skinny bf16 kernel, 16
/// rows at a time.
#[allow(clippy::too_many_arguments)]
fn linear(x: &[f32], w: Wt<'_>, b: Option<&[f32]>, rows: usize, in_dim: usize, out_dim: usize, (xp, yt): Scratch<'_>, y: &mut [f32]) -> Result<()> {
    if let Some(wb) = w.bf16 {
        for first in (0..rows).step_by(skinny::MAX_ROWS) {
            let g = (rows - first).min(skinny::MAX_ROWS);
            skinny::bf16::matmul_wt_into(&x[first * in_dim..(first + g) * in_dim], wb, g, in_dim, out_dim, xp, yt, &mut y[first * out_dim..(first + g) * out_dim]);
        }
    } else if rows <= skinny::MAX_ROWS {
        skinny::matmul_wt_into(x, w.f32, rows, in_dim, out_dim, yt, y);
    } else {
        let lhs = MatRef { data: x, rows, cols: in_dim, row_stride: in_dim, col_stride: 1 };
        let rhs = MatRef { data: w.f32, rows: in_dim, cols: out_dim, row_stride: 1, col_stride: in_dim };
        sgemm(y, &lhs, &rhs, false)?;
    }
    if let Some(b) = b {
        y.chunks_exact_mut(out_dim).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
    }
    Ok(())
}

/// A projection for [`linear3`]: (weight (out, in), bias, out, y).
type Proj<'p> = (Wt<'p>, Option<&'p [f32]>, usize, &'p mut [f32]);

/// Up to three projections of the same `x` (an unused one has out 0): one parallel pass of
/// the skinny kernel for up to 16 rows, [`linear`] per projection above. (The three are
/// either all bf16 or all f32: the decoder converts every projection or none.)
fn linear3(x: &[f32], ps: [Proj<'_>; 3], rows: usize, in_dim: usize, (xp, yt): Scratch<'_>) -> Result<()> {
    let [(w0, b0, o0, y0), (w1, b1, o1, y1), (w2, b2, o2, y2)] = ps;
    if rows > skinny::MAX_ROWS {
        for (w, b, o, y) in [(w0, b0, o0, y0), (w1, b1, o1, y1), (w2, b2, o2, y2)] {
            if o > 0 {
                linear(x, w, b, rows, in_dim, o, (&mut *xp, &mut *yt), y)?;
            }
        }
        return Ok(());
    }
    match (w0.bf16, w1.bf16, w2.bf16.or(if o2 == 0 { Some(&[]) } else { None })) {
        (Some(a), Some(b), Some(c)) => skinny::bf16::matmul_wt3(x, [a, b, c], [o0, o1, o2], rows, in_dim, xp, yt, [&mut *y0, &mut *y1, &mut *y2]),
        _ => skinny::matmul_wt3(skinny::Kernel::Best, x, [w0.f32, w1.f32, w2.f32], [o0, o1, o2], rows, in_dim, yt, [&mut *y0, &mut *y1, &mut *y2]),
    }
    for (b, o, y) in [(b0, o0, y0), (b1, o1, y1), (b2, o2, y2)] {
        if let Some(b) = b {
            y.chunks_exact_mut(o).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
        }
    }
    Ok(())
}

/// RMSNorm of each row of `x` (rows of `w.len()`) into `out`.
fn rms_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ms = simd::dot(xr, xr) / n as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        or.iter_mut().zip(xr).zip(w).for_each(|((o, &x), &w)| *o = x * inv * w);
    }
}

/// [`rms_rows`] in place (qwen3's per-head norm of q and k).
fn rms_rows_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for xr in x.chunks_exact_mut(n) {
        let inv = 1.0 / (simd::dot(xr, xr) / n as f32 + eps).sqrt();
        xr.iter_mut().zip(w).for_each(|(x, &w)| *x = *x * inv * w);
    }
}

/// Rotates the (first half, second half) pairs of one head (the transformers convention).
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (a, b) = x.split_at_mut(half);
    for f in 0..half {
        let (x1, x2) = (a[f], b[f]);
        a[f] = x1 * cos[f] - x2 * sin[f];
        b[f] = x2 * cos[f] + x1 * sin[f];
    }
}
