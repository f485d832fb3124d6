//! An `rl` stage's settings as verl Hydra overrides, and the settings verl has no key for.
//!
//! Two targets: stock verl (`python3 -m verl.trainer.main_ppo`, the keys of its
//! `ppo_trainer.yaml`, checked against [`VERL_VERSION`]) for GRPO and PPO, and for FlowRL the
//! authors' verl fork (Xuekai-Zhu/FlowRL, `verl_FlowRL/`, based on verl 0.4.0), whose actor
//! replaces the PPO loss by the trajectory-balance loss and reads the Z head's depth from
//! `actor_rollout_ref.actor.porj_layer` (sic). Every key of the stage is either mapped here or
//! listed in [`Mapping::unmapped`] with the reason: nothing is dropped silently.

use crate::train::rl::advantage::AdvantageEstimator;
use crate::train::rl::config::{AggName, Algorithm, IsMode, RlStage};
use crate::train::rl::loss::KlEstimator;

/// The verl release the stock-verl overrides were composed against (tools/verl_check.py).
pub const VERL_VERSION: &str = "0.9.1";
/// The FlowRL fork's base release: its `ppo_trainer.yaml` is that of verl 0.4.0 plus the
/// keys FlowRL adds with `+`.
pub const FLOWRL_VERL_BASE: &str = "0.4.0";
/// The revision of Xuekai-Zhu/FlowRL read for the FlowRL keys: `verl_FlowRL/verl/workers/
/// actor/dp_actor.py` at this commit hard-codes β = 15 (`15 * seq_log_reward`) and the IS
/// weight clamp `max=10`, and builds `proj_z` with `num_layers = actor.porj_layer`.
pub const FLOWRL_COMMIT: &str = "6059a0be239a0fd07bffde867f722d3f39ca2099";

/// Which trainer the overrides are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Verl,
    FlowRl,
}

/// One `key=value` on verl's command line; `append` writes `+key=value` (a key the base
/// config does not have: the FlowRL fork's own keys, the DAPO reward manager's kwargs).
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub key: String,
    pub value: String,
    pub append: bool,
    /// The retort key it comes from (or "export" for paths the export chose).
    pub from: String,
}

impl Override {
    pub fn arg(&self) -> String {
        format!("{}{}={}", if self.append { "+" } else { "" }, self.key, self.value)
    }
}

/// A retort setting with no verl key (or no exact one): the key, its value, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Unmapped {
    pub key: String,
    pub value: String,
    pub why: String,
}

#[derive(Clone, Debug)]
pub struct Mapping {
    pub target: Target,
    pub overrides: Vec<Override>,
    pub unmapped: Vec<Unmapped>,
    /// Differences in meaning worth knowing that are not a missing key.
    pub notes: Vec<String>,
}

/// What the export decided outside the stage's own keys.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Shell words for the files (run.sh expands them): train/test Parquet and reward.py.
    pub train_file: String,
    pub val_file: String,
    pub reward_file: String,
    /// Shell word for the model path.
    pub model_path: String,
    pub train_rows: usize,
    pub val_rows: usize,
    /// The longest rendered prompt in tokens when the tokenizer was at hand, else the
    /// assumption of the memory preflight.
    pub max_prompt_tokens: usize,
    pub seed: u64,
    pub project: String,
    pub experiment: String,
}

/// A Hydra float: always with a decimal point or exponent, so verl reads a float.
pub fn float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x:?}")
    }
}

/// A Hydra string in single quotes (`'` and `\` escaped).
pub fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The raw-text chat template for prompts retort feeds without a chat template
/// (`chat = false`): the user message's text as is, so verl tokenizes the same text.
pub const RAW_TEMPLATE: &str = "{% for m in messages %}{{ m.content }}{% endfor %}";

fn kl_name(k: KlEstimator) -> Option<&'static str> {
    match k {
        KlEstimator::K1 => Some("kl"),
        KlEstimator::Abs => Some("abs"),
        KlEstimator::K2 => Some("mse"),
        KlEstimator::K3 => Some("low_var_kl"),
        KlEstimator::K1Plus => Some("k1+"),
        KlEstimator::K3Plus => Some("k3+"),
    }
}

fn agg_name(a: AggName) -> &'static str {
    match a {
        AggName::TokenMean => "token-mean",
        AggName::SeqMeanTokenSum => "seq-mean-token-sum",
        AggName::SeqMeanTokenMean => "seq-mean-token-mean",
        AggName::SeqMeanTokenSumNorm => "seq-mean-token-sum-norm",
    }
}

struct Builder {
    overrides: Vec<Override>,
    unmapped: Vec<Unmapped>,
    notes: Vec<String>,
}

impl Builder {
    fn set(&mut self, key: &str, value: impl Into<String>, from: &str) {
        self.overrides.push(Override { key: key.into(), value: value.into(), append: false, from: from.into() });
    }
    fn add(&mut self, key: &str, value: impl Into<String>, from: &str) {
        self.overrides.push(Override { key: key.into(), value: value.into(), append: true, from: from.into() });
    }
    fn unmapped(&mut self, key: &str, value: impl Into<String>, why: impl Into<String>) {
        self.unmapped.push(Unmapped { key: key.into(), value: value.into(), why: why.into() });
    }
}

fn toml_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

/// The overrides for `cfg` (an `rl` stage) and the keys that do not map.
pub fn map(cfg: &RlStage, inp: &Inputs) -> Mapping {
    let target = if cfg.algorithm == Algorithm::Flowrl { Target::FlowRl } else { Target::Verl };
    let mut b = Builder { overrides: Vec::new(), unmapped: Vec::new(), notes: Vec::new() };
    const A: &str = "actor_rollout_ref.actor";
    const R: &str = "actor_rollout_ref.rollout";

    // Data.
    b.set("data.train_files", inp.train_file.clone(), "export");
    b.set("data.val_files", inp.val_file.clone(), "export");
    b.set("data.prompt_key", "prompt", "export");
    b.set("data.train_batch_size", cfg.prompts_per_step.to_string(), "prompts_per_step");
    b.set("data.max_prompt_length", inp.max_prompt_tokens.to_string(), "max_prompt_tokens");
    b.set("data.max_response_length", cfg.max_new_tokens.to_string(), "max_new_tokens");
    match cfg.too_long {
        crate::tasks::problems::TooLong::Skip => b.set("data.filter_overlong_prompts", "True", "too_long"),
        crate::tasks::problems::TooLong::Error => {
            b.set("data.filter_overlong_prompts", "False", "too_long");
            b.set("data.truncation", "error", "too_long");
        }
    }
    match target {
        Target::Verl => b.set("data.seed", inp.seed.to_string(), "run.seed"),
        // Not in verl 0.4.0's yaml, but its main_ppo seeds the sampler with data.get("seed", 1).
        Target::FlowRl => b.add("data.seed", inp.seed.to_string(), "run.seed"),
    }
    if !cfg.source.chat {
        // retort feeds the prompt text itself; verl always renders messages through a chat
        // template, so give it one that renders the text itself.
        match target {
            Target::Verl => b.add("data.apply_chat_template_kwargs.chat_template", quoted(RAW_TEMPLATE), "chat = false"),
            Target::FlowRl => b.unmapped(
                "chat",
                "false",
                format!(
                    "the fork (verl {FLOWRL_VERL_BASE}) renders every prompt through the tokenizer's chat template and has no key for \
                     another; to feed the prompt text as retort does, set \"chat_template\": \"{RAW_TEMPLATE}\" in the model folder's \
                     tokenizer_config.json"
                ),
            ),
        }
    }

    // Model, group size, batches.
    b.set("actor_rollout_ref.model.path", inp.model_path.clone(), "model");
    if let Some(r) = &cfg.reference {
        b.unmapped("reference", r.clone(), "verl's reference policy is always the starting policy (actor_rollout_ref.model.path); a separate reference model has no key");
    }
    if target == Target::Verl {
        // verl 0.9.1 leaves the rollout engine mandatory (`???`); retort samples itself.
        b.set(&format!("{R}.name"), "vllm", "export (retort samples itself; sglang also works)");
    }
    b.set(&format!("{R}.n"), cfg.group_size.to_string(), "group_size");
    b.set(&format!("{A}.ppo_mini_batch_size"), cfg.mini_batch_prompts().to_string(), "mini_batch");
    let per_step_rows = cfg.mini_batch_prompts() * cfg.group_size;
    let micro = cfg.micro_batch.min(per_step_rows);
    b.set(&format!("{A}.ppo_micro_batch_size_per_gpu"), micro.to_string(), "micro_batch");
    b.set(&format!("{R}.log_prob_micro_batch_size_per_gpu"), micro.to_string(), "micro_batch");
    b.set("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", micro.to_string(), "micro_batch");
    if micro < cfg.micro_batch {
        b.notes.push(format!("micro_batch = {} is larger than a mini-batch's {per_step_rows} responses; both retort and the export use {micro}", cfg.micro_batch));
    }
    b.set(&format!("{A}.ppo_epochs"), cfg.ppo_epochs.to_string(), "ppo_epochs");

    // Optimizer.
    b.set(&format!("{A}.optim.lr"), float(cfg.lr), "lr");
    b.set(&format!("{A}.optim.lr_warmup_steps"), cfg.warmup_steps.to_string(), "warmup_steps");
    b.set(&format!("{A}.optim.weight_decay"), float(cfg.weight_decay), "weight_decay");
    b.set(&format!("{A}.grad_clip"), float(cfg.max_grad_norm), "max_grad_norm");
    b.notes.push("retort's AdamW (β = 0.9 / 0.999, ε = 1e-8, linear warm-up then constant) matches verl's defaults; retort exempts biases and norm weights from weight decay, verl decays every parameter".into());

    // Advantage estimator.
    match cfg.estimator() {
        AdvantageEstimator::Grpo { norm_by_std } => {
            b.set("algorithm.adv_estimator", "grpo", "algorithm/advantage");
            b.set("algorithm.norm_adv_by_std_in_grpo", if norm_by_std { "True" } else { "False" }, "dr_grpo");
        }
        AdvantageEstimator::Rloo => b.set("algorithm.adv_estimator", "rloo", "advantage"),
        AdvantageEstimator::ReinforcePlusPlus { gamma } => {
            b.set("algorithm.adv_estimator", "reinforce_plus_plus", "advantage");
            b.set("algorithm.gamma", float(gamma as f64), "advantage.gamma");
        }
        AdvantageEstimator::ReinforcePlusPlusBaseline => b.set("algorithm.adv_estimator", "reinforce_plus_plus_baseline", "advantage"),
        AdvantageEstimator::Gae { gamma, lambda } => {
            b.set("algorithm.adv_estimator", "gae", "algorithm/advantage");
            b.set("algorithm.gamma", float(gamma as f64), "advantage.gamma");
            b.set("algorithm.lam", float(lambda as f64), "advantage.lambda");
        }
        AdvantageEstimator::PassAtK { k } => {
            b.set("algorithm.adv_estimator", "grpo_passk", "advantage");
            if k != 1 {
                b.unmapped("advantage.k", k.to_string(), "verl's grpo_passk credits only the best response of a group (no k); retort's pass@k advantage with k > 1 has no verl counterpart");
            }
        }
    }

    // Policy loss: clip (GRPO / PPO), aggregation, KL, entropy.
    if target == Target::Verl {
        b.set(&format!("{A}.clip_ratio_low"), float(cfg.clip_low), "clip_low");
        b.set(&format!("{A}.clip_ratio_high"), float(cfg.clip_high), "clip_high");
        if cfg.dual_clip > 1.0 {
            b.set(&format!("{A}.clip_ratio_c"), float(cfg.dual_clip), "dual_clip");
        } else {
            b.unmapped("dual_clip", float(cfg.dual_clip), "verl always applies dual clip (clip_ratio_c > 1, default 3.0); retort's dual_clip = 0 turns it off. The export keeps verl's default 3.0");
        }
        let agg = cfg.loss_agg.unwrap_or(if cfg.dr_grpo { AggName::SeqMeanTokenSumNorm } else { AggName::TokenMean });
        b.set(&format!("{A}.loss_agg_mode"), agg_name(agg), "loss_agg / dr_grpo");
        if agg == AggName::SeqMeanTokenSumNorm {
            b.set(&format!("{A}.loss_scale_factor"), cfg.max_new_tokens.to_string(), "max_new_tokens (Dr. GRPO's constant)");
        }
    } else {
        for (key, v) in [("clip_low", cfg.clip_low), ("clip_high", cfg.clip_high)] {
            if v != 0.2 {
                b.unmapped(key, float(v), "FlowRL's loss has no PPO clip (its IS weight is clamped instead); the clip ratios are unused");
            }
        }
        if cfg.loss_agg.is_some() || cfg.dr_grpo {
            b.unmapped("loss_agg", toml_of(&cfg.loss_agg), "FlowRL's loss is a plain mean over sequences of length-normalised residuals; loss_agg_mode is not read");
        }
    }
    let kl_type = kl_name(cfg.kl_estimator).unwrap_or("low_var_kl");
    if cfg.kl_in_reward {
        b.set("algorithm.use_kl_in_reward", "True", "kl_in_reward");
        b.set("algorithm.kl_penalty", kl_type, "kl_estimator");
        b.set("algorithm.kl_ctrl.kl_coef", float(cfg.kl_coef), "kl_coef");
        b.set(&format!("{A}.use_kl_loss"), "False", "kl_in_reward");
    } else if target == Target::FlowRl {
        // The fork's actor selects `ref_log_prob` only when use_kl_loss is on; FlowRL's loss
        // needs it, and the KL term itself is commented out of that loss.
        b.set(&format!("{A}.use_kl_loss"), "True", "algorithm = flowrl (needs ref_log_prob)");
        b.set(&format!("{A}.kl_loss_coef"), float(0.0), "flowrl");
        if cfg.kl_coef > 0.0 {
            b.unmapped("kl_coef", float(cfg.kl_coef), "the FlowRL fork's loss has no KL term (it is commented out of compute_flowrl_objective)");
        }
    } else {
        let on = cfg.kl_coef > 0.0 || cfg.kl_anneal.is_some();
        b.set(&format!("{A}.use_kl_loss"), if on { "True" } else { "False" }, "kl_coef");
        b.set(&format!("{A}.kl_loss_coef"), float(cfg.kl_coef), "kl_coef");
        b.set(&format!("{A}.kl_loss_type"), kl_type, "kl_estimator");
    }
    if let Some(a) = &cfg.kl_anneal {
        b.unmapped("kl_anneal", toml_of(a), "STILL-3's cosine KL annealing has no verl key; the export uses the constant kl_coef");
    }
    b.set(&format!("{A}.entropy_coeff"), float(cfg.entropy_coeff), "entropy_coeff");
    if let Some(e) = &cfg.entropy_adv {
        b.unmapped("entropy_adv", toml_of(e), "the entropy-based advantage (Cheng et al.) is not in verl");
    }
    if let Some(p) = &cfg.ppl_shaping {
        b.unmapped("ppl_shaping", toml_of(p), "the PPL advantage shaping lives in the RUC fork of verl, not in verl");
    }
    if let Some(p) = &cfg.position_shaping {
        b.unmapped("position_shaping", toml_of(p), "the position bonus lives in the RUC fork of verl, not in verl");
    }

    // FlowRL.
    if target == Target::FlowRl {
        b.add(&format!("{A}.porj_layer"), cfg.z_layers.to_string(), "z_layers");
        if cfg.beta != 15.0 {
            b.unmapped("beta", float(cfg.beta), format!("the FlowRL fork hard-codes β = 15 (`15 * seq_log_reward` in dp_actor.py at {}); edit that literal", &FLOWRL_COMMIT[..7]));
        }
        if cfg.is_mode != (IsMode::Upper { max: 10.0 }) {
            b.unmapped("is_mode", toml_of(&cfg.is_mode), format!("the FlowRL fork hard-codes the IS weight as clamp(w, max=10) (dp_actor.py at {}); other modes need an edit there", &FLOWRL_COMMIT[..7]));
        }
        if cfg.z_lr != 1.0 {
            b.unmapped("z_lr", float(cfg.z_lr), "the fork trains proj_z in the actor's optimizer at the actor's lr (multiplier 1)");
        }
        b.notes.push("FlowRL's r̂ is the group-normalised advantage (algorithm.adv_estimator = grpo) in both retort and the fork".into());
    } else {
        for (key, set) in [("beta", cfg.beta != 15.0), ("z_layers", cfg.z_layers != 3), ("z_lr", cfg.z_lr != 1.0)] {
            if set {
                b.notes.push(format!("`{key}` is a FlowRL key and unused by algorithm = {:?}", cfg.algorithm));
            }
        }
    }

    // PPO's critic.
    if cfg.algorithm == Algorithm::Ppo {
        b.set("critic.model.path", inp.model_path.clone(), "model (the critic starts from the policy)");
        b.set("critic.optim.lr", float(cfg.critic_lr), "critic_lr");
        b.set("critic.cliprange_value", float(cfg.cliprange_value), "cliprange_value");
        b.set("critic.ppo_micro_batch_size_per_gpu", micro.to_string(), "micro_batch");
        b.set("trainer.critic_warmup", cfg.critic_warmup.to_string(), "critic_warmup");
    }

    // Sampling.
    b.set(&format!("{R}.temperature"), float(cfg.temperature), "temperature");
    b.set(&format!("{R}.top_p"), float(cfg.top_p), "top_p");
    b.set(&format!("{R}.val_kwargs.temperature"), float(cfg.temperature), "temperature (quick evals)");
    b.set(&format!("{R}.val_kwargs.top_p"), float(cfg.top_p), "top_p (quick evals)");
    b.set(&format!("{R}.val_kwargs.n"), cfg.eval_n.to_string(), "eval_n");
    b.set(&format!("{R}.val_kwargs.do_sample"), "True", "eval_n");

    // Rewards beyond the verifier.
    b.set("custom_reward_function.path", inp.reward_file.clone(), "export (reward.py)");
    b.set("custom_reward_function.name", "compute_score", "export (reward.py)");
    if let Some(o) = &cfg.overlong {
        match target {
            Target::Verl => {
                b.set("reward.reward_manager.name", "dapo", "overlong");
                b.add("reward.reward_kwargs.max_resp_len", cfg.max_new_tokens.to_string(), "max_new_tokens");
                b.add("reward.reward_kwargs.overlong_buffer_cfg.enable", "True", "overlong");
                b.add("reward.reward_kwargs.overlong_buffer_cfg.len", o.buffer.to_string(), "overlong.buffer");
                b.add("reward.reward_kwargs.overlong_buffer_cfg.penalty_factor", float(o.penalty), "overlong.penalty");
                b.add("reward.reward_kwargs.overlong_buffer_cfg.log", "False", "overlong");
            }
            Target::FlowRl => {
                // verl 0.4.0's main_ppo hands `reward_model.reward_kwargs` to the DAPO manager.
                b.set("reward_model.reward_manager", "dapo", "overlong");
                b.add("reward_model.reward_kwargs.max_resp_len", cfg.max_new_tokens.to_string(), "max_new_tokens");
                b.add("reward_model.reward_kwargs.overlong_buffer_cfg.enable", "True", "overlong");
                b.add("reward_model.reward_kwargs.overlong_buffer_cfg.len", o.buffer.to_string(), "overlong.buffer");
                b.add("reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor", float(o.penalty), "overlong.penalty");
                b.add("reward_model.reward_kwargs.overlong_buffer_cfg.log", "False", "overlong");
            }
        }
    }
    if let Some(t) = &cfg.tools {
        b.unmapped("tools", toml_of(t), "tool-integrated rollouts (Python run mid-generation) follow STILL-3's format; verl's multi-turn tool agent needs its own tool config");
    }

    // Length of training, evaluation, checkpoints.
    let steps_per_epoch = (inp.train_rows / cfg.prompts_per_step.max(1)).max(1) as u64;
    b.set("trainer.total_epochs", cfg.steps.div_ceil(steps_per_epoch).to_string(), "steps");
    b.set("trainer.total_training_steps", cfg.steps.to_string(), "steps");
    b.set("trainer.test_freq", if cfg.eval_every == 0 { "-1".to_string() } else { cfg.eval_every.to_string() }, "eval_every");
    b.set("trainer.save_freq", cfg.checkpoint_every.to_string(), "checkpoint_every");
    b.set("trainer.max_actor_ckpt_to_keep", cfg.keep.to_string(), "keep");
    b.set("trainer.project_name", quoted(&inp.project), "run.name");
    b.set("trainer.experiment_name", quoted(&inp.experiment), "stage name");
    b.set("trainer.logger", "['console']", "export");
    if cfg.eval_problems < inp.val_rows {
        b.unmapped("eval_problems", cfg.eval_problems.to_string(), format!("verl validates on the whole test file ({} problems); retort's quick evals use the first {}", inp.val_rows, cfg.eval_problems));
    }
    b.notes.push(format!("retort reports pass@k for eval_k = {:?}; verl logs mean@n and best@n / maj@n over val_kwargs.n samples", cfg.eval_k));
    if !cfg.log_ref_kl {
        b.notes.push("log_ref_kl = false: verl computes the reference log-probs whenever a KL is in use".into());
    }
    Mapping { target, overrides: b.overrides, unmapped: b.unmapped, notes: b.notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn stage(preset: &str, name: &str) -> RlStage {
        let profile = crate::profile::Profile::load(preset).unwrap();
        let entry = profile.stages.iter().find(|s| s.name == name).unwrap();
        crate::stages::parse_sourced(toml::Value::Table(entry.config.to_table())).unwrap()
    }

    fn inputs(train_rows: usize) -> Inputs {
        Inputs {
            train_file: "\"$HERE/train.parquet\"".into(),
            val_file: "\"$HERE/test.parquet\"".into(),
            reward_file: "\"$HERE/reward.py\"".into(),
            model_path: "\"$MODEL_PATH\"".into(),
            train_rows,
            val_rows: 16,
            max_prompt_tokens: 2048,
            seed: 0,
            project: "p".into(),
            experiment: "e".into(),
        }
    }

    fn args(m: &Mapping) -> BTreeMap<String, String> {
        m.overrides.iter().map(|o| (format!("{}{}", if o.append { "+" } else { "" }, o.key), o.value.clone())).collect()
    }

    #[test]
    fn floats_keep_a_point_and_strings_are_quoted() {
        assert_eq!(float(15.0), "15.0");
        assert_eq!(float(1e-6), "1e-6");
        assert_eq!(float(0.28), "0.28");
        assert_eq!(float(0.0), "0.0");
        assert_eq!(quoted("it's"), "'it\\'s'");
    }

    /// The paper-scale GRPO preset against the values written in profiles/grpo-qwen2.5-7b.toml.
    #[test]
    fn grpo_paper_preset_maps_to_flowrls_grpo_script_settings() {
        let m = map(&stage("grpo-qwen2.5-7b", "grpo"), &inputs(17_000));
        assert_eq!(m.target, Target::Verl);
        let a = args(&m);
        for (key, want) in [
            ("algorithm.adv_estimator", "grpo"),
            ("algorithm.norm_adv_by_std_in_grpo", "True"),
            ("data.train_batch_size", "512"),
            ("actor_rollout_ref.rollout.n", "8"),
            ("actor_rollout_ref.actor.ppo_mini_batch_size", "32"),
            ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "8"),
            ("actor_rollout_ref.actor.ppo_epochs", "1"),
            ("actor_rollout_ref.actor.optim.lr", "1e-6"),
            ("actor_rollout_ref.actor.optim.lr_warmup_steps", "10"),
            ("actor_rollout_ref.actor.optim.weight_decay", "0.1"),
            ("actor_rollout_ref.actor.grad_clip", "1.0"),
            ("actor_rollout_ref.actor.clip_ratio_low", "0.2"),
            ("actor_rollout_ref.actor.clip_ratio_high", "0.2"),
            ("actor_rollout_ref.actor.clip_ratio_c", "3.0"),
            ("actor_rollout_ref.actor.use_kl_loss", "True"),
            ("actor_rollout_ref.actor.kl_loss_coef", "0.001"),
            ("actor_rollout_ref.actor.kl_loss_type", "low_var_kl"),
            ("actor_rollout_ref.actor.loss_agg_mode", "token-mean"),
            ("actor_rollout_ref.actor.entropy_coeff", "0.0"),
            ("actor_rollout_ref.rollout.temperature", "1.0"),
            ("actor_rollout_ref.rollout.top_p", "1.0"),
            ("data.max_response_length", "8192"),
            ("trainer.total_training_steps", "300"),
            // 17 000 problems / 512 a step = 33 steps an epoch: 300 steps need 10 epochs.
            ("trainer.total_epochs", "10"),
            ("trainer.save_freq", "25"),
            ("trainer.test_freq", "25"),
            ("trainer.max_actor_ckpt_to_keep", "3"),
            ("reward.reward_manager.name", "dapo"),
            ("+reward.reward_kwargs.overlong_buffer_cfg.len", "4096"),
            ("+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor", "1.0"),
            ("+reward.reward_kwargs.max_resp_len", "8192"),
            ("custom_reward_function.path", "\"$HERE/reward.py\""),
        ] {
            assert_eq!(a.get(key).map(String::as_str), Some(want), "{key}");
        }
        // chat = true: the model's own chat template, as retort renders it.
        assert!(!a.contains_key("+data.apply_chat_template_kwargs.chat_template"));
        assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
    }

    /// FlowRL's preset: the fork's keys, and β / IS mode / Z lr equal to the fork's literals.
    #[test]
    fn flowrl_paper_preset_maps_to_the_fork_without_loss() {
        let m = map(&stage("flowrl-qwen2.5-7b", "flowrl"), &inputs(17_000));
        assert_eq!(m.target, Target::FlowRl);
        let a = args(&m);
        assert_eq!(a.get("+actor_rollout_ref.actor.porj_layer").map(String::as_str), Some("3"));
        assert_eq!(a.get("actor_rollout_ref.actor.use_kl_loss").map(String::as_str), Some("True"), "the fork reads ref_log_prob only with use_kl_loss");
        assert_eq!(a.get("algorithm.adv_estimator").map(String::as_str), Some("grpo"));
        assert_eq!(a.get("reward_model.reward_manager").map(String::as_str), Some("dapo"));
        assert_eq!(a.get("+reward_model.reward_kwargs.overlong_buffer_cfg.len").map(String::as_str), Some("4096"));
        assert!(!a.contains_key("actor_rollout_ref.actor.clip_ratio_high"), "FlowRL has no PPO clip");
        assert!(m.unmapped.is_empty(), "β = 15, upper IS clamp 10 and z_lr 1 are the fork's literals: {:?}", m.unmapped);
    }

    /// The tiny FlowRL preset departs from the fork: every departure is listed, none dropped.
    #[test]
    fn settings_without_a_verl_key_are_listed() {
        let m = map(&stage("flowrl-tiny", "flowrl"), &inputs(1000));
        let keys: Vec<&str> = m.unmapped.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["chat", "z_lr"], "{:?}", m.unmapped);
        assert_eq!(args(&m).get("+actor_rollout_ref.actor.porj_layer").map(String::as_str), Some("2"));

        let mut s = stage("grpo-tiny", "grpo");
        s.beta = 15.0;
        s.kl_anneal = Some(crate::train::rl::config::KlAnneal { start: 1e-3, min: 0.0, horizon: 100 });
        s.entropy_adv = Some(crate::train::rl::config::EntropyAdv { alpha: 0.1, kappa: 2.0 });
        s.dual_clip = 0.0;
        s.advantage = Some(AdvantageEstimator::PassAtK { k: 4 });
        s.reference = Some("@init".into());
        let m = map(&s, &inputs(1000));
        let keys: Vec<&str> = m.unmapped.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["reference", "advantage.k", "dual_clip", "kl_anneal", "entropy_adv"], "{:?}", m.unmapped);
        let a = args(&m);
        assert_eq!(a.get("algorithm.adv_estimator").map(String::as_str), Some("grpo_passk"));
        assert_eq!(a.get("+data.apply_chat_template_kwargs.chat_template").map(String::as_str), Some(quoted(RAW_TEMPLATE).as_str()));
        // 1000 problems / 8 a step = 125 steps an epoch.
        assert_eq!(a.get("trainer.total_epochs").map(String::as_str), Some("1"));
        s.eval_problems = 4;
        let m = map(&s, &inputs(1000));
        assert_eq!(m.unmapped.last().map(|u| u.key.as_str()), Some("eval_problems"), "4 quick-eval problems of 16: {:?}", m.unmapped);
    }

    #[test]
    fn dr_grpo_and_ppo_map_to_their_verl_keys() {
        let mut s = stage("grpo-tiny", "grpo");
        s.dr_grpo = true;
        let a = args(&map(&s, &inputs(1000)));
        assert_eq!(a.get("algorithm.norm_adv_by_std_in_grpo").map(String::as_str), Some("False"));
        assert_eq!(a.get("actor_rollout_ref.actor.loss_agg_mode").map(String::as_str), Some("seq-mean-token-sum-norm"));
        assert_eq!(a.get("actor_rollout_ref.actor.loss_scale_factor").map(String::as_str), Some(s.max_new_tokens.to_string().as_str()));

        let p = stage("ppo-tiny", "ppo");
        let a = args(&map(&p, &inputs(1000)));
        assert_eq!(a.get("algorithm.adv_estimator").map(String::as_str), Some("gae"));
        assert_eq!(a.get("critic.optim.lr").map(String::as_str), Some(float(p.critic_lr).as_str()));
        assert_eq!(a.get("critic.cliprange_value").map(String::as_str), Some(float(p.cliprange_value).as_str()));
        assert_eq!(a.get("critic.model.path").map(String::as_str), Some("\"$MODEL_PATH\""));
    }
}
