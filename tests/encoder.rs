//! The encoders against transformers: committed fixtures made by tools/make_model_fixtures.py
//! (bert: BertForPreTraining with `bert.` prefix, pooler, MLM and NSP heads; roberta:
//! RobertaForMaskedLM, tanh GELU, a left-padded row; bert_bare: a prefix-less BertModel with
//! only a pooler, ReLU). Each holds a padded batch of three texts and transformers' hidden
//! states, pooled output and MLM logits; retort must tokenize the texts to the same ids and
//! reproduce the numbers at every real position.

use candle_core::{DType, Device, Tensor};
use retort::model::encoder::{EncoderModel, EncoderTokenizer, Heads};
use serde_json::Value;
use std::path::PathBuf;

const FIXTURES: [&str; 3] = ["bert", "roberta", "bert_bare"];
const ATOL: f32 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap()).unwrap()
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        _ => vec![v.as_f64().unwrap() as f32],
    }
}

fn tensor(rows: &[Vec<u32>]) -> Tensor {
    Tensor::from_vec(rows.concat(), (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

/// The values of (B, L, X) at the positions where `mask` is 1, row by row, flattened.
fn valid(t: &Tensor, mask: &[Vec<u32>]) -> Vec<f32> {
    let mut out = Vec::new();
    for (b, row) in mask.iter().enumerate() {
        let rows = t.get(b).unwrap().to_vec2::<f32>().unwrap();
        for (r, &m) in rows.into_iter().zip(row) {
            if m == 1 {
                out.extend(r);
            }
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32], what: &str) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn encoders_match_transformers_on_a_padded_batch() {
    for name in FIXTURES {
        let exp = expected(name);
        let dir = fixture_dir(name);
        let ids = rows_u32(&exp["input_ids"]);
        let mask = rows_u32(&exp["attention_mask"]);
        let types = rows_u32(&exp["token_type_ids"]);
        for trainable in [false, true] {
            let m = EncoderModel::load(&dir, &Device::Cpu, DType::F32, trainable).unwrap();
            let heads = Heads { pooler: exp["heads"]["pooler"].as_bool().unwrap(), mlm: exp["heads"]["mlm"].as_bool().unwrap() };
            assert_eq!(m.encoder.heads(), heads, "{name}: heads");
            assert_eq!(m.varmap.is_some(), trainable);

            let hidden = m.encoder.forward(&tensor(&ids), &tensor(&mask), Some(&tensor(&types))).unwrap();
            let d = max_abs_diff(&valid(&hidden, &mask), &floats(&exp["hidden"]), name);
            eprintln!("{name}: last hidden state max |diff| {d:.2e}");
            assert!(d < ATOL, "{name}: hidden differs by {d}");

            if heads.pooler {
                let pooled = m.encoder.pooler_output(&hidden).unwrap();
                let d = max_abs_diff(&pooled.flatten_all().unwrap().to_vec1().unwrap(), &floats(&exp["pooled"]), name);
                eprintln!("{name}: pooled output max |diff| {d:.2e}");
                assert!(d < ATOL, "{name}: pooled differs by {d}");
            } else {
                assert!(m.encoder.pooler_output(&hidden).is_err());
            }
            if heads.mlm {
                let logits = m.encoder.mlm_logits(&hidden).unwrap();
                let d = max_abs_diff(&valid(&logits, &mask), &floats(&exp["mlm_logits"]), name);
                eprintln!("{name}: MLM logits max |diff| {d:.2e}");
                assert!(d < ATOL, "{name}: MLM logits differ by {d}");
            } else {
                assert!(m.encoder.mlm_logits(&hidden).is_err());
            }
        }
    }
}

#[test]
fn tokenizer_gives_transformers_ids_for_the_fixture_texts() {
    for name in FIXTURES {
        let exp = expected(name);
        let dir = fixture_dir(name);
        let m = EncoderModel::load(&dir, &Device::Cpu, DType::F32, false).unwrap();
        let tok = EncoderTokenizer::load(&dir, &m.config, None).unwrap();
        let ids = rows_u32(&exp["input_ids"]);
        let mask = rows_u32(&exp["attention_mask"]);
        for (r, text) in exp["texts"].as_array().unwrap().iter().enumerate() {
            let (first, second) = (text[0].as_str().unwrap(), text[1].as_str());
            if second.is_some() && m.config.type_vocab_size > 1 {
                continue; // sentence pairs are not part of retort's text API
            }
            let want: Vec<u32> = ids[r].iter().zip(&mask[r]).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect();
            assert_eq!(tok.encode(first).unwrap().0, want, "{name} row {r}");
        }
    }
}

#[test]
fn forward_embeds_reproduces_forward_on_the_fixtures() {
    // The denoiser path: word embeddings in, same hidden states out (roberta's left-padded
    // row included, its positions counted from the mask).
    for name in ["bert", "roberta"] {
        let exp = expected(name);
        let m = EncoderModel::load(&fixture_dir(name), &Device::Cpu, DType::F32, false).unwrap();
        let ids = tensor(&rows_u32(&exp["input_ids"]));
        let mask_rows = rows_u32(&exp["attention_mask"]);
        let mask = tensor(&mask_rows);
        let a = m.encoder.forward(&ids, &mask, None).unwrap();
        let b = m.encoder.forward_embeds(&m.encoder.embed_tokens(&ids).unwrap(), &mask).unwrap();
        let d = max_abs_diff(&valid(&a, &mask_rows), &valid(&b, &mask_rows), name);
        assert!(d < 1e-5, "{name}: forward_embeds differs by {d}");
    }
}

#[test]
fn layout_reports_prefix_heads_and_ignored_tensors() {
    let (cfg, layout) = retort::model::encoder::inspect(&fixture_dir("bert")).unwrap();
    assert_eq!(cfg.architecture.as_deref(), Some("BertForPreTraining"));
    assert_eq!(layout.prefix, "bert.");
    assert_eq!(layout.heads, Heads { pooler: true, mlm: true });
    let ignored: Vec<&str> = layout.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ignored, ["cls.seq_relationship.bias", "cls.seq_relationship.weight"]);
    let (_, bare) = retort::model::encoder::inspect(&fixture_dir("bert_bare")).unwrap();
    assert_eq!((bare.prefix.as_str(), bare.heads), ("", Heads { pooler: true, mlm: false }));
}

#[test]
fn a_bad_shape_on_disk_is_named_with_file_and_shapes() {
    let src = fixture_dir("roberta");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.insert("roberta.encoder.layer.1.output.dense.bias".into(), Tensor::zeros(31, DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let err = EncoderModel::load(dir.path(), &Device::Cpu, DType::F32, false).err().unwrap().to_string();
    assert!(err.contains("`roberta.encoder.layer.1.output.dense.bias`"), "{err}");
    assert!(err.contains("[31]") && err.contains("[32]") && err.contains("model.safetensors"), "{err}");
}

fn retort(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_retort")).args(args).env("RAYON_NUM_THREADS", "2").output().unwrap()
}

#[test]
fn embed_command_prints_what_the_library_computes() {
    use retort::model::encoder::{embed_texts, Pooling};
    let dir = fixture_dir("roberta");
    let texts = ["A dog ran.", "Is this a test? Yes, it is."];
    let out = retort(&["embed", dir.to_str().unwrap(), "--text", texts[0], "--text", texts[1], "--json", "--pooling", "cls", "--normalize"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Vec<f32>> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let m = EncoderModel::load(&dir, &Device::Cpu, DType::F32, false).unwrap();
    let tok = EncoderTokenizer::load(&dir, &m.config, None).unwrap();
    let want = embed_texts(&m.encoder, &tok, &texts, Pooling::Cls, true, 8).unwrap();
    assert_eq!(got, want);
    let norm: f32 = got[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    // Preview mode: one line per text with its norm.
    let out = retort(&["embed", dir.to_str().unwrap(), "--text", texts[0]]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("   0  norm ") && text.contains("\"A dog ran.\""), "{text}");
}

#[test]
fn embed_command_explains_bad_inputs() {
    let dir = fixture_dir("bert_bare");
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = tmp.path().join("t.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"fine\"}\n\n{\"body\": \"no text key\"}\n").unwrap();
    let out = retort(&["embed", dir.to_str().unwrap(), "--jsonl", jsonl.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("t.jsonl:3") && err.contains("`text`"), "{err}");
    let ok = retort(&["embed", dir.to_str().unwrap(), "--jsonl", jsonl.to_str().unwrap(), "--text-key", "body"]);
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(!ok.status.success() && err.contains("t.jsonl:1"), "{err}");

    let decoder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qwen2_tied");
    let out = retort(&["embed", decoder.to_str().unwrap(), "--text", "hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("decoder (qwen2)") && err.contains("bert or roberta"), "{err}");
}

#[test]
fn model_info_describes_encoder_folders() {
    let out = retort(&["model", "info", fixture_dir("bert").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = String::from_utf8(out.stdout).unwrap();
    let (_, layout) = retort::model::encoder::inspect(&fixture_dir("bert")).unwrap();
    for want in [
        "BertForPreTraining (encoder; base BertModel)",
        "layers 2, heads 4, head_dim 8, hidden 32, intermediate 64, vocab 120, positions 48",
        &format!("parameters     {}", layout.num_parameters()),
        "pooler yes, masked-LM yes; tensor prefix `bert.`",
        "F32 (44 tensors",
        "cls.seq_relationship.bias, cls.seq_relationship.weight",
    ] {
        assert!(info.contains(want), "missing {want:?} in\n{info}");
    }
    let info = String::from_utf8(retort(&["model", "info", fixture_dir("roberta").to_str().unwrap()]).stdout).unwrap();
    assert!(info.contains("pooler no, masked-LM yes; tensor prefix `roberta.`") && info.contains("at most 46 tokens"), "{info}");
}
