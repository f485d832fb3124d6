//! One step's data (docs/METHODS.md §1): where prompts come from ([`Problems`]), the rollout (the
//! batched sampler, `prompts_per_step × group_size` responses), the reward (the task's
//! verifier, then the format rule and the overlong penalty of `rewards.rs`), the scoring of
//! the rollout (old log-probs and entropies from the sampler, reference log-probs) and the
//! advantages with their shapings (`advantage.rs`).
//!
//! Determinism: the prompts of step s and the sampling stream of step s are pure functions
//! of (seed, s), so a resumed run draws exactly what an uninterrupted one would.

use crate::tasks::problems::{encode_prompt, ProblemSet};
use crate::generate::tools::{generate_with_tools, ToolCall, ToolCompletion};
use crate::generate::{generate, FinishReason, SamplingParams};
use crate::model::{Mode, Model};
use crate::stage::StageCtx;
use crate::tasks::Verdict;
use crate::text::Tokenizer;
use crate::train::rl::advantage::{self as adv, Mat};
use crate::train::rl::batch;
use crate::train::rl::config::RlStage;
use crate::train::rl::loss;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::ops::Range;

/// The rollout problems and the quick-eval problems, each with its verifier.
pub struct Problems {
    pub train: ProblemSet,
    pub test: ProblemSet,
}

pub fn load_problems(cfg: &RlStage, ctx: &StageCtx) -> Result<Problems> {
    let (train, test) = cfg.source.train_and_test(&|r| ctx.resolve(r), ctx.rng("problems"))?;
    Ok(Problems { train, test })
}



/// Everything the rollout, reward and scoring phases produce for one step (B responses).
pub struct Rollout {
    /// Index into the training problems, per response.
    pub problem: Vec<usize>,
    /// Group (prompt slot within the step), per response.
    pub groups: Vec<usize>,
    pub prompts: Vec<Vec<u32>>,
    pub responses: Vec<Vec<u32>>,
    pub texts: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub truncated: Vec<bool>,
    pub scores: Vec<f32>,
    /// Per-token log-probs and entropies of each response under the rollout policy at the
    /// sampling temperature, as the sampler computed them: the "old" policy of the update.
    pub logprobs: Vec<Vec<f32>>,
    pub entropies: Vec<Vec<f32>>,
    /// 1 on every token the policy generated, 0 on padding and on tool output (which is in
    /// the context but not an action): the loss mask of every algorithm.
    pub mask: Mat,
    pub widths: (usize, usize),
    /// The tool calls of each response (empty without tools).
    pub calls: Vec<Vec<ToolCall>>,
}

impl Rollout {
    /// Rows `rows` of the loss mask as a `(b, T)` tensor (the learners use it in place of a
    /// plain response mask, so tool output stays out of every loss and count).
    pub fn mask_rows(&self, rows: Range<usize>, device: &Device) -> Result<Tensor> {
        batch::rows_tensor(&self.mask, rows, device)
    }
}

pub fn rollout(
    cfg: &RlStage,
    policy: &Model,
    tok: &Tokenizer,
    problems: &Problems,
    data_seed: u64,
    rollout_seed: u64,
    step: u64,
) -> Result<(Vec<usize>, Vec<usize>, Vec<Vec<u32>>, Vec<ToolCompletion>)> {
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
        min_new_tokens: cfg.min_new_tokens,
        max_batch_rows: cfg.rollout_batch_rows,
        bf16_weights: cfg.rollout_dtype == crate::train::rl::config::RolloutDtype::Bf16,
        ..Default::default()
    };
    let mut rng = crate::rng::Rng::derive(rollout_seed, &format!("rollout/{step}"));
    let completions = match &cfg.tools {
        Some(t) => {
            let runner = t.python();
            generate_with_tools(&policy.decoder, tok, &prompts, &params, &mut rng, &t.settings(&runner)?)?
        }
        None => generate(&policy.decoder, &prompts, &params, &mut rng, None)?.into_iter().map(ToolCompletion::plain).collect(),
    };
    Ok((problem, groups, prompts, completions))
}

pub fn reward(cfg: &RlStage, tok: &Tokenizer, problems: &Problems, problem: Vec<usize>, groups: Vec<usize>, prompts: Vec<Vec<u32>>, completions: Vec<ToolCompletion>) -> Result<Rollout> {
    let mut texts = Vec::new();
    let mut verdicts = Vec::new();
    let mut truncated = Vec::new();
    let mut scores = Vec::new();
    let mut responses = Vec::new();
    let (mut logprobs, mut entropies) = (Vec::new(), Vec::new());
    let (mut from_tool, mut calls) = (Vec::new(), Vec::new());
    for (i, tc) in completions.into_iter().enumerate() {
        let ran_code = tc.ran_code();
        let c = tc.completion;
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
            score += o.penalty(c.tokens.len(), cfg.max_new_tokens);
        }
        if let Some(t) = cfg.tools.as_ref().filter(|_| ran_code) {
            score += t.call_bonus;
        }
        scores.push(score as f32);
        truncated.push(c.finish == FinishReason::Length);
        texts.push(text);
        verdicts.push(v);
        responses.push(c.tokens);
        logprobs.push(c.logprobs);
        entropies.push(c.entropies);
        from_tool.push(tc.from_tool);
        calls.push(tc.calls);
    }
    let widths = batch::widths(&prompts, &responses);
    let mask = batch::loss_mask(&responses, &from_tool, widths.1);
    Ok(Rollout { problem, groups, prompts, responses, texts, verdicts, truncated, scores, logprobs, entropies, mask, widths, calls })
}

/// Old (and reference) log-probs, entropies and critic values of every response, without
/// gradients.
pub struct Scored {
    pub old: Mat,
    pub reference: Option<Mat>,
    pub entropy: Mat,
    pub values: Option<Mat>,
    /// The sampler read bf16 weights and the update takes the f32 old log-probs from its own
    /// forward (detached; [`RlStage::old_logp_from_update`]): `old` holds the sampler's.
    pub old_from_update: bool,
    /// Mean |sampler log-prob − f32 policy log-prob| over the response tokens, when the
    /// sampler read bf16 weights and a scoring pass computed the f32 ones (`rollout/logprob_gap`).
    pub logprob_gap: Option<f64>,
}

/// How the rollout's old log-probs come to be: the sampler's own (f32 weights), or — when the
/// sampler read bf16 copies — the f32 policy's, from the update's forward or a scoring pass.
#[derive(Clone, Copy)]
pub enum OldLogp<'m> {
    Sampler,
    FromUpdate,
    ScoringPass(&'m Model),
}

impl<'m> OldLogp<'m> {
    /// The case of this stage: the sampler's log-probs are not the update's when bf16
    /// rollouts are in effect on a CPU with the bf16 kernel, or when the update's products
    /// are bf16 (`update_dtype`; then the old log-probs come from the same bf16 products, so
    /// the importance ratio of the first optimizer step is exactly 1, as with f32).
    pub fn of(cfg: &RlStage, policy: &'m Model) -> OldLogp<'m> {
        let bf16 = bf16_rollouts(cfg, policy) || (cfg.update_dtype == crate::model::fused::precision::Precision::Bf16 && policy.decoder.device().is_cpu());
        match (bf16, cfg.old_logp_from_update()) {
            (false, _) => OldLogp::Sampler,
            (true, true) => OldLogp::FromUpdate,
            (true, false) => OldLogp::ScoringPass(policy),
        }
    }
}

/// Whether this stage's rollouts read bf16 weights (`rollout_dtype = "bf16"` on a CPU with the
/// kernel).
pub fn bf16_rollouts(cfg: &RlStage, policy: &Model) -> bool {
    cfg.rollout_dtype == crate::train::rl::config::RolloutDtype::Bf16 && policy.decoder.device().is_cpu() && crate::model::fused::skinny::bf16::available()
}

/// With f32 weights the old policy's log-probs and entropies are the sampler's own (the same
/// weights, the same temperature, computed over the full distribution before any top-k /
/// top-p cut; the model tests check they equal a full forward pass), so no second pass of
/// the policy is needed — as TRL does for on-policy updates. When the sampler read bf16
/// copies, the importance ratio must still be against the f32 policy: the update takes them
/// from its forward ([`OldLogp::FromUpdate`]), or the policy scores the rollout here
/// ([`OldLogp::ScoringPass`]). The reference model scores the rollout in chunks of
/// `micro_batch` rows, running each distinct prompt once; the algorithm adds critic values
/// (PPO, `algo/ppo.rs`).
pub fn score_rollout(cfg: &RlStage, ro: &Rollout, reference: Option<&Model>, old_logp: OldLogp<'_>, pad: u32) -> Result<Scored> {
    let b = ro.prompts.len();
    let t = ro.widths.1;
    let mut old = per_token_mat(&ro.logprobs, t)?;
    let entropy = per_token_mat(&ro.entropies, t)?;
    let score = |m: &Model, into: &mut Mat| -> Result<()> {
        for start in (0..b).step_by(cfg.micro_batch) {
            let rows = start..(start + cfg.micro_batch).min(b);
            let s = crate::model::score::score_shared_prompts(&m.decoder, (&ro.prompts, &ro.responses), rows.clone(), ro.widths, pad, cfg.temperature, Mode::Infer)?;
            batch::put_rows(into, start, &(s.logp * ro.mask_rows(rows, s.mask.device())?)?)?;
        }
        Ok(())
    };
    let mut refm = reference.map(|_| Mat::zeros(b, t));
    if let (Some(r), Some(m)) = (reference, refm.as_mut()) {
        score(r, m)?;
    }
    let mut logprob_gap = None;
    if let OldLogp::ScoringPass(policy) = old_logp {
        let mut f32_old = Mat::zeros(b, t);
        score(policy, &mut f32_old)?;
        logprob_gap = Some(mean_abs_gap(&old, &f32_old, &ro.mask));
        old = f32_old;
    }
    Ok(Scored { old, reference: refm, entropy, values: None, old_from_update: matches!(old_logp, OldLogp::FromUpdate), logprob_gap })
}

/// Mean |a − b| over the tokens of `mask` (0 when it has none).
pub fn mean_abs_gap(a: &Mat, b: &Mat, mask: &Mat) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0.0f64);
    for ((x, y), m) in a.data.iter().zip(&b.data).zip(&mask.data) {
        sum += (*m as f64) * (*x as f64 - *y as f64).abs();
        n += *m as f64;
    }
    if n > 0.0 {
        sum / n
    } else {
        0.0
    }
}

/// Ragged per-token rows as a (rows, width) matrix, zero past each row's end (like the mask).
pub fn per_token_mat(rows: &[Vec<f32>], width: usize) -> Result<Mat> {
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
pub fn advantages(cfg: &RlStage, ro: &Rollout, sc: &Scored, step: u64, device: &Device) -> Result<(adv::Advantages, Option<f64>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use candle_core::Tensor;

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

    #[test]
    fn bf16_rollouts_sample_from_the_policy_with_bf16_rounded_matrices() {
        // rollout_dtype = "bf16" on a CPU with the kernel: the decode steps read the projection
        // and head matrices rounded to bf16, so the sampler's log-probs follow the policy with
        // those matrices rounded (scored by the independent tensor path) more closely than the
        // f32 policy. Not exactly: the prompt's prefill runs the f32 weights (its keys and
        // values, and the hidden state of the first token, are the f32 policy's). They differ
        // from the f32 policy's, which is why the update takes its old log-probs from the f32
        // forward.
        use crate::model::fused::skinny::bf16;
        if !bf16::available() {
            return; // the decoder falls back to the f32 weights; nothing bf16 to check here
        }
        let dev = Device::Cpu;
        let mut cfg = ModelConfig::preset("tiny", 300).unwrap();
        cfg.num_hidden_layers = 2;
        cfg.tie_word_embeddings = false; // the embedding lookup stays f32; the head is rounded
        cfg.hidden_size = 96; // whole chunks of 32 and a tail (intermediate below)
        cfg.intermediate_size = 150;
        let model = Model::init_random(cfg.clone(), 3, &dev).unwrap();
        let rounded = Model::init_random(cfg, 3, &dev).unwrap();
        for (name, var) in rounded.vars() {
            let matrix = name.ends_with("proj.weight") || name == "lm_head.weight";
            if matrix {
                var.set(&var.as_tensor().to_dtype(candle_core::DType::BF16).unwrap().to_dtype(candle_core::DType::F32).unwrap()).unwrap();
            }
        }
        let prompts = vec![vec![1u32, 2, 3], vec![4, 5], vec![6, 7, 8, 9, 10]];
        let params = SamplingParams { temperature: 0.8, max_new_tokens: 12, bf16_weights: true, ..Default::default() };
        let score = |m: &Model, responses: &[Vec<u32>]| -> (Vec<f32>, Vec<f32>) {
            let widths = batch::widths(&prompts, responses);
            let sb = batch::build(&prompts, responses, 0..prompts.len(), widths, 0, &dev).unwrap();
            let (logp, _, _) = batch::score(&m.decoder.detached(), &sb, 0.8, Mode::Infer).unwrap();
            let mask = sb.mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (logp.flatten_all().unwrap().to_vec1::<f32>().unwrap(), mask)
        };
        // Per token within 2e-2 of the rounded policy (a loose bound: the kernel's own error
        // bound is tested in skinny::bf16; here the f32 prefill and, for Dot, the rounding of
        // x add to it); on average closer to it than to the f32 policy.
        let mut variants = vec![(bf16::Variant::Widen, 2e-2f32)];
        if bf16::has_dot() {
            variants.push((bf16::Variant::Dot, 2e-2));
        }
        for (variant, tol) in variants {
            bf16::set_variant(variant);
            let out = generate(&model.decoder, &prompts, &params, &mut crate::rng::Rng::new(5), None).unwrap();
            let responses: Vec<Vec<u32>> = out.iter().map(|c| c.tokens.clone()).collect();
            let sampler = per_token_mat(&out.iter().map(|c| c.logprobs.clone()).collect::<Vec<_>>(), batch::widths(&prompts, &responses).1).unwrap().data;
            let (want, mask) = score(&rounded, &responses);
            let (f32_policy, _) = score(&model, &responses);
            let (mut gap_rounded, mut gap_f32, mut n) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..mask.len() {
                if mask[i] > 0.0 {
                    assert!((sampler[i] - want[i]).abs() <= tol * (1.0 + want[i].abs()), "{variant:?} token {i}: sampler {} vs bf16-rounded policy {}", sampler[i], want[i]);
                    gap_rounded += (sampler[i] - want[i]).abs();
                    gap_f32 += (sampler[i] - f32_policy[i]).abs();
                    n += 1.0;
                }
            }
            assert!(n > 30.0 && gap_f32 / n > 1e-5, "{variant:?}: the bf16 rounding shows in the log-probs (mean gap to the f32 policy {})", gap_f32 / n);
            if variant == bf16::Variant::Widen {
                assert!(gap_rounded < gap_f32, "Widen is closer to the rounded policy (mean gap {}) than to the f32 one ({})", gap_rounded / n, gap_f32 / n);
            }
        }
        bf16::set_variant(bf16::variant_default());
    }
}
