//! The `rl` stage's configuration: [`RlStage`], the `[[stage]]` table of `kind = "rl"`, with
//! its defaults and its validation. The TOML keys are one flat table (as verl's and TRL's
//! configs are read by the papers); the keys of one algorithm are read by that algorithm's
//! file: `clip_*` by `algo/grpo.rs` (and PPO's actor), `critic_*` and `cliprange_value` by
//! `algo/ppo.rs`, `beta`, `z_*` and `is_mode` by `algo/flowrl.rs`. The advantage estimator
//! and shapings are read by `rollout.rs` and `learner.rs`, rewards by `rewards.rs`.
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

use crate::tasks::problems::TooLong;
use crate::tasks::source::{self, ProblemSource};
use crate::train::rl::advantage::{self as adv, AdvantageEstimator, StepWindow};
use crate::train::rl::loss::{KlEstimator, LossAgg};
use crate::train::rl::rewards::{FormatReward, Overlong};
use crate::train::schedule::{Decay, Schedule};
use serde::{Deserialize, Serialize};

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

/// The `algorithm` key: which loss, and which advantage by default.
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

/// The `rollout_dtype` key: the weights generation reads (issue 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutDtype {
    /// The policy's own f32 weights.
    #[default]
    F32,
    /// bf16 copies of the matmul weights, made at each rollout from the current policy (the
    /// CPU batch decoder with AVX-512; elsewhere the f32 weights). The update's old log-probs
    /// are then the f32 policy's, not the sampler's (`rollout::score_rollout`).
    Bf16,
}

/// Importance-weight clipping of the FlowRL loss (§4.3; used in `algo/flowrl.rs`); the
/// weight is always detached.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IsMode {
    /// Unclipped `w` (verl 0.4.0 "paper reproduction" code). Can overflow to inf far off-policy.
    None,
    /// `clip(w, 1−ε, 1+ε)` (the paper's text).
    TwoSided { eps: f64 },
    /// `min(w, W_max)` (the author's current recipe; W_max = 10 is the lab default).
    Upper { max: f64 },
}

impl Default for IsMode {
    fn default() -> Self {
        IsMode::Upper { max: 10.0 }
    }
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
    /// `jsonl` (`{"prompt", "answer"}` math, or `{"prompt", "tests"}` / HumanEval-style
    /// `{"prompt", "entry_point", "test"}` code problems, scored by `verifier`; `test_jsonl`
    /// holds the quick-eval problems). `chat` renders prompts through
    /// the tokenizer's chat template as one user turn (HF chat models).
    #[serde(flatten, skip_deserializing)]
    pub source: ProblemSource,
    /// A problem whose prompt + max_new_tokens exceeds the model's context: "error" (the
    /// stage refuses before any rollout) or "skip" (left out, counted in the log).
    #[serde(default)]
    pub too_long: TooLong,
    /// The longest prompt in tokens (verl's `data.max_prompt_length`): longer problems are
    /// handled by `too_long` like those that overflow the context, and the memory preflight
    /// sizes rollouts with it (without it, JSONL prompts are assumed to be ≤ 1024 tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_tokens: Option<usize>,

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
    // GRPO's and PPO's clip bounds (algo/grpo.rs).
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
    /// Tool-integrated rollouts (STILL-3, docs/SANDBOX.md): Python runs mid-generation and its
    /// output joins the context but not the loss, e.g. `tools = { format = "prompt", max_calls = 4 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<crate::generate::tools::ToolsConfig>,

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
    /// The end-of-sequence tokens are not sampled before this many response tokens
    /// (transformers' `min_new_tokens`; 0 = off). The log-probs stay the full distribution's.
    #[serde(default)]
    pub min_new_tokens: usize,
    /// Rollout rows decoded at once on the CPU (0: all `prompts_per_step × group_size`). With
    /// fewer, a finished response's slot takes the next pending prompt × sample (continuous
    /// batching); the sampled text is the same either way.
    #[serde(default)]
    pub rollout_batch_rows: usize,
    /// `"f32"` (default) or `"bf16"`: the weights the rollout's decode matmuls read.
    #[serde(default)]
    pub rollout_dtype: RolloutDtype,
    /// `"f32"` (default) or `"bf16"`: the operands of the update's (and the scoring passes')
    /// matmuls (`model::fused::precision`); weights, gradients and AdamW stay f32.
    #[serde(default)]
    pub update_dtype: crate::model::fused::precision::Precision,

    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "d_one")]
    pub max_grad_norm: f64,
    // PPO's critic (algo/ppo.rs).
    #[serde(default = "d_critic_lr")]
    pub critic_lr: f64,
    /// Steps that train only the critic before the actor starts (PPO).
    #[serde(default)]
    pub critic_warmup: u64,
    #[serde(default = "d_cliprange_value")]
    pub cliprange_value: f64,
    // FlowRL (algo/flowrl.rs).
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
    /// When the reference is only logged (`log_ref_kl` with no KL term and an algorithm that
    /// does not read it), score the rollout with it on step 1, every `ref_kl_every`-th step
    /// and the last step only: the pass costs about a forward of the policy per step.
    #[serde(default = "d_ref_kl_every")]
    pub ref_kl_every: u64,

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
fn d_ref_kl_every() -> u64 {
    10
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
    pub(crate) fn mini_batch_prompts(&self) -> usize {
        self.mini_batch.unwrap_or(self.prompts_per_step)
    }

    /// The estimator actually used: the override, else the algorithm's own (GAE for PPO,
    /// the group-normalised GRPO advantage otherwise).
    pub fn estimator(&self) -> AdvantageEstimator {
        match &self.advantage {
            Some(e) => e.clone(),
            None => self.algorithm.default_estimator(self),
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

    /// The KL-loss coefficient at `step` (annealed when `kl_anneal` is set, §7.1).
    pub(crate) fn kl_coef_at(&self, step: u64) -> f64 {
        match &self.kl_anneal {
            Some(a) => adv::cosine_kl_coef(step, a.start, a.min, a.horizon),
            None => self.kl_coef,
        }
    }

    /// Whether the update can take the f32 old log-probs from its own forward pass (detached)
    /// when the sampler's are not the f32 policy's (`rollout_dtype = "bf16"`): the rollout is
    /// used for exactly one optimizer step (one epoch, one mini-batch), so every micro-batch's
    /// forward runs with the weights that sampled, and nothing reads the old log-probs before
    /// the update (KL in the reward, the perplexity shaping). Otherwise a scoring pass of the
    /// policy computes them.
    pub(crate) fn old_logp_from_update(&self) -> bool {
        self.ppo_epochs == 1 && self.mini_batch_prompts() >= self.prompts_per_step && !self.kl_in_reward && self.ppl_shaping.is_none()
    }

    pub(crate) fn needs_reference(&self) -> bool {
        self.loss_reads_reference() || self.log_ref_kl
    }

    /// Whether a loss, a reward or the algorithm reads reference log-probs (rather than only
    /// the `actor/ref_kl` metric).
    fn loss_reads_reference(&self) -> bool {
        self.algorithm.needs_reference() || self.kl_coef > 0.0 || self.kl_in_reward || self.kl_anneal.is_some()
    }

    /// Whether step `step` (1-based) scores its rollout with the reference: every step when
    /// something reads it; when it is only logged, step 1, every `ref_kl_every`-th step and
    /// the last step.
    pub(crate) fn reference_pass_at(&self, step: u64) -> bool {
        if self.loss_reads_reference() {
            return true;
        }
        self.log_ref_kl && (step == 1 || step == self.steps || step % self.ref_kl_every.max(1) == 0)
    }

    /// What the memory preflight sizes (`crate::preflight`): the policy in f32 with AdamW,
    /// micro-batches of `micro_batch` responses of prompt + `max_new_tokens` tokens, the
    /// reference when loaded, PPO's critic, FlowRL's Z head, and a rollout's KV cache over all
    /// `prompts_per_step × group_size` rows at once (or a quick eval's, up to 256 rows).
    pub(crate) fn memory_needs(&self) -> crate::stage::needs::Needs {
        // Prompt lengths are known only once the data is read: built-in tasks have short
        // prompts; a JSONL of math problems is sized at 1024 tokens.
        let (prompt, assumption) = match self.max_prompt_tokens {
            Some(n) => (n, format!("prompts ≤ {n} tokens (max_prompt_tokens)")),
            None if self.source.jsonl.is_some() => (1024, "prompts of the JSONL data assumed ≤ 1024 tokens; set max_prompt_tokens to size them".to_string()),
            None => (64, "prompts of the built-in task assumed ≤ 64 tokens".to_string()),
        };
        let ctx = prompt + self.max_new_tokens;
        let rows = (self.prompts_per_step * self.group_size).max((self.eval_problems * self.eval_n).min(256));
        let per_step = self.mini_batch.unwrap_or(self.prompts_per_step) * self.group_size;
        let mut knobs = vec![
            format!("lower `micro_batch` (now {}; gradient accumulation keeps the step the same)", self.micro_batch),
            format!("shorter responses: `max_new_tokens` (now {})", self.max_new_tokens),
            format!("fewer rollout rows: `prompts_per_step` × `group_size` (now {} × {})", self.prompts_per_step, self.group_size),
        ];
        if self.needs_reference() && !self.loss_reads_reference() {
            knobs.push("`log_ref_kl = false` drops the reference model (it is only logged)".into());
        }
        crate::stage::needs::Needs {
            model: self.model.clone(),
            trainable: crate::stage::needs::Trainable::Full,
            micro_batch: self.micro_batch.min(per_step),
            seq: ctx,
            accumulates: per_step > self.micro_batch,
            reference: self.needs_reference(),
            critic: self.algorithm == Algorithm::Ppo,
            z_head_layers: (self.algorithm == Algorithm::Flowrl).then_some(self.z_layers),
            generate: Some((rows, ctx)),
            assumption: Some(assumption),
            knobs,
            ..Default::default()
        }
    }

    /// The learning-rate schedule of a trainer with peak `peak`: warmup, then constant.
    pub(crate) fn schedule(&self, peak: f64) -> Schedule {
        Schedule { peak_lr: peak, warmup_steps: self.warmup_steps, total_steps: self.steps, decay: Decay::Constant, min_ratio: 1.0 }
    }
}

/// A validation failure: the key and what is wrong with it (see `StageConfig::validate`).
pub(crate) type Invalid = (String, String);

pub(crate) fn invalid(key: &str, msg: impl Into<String>) -> Invalid {
    (key.to_string(), msg.into())
}

impl RlStage {
    /// Every check beyond types, in the order the user sees the first failure.
    pub fn check(&self) -> Result<(), Invalid> {
        self.validate_data()?;
        self.validate_batches()?;
        self.validate_estimator()?;
        if self.max_prompt_tokens == Some(0) {
            return Err(("max_prompt_tokens".into(), "give at least 1 token, or leave the key out".into()));
        }
        self.validate_numbers()
    }

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
            return Err(invalid("temperature", "the rollout temperature must be > 0 (log-probs are taken under the same temperature, docs/METHODS.md §0)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", "top_p must be in (0, 1]"));
        }
        if self.max_new_tokens == 0 || self.steps == 0 {
            return Err(invalid("max_new_tokens", "max_new_tokens and steps must be at least 1"));
        }
        if self.min_new_tokens > self.max_new_tokens {
            return Err(invalid("min_new_tokens", format!("min_new_tokens = {} exceeds max_new_tokens = {}", self.min_new_tokens, self.max_new_tokens)));
        }
        if self.ref_kl_every == 0 {
            return Err(invalid("ref_kl_every", "give at least 1 (1 = every step); `log_ref_kl = false` turns the logged reference pass off"));
        }
        if let Some(e) = &self.entropy_adv {
            if !(e.alpha > 0.0) || !(e.kappa > 1.0) {
                return Err(invalid("entropy_adv", "entropy advantage needs alpha > 0 and kappa > 1 (kappa ≤ 1 could flip the sign of a negative advantage, docs/METHODS.md §5.1)"));
            }
        }
        self.algorithm.validate(self)?;
        if let Some(o) = &self.overlong {
            o.check(self.max_new_tokens)?;
        }
        if let Some(t) = &self.tools {
            t.check()?;
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
