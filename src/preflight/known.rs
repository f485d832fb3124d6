//! The `config.json` of hub models the paper-scale presets name, so the memory preflight can
//! size a run before anything is downloaded. Only the keys the estimate reads are kept; the
//! values are those of the repositories' own `config.json` (parameter counts are checked in the
//! tests against the published figures). A repository not listed here is sized from the hub
//! cache when it is already downloaded, and otherwise the preflight says it cannot size it.

/// (repository, config.json text).
pub const KNOWN: &[(&str, &str)] = &[
    (
        "Qwen/Qwen2.5-0.5B",
        r#"{"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": true}"#,
    ),
    (
        "Qwen/Qwen2.5-1.5B",
        r#"{"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 131072, "rope_theta": 1000000.0, "tie_word_embeddings": true}"#,
    ),
    (
        "Qwen/Qwen2.5-3B",
        r#"{"model_type": "qwen2", "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
            "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": true}"#,
    ),
    (
        "Qwen/Qwen2.5-7B",
        r#"{"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
            "max_position_embeddings": 131072, "rope_theta": 1000000.0, "tie_word_embeddings": false}"#,
    ),
    (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        r#"{"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 131072, "rope_theta": 10000.0, "tie_word_embeddings": false}"#,
    ),
    (
        // The text keys at the top level as the hub's config has them; the tower in
        // `vision_config` (Qwen2-VL-2B-Instruct's own values).
        "Qwen/Qwen2-VL-2B-Instruct",
        r#"{"model_type": "qwen2_vl", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": true, "eos_token_id": 151645, "image_token_id": 151655,
            "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}}"#,
    ),
    (
        "huggyllama/llama-7b",
        r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": false}"#,
    ),
    (
        "meta-llama/Meta-Llama-3-8B",
        r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
            "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": false}"#,
    ),
    (
        "FacebookAI/roberta-large",
        r#"{"model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "hidden_size": 1024,
            "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
            "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
            "layer_norm_eps": 1e-5, "pad_token_id": 1, "hidden_act": "gelu"}"#,
    ),
    (
        "google-bert/bert-base-uncased",
        r#"{"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768,
            "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_act": "gelu"}"#,
    ),
];

/// The config text of a known repository (an optional `@revision` suffix is ignored).
pub fn config_of(repo: &str) -> Option<&'static str> {
    let repo = repo.split('@').next().unwrap_or(repo);
    KNOWN.iter().find(|(r, _)| r.eq_ignore_ascii_case(repo)).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use std::path::Path;

    fn params(repo: &str) -> usize {
        ModelConfig::from_hf_json(config_of(repo).unwrap(), Path::new(repo)).unwrap().num_parameters()
    }

    #[test]
    fn parameter_counts_match_the_published_figures() {
        // The model cards' / safetensors index totals.
        assert_eq!(params("Qwen/Qwen2.5-0.5B"), 494_032_768);
        assert_eq!(params("Qwen/Qwen2.5-1.5B"), 1_543_714_304);
        assert_eq!(params("Qwen/Qwen2.5-3B"), 3_085_938_688);
        assert_eq!(params("Qwen/Qwen2.5-7B"), 7_615_616_512);
        assert_eq!(params("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"), 1_777_088_000);
        assert_eq!(params("huggyllama/llama-7b"), 6_738_415_616);
        assert_eq!(params("meta-llama/Meta-Llama-3-8B"), 8_030_261_248);
    }

    #[test]
    fn the_encoder_config_parses_and_revisions_are_ignored() {
        let text = config_of("FacebookAI/roberta-large@main").unwrap();
        let cfg = crate::model::encoder::EncoderConfig::from_hf_json(text, Path::new("x")).unwrap();
        assert_eq!((cfg.hidden_size, cfg.num_hidden_layers), (1024, 24));
        assert!(config_of("nobody/nothing").is_none());
        // BERT-base-uncased with its pooler: the well-known 109,482,240 parameters.
        let bert = crate::model::encoder::EncoderConfig::from_hf_json(config_of("google-bert/bert-base-uncased").unwrap(), Path::new("x")).unwrap();
        let heads = crate::model::encoder::Heads { pooler: true, mlm: false };
        let n: usize = crate::model::encoder::parameter_shapes(&bert, heads).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(n, 109_482_240);
    }
}
