//! The diffusion denoiser against PyTorch: tools/diffusion_reference.py ran transformers'
//! RobertaForMaskedLM (the roberta fixture of tests/fixtures/encoders) through the §5.3
//! formulas written in torch, on the same ids, noise and timesteps, in both padding modes,
//! and committed the losses and the squared norm of the word-embedding gradient. retort's
//! `diffusion::loss::losses` must give the same numbers.

use candle_core::{DType, Device, Tensor};
use retort::diffusion::loss::{losses, DenoiseBatch, Padding};
use retort::diffusion::NoiseSchedule;
use retort::model::encoder::EncoderModel;
use serde_json::Value;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        _ => vec![v.as_f64().unwrap() as f32],
    }
}

fn close(got: f32, want: f32, what: &str) {
    // Relative: L_T is about 4e-5 here (√ᾱ₉₉₉² ≈ 4e-5), so an absolute tolerance would hide it.
    let tol = 1e-4 * want.abs() + 1e-8;
    assert!((got - want).abs() <= tol, "{what}: retort {got}, PyTorch {want}");
}

#[test]
fn denoising_losses_match_pytorch_on_the_roberta_fixture() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/diffusion/roberta_losses.json")).unwrap()).unwrap();
    let lengths: Vec<usize> = fixture["lengths"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let t: Vec<usize> = fixture["t"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let hidden = fixture["hidden"].as_u64().unwrap() as usize;
    let width = *lengths.iter().max().unwrap();
    let noise = Tensor::from_vec(floats(&fixture["noise"]), (lengths.len(), width, hidden), &Device::Cpu).unwrap();
    let schedule = NoiseSchedule::paper();
    for (mode, padding) in [("masked", Padding::Masked), ("reference", Padding::Reference)] {
        let model = EncoderModel::load(&root().join("tests/fixtures/encoders/roberta"), &Device::Cpu, DType::F32, true).unwrap();
        let want = &fixture[mode];
        let padded: Vec<Vec<u32>> = want["ids"].as_array().unwrap().iter().map(|r| floats(r).iter().map(|&x| x as u32).collect()).collect();
        let rows: Vec<Vec<u32>> = padded.iter().zip(&lengths).map(|(r, &n)| r[..n].to_vec()).collect();
        let batch = DenoiseBatch::new(&rows, model.config.pad_token_id, 0, padding, &Device::Cpu).unwrap();
        assert_eq!(batch.ids.to_vec2::<u32>().unwrap(), padded, "{mode}: the padded ids");
        let (l, _) = losses(&model.encoder, &schedule, &batch, &t, &noise).unwrap();
        let vec = |x: &Tensor| x.to_vec1::<f32>().unwrap();
        for (name, got) in [("mse", vec(&l.mse)), ("t_loss", vec(&l.t_loss)), ("round_per_row", vec(&l.round_per_row))] {
            for (i, (g, w)) in got.iter().zip(floats(&want[name])).enumerate() {
                close(*g, w, &format!("{mode} {name}[{i}]"));
            }
        }
        close(l.round.to_scalar::<f32>().unwrap(), want["round"].as_f64().unwrap() as f32, &format!("{mode} round"));
        close(l.total.to_scalar::<f32>().unwrap(), want["total"].as_f64().unwrap() as f32, &format!("{mode} total"));
        // The gradient reaches the word embeddings through x₀ as input and as target.
        let grads = l.total.backward().unwrap();
        let vars = model.vars();
        let word = &vars.iter().find(|(n, _)| n == "embeddings.word_embeddings.weight").unwrap().1;
        let g = grads.get(word.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let want_g = want["word_embedding_grad_sq"].as_f64().unwrap() as f32;
        assert!((g - want_g).abs() <= 1e-3 * want_g.abs().max(1e-6), "{mode}: |grad|² retort {g}, PyTorch {want_g}");
    }
}
