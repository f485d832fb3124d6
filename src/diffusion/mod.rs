//! Diffusion fine-tuning of an encoder and reconstruction-based OOD scoring: the method of
//! "How Does Diffusion Influence Pretrained Language Models on Out-of-Distribution Data?"
//! (research/synth-spec.md §5). Read in this order:
//!
//! - [`schedule`]: the linear β schedule (T = 1000, 1e-4 … 0.02), forward noising, the
//!   sinusoidal timestep embedding (§5.2);
//! - [`loss`]: the denoiser (x₀ = embedding layer output, x̂₀ = encoder(x_t + temb(t))) and
//!   L_mse + L_T + L_round (§5.3), with the reference code's padding behind a flag;
//! - [`score`]: batched OOD scoring of texts at a fixed t (L_round per text, one seeded
//!   noise draw each) and the Mahalanobis features (§5.4);
//! - [`detect`]: ID and OOD sets → scores at each t → AUROC / FPR95 per pair and a score dump.
//!
//! The metrics (AUROC, FPR95, Mahalanobis distance) are in [`crate::metrics::ood`]; the training
//! stage is [`crate::train::denoise`]; the command is `retort ood` ([`crate::cli::ood`]).

pub mod detect;
pub mod loss;
pub mod schedule;
pub mod score;

pub use loss::{DenoiseBatch, Padding};
pub use schedule::{timestep_embedding, NoiseSchedule};
