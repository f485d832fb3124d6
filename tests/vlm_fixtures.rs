//! Qwen2-VL against transformers: the committed fixture made by tools/make_vlm_fixtures.py (a
//! tiny random `qwen2_vl` folder with a real preprocessor config, four images and
//! transformers' outputs). Pixel preprocessing, M-RoPE positions, logits at every position for
//! a prompt with one image and one with two, and greedy continuations through the KV cache.

use candle_core::{DType, Device, Tensor};
use retort::model::vision::{load_and_preprocess, ImagePatches, Qwen2Vl};
use retort::model::{AttnMask, KvCache, Mode, RopePositions};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/qwen2_vl")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// (max |a − b|, mean |a − b|).
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    (d.iter().cloned().fold(0.0, f32::max), d.iter().sum::<f32>() / d.len() as f32)
}

fn images(model: &Qwen2Vl, names: &[&str]) -> Vec<ImagePatches> {
    names.iter().map(|n| load_and_preprocess(&dir().join(n), &model.processor).unwrap()).collect()
}

#[test]
fn pixels_match_the_transformers_processor() {
    let model = Qwen2Vl::load(&dir(), &Device::Cpu, DType::F32, false).unwrap();
    let exp = expected();
    for (name, want) in exp["pixels"].as_object().unwrap() {
        let got = load_and_preprocess(&dir().join(name), &model.processor).unwrap();
        let grid: Vec<usize> = u32s(&want["grid_thw"]).into_iter().map(|x| x as usize).collect();
        assert_eq!(got.grid.to_vec(), grid, "{name} grid");
        let (max, mean) = diff(&got.values, &floats(&want["pixel_values"]));
        eprintln!("{name}: max |Δpixel| {max:.3e}, mean {mean:.3e}");
        if name == "a.png" || name == "b.webp" {
            // No resize: rescale, normalise and patchify only, so float rounding at most.
            assert!(max < 1e-5, "{name}: max |Δ| {max}");
        } else {
            // Resized: the image crate's bicubic keeps f32 between its two passes where PIL
            // rounds to u8, and JPEG decoders differ by a level here and there: a few levels
            // of 255 at worst, far less on average (one level is 1/255/std ≈ 0.015).
            assert!(max < 0.12 && mean < 0.02, "{name}: max |Δ| {max}, mean {mean}");
        }
    }
}

#[test]
fn logits_and_positions_match_transformers_for_one_and_two_images() {
    let dev = Device::Cpu;
    let exp = expected();
    for trainable in [false, true] {
        let model = Qwen2Vl::load(&dir(), &dev, DType::F32, trainable).unwrap();
        for prompt in exp["prompts"].as_array().unwrap() {
            let names: Vec<&str> = prompt["images"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
            let ids = u32s(&prompt["input_ids"]);
            let p = model.prepare(&[ids.clone()], &[images(&model, &names)], 0).unwrap();
            let RopePositions::Multi { ids: pos, .. } = &p.positions;
            let want_pos: Vec<u32> = prompt["position_ids"].as_array().unwrap().iter().flat_map(u32s).collect();
            assert_eq!(pos.flatten_all().unwrap().to_vec1::<u32>().unwrap(), want_pos, "M-RoPE positions");
            assert_eq!(p.deltas, vec![prompt["rope_delta"].as_i64().unwrap()]);
            for mode in [Mode::Train, Mode::Infer] {
                let out = model.forward_prepared(&p, None, mode).unwrap();
                let (max, _) = diff(&out.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &floats(&prompt["logits"]));
                eprintln!("{} image(s), trainable {trainable}, {mode:?}: max |Δlogit| {max:.3e}", names.len());
                assert!(max < 1e-4, "{} image(s) {mode:?}: max |Δlogit| {max}", names.len());
            }
        }
    }
}

#[test]
fn a_left_padded_batch_of_both_prompts_gives_the_same_logits() {
    let dev = Device::Cpu;
    let exp = expected();
    let model = Qwen2Vl::load(&dir(), &dev, DType::F32, false).unwrap();
    let prompts = exp["prompts"].as_array().unwrap();
    let rows: Vec<Vec<u32>> = prompts.iter().map(|p| u32s(&p["input_ids"])).collect();
    let imgs: Vec<Vec<ImagePatches>> = prompts
        .iter()
        .map(|p| images(&model, &p["images"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect::<Vec<_>>()))
        .collect();
    let p = model.prepare(&rows, &imgs, 0).unwrap();
    let out = model.forward_prepared(&p, None, Mode::Infer).unwrap();
    let len = rows.iter().map(Vec::len).max().unwrap();
    for (b, prompt) in prompts.iter().enumerate() {
        let n = rows[b].len();
        let got = out.logits.get(b).unwrap().narrow(0, len - n, n).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (max, _) = diff(&got, &floats(&prompt["logits"]));
        assert!(max < 1e-4, "row {b} padded: max |Δlogit| {max}");
    }
}

#[test]
fn greedy_continuations_through_the_cache_match_transformers() {
    let dev = Device::Cpu;
    let exp = expected();
    let model = Qwen2Vl::load(&dir(), &dev, DType::F32, false).unwrap();
    for prompt in exp["prompts"].as_array().unwrap() {
        let names: Vec<&str> = prompt["images"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        let ids = u32s(&prompt["input_ids"]);
        let p = model.prepare(&[ids.clone()], &[images(&model, &names)], 0).unwrap();
        let mut cache = KvCache::new(model.config.text.num_hidden_layers);
        let out = model.forward_prepared(&p, Some(&mut cache), Mode::Infer).unwrap();
        let argmax = |t: &Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        let mut next = argmax(&out.logits.get(0).unwrap().get(ids.len() - 1).unwrap());
        let mut got = vec![next];
        while got.len() < 8 {
            let total = ids.len() + got.len();
            let mask = AttnMask::new(&[vec![true; total]], 1, &dev).unwrap();
            let positions = model.step_positions(&mask, &p.deltas).unwrap();
            let embeds = model.decoder.embed_tokens(&Tensor::new(&[[next]], &dev).unwrap()).unwrap();
            let h = model.decoder.forward_embeds_at(&embeds, &mask, Some(&positions), Some(&mut cache), Mode::Infer).unwrap();
            next = argmax(&model.decoder.logits(&h).unwrap().get(0).unwrap().get(0).unwrap());
            got.push(next);
        }
        assert_eq!(got, u32s(&prompt["greedy_continuation"]), "{} image(s)", names.len());
    }
}
