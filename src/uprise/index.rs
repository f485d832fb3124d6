//! The prompt index and inference-time prompt assembly (research/synth-spec.md §6.5).
//!
//! - [`Index`]: the pool's prompt embeddings (n × d, f32) and their pool ids, saved as one
//!   safetensors file (`embeddings`, `ids`), searched by an exact flat scan for the top-K
//!   inner products (the reference's FAISS `IndexFlatIP`);
//! - [`budget_keep`]: how many of the ranked prompts fit the token budget, capped at K;
//! - [`assemble`]: `p_K ⊕ … ⊕ p_1 ⊕ x` joined with `" \n "`, the most similar prompt last.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Prompt embeddings and the pool ids they belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Index {
    pub dim: usize,
    /// Row-major n × dim.
    pub embeddings: Vec<f32>,
    pub ids: Vec<u32>,
}

impl Index {
    pub fn new(rows: Vec<Vec<f32>>, ids: Vec<u32>) -> Result<Index> {
        let dim = rows.first().map_or(0, Vec::len);
        if rows.len() != ids.len() {
            bail!("{} embeddings for {} ids", rows.len(), ids.len());
        }
        if rows.iter().any(|r| r.len() != dim) {
            bail!("embeddings of different widths");
        }
        Ok(Index { dim, embeddings: rows.concat(), ids })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `k` rows of largest inner product with `query`, best first, as (row, score); ties
    /// go to the lower row. One pass over the rows keeping a sorted list of the best k, so it
    /// is O(n·d + n·k) with no allocation per row.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        assert_eq!(query.len(), self.dim, "query width");
        let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        if k == 0 {
            return best;
        }
        for (row, emb) in self.embeddings.chunks_exact(self.dim.max(1)).enumerate() {
            let s: f32 = emb.iter().zip(query).map(|(a, b)| a * b).sum();
            if best.len() == k && s <= best[k - 1].1 {
                continue;
            }
            // Insert after every entry with score ≥ s: equal scores keep the lower row first.
            let at = best.partition_point(|&(_, b)| b >= s);
            best.insert(at, (row, s));
            best.truncate(k);
        }
        best
    }

    /// Writes `embeddings` (n × d f32) and `ids` (n u32) as safetensors, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let emb = Tensor::from_vec(self.embeddings.clone(), (n, self.dim), &Device::Cpu)?;
        let ids = Tensor::from_vec(self.ids.clone(), n, &Device::Cpu)?;
        let tensors: HashMap<String, Tensor> = [("embeddings".to_string(), emb), ("ids".to_string(), ids)].into();
        crate::fsutil::write_atomic_with(path, |tmp| -> Result<()> { Ok(candle_core::safetensors::save(&tensors, tmp)?) })
            .with_context(|| format!("cannot write the index {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Index> {
        if !path.is_file() {
            bail!("{}: no index file (a `retrieve` stage writes index.safetensors in its retriever/ folder)", path.display());
        }
        // A file cut short or overwritten fails here; the only repair is to write it again.
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("cannot read the index {} (damaged or not a safetensors file; a `retrieve` stage writes it: run its profile again)", path.display()))?;
        let (Some(emb), Some(ids)) = (t.get("embeddings"), t.get("ids")) else {
            bail!("{}: not a prompt index (it needs the tensors `embeddings` and `ids`, as `retrieve` writes)", path.display());
        };
        let (n, dim) = emb.dims2().with_context(|| format!("{}: `embeddings` must be n × d", path.display()))?;
        let ids = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if ids.len() != n {
            bail!("{}: {} ids for {n} embeddings", path.display(), ids.len());
        }
        Ok(Index { dim, embeddings: emb.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?, ids })
    }
}

/// How many of the ranked prompts (token lengths `lens`, most similar first) to keep: the
/// largest prefix whose summed length fits `n_tokens − (max_q_len + max_a_len)`, then at most
/// `k` (§6.5 step 3).
pub fn budget_keep(lens: &[usize], k: usize, n_tokens: usize, max_q_len: usize, max_a_len: usize) -> usize {
    let budget = n_tokens.saturating_sub(max_q_len + max_a_len);
    let mut used = 0usize;
    let mut keep = 0usize;
    for &l in lens {
        if used + l > budget {
            break;
        }
        used += l;
        keep += 1;
    }
    keep.min(k)
}

/// The scoring input: the prompts (most similar first) reversed so the most similar sits
/// next to the input, then the input, joined with `" \n "`.
pub fn assemble(prompts_best_first: &[&str], input: &str) -> String {
    let mut parts: Vec<&str> = prompts_best_first.iter().rev().copied().collect();
    parts.push(input);
    parts.join(" \n ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn top_k_equals_a_brute_force_sort() {
        let mut rng = Rng::new(3);
        for (n, d, k) in [(500, 16, 5), (50, 3, 50), (7, 4, 10), (300, 32, 1)] {
            let rows: Vec<Vec<f32>> = (0..n).map(|_| (0..d).map(|_| rng.normal() as f32).collect()).collect();
            let index = Index::new(rows.clone(), (0..n as u32).collect()).unwrap();
            for _ in 0..5 {
                let q: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
                let mut all: Vec<(usize, f32)> = rows.iter().enumerate().map(|(i, r)| (i, r.iter().zip(&q).map(|(a, b)| a * b).sum())).collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                all.truncate(k);
                assert_eq!(index.top_k(&q, k), all, "n {n} d {d} k {k}");
            }
        }
        // Ties go to the lower row.
        let index = Index::new(vec![vec![1.0], vec![2.0], vec![2.0], vec![1.0]], vec![9, 8, 7, 6]).unwrap();
        assert_eq!(index.top_k(&[1.0], 3), vec![(1, 2.0), (2, 2.0), (0, 1.0)]);
    }

    #[test]
    fn the_index_round_trips_through_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(vec![vec![0.5, -1.0], vec![3.0, 2.0], vec![0.0, 1.5]], vec![4, 0, 2]).unwrap();
        let p = dir.path().join("index.safetensors");
        index.save(&p).unwrap();
        assert_eq!(Index::load(&p).unwrap(), index);
        std::fs::write(&p, b"junk").unwrap();
        assert!(Index::load(&p).is_err());
    }

    #[test]
    fn the_budget_keeps_the_largest_fitting_prefix_capped_at_k() {
        // Budget 1024 − (300 + 24) = 700.
        assert_eq!(budget_keep(&[200, 300, 150, 10], 3, 1024, 300, 24), 3, "650 fits; K caps at 3");
        assert_eq!(budget_keep(&[200, 300, 250, 10], 3, 1024, 300, 24), 2, "750 does not fit: the prefix stops at 500");
        assert_eq!(budget_keep(&[200, 300, 250, 10], 9, 1024, 300, 24), 2, "a prefix: the short fourth prompt is not taken");
        assert_eq!(budget_keep(&[701], 3, 1024, 300, 24), 0);
        assert_eq!(budget_keep(&[700], 3, 1024, 300, 24), 1, "exactly the budget fits");
        assert_eq!(budget_keep(&[1, 1], 3, 10, 8, 8), 0, "no budget left");
    }

    #[test]
    fn the_most_similar_prompt_sits_next_to_the_input() {
        assert_eq!(assemble(&["best", "second", "third"], "x?"), "third \n second \n best \n x?");
        assert_eq!(assemble(&[], "x?"), "x?");
    }
}
