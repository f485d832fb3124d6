//! `retort model info` for a `llava` folder: the tower, the projector and the LLM with their
//! parameter counts, the image tokens per image, and the memory preflight's figures for the
//! folder.

use crate::model::vision::clip_image::{ClipProcessorConfig, Resize};
use crate::model::vision::llava::{LlavaConfig, Select};
use crate::model::vision::vit::VitKind;
use crate::preflight::plan::InfoShape;
use anyhow::Result;
use std::path::Path;

/// `shape`'s context is `None` for the LLM's context capped at 4096 (`--context` unset).
pub fn llava_info_text(dir: &Path, shape: InfoShape, context: Option<usize>) -> Result<String> {
    let cfg = LlavaConfig::from_file(&dir.join("config.json"))?;
    let pp = dir.join("preprocessor_config.json");
    let processor = if pp.is_file() { ClipProcessorConfig::from_file(&pp)? } else { ClipProcessorConfig::clip(cfg.vision.image_size) };
    let count = |prefix: &str| -> usize {
        cfg.parameter_shapes().iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, s)| s.iter().product::<usize>()).sum()
    };
    let (tower, projector) = (count("vision_tower."), count("multi_modal_projector."));
    let llm = cfg.text.num_parameters();
    let (v, t) = (&cfg.vision, &cfg.text);
    let kind = match v.kind {
        VitKind::Clip => "CLIP",
        VitKind::Siglip => "SigLIP",
    };
    let layer = cfg.feature_layer();
    let mut s = String::new();
    s += &format!("model folder   {}\n", dir.display());
    s += "architecture   LlavaForConditionalGeneration\n";
    s += "model_type     llava (vision-language)\n";
    s += &format!(
        "vision tower   {kind} ViT: layers {} (features after layer {layer}, vision_feature_layer {}), width {}, heads {}, mlp {}, image {}×{}, patch {}: {tower} parameters\n",
        v.num_hidden_layers, cfg.vision_feature_layer, v.hidden_size, v.num_attention_heads, v.intermediate_size, v.image_size, v.image_size, v.patch_size
    );
    s += &format!(
        "projector      mlp2x_gelu {} → {} → {}{}: {projector} parameters\n",
        v.hidden_size,
        t.hidden_size,
        t.hidden_size,
        if cfg.projector_bias { "" } else { " (no bias)" }
    );
    s += &format!(
        "llm            {}: layers {}, heads {}, kv heads {}, head_dim {}, hidden {}, intermediate {}, vocab {}, context {}: {llm} parameters\n",
        t.model_type.as_str(),
        t.num_hidden_layers,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.head_dim,
        t.hidden_size,
        t.intermediate_size,
        t.vocab_size,
        t.max_position_embeddings
    );
    s += &format!("parameters     {}\n", tower + projector + llm);
    let resize = match processor.resize {
        Resize::ShortestEdge(n) => format!("shortest edge to {n}"),
        Resize::Exact(h, w) => format!("resize to {w}×{h}"),
    };
    s += &format!(
        "images         {}{resize}{}, then {} image tokens each (id {}, {} strategy)\n",
        if processor.do_pad { "pad to square, " } else { "" },
        processor.crop.map(|(h, w)| format!(", center crop {w}×{h}")).unwrap_or_default(),
        cfg.image_tokens(),
        cfg.image_token_id,
        if cfg.select == Select::Default { "default: class token dropped" } else { "full" }
    );
    let shape = InfoShape { context: context.unwrap_or(t.max_position_embeddings.min(4096)), ..shape };
    let target = crate::preflight::budget::budget("auto", "auto", None, None).map_err(|e| anyhow::anyhow!(e))?.target;
    let arch = crate::preflight::resolve::arch_of_folder(dir).map_err(|e| anyhow::anyhow!(e))?;
    s += &super::info_memory::memory_text(&arch, shape, target);
    Ok(s)
}
