//! Training algorithms. `rl` holds the pure RL maths (advantages and losses).

pub mod rl;
pub mod optim;
pub mod schedule;
pub mod checkpoint;
pub mod data;
pub mod sft;
