//! Stage `kind = "rl"`: RL with verifiable rewards — GRPO, PPO and FlowRL, with the
//! exploration shapings of the seed papers (docs/METHODS.md §1–§7). This file is the
//! stage: its [`StageConfig`] and the training loop; `mod.rs` maps where everything else is.
//!
//! One iteration (docs/METHODS.md §1): rollout (the batched sampler, `prompts_per_step × group_size`
//! responses) → reward (the task's verifier, score at the last valid token, optional format
//! rule and DAPO overlong penalty) → old log-probs and entropies (the sampler's own),
//! reference log-probs and critic values (`Mode::Infer`, the sampling temperature) →
//! advantages (+ shapings) → `ppo_epochs` passes over mini-batches of `mini_batch` prompts,
//! each one AdamW step with clipping by global norm.
//!
//! Determinism: the prompts of step s and the sampling stream of step s are pure functions
//! of (seed, s), so a run resumed from a checkpoint (policy, Z head, critic, optimizer
//! moments, step) continues bit-identically on the CPU.

pub use super::config::RlStage;

use crate::model::Model;
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use crate::text::Tokenizer;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::rl::algo::Algo;
use crate::train::rl::minibatch::Learner;
use crate::train::rl::metrics::{self, Acc};
use crate::train::rl::rollout;
use crate::train::scaffold::{Scaffold, TrainState};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

impl crate::tasks::source::Sourced for RlStage {
    const SOURCE: &'static crate::tasks::source::Spec = &crate::tasks::source::RL;
    fn source_mut(&mut self) -> &mut crate::tasks::source::ProblemSource {
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
        self.check()?;
        crate::train::rl::algo::grpo::validate_clip(self)
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        Some(self.memory_needs())
    }

    fn model_origin(&self) -> Option<crate::stage::needs::ModelOrigin> {
        Some(crate::stage::needs::ModelOrigin::SameAs(self.model.clone()))
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (Some(self.steps), "step")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        train(self, ctx)
    }
}

/// What a checkpoint keeps besides the optimizers (`state.json`).
#[derive(Serialize, Deserialize)]
struct RlState {
    step: u64,
    last_score: f64,
}

impl TrainState for RlState {
    fn step(&self) -> u64 {
        self.step
    }
}

/// The optimizers a checkpoint holds: the policy's (with FlowRL's Z head) as `params`, and
/// the algorithm's own (PPO's `critic`).
fn trainers<'a>(actor: &'a AdamW, algo: &'a Algo) -> Vec<(&'static str, &'a AdamW)> {
    let mut t = vec![("params", actor)];
    t.extend(algo.optimizers());
    t
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
    let mut problems = rollout::load_problems(cfg, ctx)?;
    let mut context = crate::model::ModelConfig::from_file(&crate::model::config::config_path(&model_dir))?.max_position_embeddings;
    if let Some(p) = cfg.max_prompt_tokens {
        context = context.min(p + cfg.max_new_tokens);
    }
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
    let (mut algo, algo_params) = Algo::build(cfg, &policy, &model_dir, &device, ctx)?;
    let mut params = crate::train::optim::params_with_decay_rule(policy.vars());
    params.extend(algo_params);
    let mut actor = AdamW::new(params, AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() });
    let run = Scaffold::new(&ctx.dir, cfg.steps, cfg.checkpoint_every, cfg.keep, "Lower lr, raise max_grad_norm's strictness, or check the rewards");

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

    let mut resumable = vec![("params", &mut actor)];
    resumable.extend(algo.optimizers_mut());
    let mut state = run.resume(ctx, &mut resumable)?.unwrap_or(RlState { step: 0, last_score: f64::NAN });

    let data_seed = ctx.rng("prompts").next_u64();
    let rollout_seed = ctx.rng("rollout").next_u64();
    let eval_seed = ctx.rng("eval").next_u64();
    let mut solutions: HashMap<usize, Option<Vec<String>>> = HashMap::new();
    let mut last_eval: Vec<(String, f64)> = Vec::new();
    let learner = Learner { cfg, policy: &policy, pad, device: &device, scaffold: &run };
    let old_logp = rollout::OldLogp::of(cfg, &policy);
    if cfg.rollout_dtype == super::config::RolloutDtype::Bf16 && !rollout::bf16_rollouts(cfg, &policy) {
        ctx.events.warn("rollout_dtype = \"bf16\" needs the CPU batch decoder and AVX-512 (F, BW, VL); this run generates with the f32 weights");
    }
    if let Some(warning) = crate::model::fused::precision::bf16_update_warning(cfg.update_dtype, device.is_cpu()) {
        ctx.events.warn(warning);
    }

    while state.step < cfg.steps {
        run.poll(ctx, &state, &trainers(&actor, &algo))?;
        let step = state.step + 1;
        let started = Instant::now();
        let phase = |ctx: &StageCtx, name: &str| run.progress(ctx, state.step, Some(name));

        phase(ctx, "generate");
        let (problem, groups, prompts, completions) = rollout::rollout(cfg, &policy, &tok, &problems, data_seed, rollout_seed, step)?;
        let t_generate = started.elapsed().as_secs_f64();
        let tool_stats = cfg.tools.as_ref().map(|_| crate::generate::tools::ToolStats::of(&completions));

        phase(ctx, "reward");
        let t0 = Instant::now();
        let ro = rollout::reward(cfg, &tok, &problems, problem, groups, prompts, completions)?;
        let t_reward = t0.elapsed().as_secs_f64();

        phase(ctx, "logprob");
        let t0 = Instant::now();
        // With kl_coef = 0 the reference only feeds `actor/ref_kl`: scored every ref_kl_every steps.
        // `update_dtype`: the scoring passes and the update run their products at that precision.
        let precision = crate::model::fused::precision::scoped(cfg.update_dtype);
        let mut sc = rollout::score_rollout(cfg, &ro, reference.as_ref().filter(|_| cfg.reference_pass_at(step)), old_logp, pad)?;
        sc.values = algo.old_values(cfg, &ro, pad, &device)?;
        let (a, reward_kl) = rollout::advantages(cfg, &ro, &sc, step, &device)?;
        if let Some(bad) = a.advantages.data.iter().find(|v| !v.is_finite()) {
            return Err(run.non_finite("critic/advantages", *bad as f64, step));
        }
        let t_logprob = t0.elapsed().as_secs_f64();

        phase(ctx, "update");
        let t0 = Instant::now();
        let mut acc = Acc::default();
        let lr = cfg.schedule(cfg.lr).lr(state.step);
        learner.update(&mut algo, &mut actor, (&ro, &sc, &a), step, lr, &mut acc, &ctx.events)?;
        drop(precision);
        let t_update = t0.elapsed().as_secs_f64();
        let total = started.elapsed().as_secs_f64();

        // Metrics (docs/METHODS.md §8.4 names).
        let mut m = metrics::rollout_metrics(cfg, &ro, &sc, &a.advantages, &problems, &mut solutions);
        m.extend(acc.means().map(|(k, v)| (k.to_string(), v)));
        m.push(("actor/lr".into(), lr));
        if cfg.kl_anneal.is_some() {
            m.push(("actor/kl_coef".into(), cfg.kl_coef_at(step)));
        }
        if let Some(t) = &tool_stats {
            m.extend(t.metrics());
            m.extend(metrics::tool_accuracy(&ro));
        }
        if let Some(kl) = reward_kl {
            m.push(("critic/kl_in_reward".into(), kl));
        }
        m.extend(algo.step_metrics(&ro, &sc, &a, &device)?);
        if let Some(gap) = sc.logprob_gap {
            m.push(("rollout/logprob_gap".into(), gap));
        }
        let response_tokens: usize = ro.responses.iter().map(Vec::len).sum();
        m.extend([
            ("timing/generate".to_string(), t_generate),
            ("timing/reward".to_string(), t_reward),
            ("timing/logprob".to_string(), t_logprob),
            ("timing/update".to_string(), t_update),
            ("timing/step".to_string(), total),
            ("tokens_per_s".to_string(), response_tokens as f64 / total.max(1e-9)),
        ]);
        if (cfg.eval_every > 0 && step % cfg.eval_every == 0) || step == cfg.steps {
            phase(ctx, "eval");
            last_eval = metrics::quick_eval(cfg, &policy, &tok, &problems, eval_seed, step)?;
            m.extend(last_eval.iter().cloned());
        }
        state.step = step;
        state.last_score = ro.scores.iter().map(|&s| s as f64).sum::<f64>() / ro.scores.len().max(1) as f64;
        ctx.events.metrics(step, m.iter().map(|(k, v)| (k.as_str(), *v)));
        metrics::send_samples(cfg, &ro, &problems, &a.advantages, step, ctx);
        run.progress(ctx, step, None);
        run.after_step(ctx, &state, &trainers(&actor, &algo))?;
    }
    run.save(ctx, &state, &trainers(&actor, &algo))?;
    let out = run.write_model(&model_dir, &policy.config, |dir| Ok(policy.save(dir)?))?;

    let mut summary: BTreeMap<String, f64> = BTreeMap::new();
    summary.insert("critic/score/mean".into(), state.last_score);
    summary.extend(last_eval);
    Ok(StageOutput { output: Some(out), summary, table: None })
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
