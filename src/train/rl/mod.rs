//! RL maths shared by GRPO, PPO, REINFORCE++, FlowRL and the exploration shapings
//! (research/rl-spec.md §0–§6). `advantage` works on plain Rust data; `loss` on candle
//! tensors so that gradients flow.

pub mod advantage;
pub mod format;
pub mod loss;
pub mod stage;
