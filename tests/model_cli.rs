//! `retort model init|info`, `retort generate` and `retort bench` driven through the binary.

use retort::model::{Model, ModelConfig};
use std::path::Path;
use std::process::{Command, Output};

fn retort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retort")).args(args).env("RAYON_NUM_THREADS", "2").output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = retort(args);
    assert!(
        out.status.success(),
        "retort {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(args: &[&str]) -> String {
    let out = retort(args);
    assert!(!out.status.success(), "retort {args:?} should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn init_tiny(dir: &Path) -> String {
    let s = dir.to_str().unwrap();
    ok(&["model", "init", "--preset", "tiny", "--out", s, "--seed", "5"]);
    s.to_string()
}

/// tiny = hidden 128, 4 layers, 4 heads of 32, 2 kv heads, intermediate 384, tied, qkv bias,
/// vocabulary 99 (the character tokenizer).
fn tiny_parameters_by_hand() -> usize {
    let (v, h, kv, i) = (99, 128, 64, 384);
    let attn = (h * h + h) + 2 * (kv * h + kv) + h * h;
    let mlp = 3 * h * i;
    v * h + 4 * (attn + mlp + 2 * h) + h
}

#[test]
fn init_takes_a_custom_shape() {
    // A llama-shaped model (no attention biases, untied head) counted by hand:
    // vocabulary 200, hidden 64, 2 layers, 4 heads of 16, 2 kv heads, intermediate 96.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let d = dir.to_str().unwrap();
    let shape = ["--arch", "llama", "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--intermediate", "96", "--vocab", "200", "--untied"];
    ok(&[&["model", "init", "--preset", "tiny", "--out", d][..], &shape[..]].concat());
    let model = Model::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
    let (v, h, kv, i) = (200, 64, 32, 96);
    let layer = (h * h + 2 * kv * h + h * h) + 3 * h * i + 2 * h;
    assert_eq!(model.config.num_parameters(), 2 * v * h + 2 * layer + h);
    let c = &model.config;
    assert_eq!((c.model_type.as_str(), c.head_dim, c.qkv_bias, c.tie_word_embeddings), ("llama", 16, false, false));
    // Shapes that cannot be built are refused with the reason.
    let e = err(&["model", "init", "--preset", "tiny", "--out", tmp.path().join("bad").to_str().unwrap(), "--heads", "3"]);
    assert!(e.contains("multiple of --heads 3"), "{e}");
    let e = err(&["model", "init", "--preset", "tiny", "--out", tmp.path().join("bad").to_str().unwrap(), "--kv-heads", "3"]);
    assert!(e.contains("multiple of --kv-heads 3"), "{e}");
}

#[test]
fn init_writes_a_loadable_folder_and_info_counts_its_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_tiny(&tmp.path().join("m"));
    let model = Model::load(Path::new(&dir), &candle_core::Device::Cpu, candle_core::DType::F32, false).unwrap();
    assert_eq!(model.config.num_parameters(), tiny_parameters_by_hand());
    assert!(retort::text::Tokenizer::load(Path::new(&dir)).is_ok());

    let info = ok(&["model", "info", &dir]);
    let line = info.lines().find(|l| l.starts_with("parameters")).unwrap();
    assert_eq!(line.split_whitespace().nth(1).unwrap(), tiny_parameters_by_hand().to_string(), "{info}");
    assert!(info.contains("Qwen2ForCausalLM") && info.contains("qwen2"), "{info}");
    assert!(info.contains(&format!("F32 (50 tensors, {} elements)", tiny_parameters_by_hand())), "{info}");
    assert!(info.contains("kv heads 2") && info.contains("intermediate 384") && info.contains("vocab 99"), "{info}");
    assert!(info.contains("memory, LoRA r=16"), "{info}");

    // A second init into the same folder is refused, and allowed with --force.
    let e = err(&["model", "init", "--preset", "tiny", "--out", &dir]);
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    ok(&["model", "init", "--preset", "small", "--out", &dir, "--force"]);
    let small = ModelConfig::from_file(&Path::new(&dir).join("config.json")).unwrap();
    assert_eq!(small.hidden_size, 256);
    let e = err(&["model", "init", "--preset", "huge", "--out", &dir]);
    assert!(e.contains("qwen2.5-0.5b"), "{e}");

    // --context replaces the preset's 256 positions; the parameter count does not change (rotary).
    ok(&["model", "init", "--preset", "tiny", "--out", &dir, "--force", "--context", "1024"]);
    let long = ModelConfig::from_file(&Path::new(&dir).join("config.json")).unwrap();
    assert_eq!((long.max_position_embeddings, long.num_parameters()), (1024, tiny_parameters_by_hand()));
    let e = err(&["model", "init", "--preset", "tiny", "--out", &dir, "--force", "--context", "4"]);
    assert!(e.contains("context 4 is out of range"), "{e}");
}

#[test]
fn info_of_the_qwen_shape_reports_its_published_size() {
    // Only the config is needed for the count; write it without the 2 GB of weights.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::preset("qwen2.5-0.5b", 0).unwrap();
    std::fs::write(tmp.path().join("config.json"), cfg.to_hf_json().to_string()).unwrap();
    let e = err(&["model", "info", tmp.path().to_str().unwrap()]);
    assert!(e.contains("no weights"), "{e}");
    assert_eq!(cfg.num_parameters(), 494_032_768);
}

#[test]
fn generate_prints_a_continuation_and_is_deterministic_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_tiny(&tmp.path().join("m"));
    let args = ["generate", &dir, "--prompt", "1+2=", "--max-new-tokens", "12", "--seed", "3"];
    let a = ok(&args);
    assert_eq!(a, ok(&args));
    assert!(!a.trim_end_matches('\n').is_empty());
    // Greedy with the chat template also runs.
    ok(&["generate", &dir, "--prompt", "hi", "--chat", "--greedy", "--max-new-tokens", "4"]);
}

#[test]
fn generate_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = err(&["generate", empty.to_str().unwrap(), "--prompt", "x"]);
    assert!(e.contains("no config.json") && e.contains(empty.to_str().unwrap()), "{e}");

    let dir = init_tiny(&tmp.path().join("m"));
    // The tiny context is 256 positions and the character tokenizer gives one token per char.
    let long = "a".repeat(300);
    let e = err(&["generate", &dir, "--prompt", &long]);
    assert!(e.contains("300") && e.contains("256"), "{e}");

    std::fs::write(Path::new(&dir).join("tokenizer.json"), "{ not json").unwrap();
    let e = err(&["generate", &dir, "--prompt", "x"]);
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn chat_template_errors_are_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_tiny(&tmp.path().join("m"));
    let cfg_path = Path::new(&dir).join("tokenizer_config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = serde_json::json!("{{ raise_exception('no chat for you') }}");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = err(&["generate", &dir, "--prompt", "x", "--chat"]);
    assert!(e.contains("no chat for you") && e.contains("chat template"), "{e}");
}

#[test]
fn bench_json_has_positive_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_tiny(&tmp.path().join("m"));
    let common = ["--batch", "2", "--repeats", "1", "--warmup", "0", "--json"];
    let gen: Vec<&str> = ["bench", "generate", &dir, "--prompt-len", "4", "--new-tokens", "4"].into_iter().chain(common).collect();
    let g: serde_json::Value = serde_json::from_str(&ok(&gen)).unwrap();
    let train: Vec<&str> = ["bench", "train", &dir, "--seq-len", "16"].into_iter().chain(common).collect();
    let t: serde_json::Value = serde_json::from_str(&ok(&train)).unwrap();
    for doc in [&g, &t] {
        for key in ["tokens_per_s", "step_s", "peak_rss_mb"] {
            assert!(doc[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {doc}");
        }
    }
    assert!((g["tokens_per_s"].as_f64().unwrap() * g["step_s"].as_f64().unwrap() - 8.0).abs() < 1e-6, "{g}");
    assert!((t["tokens_per_s"].as_f64().unwrap() * t["step_s"].as_f64().unwrap() - 32.0).abs() < 1e-6, "{t}");
    for key in ["fwd_s", "bwd_s", "opt_s"] {
        assert!(t[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {t}");
    }
    let e = err(&["bench", "train", tmp.path().to_str().unwrap()]);
    assert!(e.contains("no config.json"), "{e}");
}
