//! The generated text domains of the `diffusion-ood-tiny` experiment (research/synth-spec.md
//! §5.9): recipes (the ID domain: imperative steps with quantities), legal clauses (long
//! sentences with "shall"), image captions (short noun phrases), and the hard pair of the
//! recipes, menus: only words the recipes use, in noun-phrase syntax ("golden lentils with
//! cumin and rice"), the analogue of SST-2 against Multi30K captions.
//!
//! Files (JSONL, written atomically): `general.jsonl` (`{"text"}`: everyday prose plus texts
//! of every domain drawn from streams of their own, the mixture the encoder is pre-trained
//! on), `recipes_train.jsonl` (`{"text"}`), and the scoring sets (`{"text", "source"}`, §5.7):
//! `recipes_test.jsonl`, `legal.jsonl`, `captions.jsonl`, `menus.jsonl`. Every file
//! has its own random stream, so no text is shared between them except by chance.

use super::method::{parse_options, Method, MethodEnv};
use super::output::Counts;
use crate::rng::Rng;
use crate::stage::StageCtx;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyOodConfig {
    pub seed: u64,
    /// Texts of the pre-training mixture.
    pub general: usize,
    /// ID training texts (recipes).
    pub train: usize,
    /// Texts of each scoring set.
    pub test: usize,
}

impl Default for TinyOodConfig {
    fn default() -> Self {
        TinyOodConfig { seed: 0, general: 3000, train: 2000, test: 200 }
    }
}

const INGREDIENTS: &[&str] = &[
    "onions", "garlic", "carrots", "potatoes", "tomatoes", "lentils", "rice", "butter", "flour", "sugar", "eggs", "milk",
    "cream", "spinach", "mushrooms", "peppers", "beans", "chicken", "salmon", "noodles", "cheese", "lemons", "honey", "oats",
];
const VERBS: &[&str] = &["chop", "slice", "stir", "whisk", "simmer", "boil", "fry", "roast", "mix", "fold", "grate", "drain", "toast", "season"];
const UNITS: &[&str] = &["cups", "grams", "spoons", "pinches", "handfuls", "slices"];
const VESSELS: &[&str] = &["pan", "pot", "bowl", "oven", "tray", "skillet"];
const STATES: &[&str] = &["golden", "soft", "smooth", "crisp", "tender", "thick", "bubbling"];
const SPICES: &[&str] = &["salt", "pepper", "cumin", "paprika", "thyme", "basil", "ginger"];

const PARTIES: &[&str] = &["tenant", "landlord", "supplier", "purchaser", "licensee", "licensor", "contractor", "employer"];
const DUTIES: &[&str] = &[
    "deliver written notice", "pay all outstanding fees", "indemnify the other party", "maintain adequate insurance",
    "return all confidential materials", "remedy any material breach", "provide audited statements",
];
const EVENTS: &[&str] = &["the effective date", "termination of this agreement", "receipt of an invoice", "any change of control", "the closing date"];
const CONDITIONS: &[&str] = &[
    "such obligation is not waived in writing", "the other party has fulfilled its duties hereunder",
    "no force majeure event has occurred", "applicable law does not otherwise require",
];

const ADJECTIVES: &[&str] = &["small", "young", "old", "brown", "white", "happy", "tall", "sleepy", "striped", "wet"];
const SUBJECTS: &[&str] = &["dog", "cat", "man", "woman", "child", "horse", "bird", "boy", "girl", "surfer", "cyclist"];
const ACTIONS: &[&str] = &["running", "sitting", "jumping", "standing", "playing", "walking", "sleeping", "looking up"];
const PLACES: &[&str] = &["beach", "street", "field", "bench", "bridge", "park", "wall", "snowy hill", "river bank"];

const GENERAL: &[&str] = &[
    "The weather in the town was mild for most of the week.", "People gathered at the market on Saturday morning.",
    "The train left the station a few minutes late.", "Children walked to school along the quiet road.",
    "The library opened a new room for reading.", "A storm passed over the hills during the night.",
    "The meeting was moved to the afternoon.", "Many visitors came to see the old castle.",
    "The river rose after the long rain.", "She wrote a letter to her friend in the city.",
];

fn pick<'a>(rng: &mut Rng, v: &[&'a str]) -> &'a str {
    v[rng.usize(v.len())]
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// 2–4 imperative steps.
pub fn recipe(rng: &mut Rng) -> String {
    let steps = 2 + rng.usize(3);
    (0..steps)
        .map(|_| match rng.usize(4) {
            0 => format!("{} {} {} of {} and {} until {}.", capitalise(pick(rng, VERBS)), 1 + rng.usize(4), pick(rng, UNITS), pick(rng, INGREDIENTS), pick(rng, VERBS), pick(rng, STATES)),
            1 => format!("Add the {} to the {} and {} for {} minutes.", pick(rng, INGREDIENTS), pick(rng, VESSELS), pick(rng, VERBS), 5 * (1 + rng.usize(8))),
            2 => format!("Season with {} and {}, then serve warm.", pick(rng, SPICES), pick(rng, SPICES)),
            _ => format!("Heat the {} and {} the {} gently.", pick(rng, VESSELS), pick(rng, VERBS), pick(rng, INGREDIENTS)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One long clause.
pub fn legal(rng: &mut Rng) -> String {
    format!(
        "The {} shall {} within {} days of {}, provided that {}, and notwithstanding any other provision the {} shall not {} without prior consent.",
        pick(rng, PARTIES),
        pick(rng, DUTIES),
        5 * (1 + rng.usize(12)),
        pick(rng, EVENTS),
        pick(rng, CONDITIONS),
        pick(rng, PARTIES),
        pick(rng, DUTIES)
    )
}

/// One short noun phrase.
pub fn caption(rng: &mut Rng) -> String {
    match rng.usize(3) {
        0 => format!("a {} {} {} on a {}", pick(rng, ADJECTIVES), pick(rng, SUBJECTS), pick(rng, ACTIONS), pick(rng, PLACES)),
        1 => format!("two {} {}s near the {}", pick(rng, ADJECTIVES), pick(rng, SUBJECTS), pick(rng, PLACES)),
        _ => format!("the {} {} in front of a {}", pick(rng, SUBJECTS), pick(rng, ACTIONS), pick(rng, PLACES)),
    }
}

/// A menu line: only words the recipes use, in noun-phrase syntax (no imperative, no
/// quantities), so the vocabulary is shared and only the syntax differs.
pub fn menu(rng: &mut Rng) -> String {
    match rng.usize(3) {
        0 => format!("{} {} with {} and {}", pick(rng, STATES), pick(rng, INGREDIENTS), pick(rng, SPICES), pick(rng, INGREDIENTS)),
        1 => format!("{} and {} with {}, warm", pick(rng, INGREDIENTS), pick(rng, INGREDIENTS), pick(rng, SPICES)),
        _ => format!("the {} {} of the {}", pick(rng, STATES), pick(rng, INGREDIENTS), pick(rng, VESSELS)),
    }
}

/// Everyday prose, with the odd domain word, for the pre-training mixture.
fn general(rng: &mut Rng) -> String {
    let n = 2 + rng.usize(3);
    (0..n).map(|_| pick(rng, GENERAL).to_string()).collect::<Vec<_>>().join(" ")
}

/// A domain's text generator.
pub type Generator = fn(&mut Rng) -> String;

/// The domains by name, each a generator.
pub const DOMAINS: [(&str, Generator); 4] =
    [("recipes", recipe), ("legal", legal), ("captions", caption), ("menus", menu)];

pub fn write(dir: &Path, cfg: &TinyOodConfig) -> Result<Vec<(String, u64)>> {
    crate::fsutil::ensure_dir(dir)?;
    let mut files: Vec<(String, String, u64)> = Vec::new();
    // The mixture: one part everyday prose to one part of each domain.
    let mut rng = Rng::derive(cfg.seed, "tiny-ood/general");
    let mut text = String::new();
    for _ in 0..cfg.general {
        let k = rng.usize(DOMAINS.len() + 1);
        let doc = if k == DOMAINS.len() { general(&mut rng) } else { (DOMAINS[k].1)(&mut rng) };
        text.push_str(&format!("{}\n", json!({ "text": doc })));
    }
    files.push(("general.jsonl".into(), text, cfg.general as u64));
    let mut rng = Rng::derive(cfg.seed, "tiny-ood/recipes_train");
    let text: String = (0..cfg.train).map(|_| format!("{}\n", json!({ "text": recipe(&mut rng) }))).collect();
    files.push(("recipes_train.jsonl".into(), text, cfg.train as u64));
    for (name, make) in DOMAINS {
        let file = if name == "recipes" { "recipes_test.jsonl".to_string() } else { format!("{name}.jsonl") };
        let mut rng = Rng::derive(cfg.seed, &format!("tiny-ood/{file}"));
        let text: String = (0..cfg.test).map(|_| format!("{}\n", json!({ "text": make(&mut rng), "source": name }))).collect();
        files.push((file, text, cfg.test as u64));
    }
    let mut counts = Vec::new();
    for (name, text, n) in files {
        let path = dir.join(&name);
        crate::fsutil::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        counts.push((name, n));
    }
    Ok(counts)
}

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    let c = parse_options::<TinyOodConfig>(options)?;
    if c.general == 0 || c.train == 0 || c.test == 0 {
        return Err(("test".into(), "general, train and test must each be at least 1".into()));
    }
    Ok(())
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let config: TinyOodConfig = super::method::generator_options(options, env, |c: &mut TinyOodConfig| &mut c.seed)?;
    Ok(Box::new(TinyOod { config }))
}

struct TinyOod {
    config: TinyOodConfig,
}

impl Method for TinyOod {
    fn files(&self) -> &'static [&'static str] {
        &["general.jsonl", "recipes_train.jsonl", "recipes_test.jsonl", "legal.jsonl", "captions.jsonl", "menus.jsonl"]
    }
    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        ctx.events.info(format!("generating the tiny OOD domains (seed {})", self.config.seed));
        let mut counts = Counts::default();
        for (file, n) in write(dir, &self.config)? {
            counts.rows.insert(file, n);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_files_and_the_hard_pair_shares_vocabulary() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = TinyOodConfig { seed: 3, general: 50, train: 40, test: 30 };
        write(a.path(), &cfg).unwrap();
        write(b.path(), &cfg).unwrap();
        for f in ["general.jsonl", "recipes_train.jsonl", "recipes_test.jsonl", "legal.jsonl", "captions.jsonl", "menus.jsonl"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap(), "{f}");
        }
        let words = |f: &str| -> std::collections::BTreeSet<String> {
            std::fs::read_to_string(a.path().join(f)).unwrap().split(|c: char| !c.is_alphabetic()).map(str::to_lowercase).collect()
        };
        let recipes = words("recipes_test.jsonl");
        let share = |f: &str| words(f).iter().filter(|w| recipes.contains(*w)).count() as f64 / words(f).len() as f64;
        // Menus are made of the recipes' words; captions and legal clauses hardly use them.
        assert!(share("menus.jsonl") > 2.0 * share("captions.jsonl"), "{} vs {}", share("menus.jsonl"), share("captions.jsonl"));
        assert!(share("menus.jsonl") > 2.0 * share("legal.jsonl"));
    }
}
