//! Training stages and what they share.
//!
//! - `scaffold` — the trainer scaffold every training stage uses: controls between steps,
//!   checkpoints and resume, the non-finite stop, progress, the atomic final model folder;
//! - `sft` — supervised fine-tuning (full or LoRA); `sft_vision` — the same on a
//!   vision-language model (multimodal chat rows, per-part learning rates);
//! - `rl` — RL with verifiable rewards (GRPO, PPO, FlowRL; see `rl/mod.rs` for its map);
//! - `denoise` — diffusion fine-tuning of an encoder (and its MLM pre-training);
//! - `checkpoint`, `optim` (AdamW), `schedule` (learning rates), `data` (SFT examples).

pub mod rl;
pub mod optim;
pub mod schedule;
pub mod checkpoint;
pub mod data;
pub mod scaffold;
pub mod sft;
pub mod sft_vision;
pub mod denoise;
