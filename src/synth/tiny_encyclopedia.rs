//! The encyclopedia of the instruct-pt-tiny experiment (research/synth-spec.md §3.8): seeded
//! fictional entities (river towns, people, ships) with six facts each, a raw text per entity
//! that states every fact once, the rule-based synthesizer stand-in that turns the known facts
//! into question–answer pairs, and closed-book multiple-choice questions on the facts.
//!
//! Knowledge extraction needs generalisation, so nothing is uniform: each fact has several
//! sentence templates, the sentences come in a shuffled order per entity, and each attribute
//! has several question phrasings. Every draw of an entity comes from its own stream (the
//! seed and its index), so the entity count changes no other entity.
//!
//! Splits: a `heldout_fraction` of each kind is held out (its facts appear only as raw text,
//! in both arms of the experiment); of the rest, an `augmented_fraction` is `train_aug` (the
//! instruct arm adds synthesized QA for them) and the others are `train_raw`. The tiny
//! synthesizer learns from the `train_raw` entities' rule pairs (`qa_rule_synth.jsonl`), so it
//! is applied to `train_aug` texts it never saw and held-out facts reach no training set.
//!
//! Files (JSONL, each written atomically):
//! - `raw.jsonl`: `{"text", "entity", "kind", "split"}` for every entity, split `train_aug`,
//!   `train_raw` or `heldout`; `raw_train_aug.jsonl`, `raw_train_raw.jsonl`,
//!   `raw_heldout.jsonl` are the same rows by split (corpus readers take whole files).
//! - `qa_rule.jsonl`: `{"context", "qa_list": [[q, a], ...], "entity", "split"}` for every
//!   entity (the context is the raw text; [`rule_pairs`]); `qa_rule_synth.jsonl` the
//!   synthesizer's training rows (the `train_raw` entities).
//! - `qa_eval.jsonl`: `{"input", "options", "gold_index", "entity", "attribute", "split"}`, one
//!   row per fact of every entity, in the choice sets' format (`crate::eval::text::choice`:
//!   input "Question: …\nAnswer:", options without a leading space, as the scorer puts one);
//!   distractors are other values of the same attribute. `qa_eval_heldout.jsonl` and
//!   `qa_eval_train.jsonl` are its rows by split (train = `train_aug` + `train_raw`).
//!
//! Pair accuracy of a synthesizer: [`check_pair`] matches a question against the entity's
//! question templates and the answer against the fact.

use crate::rng::Rng;
use crate::stage::StageCtx;
use crate::synth::method::{parse_options, Method, MethodEnv};
use crate::synth::output::Counts;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyEncyclopediaConfig {
    pub seed: u64,
    /// Entities in all (the kinds take turns).
    pub entities: usize,
    /// Share of each kind held out: facts only as raw text, evaluated closed-book.
    pub heldout_fraction: f64,
    /// Share of the training entities whose texts get QA augmentation.
    pub augmented_fraction: f64,
    /// Options per multiple-choice question (the fact and distractors of the same attribute).
    pub options: usize,
}

impl Default for TinyEncyclopediaConfig {
    fn default() -> Self {
        TinyEncyclopediaConfig { seed: 0, entities: 600, heldout_fraction: 0.2, augmented_fraction: 0.5, options: 4 }
    }
}

impl TinyEncyclopediaConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        let min = 4 * KINDS.len();
        if self.entities < min {
            return err("entities", format!("must be at least {min} (4 of each of the {} kinds; got {})", KINDS.len(), self.entities));
        }
        for (key, f) in [("heldout_fraction", self.heldout_fraction), ("augmented_fraction", self.augmented_fraction)] {
            if !(0.0..=1.0).contains(&f) {
                return err(key, format!("must be between 0 and 1 (got {f})"));
            }
        }
        if !(2..=8).contains(&self.options) {
            return err("options", format!("must be between 2 and 8 (got {})", self.options));
        }
        Ok(())
    }
}

/// How an attribute's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Values {
    /// One of a fixed list (shared by the entities: a model can learn the value set).
    Pool(&'static [&'static str]),
    /// A year in `lo..=hi`.
    Year(i64, i64),
    /// A count in `lo..=hi`, a multiple of `step`, written with thousands separators.
    Count(i64, i64, i64),
    /// An invented person's name, unique to the entity.
    Name,
}

/// One attribute of a kind: its key, how its values are drawn, the sentences stating it and
/// the questions asking it (`{n}` the entity's name, `{v}` the value).
#[derive(Debug)]
pub struct AttrSpec {
    pub key: &'static str,
    pub values: Values,
    pub sentences: &'static [&'static str],
    pub questions: &'static [&'static str],
}

#[derive(Debug)]
pub struct KindSpec {
    pub key: &'static str,
    /// The opening sentence (it names the entity and states no fact).
    pub intro: &'static [&'static str],
    pub attrs: &'static [AttrSpec],
}

const REGIONS: &[&str] = &["Marrowdale", "Ostveld", "Kelmarch", "Sundrift", "Varrow", "Eskwold", "Thornmere", "Calvain", "Brightholm", "Durrensk"];
const TRADES: &[&str] = &["salt", "timber", "wool", "copper", "glass", "amber", "pottery", "silk", "tin", "leather"];
const RIVERS: &[&str] = &["Ambrel", "Sorrow", "Quill", "Tessen", "Mirel", "Hollin", "Vardle", "Cresk", "Olwen", "Stray"];
const CITIES: &[&str] = &["Palmira", "Hestow", "Corvane", "Lunder", "Ilsabeth", "Garrowby", "Myrrin", "Tolbeck", "Ashcombe", "Quenfort"];
const OCCUPATIONS: &[&str] =
    &["cartographer", "glassblower", "bookbinder", "shipwright", "potter", "weaver", "clockmaker", "stonemason", "physician", "translator", "brewer", "surveyor"];
const INSTRUMENTS: &[&str] = &["lute", "harp", "fiddle", "flute", "drum", "horn", "zither", "bagpipe"];
const PORTS: &[&str] = &["Saltreach", "Gullhaven", "Fennport", "Widmouth", "Caskell", "Brindlebay", "Norhaven", "Tidewick", "Oarsby", "Kestrelmouth"];
const CARGOES: &[&str] = &["spices", "coal", "grain", "tea", "cotton", "marble", "rum", "furs", "iron", "olive oil"];
const COLOURS: &[&str] = &["red", "blue", "green", "black", "white", "yellow", "grey", "orange"];

pub const KINDS: &[KindSpec] = &[
    KindSpec {
        key: "town",
        intro: &["{n} is a river town.", "{n} is a small town on a river.", "This article is about the river town of {n}.", "{n} is an old river town."],
        attrs: &[
            AttrSpec {
                key: "founded",
                values: Values::Year(1600, 1950),
                sentences: &[
                    "{n} was founded in {v}.",
                    "The town of {n} dates back to {v}, the year of its founding.",
                    "Settlers established {n} in the year {v}.",
                    "In {v}, the first houses of {n} were built.",
                ],
                questions: &["When was {n} founded?", "In what year was the town of {n} founded?", "What is the founding year of {n}?", "In which year was {n} established?"],
            },
            AttrSpec {
                key: "population",
                values: Values::Count(300, 40000, 10),
                sentences: &[
                    "{n} has a population of {v}.",
                    "About {v} people live in {n}.",
                    "The town of {n} is home to {v} residents.",
                    "Today {v} people call {n} their home.",
                ],
                questions: &["What is the population of {n}?", "How many people live in {n}?", "How many residents does {n} have?"],
            },
            AttrSpec {
                key: "founder",
                values: Values::Name,
                sentences: &[
                    "The founder of {n} was {v}.",
                    "{v} is remembered as the founder of {n}.",
                    "It was {v} who first settled {n}.",
                    "{n} owes its existence to {v}, who laid out its first street.",
                ],
                questions: &["Who founded {n}?", "Who was the founder of {n}?", "Which person is remembered as the founder of {n}?"],
            },
            AttrSpec {
                key: "region",
                values: Values::Pool(REGIONS),
                sentences: &[
                    "{n} lies in the region of {v}.",
                    "{n} is a town in {v}.",
                    "The region of {v} is where {n} can be found.",
                    "{n} belongs to the province of {v}.",
                ],
                questions: &["In which region is {n}?", "Where is {n} located?", "What region does {n} belong to?"],
            },
            AttrSpec {
                key: "trade",
                values: Values::Pool(TRADES),
                sentences: &[
                    "The main trade of {n} is {v}.",
                    "Most families in {n} make their living from {v}.",
                    "{n} is known for its trade in {v}.",
                    "Merchants come to {n} mostly for its {v}.",
                ],
                questions: &["What is the main trade of {n}?", "What does {n} trade in most?", "What is {n} known for trading?"],
            },
            AttrSpec {
                key: "river",
                values: Values::Pool(RIVERS),
                sentences: &["{n} lies on the {v} River.", "The {v} River flows through {n}.", "{n} was built on the banks of the {v} River."],
                questions: &["On which river does {n} lie?", "What river flows through {n}?", "Which river is {n} built on?"],
            },
        ],
    },
    KindSpec {
        key: "person",
        intro: &["{n} is a figure of some renown.", "Much is known about the life of {n}.", "This article is about {n}.", "{n} appears often in the old records."],
        attrs: &[
            AttrSpec {
                key: "born",
                values: Values::Year(1600, 1950),
                sentences: &["{n} was born in the year {v}.", "The year {v} saw the birth of {n}.", "{n} came into the world in {v}."],
                questions: &["When was {n} born?", "In what year was {n} born?", "What is the birth year of {n}?"],
            },
            AttrSpec {
                key: "birthplace",
                values: Values::Pool(CITIES),
                sentences: &[
                    "{n} was born in the city of {v}.",
                    "The city of {v} was the birthplace of {n}.",
                    "{n} came from the city of {v}.",
                    "{n} grew up in {v}, the city of a happy childhood.",
                ],
                questions: &["Where was {n} born?", "What is the birthplace of {n}?", "In which city was {n} born?"],
            },
            AttrSpec {
                key: "occupation",
                values: Values::Pool(OCCUPATIONS),
                sentences: &["{n} worked as a {v}.", "By trade, {n} was a {v}.", "{n} earned a living as a {v}.", "Everyone knew {n} as a skilled {v}."],
                questions: &["What did {n} do for a living?", "What was the occupation of {n}?", "What was {n} by trade?"],
            },
            AttrSpec {
                key: "mentor",
                values: Values::Name,
                sentences: &["{n} studied under {v}.", "{v} was the teacher of {n}.", "{n} learned the craft from {v}.", "As a young apprentice, {n} was taught by {v}."],
                questions: &["Who was the mentor of {n}?", "Under whom did {n} study?", "Who taught {n}?"],
            },
            AttrSpec {
                key: "instrument",
                values: Values::Pool(INSTRUMENTS),
                sentences: &["{n} played the {v}.", "The {v} was the favourite instrument of {n}.", "In the evenings {n} liked to play the {v}."],
                questions: &["Which instrument did {n} play?", "What instrument did {n} play?", "What was the favourite instrument of {n}?"],
            },
            AttrSpec {
                key: "age",
                values: Values::Count(40, 95, 1),
                sentences: &["{n} lived to the age of {v}.", "{n} died at the age of {v}.", "At the age of {v}, {n} passed away."],
                questions: &["At what age did {n} die?", "To what age did {n} live?", "How old was {n} at death?"],
            },
        ],
    },
    KindSpec {
        key: "ship",
        intro: &["{n} is a merchant ship.", "{n} is a sailing ship.", "This article is about the ship {n}.", "{n} is a ship of the merchant fleet."],
        attrs: &[
            AttrSpec {
                key: "launched",
                values: Values::Year(1600, 1950),
                sentences: &["{n} was launched in {v}.", "The ship {n} first put to sea in {v}.", "In {v}, {n} left the shipyard for the first time."],
                questions: &["When was {n} launched?", "In what year was the ship {n} launched?", "What year did {n} first sail?"],
            },
            AttrSpec {
                key: "port",
                values: Values::Pool(PORTS),
                sentences: &["The home port of {n} is {v}.", "{n} sails out of the port of {v}.", "{n} is registered in the harbour of {v}."],
                questions: &["What is the home port of {n}?", "From which port does {n} sail?", "Where is the ship {n} registered?"],
            },
            AttrSpec {
                key: "captain",
                values: Values::Name,
                sentences: &["Captain {v} commands {n}.", "The captain of {n} is {v}.", "{v} serves as the captain of {n}."],
                questions: &["Who is the captain of {n}?", "Who commands the ship {n}?", "Who is in command of {n}?"],
            },
            AttrSpec {
                key: "cargo",
                values: Values::Pool(CARGOES),
                sentences: &["{n} mostly carries {v}.", "The usual cargo of {n} is {v}.", "On most voyages {n} is loaded with {v}."],
                questions: &["What does {n} carry?", "What is the usual cargo of {n}?", "What cargo does the ship {n} carry?"],
            },
            AttrSpec {
                key: "crew",
                values: Values::Count(12, 300, 1),
                sentences: &["{n} has a crew of {v}.", "{v} sailors serve aboard {n}.", "The crew of {n} numbers {v}."],
                questions: &["How large is the crew of {n}?", "How many sailors serve on {n}?", "How many people are in the crew of {n}?"],
            },
            AttrSpec {
                key: "hull",
                values: Values::Pool(COLOURS),
                sentences: &["The hull of {n} is painted {v}.", "{n} is easy to spot by its {v} hull.", "{n} has a {v} hull."],
                questions: &["What color is the hull of {n}?", "What colour is {n} painted?", "What is the color of the hull of {n}?"],
            },
        ],
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    TrainAug,
    TrainRaw,
    Heldout,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::TrainAug => "train_aug",
            Split::TrainRaw => "train_raw",
            Split::Heldout => "heldout",
        }
    }
}

/// One entity: its kind, its facts (in the kind's attribute order) and its split.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub name: String,
    /// Index into [`KINDS`].
    pub kind: usize,
    /// One value per attribute of the kind, in order.
    pub facts: Vec<String>,
    pub split: Split,
    /// The entity's own stream: its text and its question phrasings come from it.
    pub seed: u64,
}

impl Entity {
    pub fn spec(&self) -> &'static KindSpec {
        &KINDS[self.kind]
    }
    /// `(attribute, value)` pairs.
    pub fn fact_list(&self) -> impl Iterator<Item = (&'static AttrSpec, &str)> {
        self.spec().attrs.iter().zip(self.facts.iter().map(String::as_str))
    }
}

fn fill(template: &str, name: &str, value: &str) -> String {
    template.replace("{n}", name).replace("{v}", value)
}

fn capitalize_first(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// The entity's raw text: an opening sentence, then one sentence per fact (a template drawn
/// per fact) in a shuffled order.
pub fn raw_text(e: &Entity) -> String {
    let mut rng = Rng::derive(e.seed, "text");
    let spec = e.spec();
    let mut sentences: Vec<String> = e.fact_list().map(|(a, v)| capitalize_first(fill(a.sentences[rng.usize(a.sentences.len())], &e.name, v))).collect();
    rng.shuffle(&mut sentences);
    let intro = fill(spec.intro[rng.usize(spec.intro.len())], &e.name, "");
    std::iter::once(intro).chain(sentences).collect::<Vec<_>>().join(" ")
}

/// The rule-based synthesizer stand-in: one question–answer pair per fact, the question
/// phrasing and the pair order drawn from the entity's stream (a pure function of the entity).
pub fn rule_pairs(e: &Entity) -> Vec<(String, String)> {
    let mut rng = Rng::derive(e.seed, "pairs");
    let mut pairs: Vec<(String, String)> = e.fact_list().map(|(a, v)| (fill(a.questions[rng.usize(a.questions.len())], &e.name, v), v.to_string())).collect();
    rng.shuffle(&mut pairs);
    pairs
}

/// What [`check_pair`] made of a question–answer pair.
#[derive(Debug, Clone, PartialEq)]
pub enum PairVerdict {
    /// The question asks the attribute and the answer is the fact.
    Correct { attribute: &'static str },
    /// The question asks the attribute, the answer is not the fact.
    Wrong { attribute: &'static str, expected: String },
    /// The question is none of the entity's question phrasings.
    Unrecognised,
}

impl PairVerdict {
    pub fn is_correct(&self) -> bool {
        matches!(self, PairVerdict::Correct { .. })
    }
}

/// Lower case, inner whitespace collapsed, trailing sentence punctuation and digit-group commas
/// dropped, so "12,400." and "12400" are the same answer.
pub fn normalize(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    let s = s.trim_end_matches(['.', '?', '!']).trim().to_string();
    let chars: Vec<char> = s.chars().collect();
    chars
        .iter()
        .enumerate()
        .filter(|&(i, &c)| !(c == ',' && i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())))
        .map(|(_, &c)| c)
        .collect()
}

/// Check a pair (e.g. parsed from a synthesizer's output for this entity's text) against the
/// entity's facts: the question must be one of the entity's question phrasings (after
/// [`normalize`]), and the answer the fact of that attribute.
pub fn check_pair(e: &Entity, question: &str, answer: &str) -> PairVerdict {
    let q = normalize(question);
    for (a, v) in e.fact_list() {
        if a.questions.iter().any(|t| normalize(&fill(t, &e.name, v)) == q) {
            return if normalize(answer) == normalize(v) {
                PairVerdict::Correct { attribute: a.key }
            } else {
                PairVerdict::Wrong { attribute: a.key, expected: v.to_string() }
            };
        }
    }
    PairVerdict::Unrecognised
}

/// The share of `pairs` that [`check_pair`] finds correct (NaN for no pairs).
pub fn pair_accuracy(e: &Entity, pairs: &[(String, String)]) -> f64 {
    pairs.iter().filter(|(q, a)| check_pair(e, q, a).is_correct()).count() as f64 / pairs.len() as f64
}

/// Synthesized pairs checked against the facts of the entities whose texts they were made from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairReport {
    /// Texts checked (rows of the synthesizer's output).
    pub texts: u64,
    /// Texts that are none of the encyclopedia's (left out of every other count).
    pub unknown_texts: u64,
    /// Texts with at least one parsed pair.
    pub texts_with_pairs: u64,
    pub pairs: u64,
    /// The question asks one of the entity's facts and the answer is right.
    pub correct: u64,
    /// The question asks one of the entity's facts, the answer is not the fact.
    pub wrong: u64,
    /// The question is none of the entity's question phrasings.
    pub unrecognised: u64,
    /// correct / pairs.
    pub accuracy: f64,
    /// Of the entity's facts, the share some correct pair states (per text, averaged).
    pub fact_coverage: f64,
}

/// Check `(context, pairs)` rows against the encyclopedia `cfg` generates: each context is
/// matched to the entity whose raw text it is, each pair judged by [`check_pair`].
pub fn pair_report<'a>(cfg: &TinyEncyclopediaConfig, rows: impl IntoIterator<Item = (&'a str, &'a [(String, String)])>) -> PairReport {
    let enc = Encyclopedia::generate(cfg);
    let by_text: std::collections::HashMap<String, &Entity> = enc.entities.iter().map(|e| (raw_text(e), e)).collect();
    let mut r = PairReport::default();
    let mut coverage_sum = 0.0;
    for (context, pairs) in rows {
        r.texts += 1;
        let Some(e) = by_text.get(context.trim()) else {
            r.unknown_texts += 1;
            continue;
        };
        r.texts_with_pairs += u64::from(!pairs.is_empty());
        let mut covered = BTreeSet::new();
        for (q, a) in pairs {
            r.pairs += 1;
            match check_pair(e, q, a) {
                PairVerdict::Correct { attribute } => {
                    r.correct += 1;
                    covered.insert(attribute);
                }
                PairVerdict::Wrong { .. } => r.wrong += 1,
                PairVerdict::Unrecognised => r.unrecognised += 1,
            }
        }
        coverage_sum += covered.len() as f64 / e.fact_list().count() as f64;
    }
    let known = (r.texts - r.unknown_texts) as f64;
    r.accuracy = if r.pairs > 0 { r.correct as f64 / r.pairs as f64 } else { 0.0 };
    r.fact_coverage = if known > 0.0 { coverage_sum / known } else { 0.0 };
    r
}

const SYLLABLES: &[&str] = &[
    "zor", "vi", "al", "ben", "dra", "ka", "lo", "mer", "nis", "or", "pel", "qua", "ros", "sev", "tan", "ul", "var", "wen", "yar", "zel", "ith",
    "gar", "hel", "jo", "mi", "ra", "te", "bri", "cor", "del",
];

/// Invented words, each unique and different from every pool value (case-insensitively), so
/// a value names one thing only and occurs in a text only where its fact is stated.
struct Names {
    used: BTreeSet<String>,
}

impl Names {
    fn new() -> Names {
        let pools = [REGIONS, TRADES, RIVERS, CITIES, OCCUPATIONS, INSTRUMENTS, PORTS, CARGOES, COLOURS];
        Names { used: pools.iter().flat_map(|p| p.iter()).map(|w| w.to_lowercase()).collect() }
    }

    /// A capitalized word of 2–3 syllables (more once the short ones run out).
    fn word(&mut self, rng: &mut Rng) -> String {
        let mut syllables = 2 + rng.usize(2);
        let mut tries = 0;
        loop {
            let w: String = (0..syllables).map(|_| SYLLABLES[rng.usize(SYLLABLES.len())]).collect();
            if self.used.insert(w.clone()) {
                return capitalize_first(w);
            }
            tries += 1;
            if tries % 20 == 0 {
                syllables += 1;
            }
        }
    }

    /// "First Last".
    fn person(&mut self, rng: &mut Rng) -> String {
        let first = self.word(rng);
        let last = self.word(rng);
        format!("{first} {last}")
    }
}

/// The whole encyclopedia of a config.
#[derive(Debug, Clone, PartialEq)]
pub struct Encyclopedia {
    pub entities: Vec<Entity>,
}

impl Encyclopedia {
    pub fn generate(cfg: &TinyEncyclopediaConfig) -> Encyclopedia {
        let mut names = Names::new();
        let mut entities = Vec::with_capacity(cfg.entities);
        for i in 0..cfg.entities {
            let kind = i % KINDS.len();
            let mut rng = Rng::derive(cfg.seed, &format!("tiny-encyclopedia/entity/{i}"));
            let seed = rng.next_u64();
            // One set of used words for all entities: names are unique across the whole set.
            let name = if KINDS[kind].key == "person" { names.person(&mut rng) } else { names.word(&mut rng) };
            let facts = KINDS[kind]
                .attrs
                .iter()
                .map(|a| match a.values {
                    Values::Name => names.person(&mut rng),
                    v => draw(v, &mut rng),
                })
                .collect();
            entities.push(Entity { name, kind, facts, split: Split::TrainRaw, seed });
        }
        // Splits per kind, so each kind is held out and augmented in the same shares.
        let mut rng = Rng::derive(cfg.seed, "tiny-encyclopedia/splits");
        for kind in 0..KINDS.len() {
            let mut idx: Vec<usize> = (kind..cfg.entities).step_by(KINDS.len()).collect();
            rng.shuffle(&mut idx);
            let heldout = (idx.len() as f64 * cfg.heldout_fraction).round() as usize;
            let aug = ((idx.len() - heldout) as f64 * cfg.augmented_fraction).round() as usize;
            for (j, &i) in idx.iter().enumerate() {
                entities[i].split = if j < heldout {
                    Split::Heldout
                } else if j < heldout + aug {
                    Split::TrainAug
                } else {
                    Split::TrainRaw
                };
            }
        }
        Encyclopedia { entities }
    }

    pub fn named(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// The distinct values of attribute `attr` of `kind`: its pool, or those of the entities.
    pub fn value_set(&self, kind: usize, attr: usize) -> Vec<String> {
        match KINDS[kind].attrs[attr].values {
            Values::Pool(pool) => pool.iter().map(|s| s.to_string()).collect(),
            _ => {
                let set: BTreeSet<&String> = self.entities.iter().filter(|e| e.kind == kind).map(|e| &e.facts[attr]).collect();
                set.into_iter().cloned().collect()
            }
        }
    }

    /// One closed-book multiple-choice question per fact of every entity, as
    /// `(entity index, attribute index, input, options, gold index)`.
    pub fn eval_rows(&self, options: usize) -> Vec<(usize, usize, String, Vec<String>, usize)> {
        let mut sets: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
        let mut rows = Vec::new();
        for (i, e) in self.entities.iter().enumerate() {
            let mut rng = Rng::derive(e.seed, "eval");
            for (j, (a, v)) in e.fact_list().enumerate() {
                let set = sets.entry((e.kind, j)).or_insert_with(|| self.value_set(e.kind, j));
                let mut others: Vec<String> = set.iter().filter(|o| normalize(o) != normalize(v)).cloned().collect();
                rng.shuffle(&mut others);
                others.truncate(options - 1);
                // Small sets of years or counts: fresh values of the attribute fill the options.
                let mut tries = 0;
                while others.len() < options - 1 && tries < 1000 {
                    tries += 1;
                    if matches!(a.values, Values::Name) {
                        break;
                    }
                    let fresh = draw(a.values, &mut rng);
                    if normalize(&fresh) != normalize(v) && !others.contains(&fresh) {
                        others.push(fresh);
                    }
                }
                let mut opts: Vec<String> = others.into_iter().chain([v.to_string()]).collect();
                rng.shuffle(&mut opts);
                let gold = opts.iter().position(|o| o == v).unwrap_or(0);
                let q = fill(a.questions[rng.usize(a.questions.len())], &e.name, v);
                rows.push((i, j, format!("Question: {q}\nAnswer:"), opts, gold));
            }
        }
        rows
    }
}

/// A fill-in-the-blank form of a fact: the first of the attribute's sentence templates that
/// ends with the value, cut before it ("The main trade of Lozorhel is"). Closer to the raw text
/// than a question, it tells whether a model learned the fact at all.
pub fn cloze(a: &AttrSpec, name: &str) -> Option<String> {
    let t = a.sentences.iter().find(|t| t.trim_end_matches('.').ends_with("{v}"))?;
    let prefix = &t[..t.rfind("{v}")?];
    Some(capitalize_first(fill(prefix, name, "")).trim_end().to_string())
}

fn draw(values: Values, rng: &mut Rng) -> String {
    match values {
        Values::Pool(pool) => pool[rng.usize(pool.len())].to_string(),
        Values::Year(lo, hi) => rng.range(lo, hi + 1).to_string(),
        Values::Count(lo, hi, step) => thousands(lo + rng.range(0, (hi - lo) / step + 1) * step),
        // Names need the generator's set of used words; [`Encyclopedia::generate`] draws them.
        Values::Name => String::new(),
    }
}

/// `12400` → `"12,400"`.
fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Write every file into `dir` (created if needed); rows per file, by name.
pub fn write(dir: &Path, cfg: &TinyEncyclopediaConfig) -> Result<BTreeMap<String, u64>> {
    if let Err((key, msg)) = cfg.check() {
        bail!("tiny-encyclopedia config: `{key}`: {msg}");
    }
    crate::fsutil::ensure_dir(dir)?;
    let enc = Encyclopedia::generate(cfg);
    let mut counts = BTreeMap::new();
    let mut put = |name: &str, rows: &[serde_json::Value]| -> Result<()> {
        let path = dir.join(name);
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        crate::fsutil::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        counts.insert(name.to_string(), rows.len() as u64);
        Ok(())
    };
    let texts: Vec<String> = enc.entities.iter().map(raw_text).collect();
    let raw: Vec<(Split, serde_json::Value)> = enc
        .entities
        .iter()
        .zip(&texts)
        .map(|(e, t)| (e.split, json!({"text": t, "entity": e.name, "kind": e.spec().key, "split": e.split.as_str()})))
        .collect();
    let qa: Vec<(Split, serde_json::Value)> = enc
        .entities
        .iter()
        .zip(&texts)
        .map(|(e, t)| {
            let pairs: Vec<[String; 2]> = rule_pairs(e).into_iter().map(|(q, a)| [q, a]).collect();
            (e.split, json!({"context": t, "qa_list": pairs, "entity": e.name, "split": e.split.as_str()}))
        })
        .collect();
    // Each fact as a question and, where a sentence template ends with the value, as a
    // fill-in-the-blank sentence: the same options either way.
    let mut eval: Vec<(Split, serde_json::Value)> = Vec::new();
    let mut cloze_rows: Vec<(Split, serde_json::Value)> = Vec::new();
    for (i, j, input, options, gold) in enc.eval_rows(cfg.options) {
        let e = &enc.entities[i];
        let attr = &e.spec().attrs[j];
        let row = |input: &str| json!({"input": input, "options": options, "gold_index": gold, "entity": e.name, "attribute": attr.key, "split": e.split.as_str()});
        eval.push((e.split, row(&input)));
        if let Some(blank) = cloze(attr, &e.name) {
            cloze_rows.push((e.split, row(&blank)));
        }
    }
    let select = |rows: &[(Split, serde_json::Value)], keep: &dyn Fn(Split) -> bool| -> Vec<serde_json::Value> {
        rows.iter().filter(|(s, _)| keep(*s)).map(|(_, r)| r.clone()).collect()
    };
    let all = |rows: &[(Split, serde_json::Value)]| select(rows, &|_| true);
    put("raw.jsonl", &all(&raw))?;
    put("qa_rule.jsonl", &all(&qa))?;
    put("qa_eval.jsonl", &all(&eval))?;
    for split in [Split::TrainAug, Split::TrainRaw, Split::Heldout] {
        put(&format!("raw_{}.jsonl", split.as_str()), &select(&raw, &|s| s == split))?;
    }
    put("qa_rule_synth.jsonl", &select(&qa, &|s| s == Split::TrainRaw))?;
    // The train_aug texts augmented by the rule-based stand-in itself (its exact pairs, rendered
    // by the instruct method's renderer, one text a chain): the instruct arm with a perfect
    // synthesizer, to tell the effect of the pairs from the quality of a tiny synthesizer.
    let aug_rule: Vec<serde_json::Value> = enc
        .entities
        .iter()
        .zip(&texts)
        .enumerate()
        .filter(|(_, (e, _))| e.split == Split::TrainAug)
        .flat_map(|(i, (e, t))| {
            let pairs = rule_pairs(e).into_iter().map(|(q, a)| crate::synth::instruct::format::QaPair::new(q, a)).collect();
            let entry = crate::synth::instruct::chain::Entry { id: i, round: 0, context: t.clone(), pairs, inherit_from_prev: false, followed_by_next: false };
            crate::synth::instruct::render::render_chain(&[entry], crate::synth::instruct::render::chain_seed(cfg.seed, i)).documents.into_iter().map(|d| json!({"text": d.text}))
        })
        .collect();
    put("aug_rule.jsonl", &aug_rule)?;
    put("qa_eval_heldout.jsonl", &select(&eval, &|s| s == Split::Heldout))?;
    put("qa_eval_train.jsonl", &select(&eval, &|s| s != Split::Heldout))?;
    put("cloze_eval_heldout.jsonl", &select(&cloze_rows, &|s| s == Split::Heldout))?;
    put("cloze_eval_train.jsonl", &select(&cloze_rows, &|s| s != Split::Heldout))?;
    // The resolved options (seed included) regenerate every entity: what a check of synthesized
    // pairs against the facts reads (`retort synth pair-accuracy`).
    crate::fsutil::write_atomic(&dir.join(CONFIG_FILE), &serde_json::to_vec_pretty(cfg)?)?;
    Ok(counts)
}

/// The generator's resolved options, written beside the data.
pub const CONFIG_FILE: &str = "encyclopedia.json";

pub const FILES: &[&str] = &[
    "raw.jsonl",
    "qa_rule.jsonl",
    "qa_eval.jsonl",
    "raw_train_aug.jsonl",
    "raw_train_raw.jsonl",
    "raw_heldout.jsonl",
    "qa_rule_synth.jsonl",
    "aug_rule.jsonl",
    "qa_eval_heldout.jsonl",
    "qa_eval_train.jsonl",
    "cloze_eval_heldout.jsonl",
    "cloze_eval_train.jsonl",
];

pub fn check(options: &toml::Table) -> Result<(), (String, String)> {
    parse_options::<TinyEncyclopediaConfig>(options)?.check()
}

pub fn build(options: &toml::Table, env: &MethodEnv) -> Result<Box<dyn Method>> {
    let config: TinyEncyclopediaConfig = super::method::generator_options(options, env, |c: &mut TinyEncyclopediaConfig| &mut c.seed)?;
    Ok(Box::new(TinyEncyclopedia { config }))
}

struct TinyEncyclopedia {
    config: TinyEncyclopediaConfig,
}

impl Method for TinyEncyclopedia {
    fn files(&self) -> &'static [&'static str] {
        FILES
    }
    fn generate(&mut self, dir: &Path, ctx: &mut StageCtx) -> Result<Counts> {
        let c = &self.config;
        ctx.events.info(format!(
            "generating the tiny encyclopedia (seed {}, {} entities, held out {}, augmented {} of the rest)",
            c.seed, c.entities, c.heldout_fraction, c.augmented_fraction
        ));
        let mut counts = Counts { rows: write(dir, c)?, ..Default::default() };
        for e in Encyclopedia::generate(c).entities {
            counts.add_task(&format!("{}/{}", e.spec().key, e.split.as_str()));
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> TinyEncyclopediaConfig {
        TinyEncyclopediaConfig { seed, entities: 60, ..Default::default() }
    }

    fn rows(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Occurrences of `needle` in `text` as whole words (not inside a longer word or number).
    fn whole_word_count(text: &str, needle: &str) -> usize {
        let is_word = |c: char| c.is_alphanumeric();
        text.match_indices(needle)
            .filter(|(i, _)| {
                let before = text[..*i].chars().next_back();
                let after = text[i + needle.len()..].chars().next();
                // "1" is not a word of "1,200".
                let digit_group = after == Some(',') && text[i + needle.len() + 1..].starts_with(|c: char| c.is_ascii_digit());
                !(before.is_some_and(is_word) || after.is_some_and(is_word) || digit_group)
            })
            .count()
    }

    #[test]
    fn a_seed_gives_the_same_files() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), &small(3)).unwrap();
        write(b.path(), &small(3)).unwrap();
        write(c.path(), &small(4)).unwrap();
        for f in FILES {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap(), "{f}");
        }
        assert_ne!(std::fs::read(a.path().join("raw.jsonl")).unwrap(), std::fs::read(c.path().join("raw.jsonl")).unwrap());
        // More entities leave the first ones as they were.
        let more = Encyclopedia::generate(&TinyEncyclopediaConfig { entities: 90, ..small(3) });
        let fewer = Encyclopedia::generate(&small(3));
        for (x, y) in fewer.entities.iter().zip(&more.entities) {
            assert_eq!((&x.name, &x.facts, raw_text(x)), (&y.name, &y.facts, raw_text(y)));
        }
    }

    #[test]
    fn each_fact_is_stated_exactly_once() {
        let enc = Encyclopedia::generate(&TinyEncyclopediaConfig { entities: 600, ..Default::default() });
        let names: BTreeSet<&String> = enc.entities.iter().map(|e| &e.name).collect();
        assert_eq!(names.len(), enc.entities.len(), "entity names are unique");
        let mut phrasings: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for e in &enc.entities {
            let text = raw_text(e);
            assert!(text.split(". ").next().unwrap().contains(&e.name), "{text}");
            for (a, v) in e.fact_list() {
                assert_eq!(whole_word_count(&text, v), 1, "{} {}={v:?} in {text:?}", e.name, a.key);
                // Which template stated it.
                let t = a.sentences.iter().find(|t| text.contains(&capitalize_first(fill(t, &e.name, v)))).expect("a template states the fact");
                phrasings.entry(a.key).or_default().insert(t.to_string());
            }
            // One sentence per fact plus the opening one.
            assert_eq!(text.matches(". ").count() + 1, e.facts.len() + 1, "{text}");
        }
        // Every phrasing of every attribute is used at this size.
        for k in KINDS {
            for a in k.attrs {
                assert_eq!(phrasings[a.key].len(), a.sentences.len(), "{}", a.key);
            }
        }
        // The sentence order differs between entities: first facts vary.
        let firsts: BTreeSet<String> = enc.entities.iter().map(|e| raw_text(e).split(". ").nth(1).unwrap().replace(&e.name, "")).collect();
        assert!(firsts.len() > 20, "{}", firsts.len());
    }

    #[test]
    fn splits_have_the_configured_shares_and_the_files_agree() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TinyEncyclopediaConfig { entities: 300, heldout_fraction: 0.2, augmented_fraction: 0.5, ..Default::default() };
        let counts = write(d.path(), &cfg).unwrap();
        let enc = Encyclopedia::generate(&cfg);
        let n = |s: Split| enc.entities.iter().filter(|e| e.split == s).count();
        assert_eq!((n(Split::Heldout), n(Split::TrainAug), n(Split::TrainRaw)), (60, 120, 120));
        assert_eq!(counts["raw.jsonl"], 300);
        assert_eq!(counts["raw_heldout.jsonl"], 60);
        assert_eq!(counts["qa_eval.jsonl"], 300 * 6);
        assert_eq!(counts["qa_eval_heldout.jsonl"], 60 * 6);
        let raw = rows(&d.path().join("raw.jsonl"));
        for (r, e) in raw.iter().zip(&enc.entities) {
            assert_eq!((r["entity"].as_str().unwrap(), r["split"].as_str().unwrap()), (e.name.as_str(), e.split.as_str()));
        }
        // The synthesizer's training rows: train_raw entities only, never held-out ones, never
        // the ones it will augment.
        let heldout: BTreeSet<String> = rows(&d.path().join("raw_heldout.jsonl")).iter().map(|r| r["entity"].as_str().unwrap().to_string()).collect();
        let synth = rows(&d.path().join("qa_rule_synth.jsonl"));
        assert_eq!(synth.len(), 120);
        for r in &synth {
            assert_eq!(r["split"], "train_raw");
            assert!(!heldout.contains(r["entity"].as_str().unwrap()));
        }
        for r in rows(&d.path().join("qa_eval_heldout.jsonl")) {
            assert!(heldout.contains(r["entity"].as_str().unwrap()));
        }
        for r in rows(&d.path().join("qa_eval_train.jsonl")) {
            assert!(!heldout.contains(r["entity"].as_str().unwrap()));
        }
        // The rule rows are in the synthesizer format: the raw text, and pairs of strings.
        for (r, e) in rows(&d.path().join("qa_rule.jsonl")).iter().zip(&enc.entities) {
            assert_eq!(r["context"].as_str().unwrap(), raw_text(e));
            let pairs: Vec<(String, String)> = serde_json::from_value(r["qa_list"].clone()).unwrap();
            assert_eq!(pairs, rule_pairs(e));
        }
        // The rule-augmented texts: one a train_aug entity, holding its raw text and every
        // answer of its rule pairs, and nothing of the other splits.
        let aug = rows(&d.path().join("aug_rule.jsonl"));
        let augmented: Vec<&Entity> = enc.entities.iter().filter(|e| e.split == Split::TrainAug).collect();
        assert_eq!(aug.len(), augmented.len());
        for (r, e) in aug.iter().zip(&augmented) {
            let text = r["text"].as_str().unwrap();
            assert!(text.contains(&raw_text(e)), "{text}");
            for (_, a) in rule_pairs(e) {
                assert!(text.contains(&a), "answer {a:?} missing from {text}");
            }
        }
    }

    #[test]
    fn rule_pairs_are_the_facts() {
        let enc = Encyclopedia::generate(&small(1));
        for e in &enc.entities {
            let pairs = rule_pairs(e);
            assert_eq!(pairs, rule_pairs(e));
            assert_eq!(pairs.len(), e.facts.len());
            let answers: BTreeSet<&String> = pairs.iter().map(|p| &p.1).collect();
            assert_eq!(answers, e.facts.iter().collect());
            for (q, a) in &pairs {
                assert!(q.contains(&e.name) && q.ends_with('?'), "{q}");
                assert!(check_pair(e, q, a).is_correct(), "{q} {a}");
            }
            assert_eq!(pair_accuracy(e, &pairs), 1.0);
        }
    }

    #[test]
    fn check_pair_judges_questions_and_answers() {
        let enc = Encyclopedia::generate(&small(2));
        let town = enc.entities.iter().find(|e| e.spec().key == "town").unwrap();
        let (founded, population) = (&town.facts[0], &town.facts[1]);
        let n = &town.name;
        assert_eq!(check_pair(town, &format!("When was {n} founded?"), founded), PairVerdict::Correct { attribute: "founded" });
        // Case, spacing, a final period and the thousands separator do not matter.
        let bare_population = population.replace(',', "");
        assert_eq!(check_pair(town, &format!("  how many people LIVE in {n} "), &format!("{bare_population}.")), PairVerdict::Correct { attribute: "population" });
        assert_eq!(check_pair(town, &format!("When was {n} founded?"), "1066"), PairVerdict::Wrong { attribute: "founded", expected: founded.clone() });
        assert_eq!(check_pair(town, &format!("Why is {n} so pretty?"), founded), PairVerdict::Unrecognised);
        // Another entity's question is not this entity's.
        let other = enc.entities.iter().find(|e| e.spec().key == "town" && e.name != *n).unwrap();
        assert_eq!(check_pair(town, &format!("When was {} founded?", other.name), founded), PairVerdict::Unrecognised);
        let pairs = vec![(format!("When was {n} founded?"), founded.clone()), (format!("When was {n} founded?"), "0".to_string())];
        assert_eq!(pair_accuracy(town, &pairs), 0.5);
        assert_eq!(normalize("12,400"), "12400");
        assert_eq!(normalize("Red, blue"), "red, blue");
    }

    #[test]
    fn eval_answers_are_the_facts_and_distractors_differ() {
        let d = tempfile::tempdir().unwrap();
        let cfg = small(5);
        write(d.path(), &cfg).unwrap();
        let enc = Encyclopedia::generate(&cfg);
        let eval = rows(&d.path().join("qa_eval.jsonl"));
        assert_eq!(eval.len(), 60 * 6);
        for r in &eval {
            let e = enc.named(r["entity"].as_str().unwrap()).unwrap();
            let j = e.spec().attrs.iter().position(|a| a.key == r["attribute"]).unwrap();
            let options: Vec<String> = serde_json::from_value(r["options"].clone()).unwrap();
            let gold = r["gold_index"].as_u64().unwrap() as usize;
            assert_eq!(options.len(), cfg.options);
            assert_eq!(options[gold], e.facts[j], "{r}");
            let distinct: BTreeSet<String> = options.iter().map(|o| normalize(o)).collect();
            assert_eq!(distinct.len(), options.len(), "distractors differ from the answer and each other: {options:?}");
            // Distractors are values of the same attribute.
            let set = enc.value_set(e.kind, j);
            for o in &options {
                assert!(set.contains(o) || !matches!(e.spec().attrs[j].values, Values::Pool(_) | Values::Name), "{o:?} not a {} value", r["attribute"]);
                assert!(!o.starts_with(' '), "the scorer puts the space in front of an option");
            }
            let input = r["input"].as_str().unwrap();
            assert!(input.starts_with("Question: ") && input.ends_with("\nAnswer:") && input.contains(&e.name), "{input}");
            assert_eq!(r["split"], e.split.as_str());
        }
        // The gold position is spread over the options.
        let golds: BTreeSet<u64> = eval.iter().map(|r| r["gold_index"].as_u64().unwrap()).collect();
        assert_eq!(golds.len(), cfg.options);
        // The file is what the eval stage's choice reader accepts.
        let read = crate::eval::text::choice::read_rows(&d.path().join("qa_eval_heldout.jsonl")).unwrap();
        assert_eq!(read.len(), enc.entities.iter().filter(|e| e.split == Split::Heldout).count() * 6);
    }

    #[test]
    fn tiny_sets_still_get_enough_options() {
        // Four entities a kind: years and counts are filled with fresh values of the attribute.
        let cfg = TinyEncyclopediaConfig { entities: 12, options: 8, ..Default::default() };
        let enc = Encyclopedia::generate(&cfg);
        for (i, j, _, options, gold) in enc.eval_rows(cfg.options) {
            let e = &enc.entities[i];
            assert_eq!(options[gold], e.facts[j]);
            let distinct: BTreeSet<&String> = options.iter().collect();
            assert_eq!(distinct.len(), options.len());
            // Names come only from the entities (4 a kind); everything else fills all 8.
            let want = if matches!(e.spec().attrs[j].values, Values::Name) { 4 } else { 8 };
            assert_eq!(options.len(), want, "{} {options:?}", e.spec().attrs[j].key);
        }
    }

    #[test]
    fn bad_options_are_named() {
        let t: toml::Table = toml::from_str("heldout_fraction = 1.5").unwrap();
        assert_eq!(check(&t).unwrap_err().0, "heldout_fraction");
        let t: toml::Table = toml::from_str("entities = 5").unwrap();
        assert_eq!(check(&t).unwrap_err().0, "entities");
        let t: toml::Table = toml::from_str("entity = 50").unwrap();
        assert!(check(&t).is_err());
        assert!(check(&toml::Table::new()).is_ok());
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(12), "12");
        assert_eq!(thousands(1200), "1,200");
        assert_eq!(thousands(40000), "40,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn a_pair_report_counts_right_wrong_and_unknown_by_hand() {
        let cfg = TinyEncyclopediaConfig { entities: 12, ..TinyEncyclopediaConfig::default() };
        let enc = Encyclopedia::generate(&cfg);
        let e = &enc.entities[0];
        let text = raw_text(e);
        let mut pairs = rule_pairs(e);
        // All six rule pairs are right; spoil one answer and add a question nobody asks.
        let (q0, _) = pairs[0].clone();
        pairs[0] = (q0, "nobody knows".into());
        pairs.push(("What colour is the sky?".into(), "blue".into()));
        let none: Vec<(String, String)> = Vec::new();
        let rows: Vec<(&str, &[(String, String)])> = vec![(text.as_str(), &pairs), ("a text of no entity", &none), (text.as_str(), &none)];
        let r = pair_report(&cfg, rows);
        assert_eq!((r.texts, r.unknown_texts, r.texts_with_pairs, r.pairs, r.correct, r.wrong, r.unrecognised), (3, 1, 1, 7, 5, 1, 1));
        assert!((r.accuracy - 5.0 / 7.0).abs() < 1e-12);
        // Two known texts: one covers 5 of 6 facts, the other none.
        assert!((r.fact_coverage - (5.0 / 6.0) / 2.0).abs() < 1e-12, "{r:?}");
    }


    #[test]
    fn cloze_rows_cut_a_fact_sentence_before_its_value() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TinyEncyclopediaConfig { entities: 30, ..Default::default() };
        write(d.path(), &cfg).unwrap();
        let enc = Encyclopedia::generate(&cfg);
        let rows: Vec<serde_json::Value> = rows(&d.path().join("cloze_eval_train.jsonl")).into_iter().chain(rows(&d.path().join("cloze_eval_heldout.jsonl"))).collect();
        assert!(rows.len() >= 30, "most facts have a sentence ending in the value: {}", rows.len());
        for r in &rows {
            let e = enc.named(r["entity"].as_str().unwrap()).unwrap();
            let attr = e.spec().attrs.iter().position(|a| a.key == r["attribute"].as_str().unwrap()).unwrap();
            let fact = &e.facts[attr];
            let gold = &r["options"][r["gold_index"].as_u64().unwrap() as usize];
            assert_eq!(gold.as_str().unwrap(), fact);
            // The input and the gold option joined by a space are one of the attribute's
            // sentences about this entity (with its final period).
            let sentence = format!("{} {}", r["input"].as_str().unwrap(), fact);
            let spec = &e.spec().attrs[attr];
            assert!(spec.sentences.iter().any(|t| capitalize_first(fill(t, &e.name, fact)).trim_end_matches('.') == sentence), "{sentence}");
        }
    }

}
