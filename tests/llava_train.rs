//! Training a LLaVA folder (tiny-llava) in the sft stage beyond a falling loss: the tower's
//! gradient checkpointing follows the whole graph's losses and weights; a run SIGKILLed after
//! its first checkpoint resumes to the uninterrupted run's weights and loss, bit for bit; and
//! LoRA on the LLM learns, keeps the frozen tower bit-identical and merges W + (alpha / r)·B·A.

#[path = "support/synth_cli.rs"]
mod synth_cli;
#[path = "support/vlm.rs"]
mod vlm;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vlm::{losses, ok, retort, run_dir, write_colour_rows};

/// `model init --preset tiny-llava`, four one-colour images and their rows in `dir`.
fn setup(dir: &Path) -> PathBuf {
    let model = dir.join("llava");
    ok(retort().args(["model", "init", "--preset", "tiny-llava", "--seed", "5", "--out", model.to_str().unwrap()]).output().unwrap());
    write_colour_rows(dir, 70);
    model
}

/// A sft profile `dir/<name>.toml` of `steps` steps on the rows, with `extra` tables appended.
fn profile(dir: &Path, model: &Path, name: &str, steps: u64, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[run]\nname = \"{name}\"\nseed = 4\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {:?}\nsteps = {steps}\nbatch_size = 4\ngrad_accum = 2\n\
             lr = 3e-3\nwarmup_steps = 0\nmax_len = 128\ncheckpoint_every = 3\neval_every = 0\nsample_every = 0\n\n\
             [stage.data]\njsonl = {:?}\n\n{extra}",
            model.to_str().unwrap(),
            dir.join("rows.jsonl").to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

/// Every tensor of a saved folder, by its saved name.
fn tensors(dir: &Path) -> HashMap<String, Vec<f32>> {
    let m = candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    m.into_iter().map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

const ALL_PARTS: &str = "[stage.vision]\ntower_lr = 1e-3\nprojector_lr = 3e-3\nllm_lr = 3e-3\n";

#[test]
fn checkpointed_llava_training_matches_and_resumes_exactly_after_a_kill() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = setup(dir);
    let before = tensors(&model);
    let whole = profile(dir, &model, "whole", 24, ALL_PARTS);
    ok(retort().args(["run", whole.to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap());
    let ckpt = profile(dir, &model, "ckpt", 24, &format!("{ALL_PARTS}checkpoint_tower = true\n"));
    ok(retort().args(["run", ckpt.to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap());
    let (lw, lc) = (losses(&run_dir(dir, "whole")), losses(&run_dir(dir, "ckpt")));
    eprintln!("losses whole {lw:?}\nlosses checkpointed {lc:?}");
    assert_eq!((lw.len(), lc.len()), (24, 24));
    assert!(lw[23] < 0.7 * lw[0], "the loss falls: {lw:?}");
    for (a, b) in lw.iter().zip(&lc) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "checkpointing changed a step's loss: {a} vs {b}");
    }
    // The recomputed tower's gradients are the whole graph's up to float order: after 24 AdamW
    // steps the weights agree closely, and the tower did train.
    let (tw, tc) = (tensors(&run_dir(dir, "whole").join("sft/model")), tensors(&run_dir(dir, "ckpt").join("sft/model")));
    let mut tower_moved = 0;
    for (name, w) in &tw {
        let d = max_diff(w, &tc[name]);
        assert!(d < 1e-4, "{name}: whole graph and checkpointed differ by {d:e}");
        if name.starts_with("vision_tower.") && name.contains("layers.0.") && w != &before[name] {
            tower_moved += 1;
        }
    }
    assert!(tower_moved >= 8, "the tower's first block trained ({tower_moved} tensors moved)");

    // SIGKILLed as soon as the first checkpoint is on disk, resumed: the same weights and
    // final loss as the uninterrupted checkpointed run.
    let killed = profile(dir, &model, "killed", 24, &format!("{ALL_PARTS}checkpoint_tower = true\n"));
    let runs = dir.join("runs");
    let saved = || {
        std::fs::read_dir(&runs).ok().into_iter().flatten().filter_map(|e| e.ok()).any(|e| {
            e.file_name().to_str().is_some_and(|n| n.starts_with("killed-"))
                && std::fs::read_to_string(e.path().join("events.jsonl")).unwrap_or_default().contains("\"checkpoint_saved\"")
        })
    };
    synth_cli::kill_when(dir, &["run", killed.to_str().unwrap(), "--headless"], saved, "a first checkpoint");
    let stopped = run_dir(dir, "killed");
    assert!(!stopped.join("sft/model/model.safetensors").exists(), "the run finished before the kill; nothing to resume");
    let out = ok(retort().args(["run", "--headless", "--resume", stopped.to_str().unwrap()]).current_dir(dir).output().unwrap());
    assert!(out.contains("resumed from checkpoint"), "{out}");
    let a = std::fs::read(run_dir(dir, "ckpt").join("sft/model/model.safetensors")).unwrap();
    let b = std::fs::read(stopped.join("sft/model/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run's");
    let lk = losses(&stopped);
    assert_eq!(lk.last(), lc.last(), "the final step's loss");
}

#[test]
fn lora_on_a_llava_llm_learns_and_merges() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = setup(dir);
    let before = tensors(&model);
    let lora = "[stage.lora]\nrank = 4\nalpha = 8.0\ndropout = 0.1\n\n[stage.vision]\nfreeze = [\"tower\"]\nprojector_lr = 3e-3\nllm_lr = 1e-2\n";
    let p = profile(dir, &model, "lora", 30, lora);
    let log = ok(retort().args(["run", p.to_str().unwrap(), "--headless"]).current_dir(dir).output().unwrap());
    let run = run_dir(dir, "lora");
    let l = losses(&run);
    eprintln!("losses: {l:?}");
    assert_eq!(l.len(), 30);
    let (first, last) = (l[..3].iter().sum::<f64>() / 3.0, l[27..].iter().sum::<f64>() / 3.0);
    assert!(last < 0.7 * first, "the loss falls: first steps {first:.3}, last steps {last:.3}\n{log}");
    let adapter = run.join("sft/adapter");
    let ad = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(ad.len(), 4 * 7 * 2, "A and B on the 7 projections of the 4 layers");
    let after = tensors(&run.join("sft/model"));
    assert_eq!(after.len(), before.len());
    let projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    for (name, w) in &after {
        let projector = name.starts_with("multi_modal_projector.");
        let adapted = name.starts_with("language_model.") && projections.iter().any(|p| name.ends_with(&format!("{p}.weight")));
        if projector || adapted {
            assert_ne!(w, &before[name], "{name} trained");
        } else {
            assert_eq!(w, &before[name], "{name} is frozen (the tower, norms, embeddings)");
        }
    }
    // Merged q_proj of layer 1 = base + (8 / 4)·B·A, on the host.
    let key = |suffix: &str| ad.keys().find(|k| k.ends_with(suffix)).unwrap_or_else(|| panic!("no adapter tensor *{suffix} in {:?}", ad.keys())).clone();
    let a = ad[&key("layers.1.self_attn.q_proj.lora_A.weight")].to_vec2::<f32>().unwrap();
    let b = ad[&key("layers.1.self_attn.q_proj.lora_B.weight")].to_vec2::<f32>().unwrap();
    let name = "language_model.model.layers.1.self_attn.q_proj.weight";
    let (base, merged) = (&before[name], &after[name]);
    let cols = a[0].len();
    let mut max = 0f32;
    for (i, row) in b.iter().enumerate() {
        for j in 0..cols {
            let ba: f32 = row.iter().zip(&a).map(|(bk, ak)| bk * ak[j]).sum();
            max = max.max((base[i * cols + j] + 2.0 * ba - merged[i * cols + j]).abs());
        }
    }
    assert!(max < 1e-5, "merged = base + scale·B·A, max |Δ| {max}");
}
