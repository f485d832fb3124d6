//! The trainer scaffold: what every training stage does around its own step, written once.
//! `sft` and `rl` use it; a future stage (a denoiser, a contrastive retriever, a VLM) gets
//! the same behaviour by calling the same few methods:
//!
//! ```text
//! let run = Scaffold::new(&ctx.dir, steps, checkpoint_every, keep, hint);
//! let mut state = run.resume(ctx, &mut [("params", &mut opt)])?.unwrap_or(fresh);
//! while state.step < steps {
//!     run.poll(ctx, &state, &[("params", &opt)])?;    // pause / stop / checkpoint now
//!     … one step; run.check_finite("loss", &loss, step)? …
//!     run.after_step(ctx, &state, &[("params", &opt)])?;  // periodic checkpoint
//! }
//! run.save(ctx, &state, &[("params", &opt)])?;
//! let out = run.write_model(&model_dir, &model.config, |dir| model.save(dir))?;
//! ```
//!
//! - **Controls between steps.** [`Scaffold::poll`] blocks while the run is paused, writes a
//!   checkpoint when one is asked for, and on stop writes one and returns [`Interrupted`].
//! - **Checkpoints and resume.** A checkpoint (`train/checkpoint.rs`) holds each named
//!   optimizer's weights and moments and the stage's [`TrainState`]; [`Scaffold::resume`]
//!   restores the newest one. A stage whose data stream is a pure function of (seed, step)
//!   then continues bit-identically.
//! - **Non-finite stop.** [`Scaffold::check_finite`] stops training on a NaN or infinite
//!   loss, naming the metric and the last good checkpoint (which stays the newest).
//! - **The final model folder** is written into a hidden sibling and renamed into place with
//!   its side files (tokenizer, chat template, generation config), so `model/` is complete
//!   or absent, never half-written.

use crate::model::ModelConfig;
use crate::stage::{Interrupted, StageCtx};
use crate::train::checkpoint::{self, Checkpoints};
use crate::train::optim::{AdamW, StepReport};
use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A stage's own resume state, saved as `state.json` in every checkpoint.
pub trait TrainState: Serialize + DeserializeOwned {
    /// Optimizer steps finished.
    fn step(&self) -> u64;
}

/// The optimizers a checkpoint holds, each under its checkpoint name (`"params"` is the
/// model being trained; see [`checkpoint::save_trainer`]).
pub type Trainers<'a> = [(&'static str, &'a AdamW)];

pub struct Scaffold {
    stage_dir: PathBuf,
    ckpts: Checkpoints,
    steps: u64,
    checkpoint_every: u64,
    /// What to try when the loss turns non-finite, ending the error message.
    hint: &'static str,
}

impl Scaffold {
    /// The scaffold of a stage in `stage_dir` that trains `steps` steps, checkpoints every
    /// `checkpoint_every` (0: only when stopped and at the end) and keeps the newest `keep`.
    pub fn new(stage_dir: &Path, steps: u64, checkpoint_every: u64, keep: usize, hint: &'static str) -> Scaffold {
        Scaffold { stage_dir: stage_dir.to_path_buf(), ckpts: Checkpoints::new(stage_dir, keep), steps, checkpoint_every, hint }
    }

    /// Restores the newest checkpoint into `trainers` and returns its state (`None`: no
    /// checkpoint, a fresh start).
    pub fn resume<S: TrainState>(&self, ctx: &StageCtx, trainers: &mut [(&'static str, &mut AdamW)]) -> Result<Option<S>> {
        let Some((step, dir)) = self.ckpts.latest() else { return Ok(None) };
        for (name, opt) in trainers.iter_mut() {
            checkpoint::load_trainer(&dir, name, opt)?;
        }
        let state = checkpoint::load_state(&dir)?;
        ctx.events.info(format!("resumed from checkpoint at step {step} ({})", dir.display()));
        Ok(Some(state))
    }

    /// Writes a checkpoint of `state` and `trainers` now and announces it.
    pub fn save<S: TrainState>(&self, ctx: &StageCtx, state: &S, trainers: &Trainers) -> Result<PathBuf> {
        let dir = self.ckpts.save(state.step(), |d| {
            for (name, opt) in trainers {
                checkpoint::save_trainer(d, name, opt)?;
            }
            checkpoint::save_state(d, state)
        })?;
        ctx.events.checkpoint(state.step(), &dir);
        Ok(dir)
    }

    /// Between two steps: blocks while paused, checkpoints when asked to, and on a stop
    /// request checkpoints and returns [`Interrupted`] (the stage returns it as its error).
    pub fn poll<S: TrainState>(&self, ctx: &mut StageCtx, state: &S, trainers: &Trainers) -> Result<()> {
        let pending = ctx.control.poll();
        if pending.stop {
            self.save(ctx, state, trainers)?;
            return Err(Interrupted.into());
        }
        if pending.checkpoint {
            self.save(ctx, state, trainers)?;
        }
        Ok(())
    }

    /// After a finished step: the periodic checkpoint. None after the last step, whose
    /// checkpoint the stage writes when the loop ends.
    pub fn after_step<S: TrainState>(&self, ctx: &StageCtx, state: &S, trainers: &Trainers) -> Result<()> {
        let step = state.step();
        if self.checkpoint_every > 0 && step % self.checkpoint_every == 0 && step != self.steps {
            self.save(ctx, state, trainers)?;
        }
        Ok(())
    }

    /// A progress event: `done` of the stage's steps, in `phase` (e.g. "generate").
    pub fn progress(&self, ctx: &StageCtx, done: u64, phase: Option<&str>) {
        ctx.events.progress(done, Some(self.steps), "step", phase);
    }

    /// `Err` (see [`Scaffold::non_finite`]) when the scalar `loss` is NaN or infinite.
    pub fn check_finite(&self, metric: &str, loss: &Tensor, step: u64) -> Result<()> {
        let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !v.is_finite() {
            return Err(self.non_finite(metric, v, step));
        }
        Ok(())
    }

    /// Applies the accumulated gradients at `lr` for step `step` (1-based). The optimizer skips
    /// an update whose gradient norm is not finite; the skip is reported on the event bus here.
    pub fn apply_update(&self, ctx: &StageCtx, opt: &mut AdamW, lr: f64, max_grad_norm: f64, step: u64) -> Result<StepReport> {
        let report = opt.apply(lr, max_grad_norm)?;
        if !report.applied {
            ctx.events.warn(format!("step {step}: gradient norm is {}, update skipped", report.grad_norm));
        }
        Ok(report)
    }

    /// The error that stops training when `metric` is `value` (not finite) at `step`.
    pub fn non_finite(&self, metric: &str, value: f64, step: u64) -> anyhow::Error {
        let last = self.ckpts.latest().map(|(s, _)| format!("step {s}")).unwrap_or_else(|| "none yet".into());
        anyhow::anyhow!("`{metric}` is {value} at step {step}; training stopped. The last good checkpoint ({last}) stays the latest. {}", self.hint)
    }

    /// Writes the stage's final model folder `<stage>/model`: `save` writes the weights and
    /// config into a hidden sibling folder, the side files of `source` (tokenizer, chat
    /// template, …) join them, then the model's own generation config, and the folder is
    /// renamed into place. On any failure nothing is left behind.
    pub fn write_model(&self, source: &Path, config: &ModelConfig, save: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let out = self.stage_dir.join("model");
        let tmp = self.stage_dir.join(".model.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let written = save(&tmp)
            .and_then(|()| crate::model::init::copy_side_files(source, &tmp))
            .and_then(|()| {
                // The copied side files may carry an older generation_config.json; the model's own wins.
                let json = serde_json::to_string_pretty(&config.generation_config_json())?;
                Ok(crate::fsutil::write_atomic(&tmp.join("generation_config.json"), json.as_bytes())?)
            })
            .and_then(|()| crate::fsutil::replace_dir(&tmp, &out));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("cannot write the model folder {}", out.display())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{ControlRx, Emitter};
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct State {
        step: u64,
    }

    impl TrainState for State {
        fn step(&self) -> u64 {
            self.step
        }
    }

    #[test]
    fn checkpoints_periodically_and_resumes_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = crossbeam_channel::unbounded();
        let mut control = ControlRx::detached();
        let outputs = BTreeMap::new();
        let ctx = StageCtx {
            run_dir: dir.path(),
            dir: dir.path().join("s"),
            name: "s".into(),
            seed: 0,
            device: candle_core::Device::Cpu,
            dtype: None,
            events: Emitter::new(tx),
            control: &mut control,
            outputs: &outputs,
            resuming: false,
        };
        let var = candle_core::Var::zeros(2, DType::F32, &candle_core::Device::Cpu).unwrap();
        let params = vec![crate::train::optim::Param { name: "w".into(), var, lr_scale: 1.0, decay: false }];
        let mut opt = AdamW::new(params, Default::default());
        let run = Scaffold::new(&ctx.dir, 5, 2, 10, "");
        assert!(run.resume::<State>(&ctx, &mut [("params", &mut opt)]).unwrap().is_none());
        for step in 1..=5 {
            run.after_step(&ctx, &State { step }, &[("params", &opt)]).unwrap();
        }
        // Steps 2 and 4; not 5, the last, which the stage saves after its loop.
        assert_eq!(Checkpoints::new(&ctx.dir, 10).list().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 4]);
        let state: State = run.resume(&ctx, &mut [("params", &mut opt)]).unwrap().unwrap();
        assert_eq!(state, State { step: 4 });
        let err = run.non_finite("loss", f64::NAN, 5).to_string();
        assert!(err.contains("`loss` is NaN at step 5") && err.contains("checkpoint (step 4) stays the latest"), "{err}");
    }

    #[test]
    fn the_model_folder_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("tokenizer.json"), "{}").unwrap();
        let config = ModelConfig::preset("tiny", 20).unwrap();
        let run = Scaffold::new(dir.path(), 1, 0, 1, "");
        let failed = run.write_model(&source, &config, |d| {
            std::fs::create_dir_all(d)?;
            std::fs::write(d.join("model.safetensors"), "half")?;
            anyhow::bail!("disk full")
        });
        assert!(failed.unwrap_err().to_string().contains("cannot write the model folder"));
        assert!(!dir.path().join("model").exists() && !dir.path().join(".model.tmp").exists());
        for weights in ["first", "second"] {
            let out = run
                .write_model(&source, &config, |d| {
                    std::fs::create_dir_all(d)?;
                    Ok(std::fs::write(d.join("model.safetensors"), weights)?)
                })
                .unwrap();
            assert_eq!(std::fs::read_to_string(out.join("model.safetensors")).unwrap(), weights);
            assert!(out.join("tokenizer.json").is_file() && out.join("generation_config.json").is_file());
        }
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 2, "only src/ and model/ remain: {names:?}");
    }
}
