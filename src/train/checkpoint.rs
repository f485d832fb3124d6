//! Checkpoint folders of a training stage: `checkpoints/step-00000100/`, written into a
//! temporary folder and renamed into place, so a checkpoint is either complete or absent;
//! only the newest `keep` are kept.

use crate::train::optim::{AdamW, Param};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A trainer's part of a checkpoint: its weights as `<name>.safetensors` and its AdamW
/// moments as `<name>_optimizer.safetensors` (the policy uses the plain names
/// `params.safetensors` / `optimizer.safetensors`).
fn trainer_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    if name == "params" {
        (dir.join("params.safetensors"), dir.join("optimizer.safetensors"))
    } else {
        (dir.join(format!("{name}.safetensors")), dir.join(format!("{name}_optimizer.safetensors")))
    }
}

/// Write an optimizer's parameters and state into checkpoint folder `dir`.
pub fn save_trainer(dir: &Path, name: &str, opt: &AdamW) -> Result<()> {
    let (params, state) = trainer_files(dir, name);
    save_params(opt.params(), &params)?;
    opt.save(&state)
}

/// Restore what [`save_trainer`] wrote.
pub fn load_trainer(dir: &Path, name: &str, opt: &mut AdamW) -> Result<()> {
    let (params, state) = trainer_files(dir, name);
    load_params(opt.params(), &params)?;
    opt.load(&state)
}

/// Write the stage's own resume state as `state.json`.
pub fn save_state<T: serde::Serialize>(dir: &Path, state: &T) -> Result<()> {
    crate::fsutil::write_atomic(&dir.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    Ok(())
}

/// Read what [`save_state`] wrote.
pub fn load_state<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid checkpoint state", path.display()))
}

/// Save trainable parameters by name (safetensors).
pub fn save_params(params: &[Param], path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = params.iter().map(|p| (p.name.clone(), p.var.as_tensor().detach())).collect();
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

/// Restore trainable parameters saved by [`save_params`], converting device and dtype.
pub fn load_params(params: &[Param], path: &Path) -> Result<()> {
    let saved = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("cannot read {}", path.display()))?;
    for p in params {
        let t = saved
            .get(&p.name)
            .with_context(|| format!("{}: missing `{}` (was the checkpoint written by another stage or algorithm?)", path.display(), p.name))?;
        p.var.set(&t.to_device(p.var.device())?.to_dtype(p.var.dtype())?)?;
    }
    Ok(())
}

pub struct Checkpoints {
    pub dir: PathBuf,
    pub keep: usize,
}

impl Checkpoints {
    pub fn new(stage_dir: &Path, keep: usize) -> Checkpoints {
        Checkpoints { dir: stage_dir.join("checkpoints"), keep: keep.max(1) }
    }

    fn name(step: u64) -> String {
        format!("step-{step:08}")
    }

    /// Completed checkpoints, oldest first.
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    pub fn latest(&self) -> Option<(u64, PathBuf)> {
        self.list().pop()
    }

    /// Write a checkpoint for `step` with `write(folder)`, then prune old ones.
    pub fn save(&self, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let final_dir = self.dir.join(Self::name(step));
        let tmp = self.dir.join(format!(".{}.tmp", Self::name(step)));
        let _ = std::fs::remove_dir_all(&tmp);
        let written = std::fs::create_dir_all(&tmp)
            .map_err(anyhow::Error::from)
            .and_then(|()| write(&tmp))
            .and_then(|()| {
                if final_dir.exists() {
                    std::fs::remove_dir_all(&final_dir)?;
                }
                Ok(std::fs::rename(&tmp, &final_dir)?)
            });
        if let Err(e) = written {
            // Nothing half-written stays: the previous checkpoints are intact and a resume uses them.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("cannot write checkpoint {}", final_dir.display())));
        }
        let all = self.list();
        if all.len() > self.keep {
            for (_, old) in &all[..all.len() - self.keep] {
                let _ = std::fs::remove_dir_all(old);
            }
        }
        Ok(final_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_ignores_partial_folders() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(d.path(), 2);
        for s in [10, 20, 30] {
            c.save(s, |p| Ok(std::fs::write(p.join("x"), s.to_string())?)).unwrap();
        }
        std::fs::create_dir_all(c.dir.join(".step-00000040.tmp")).unwrap();
        let steps: Vec<u64> = c.list().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30]);
        assert_eq!(std::fs::read_to_string(c.latest().unwrap().1.join("x")).unwrap(), "30");
    }
}
