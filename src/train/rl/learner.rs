//! The update of one `rl` step (docs/METHODS.md §1 steps 6–7): `ppo_epochs` passes over
//! mini-batches of `mini_batch` prompts, each one AdamW step with clipping by global norm,
//! accumulated over micro-batches of `micro_batch` responses. The algorithm (`algo/`) gives
//! the policy loss of a micro-batch and its weight, and trains what it has besides the
//! policy (PPO's critic) first; here are the terms every algorithm shares: the entropy
//! shaping of the advantage (§5.1), the entropy bonus and the KL loss (§2.1).

use crate::bus::Emitter;
use crate::model::Mode;
use crate::train::optim::AdamW;
use crate::train::rl::advantage::{self as adv, Advantages, Mat};
use crate::train::rl::algo::{Algo, PolicyInputs};
use crate::train::rl::batch;

use crate::train::rl::loss;
use crate::train::rl::metrics::Acc;
use crate::train::rl::minibatch::{Learner, MiniBatch};
use crate::train::rl::rollout::{Rollout, Scored};

use anyhow::{Context, Result};
use candle_core::Tensor;
use std::ops::Range;

impl Learner<'_> {
    /// The update of step `step` (1-based) at policy learning rate `lr`; metrics go into `acc`.
    pub fn update(&self, algo: &mut Algo, actor: &mut AdamW, data: (&Rollout, &Scored, &Advantages), step: u64, lr: f64, acc: &mut Acc, events: &Emitter) -> Result<()> {
        let cfg = self.cfg;
        let ro = data.0;
        let mb_rows = cfg.mini_batch_prompts() * cfg.group_size;
        let b = ro.prompts.len();
        let train_actor = algo.trains_actor(step);
        for _epoch in 0..cfg.ppo_epochs {
            for start in (0..b).step_by(mb_rows) {
                let mb = MiniBatch::new(&ro.mask, start..(start + mb_rows).min(b), cfg.micro_batch);
                algo.train_others(self, data, &mb, step, acc)?;
                if !train_actor {
                    continue;
                }
                for rows in &mb.micro {
                    let tokens = MiniBatch::tokens(&ro.mask, rows);
                    let l = self.actor_micro(algo, data, rows.clone(), step, acc)?;
                    self.scaffold.check_finite("actor/loss", &l, step)?;
                    let w = algo.micro_weight(rows.len(), mb.rows.len(), tokens, mb.tokens);
                    actor.accumulate(&(l * w)?.backward()?)?;
                }
                let r = actor.apply(lr, cfg.max_grad_norm)?;
                if !r.applied {
                    events.warn(format!("step {step}: actor gradient norm is {}, update skipped", r.grad_norm));
                }
                acc.add("actor/grad_norm", r.grad_norm, 1.0);
            }
        }
        Ok(())
    }

    /// Policy loss of one micro-batch (unscaled) and its metrics: the algorithm's loss, then
    /// the entropy bonus and the KL loss when they are on.
    fn actor_micro(&self, algo: &Algo, (ro, sc, a): (&Rollout, &Scored, &Advantages), rows: Range<usize>, step: u64, acc: &mut Acc) -> Result<Tensor> {
        let cfg = self.cfg;
        let dev = self.device;
        let mut scored = crate::model::score::score_shared_prompts(&self.policy.decoder, (&ro.prompts, &ro.responses), rows.clone(), ro.widths, self.pad, cfg.temperature, Mode::Train)?;
        // The rollout's mask: tool output is in the context but not in any loss or count.
        scored.mask = ro.mask_rows(rows.clone(), dev)?;
        let (logp, entropy) = (&scored.logp, &scored.entropy);
        let mask = &scored.mask;
        let old = if sc.old_from_update {
            // bf16 rollouts, one optimizer step per rollout: this forward runs with the weights
            // that sampled, in f32, so its detached log-probs are the exact old policy's.
            let f32_old = (logp.detach() * mask)?;
            let sampler = batch::rows_tensor(&sc.old, rows.clone(), dev)?;
            let gap = loss::tensor_to_mat(&(&sampler - &f32_old)?.abs()?)?;
            let m = loss::tensor_to_mat(mask)?;
            let tokens: f64 = m.data.iter().map(|&v| v as f64).sum();
            if tokens > 0.0 {
                acc.add("rollout/logprob_gap", gap.data.iter().zip(&m.data).map(|(g, m)| (*g * *m) as f64).sum::<f64>() / tokens, tokens);
            }
            f32_old
        } else {
            batch::rows_tensor(&sc.old, rows.clone(), dev)?
        };
        let mut adv_mat = Mat::new(rows.len(), a.advantages.cols, a.advantages.data[rows.start * a.advantages.cols..rows.end * a.advantages.cols].to_vec())?;
        if let Some(e) = &cfg.entropy_adv {
            let m = Mat::new(rows.len(), a.advantages.cols, ro.mask.data[rows.start * ro.mask.cols..rows.end * ro.mask.cols].to_vec())?;
            adv_mat = adv::entropy_shaped_advantage(&adv_mat, &loss::tensor_to_mat(&entropy.detach())?, &m, e.alpha, e.kappa)?;
        }
        let advantages = loss::mat_to_tensor(&adv_mat, dev)?;
        let reference = sc.reference.as_ref().map(|r| batch::rows_tensor(r, rows.clone(), dev)).transpose()?;
        acc.add("actor/entropy_update", loss::masked_mean(&entropy.detach(), mask)?.to_scalar::<f32>()? as f64, 1.0);
        let inputs = PolicyInputs { scored: &scored, old: &old, advantages: &advantages, reference: reference.as_ref() };
        let mut total = algo.policy_loss(&inputs, acc)?;
        if cfg.entropy_coeff != 0.0 {
            let bonus = loss::entropy_bonus(entropy, mask, cfg.agg())?;
            total = loss::actor_loss(&total, Some((&bonus, cfg.entropy_coeff)), None)?;
        }
        let kl_coef = cfg.kl_coef_at(step);
        if !cfg.kl_in_reward && kl_coef > 0.0 {
            let reference = reference.as_ref().context("a KL loss needs reference log-probs")?;
            let kl = loss::agg_loss(&loss::kl_penalty(logp, reference, cfg.kl_estimator)?, mask, cfg.agg())?;
            acc.add("actor/kl_loss", kl.to_scalar::<f32>()? as f64, 1.0);
            total = loss::actor_loss(&total, None, Some((&kl, kl_coef)))?;
        }
        Ok(total)
    }
}
