//! The preflight against hand-computed figures: the paper's 7B FlowRL run on one 80 GB card,
//! the single-GPU variants on theirs, and the small pieces (peaks, the Z head, references).

use super::budget::{Budget, Memory, GIB};
use super::plan::{self, Part, Phase, Place, Target};
use super::*;
use crate::profile::{Profile, PRESETS};

const QWEN7B: f64 = 7_615_616_512.0; // Qwen2.5-7B's published parameter count

fn gpu(device_gib: f64) -> Budget {
    Budget {
        target: Target { gpu: true, lora_base_bytes: 2.0 },
        device_name: "cuda:0".into(),
        device: Some(Memory { bytes: device_gib * GIB, source: "test".into() }),
        host: Some(Memory { bytes: 1024.0 * GIB, source: "test".into() }),
    }
}

fn part(c: &StageCheck, name: &str) -> f64 {
    c.parts.iter().find(|p| p.name.starts_with(name)).unwrap_or_else(|| panic!("no part `{name}` in {:?}", c.parts)).bytes
}

#[test]
fn the_7b_flowrl_preset_is_refused_on_an_80_gb_card_with_hand_computed_figures() {
    let profile = Profile::load("flowrl-qwen2.5-7b").unwrap();
    let checks = check(&profile, &gpu(80.0));
    assert_eq!(checks.iter().map(|c| c.kind).collect::<Vec<_>>(), ["rl", "eval"]);
    let c = &checks[0];
    assert_eq!(c.model.as_ref().unwrap().0 as f64, QWEN7B);
    // f32 policy, its gradients and the frozen f32 reference: 4 bytes a parameter each.
    assert_eq!(part(c, "policy weights"), 4.0 * QWEN7B);
    assert_eq!(part(c, "gradients"), 4.0 * QWEN7B);
    assert_eq!(part(c, "frozen reference"), 4.0 * QWEN7B);
    // AdamW's m and v live in host RAM.
    assert_eq!(part(c, "AdamW moments m, v"), 8.0 * QWEN7B);
    // These three alone are 12 × 7,615,616,512 = 91,387,398,144 bytes = 85.1 GiB > 80 GiB.
    assert!(12.0 * QWEN7B > 80.0 * GIB);
    // The rollout's KV cache: 2 (K, V) × 28 layers × 4 kv heads × 128 head_dim × 512·8 rows ×
    // (1024 assumed prompt + 8192 new) tokens × 4 bytes.
    assert_eq!(part(c, "KV cache"), 4_329_327_034_368.0);
    assert!(!c.fits());
    let (what, need, have) = &c.short[0];
    assert_eq!(what, "cuda:0 memory");
    assert_eq!(*have, 80.0 * GIB);
    assert!(*need >= 12.0 * QWEN7B);
    let text = refusal(&checks, &gpu(80.0)).unwrap();
    for want in ["DOES NOT FIT", "28.37 GiB", "micro_batch", "max_new_tokens", "--force"] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

#[test]
fn the_single_gpu_variants_fit_their_cards() {
    for (name, gib) in [
        ("flowrl-qwen2.5-1.5b-80gb", 80.0),
        ("grpo-qwen2.5-1.5b-80gb", 80.0),
        ("flowrl-qwen2.5-0.5b-24gb", 24.0),
        ("grpo-qwen2.5-0.5b-24gb", 24.0),
    ] {
        let profile = Profile::load(name).unwrap();
        let checks = check(&profile, &gpu(gib));
        assert_eq!(checks.iter().map(|c| c.kind).collect::<Vec<_>>(), ["rl", "eval"], "{name}");
        assert!(checks.iter().all(StageCheck::fits), "{name}:\n{}", render(&checks, &gpu(gib)));
        assert!(refusal(&checks, &gpu(gib)).is_none());
        // ... and each fills its card: the next size down would not do.
        assert!(!check(&profile, &gpu(gib * 0.6))[0].fits(), "{name} should not fit {} GiB", gib * 0.6);
    }
}

#[test]
fn every_paper_scale_preset_states_its_gpu() {
    for (name, text) in PRESETS {
        let p = Profile::parse(text, name).unwrap();
        if p.run.paper_scale {
            assert!(!p.run.gpu.trim().is_empty(), "paper-scale preset {name} does not state the GPU it needs (run.gpu)");
        }
    }
}

#[test]
fn every_training_and_eval_stage_of_every_preset_is_sized() {
    // Paper-scale presets name known hub models; tiny ones built-in shapes (an encoder-tiny
    // with an assumed vocabulary while its corpus is not made yet).
    use crate::stages::KINDS;
    let sized = ["sft", "rl", "denoise", "retrieve", "eval", "prompt-score", "uprise-eval"];
    for (name, text) in PRESETS {
        let p = Profile::parse(text, name).unwrap();
        let checks = check(&p, &gpu(80.0));
        for c in &checks {
            assert!(c.model.is_ok(), "{name} stage {}: {:?}", c.stage, c.model);
        }
        // No stage of those kinds is left out.
        for s in p.stages.iter().filter(|s| sized.contains(&s.kind)) {
            assert!(checks.iter().any(|c| c.stage == s.name), "{name}: stage {} ({}) not sized", s.name, s.kind);
        }
    }
    assert!(sized.iter().all(|k| KINDS.iter().any(|s| s.kind == *k)));
}

/// A stage's key as its profile table has it.
fn key(p: &Profile, stage: &str, key: &str) -> usize {
    let s = p.stages.iter().find(|s| s.name == stage).unwrap();
    s.config.to_table()[key].as_integer().unwrap_or_else(|| panic!("{stage}.{key}")) as usize
}

#[test]
fn the_eval_stage_is_sized_by_its_sampling_kv_cache() {
    let p = Profile::load("flowrl-vs-grpo-tiny").unwrap();
    let checks = check(&p, &cpu(8.0));
    let c = checks.iter().find(|c| c.kind == "eval").unwrap();
    // The tiny preset: 4 layers, 2 kv heads, head_dim 32; `batch_size` rows at once of a
    // 64-token prompt (the built-in task's assumption) + max_new_tokens, f32 on the CPU.
    let (rows, ctx) = (key(&p, "eval", "batch_size"), 64 + key(&p, "eval", "max_new_tokens"));
    assert_eq!(part(c, "KV cache"), (2 * 4 * 2 * 32 * rows * ctx * 4) as f64);
    assert_eq!(part(c, &format!("KV cache, {rows} rows × {ctx} tokens")), part(c, "KV cache"));
    let params = c.model.as_ref().unwrap().0 as f64;
    assert_eq!(part(c, "weights (f32, not trained)"), 4.0 * params);
    // Nothing trains: no gradients, no AdamW.
    assert!(c.parts.iter().all(|p| !p.name.contains("gradients") && !p.name.contains("AdamW")), "{:?}", c.parts);
}

#[test]
fn the_retriever_trains_two_encoders_over_each_querys_contexts() {
    let p = Profile::load("uprise-tiny").unwrap();
    let checks = check(&p, &cpu(8.0));
    let c = checks.iter().find(|c| c.kind == "retrieve").unwrap();
    // The encoder-tiny, before its corpus is made: hidden 64, 2 layers, intermediate 256,
    // vocabulary 5 specials + the assumed words, positions context + 2, one token type.
    let (h, i, v, pos) = (64, 256, 5 + resolve::ENCODER_TINY_WORDS, 64 + 2);
    let layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
    let embeddings = v * h + pos * h + h + 2 * h;
    let mlm_head = h * h + h + 2 * h + v;
    let params = (embeddings + 2 * layer + mlm_head) as f64;
    assert_eq!(c.model.as_ref().unwrap().0 as f64, params);
    assert!(c.model.as_ref().unwrap().1.contains("assumed"), "{:?}", c.model);
    assert_eq!(part(c, "2 models' weights (f32)"), 8.0 * params);
    assert_eq!(part(c, "AdamW moments"), 16.0 * params);
    // A micro-batch of `batch_size` queries, each with its positive, B hard and B other-task
    // negatives (B = the prompt-score stage's `negatives`).
    let rows = key(&p, "retrieve", "batch_size") * (2 + 2 * key(&p, "score", "negatives"));
    let seq = key(&p, "retrieve", "max_len");
    assert!(c.parts.iter().any(|p| p.name == format!("activations, micro-batch {rows} × {seq} tokens")), "{:?}", c.parts);
}

#[test]
fn an_encoder_tiny_over_an_existing_corpus_counts_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    // Twice-seen words: chop, the, `,`, then, stir: 5 words + 5 specials.
    std::fs::write(&corpus, "{\"text\": \"Chop the onions, then stir.\"}\n{\"text\": \"chop the garlic, then stir!\"}\n").unwrap();
    let text = format!(
        "[run]\nname = \"t\"\n\n[[stage]]\nkind = \"model-init\"\nname = \"init\"\npreset = \"encoder-tiny\"\ncorpus = \"{}\"\ncontext = 32\n\n\
         [[stage]]\nkind = \"denoise\"\nname = \"mlm\"\nobjective = \"mlm\"\nmodel = \"@init\"\nsteps = 1\nbatch_size = 2\nmax_len = 32\n\n[stage.data]\ntrain = \"{}\"\n",
        corpus.display(),
        corpus.display()
    );
    let p = Profile::parse(&text, "t").unwrap();
    let checks = check(&p, &cpu(8.0));
    let (n, from) = checks[0].model.as_ref().unwrap();
    assert!(from.contains("5 words"), "{from}");
    let cfg = crate::model::encoder::tiny::tiny_config(5, crate::model::encoder::tiny::TinyEncoderShape { max_tokens: 32, ..Default::default() });
    assert_eq!(*n, plan::Arch::Encoder(cfg).parameters());
}

#[test]
fn model_info_is_the_preflight_arithmetic() {
    let cfg = crate::model::ModelConfig::preset("tiny", 99).unwrap();
    let p = cfg.num_parameters() as f64;
    let target = Target { gpu: false, lora_base_bytes: 4.0 };
    let shape = plan::InfoShape { infer_batch: 2, context: 100, train_batch: 8, train_seq: 128 };
    let info = plan::model_info(&plan::Arch::Decoder(cfg.clone()), shape, target);
    let find = |i: usize, name: &str| info[i].1.iter().find(|p| p.name.starts_with(name)).unwrap().bytes;
    // KV: 2 · 4 layers · 2 kv heads · 32 head_dim · 2 rows · 100 tokens · 4 bytes.
    assert_eq!(find(0, "KV cache"), (2 * 4 * 2 * 32 * 2 * 100 * 4) as f64);
    assert_eq!(find(0, "weights"), 4.0 * p);
    // Full: weights, gradients 4P each, AdamW 8P; one micro-batch a step, so no accumulator.
    assert_eq!(find(1, "policy weights") + find(1, "gradients") + find(1, "AdamW"), 16.0 * p);
    assert!(info[1].1.iter().all(|p| !p.name.contains("accumulator")));
    assert_eq!(find(2, "LoRA r=16 adapters"), 4.0 * crate::model::estimate::lora_parameters(&cfg, 16) as f64);
    assert!(plan::peak(&info[2].1, None) < plan::peak(&info[1].1, None));
}

fn cpu(gib: f64) -> Budget {
    Budget {
        target: Target { gpu: false, lora_base_bytes: 4.0 },
        device_name: "cpu".into(),
        device: None,
        host: Some(Memory { bytes: gib * GIB, source: "test".into() }),
    }
}

#[test]
fn peak_is_resident_plus_the_larger_phase_per_memory() {
    let p = |bytes: f64, place, phase| Part { name: "x".into(), bytes, place, phase };
    let parts = vec![
        p(10.0, Place::Device, Phase::Resident),
        p(5.0, Place::Device, Phase::Sample),
        p(7.0, Place::Device, Phase::Train),
        p(3.0, Place::Host, Phase::Resident),
        p(100.0, Place::Host, Phase::Train),
    ];
    assert_eq!(plan::peak(&parts, Some(Place::Device)), 17.0);
    assert_eq!(plan::peak(&parts, Some(Place::Host)), 103.0);
    // One memory (the CPU): resident 13, sampling 5, training 107.
    assert_eq!(plan::peak(&parts, None), 120.0);
}

#[test]
fn z_head_parameters_by_hand() {
    // Two hidden blocks of (h×h weight + h bias + LayerNorm 2h), then h weights + 1 bias.
    assert_eq!(plan::z_head_parameters(3584, 3), 2 * (3584 * 3584 + 3 * 3584) + 3585);
    assert_eq!(plan::z_head_parameters(8, 1), 9);
}

#[test]
fn a_tiny_run_fits_a_laptop_and_not_a_thimble() {
    let profile = Profile::load("flowrl-tiny").unwrap();
    let checks = check(&profile, &cpu(8.0));
    assert_eq!(checks.iter().map(|c| c.stage.as_str()).collect::<Vec<_>>(), ["sft", "flowrl", "eval"]);
    assert!(checks.iter().all(|c| c.fits()));
    // The rl stage's model is `@sft`, whose model is `@init`, the tiny preset.
    assert!(checks[1].model.as_ref().unwrap().1.contains("preset `tiny`"));
    let small = check(&profile, &cpu(0.05));
    assert!(small.iter().all(|c| !c.fits()));
    assert!(refusal(&small, &cpu(0.05)).unwrap().contains("host RAM"));
}

#[test]
fn lora_sizes_the_frozen_base_in_the_run_dtype() {
    let profile = Profile::load("adaptllm-llama-7b").unwrap().apply_sets(&["stage.adaptllm.lora.rank=64".to_string()]).unwrap();
    let c = &check(&profile, &gpu(80.0))[0];
    let p = 6_738_415_616.0; // huggyllama/llama-7b
    assert_eq!(part(c, "frozen base (bf16)"), 2.0 * p);
    // r · (in + out) for q, k, v, o (4096 × 4096 each), gate and up (4096 → 11008), down.
    let per_layer = 64.0 * (4.0 * 8192.0 + 3.0 * (4096.0 + 11008.0));
    assert_eq!(part(c, "LoRA r=64 adapters"), 4.0 * 32.0 * per_layer);
}

#[test]
fn a_word_level_tiny_decoder_is_sized_with_its_corpus_vocabulary() {
    // A corpus file that exists: the vocabulary `model-init` will build (the tokenizer
    // written by `build_word_tokenizer` is the reference), not the character one.
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("lm.jsonl");
    std::fs::write(&corpus, "{\"text\": \"the cat sat on the mat\"}\n{\"prompt\": \"is it red? \", \"response\": \"yes it is\"}\n").unwrap();
    let pieces = crate::text::tiny_word::corpus_pieces(&corpus).unwrap();
    let built = crate::text::tiny_word::build_word_tokenizer(&dir.path().join("tok"), &crate::text::tiny_word::learn_merges(&pieces)).unwrap();
    assert!(built > crate::text::tiny::VOCAB_SIZE);
    let profile = |corpus: &str| {
        let data = "[[stage]]\nname = \"data\"\nkind = \"synth\"\nmethod = \"tiny-uprise\"\n\n";
        let text = format!("[run]\nname = \"w\"\n\n{data}[[stage]]\nname = \"init\"\nkind = \"model-init\"\npreset = \"tiny\"\ncorpus = \"{corpus}\"\n");
        Profile::parse(&text, "w.toml").unwrap()
    };
    let (arch, source) = resolve::arch_of(&profile(&corpus.display().to_string()), "@init").unwrap();
    let plan::Arch::Decoder(cfg) = arch else { panic!("a decoder") };
    assert_eq!(cfg.vocab_size, built, "{source}");
    // A corpus made by an earlier stage: an assumed upper bound, said so.
    let (arch, source) = resolve::arch_of(&profile("@data/lm.jsonl"), "@init").unwrap();
    let plan::Arch::Decoder(cfg) = arch else { panic!("a decoder") };
    assert_eq!(cfg.vocab_size, crate::text::tiny::VOCAB_SIZE + resolve::ENCODER_TINY_WORDS);
    assert!(source.contains("assumed"), "{source}");
    // A missing corpus file is named.
    let err = resolve::arch_of(&profile("/nonexistent/lm.jsonl"), "@init").unwrap_err();
    assert!(err.contains("/nonexistent/lm.jsonl"), "{err}");
}

/// A Qwen2-VL-2B folder (the hub's config, Qwen2-VL's default processor) in `dir`.
fn qwen2_vl_2b_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("qwen2-vl-2b");
    std::fs::create_dir_all(&model).unwrap();
    let vision = "{\"depth\": 32, \"embed_dim\": 1280, \"mlp_ratio\": 4, \"num_heads\": 16, \"in_chans\": 3, \"hidden_size\": 1536, \"patch_size\": 14, \"spatial_merge_size\": 2, \"temporal_patch_size\": 2}";
    let config = format!(
        "{{\"model_type\": \"qwen2_vl\", \"hidden_size\": 1536, \"intermediate_size\": 8960, \"num_attention_heads\": 12, \"num_hidden_layers\": 28, \
         \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"max_position_embeddings\": 32768, \"vocab_size\": 151936, \
         \"tie_word_embeddings\": true, \"eos_token_id\": 151645, \"rope_scaling\": {{\"type\": \"mrope\", \"mrope_section\": [16, 24, 24]}}, \"vision_config\": {vision}}}"
    );
    std::fs::write(model.join("config.json"), config).unwrap();
    model
}

/// A sft stage on `model` with max_len 512 and this `[stage.vision]` body.
fn vlm_sft(model: &std::path::Path, vision: &str) -> Profile {
    let text = format!(
        "[run]\nname = \"vlm\"\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {:?}\nsteps = 10\nbatch_size = 1\nmax_len = 512\n\
         [stage.data]\njsonl = \"rows.jsonl\"\n[stage.vision]\n{vision}\n",
        model.to_str().unwrap()
    );
    Profile::parse(&text, "vlm.toml").unwrap()
}

fn cpu_24_gib() -> Budget {
    Budget { target: Target { gpu: false, lora_base_bytes: 4.0 }, device_name: "cpu".into(), device: None, host: Some(Memory { bytes: 24.0 * GIB, source: "test".into() }) }
}

/// Tower 631,183,360 + projector 34,087,936 (counted from the shapes by hand) + LLM
/// 1,543,714,304 = the 2,208,985,600 transformers counts.
const Q2VL_2B: (f64, f64, f64) = (631_183_360.0, 34_087_936.0, 1_543_714_304.0);

/// A Qwen2-VL-2B sft stage with a frozen tower: the tower's and projector's weights, the
/// projector's gradients and the frozen tower's forward are in the figures, computed by hand,
/// and a 24 GiB machine refuses the run saying by how much.
#[test]
fn a_qwen2_vl_2b_sft_counts_the_tower_and_is_refused_on_24_gib() {
    let d = tempfile::tempdir().unwrap();
    let profile = vlm_sft(&qwen2_vl_2b_folder(d.path()), "freeze = [\"tower\"]");
    let cpu = cpu_24_gib();
    let checks = check(&profile, &cpu);
    let c = &checks[0];
    let (tower, projector, llm) = Q2VL_2B;
    assert_eq!(c.model.as_ref().unwrap().0 as f64, tower + projector + llm);
    assert_eq!(part(c, "weights (f32; tower, projector, LLM)"), 4.0 * (tower + projector + llm));
    // The frozen tower runs cut from the graph: no gradient; the projector gets one.
    assert_eq!(part(c, "projector gradients"), 4.0 * projector);
    assert!(c.parts.iter().all(|p| !p.name.starts_with("tower + projector gradients")), "{:?}", c.parts);
    assert_eq!(part(c, "gradients (f32)"), 4.0 * llm);
    // The frozen tower has no AdamW state.
    assert_eq!(part(c, "AdamW moments"), 8.0 * (projector + llm));
    // 512 tokens, all assumed image tokens: 2048 patches, one image (≤ 5120 patches in the
    // default 1280-token pixel budget). Nothing kept across blocks: one block's forward,
    // 2048 × (6·1280 + 3·5120) = 47,185,920 and 2 × 16 × 2048² = 134,217,728 elements.
    assert_eq!(part(c, "vision tower forward (frozen: nothing kept across blocks), 1 rows × 2048 patches"), 4.0 * 181_403_648.0);
    assert!(!c.fits());
    let (what, need, have) = &c.short[0];
    assert_eq!((what.as_str(), *have), ("host RAM", 24.0 * GIB));
    let text = refusal(&checks, &cpu).unwrap();
    eprintln!("{text}");
    let over = crate::model::estimate::human_bytes(need - have);
    assert!(text.contains("DOES NOT FIT") && text.contains(&over) && text.contains("max_pixels"), "missing the shortfall {over} in:\n{text}");
}

/// A trained Qwen2-VL-2B tower keeps all its activations; `checkpoint_tower` keeps its blocks'
/// inputs and one block's, a lower peak by the difference, and the refusal offers it.
#[test]
fn checkpointing_the_tower_bounds_its_activations() {
    let d = tempfile::tempdir().unwrap();
    let model = qwen2_vl_2b_folder(d.path());
    let cpu = cpu_24_gib();
    let whole = check(&vlm_sft(&model, "tower_lr = 2e-6"), &cpu);
    let ckpt = check(&vlm_sft(&model, "tower_lr = 2e-6\ncheckpoint_tower = true"), &cpu);
    let (tower, projector, _) = Q2VL_2B;
    for c in [&whole[0], &ckpt[0]] {
        assert_eq!(part(c, "tower + projector gradients"), 4.0 * (tower + projector));
    }
    // Per block 2048 × (28·1280 + 6·5120) = 136,314,880 and 2 × 16 × 2048² = 134,217,728;
    // × 32 blocks, + 134,217,728 once = 8,791,261,184 elements.
    let all = part(&whole[0], "vision tower activations, 1 rows × 2048 patches");
    assert_eq!(all, 4.0 * 8_791_261_184.0);
    // 33 × 2048 × 1280 = 86,507,520 saved, + one block 270,532,608, + 134,217,728 = 491,257,856.
    let kept = part(&ckpt[0], "vision tower activations, checkpointed, 1 rows × 2048 patches");
    assert_eq!(kept, 4.0 * 491_257_856.0);
    assert_eq!(whole[0].host_peak - ckpt[0].host_peak, all - kept);
    let text = refusal(&whole, &cpu).unwrap();
    assert!(text.contains("checkpoint_tower = true"), "{text}");
    let text = refusal(&ckpt, &cpu).unwrap();
    assert!(!text.contains("checkpoint_tower = true"), "{text}");
}

/// `retort model info` on a VLM folder prints the sft preflight's own parts: the same list,
/// name for name and byte for byte, for a full fine-tune with and without `checkpoint_tower`.
#[test]
fn model_info_on_a_vlm_folder_is_the_sft_preflight() {
    let d = tempfile::tempdir().unwrap();
    let model = qwen2_vl_2b_folder(d.path());
    let arch = resolve::arch_of_folder(&model).unwrap();
    let shape = plan::InfoShape { infer_batch: 1, context: 512, train_batch: 1, train_seq: 512 };
    let cpu = cpu_24_gib();
    let info = plan::model_info(&arch, shape, cpu.target);
    assert_eq!(info.len(), 4, "inference, full, LoRA, full with the tower checkpointed");
    assert!(info[3].0.ends_with("tower checkpointed"), "{}", info[3].0);
    assert_eq!(info[1].1, check(&vlm_sft(&model, "tower_lr = 2e-6"), &cpu)[0].parts);
    assert_eq!(info[3].1, check(&vlm_sft(&model, "checkpoint_tower = true"), &cpu)[0].parts);
    // A llava folder is a VLM to the preflight too: tiny-llava's 3-layer CLIP tower read after
    // layer 2, 16 patches and the class token an image.
    let llava = d.path().join("tiny-llava");
    crate::model::vision::tiny_llava::init_folder(&llava, 0).unwrap();
    match resolve::arch_of_folder(&llava).unwrap() {
        plan::Arch::Vlm(v, _) => assert_eq!((v.depth, v.width, v.max_image_patches, v.patches_per_token), (2, 64, 17, 1)),
        other => panic!("tiny-llava sized as {other:?}"),
    }
}
