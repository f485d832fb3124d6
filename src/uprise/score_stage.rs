//! Stage `kind = "prompt-score"`: the pool and the LM-scored training data of UPRISE
//! (research/synth-spec.md §6.2–6.3).
//!
//! Reads task rows (`train`, `test`), drops the held-out clusters from the training rows,
//! samples up to `cap` rows per task (class balanced, seed 42 as the reference), and writes
//! them as the pool (`pool.jsonl`, the pool id of a row is its line index). Then
//! `max_examples` pool rows (all by default; fewer: a seeded sample over the whole pool, which
//! is in task order, so every task has its share) are scored: L = `candidates` same-task prompts
//! per round, up to `rounds` rounds, by the frozen `model` (multiple choice: Eq. 4 or the
//! code's L1 key; completion: greedy generation scored by token F1),
//! each scored example appended to `scored.partial.jsonl` as it finishes, so a killed run
//! resumes where it stopped. `target.jsonl` holds every task's sampled rows, held-out ones
//! included (the demos of the few-shot baseline). At the end: `scored.jsonl` (all), `train.jsonl` / `valid.jsonl`
//! (the 90/10 split of those with a positive), `test.jsonl` (the test rows, every cluster)
//! and `meta.json` (held-out clusters, counts).
//!
//! ```toml
//! [[stage]]
//! kind = "prompt-score"
//! model = "@lm"
//! train = "@data/train.jsonl"
//! test = "@data/test.jsonl"
//! held_out = ["nli"]
//! candidates = 50      # L
//! negatives = 20       # B
//! ```

use super::data::{read_rows, sample_balanced, split_held_out, TaskRow};
use super::lm::{predict, scoring_input};
use super::scoring::{choice_cand, select, Cand, split, write_jsonl, Rank, ScoredLog, Sizes};
use crate::eval::run::EvalModel;
use crate::rng::Rng;
use crate::stage::{refs, table_of, Artifact, Reference, StageConfig, StageCtx, StageOutput};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptScoreStage {
    /// The frozen decoder that scores (a model folder or `@stage`).
    pub model: String,
    /// Task rows `{"id","task","cluster","input","options"?,"answer"}` of the training side.
    pub train: String,
    /// Task rows to evaluate on (every cluster; the held-out ones are the zero-shot tasks).
    pub test: String,
    /// Clusters kept out of the pool and the retriever's training data.
    #[serde(default)]
    pub held_out: Vec<String>,
    /// Rows per task in the pool (the reference: 10k, class balanced).
    #[serde(default = "d_cap")]
    pub cap: usize,
    /// Pool rows scored as training examples (None: all; fewer: a seeded sample of the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_examples: Option<usize>,
    /// L: candidates per round.
    #[serde(default = "d_l")]
    pub candidates: usize,
    /// B: hard negatives, and other-task negatives.
    #[serde(default = "d_b")]
    pub negatives: usize,
    /// Rounds of L candidates at most (the paper: 7; the released code: 1).
    #[serde(default = "d_rounds")]
    pub rounds: usize,
    #[serde(default)]
    pub rank: Rank,
    #[serde(default = "d_valid")]
    pub valid_share: f64,
    /// The seed of the sampling and the split (the reference: 42).
    #[serde(default = "d_split_seed")]
    pub split_seed: u64,
    /// Option rows per forward.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
}

fn d_cap() -> usize {
    10_000
}
fn d_l() -> usize {
    50
}
fn d_b() -> usize {
    20
}
fn d_rounds() -> usize {
    7
}
fn d_valid() -> f64 {
    0.1
}
fn d_split_seed() -> u64 {
    42
}
fn d_batch() -> usize {
    32
}

/// `meta.json` of a scoring stage's folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreMeta {
    pub held_out: Vec<String>,
    pub pool: usize,
    pub scored: usize,
    pub with_positive: usize,
    pub train: usize,
    pub valid: usize,
    pub test: usize,
}

impl StageConfig for PromptScoreStage {
    fn to_table(&self) -> toml::Table {
        table_of(self)
    }

    fn references(&self) -> Vec<Reference> {
        let mut r = refs(Artifact::Model, [("model", Some(self.model.as_str()))]);
        r.extend(refs(Artifact::Text, [("train", Some(self.train.as_str())), ("test", Some(self.test.as_str()))]));
        r
    }

    fn produces(&self) -> Option<Artifact> {
        Some(Artifact::Text)
    }

    fn contexts_per_example(&self) -> Option<usize> {
        // The positive, B hard negatives and B other-task negatives.
        Some(1 + 2 * self.negatives)
    }

    fn memory_needs(&self) -> Option<crate::stage::needs::Needs> {
        // The frozen decoder scores option rows (demonstration + input + option) up to its context.
        Some(crate::stage::needs::Needs {
            model: self.model.clone(),
            trainable: crate::stage::needs::Trainable::Frozen,
            forward: Some((self.batch_size, 0)),
            knobs: vec![format!("lower `batch_size` (now {}): option rows per forward", self.batch_size)],
            ..Default::default()
        })
    }

    fn preflight(&self) -> Result<()> {
        for (key, f) in [("train", &self.train), ("test", &self.test)] {
            if !f.starts_with('@') {
                let rows = read_rows(Path::new(f)).with_context(|| format!("`{key}`"))?;
                // The held-out names against the training rows now, not after the stages before.
                if key == "train" {
                    split_held_out(rows, &self.held_out).with_context(|| format!("`held_out` (the clusters of `train` = {f})"))?;
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.candidates == 0 {
            return Err(("candidates".into(), "L must be at least 1".into()));
        }
        if self.rounds == 0 {
            return Err(("rounds".into(), "rounds must be at least 1".into()));
        }
        if self.max_examples == Some(0) {
            return Err(("max_examples".into(), "max_examples must be at least 1 (leave it out to score the whole pool)".into()));
        }
        if self.cap == 0 {
            return Err(("cap".into(), "cap must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.valid_share) {
            return Err(("valid_share".into(), format!("valid_share must be in [0, 1) (got {})", self.valid_share)));
        }
        if self.batch_size == 0 {
            return Err(("batch_size".into(), "batch_size must be at least 1".into()));
        }
        Ok(())
    }

    fn total_units(&self) -> (Option<u64>, &'static str) {
        (self.max_examples.map(|n| n as u64), "example")
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<StageOutput> {
        run(self, ctx)
    }
}

/// Writes task rows as JSONL, atomically.
pub fn write_rows(path: &Path, rows: &[TaskRow]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// The pool rows to score, in pool order: all of them, or `max` drawn without replacement by
/// a seeded shuffle. Not the first `max`: the pool is in task order, so a prefix would hold
/// only the first tasks and the retriever would never see a query of the others.
fn examples_to_score(pool: usize, max: Option<usize>, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pool).collect();
    if let Some(max) = max.filter(|&m| m < pool) {
        Rng::derive(seed, "examples to score").shuffle(&mut order);
        order.truncate(max);
        order.sort_unstable();
    }
    order
}

fn run(cfg: &PromptScoreStage, ctx: &mut StageCtx) -> Result<StageOutput> {
    let train_rows = read_rows(&ctx.resolve(&cfg.train)?).context("`train`")?;
    let test_rows = read_rows(&ctx.resolve(&cfg.test)?).context("`test`")?;
    // Every task's own sampled rows, held-out ones included: the demos of the vanilla
    // few-shot baseline (K demonstrations from the target task itself).
    let target = sample_balanced(&train_rows, cfg.cap, &mut Rng::new(cfg.split_seed));
    write_rows(&ctx.dir.join("target.jsonl"), &target)?;
    let (seen, _) = split_held_out(train_rows, &cfg.held_out).context("`held_out`")?;
    let pool = sample_balanced(&seen, cfg.cap, &mut Rng::new(cfg.split_seed));
    write_rows(&ctx.dir.join("pool.jsonl"), &pool)?;
    write_rows(&ctx.dir.join("test.jsonl"), &test_rows)?;
    let order = examples_to_score(pool.len(), cfg.max_examples, cfg.split_seed);
    let n = order.len();
    let tasks: std::collections::BTreeSet<&str> = pool.iter().map(|r| r.task.as_str()).collect();
    ctx.events.info(format!(
        "pool: {} rows of {} tasks (held out: {:?}); scoring {n} examples with L = {}, B = {}, up to {} rounds",
        pool.len(),
        tasks.len(),
        cfg.held_out,
        cfg.candidates,
        cfg.negatives,
        cfg.rounds
    ));

    let model_dir = ctx.resolve(&cfg.model)?;
    let m = EvalModel::load(&model_dir, &ctx.device)?;
    let (mut log, mut done) = ScoredLog::open(&ctx.dir.join("scored.partial.jsonl"))?;
    let chosen: std::collections::BTreeSet<usize> = order.iter().copied().collect();
    done.retain(|s| chosen.contains(&s.qid));
    if !done.is_empty() {
        ctx.events.info(format!("resuming: {} examples already scored", done.len()));
    }
    let seed = ctx.rng("candidates").next_u64();
    let sizes = Sizes { l: cfg.candidates, b: cfg.negatives, rounds: cfg.rounds };
    let started = std::time::Instant::now();
    let first_new = done.len();
    let already: std::collections::BTreeSet<usize> = done.iter().map(|s| s.qid).collect();
    for &qid in order.iter().filter(|q| !already.contains(q)) {
        ctx.check_stop()?;
        let x = &pool[qid];
        let scored = select(&pool, qid, sizes, seed, &mut |pids| {
            let items: Vec<(String, &TaskRow)> = pids.iter().map(|&p| (scoring_input(&[pool[p].demo()], &x.input), x)).collect();
            let predictions = predict(&m, &items, cfg.batch_size, &mut || Ok(()))?;
            Ok(pids.iter().zip(predictions).map(|(&p, pred)| match x.gold() {
                Some(gold) => choice_cand(p, &pred.nll, gold, cfg.rank),
                // Completion: the metric (token F1) is both the score and the accuracy.
                None => Cand { pid: p, score: pred.acc, acc: pred.acc },
            }).collect())
        })
        .with_context(|| format!("scoring pool row {qid} (id {:?})", x.id))?;
        log.append(&scored)?;
        done.push(scored);
        let k = done.len();
        ctx.events.progress(k as u64, Some(n as u64), "example", Some("score"));
        if k % 25 == 0 || k == n {
            let with_pos = done.iter().filter(|s| s.positive.is_some()).count();
            let rate = (k - first_new) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            ctx.events.metrics(k as u64, vec![("score/with_positive".to_string(), with_pos as f64 / k as f64), ("score/examples_per_s".to_string(), rate)]);
        }
    }
    let with_positive = done.iter().filter(|s| s.positive.is_some()).count();
    write_jsonl(&ctx.dir.join("scored.jsonl"), &done)?;
    let (train, valid) = split(done.clone(), cfg.valid_share, cfg.split_seed);
    write_jsonl(&ctx.dir.join("train.jsonl"), &train)?;
    write_jsonl(&ctx.dir.join("valid.jsonl"), &valid)?;
    let meta = ScoreMeta { held_out: cfg.held_out.clone(), pool: pool.len(), scored: done.len(), with_positive, train: train.len(), valid: valid.len(), test: test_rows.len() };
    crate::fsutil::write_atomic(&ctx.dir.join("meta.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let mean_rounds = done.iter().map(|s| s.rounds as f64).sum::<f64>() / done.len().max(1) as f64;
    ctx.events.info(format!("{with_positive} of {} examples have a positive ({} train, {} valid); mean rounds {mean_rounds:.2}", done.len(), train.len(), valid.len()));
    let summary: BTreeMap<String, f64> = [
        ("pool".to_string(), pool.len() as f64),
        ("scored".to_string(), done.len() as f64),
        ("with_positive".to_string(), with_positive as f64 / done.len().max(1) as f64),
        ("mean_rounds".to_string(), mean_rounds),
    ]
    .into();
    Ok(StageOutput { output: Some(ctx.dir.clone()), summary, table: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(train: &Path, held_out: &str, extra: &str) -> PromptScoreStage {
        let text = format!("model = \"@lm\"\ntrain = {:?}\ntest = {:?}\nheld_out = {held_out}\n{extra}", train.display().to_string(), train.display().to_string());
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn preflight_checks_held_out_clusters_against_the_training_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rows.jsonl");
        let rows = [("1", "a", "math"), ("2", "b", "nli")];
        let text: String = rows.iter().map(|(id, task, cluster)| format!("{{\"id\": \"{id}\", \"task\": \"{task}\", \"cluster\": \"{cluster}\", \"input\": \"q\", \"answer\": \"x\"}}\n")).collect();
        std::fs::write(&p, text).unwrap();
        stage(&p, "[\"nli\"]", "").preflight().unwrap();
        // A typo in a cluster name and a held-out list naming every cluster fail before any stage runs.
        let err = format!("{:#}", stage(&p, "[\"NLI\"]", "").preflight().unwrap_err());
        assert!(err.contains("`held_out`") && err.contains("rows.jsonl") && err.contains("\"NLI\" has no rows"), "{err}");
        let err = format!("{:#}", stage(&p, "[\"nli\", \"math\"]", "").preflight().unwrap_err());
        assert!(err.contains("names every cluster"), "{err}");
        assert_eq!(stage(&p, "[]", "max_examples = 0").validate().unwrap_err().0, "max_examples");
    }

    #[test]
    fn fewer_examples_than_the_pool_are_a_seeded_sample_over_all_of_it() {
        assert_eq!(examples_to_score(5, None, 42), vec![0, 1, 2, 3, 4]);
        assert_eq!(examples_to_score(5, Some(9), 42), vec![0, 1, 2, 3, 4]);
        // A pool of 10 tasks × 96 rows in task order, 320 scored: every task gets rows (a
        // prefix would give only the first four tasks), none twice, in pool order, the same
        // draw for the same seed and another for another seed.
        let picked = examples_to_score(960, Some(320), 42);
        assert_eq!(picked.len(), 320);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        let per_task = (0..10).map(|t| picked.iter().filter(|&&q| q / 96 == t).count()).collect::<Vec<_>>();
        assert!(per_task.iter().all(|&c| (15..=50).contains(&c)), "{per_task:?}");
        assert_eq!(picked, examples_to_score(960, Some(320), 42));
        assert_ne!(picked, examples_to_score(960, Some(320), 7));
    }
}
