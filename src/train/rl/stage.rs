//! Stage `kind = "rl"`: RL with verifiable rewards — GRPO, PPO and FlowRL, with the
//! exploration shapings of the seed papers (research/rl-spec.md §1–§7).
//!
//! One iteration (rl-spec §1): rollout (the batched sampler, `prompts_per_step × group_size`
//! responses) → reward (the task's verifier, score at the last valid token, optional DAPO
//! overlong penalty) → old log-probs and entropies (the sampler's own), reference log-probs and
//! critic values (`Mode::Infer`, the sampling temperature) → advantages (+ shapings) →
//! `ppo_epochs` passes over mini-batches of `mini_batch` prompts, each one AdamW step with
//! clipping by global norm.
//!
//! Determinism: the prompts of step s and the sampling stream of step s are pure functions
//! of (seed, s), so a run resumed from a checkpoint (policy, Z head, critic, optimizer
//! moments, step) continues bit-identically on the CPU.
//!
//! ```toml
//! [[stage]]
//! kind = "rl"
//! name = "grpo"
//! model = "@sft"
//! from = "@data"           # a tasks stage: train.jsonl for rollouts, test.jsonl for evals
//! algorithm = "grpo"       # or "ppo", "flowrl"
//! prompts_per_step = 16
//! group_size = 8
//! lr = 2e-4
//! steps = 40
//! ```

mod batch;
mod critic;

use crate::bus::Event;
use crate::generate::grade::{sample_and_grade, GradeOptions, Seeds};
use crate::generate::{generate, Completion, FinishReason, SamplingParams};
use crate::metrics::{diversity, passk, Sample};
use crate::model::{Mode, Model};
use crate::stage::{refs, table_of, Artifact, Interrupted, Reference, StageConfig, StageCtx, StageOutput};
use crate::tasks::problems::{encode_prompt, ProblemSet, TooLong};
use crate::tasks::source::{self, ProblemSource};
use crate::tasks::Verdict;
use crate::text::Tokenizer;
use crate::train::checkpoint::{self, Checkpoints};
use crate::train::optim::{AdamW, AdamWConfig, Param};
use crate::train::rl::advantage::{self as adv, AdvantageEstimator, Mat, StepWindow};
use crate::train::rl::format::FormatReward;
use crate::train::rl::loss::{self, IsMode, KlEstimator, LossAgg, PpoClip, ZHead};
use crate::train::schedule::{Decay, Schedule};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use critic::Critic;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The policy-optimisation family: which loss, and which advantage by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// PPO-clip loss (§2.1) on the group-normalised advantage (§0.3).
    Grpo,
    /// PPO-clip loss on GAE advantages from a separate critic (§3.1–§3.2).
    Ppo,
    /// FlowRL trajectory-balance loss with a learned log Z (§4).
    Flowrl,
}

/// verl's `loss_agg_mode` names (§0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggName {
    #[serde(rename = "token-mean")]
    TokenMean,
    #[serde(rename = "seq-mean-token-sum")]
    SeqMeanTokenSum,
    #[serde(rename = "seq-mean-token-mean")]
    SeqMeanTokenMean,
    /// Dr. GRPO: token sums divided by the constant `max_new_tokens`.
    #[serde(rename = "seq-mean-token-sum-norm")]
    SeqMeanTokenSumNorm,
}

/// Entropy-based advantage ψ(H) = min(α·sg(H), |A|/κ) (§5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyAdv {
    pub alpha: f32,
    #[serde(default = "d_kappa")]
    pub kappa: f32,
}

/// PPL-based shaping `A·clamp(1 − α·z, 0.8, 1.2)` (§6.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PplShaping {
    pub alpha: f32,
}

/// Position-based bonus toward the end of a response (§6.4), optionally only in a window
/// of steps (the RUC trainer hard-codes 200 < step < 300).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionShaping {
    pub alpha: f32,
    #[serde(default = "d_steepness")]
    pub steepness: f32,
    #[serde(default = "d_cap")]
    pub cap: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<StepWindow>,
}

/// STILL-3 cosine annealing of the KL-loss coefficient (§7.1); replaces `kl_coef`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlAnneal {
    #[serde(default = "d_kl_start")]
    pub start: f64,
    #[serde(default)]
    pub min: f64,
    #[serde(default = "d_kl_horizon")]
    pub horizon: u64,
}

/// DAPO overlong penalty (§2.2): `min(−(len − (L − buffer))/buffer · penalty, 0)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlong {
    pub buffer: usize,
    #[serde(default = "d_one")]
    pub penalty: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlStage {
    /// The starting policy: a model folder or `@stage`.
    pub model: String,
    /// The frozen reference for KL and FlowRL (default: the starting policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The problems (keys shared with the sft and eval stages, see [`crate::tasks::source`]):
    /// `from` (a tasks stage: rollouts from train.jsonl, quick evals on test.jsonl), `task`
    /// (+ `options`, `train_problems`, `test_problems`, generated from the run's seed) or
    /// `jsonl` (`{"prompt", "answer"}` math or `{"prompt", "tests"}` code problems scored by
    /// `verifier`; `test_jsonl` holds the quick-eval problems). `chat` renders prompts through
    /// the tokenizer's chat template as one user turn (HF chat models).
    #[serde(flatten, skip_deserializing)]
    pub source: ProblemSource,
    /// A problem whose prompt + max_new_tokens exceeds the model's context: "error" (the
    /// stage refuses before any rollout) or "skip" (left out, counted in the log).
    #[serde(default)]
    pub too_long: TooLong,

    #[serde(default = "d_algorithm")]
    pub algorithm: Algorithm,
    /// Override the advantage estimator, e.g. `{ kind = "rloo" }` or `{ kind = "pass_at_k", k = 4 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage: Option<AdvantageEstimator>,
    /// Dr. GRPO: no std normalisation, and `seq-mean-token-sum-norm` unless `loss_agg` is set.
    #[serde(default)]
    pub dr_grpo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_agg: Option<AggName>,
    #[serde(default = "d_clip")]
    pub clip_low: f64,
    #[serde(default = "d_clip")]
    pub clip_high: f64,
    /// Dual-clip constant c > 1 for negative advantages; 0 turns it off.
    #[serde(default = "d_dual_clip")]
    pub dual_clip: f64,
    #[serde(default = "d_kl_estimator")]
    pub kl_estimator: KlEstimator,
    /// KL coefficient: in the loss, or in the reward with `kl_in_reward = true`.
    #[serde(default)]
    pub kl_coef: f64,
    #[serde(default)]
    pub kl_in_reward: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_anneal: Option<KlAnneal>,
    #[serde(default)]
    pub entropy_coeff: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_adv: Option<EntropyAdv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppl_shaping: Option<PplShaping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_shaping: Option<PositionShaping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlong: Option<Overlong>,
    /// A format rule folded into the score: `{ kind = "think_answer" }` (STILL-Zero) or
    /// `{ kind = "boxed", correct = 1, wrong = -1, missing = -2 }` (STILL-3-1.5B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_reward: Option<FormatReward>,

    #[serde(default = "d_prompts")]
    pub prompts_per_step: usize,
    #[serde(default = "d_group")]
    pub group_size: usize,
    /// Prompts per optimizer step (default: all of them, i.e. on-policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_batch: Option<usize>,
    /// Responses per forward/backward (gradient accumulation inside a mini-batch).
    #[serde(default = "d_micro")]
    pub micro_batch: usize,
    #[serde(default = "d_usize_one")]
    pub ppo_epochs: usize,
    #[serde(default = "d_one")]
    pub temperature: f64,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default = "d_new_tokens")]
    pub max_new_tokens: usize,

    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "d_one")]
    pub max_grad_norm: f64,
    #[serde(default = "d_critic_lr")]
    pub critic_lr: f64,
    /// Steps that train only the critic before the actor starts (PPO).
    #[serde(default)]
    pub critic_warmup: u64,
    #[serde(default = "d_cliprange_value")]
    pub cliprange_value: f64,
    /// Learning-rate multiplier of the FlowRL Z head.
    #[serde(default = "d_one")]
    pub z_lr: f64,
    #[serde(default = "d_z_layers")]
    pub z_layers: usize,
    /// FlowRL reward scale β (15 in every FlowRL run, §4.2 note c).
    #[serde(default = "d_beta")]
    pub beta: f64,
    #[serde(default)]
    pub is_mode: IsMode,
    /// Compute reference log-probs even when nothing needs them, to log `actor/ref_kl`.
    #[serde(default = "d_true")]
    pub log_ref_kl: bool,

    #[serde(default = "d_steps")]
    pub steps: u64,
    /// Steps between quick evals on the test split (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default = "d_eval_problems")]
    pub eval_problems: usize,
    #[serde(default = "d_eval_n")]
    pub eval_n: usize,
    #[serde(default = "d_eval_k")]
    pub eval_k: Vec<usize>,
    #[serde(default = "d_every")]
    pub checkpoint_every: u64,
    #[serde(default = "d_keep")]
    pub keep: usize,
    /// Sample events (one response of each of the first N prompts) per step.
    #[serde(default = "d_samples")]
    pub samples_per_step: usize,
}

fn d_kappa() -> f32 {
    2.0
}
fn d_steepness() -> f32 {
    15.0
}
fn d_cap() -> f32 {
    0.5
}
fn d_kl_start() -> f64 {
    1e-3
}
fn d_kl_horizon() -> u64 {
    500
}
fn d_one() -> f64 {
    1.0
}
fn d_usize_one() -> usize {
    1
}
fn d_true() -> bool {
    true
}
fn d_algorithm() -> Algorithm {
    Algorithm::Grpo
}
fn d_clip() -> f64 {
    0.2
}
fn d_dual_clip() -> f64 {
    3.0
}
fn d_kl_estimator() -> KlEstimator {
    KlEstimator::K3
}
fn d_prompts() -> usize {
    16
}
fn d_group() -> usize {
    8
}
fn d_micro() -> usize {
    128
}
fn d_new_tokens() -> usize {
    24
}
fn d_lr() -> f64 {
    1e-6
}
fn d_wd() -> f64 {
    0.01
}
fn d_critic_lr() -> f64 {
    1e-5
}
fn d_cliprange_value() -> f64 {
    0.5
}
fn d_z_layers() -> usize {
    3
}
fn d_beta() -> f64 {
    15.0
}
fn d_steps() -> u64 {
    100
}
fn d_eval_problems() -> usize {
    16
}
fn d_eval_n() -> usize {
    16
}
fn d_eval_k() -> Vec<usize> {
    vec![1, 4, 16]
}
fn d_every() -> u64 {
    50
}
fn d_keep() -> usize {
    2
}
fn d_samples() -> usize {
    2
}

impl RlStage {
    fn mini_batch_prompts(&self) -> usize {
        self.mini_batch.unwrap_or(self.prompts_per_step)
    }

    /// The estimator actually used: the override, else GAE for PPO and GRPO otherwise.
    pub fn estimator(&self) -> AdvantageEstimator {
        match (&self.advantage, self.algorithm) {
            (Some(e), _) => e.clone(),
            (None, Algorithm::Ppo) => AdvantageEstimator::Gae { gamma: 1.0, lambda: 1.0 },
            (None, _) => AdvantageEstimator::Grpo { norm_by_std: !self.dr_grpo },
        }
    }

    pub fn agg(&self) -> LossAgg {
        let name = self.loss_agg.unwrap_or(if self.dr_grpo { AggName::SeqMeanTokenSumNorm } else { AggName::TokenMean });
        match name {
            AggName::TokenMean => LossAgg::TokenMean,
            AggName::SeqMeanTokenSum => LossAgg::SeqMeanTokenSum,
            AggName::SeqMeanTokenMean => LossAgg::SeqMeanTokenMean,
            AggName::SeqMeanTokenSumNorm => LossAgg::SeqMeanTokenSumNorm { constant: self.max_new_tokens as f64 },
        }
    }

    fn clip(&self) -> PpoClip {
        PpoClip { clip_low: self.clip_low, clip_high: self.clip_high, dual_clip: (self.dual_clip > 0.0).then_some(self.dual_clip) }
    }

    /// The KL-loss coefficient at `step` (annealed when `kl_anneal` is set, §7.1).
    fn kl_coef_at(&self, step: u64) -> f64 {
        match &self.kl_anneal {
            Some(a) => adv::cosine_kl_coef(step, a.start, a.min, a.horizon),
            None => self.kl_coef,
        }
    }

    fn needs_reference(&self) -> bool {
        self.algorithm == Algorithm::Flowrl || self.kl_coef > 0.0 || self.kl_in_reward || self.kl_anneal.is_some() || self.log_ref_kl
    }
}

type Invalid = (String, String);

fn invalid(key: &str, msg: impl Into<String>) -> Invalid {
    (key.to_string(), msg.into())
}

impl RlStage {
    fn validate_data(&self) -> Result<(), Invalid> {
        self.source.validate(&source::RL).map_err(|(key, msg)| match key.as_str() {
            "task" => (key, format!("{msg}. RL needs a task with a built-in verifier to score responses")),
            _ => (key, msg),
        })
    }

    fn validate_batches(&self) -> Result<(), Invalid> {
        if self.prompts_per_step == 0 || self.group_size == 0 {
            return Err(invalid("prompts_per_step", "prompts_per_step and group_size must be at least 1"));
        }
        let mb = self.mini_batch_prompts();
        let per_step = self.prompts_per_step * self.group_size;
        if mb == 0 || mb > self.prompts_per_step || self.prompts_per_step % mb != 0 {
            return Err(invalid(
                "mini_batch",
                format!(
                    "each step samples prompts_per_step × group_size = {} × {} = {per_step} responses, and each optimizer step \
                     takes mini_batch = {mb} prompts with all their {} responses = {} responses. {per_step} is not a whole \
                     multiple of {}, so the last optimizer step would get a partial batch (or none). Choose a mini_batch that \
                     divides prompts_per_step (e.g. {} for one on-policy update, or {} for two updates per step); mini_batch \
                     counts prompts, not responses",
                    self.prompts_per_step,
                    self.group_size,
                    self.group_size,
                    mb * self.group_size,
                    mb * self.group_size,
                    self.prompts_per_step,
                    divisor_below(self.prompts_per_step),
                ),
            ));
        }
        if self.micro_batch == 0 || self.ppo_epochs == 0 {
            return Err(invalid("micro_batch", "micro_batch and ppo_epochs must be at least 1"));
        }
        Ok(())
    }

    fn validate_estimator(&self) -> Result<(), Invalid> {
        let est = self.estimator();
        match (&est, self.algorithm) {
            (AdvantageEstimator::Gae { .. }, a) if a != Algorithm::Ppo => {
                return Err(invalid("advantage", "GAE needs critic values, and only algorithm = \"ppo\" trains a critic; use an outcome estimator (grpo, rloo, reinforce_plus_plus, pass_at_k) or set algorithm = \"ppo\""))
            }
            (e, Algorithm::Ppo) if !matches!(e, AdvantageEstimator::Gae { .. }) => {
                return Err(invalid("advantage", "algorithm = \"ppo\" trains a critic for GAE advantages; for the clip loss on an outcome estimator use algorithm = \"grpo\" with this `advantage`"))
            }
            _ => {}
        }
        let grouped = matches!(est, AdvantageEstimator::Grpo { .. } | AdvantageEstimator::Rloo);
        if grouped && self.group_size < 2 {
            return Err(invalid(
                "group_size",
                "group_size = 1 with a group-relative advantage: GRPO (and FlowRL's r̂, and RLOO) compare each response with the \
                 other responses to the same prompt (A = (score − group mean) / group std). With one response per prompt there \
                 is nothing to compare with: the mean is the score itself, so every advantage would be 0 (verl silently uses \
                 the raw score instead) and nothing is learned. Set group_size to 2 or more (8 is typical), or use \
                 algorithm = \"ppo\", whose critic supplies the baseline",
            ));
        }
        if let AdvantageEstimator::PassAtK { k } = est {
            if k == 0 || k > self.group_size {
                return Err(invalid("advantage.k", format!("pass@k advantage needs 1 ≤ k ≤ group_size = {}, got k = {k}", self.group_size)));
            }
        }
        Ok(())
    }

    fn validate_numbers(&self) -> Result<(), Invalid> {
        if !(self.temperature > 0.0) {
            return Err(invalid("temperature", "the rollout temperature must be > 0 (log-probs are taken under the same temperature, rl-spec §0)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", "top_p must be in (0, 1]"));
        }
        if self.max_new_tokens == 0 || self.steps == 0 {
            return Err(invalid("max_new_tokens", "max_new_tokens and steps must be at least 1"));
        }
        if self.clip_low < 0.0 || self.clip_low >= 1.0 || self.clip_high < 0.0 {
            return Err(invalid("clip_low", "clip bounds must satisfy 0 ≤ clip_low < 1 and clip_high ≥ 0 (ratio kept in [1 − clip_low, 1 + clip_high])"));
        }
        if self.dual_clip != 0.0 && !(self.dual_clip > 1.0) {
            return Err(invalid("dual_clip", "the dual-clip constant must be > 1 (verl: 3), or 0 to turn it off"));
        }
        if let Some(e) = &self.entropy_adv {
            if !(e.alpha > 0.0) || !(e.kappa > 1.0) {
                return Err(invalid("entropy_adv", "entropy advantage needs alpha > 0 and kappa > 1 (kappa ≤ 1 could flip the sign of a negative advantage, rl-spec §5.1)"));
            }
        }
        if self.algorithm == Algorithm::Flowrl && !(self.beta > 0.0) {
            return Err(invalid("beta", "FlowRL's reward scale beta must be > 0 (15 in the paper)"));
        }
        if self.algorithm == Algorithm::Flowrl && self.z_layers == 0 {
            return Err(invalid("z_layers", "the Z head needs at least 1 layer (FlowRL uses 3)"));
        }
        if let Some(o) = &self.overlong {
            if o.buffer == 0 || o.buffer >= self.max_new_tokens {
                return Err(invalid("overlong.buffer", format!("the overlong buffer must be between 1 and max_new_tokens − 1 = {}", self.max_new_tokens - 1)));
            }
        }
        if self.eval_k.iter().any(|&k| k == 0 || k > self.eval_n) {
            return Err(invalid("eval_k", format!("every k must be between 1 and eval_n = {}", self.eval_n)));
        }
        for (key, v) in [("lr", self.lr), ("critic_lr", self.critic_lr), ("z_lr", self.z_lr)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(key, "learning rates must be finite and > 0"));
            }
        }
        Ok(())
    }
}

/// A divisor of n (the largest below n, else n) for the mini-batch hint.
fn divisor_below(n: usize) -> usize {
    (1..n).rev().find(|d| n % d == 0).unwrap_or(n)
}

impl crate::stage::Sourced for RlStage {
    const SOURCE: &'static source::Spec = &source::RL;
    fn source_mut(&mut self) -> &mut ProblemSource {
        &mut self.source
    }
}

impl StageConfig for RlStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, [("model", Some(self.model.as_str())), ("reference", self.reference.as_deref())]);
        let s = &self.source;
        r.extend(refs(Artifact::Data, [("from", s.from.as_deref()), ("jsonl", s.jsonl.as_deref()), ("test_jsonl", s.test_jsonl.as_deref())]));
        r
    }

    fn deprecated_keys(&self) -> Vec<(String, String)> {
        self.source.deprecated.clone()
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Model)
    }

    fn preflight(&self) -> Result<()> {
        for (key, m) in [("model", Some(&self.model)), ("reference", self.reference.as_ref())] {
            if let Some(m) = m.filter(|m| !m.starts_with('@')) {
                crate::model::inspect::model_folder_config(Path::new(m)).context(key)?;
            }
        }
        let verifier = self.source.verifier.as_deref().unwrap_or_default();
        for file in self.source.outside_files() {
            crate::tasks::problems::check_jsonl(file, verifier)?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.validate_data()?;
        self.validate_batches()?;
        self.validate_estimator()?;
        self.validate_numbers()
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(self.steps), "step")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        train(self, ctx)
    }
}

// ------------------------------------------------------------------------------------------
// Setup

/// The rollout problems and the quick-eval problems, each with its verifier.
struct Problems {
    train: ProblemSet,
    test: ProblemSet,
}

fn load_problems(cfg: &RlStage, ctx: &StageCtx) -> Result<Problems> {
    let (train, test) = cfg.source.train_and_test(&|r| ctx.resolve(r), ctx.rng("problems"))?;
    Ok(Problems { train, test })
}

/// KL and FlowRL compare log-probs token by token, so the reference must tokenize alike.
fn check_same_tokenizer(policy: &Tokenizer, reference: &Tokenizer, policy_dir: &Path, ref_dir: &Path) -> Result<()> {
    let (a, b) = (policy.inner().get_vocab(true), reference.inner().get_vocab(true));
    let differs = if a.len() != b.len() {
        Some(format!("{} vs {} tokens", a.len(), b.len()))
    } else {
        a.iter().find(|(tok, id)| b.get(*tok) != Some(id)).map(|(tok, id)| format!("token {tok:?} is id {id} in the policy but {:?} in the reference", b.get(tok)))
    };
    if let Some(why) = differs {
        bail!(
            "the reference model {} uses a different tokenizer than the policy {} ({why}). KL penalties and FlowRL compare \
             the two models' log-probs of the same token ids, so they must share one tokenizer: point `reference` at the \
             starting checkpoint of the same model (or leave it unset to use `model`)",
            ref_dir.display(),
            policy_dir.display()
        );
    }
    Ok(())
}

/// Seeded values for the Z head (candle's own initialisers draw from an unseeded RNG, which
/// would break run-to-run reproducibility): Kaiming-normal linear weights, LayerNorm 1/0,
/// zero biases so that log Z starts near 0 (§10.5).
fn seed_params(params: &[Param], seed: u64) -> Result<()> {
    for p in params {
        let shape = p.var.shape().clone();
        let n = shape.elem_count();
        let values: Vec<f32> = if p.name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if p.name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let fan_in = *shape.dims().last().unwrap_or(&1) as f64;
            let mut rng = crate::rng::Rng::derive(seed, &p.name);
            (0..n).map(|_| (rng.normal() * (1.0 / fan_in).sqrt()) as f32).collect()
        };
        p.var.set(&Tensor::from_vec(values, shape, p.var.device())?)?;
    }
    Ok(())
}

fn policy_params(model: &Model) -> Vec<Param> {
    crate::train::optim::params_with_decay_rule(model.vars())
}

#[derive(Serialize, Deserialize)]
struct TrainState {
    step: u64,
    last_score: f64,
}

// ------------------------------------------------------------------------------------------
// One step's data

/// Everything the rollout, reward and scoring phases produce for one step (B responses).
struct Rollout {
    /// Index into the training problems, per response.
    problem: Vec<usize>,
    /// Group (prompt slot within the step), per response.
    groups: Vec<usize>,
    prompts: Vec<Vec<u32>>,
    responses: Vec<Vec<u32>>,
    texts: Vec<String>,
    verdicts: Vec<Verdict>,
    truncated: Vec<bool>,
    scores: Vec<f32>,
    /// Per-token log-probs and entropies of each response under the rollout policy at the
    /// sampling temperature, as the sampler computed them: the "old" policy of the update.
    logprobs: Vec<Vec<f32>>,
    entropies: Vec<Vec<f32>>,
    mask: Mat,
    widths: (usize, usize),
}

fn rollout(
    cfg: &RlStage,
    policy: &Model,
    tok: &Tokenizer,
    problems: &Problems,
    data_seed: u64,
    rollout_seed: u64,
    step: u64,
) -> Result<(Vec<usize>, Vec<usize>, Vec<Vec<u32>>, Vec<Completion>)> {
    let n_train = problems.train.len();
    let mut problem = Vec::new();
    let mut groups = Vec::new();
    let mut prompts = Vec::new();
    for slot in 0..cfg.prompts_per_step {
        let k = (step - 1) * cfg.prompts_per_step as u64 + slot as u64;
        let (_, i) = crate::train::data::stream_position(data_seed, k, n_train);
        let ids = encode_prompt(tok, problems.train.prompt(i), cfg.source.chat)?;
        for _ in 0..cfg.group_size {
            problem.push(i);
            groups.push(slot);
            prompts.push(ids.clone());
        }
    }
    let params = SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        max_new_tokens: cfg.max_new_tokens,
        stop_token_ids: tok.eos_ids(),
        ..Default::default()
    };
    let mut rng = crate::rng::Rng::derive(rollout_seed, &format!("rollout/{step}"));
    let completions = generate(&policy.decoder, &prompts, &params, &mut rng, None)?;
    Ok((problem, groups, prompts, completions))
}

fn reward(cfg: &RlStage, tok: &Tokenizer, problems: &Problems, problem: Vec<usize>, groups: Vec<usize>, prompts: Vec<Vec<u32>>, completions: Vec<Completion>) -> Result<Rollout> {
    let mut texts = Vec::new();
    let mut verdicts = Vec::new();
    let mut truncated = Vec::new();
    let mut scores = Vec::new();
    let mut responses = Vec::new();
    let (mut logprobs, mut entropies) = (Vec::new(), Vec::new());
    for (i, c) in completions.into_iter().enumerate() {
        let text = tok.decode(&c.tokens, true)?;
        let mut v = problems.train.verify(problem[i], &text);
        let mut score = v.reward;
        if let Some(f) = &cfg.format_reward {
            let formatted = f.score(&text, v.correct);
            score = formatted.score;
            if let Some(why) = formatted.reason {
                v.reason = format!("{}; format: {why}", v.reason);
            }
        }
        if let Some(o) = &cfg.overlong {
            let expected = (cfg.max_new_tokens - o.buffer) as f64;
            score += (-(c.tokens.len() as f64 - expected) / o.buffer as f64 * o.penalty).min(0.0);
        }
        scores.push(score as f32);
        truncated.push(c.finish == FinishReason::Length);
        texts.push(text);
        verdicts.push(v);
        responses.push(c.tokens);
        logprobs.push(c.logprobs);
        entropies.push(c.entropies);
    }
    let widths = batch::widths(&prompts, &responses);
    let mask = batch::response_mask(&responses, widths.1);
    Ok(Rollout { problem, groups, prompts, responses, texts, verdicts, truncated, scores, logprobs, entropies, mask, widths })
}

/// Old (and reference) log-probs, entropies and critic values of every response, without
/// gradients.
struct Scored {
    old: Mat,
    reference: Option<Mat>,
    entropy: Mat,
    values: Option<Mat>,
}

/// The old policy's log-probs and entropies are the sampler's own (the same weights, the same
/// temperature, computed over the full distribution before any top-k / top-p cut; the model
/// tests check they equal a full forward pass), so no second pass of the policy is needed —
/// as TRL does for on-policy updates. The reference model and the critic score the rollout
/// in chunks of `micro_batch` rows; the reference runs each distinct prompt once.
fn score_rollout(cfg: &RlStage, ro: &Rollout, reference: Option<&Model>, critic: Option<&Critic>, pad: u32, device: &Device) -> Result<Scored> {
    let b = ro.prompts.len();
    let t = ro.widths.1;
    let old = per_token_mat(&ro.logprobs, t)?;
    let entropy = per_token_mat(&ro.entropies, t)?;
    let mut refm = reference.map(|_| Mat::zeros(b, t));
    let mut values = critic.map(|_| Mat::zeros(b, t));
    if reference.is_some() || critic.is_some() {
        for start in (0..b).step_by(cfg.micro_batch) {
            let rows = start..(start + cfg.micro_batch).min(b);
            if let (Some(r), Some(m)) = (reference, refm.as_mut()) {
                let s = batch::score_shared_prompts(&r.decoder, (&ro.prompts, &ro.responses), rows.clone(), ro.widths, pad, cfg.temperature, Mode::Infer)?;
                batch::put_rows(m, start, &(s.logp * &s.mask)?)?;
            }
            if let (Some(c), Some(m)) = (critic, values.as_mut()) {
                let sb = batch::build(&ro.prompts, &ro.responses, rows, ro.widths, pad, device)?;
                batch::put_rows(m, start, &(c.values(&sb, Mode::Infer)? * &sb.mask)?)?;
            }
        }
    }
    Ok(Scored { old, reference: refm, entropy, values })
}

/// Ragged per-token rows as a (rows, width) matrix, zero past each row's end (like the mask).
fn per_token_mat(rows: &[Vec<f32>], width: usize) -> Result<Mat> {
    let mut m = Mat::zeros(rows.len(), width);
    for (i, row) in rows.iter().enumerate() {
        if row.len() > width {
            bail!("rollout row {i} has {} per-token values for a response width of {width}", row.len());
        }
        m.data[i * width..i * width + row.len()].copy_from_slice(row);
    }
    Ok(m)
}

/// Per-token advantages and returns with the configured shapings (§0.3, §3, §6.4). The
/// entropy shaping of §5 needs the current policy's entropy and is applied in the update.
fn advantages(cfg: &RlStage, ro: &Rollout, sc: &Scored, step: u64, device: &Device) -> Result<(adv::Advantages, Option<f64>)> {
    let mut rewards = adv::token_rewards_from_scores(&ro.scores, &ro.mask)?;
    let mut reward_kl = None;
    if cfg.kl_in_reward {
        let coef = cfg.kl_coef_at(step);
        let reference = sc.reference.as_ref().context("KL-in-reward needs reference log-probs")?;
        let t = |m: &Mat| loss::mat_to_tensor(m, device);
        let (r, kl) = loss::kl_in_reward(&t(&rewards)?, &t(&sc.old)?, &t(reference)?, &t(&ro.mask)?, coef, cfg.kl_estimator)?;
        rewards = loss::tensor_to_mat(&r)?;
        reward_kl = Some(kl);
    }
    let batch = adv::AdvantageBatch { token_rewards: &rewards, mask: &ro.mask, groups: &ro.groups, values: sc.values.as_ref() };
    let mut out = adv::compute_advantages(&cfg.estimator(), &batch)?;
    if let Some(p) = &cfg.ppl_shaping {
        out.advantages = adv::ppl_shaped_advantage(&out.advantages, &sc.old, &ro.mask, &ro.groups, p.alpha)?;
    }
    if let Some(p) = &cfg.position_shaping {
        if p.window.map_or(true, |w| w.contains(step)) {
            out.advantages = adv::position_shaped_advantage(&out.advantages, &ro.mask, p.alpha, p.steepness, p.cap)?;
        }
    }
    Ok((out, reward_kl))
}

// ------------------------------------------------------------------------------------------
// Metrics helpers

#[derive(Default)]
struct Acc {
    sums: BTreeMap<&'static str, (f64, f64)>,
}

impl Acc {
    fn add(&mut self, key: &'static str, value: f64, weight: f64) {
        let e = self.sums.entry(key).or_insert((0.0, 0.0));
        e.0 += value * weight;
        e.1 += weight;
    }
    fn means(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.sums.iter().filter(|(_, (_, w))| *w > 0.0).map(|(k, (s, w))| (*k, s / w))
    }
}

fn masked_stats(m: &Mat, mask: &Mat, rows: impl Fn(usize) -> bool) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0.0);
    for r in (0..m.rows).filter(|&r| rows(r)) {
        for (v, k) in m.row(r).iter().zip(mask.row(r)) {
            s += (*v * *k) as f64;
            n += *k as f64;
        }
    }
    (n > 0.0).then(|| s / n)
}

fn min_mean_max(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let v: Vec<f64> = values.collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (v.iter().copied().fold(f64::INFINITY, f64::min), mean, v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// Score, length, entropy, group and diversity metrics of one rollout (rl-spec §8.4, §8.3).
fn rollout_metrics(cfg: &RlStage, ro: &Rollout, sc: &Scored, adv: &Mat, problems: &Problems, solutions: &mut HashMap<usize, Option<Vec<String>>>) -> Vec<(String, f64)> {
    let mut m: Vec<(String, f64)> = Vec::new();
    let (lo, mean, hi) = min_mean_max(ro.scores.iter().map(|&s| s as f64));
    m.extend([("critic/score/mean".into(), mean), ("critic/score/min".into(), lo), ("critic/score/max".into(), hi)]);
    let valid: Vec<f64> = adv.data.iter().zip(&ro.mask.data).filter(|(_, &k)| k > 0.0).map(|(&a, _)| a as f64).collect();
    let (lo, mean, hi) = min_mean_max(valid.into_iter());
    m.extend([("critic/advantages/mean".into(), mean), ("critic/advantages/min".into(), lo), ("critic/advantages/max".into(), hi)]);
    let (lo, mean, hi) = min_mean_max(ro.responses.iter().map(|r| r.len() as f64));
    m.extend([("response_length/mean".into(), mean), ("response_length/min".into(), lo), ("response_length/max".into(), hi)]);
    let clip = ro.truncated.iter().filter(|&&t| t).count() as f64 / ro.truncated.len().max(1) as f64;
    m.push(("response_length/clip_ratio".into(), clip));
    m.push(("critic/accuracy".into(), ro.verdicts.iter().filter(|v| v.correct).count() as f64 / ro.verdicts.len().max(1) as f64));
    if let Some(e) = masked_stats(&sc.entropy, &ro.mask, |_| true) {
        m.push(("actor/entropy".into(), e));
    }
    if let Some(e) = masked_stats(&sc.entropy, &ro.mask, |r| ro.verdicts[r].correct) {
        m.push(("actor/entropy_correct".into(), e));
    }
    if let Some(e) = masked_stats(&sc.entropy, &ro.mask, |r| !ro.verdicts[r].correct) {
        m.push(("actor/entropy_incorrect".into(), e));
    }
    if let Some(reference) = &sc.reference {
        let diff = Mat { rows: sc.old.rows, cols: sc.old.cols, data: sc.old.data.iter().zip(&reference.data).map(|(a, b)| a - b).collect() };
        if let Some(kl) = masked_stats(&diff, &ro.mask, |_| true) {
            m.push(("actor/ref_kl".into(), kl));
        }
    }
    // Groups: all-same scores and diversity of the correct answers per prompt.
    let mut same = 0usize;
    let (mut distinct, mut entropy, mut cover, mut n_cover) = (0.0, 0.0, 0.0, 0usize);
    for g in 0..cfg.prompts_per_step {
        let rows: Vec<usize> = (0..ro.groups.len()).filter(|&r| ro.groups[r] == g).collect();
        if rows.iter().all(|&r| ro.scores[r] == ro.scores[rows[0]]) {
            same += 1;
        }
        let samples: Vec<Sample> = rows.iter().map(|&r| Sample::from(&ro.verdicts[r])).collect();
        distinct += diversity::distinct_correct_at_k(&samples, usize::MAX) as f64;
        entropy += diversity::normalized_solution_entropy(&samples);
        let i = ro.problem[rows[0]];
        let all = solutions.entry(i).or_insert_with(|| problems.train.solutions(i));
        if let Some(c) = all.as_deref().and_then(|a| diversity::coverage(&samples, a)) {
            cover += c;
            n_cover += 1;
        }
    }
    let groups = cfg.prompts_per_step as f64;
    m.push(("frac_all_same_groups".into(), same as f64 / groups));
    m.push(("diversity/distinct_correct".into(), distinct / groups));
    m.push(("diversity/entropy_correct".into(), entropy / groups));
    if n_cover > 0 {
        m.push(("diversity/coverage".into(), cover / n_cover as f64));
    }
    m
}

/// Quick eval on the first `eval_problems` test problems: avg@n, pass@k, distinct correct,
/// coverage and entropy over correct solutions (rl-spec §8.1, §8.3).
fn quick_eval(cfg: &RlStage, policy: &Model, tok: &Tokenizer, problems: &Problems, seed: u64, step: u64) -> Result<Vec<(String, f64)>> {
    let set = &problems.test;
    let count = set.len().min(cfg.eval_problems);
    if count == 0 {
        return Ok(vec![]);
    }
    // The shared engine, on this stage's own stream: one Rng across chunks of 256 rows.
    let opts = GradeOptions {
        n: cfg.eval_n,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        greedy: false,
        max_new_tokens: cfg.max_new_tokens,
        chat: cfg.source.chat,
        batch_size: 256,
    };
    let mut rng = crate::rng::Rng::derive(seed, &format!("eval/{step}"));
    let graded = sample_and_grade(&policy.decoder, tok, set, count, &opts, Seeds::Stream(&mut rng), &mut |_| Ok(()))?;
    let per_problem: Vec<Vec<Sample>> = graded.iter().map(|rows| rows.iter().map(|g| Sample::from(&g.verdict)).collect()).collect();
    let summary = passk::summarize(&per_problem, &cfg.eval_k)?;
    let mut m: Vec<(String, f64)> = summary.scores.iter().map(|(k, v)| (format!("eval/{k}"), *v)).collect();
    let n = count as f64;
    let mut cover = (0.0, 0usize);
    let (mut distinct, mut entropy) = (0.0, 0.0);
    for (i, samples) in per_problem.iter().enumerate() {
        let all = set.solutions(i);
        let s = diversity::summarize_problem(samples, all.as_deref());
        distinct += s.distinct_correct as f64;
        entropy += s.solution_entropy;
        if let Some(c) = s.coverage {
            cover.0 += c;
            cover.1 += 1;
        }
    }
    m.push(("eval/distinct_correct".into(), distinct / n));
    m.push(("eval/entropy_correct".into(), entropy / n));
    if cover.1 > 0 {
        m.push(("eval/coverage".into(), cover.0 / cover.1 as f64));
    }
    Ok(m)
}

// ------------------------------------------------------------------------------------------
// The update

/// Share of a mini-batch's loss carried by one micro-batch, so that accumulating the micro
/// losses gives the mini-batch aggregate of §0.1.
fn micro_weight(agg: LossAgg, rows: usize, mb_rows: usize, tokens: f64, mb_tokens: f64) -> f64 {
    match agg {
        LossAgg::TokenMean => tokens / mb_tokens.max(1.0),
        LossAgg::SeqMeanTokenSum | LossAgg::SeqMeanTokenMean => rows as f64 / mb_rows as f64,
        LossAgg::SeqMeanTokenSumNorm { .. } => 1.0,
    }
}

struct Learner<'a> {
    cfg: &'a RlStage,
    policy: &'a Model,
    z_head: Option<&'a ZHead>,
    pad: u32,
    device: &'a Device,
}

fn nan_error(metric: &str, value: f64, step: u64, ckpts: &Checkpoints) -> anyhow::Error {
    let last = ckpts.latest().map(|(s, _)| format!("step {s}")).unwrap_or_else(|| "none yet".into());
    anyhow::anyhow!(
        "`{metric}` is {value} at step {step}; training stopped. The last good checkpoint ({last}) stays the latest. \
         Lower lr, raise max_grad_norm's strictness, or check the rewards"
    )
}

impl Learner<'_> {
    /// Policy loss of one micro-batch (unscaled) and its metrics.
    fn actor_micro(&self, ro: &Rollout, sc: &Scored, a: &adv::Advantages, rows: std::ops::Range<usize>, step: u64, acc: &mut Acc) -> Result<Tensor> {
        let cfg = self.cfg;
        let dev = self.device;
        let scored = batch::score_shared_prompts(&self.policy.decoder, (&ro.prompts, &ro.responses), rows.clone(), ro.widths, self.pad, cfg.temperature, Mode::Train)?;
        let (logp, entropy) = (&scored.logp, &scored.entropy);
        let old = batch::rows_tensor(&sc.old, rows.clone(), dev)?;
        let mask = &scored.mask;
        let mut adv_mat = Mat::new(rows.len(), a.advantages.cols, a.advantages.data[rows.start * a.advantages.cols..rows.end * a.advantages.cols].to_vec())?;
        if let Some(e) = &cfg.entropy_adv {
            let m = Mat::new(rows.len(), a.advantages.cols, ro.mask.data[rows.start * ro.mask.cols..rows.end * ro.mask.cols].to_vec())?;
            adv_mat = adv::entropy_shaped_advantage(&adv_mat, &loss::tensor_to_mat(&entropy.detach())?, &m, e.alpha, e.kappa)?;
        }
        let advantages = loss::mat_to_tensor(&adv_mat, dev)?;
        let reference = sc.reference.as_ref().map(|r| batch::rows_tensor(r, rows.clone(), dev)).transpose()?;
        acc.add("actor/entropy_update", loss::masked_mean(&entropy.detach(), mask)?.to_scalar::<f32>()? as f64, 1.0);
        let mut total = match cfg.algorithm {
            Algorithm::Grpo | Algorithm::Ppo => {
                let (pg, pm) = loss::ppo_policy_loss(&logp, &old, &advantages, mask, cfg.clip(), cfg.agg())?;
                acc.add("actor/pg_loss", pg.to_scalar::<f32>()? as f64, 1.0);
                acc.add("actor/pg_clipfrac", pm.pg_clipfrac, 1.0);
                acc.add("actor/pg_clipfrac_lower", pm.pg_clipfrac_lower, 1.0);
                acc.add("actor/ppo_kl", pm.ppo_kl, 1.0);
                pg
            }
            Algorithm::Flowrl => {
                let z = self.z_head.context("FlowRL needs its Z head")?;
                let reference = reference.as_ref().context("FlowRL needs reference log-probs")?;
                let log_z = z.forward(&loss::pool_prompt(&scored.prompt_hidden.to_dtype(DType::F32)?, &scored.prompt_mask)?)?;
                let r_hat = loss::masked_row_mean(&advantages, mask)?;
                let (l, fm) = loss::flowrl_loss(&logp, &old, reference, mask, &r_hat, &log_z, cfg.beta, cfg.is_mode)?;
                for (k, v) in [
                    ("actor/log_z", fm.log_z),
                    ("actor/tb_loss", fm.tb_loss),
                    ("actor/importance_weight_raw", fm.importance_weight_raw),
                    ("actor/importance_weight", fm.importance_weight),
                    ("actor/log_prob", fm.log_prob),
                    ("actor/ref_log_prob", fm.ref_log_prob),
                    ("actor/ppo_kl", fm.ppo_kl),
                ] {
                    acc.add(k, v, 1.0);
                }
                l
            }
        };
        if cfg.entropy_coeff != 0.0 {
            let bonus = loss::entropy_bonus(&entropy, mask, cfg.agg())?;
            total = loss::actor_loss(&total, Some((&bonus, cfg.entropy_coeff)), None)?;
        }
        let kl_coef = cfg.kl_coef_at(step);
        if !cfg.kl_in_reward && kl_coef > 0.0 {
            let reference = reference.as_ref().context("a KL loss needs reference log-probs")?;
            let kl = loss::agg_loss(&loss::kl_penalty(&logp, reference, cfg.kl_estimator)?, mask, cfg.agg())?;
            acc.add("actor/kl_loss", kl.to_scalar::<f32>()? as f64, 1.0);
            total = loss::actor_loss(&total, None, Some((&kl, kl_coef)))?;
        }
        Ok(total)
    }

    fn critic_micro(&self, critic: &Critic, ro: &Rollout, sc: &Scored, a: &adv::Advantages, rows: std::ops::Range<usize>, acc: &mut Acc) -> Result<Tensor> {
        let dev = self.device;
        let sb = batch::build(&ro.prompts, &ro.responses, rows.clone(), ro.widths, self.pad, dev)?;
        let values = critic.values(&sb, Mode::Train)?;
        let old_values = batch::rows_tensor(sc.values.as_ref().context("PPO needs old values")?, rows.clone(), dev)?;
        let returns = batch::rows_tensor(&a.returns, rows, dev)?;
        let (l, vm) = loss::value_loss(&values, &old_values, &returns, &sb.mask, self.cfg.cliprange_value, self.cfg.agg())?;
        acc.add("critic/vf_loss", l.to_scalar::<f32>()? as f64, 1.0);
        acc.add("critic/vf_clipfrac", vm.vf_clipfrac, 1.0);
        Ok(l)
    }
}

// ------------------------------------------------------------------------------------------
// The loop

struct Optimizers {
    actor: AdamW,
    critic: Option<AdamW>,
}

fn train(cfg: &RlStage, ctx: &mut StageCtx) -> Result<StageOutput> {
    let device = ctx.device.clone();
    let model_dir = ctx.resolve(&cfg.model)?;
    let ref_dir = match &cfg.reference {
        Some(r) => ctx.resolve(r)?,
        None => model_dir.clone(),
    };
    let tok = Tokenizer::load(&model_dir)?;
    let eos = *tok.eos_ids().first().with_context(|| format!("{}: the tokenizer defines no end-of-sequence token", model_dir.display()))?;
    let pad = tok.pad_id().unwrap_or(eos);
    if ref_dir != model_dir {
        check_same_tokenizer(&tok, &Tokenizer::load(&ref_dir)?, &model_dir, &ref_dir)?;
    }
    let mut problems = load_problems(cfg, ctx)?;
    let context = crate::model::ModelConfig::from_file(&crate::model::config::config_path(&model_dir))?.max_position_embeddings;
    for (split, set) in [("training", &mut problems.train), ("quick-eval", &mut problems.test)] {
        let skipped = set.fit_context(&tok, cfg.source.chat, cfg.max_new_tokens, context, cfg.too_long).with_context(|| format!("the {split} problems"))?;
        if skipped > 0 {
            ctx.events.warn(format!("left out {skipped} {split} problem(s) too long for the context (too_long = \"skip\")"));
        }
    }
    if problems.train.is_empty() {
        bail!("the training split is empty");
    }

    let policy = Model::load(&model_dir, &device, DType::F32, true)?;
    let reference = if cfg.needs_reference() { Some(Model::load(&ref_dir, &device, DType::F32, false)?) } else { None };
    let mut params = policy_params(&policy);
    let z_varmap = candle_nn::VarMap::new();
    let z_head = if cfg.algorithm == Algorithm::Flowrl {
        let vb = candle_nn::VarBuilder::from_varmap(&z_varmap, DType::F32, &device);
        let head = ZHead::new(vb, policy.config.hidden_size, cfg.z_layers)?;
        let mut z_params: Vec<Param> = z_varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("Z head VarMap lock poisoned"))?
            .iter()
            .map(|(n, v)| Param { decay: !(n.ends_with(".bias") || n.contains("norm")), name: format!("z_head.{n}"), var: v.clone(), lr_scale: cfg.z_lr })
            .collect();
        z_params.sort_by(|a, b| a.name.cmp(&b.name));
        seed_params(&z_params, ctx.rng("z-head").next_u64())?;
        params.extend(z_params);
        Some(head)
    } else {
        None
    };
    let critic = if cfg.algorithm == Algorithm::Ppo { Some(Critic::load(&model_dir, &device)?) } else { None };
    let adamw = AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() };
    let mut opts = Optimizers { actor: AdamW::new(params, adamw), critic: critic.as_ref().map(|c| AdamW::new(c.params(), adamw)) };
    let schedule = |peak| Schedule { peak_lr: peak, warmup_steps: cfg.warmup_steps, total_steps: cfg.steps, decay: Decay::Constant, min_ratio: 1.0 };
    let ckpts = Checkpoints::new(&ctx.dir, cfg.keep);

    ctx.events.info(format!(
        "{:?}: {} prompts × {} responses per step, {} optimizer step(s) per rollout × {} epoch(s); estimator {:?}; {} training problems, {} test",
        cfg.algorithm,
        cfg.prompts_per_step,
        cfg.group_size,
        cfg.prompts_per_step / cfg.mini_batch_prompts(),
        cfg.ppo_epochs,
        cfg.estimator(),
        problems.train.len(),
        problems.test.len()
    ));

    let mut state = TrainState { step: 0, last_score: f64::NAN };
    if let Some((step, dir)) = ckpts.latest() {
        checkpoint::load_trainer(&dir, "params", &mut opts.actor)?;
        if let Some(c) = opts.critic.as_mut() {
            checkpoint::load_trainer(&dir, "critic", c)?;
        }
        state = checkpoint::load_state(&dir)?;
        ctx.events.info(format!("resumed from checkpoint at step {step} ({})", dir.display()));
    }
    let save = |state: &TrainState, opts: &Optimizers, ctx: &StageCtx| -> Result<PathBuf> {
        let dir = ckpts.save(state.step, |d| {
            checkpoint::save_trainer(d, "params", &opts.actor)?;
            if let Some(c) = &opts.critic {
                checkpoint::save_trainer(d, "critic", c)?;
            }
            checkpoint::save_state(d, state)
        })?;
        ctx.events.checkpoint(state.step, &dir);
        Ok(dir)
    };

    let data_seed = ctx.rng("prompts").next_u64();
    let rollout_seed = ctx.rng("rollout").next_u64();
    let eval_seed = ctx.rng("eval").next_u64();
    let mut solutions: HashMap<usize, Option<Vec<String>>> = HashMap::new();
    let mut last_eval: Vec<(String, f64)> = Vec::new();
    let learner = Learner { cfg, policy: &policy, z_head: z_head.as_ref(), pad, device: &device };

    while state.step < cfg.steps {
        let pending = ctx.control.poll();
        if pending.stop {
            save(&state, &opts, ctx)?;
            return Err(Interrupted.into());
        }
        if pending.checkpoint {
            save(&state, &opts, ctx)?;
        }
        let step = state.step + 1;
        let started = Instant::now();
        let phase = |ctx: &StageCtx, name: &str| ctx.events.progress(state.step, Some(cfg.steps), "step", Some(name));

        phase(ctx, "generate");
        let (problem, groups, prompts, completions) = rollout(cfg, &policy, &tok, &problems, data_seed, rollout_seed, step)?;
        let t_generate = started.elapsed().as_secs_f64();

        phase(ctx, "reward");
        let t0 = Instant::now();
        let ro = reward(cfg, &tok, &problems, problem, groups, prompts, completions)?;
        let t_reward = t0.elapsed().as_secs_f64();

        phase(ctx, "logprob");
        let t0 = Instant::now();
        let sc = score_rollout(cfg, &ro, reference.as_ref(), critic.as_ref(), pad, &device)?;
        let (a, reward_kl) = advantages(cfg, &ro, &sc, step, &device)?;
        if let Some(bad) = a.advantages.data.iter().find(|v| !v.is_finite()) {
            return Err(nan_error("critic/advantages", *bad as f64, step, &ckpts));
        }
        let t_logprob = t0.elapsed().as_secs_f64();

        phase(ctx, "update");
        let t0 = Instant::now();
        let mut acc = Acc::default();
        let lr = schedule(cfg.lr).lr(state.step);
        let critic_lr = schedule(cfg.critic_lr).lr(state.step);
        let mb_rows = cfg.mini_batch_prompts() * cfg.group_size;
        let b = ro.prompts.len();
        let train_actor = step > cfg.critic_warmup || critic.is_none();
        for _epoch in 0..cfg.ppo_epochs {
            for mb in (0..b).step_by(mb_rows) {
                let mb_range = mb..(mb + mb_rows).min(b);
                let mb_tokens: f64 = ro.mask.data[mb_range.start * ro.mask.cols..mb_range.end * ro.mask.cols].iter().map(|&x| x as f64).sum();
                let micro_ranges: Vec<std::ops::Range<usize>> =
                    mb_range.clone().step_by(cfg.micro_batch).map(|s| s..(s + cfg.micro_batch).min(mb_range.end)).collect();
                if let (Some(c), Some(opt)) = (critic.as_ref(), opts.critic.as_mut()) {
                    for rows in &micro_ranges {
                        let tokens: f64 = ro.mask.data[rows.start * ro.mask.cols..rows.end * ro.mask.cols].iter().map(|&x| x as f64).sum();
                        let l = learner.critic_micro(c, &ro, &sc, &a, rows.clone(), &mut acc)?;
                        let w = micro_weight(cfg.agg(), rows.len(), mb_range.len(), tokens, mb_tokens);
                        check_finite("critic/vf_loss", &l, step, &ckpts)?;
                        opt.accumulate(&(l * w)?.backward()?)?;
                    }
                    let r = opt.apply(critic_lr, cfg.max_grad_norm)?;
                    acc.add("critic/grad_norm", r.grad_norm, 1.0);
                }
                if !train_actor {
                    continue;
                }
                for rows in &micro_ranges {
                    let tokens: f64 = ro.mask.data[rows.start * ro.mask.cols..rows.end * ro.mask.cols].iter().map(|&x| x as f64).sum();
                    let l = learner.actor_micro(&ro, &sc, &a, rows.clone(), step, &mut acc)?;
                    check_finite("actor/loss", &l, step, &ckpts)?;
                    let w = match cfg.algorithm {
                        Algorithm::Flowrl => rows.len() as f64 / mb_range.len() as f64,
                        _ => micro_weight(cfg.agg(), rows.len(), mb_range.len(), tokens, mb_tokens),
                    };
                    opts.actor.accumulate(&(l * w)?.backward()?)?;
                }
                let r = opts.actor.apply(lr, cfg.max_grad_norm)?;
                if !r.applied {
                    ctx.events.warn(format!("step {step}: actor gradient norm is {}, update skipped", r.grad_norm));
                }
                acc.add("actor/grad_norm", r.grad_norm, 1.0);
            }
        }
        let t_update = t0.elapsed().as_secs_f64();
        let total = started.elapsed().as_secs_f64();

        // Metrics (rl-spec §8.4 names).
        let mut metrics = rollout_metrics(cfg, &ro, &sc, &a.advantages, &problems, &mut solutions);
        metrics.extend(acc.means().map(|(k, v)| (k.to_string(), v)));
        metrics.push(("actor/lr".into(), lr));
        if cfg.kl_anneal.is_some() {
            metrics.push(("actor/kl_coef".into(), cfg.kl_coef_at(step)));
        }
        if let Some(kl) = reward_kl {
            metrics.push(("critic/kl_in_reward".into(), kl));
        }
        if let (Some(values), true) = (&sc.values, critic.is_some()) {
            let t = |m: &Mat| loss::mat_to_tensor(m, &device);
            metrics.push(("critic/vf_explained_var".into(), loss::explained_variance(&t(&a.returns)?, &t(values)?, &t(&ro.mask)?)?));
            metrics.push(("critic/values/mean".into(), masked_stats(values, &ro.mask, |_| true).unwrap_or(f64::NAN)));
            metrics.push(("critic/returns/mean".into(), masked_stats(&a.returns, &ro.mask, |_| true).unwrap_or(f64::NAN)));
        }
        let response_tokens: usize = ro.responses.iter().map(Vec::len).sum();
        metrics.extend([
            ("timing/generate".to_string(), t_generate),
            ("timing/reward".to_string(), t_reward),
            ("timing/logprob".to_string(), t_logprob),
            ("timing/update".to_string(), t_update),
            ("timing/step".to_string(), total),
            ("tokens_per_s".to_string(), response_tokens as f64 / total.max(1e-9)),
        ]);
        let last_step = step == cfg.steps;
        if (cfg.eval_every > 0 && step % cfg.eval_every == 0) || last_step {
            phase(ctx, "eval");
            last_eval = quick_eval(cfg, &policy, &tok, &problems, eval_seed, step)?;
            metrics.extend(last_eval.iter().cloned());
        }
        state.step = step;
        state.last_score = ro.scores.iter().map(|&s| s as f64).sum::<f64>() / ro.scores.len().max(1) as f64;
        ctx.events.metrics(step, metrics.iter().map(|(k, v)| (k.as_str(), *v)));
        send_samples(cfg, &ro, &problems, &a.advantages, step, ctx);
        ctx.events.progress(step, Some(cfg.steps), "step", None);
        if cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0 && !last_step {
            save(&state, &opts, ctx)?;
        }
    }
    save(&state, &opts, ctx)?;

    let out = ctx.dir.join("model");
    let _ = std::fs::remove_dir_all(&out);
    policy.save(&out)?;
    crate::model::init::copy_side_files(&model_dir, &out)?;
    crate::fsutil::write_atomic(&out.join("generation_config.json"), serde_json::to_string_pretty(&policy.config.generation_config_json())?.as_bytes())?;

    let mut summary: BTreeMap<String, f64> = BTreeMap::new();
    summary.insert("critic/score/mean".into(), state.last_score);
    summary.extend(last_eval);
    Ok(StageOutput { output: Some(out), summary, table: None })
}

fn check_finite(metric: &str, loss: &Tensor, step: u64, ckpts: &Checkpoints) -> Result<()> {
    let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !v.is_finite() {
        return Err(nan_error(metric, v, step, ckpts));
    }
    Ok(())
}

/// One response (the first) of each of the first `samples_per_step` prompts, as Sample events.
fn send_samples(cfg: &RlStage, ro: &Rollout, problems: &Problems, advantages: &Mat, step: u64, ctx: &StageCtx) {
    for g in 0..cfg.samples_per_step.min(cfg.prompts_per_step) {
        let r = g * cfg.group_size;
        let v = &ro.verdicts[r];
        // Outcome advantages are constant over a response; report the first token's value.
        let advantage = advantages.row(r).first().copied().unwrap_or(0.0) as f64;
        ctx.events.send(Event::Sample {
            stage: ctx.events.stage().to_string(),
            step,
            prompt: problems.train.prompt(ro.problem[r]).to_string(),
            response: ro.texts[r].clone(),
            reward: Some(ro.scores[r] as f64),
            advantage: Some(advantage),
            correct: Some(v.correct),
            extra: serde_json::json!({"reason": v.reason, "canonical": v.canonical}),
        });
    }
}

#[cfg(test)]
mod old_logprob_tests {
    use super::*;
    use crate::model::ModelConfig;

    #[test]
    fn sampler_logprobs_equal_a_scoring_pass_of_the_policy() {
        // The update's "old" log-probs and entropies now come from the sampler; they must equal
        // what the separate scoring pass (a full forward of prompt + response) gave.
        let dev = Device::Cpu;
        let model = Model::init_random(ModelConfig::preset("tiny", 20).unwrap(), 3, &dev).unwrap();
        let prompts = vec![vec![1u32, 2, 3], vec![4, 5], vec![6, 7, 8, 9, 10]];
        let params = SamplingParams { temperature: 0.7, max_new_tokens: 7, stop_token_ids: vec![0], ..Default::default() };
        let completions = generate(&model.decoder, &prompts, &params, &mut crate::rng::Rng::new(5), None).unwrap();
        let responses: Vec<Vec<u32>> = completions.iter().map(|c| c.tokens.clone()).collect();
        let widths = batch::widths(&prompts, &responses);
        let sb = batch::build(&prompts, &responses, 0..prompts.len(), widths, 0, &dev).unwrap();
        let (logp, ent, _) = batch::score(&model.decoder.detached(), &sb, 0.7, Mode::Infer).unwrap();
        let masked = |t: Tensor| (t * &sb.mask).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let lp: Vec<Vec<f32>> = completions.iter().map(|c| c.logprobs.clone()).collect();
        let en: Vec<Vec<f32>> = completions.iter().map(|c| c.entropies.clone()).collect();
        for (name, got, want) in [("logp", per_token_mat(&lp, widths.1).unwrap().data, masked(logp)), ("entropy", per_token_mat(&en, widths.1).unwrap().data, masked(ent))] {
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{name}[{i}]: sampler {a} vs scoring pass {b}");
            }
        }
        assert!(per_token_mat(&[vec![0.0; 9]], 8).unwrap_err().to_string().contains("width of 8"));
    }
}
