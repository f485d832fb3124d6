//! What one optimizer step works on: the rows of a mini-batch split into micro-batches, and
//! what the update reads besides the step's data. Shared by the learner (the loop) and the
//! algorithms (their losses and PPO's critic), so that neither has to import the other.

use crate::model::Model;
use crate::train::rl::advantage::Mat;
use crate::train::rl::config::RlStage;
use crate::train::scaffold::Scaffold;
use candle_core::Device;
use std::ops::Range;

/// The rows of one optimizer step, split into micro-batches.
pub struct MiniBatch {
    pub rows: Range<usize>,
    pub micro: Vec<Range<usize>>,
    /// Valid response tokens in `rows`.
    pub tokens: f64,
}

impl MiniBatch {
    pub fn new(mask: &Mat, rows: Range<usize>, micro_batch: usize) -> MiniBatch {
        let micro = rows.clone().step_by(micro_batch).map(|s| s..(s + micro_batch).min(rows.end)).collect();
        MiniBatch { tokens: MiniBatch::tokens(mask, &rows), rows, micro }
    }

    /// Valid response tokens of `rows`.
    pub fn tokens(mask: &Mat, rows: &Range<usize>) -> f64 {
        mask.data[rows.start * mask.cols..rows.end * mask.cols].iter().map(|&x| x as f64).sum()
    }
}

/// What the update reads besides the step's data.
pub struct Learner<'a> {
    pub cfg: &'a RlStage,
    pub policy: &'a Model,
    pub pad: u32,
    pub device: &'a Device,
    /// For the non-finite stop.
    pub scaffold: &'a Scaffold,
}

