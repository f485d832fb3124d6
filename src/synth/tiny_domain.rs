//! The tiny-domain corpora of the `adaptllm-tiny` experiment (research/synth-spec.md §4.8): a
//! "general" corpus of everyday English-like prose with instruction-format QA about it, and a
//! fictional "xenobotany" domain with its own vocabulary and facts, plus multiple-choice
//! questions on both that only a model that learned the facts can answer.
//!
//! Everything is drawn from one seed ([`crate::rng`]), so a seed gives the same files byte for
//! byte. The domain's facts live in one table ([`Domain`]: each plant has one class, region,
//! petal hue and pollinator) and every sentence is rendered from it, so the facts are the same
//! in every document, held-out ones included. The domain documents are written so that the
//! AdaptLLM miner's patterns (§4.3) find all their sub-categories: connective sentence pairs
//! whose clauses are 50+ characters without commas, a short fact sentence between two pairs
//! (a match consumes the sentence end the next one would need), definitions of 10+ character
//! words, "… is about …" sentences.
//!
//! Files (JSONL, each written atomically): `general.jsonl` and `domain.jsonl` /
//! `domain_heldout.jsonl` of `{"text"}` rows (first line a title), `general_instruct.jsonl` of
//! `{"prompt", "response"}` rows in the choice sets' question format, `domain_choice.jsonl` and `general_choice.jsonl` of `{"input", "options",
//! "gold_index"}` rows (input ends with "\nAnswer:"; options have no leading space: the scorer joins input and option with one, as lm-eval's target delimiter does).

pub mod method;

use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Sizes of the generated corpora. The defaults make a general corpus of about 250k
/// characters and a domain corpus of about 200k: small enough for the tiny experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyDomainConfig {
    pub seed: u64,
    pub general_docs: usize,
    pub general_instruct: usize,
    pub domain_docs: usize,
    pub domain_heldout: usize,
    pub domain_choice: usize,
    pub general_choice: usize,
    /// Invented plants, each with one class, region, hue and pollinator.
    pub entities: usize,
    pub classes: usize,
    pub regions: usize,
}

impl Default for TinyDomainConfig {
    fn default() -> Self {
        TinyDomainConfig {
            seed: 0,
            general_docs: 700,
            general_instruct: 1500,
            domain_docs: 300,
            domain_heldout: 75,
            domain_choice: 200,
            general_choice: 100,
            entities: 30,
            classes: 5,
            regions: 6,
        }
    }
}

impl TinyDomainConfig {
    /// Sizes that cannot make the corpora: `Err((key, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        // Four options a question: the gold value and three other values of the same kind.
        for (key, n) in [("classes", self.classes), ("regions", self.regions)] {
            if n < 4 {
                return Err((key.into(), format!("{key} must be at least 4 (a question has 4 options; got {n})")));
            }
        }
        if self.entities < 4 {
            return Err(("entities".into(), format!("entities must be at least 4 (got {})", self.entities)));
        }
        if self.classes > CLASS_TRAITS.len() || self.regions > CLIMATES.len() {
            return Err(("classes".into(), format!("at most {} classes and {} regions", CLASS_TRAITS.len(), CLIMATES.len())));
        }
        Ok(())
    }
}

/// The files [`write`] makes.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyDomainFiles {
    pub general: PathBuf,
    pub general_instruct: PathBuf,
    pub domain: PathBuf,
    pub domain_heldout: PathBuf,
    pub domain_choice: PathBuf,
    pub general_choice: PathBuf,
}

/// What every plant of a class does (one per class, in class order): the class's definition.
const CLASS_TRAITS: &[&str] = &[
    "stores water in its swollen roots",
    "closes its leaves when the sun goes down",
    "climbs along the trunks of older trees",
    "drops its seeds into running streams",
    "grows a thick coat of silver hairs",
    "feeds on the minerals of bare rock",
    "opens its flowers only under moonlight",
    "spreads by long runners below the moss",
];

/// The climate of each region (one per region, in region order).
const CLIMATES: &[&str] = &["misty", "volcanic", "frozen", "windy", "swampy", "sunny", "stormy", "sandy"];

const HUES: usize = 6;
const POLLINATORS: usize = 5;

/// One invented plant and its facts (indices into the [`Domain`]'s name lists).
#[derive(Debug, Clone, PartialEq)]
pub struct Plant {
    pub name: String,
    pub class: usize,
    pub region: usize,
    pub hue: usize,
    pub pollinator: usize,
}

/// The domain's vocabulary and fact table, all drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    pub plants: Vec<Plant>,
    /// Class names (10+ characters, so that "X is defined as" definitions are mined).
    pub classes: Vec<String>,
    /// Region names, capitalized.
    pub regions: Vec<String>,
    pub hues: Vec<String>,
    /// Pollinator names ("… moth", "… beetle").
    pub pollinators: Vec<String>,
}

const SYLLABLES: &[&str] = &[
    "vel", "mor", "an", "quo", "ris", "par", "zen", "tha", "lio", "bri", "dax", "nel", "or", "syl", "vek", "ul", "cae", "tor", "min", "ew",
    "sha", "ko", "rin", "ve", "lu", "gar", "fen", "oth", "ix", "pra",
];

impl Domain {
    /// The fact table of a seed (the `domain/facts` stream: the corpus draws do not shift it).
    pub fn generate(cfg: &TinyDomainConfig) -> Domain {
        let mut rng = Rng::derive(cfg.seed, "tiny-domain/facts");
        let mut used = BTreeSet::new();
        let mut word = |rng: &mut Rng, min_len: usize| loop {
            let mut w = String::new();
            while w.len() < min_len {
                w.push_str(SYLLABLES[rng.usize(SYLLABLES.len())]);
            }
            // Unique across every list, so a word names one thing only.
            if used.insert(w.clone()) {
                return w;
            }
        };
        let classes = (0..cfg.classes).map(|_| word(&mut rng, 10)).collect();
        let regions = (0..cfg.regions).map(|_| capitalize(&word(&mut rng, 6))).collect();
        let hues = (0..HUES).map(|_| word(&mut rng, 5)).collect();
        let kinds = ["moth", "beetle", "bee", "bat", "wasp"];
        let pollinators = (0..POLLINATORS).map(|i| format!("{} {}", word(&mut rng, 4), kinds[i % kinds.len()])).collect();
        let plants = (0..cfg.entities)
            .map(|_| Plant {
                name: word(&mut rng, 10),
                class: rng.usize(cfg.classes),
                region: rng.usize(cfg.regions),
                hue: rng.usize(HUES),
                pollinator: rng.usize(POLLINATORS),
            })
            .collect();
        Domain { plants, classes, regions, hues, pollinators }
    }

    /// One document about plant `p`: a title line, then sentences from the templates.
    fn document(&self, p: &Plant, rng: &mut Rng) -> String {
        let (e, c, r) = (&p.name, &self.classes[p.class], &self.regions[p.region]);
        let (h, pol, cl, tr) = (&self.hues[p.hue], &self.pollinators[p.pollinator], CLIMATES[p.region], CLASS_TRAITS[p.class]);
        let titles = [format!("Field notes on the {e}"), format!("The {e} of {r}"), format!("A {c} from the {cl} land of {r}")];
        let pick = |rng: &mut Rng, options: &[&'static str]| options[rng.usize(options.len())];
        // Sentence pairs joined by a connective; every clause is 50+ characters without commas
        // (the nli and common_reason patterns need both).
        let mut pairs = vec![
            format!(
                "Field surveys have found the {e} only in the {cl} lowlands of {r} so far. {}, botanists list the {e} as a native plant of {r} and of no other region.",
                pick(rng, &["Therefore", "Thus", "Hence", "Accordingly", "For this reason"])
            ),
            format!(
                "Every plant of the {c} group {tr} through the whole year. {}, the {e} also {tr} because it belongs to the {c} group.",
                pick(rng, &["Therefore", "Thus", "Hence"])
            ),
            format!(
                "Most plants that grow in the {cl} valleys of {r} carry pale flowers in the spring. {}, the {e} is known for its bright {h} petals that last until the first frost.",
                pick(rng, &["However", "In contrast", "On the contrary"])
            ),
            format!(
                "The {e} is a slow growing {c} that the people of {r} have studied for many years. {}, the {pol} visits its {h} flowers every morning to collect the sweet nectar.",
                pick(rng, &["Moreover", "Furthermore", "In addition", "Additionally", "Also"])
            ),
            format!(
                "The {e} keeps its {h} petals tightly closed during the dry months of the year. {} the {cl} climate of {r} the plant must protect its pollen from the harsh air.",
                pick(rng, &["Due to", "Owing to", "On account of"])
            ),
            format!(
                "The {e} depends on the {pol} to carry its pollen from one flower to the next. {}, without the {pol} the {e} of {r} could not make any seeds at all.",
                pick(rng, &["In other words", "Namely", "That is to say"])
            ),
        ];
        rng.shuffle(&mut pairs);
        let mut facts = vec![
            format!("The {e} is a {c} of {r}."),
            format!("Its petals are {h}."),
            format!("The {pol} carries its pollen."),
            format!("In the field guides {e} is defined as a {c} with {h} petals that grows in {r}."),
            format!("Among the plant groups {c} is defined as the group of plants that {tr}."),
            format!("The third chapter of the {r} survey is about the {e} and its {h} petals."),
        ];
        rng.shuffle(&mut facts);
        // A fact sentence before each pair gives it the sentence end its pattern starts with.
        // One to three pairs: short documents, many of them, within the size budget.
        let n = 1 + rng.usize(3);
        let mut body = vec![format!("This note describes one plant of {r}.")];
        for (pair, fact) in pairs.iter().zip(&facts).take(n) {
            body.push(fact.clone());
            body.push(pair.clone());
        }
        body.push(format!("The {e} remains a {c} worth a visit."));
        format!("{}\n{}", titles[rng.usize(titles.len())], body.join(" "))
    }

    /// Multiple-choice questions on the facts: (input, options, gold index).
    fn question(&self, rng: &mut Rng) -> (String, Vec<String>, usize) {
        let p = &self.plants[rng.usize(self.plants.len())];
        let (question, values, gold) = match rng.usize(4) {
            0 => (format!("Which group of plants does the {} belong to?", p.name), &self.classes, p.class),
            1 => (format!("In which region does the {} grow?", p.name), &self.regions, p.region),
            2 => (format!("What color are the petals of the {}?", p.name), &self.hues, p.hue),
            _ => (format!("Which animal carries the pollen of the {}?", p.name), &self.pollinators, p.pollinator),
        };
        let (options, gold_index) = options_around(rng, values, gold);
        (format!("Question: {question}\nAnswer:"), options, gold_index)
    }
}

/// Four options: `values[gold]` and three other values, in a random order.
fn options_around(rng: &mut Rng, values: &[String], gold: usize) -> (Vec<String>, usize) {
    let mut others: Vec<usize> = (0..values.len()).filter(|&i| i != gold).collect();
    rng.shuffle(&mut others);
    let mut chosen: Vec<usize> = others.into_iter().take(3).chain([gold]).collect();
    rng.shuffle(&mut chosen);
    let gold_index = chosen.iter().position(|&i| i == gold).unwrap_or(0);
    (chosen.iter().map(|&i| values[i].clone()).collect(), gold_index)
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn article(w: &str) -> &'static str {
    if w.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Everyday facts of the general corpus: (thing, kind, color, place, what people do with it).
pub const GENERAL: &[(&str, &str, &str, &str, &str)] = &[
    ("apple", "fruit", "red", "orchard", "eat it fresh"),
    ("banana", "fruit", "yellow", "market", "peel it first"),
    ("lemon", "fruit", "yellow", "kitchen", "squeeze it into tea"),
    ("grape", "fruit", "purple", "vineyard", "press it into juice"),
    ("carrot", "vegetable", "orange", "garden", "cut it into soup"),
    ("cucumber", "vegetable", "green", "garden", "slice it for salad"),
    ("tomato", "vegetable", "red", "greenhouse", "cook it into sauce"),
    ("hammer", "tool", "gray", "workshop", "drive nails with it"),
    ("shovel", "tool", "brown", "shed", "dig holes with it"),
    ("broom", "tool", "brown", "hallway", "sweep the floor with it"),
    ("kettle", "pot", "black", "kitchen", "boil water in it"),
    ("pillow", "cushion", "white", "bedroom", "rest their head on it"),
    ("blanket", "cover", "blue", "bedroom", "stay warm under it"),
    ("bicycle", "vehicle", "green", "street", "ride it to work"),
    ("canoe", "boat", "brown", "lake", "paddle it across the water"),
    ("violin", "instrument", "brown", "concert hall", "play music on it"),
    ("drum", "instrument", "red", "parade", "beat a rhythm on it"),
    ("pencil", "writing tool", "yellow", "classroom", "write notes with it"),
    ("notebook", "book", "blue", "classroom", "keep notes in it"),
    ("umbrella", "cover", "black", "doorway", "stay dry under it"),
    ("cow", "animal", "white", "farm", "get milk from it"),
    ("sheep", "animal", "white", "meadow", "get wool from it"),
    ("crow", "bird", "black", "field", "hear it call at dawn"),
    ("frog", "animal", "green", "pond", "hear it croak at night"),
];

fn general_document(rng: &mut Rng) -> String {
    let (t, k, c, p, u) = GENERAL[rng.usize(GENERAL.len())];
    let (t2, k2, c2, p2, _) = GENERAL[rng.usize(GENERAL.len())];
    let connective = |rng: &mut Rng, options: &[&'static str]| options[rng.usize(options.len())];
    let mut sentences = vec![
        format!("{} {t} is {} {k}.", capitalize(article(t)), article(k)),
        format!("Most people find the {t} in the {p}."),
        format!("A {t} is usually {c}."),
        format!("People {u}."),
        format!(
            "Many families keep at least one {t} somewhere in the {p} of their home. {}, the {t} is one of the most familiar things in daily life.",
            connective(rng, &["Therefore", "Thus", "For this reason"])
        ),
        format!(
            "Children often think that every {k} looks the same at first sight. {}, the {c} color of the {t} makes it easy to tell apart.",
            connective(rng, &["However", "But", "In contrast"])
        ),
        format!("The {t2} is {} {k2} that is often {c2} and found in the {p2}.", article(k2)),
    ];
    rng.shuffle(&mut sentences[1..]);
    let n = 4 + rng.usize(3);
    let title = [format!("About the {t}"), format!("Everyday things: the {t}"), format!("The {t} in the {p}")];
    format!("{}\n{}", title[rng.usize(title.len())], sentences[..n].join(" "))
}

/// One instruction-format QA pair about a general fact: the prompt in the multiple-choice
/// sets' format ("Question: …\nAnswer:") and a short answer starting with a space, as the
/// options do. Sharing the format is what makes the general model promptable by the choice
/// sets at all (a tiny model does not carry a QA habit across formats).
fn general_qa(rng: &mut Rng) -> (String, String) {
    let (t, k, c, p, u) = GENERAL[rng.usize(GENERAL.len())];
    let (question, answer) = match rng.usize(4) {
        0 => (format!("What color is {} {t}?", article(t)), c.to_string()),
        1 => (format!("What kind of thing is {} {t}?", article(t)), k.to_string()),
        2 => (format!("Where do people usually find {} {t}?", article(t)), p.to_string()),
        _ => (format!("What do people do with {} {t}?", article(t)), u.to_string()),
    };
    (format!("Question: {question}\nAnswer:"), format!(" {answer}"))
}

fn general_question(rng: &mut Rng) -> (String, Vec<String>, usize) {
    let i = rng.usize(GENERAL.len());
    let (t, _, c, p, _) = GENERAL[i];
    // The option lists are the distinct values of the asked field.
    let color = rng.bool(0.5);
    let (question, gold) = if color {
        (format!("What color is {} {t}?", article(t)), c)
    } else {
        (format!("Where do people usually find {} {t}?", article(t)), p)
    };
    let values: BTreeSet<&str> = GENERAL.iter().map(|g| if color { g.2 } else { g.3 }).collect();
    let values: Vec<String> = values.into_iter().map(String::from).collect();
    let gold = values.iter().position(|v| v == gold).unwrap_or(0);
    let (options, gold_index) = options_around(rng, &values, gold);
    (format!("Question: {question}\nAnswer:"), options, gold_index)
}

/// Write the six files into `dir` (created if needed). Returns the files and the rows of each,
/// by file name.
pub fn write(dir: &Path, cfg: &TinyDomainConfig) -> Result<(TinyDomainFiles, BTreeMap<String, u64>)> {
    if let Err((key, msg)) = cfg.check() {
        bail!("tiny-domain config: `{key}`: {msg}");
    }
    crate::fsutil::ensure_dir(dir)?;
    let domain = Domain::generate(cfg);
    let mut counts = BTreeMap::new();
    let mut put = |name: &str, rows: Vec<serde_json::Value>| -> Result<PathBuf> {
        let path = dir.join(name);
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        crate::fsutil::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        counts.insert(name.to_string(), rows.len() as u64);
        Ok(path)
    };
    // Each file has its own stream, so a size change in one leaves the others unchanged.
    let stream = |label: &str| Rng::derive(cfg.seed, &format!("tiny-domain/{label}"));
    let mut rng = stream("general");
    let general = put("general.jsonl", (0..cfg.general_docs).map(|_| json!({"text": general_document(&mut rng)})).collect())?;
    let mut rng = stream("general_instruct");
    let general_instruct = put(
        "general_instruct.jsonl",
        (0..cfg.general_instruct)
            .map(|_| {
                let (prompt, response) = general_qa(&mut rng);
                json!({"prompt": prompt, "response": response})
            })
            .collect(),
    )?;
    // Documents go round the plants, so each plant has about the same number of documents.
    let docs = |label: &str, n: usize| {
        let mut rng = stream(label);
        (0..n).map(|i| json!({"text": domain.document(&domain.plants[i % domain.plants.len()], &mut rng)})).collect::<Vec<_>>()
    };
    let domain_file = put("domain.jsonl", docs("domain", cfg.domain_docs))?;
    let domain_heldout = put("domain_heldout.jsonl", docs("domain_heldout", cfg.domain_heldout))?;
    let choice_row = |(input, options, gold_index): (String, Vec<String>, usize)| json!({"input": input, "options": options, "gold_index": gold_index});
    let mut rng = stream("domain_choice");
    let domain_choice = put("domain_choice.jsonl", (0..cfg.domain_choice).map(|_| choice_row(domain.question(&mut rng))).collect())?;
    let mut rng = stream("general_choice");
    let general_choice = put("general_choice.jsonl", (0..cfg.general_choice).map(|_| choice_row(general_question(&mut rng))).collect())?;
    Ok((TinyDomainFiles { general, general_instruct, domain: domain_file, domain_heldout, domain_choice, general_choice }, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::adaptllm::mine;

    fn texts(path: &Path) -> Vec<String> {
        rows(path).into_iter().map(|r| r["text"].as_str().unwrap().to_string()).collect()
    }

    fn rows(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn the_miner_finds_every_sub_category_in_the_domain_corpus() {
        let d = tempfile::tempdir().unwrap();
        let (files, counts) = write(d.path(), &TinyDomainConfig::default()).unwrap();
        assert_eq!(counts["domain.jsonl"], 300);
        // The default sizes are the experiment's budget: about 250k characters of general
        // text and 200k of domain text.
        let chars = |p: &Path| texts(p).iter().map(|t| t.chars().count()).sum::<usize>();
        let (general, domain) = (chars(&files.general), chars(&files.domain));
        eprintln!("characters: general {general}, domain {domain}, held-out {}; rows {counts:?}", chars(&files.domain_heldout));
        assert!((200_000..300_000).contains(&general) && (160_000..240_000).contains(&domain), "general {general}, domain {domain}");
        // AdaptLLM mines each document on its own.
        let mut found: BTreeMap<&str, usize> = BTreeMap::new();
        for t in texts(&files.domain) {
            for m in mine(&t) {
                *found.entry(m.sub).or_default() += 1;
            }
        }
        eprintln!("mined at seed 0: {found:?}");
        for sub in ["entail", "contradict", "neutral", "cause_effect", "effect_cause", "similar", "different", "definition", "topic"] {
            let n = found.get(sub).copied().unwrap_or(0);
            assert!(n >= 60, "sub-category {sub} mined {n} times: {found:?}");
        }
    }

    #[test]
    fn every_mention_of_a_plant_states_its_own_facts() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TinyDomainConfig { seed: 4, ..Default::default() };
        let (files, _) = write(d.path(), &cfg).unwrap();
        let domain = Domain::generate(&cfg);
        let mut checked = 0;
        for t in texts(&files.domain).iter().chain(&texts(&files.domain_heldout)) {
            // Sentence by sentence (and the title line): a sentence naming one plant and one
            // class, region or hue names that plant's own.
            for s in t.split(['.', '\n']) {
                let words: BTreeSet<&str> = s.split(|c: char| !c.is_alphanumeric()).collect();
                let plants: Vec<&Plant> = domain.plants.iter().filter(|p| words.contains(p.name.as_str())).collect();
                let named = |list: &[String]| list.iter().enumerate().filter(|(_, v)| words.contains(v.as_str())).map(|(i, _)| i).collect::<Vec<_>>();
                let [p] = plants[..] else { continue };
                for (list, own) in [(&domain.classes, p.class), (&domain.regions, p.region), (&domain.hues, p.hue)] {
                    for i in named(list) {
                        assert_eq!(i, own, "{:?} in {s:?}", p.name);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 2000, "only {checked} fact mentions checked");
        // Document by document, which also covers the sentences that do not name the plant
        // ("Its petals are …", "The … moth carries its pollen."): a document is about one
        // plant, and every class, region, hue and pollinator it names is that plant's own.
        let mut documents = 0;
        for t in texts(&files.domain).iter().chain(&texts(&files.domain_heldout)) {
            let words: BTreeSet<&str> = t.split(|c: char| !c.is_alphanumeric()).collect();
            let plants: Vec<&Plant> = domain.plants.iter().filter(|p| words.contains(p.name.as_str())).collect();
            let [p] = plants[..] else { panic!("a document names {} plants: {t:?}", plants.len()) };
            for (list, own) in [(&domain.classes, p.class), (&domain.regions, p.region), (&domain.hues, p.hue)] {
                for (i, v) in list.iter().enumerate() {
                    assert!(i == own || !words.contains(v.as_str()), "{:?} is not {v:?}: {t:?}", p.name);
                }
            }
            for (i, v) in domain.pollinators.iter().enumerate() {
                assert!(i == p.pollinator || !t.contains(v.as_str()), "{:?} is not pollinated by {v:?}: {t:?}", p.name);
            }
            documents += 1;
        }
        assert_eq!(documents, cfg.domain_docs + cfg.domain_heldout);
    }

    #[test]
    fn choice_rows_have_the_table_fact_as_gold() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TinyDomainConfig::default();
        let (files, counts) = write(d.path(), &cfg).unwrap();
        let domain = Domain::generate(&cfg);
        let choice = rows(&files.domain_choice);
        assert_eq!(choice.len() as u64, counts["domain_choice.jsonl"]);
        for r in &choice {
            let input = r["input"].as_str().unwrap();
            assert!(input.ends_with("\nAnswer:"), "{input}");
            let options: Vec<&str> = r["options"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
            assert_eq!(options.len(), 4);
            assert!(options.iter().all(|o| !o.starts_with(' ')) && options.iter().collect::<BTreeSet<_>>().len() == 4, "{options:?}");
            let words: BTreeSet<&str> = input.split(|c: char| !c.is_alphanumeric()).collect();
            let named: Vec<&Plant> = domain.plants.iter().filter(|p| words.contains(p.name.as_str())).collect();
            let [plant] = named[..] else { panic!("the question names one plant: {input}") };
            let want = if input.contains("group of plants") {
                &domain.classes[plant.class]
            } else if input.contains("region") {
                &domain.regions[plant.region]
            } else if input.contains("color") {
                &domain.hues[plant.hue]
            } else {
                &domain.pollinators[plant.pollinator]
            };
            assert_eq!(options[r["gold_index"].as_u64().unwrap() as usize], want, "{input}");
        }
        for r in rows(&files.general_choice) {
            let input = r["input"].as_str().unwrap();
            let gold = r["options"][r["gold_index"].as_u64().unwrap() as usize].as_str().unwrap().trim().to_string();
            let fact = GENERAL.iter().find(|g| input.contains(&format!(" {}?", g.0))).expect("a general thing");
            assert_eq!(gold, if input.contains("color") { fact.2 } else { fact.3 }, "{input}");
        }
        // Instruction rows are prompts in the choice sets' format with a short answer.
        let instruct = rows(&files.general_instruct);
        assert_eq!(instruct.len(), 1500);
        assert!(instruct.iter().all(|r| r["prompt"].as_str().unwrap().starts_with("Question: ") && r["prompt"].as_str().unwrap().ends_with("\nAnswer:")));
        assert!(instruct.iter().all(|r| r["response"].as_str().unwrap().starts_with(' ') && r["response"].as_str().unwrap().len() > 1));
    }

    #[test]
    fn a_seed_gives_the_same_files_and_another_seed_others() {
        let small = |seed| TinyDomainConfig { seed, general_docs: 20, general_instruct: 20, domain_docs: 20, domain_heldout: 5, domain_choice: 10, general_choice: 10, ..Default::default() };
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (fa, _) = write(a.path(), &small(1)).unwrap();
        let (fb, _) = write(b.path(), &small(1)).unwrap();
        let (fc, _) = write(c.path(), &small(2)).unwrap();
        let read = |p: &Path| std::fs::read(p).unwrap();
        for (x, y) in [(&fa.general, &fb.general), (&fa.domain, &fb.domain), (&fa.domain_choice, &fb.domain_choice), (&fa.general_instruct, &fb.general_instruct)] {
            assert!(read(x) == read(y), "{} differs between two runs of one seed", x.display());
        }
        assert!(read(&fa.domain) != read(&fc.domain) && read(&fa.general) != read(&fc.general));
        assert_ne!(Domain::generate(&small(1)).plants, Domain::generate(&small(2)).plants);
    }

    #[test]
    fn sizes_that_cannot_make_four_options_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = write(d.path(), &TinyDomainConfig { classes: 3, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("`classes`") && e.contains("at least 4"), "{e}");
        assert!(!d.path().join("general.jsonl").exists(), "files were written for a bad config");
    }
}
