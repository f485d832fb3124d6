//! Gradient checkpointing of a vision tower's blocks (`[stage.vision] checkpoint_tower`), and
//! the frozen tower's graph-free forward.
//!
//! candle's autograd keeps every op's inputs alive through the output tensor, so a trained
//! tower holds all its blocks' activations (about 28 width-sized and 6 MLP-sized tensors per
//! patch and block, plus every head's n × n scores) until backward. Checkpointing keeps only
//! each block's input: the forward cuts the graph after every block ([`Tensor::detach`]) and
//! hands the tower's output to the projector as a fresh leaf [`Var`]; after `loss.backward()`
//! has given that leaf its gradient g, [`Checkpoints::backward`] walks the blocks from the
//! last, recomputes block i from its saved input (as a leaf), and back-propagates
//! `sum(block_i(x) · g)`, whose gradient is the vector-Jacobian product: the weights' share is
//! added to the step's gradients and the input's becomes the g of block i − 1. The recompute
//! runs the same ops on the same values, so the gradients equal the whole graph's up to the
//! order of float additions. The price is one more forward of the tower per step.
//!
//! A frozen tower ([`TowerMode::Frozen`]) takes the same cuts with nothing saved, so nothing
//! outlives a block and its weights get no gradient.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::sync::Mutex;

/// What a tower's forward keeps for backward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TowerMode {
    /// The whole graph: every block's activations until backward (the default).
    #[default]
    Graph,
    /// No gradient reaches the tower: the graph is cut after every block.
    Frozen,
    /// Only each block's input is kept; [`Checkpoints::backward`] recomputes the blocks.
    Checkpoint,
}

/// A tower as an embedding followed by blocks, for [`Checkpoints`].
pub trait Blocks {
    /// What the blocks need besides their input (rotary tables, image lengths, masks), made
    /// once per forward, with no gradient.
    type Aux;
    /// The embedded patches (the blocks' first input) from the pixel rows.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor>;
    fn block(&self, i: usize, x: &Tensor, aux: &Self::Aux) -> Result<Tensor>;
    fn depth(&self) -> usize;
    /// The parameters of the embedding and the blocks.
    fn weights(&self) -> Vec<Tensor>;
}

/// One checkpointed forward: what backward recomputes from.
struct Tape<A> {
    pixels: Tensor,
    /// The input of every block, cut from the graph.
    inputs: Vec<Tensor>,
    aux: A,
    /// The leaf the projector read; backward finds its gradient in the step's store.
    out: Var,
}

/// A tower's mode and the tapes of its checkpointed forwards since the last backward.
pub struct Checkpoints<A> {
    mode: Mutex<TowerMode>,
    tapes: Mutex<Vec<Tape<A>>>,
}

impl<A> Default for Checkpoints<A> {
    fn default() -> Self {
        Checkpoints { mode: Mutex::new(TowerMode::Graph), tapes: Mutex::new(Vec::new()) }
    }
}

impl<A> std::fmt::Debug for Checkpoints<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoints({:?})", self.mode())
    }
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("the tower's checkpoint lock was poisoned".into())
}

impl<A> Checkpoints<A> {
    pub fn mode(&self) -> TowerMode {
        self.mode.lock().map(|m| *m).unwrap_or_default()
    }

    /// Sets the mode; tapes of an earlier checkpointed forward that no backward consumed are
    /// dropped (an evaluation pass between steps must not hold them).
    pub fn set_mode(&self, mode: TowerMode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
        if let Ok(mut t) = self.tapes.lock() {
            t.clear();
        }
    }

    /// The tower's output (the last block's) for `pixels`, kept for backward per the mode.
    pub fn run<T: Blocks<Aux = A>>(&self, tower: &T, pixels: &Tensor, aux: A) -> Result<Tensor> {
        let mode = self.mode();
        let cut = |x: Tensor| if mode == TowerMode::Graph { x } else { x.detach() };
        let mut x = cut(tower.embed(pixels)?);
        let mut inputs = Vec::new();
        for i in 0..tower.depth() {
            if mode == TowerMode::Checkpoint {
                inputs.push(x.clone());
            }
            x = cut(tower.block(i, &x, &aux)?);
        }
        if mode != TowerMode::Checkpoint {
            return Ok(x);
        }
        let out = Var::from_tensor(&x)?;
        let leaf = out.as_tensor().clone();
        self.tapes.lock().map_err(|_| poisoned())?.push(Tape { pixels: pixels.detach(), inputs, aux, out });
        Ok(leaf)
    }

    /// After `loss.backward()` gave `grads`: adds the tower weights' gradients of every
    /// checkpointed forward since the last call, recomputing one block at a time. Nothing
    /// happens in the other modes (no tapes).
    pub fn backward<T: Blocks<Aux = A>>(&self, tower: &T, grads: &mut GradStore) -> Result<()> {
        let tapes = std::mem::take(&mut *self.tapes.lock().map_err(|_| poisoned())?);
        let weights = tower.weights();
        for tape in tapes {
            // No gradient reached the features (no image token was a target's input).
            let Some(mut g) = grads.remove(tape.out.as_tensor()) else { continue };
            for i in (0..tape.inputs.len()).rev() {
                let x = Var::from_tensor(&tape.inputs[i])?;
                let local = (tower.block(i, x.as_tensor(), &tape.aux)? * &g)?.sum_all()?.backward()?;
                add_weight_grads(grads, &local, &weights)?;
                g = local.get(x.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg(format!("tower block {i}: no gradient reached its input")))?;
            }
            let local = (tower.embed(&tape.pixels)? * &g)?.sum_all()?.backward()?;
            add_weight_grads(grads, &local, &weights)?;
        }
        Ok(())
    }
}

/// Adds `local`'s gradients of `weights` into `grads`.
fn add_weight_grads(grads: &mut GradStore, local: &GradStore, weights: &[Tensor]) -> Result<()> {
    for w in weights {
        if let Some(gw) = local.get(w) {
            let sum = match grads.get(w) {
                Some(prev) => (prev + gw)?,
                None => gw.clone(),
            };
            grads.insert(w, sum);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::llava::Llava;
    use super::super::{tiny, tiny_llava, Qwen2Vl, VisionLanguageModel};
    use super::*;
    use crate::model::Mode;
    use candle_core::Device;

    /// A 60×44 RGB PNG of smooth colour ramps (resized by both processors).
    fn png(dir: &std::path::Path) -> std::path::PathBuf {
        let img = image::RgbImage::from_fn(60, 44, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8]));
        let path = dir.join("ramp.png");
        img.save(&path).unwrap();
        path
    }

    /// Every trainable parameter's gradient of a fixed weighting of the logits, after the
    /// tower's own backward (a no-op unless checkpointing).
    fn grads(model: &dyn VisionLanguageModel, ids: &[u32], path: &std::path::Path, mode: TowerMode) -> Vec<(String, Option<Vec<f32>>)> {
        model.set_tower_mode(mode);
        let image = model.load_image(path).unwrap();
        let inputs = model.inputs(&[ids.to_vec()], &[vec![image.clone(), image]], 0).unwrap();
        let logits = model.logits(&inputs, Mode::Train).unwrap();
        let n = logits.elem_count();
        let weights: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
        let weights = Tensor::from_vec(weights, logits.dims(), logits.device()).unwrap();
        let loss = (logits * weights).unwrap().sum_all().unwrap();
        let mut store = loss.backward().unwrap();
        model.tower_backward(&mut store).unwrap();
        model.vars().into_iter().map(|(name, v)| (name, store.get(v.as_tensor()).map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap()))).collect()
    }

    /// The checkpointed gradients equal the whole graph's; a frozen tower gets none and leaves
    /// the projector's and LLM's unchanged. Two images per row, so attention runs per image.
    fn check(model: &dyn VisionLanguageModel, ids: &[u32], is_tower: fn(&str) -> bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = png(dir.path());
        let whole = grads(model, ids, &path, TowerMode::Graph);
        let ckpt = grads(model, ids, &path, TowerMode::Checkpoint);
        let frozen = grads(model, ids, &path, TowerMode::Frozen);
        let mut tower_seen = 0;
        for ((name, a), ((_, b), (_, f))) in whole.iter().zip(ckpt.iter().zip(&frozen)) {
            let (a, b) = (a.as_ref().unwrap_or_else(|| panic!("{name}: no gradient in the whole graph")), b.as_ref().unwrap_or_else(|| panic!("{name}: no checkpointed gradient")));
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff <= 1e-5 * scale.max(1e-3), "{name}: max |Δgrad| {diff:e} of max |grad| {scale:e}");
            if is_tower(name) {
                assert!(scale > 0.0, "{name}: a zero gradient proves nothing");
                assert!(f.is_none(), "{name}: a frozen tower got a gradient");
                tower_seen += 1;
            } else {
                let f = f.as_ref().unwrap_or_else(|| panic!("{name}: no gradient with the tower frozen"));
                let diff = a.iter().zip(f).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(diff <= 1e-5 * scale.max(1e-3), "{name}: frozen tower changed the gradient by {diff:e}");
            }
        }
        assert!(tower_seen >= 12, "only {tower_seen} tower parameters checked");
    }

    #[test]
    fn qwen2_vl_checkpointed_tower_gradients_equal_the_whole_graph() {
        let model = Qwen2Vl::init_random(tiny::config().unwrap(), tiny::processor(), 3, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tokens = model.image_tokens(&model.load_image(&png(dir.path())).unwrap());
        let c = &model.config;
        let image: Vec<u32> = [c.vision_start_token_id].into_iter().chain(std::iter::repeat_n(c.image_token_id, tokens)).chain([c.vision_end_token_id]).collect();
        let ids: Vec<u32> = [5, 6].into_iter().chain(image.clone()).chain([7]).chain(image).chain([8, 9, 10]).collect();
        check(&model, &ids, |n| n.starts_with("visual.") && !n.starts_with("visual.merger."));
    }

    #[test]
    fn llava_checkpointed_tower_gradients_equal_the_whole_graph() {
        let model = Llava::init_random(tiny_llava::config().unwrap(), tiny_llava::processor(), 3, &Device::Cpu).unwrap();
        let image = vec![model.config.image_token_id; model.config.image_tokens()];
        let ids: Vec<u32> = [5, 6].into_iter().chain(image.clone()).chain([7]).chain(image).chain([8, 9, 10]).collect();
        check(&model, &ids, |n| n.starts_with("vision_tower."));
    }
}
