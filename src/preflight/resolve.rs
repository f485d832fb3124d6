//! Find the architecture of the model a training stage trains, before any stage has run: an
//! `@stage` reference is followed back through the profile (a `model-init` preset, a `pull`
//! from the hub, or the model another training stage started from); a folder is read.
//! A hub repository is sized from its cached `config.json` when it is downloaded already,
//! else from the configs retort knows ([`super::known`]).

use super::known;
use super::plan::Arch;
use super::needs::ModelOrigin;
use crate::model::encoder::EncoderConfig;
use crate::model::registry::{family_of_type, Family};
use crate::model::ModelConfig;
use crate::profile::Profile;
use std::path::Path;

/// The architecture of `reference` (a folder or `@stage`) and where its figures come from.
pub fn arch_of(profile: &Profile, reference: &str) -> Result<(Arch, String), String> {
    let mut reference = reference.to_string();
    // Each hop moves to an earlier stage, so the walk ends; the bound guards a malformed profile.
    for _ in 0..=profile.stages.len() {
        let Some(rest) = reference.strip_prefix('@') else {
            return from_folder(Path::new(&reference));
        };
        let name = rest.split('/').next().unwrap_or(rest);
        let stage = profile.stages.iter().find(|s| s.name == name).ok_or_else(|| format!("no stage named `{name}`"))?;
        match stage.config.model_origin() {
            Some(ModelOrigin::SameAs(m)) => reference = m,
            Some(ModelOrigin::Preset { name, context, corpus }) => return from_preset(&name, context, corpus.as_deref()),
            Some(ModelOrigin::Repo(repo)) => return from_repo(&repo),
            None => return Err(format!("stage `{name}` ({}) makes no model the preflight can size", stage.kind)),
        }
    }
    Err(format!("`{reference}`: the model references go round in a circle"))
}

/// Vocabulary words an `encoder-tiny` (or a word-level tiny decoder) is sized with when its
/// corpus is made by an earlier stage of the run (so not there to count before it starts): above the tiny presets' corpora
/// (measured: diffusion-ood-tiny's general.jsonl builds 279 words, uprise-tiny's corpus 181),
/// so an over-estimate.
pub const ENCODER_TINY_WORDS: usize = 1024;

fn from_preset(name: &str, context: Option<usize>, corpus: Option<&str>) -> Result<(Arch, String), String> {
    if name == "encoder-tiny" {
        use crate::model::encoder::tiny::{tiny_config, vocabulary, TinyEncoderShape};
        let shape = TinyEncoderShape { max_tokens: context.unwrap_or(128), ..Default::default() };
        // A corpus that is a file already is counted exactly; an `@stage` one is not made yet.
        let counted = corpus.filter(|c| !c.starts_with('@')).map(|c| vocabulary(Path::new(c)).map_err(|e| format!("{c}: {e:#}")));
        return match counted {
            Some(Ok(words)) => Ok((Arch::Encoder(tiny_config(words.len(), shape)), format!("built-in preset `encoder-tiny`, {} words from {}", words.len(), corpus.unwrap_or_default()))),
            Some(Err(e)) => Err(e),
            None => Ok((
                Arch::Encoder(tiny_config(ENCODER_TINY_WORDS, shape)),
                format!("built-in preset `encoder-tiny`, vocabulary assumed ≤ {ENCODER_TINY_WORDS} words (its corpus is made during the run)"),
            )),
        };
    }
    if name == crate::model::vision::tiny::PRESET {
        // The decoder of the VLM (its vision tower is a few percent more).
        let cfg = crate::model::vision::tiny::config().map_err(|e| format!("{e:#}"))?.text;
        return Ok((Arch::Decoder(cfg), format!("built-in preset `{name}`")));
    }
    // A `tiny` / `small` decoder with a corpus gets a word-level tokenizer: the character
    // vocabulary plus one token per corpus word, counted the way `model-init` builds it.
    let (vocab, source) = match corpus.filter(|_| matches!(name, "tiny" | "small")) {
        None => (crate::text::tiny::VOCAB_SIZE, format!("built-in preset `{name}`")),
        Some(c) if c.starts_with('@') => (
            crate::text::tiny::VOCAB_SIZE + ENCODER_TINY_WORDS,
            format!("built-in preset `{name}`, word vocabulary assumed ≤ {ENCODER_TINY_WORDS} words (its corpus is made during the run)"),
        ),
        Some(c) => {
            let pieces = crate::text::tiny_word::corpus_pieces(Path::new(c))?;
            let vocab = crate::text::tiny_word::vocab_size(&crate::text::tiny_word::learn_merges(&pieces));
            (vocab, format!("built-in preset `{name}`, a {vocab}-token vocabulary from {c}"))
        }
    };
    let mut cfg = ModelConfig::preset(name, vocab).map_err(|_| format!("preset `{name}` is sized only once its vocabulary is built (not checked)"))?;
    if let Some(n) = context {
        cfg.max_position_embeddings = n;
    }
    Ok((Arch::Decoder(cfg), source))
}

fn from_repo(repo: &str) -> Result<(Arch, String), String> {
    if let Some((arch, path)) = cached_config(repo) {
        return Ok((arch, format!("{repo} (cached config {})", path)));
    }
    let text = known::config_of(repo)
        .ok_or_else(|| format!("{repo} is not downloaded yet and retort does not know its config; `retort pull {repo}` first, then the preflight can size it"))?;
    Ok((parse(text, Path::new(repo))?, format!("{repo} (config known to retort)")))
}

fn cached_config(repo: &str) -> Option<(Arch, String)> {
    let req = crate::hub::PullRequest::parse(repo).ok()?;
    let (snapshot, _) = crate::hub::resolve_cached(&crate::hub::HubConfig::from_env(), &req).ok()?;
    let path = snapshot.join("config.json");
    let text = std::fs::read_to_string(&path).ok()?;
    Some((parse(&text, &path).ok()?, path.display().to_string()))
}

/// The architecture of a model folder (or a training stage's output folder), as a stage's
/// preflight reads it; `retort model info` uses it so both print the same figures.
pub fn arch_of_folder(dir: &Path) -> Result<Arch, String> {
    from_folder(dir).map(|(arch, _)| arch)
}

fn from_folder(dir: &Path) -> Result<(Arch, String), String> {
    // A training stage's output folder holds its model in `model/`.
    let dir = if !dir.join("config.json").is_file() && dir.join("model/config.json").is_file() { dir.join("model") } else { dir.to_path_buf() };
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((parse(&text, &path)?, path.display().to_string()))
}

fn parse(text: &str, path: &Path) -> Result<Arch, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or_default();
    if model_type == "qwen2_vl" {
        use crate::model::vision::{ImageProcessorConfig, Qwen2VlConfig};
        let c = Qwen2VlConfig::from_hf_json(text, path).map_err(|e| e.to_string())?;
        // The pixel budget bounds the patches of one image; a folder without the processor's
        // file takes Qwen2-VL's defaults, as loading does.
        let pp = path.with_file_name("preprocessor_config.json");
        let processor = if pp.is_file() { ImageProcessorConfig::from_file(&pp).map_err(|e| e.to_string())? } else { ImageProcessorConfig::qwen2_vl() };
        return Ok(Arch::Vlm(super::vision::VisionShape::qwen2_vl(&c, &processor), c.text));
    }
    if model_type == "llava" {
        let c = crate::model::vision::llava::LlavaConfig::from_hf_json(text, path).map_err(|e| e.to_string())?;
        return Ok(Arch::Vlm(super::vision::VisionShape::llava(&c), c.text));
    }
    match family_of_type(model_type) {
        Some(Family::Encoder(_)) => EncoderConfig::from_hf_json(text, path).map(Arch::Encoder).map_err(|e| e.to_string()),
        _ => ModelConfig::from_hf_json(text, path).map(Arch::Decoder).map_err(|e| e.to_string()),
    }
}
