//! The tiny VLM preset, `generate --image` and multimodal SFT through the binary: a
//! `retort model init --preset tiny-vlm` folder opens in transformers with the same logits,
//! generates from an image, trains on multimodal chat rows with a falling loss, per-part
//! learning rates and freezing, and resumes bit-identically.

#[path = "support/python_tool.rs"]
mod python_tool;
#[path = "support/vlm.rs"]
mod vlm;
use python_tool::run_python_tool;
use retort::model::vision::{load_and_preprocess, Qwen2Vl};
use retort::model::Mode;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vlm::{init, losses, ok, retort, run_dir, write_image};

fn python_with_transformers() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("RETORT_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec![".venv/bin/python".into(), "python3".into()],
    };
    candidates.into_iter().find(|py| {
        Command::new(py).args(["-c", "import torch, transformers"]).output().map(|o| o.status.success()).unwrap_or(false)
    })
}

#[test]
fn the_tiny_vlm_preset_opens_in_transformers_with_the_same_logits() {
    let d = tempfile::tempdir().unwrap();
    let dir = init(d.path());
    for f in ["config.json", "preprocessor_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    let info = ok(retort().args(["model", "info", dir.to_str().unwrap()]).output().unwrap());
    // 142208 + 98816 + 801792 parameters (the counts `model init` and the sft stage report).
    for want in ["vision tower   depth 2, width 64, heads 4", "142208 parameters", "98816 parameters", "parameters     1042816", "3136..50176 pixels after smart_resize: 4..64 tokens"] {
        assert!(info.contains(want), "{want:?} not in\n{info}");
    }
    let model = Qwen2Vl::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
    let img = d.path().join("x.png");
    write_image(&img, 70, [200, 30, 40]);
    let patches = load_and_preprocess(&img, &model.processor).unwrap();
    // 70×70 resizes to 56×56 (70/28 = 2.5 rounds half to even, to 2): the resize path runs;
    // one token per 28×28 block.
    let n = patches.tokens(2);
    let c = &model.config;
    let ids: Vec<u32> = [vec![1, 40, 41, c.vision_start_token_id], vec![c.image_token_id; n], vec![c.vision_end_token_id, 50, 60, 70]].concat();
    let p = model.prepare(&[ids.clone()], &[vec![patches.clone()]], 0).unwrap();
    let ours = model.forward_prepared(&p, None, Mode::Infer).unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let Some(python) = python_with_transformers() else {
        eprintln!("SKIPPED: no python with torch+transformers (set RETORT_PYTHON)");
        return;
    };
    let rows: Vec<Vec<f32>> = patches.values.chunks(patches.dim).map(<[f32]>::to_vec).collect();
    let request = serde_json::json!({"input_ids": ids, "pixel_values": rows, "image_grid_thw": [patches.grid]});
    let v = run_python_tool(&python, "hf_vlm_logits.py", &[&dir], &request, "tiny-vlm");
    let theirs: Vec<f32> = v["logits"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect();
    assert_eq!(ours.len(), theirs.len());
    let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("tiny-vlm round trip: {} image tokens, max |Δlogit| {max:.3e}", n);
    assert!(max < 1e-4, "max |Δlogit| {max}");
}

#[test]
fn generate_takes_images_and_explains_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    let dir = init(d.path());
    let img = d.path().join("red.png");
    write_image(&img, 56, [220, 20, 20]);
    let run = |extra: &[&str]| {
        let mut c = retort();
        c.args(["generate", dir.to_str().unwrap(), "--greedy", "--max-new-tokens", "6"]).args(extra);
        c.output().unwrap()
    };
    let a = run(&["--image", img.to_str().unwrap(), "--prompt", "<image>What colour?", "--chat"]);
    let err = String::from_utf8_lossy(&a.stderr).into_owned();
    ok(a);
    assert!(err.contains("(4 from 1 image(s))"), "{err}");
    let b = run(&["--image", img.to_str().unwrap(), "--prompt", "<image>What colour?", "--chat"]);
    assert_eq!(b.stdout, run(&["--image", img.to_str().unwrap(), "--prompt", "<image>What colour?", "--chat"]).stdout, "greedy is deterministic");
    let empty = d.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let e = run(&["--image", empty.to_str().unwrap(), "--prompt", "hi"]);
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("empty.png") && msg.contains("empty"), "{msg}");
    let e = run(&["--image", img.to_str().unwrap(), "--prompt", "<image><image>two?"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("2 <image> marker(s) but 1"), "{}", String::from_utf8_lossy(&e.stderr));
}

const COLOURS: [(&str, [u8; 3]); 4] = [("red", [220, 20, 20]), ("green", [20, 200, 40]), ("blue", [30, 40, 220]), ("yellow", [230, 220, 30])];

/// A multimodal JSONL beside its images, and a profile training the tiny VLM on it.
fn sft_profile(dir: &Path, model: &Path, name: &str, vision: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    let mut rows = String::new();
    for (i, (colour, rgb)) in COLOURS.iter().enumerate() {
        write_image(&dir.join(format!("imgs/{colour}.png")), 112, *rgb);
        rows += &format!(
            "{{\"messages\":[{{\"role\":\"user\",\"content\":\"<image>Colour?\"}},{{\"role\":\"assistant\",\"content\":\"{colour}\"}}],\"images\":[\"imgs/{colour}.png\"]}}\n"
        );
        if i == 0 {
            // Two images and two assistant turns in one row.
            rows += "{\"messages\":[{\"role\":\"user\",\"content\":\"<image><image>Same?\"},{\"role\":\"assistant\",\"content\":\"no\"},\
                     {\"role\":\"user\",\"content\":\"First?\"},{\"role\":\"assistant\",\"content\":\"red\"}],\"images\":[\"imgs/red.png\",\"imgs/blue.png\"]}\n";
        }
    }
    std::fs::write(dir.join("rows.jsonl"), rows).unwrap();
    let profile = dir.join(format!("{name}.toml"));
    std::fs::write(
        &profile,
        format!(
            "[run]\nname = \"{name}\"\nseed = 4\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {:?}\nsteps = 30\nbatch_size = 4\ngrad_accum = 2\n\
             lr = 3e-3\nwarmup_steps = 0\nmax_len = 128\ncheckpoint_every = 3\neval_every = 0\nsample_every = 0\n\n\
             [stage.data]\njsonl = {:?}\n\n[stage.vision]\n{vision}\n",
            model.to_str().unwrap(),
            dir.join("rows.jsonl").to_str().unwrap()
        ),
    )
    .unwrap();
    profile
}

fn tensors(run: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let m = Qwen2Vl::load(&run.join("sft/model"), &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
    let mut named = m.vision.named_tensors();
    named.extend(m.decoder.named_tensors());
    named.into_iter().map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn multimodal_sft_learns_freezes_parts_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = init(dir);
    let before = {
        let m = Qwen2Vl::load(&model, &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
        let mut named = m.vision.named_tensors();
        named.extend(m.decoder.named_tensors());
        named.into_iter().map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect::<std::collections::HashMap<_, _>>()
    };
    let profile = sft_profile(dir, &model, "all", "tower_lr = 1e-3\nprojector_lr = 3e-3\nllm_lr = 3e-3");
    ok(retort().args(["run", profile.to_str().unwrap(), "--headless", "--name", "whole"]).current_dir(dir).output().unwrap());
    let whole = run_dir(dir, "whole");
    let l = losses(&whole);
    eprintln!("losses: {l:?}");
    assert_eq!(l.len(), 30, "one loss per step");
    let (first, last) = (l[..3].iter().sum::<f64>() / 3.0, l[27..].iter().sum::<f64>() / 3.0);
    assert!(last < 0.7 * first, "the loss falls: first steps {first:.3}, last steps {last:.3}");
    let after = tensors(&whole);
    for name in ["visual.blocks.0.attn.qkv.weight", "visual.merger.mlp.0.weight", "model.layers.0.self_attn.q_proj.weight"] {
        assert_ne!(after[name], before[name], "{name} trained");
    }

    // Frozen tower: its weights come out bit-identical, the others move.
    let profile = sft_profile(dir, &model, "frozen", "freeze = [\"tower\"]");
    ok(retort().args(["run", profile.to_str().unwrap(), "--headless", "--name", "frozen"]).current_dir(dir).output().unwrap());
    let frozen = tensors(&run_dir(dir, "frozen"));
    for (name, w) in &frozen {
        let is_tower = name.starts_with("visual.") && !name.starts_with("visual.merger.");
        assert_eq!(w == &before[name], is_tower, "{name}: frozen iff in the tower");
    }

    // A graceful stop after a checkpoint resumes to the same weights bit for bit.
    let profile = sft_profile(dir, &model, "all", "tower_lr = 1e-3\nprojector_lr = 3e-3\nllm_lr = 3e-3");
    let mut child = retort()
        .args(["run", profile.to_str().unwrap(), "--headless", "--name", "stopped"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let stopped = loop {
        if let Some(p) = std::fs::read_dir(dir.join("runs")).ok().and_then(|mut it| {
            it.find_map(|e| {
                let p = e.ok()?.path();
                p.file_name()?.to_str()?.starts_with("stopped-").then_some(p)
            })
        }) {
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
    let a = std::fs::read(whole.join("sft/model/model.safetensors")).unwrap();
    let b = std::fs::read(stopped.join("sft/model/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ");
}

#[test]
fn bad_multimodal_rows_are_named() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = init(dir);
    let profile = sft_profile(dir, &model, "bad", "");
    std::fs::write(dir.join("rows.jsonl"), "{\"messages\":[{\"role\":\"user\",\"content\":\"<image>x\"},{\"role\":\"assistant\",\"content\":\"y\"}],\"images\":[\"imgs/none.png\"]}\n").unwrap();
    let out = retort().args(["run", profile.to_str().unwrap(), "--headless", "--name", "bad"]).current_dir(dir).output().unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("rows.jsonl:1") && all.contains("none.png"), "{all}");
}
