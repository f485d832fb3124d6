//! LoRA on the LLM of the tiny VLM in the sft stage: the loss falls, the frozen tower comes
//! out bit-identical, the projector trains, the LLM's base is untouched except for the merged
//! update W + (alpha / r)·B·A (checked on the host from the saved adapters), and a run stopped
//! after a checkpoint resumes to the same adapters and merged model, bit for bit.

#[path = "support/vlm.rs"]
mod vlm;
use retort::model::vision::Qwen2Vl;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use vlm::{init, losses, ok, retort, run_dir, write_colour_rows};

fn profile(dir: &Path, model: &Path) -> PathBuf {
    write_colour_rows(dir, 112);
    let p = dir.join("lora.toml");
    std::fs::write(
        &p,
        format!(
            "[run]\nname = \"lora\"\nseed = 4\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {:?}\nsteps = 30\nbatch_size = 4\ngrad_accum = 2\n\
             lr = 1e-2\nwarmup_steps = 0\nmax_len = 128\ncheckpoint_every = 3\neval_every = 0\nsample_every = 0\n\n\
             [stage.data]\njsonl = {:?}\n\n[stage.lora]\nrank = 4\nalpha = 8.0\ndropout = 0.1\n\n[stage.vision]\nfreeze = [\"tower\"]\nprojector_lr = 3e-3\n",
            model.to_str().unwrap(),
            dir.join("rows.jsonl").to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

fn tensors(dir: &Path) -> HashMap<String, Vec<f32>> {
    let m = Qwen2Vl::load(dir, &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
    let mut named = m.vision.named_tensors();
    named.extend(m.decoder.named_tensors());
    named.into_iter().map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn lora_on_the_llm_learns_merges_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = init(dir);
    let before = tensors(&model);
    let p = profile(dir, &model);
    let log = ok(retort().args(["run", p.to_str().unwrap(), "--headless", "--name", "whole"]).current_dir(dir).output().unwrap());
    let whole = run_dir(dir, "whole");
    let l = losses(&whole);
    eprintln!("losses: {l:?}");
    assert_eq!(l.len(), 30);
    let (first, last) = (l[..3].iter().sum::<f64>() / 3.0, l[27..].iter().sum::<f64>() / 3.0);
    assert!(last < 0.7 * first, "the loss falls: first steps {first:.3}, last steps {last:.3}\n{log}");

    // The adapters in PEFT's layout, and the merged model.
    let adapter = whole.join("sft/adapter");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()), (Some(4), Some(8.0)));
    let ad = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(ad.len(), 4 * 7 * 2, "A and B on the 7 projections of the 4 layers");
    let after = tensors(&whole.join("sft/model"));
    for (name, w) in &after {
        let tower = name.starts_with("visual.") && !name.starts_with("visual.merger.");
        let projector = name.starts_with("visual.merger.");
        let adapted = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].iter().any(|p| name.ends_with(&format!("{p}.weight")));
        if tower || !(projector || adapted) {
            assert_eq!(w, &before[name], "{name} is frozen");
        } else {
            assert_ne!(w, &before[name], "{name} trained");
        }
    }
    // Merged q_proj of layer 1 = base + (8 / 4)·B·A, on the host.
    let module = "model.layers.1.self_attn.q_proj";
    let a = ad[&format!("base_model.model.{module}.lora_A.weight")].to_vec2::<f32>().unwrap();
    let b = ad[&format!("base_model.model.{module}.lora_B.weight")].to_vec2::<f32>().unwrap();
    let base = &before[&format!("{module}.weight")];
    let merged = &after[&format!("{module}.weight")];
    let cols = a[0].len();
    let mut max = 0f32;
    for (i, row) in b.iter().enumerate() {
        for j in 0..cols {
            let ba: f32 = row.iter().zip(&a).map(|(bk, ak)| bk * ak[j]).sum();
            max = max.max((base[i * cols + j] + 2.0 * ba - merged[i * cols + j]).abs());
        }
    }
    assert!(max < 1e-5, "merged = base + scale·B·A, max |Δ| {max}");

    // Stopped after a checkpoint, resumed: the same adapters and merged model bit for bit.
    let mut child = retort().args(["run", p.to_str().unwrap(), "--headless", "--name", "stopped"]).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let stopped = loop {
        let found = std::fs::read_dir(dir.join("runs")).ok().and_then(|mut it| {
            it.find_map(|e| {
                let p = e.ok()?.path();
                p.file_name()?.to_str()?.starts_with("stopped-").then_some(p)
            })
        });
        if let Some(p) = found {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    };
    while !std::fs::read_to_string(stopped.join("events.jsonl")).unwrap_or_default().contains("\"checkpoint_saved\"") {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let out = ok(retort().args(["run", "--headless", "--resume", stopped.to_str().unwrap()]).current_dir(dir).output().unwrap());
    assert!(out.contains("resumed from checkpoint"), "{out}");
    for f in ["sft/model/model.safetensors", "sft/adapter/adapter_model.safetensors"] {
        assert!(std::fs::read(whole.join(f)).unwrap() == std::fs::read(stopped.join(f)).unwrap(), "{f} differs after resume");
    }
}

#[test]
fn lora_with_a_frozen_llm_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = init(dir);
    let p = profile(dir, &model);
    let text = std::fs::read_to_string(&p).unwrap().replace("freeze = [\"tower\"]", "freeze = [\"llm\"]");
    std::fs::write(&p, text).unwrap();
    let out = retort().args(["run", p.to_str().unwrap(), "--headless", "--name", "refused"]).current_dir(dir).output().unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("freeze lists \"llm\""), "{all}");
}
