//! The decoder against transformers: committed fixtures made by tools/make_model_fixtures.py
//! (qwen2 tied + qkv bias, qwen3 q/k norm + explicit head_dim, llama GQA + llama3 rope
//! scaling + attention bias, mistral), plus a live cross-check through tools/hf_logits.py that
//! skips when Python with transformers is unavailable.

#[path = "support/python_tool.rs"]
mod python_tool;
use python_tool::run_python_tool;
use candle_core::{DType, Device, Tensor};
use retort::generate::{generate, FinishReason, SamplingParams};
use retort::model::{token_logprobs, AttnMask, KvCache, Mode, Model, ModelConfig, ModelType};
use retort::rng::Rng;
use serde_json::Value;
use std::path::PathBuf;

const FIXTURES: [&str; 4] = ["qwen2_tied", "qwen3_qknorm", "llama3_scaled", "mistral"];

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

struct Expected {
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    /// Per row, the logits of its valid positions in order.
    logits: Vec<Vec<Vec<f32>>>,
    greedy_prompt: Vec<u32>,
    greedy_continuation: Vec<u32>,
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture_dir(name).join("expected.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let u32s = |v: &Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    let rows = |v: &Value| -> Vec<Vec<u32>> { v.as_array().unwrap().iter().map(u32s).collect() };
    Expected {
        input_ids: rows(&v["input_ids"]),
        attention_mask: rows(&v["attention_mask"]),
        logits: v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|pos| pos.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
                    .collect()
            })
            .collect(),
        greedy_prompt: u32s(&v["greedy_prompt"]),
        greedy_continuation: u32s(&v["greedy_continuation"]),
    }
}

fn ids_tensor(rows: &[Vec<u32>]) -> Tensor {
    let len = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), len), &Device::Cpu).unwrap()
}

/// Asserts |a - b| ≤ atol + rtol·|b| elementwise and returns the largest abs difference.
fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32, what: &str) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let mut worst = 0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        assert!(d <= atol + rtol * y.abs(), "{what}[{i}]: {x} vs {y} (diff {d})");
        worst = worst.max(d);
    }
    worst
}

/// Logits of row `b` at its valid positions from a (B, L, V) tensor.
fn valid_rows(logits: &Tensor, mask: &[Vec<u32>], b: usize) -> Vec<Vec<f32>> {
    let all = logits.get(b).unwrap().to_vec2::<f32>().unwrap();
    all.into_iter().zip(&mask[b]).filter(|(_, &m)| m == 1).map(|(r, _)| r).collect()
}

#[test]
fn logits_match_transformers_in_both_modes_and_dtypes_of_storage() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let exp = expected(name);
        for trainable in [false, true] {
            let model = Model::load(&fixture_dir(name), &dev, DType::F32, trainable).unwrap();
            let mask = AttnMask::from_attention_mask(&exp.attention_mask, &dev).unwrap();
            for mode in [Mode::Train, Mode::Infer] {
                let out = model.decoder.forward(&ids_tensor(&exp.input_ids), &mask, None, mode).unwrap();
                assert_eq!(out.logits.dtype(), DType::F32);
                assert_eq!(out.hidden.dims(), &[2, exp.input_ids[0].len(), model.config.hidden_size]);
                for b in 0..2 {
                    let got = valid_rows(&out.logits, &exp.attention_mask, b);
                    assert_eq!(got.len(), exp.logits[b].len());
                    for (t, (g, e)) in got.iter().zip(&exp.logits[b]).enumerate() {
                        assert_close(g, e, 1e-4, 1e-4, &format!("{name} trainable={trainable} {mode:?} row {b} pos {t}"));
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_weights_give_f32_logits_close_to_reference() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let exp = expected(name);
        let model = Model::load(&fixture_dir(name), &dev, DType::BF16, false).unwrap();
        assert_eq!(model.decoder.dtype(), DType::BF16);
        let mask = AttnMask::from_attention_mask(&exp.attention_mask, &dev).unwrap();
        let out = model.decoder.forward(&ids_tensor(&exp.input_ids), &mask, None, Mode::Infer).unwrap();
        assert_eq!(out.logits.dtype(), DType::F32);
        let got = valid_rows(&out.logits, &exp.attention_mask, 0);
        // bf16 keeps ~3 significant digits; the logits here are O(1).
        for (g, e) in got.iter().zip(&exp.logits[0]) {
            assert_close(g, e, 0.15, 0.05, &format!("{name} bf16"));
        }
    }
}

#[test]
fn greedy_generation_matches_transformers_exactly() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let exp = expected(name);
        let model = Model::load(&fixture_dir(name), &dev, DType::F32, false).unwrap();
        let params = SamplingParams { greedy: true, max_new_tokens: 8, ..Default::default() };
        let out = generate(&model.decoder, std::slice::from_ref(&exp.greedy_prompt), &params, &mut Rng::new(0), None).unwrap();
        assert_eq!(out[0].tokens, exp.greedy_continuation, "{name}");
        assert_eq!(out[0].finish, FinishReason::Length);
    }
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let exp = expected(name);
        let model = Model::load(&fixture_dir(name), &dev, DType::F32, false).unwrap();
        let valid: Vec<Vec<bool>> = exp.attention_mask.iter().map(|r| r.iter().map(|&m| m == 1).collect()).collect();
        let len = valid[0].len();
        let ids = ids_tensor(&exp.input_ids);
        for mode in [Mode::Infer, Mode::Train] {
            let full = model.decoder.forward(&ids, &AttnMask::new(&valid, len, &dev).unwrap(), None, mode).unwrap().logits;
            let mut cache = KvCache::new(model.config.num_hidden_layers);
            let prefill = 6;
            let prefix: Vec<Vec<bool>> = valid.iter().map(|r| r[..prefill].to_vec()).collect();
            let first = model
                .decoder
                .forward(&ids.narrow(1, 0, prefill).unwrap(), &AttnMask::new(&prefix, prefill, &dev).unwrap(), Some(&mut cache), mode)
                .unwrap()
                .logits;
            assert_eq!(cache.seq_len(), prefill);
            let mut steps = vec![first];
            for t in prefill..len {
                let upto: Vec<Vec<bool>> = valid.iter().map(|r| r[..=t].to_vec()).collect();
                let step = model
                    .decoder
                    .forward(&ids.narrow(1, t, 1).unwrap(), &AttnMask::new(&upto, 1, &dev).unwrap(), Some(&mut cache), mode)
                    .unwrap()
                    .logits;
                steps.push(step);
            }
            let incremental = Tensor::cat(&steps, 1).unwrap();
            for b in 0..2 {
                let a = valid_rows(&incremental, &exp.attention_mask, b);
                let f = valid_rows(&full, &exp.attention_mask, b);
                for (x, y) in a.iter().zip(&f) {
                    assert_close(x, y, 2e-5, 1e-5, &format!("{name} {mode:?} cache row {b}"));
                }
            }
            // A mask that does not cover the cached keys is an error, not silent garbage.
            let bad = AttnMask::new(&[vec![true], vec![true]], 1, &dev).unwrap();
            assert!(model.decoder.forward(&ids.narrow(1, 0, 1).unwrap(), &bad, Some(&mut cache), mode).is_err());
        }
    }
}

#[test]
fn generate_logprobs_and_entropies_equal_token_logprobs_of_a_full_forward() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let model = Model::load(&fixture_dir(name), &dev, DType::F32, false).unwrap();
        let prompts = vec![vec![1u32, 17, 42, 99, 5], vec![1u32, 88], vec![7u32, 3, 9]];
        let params = SamplingParams { temperature: 0.7, top_k: 40, top_p: 0.95, max_new_tokens: 10, ..Default::default() };
        let outs = generate(&model.decoder, &prompts, &params, &mut Rng::new(11), None).unwrap();
        let again = generate(&model.decoder, &prompts, &params, &mut Rng::new(11), None).unwrap();
        assert_eq!(outs, again, "{name}: same seed, same samples");
        for (prompt, out) in prompts.iter().zip(&outs) {
            assert_eq!(out.tokens.len(), 10);
            let seq: Vec<u32> = prompt.iter().chain(&out.tokens).copied().collect();
            let n = seq.len();
            let ids = Tensor::from_vec(seq[..n - 1].to_vec(), (1, n - 1), &dev).unwrap();
            let targets = Tensor::from_vec(seq[1..].to_vec(), (1, n - 1), &dev).unwrap();
            let logits = model.decoder.forward(&ids, &AttnMask::causal(1, n - 1, &dev).unwrap(), None, Mode::Train).unwrap().logits;
            let (logp, ent) = token_logprobs(&logits, &targets, 0.7).unwrap();
            let skip = prompt.len() - 1;
            let logp = logp.get(0).unwrap().to_vec1::<f32>().unwrap()[skip..].to_vec();
            let ent = ent.get(0).unwrap().to_vec1::<f32>().unwrap()[skip..].to_vec();
            assert_close(&out.logprobs, &logp, 1e-4, 1e-4, &format!("{name} logprobs"));
            assert_close(&out.entropies, &ent, 1e-4, 1e-4, &format!("{name} entropies"));
            assert!(out.entropies.iter().all(|&h| h > 0.0 && h <= (128f32).ln() + 1e-4));
        }
    }
}

#[test]
fn generation_stops_per_row_on_eos_and_callback() {
    let dev = Device::Cpu;
    let model = Model::load(&fixture_dir("qwen2_tied"), &dev, DType::F32, false).unwrap();
    let exp = expected("qwen2_tied");
    // The greedy continuation is known: make its third token a stop token, and give row 1 a
    // different prompt that does not produce it.
    let stop_token = exp.greedy_continuation[2];
    let other = vec![1u32, 88, 14];
    let params = SamplingParams { greedy: true, max_new_tokens: 8, stop_token_ids: vec![stop_token], ..Default::default() };
    let outs = generate(&model.decoder, &[exp.greedy_prompt.clone(), other.clone()], &params, &mut Rng::new(0), None).unwrap();
    let first_stop = exp.greedy_continuation.iter().position(|&t| t == stop_token).unwrap();
    assert_eq!(outs[0].tokens, exp.greedy_continuation[..=first_stop].to_vec());
    assert_eq!(outs[0].finish, FinishReason::Eos);
    // Row 1 is unaffected by row 0 finishing: equal to generating it alone (up to float
    // summation order, since its keys are left-padded in the batch).
    let alone = generate(&model.decoder, std::slice::from_ref(&other), &params, &mut Rng::new(0), None).unwrap();
    assert_eq!(outs[1].tokens, alone[0].tokens);
    assert_eq!(outs[1].finish, alone[0].finish);
    assert_close(&outs[1].logprobs, &alone[0].logprobs, 1e-5, 1e-5, "row 1 batched vs alone");
    // A callback stop (e.g. a stop string) after 3 tokens.
    let params = SamplingParams { greedy: true, max_new_tokens: 8, ..Default::default() };
    let stop = |toks: &[u32]| toks.len() >= 3;
    let outs = generate(&model.decoder, std::slice::from_ref(&exp.greedy_prompt), &params, &mut Rng::new(0), Some(&stop)).unwrap();
    assert_eq!(outs[0].tokens, exp.greedy_continuation[..3].to_vec());
    assert_eq!(outs[0].finish, FinishReason::Stop);
    assert!(generate(&model.decoder, &[vec![]], &params, &mut Rng::new(0), None).is_err());
    assert!(generate(&model.decoder, &[vec![500]], &params, &mut Rng::new(0), None).is_err());
}

#[test]
fn every_parameter_gets_a_gradient_in_train_mode() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let exp = expected(name);
        let model = Model::load(&fixture_dir(name), &dev, DType::F32, true).unwrap();
        let mask = AttnMask::from_attention_mask(&exp.attention_mask, &dev).unwrap();
        let ids = ids_tensor(&exp.input_ids);
        let targets = ids.roll(-1, 1).unwrap();
        let loss_grads = |mode: Mode| {
            let logits = model.decoder.forward(&ids, &mask, None, mode).unwrap().logits;
            let (logp, _) = token_logprobs(&logits, &targets, 1.0).unwrap();
            logp.sum_all().unwrap().neg().unwrap().backward().unwrap()
        };
        let grads = loss_grads(Mode::Train);
        let vars = model.vars();
        assert_eq!(vars.len(), model.decoder.named_tensors().len());
        for (pname, var) in &vars {
            let g = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient of {pname} is {norm}");
        }
        // The pitfall this guards against: the fused kernels cut the graph, so norm weights
        // get no gradient in Infer mode.
        let grads = loss_grads(Mode::Infer);
        let (pname, var) = vars.iter().find(|(n, _)| n == "model.layers.0.input_layernorm.weight").unwrap();
        assert!(grads.get(var).is_none(), "{pname} unexpectedly reached through fused rms_norm");
    }
}

#[test]
fn save_load_round_trip_preserves_logits_exactly() {
    let dev = Device::Cpu;
    for name in FIXTURES {
        let exp = expected(name);
        let model = Model::load(&fixture_dir(name), &dev, DType::F32, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let back = Model::load(dir.path(), &dev, DType::F32, false).unwrap();
        assert_eq!(back.config, model.config, "{name}");
        let mask = AttnMask::from_attention_mask(&exp.attention_mask, &dev).unwrap();
        let ids = ids_tensor(&exp.input_ids);
        let a = model.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        let b = back.decoder.forward(&ids, &mask, None, Mode::Infer).unwrap().logits;
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{name}");
        assert!(dir.path().join("generation_config.json").exists());
    }
}

/// Python with transformers, if available: $RETORT_PYTHON, else .venv/bin/python if it
/// exists, else `python3`. None when it cannot import transformers.
fn python_with_transformers() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("RETORT_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec![".venv/bin/python".into(), "python3".into()],
    };
    candidates.into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import torch, transformers"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}


#[test]
fn checkpoints_saved_by_retort_load_in_transformers_with_same_logits() {
    let Some(python) = python_with_transformers() else {
        eprintln!("SKIPPED: no python with torch+transformers (set RETORT_PYTHON)");
        return;
    };
    let dev = Device::Cpu;
    for model_type in ModelType::ALL {
        let mut cfg = ModelConfig::preset("tiny", 96).unwrap();
        cfg.hidden_size = 48;
        cfg.num_attention_heads = 4;
        cfg.num_key_value_heads = 2;
        cfg.head_dim = if model_type == ModelType::Qwen3 { 16 } else { 12 };
        cfg.intermediate_size = 80;
        cfg.num_hidden_layers = 2;
        cfg.model_type = model_type;
        cfg.qkv_bias = matches!(model_type, ModelType::Qwen2 | ModelType::Llama);
        cfg.o_bias = model_type == ModelType::Llama;
        cfg.qk_norm = model_type == ModelType::Qwen3;
        cfg.tie_word_embeddings = model_type == ModelType::Qwen2;
        cfg.bos_token_id = Some(1);
        cfg.eos_token_ids = vec![2];
        if model_type == ModelType::Llama {
            cfg.rope_scaling = Some(retort::model::RopeScaling {
                factor: 4.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 32,
            });
        }
        let model = Model::init_random(cfg.clone(), 42, &dev).unwrap();
        // Perturb norms and biases (initialised to 1 and 0) so that they matter, and widen the
        // weights so logits are not all ~0.
        let mut rng = Rng::new(9);
        for (pname, var) in model.vars() {
            let t = var.as_tensor();
            let noise: Vec<f32> = (0..t.elem_count()).map(|_| rng.normal() as f32).collect();
            let noise = Tensor::from_vec(noise, t.dims(), &dev).unwrap();
            let new = if pname.ends_with("norm.weight") || pname.ends_with(".bias") {
                (t + (noise * 0.2).unwrap()).unwrap()
            } else {
                (t * 5.0).unwrap()
            };
            var.set(&new).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let ids = vec![vec![1u32, 5, 9, 33, 70, 2, 11, 95], vec![0, 0, 0, 1, 4, 60, 61, 8]];
        let mask = vec![vec![1u32; 8], vec![0, 0, 0, 1, 1, 1, 1, 1]];
        let request = serde_json::json!({"input_ids": ids, "attention_mask": mask});
        let v = run_python_tool(&python, "hf_logits.py", &[dir.path()], &request, &format!("{model_type:?}"));
        let attn = AttnMask::from_attention_mask(&mask, &dev).unwrap();
        let ours = model.decoder.forward(&ids_tensor(&ids), &attn, None, Mode::Train).unwrap().logits;
        for b in 0..2 {
            let got = valid_rows(&ours, &mask, b);
            let theirs: Vec<Vec<f32>> = v["logits"][b]
                .as_array()
                .unwrap()
                .iter()
                .zip(&mask[b])
                .filter(|(_, &m)| m == 1)
                .map(|(r, _)| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
                .collect();
            for (g, t) in got.iter().zip(&theirs) {
                assert_close(g, t, 1e-4, 1e-4, &format!("{model_type:?} row {b} vs transformers"));
            }
        }
    }
}

#[test]
fn transformers_tokenizes_a_retort_made_model_folder_as_retort_does() {
    let Some(python) = python_with_transformers() else {
        eprintln!("SKIPPED: no python with torch+transformers (set RETORT_PYTHON)");
        return;
    };
    // A whole model folder (config.json says qwen2, which is what makes transformers choose
    // its tokenizer class), as `retort model init` writes it.
    let dir = tempfile::tempdir().unwrap();
    retort::model::init::init_folder("tiny", dir.path(), 1).unwrap();
    let tok = retort::text::Tokenizer::load(dir.path()).unwrap();
    let texts = [
        "countdown 2 3 5 6 -> 30\n",
        "  two  spaces, a tab\tand\n\nnewlines ",
        "(4 + 8) * 9 - 8 = 100<|endoftext|>",
        "<|im_start|>user\nhi<|im_end|>\n",
        "'s 're don't ~!@#$%^&*_+{}|:\"<>?`-=[]\\;',./",
    ];
    let messages = [("user", "2 + 2 = ?"), ("assistant", "4"), ("user", "and 3 + 3?")];
    let saved = tempfile::tempdir().unwrap();
    let request = serde_json::json!({
        "texts": texts,
        "messages": messages.iter().map(|(r, c)| serde_json::json!({"role": r, "content": c})).collect::<Vec<_>>(),
        "save_to": saved.path(),
    });
    let v = run_python_tool(&python, "hf_tokenize.py", &[dir.path()], &request, "hf_tokenize");
    for (i, text) in texts.iter().enumerate() {
        let ours = tok.encode(text, false).unwrap();
        let theirs: Vec<u32> = v["ids"][i].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ours, theirs, "{text:?}: retort vs transformers ({})", v["class"]);
        assert_eq!(tok.decode(&ours, false).unwrap(), v["decoded"][i].as_str().unwrap(), "{text:?} decoded");
    }
    // The tab has no token (documented): both sides drop it, nothing else.
    assert_eq!(tok.decode(&tok.encode(texts[1], false).unwrap(), false).unwrap(), texts[1].replace('\t', ""));
    let msgs: Vec<retort::text::Message> = messages
        .iter()
        .map(|(r, c)| if *r == "user" { retort::text::Message::user(*c) } else { retort::text::Message::assistant(*c) })
        .collect();
    assert_eq!(tok.apply_chat_template(&msgs, true).unwrap(), v["chat"].as_str().unwrap());
    // The folder transformers saved back keeps its template in chat_template.jinja only
    // (transformers ≥ 4.44); retort renders the same prompt from it.
    assert!(saved.path().join("chat_template.jinja").is_file());
    let resaved = retort::text::Tokenizer::load(saved.path()).unwrap();
    assert_eq!(resaved.apply_chat_template(&msgs, true).unwrap(), v["chat"].as_str().unwrap());
    assert_eq!(resaved.encode(texts[0], false).unwrap(), tok.encode(texts[0], false).unwrap());
}

#[test]
fn transformers_tokenizes_a_word_level_tiny_folder_as_retort_does() {
    let Some(python) = python_with_transformers() else {
        eprintln!("SKIPPED: no python with torch+transformers (set RETORT_PYTHON)");
        return;
    };
    // `model-init` with `preset = "tiny"` and `corpus`: the character tokenizer plus merges
    // that make every corpus word one token. transformers rebuilds a qwen2 folder's tokenizer
    // from vocabulary and merges; it must cut the words the same way.
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, "{\"text\": \"Q: 34 is even? A: yes \\n Claim: 3 is more than 7. Verdict: false\"}\n{\"prompt\": \"the soup was bland is good ->\", \"response\": \" off\"}\n").unwrap();
    let merges = retort::text::tiny_word::learn_merges(&retort::text::tiny_word::corpus_pieces(&corpus).unwrap());
    let model = dir.path().join("m");
    retort::model::init::init_folder_with_vocab("tiny", &model, 1, None, Some(&merges)).unwrap();
    let tok = retort::text::Tokenizer::load(&model).unwrap();
    let texts = ["Q: 34 is even? A: yes \n Claim: 3 is more than 7. Verdict: false", "the soup was bland is good -> off", "words the corpus lacks, 1 2 3!\n"];
    let request = serde_json::json!({"texts": texts});
    let v = run_python_tool(&python, "hf_tokenize.py", &[&model], &request, "hf_tokenize");
    for (i, text) in texts.iter().enumerate() {
        let ours = tok.encode(text, false).unwrap();
        let theirs: Vec<u32> = v["ids"][i].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(ours, theirs, "{text:?}: retort vs transformers ({})", v["class"]);
        assert_eq!(v["decoded"][i].as_str().unwrap(), *text);
    }
    // Corpus words are one token each: " even", " Verdict", " off".
    let first: Vec<u32> = v["ids"][0].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    assert_eq!(first.len(), 25, "{first:?}");
    assert_eq!(tok.encode(" off", false).unwrap().len(), 1);
}
