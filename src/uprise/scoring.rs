//! Prompt scoring (research/synth-spec.md §6.3): for each training example, L candidate
//! prompts from its own task are scored by a frozen LM; the best correct one is the positive,
//! the B lowest the hard negatives, B random prompts of other tasks the negatives.
//!
//! This file holds the rules, free of any model: the paper's Eq. 4 score and the released
//! code's L1-normalised gold NLL ([`eq4`], [`l1_key`]), candidate sampling with up to
//! `rounds` resampling rounds ([`select`]), the 90/10 split, and the resumable JSONL of
//! scored examples ([`ScoredLog`]). The LM side (batched option NLLs) is [`super::lm`].

use super::data::TaskRow;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// How candidates are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// The paper's Eq. 4: `acc · LH(gold) / Σ_m LH(o_m)`, LH the per-token likelihood.
    #[default]
    Eq4,
    /// The released code's key: `nll_gold / Σ_m nll_m` (lower is better; stored negated so
    /// that a higher score is better under either rank).
    L1,
}

/// One scored candidate: its pool id, its score (higher is better) and whether the LM's
/// prediction with it was right (completion: the metric, in [0, 1]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cand {
    pub pid: usize,
    pub score: f64,
    pub acc: f64,
}

/// The paper's Eq. 4 from the options' mean per-token NLLs: (score, acc). The prediction is
/// the argmin NLL (ties to the lowest index).
pub fn eq4(nll: &[f64], gold: usize) -> (f64, f64) {
    let pred = crate::eval::text::choice::argmin(nll);
    let acc = if pred == gold { 1.0 } else { 0.0 };
    let lh: Vec<f64> = nll.iter().map(|n| (-n).exp()).collect();
    (acc * lh[gold] / lh.iter().sum::<f64>(), acc)
}

/// The released code's ranking key: the gold option's NLL over the sum of all (lower is better).
pub fn l1_key(nll: &[f64], gold: usize) -> f64 {
    nll[gold] / nll.iter().sum::<f64>()
}

/// A multiple-choice candidate's [`Cand`] under `rank`.
pub fn choice_cand(pid: usize, nll: &[f64], gold: usize, rank: Rank) -> Cand {
    let (score, acc) = eq4(nll, gold);
    match rank {
        Rank::Eq4 => Cand { pid, score, acc },
        Rank::L1 => Cand { pid, score: -l1_key(nll, gold), acc },
    }
}

/// One scored training example, a line of `scored.jsonl` (§6.7's proposal plus the chosen
/// contexts): candidates sorted best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub qid: usize,
    pub task: String,
    pub input: String,
    pub answer: String,
    pub cands: Vec<Cand>,
    /// `None`: no candidate was right in any round; the example is dropped from training.
    pub positive: Option<usize>,
    pub hard: Vec<usize>,
    pub negatives: Vec<usize>,
    /// Rounds of L candidates drawn.
    pub rounds: usize,
}

/// Sampling sizes of §6.3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizes {
    /// Candidates per round (L).
    pub l: usize,
    /// Hard negatives and other-task negatives each (B).
    pub b: usize,
    /// Rounds of L candidates at most (the paper: 7).
    pub rounds: usize,
}

/// Scores example `qid` of `pool` (`pool[qid]` is the example; candidates are pool rows of
/// its task other than itself). Each round draws L fresh candidates (seeded by `seed` and
/// `qid`) and scores them with `score`; the first round with a candidate whose acc > 0 stops
/// the loop. The positive is the best-scored candidate with acc > 0; hard negatives are the B
/// lowest-scored of all candidates drawn (never the positive); negatives are B random pool
/// rows of other tasks (same task, outside the drawn candidates, when there is one task).
pub fn select(pool: &[TaskRow], qid: usize, sizes: Sizes, seed: u64, score: &mut dyn FnMut(&[usize]) -> Result<Vec<Cand>>) -> Result<Scored> {
    let me = &pool[qid];
    let mut remaining: Vec<usize> = (0..pool.len()).filter(|&j| j != qid && pool[j].task == me.task).collect();
    let mut rng = Rng::derive(seed, &format!("uprise/cands/{qid}"));
    let mut cands: Vec<Cand> = Vec::new();
    let mut rounds = 0;
    while rounds < sizes.rounds && !remaining.is_empty() {
        rounds += 1;
        // A partial Fisher–Yates: the first L of `remaining` become this round's draw.
        let take = sizes.l.min(remaining.len());
        for i in 0..take {
            let j = i + rng.usize(remaining.len() - i);
            remaining.swap(i, j);
        }
        let drawn: Vec<usize> = remaining.drain(..take).collect();
        let scored = score(&drawn)?;
        if scored.len() != drawn.len() {
            bail!("the scorer returned {} scores for {} candidates", scored.len(), drawn.len());
        }
        cands.extend(scored);
        if cands.iter().any(|c| c.acc > 0.0) {
            break;
        }
    }
    // Best first; ties keep the draw order (a stable sort).
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let positive = cands.iter().find(|c| c.acc > 0.0).map(|c| c.pid);
    let hard: Vec<usize> = cands.iter().rev().filter(|c| Some(c.pid) != positive).take(sizes.b).map(|c| c.pid).collect();
    let drawn: BTreeSet<usize> = cands.iter().map(|c| c.pid).collect();
    let multi_task = pool.iter().any(|r| r.task != me.task);
    let mut others: Vec<usize> = (0..pool.len())
        .filter(|&j| j != qid && if multi_task { pool[j].task != me.task } else { !drawn.contains(&j) })
        .collect();
    let mut nrng = Rng::derive(seed, &format!("uprise/negatives/{qid}"));
    let take = sizes.b.min(others.len());
    for i in 0..take {
        let j = i + nrng.usize(others.len() - i);
        others.swap(i, j);
    }
    others.truncate(take);
    Ok(Scored { qid, task: me.task.clone(), input: me.input.clone(), answer: me.answer.clone(), cands, positive, hard, negatives: others, rounds })
}

/// 90/10 (`valid_share`) split of the examples that have a positive, shuffled by `seed`
/// (the reference's seed 42).
pub fn split(mut scored: Vec<Scored>, valid_share: f64, seed: u64) -> (Vec<Scored>, Vec<Scored>) {
    scored.retain(|s| s.positive.is_some());
    scored.sort_by_key(|s| s.qid);
    Rng::new(seed).shuffle(&mut scored);
    let n_valid = ((scored.len() as f64) * valid_share).round() as usize;
    let n_valid = if scored.len() >= 2 { n_valid.clamp(1, scored.len() - 1) } else { 0 };
    let train = scored.split_off(n_valid);
    (train, scored)
}

/// The append-only log of a scoring run: one [`Scored`] per line, flushed after each, so a
/// killed run resumes after its last whole line (a torn last line is dropped).
pub struct ScoredLog {
    path: PathBuf,
    file: std::fs::File,
}

impl ScoredLog {
    /// Opens `path`, keeping its whole lines (the examples already scored, returned).
    pub fn open(path: &Path) -> Result<(ScoredLog, Vec<Scored>)> {
        let mut done = Vec::new();
        let mut keep = 0u64;
        if let Ok(f) = std::fs::File::open(path) {
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).with_context(|| format!("cannot read {}", path.display()))?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                match serde_json::from_str::<Scored>(&line) {
                    Ok(s) => done.push(s),
                    Err(_) => break,
                }
                keep += n as u64;
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(false).write(true).truncate(false).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // Drop whatever follows the last whole line, then append.
        file.set_len(keep)?;
        let mut log = ScoredLog { path: path.to_path_buf(), file };
        use std::io::Seek;
        log.file.seek(std::io::SeekFrom::End(0))?;
        Ok((log, done))
    }

    pub fn append(&mut self, s: &Scored) -> Result<()> {
        let mut line = serde_json::to_string(s)?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

/// Writes scored examples as JSONL, atomically.
pub fn write_jsonl(path: &Path, rows: &[Scored]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a scored JSONL, each line checked.
pub fn read_jsonl(path: &Path) -> Result<Vec<Scored>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a scored example", path.display(), i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq4_and_the_l1_key_match_the_spec_vector() {
        // §6.8: NLLs [0.9, 1.2, 2.0], gold 0 → LH [0.40657, 0.30119, 0.13534], score 0.48223.
        let (score, acc) = eq4(&[0.9, 1.2, 2.0], 0);
        let lh = [(-0.9f64).exp(), (-1.2f64).exp(), (-2.0f64).exp()];
        assert!((lh[0] - 0.40657).abs() < 1e-5 && (lh[2] - 0.13534).abs() < 1e-5);
        assert_eq!(acc, 1.0);
        assert!((score - 0.48223).abs() < 1e-5, "{score}");
        assert!((l1_key(&[0.9, 1.2, 2.0], 0) - 0.9 / 4.1).abs() < 1e-12);
        // A wrong prediction scores 0 under Eq. 4.
        assert_eq!(eq4(&[0.9, 1.2, 2.0], 1), (0.0, 0.0));
        assert_eq!(choice_cand(3, &[0.9, 1.2, 2.0], 0, Rank::L1).score, -0.9 / 4.1);
    }

    fn pool() -> Vec<TaskRow> {
        let mk = |i: usize, task: &str| TaskRow { id: i.to_string(), task: task.into(), cluster: task.into(), input: format!("x{i}"), options: None, answer: "a".into() };
        // 0..12 task a, 12..20 task b.
        (0..20).map(|i| mk(i, if i < 12 { "a" } else { "b" })).collect()
    }

    #[test]
    fn positive_hard_and_other_negatives_from_a_hand_built_list() {
        let pool = pool();
        // Hand-built scores for task a's rows: pid → (score, acc).
        let table = |pid: usize| match pid {
            1 => (0.9, 0.0), // best score but wrong: never the positive
            2 => (0.7, 1.0), // the positive
            3 => (0.5, 1.0),
            4 => (0.1, 0.0),
            5 => (0.05, 0.0),
            p => (0.2 + p as f64 * 0.01, 0.0),
        };
        let mut calls = Vec::new();
        let sizes = Sizes { l: 11, b: 3, rounds: 7 };
        let s = select(&pool, 0, sizes, 7, &mut |pids| {
            calls.push(pids.to_vec());
            Ok(pids.iter().map(|&p| Cand { pid: p, score: table(p).0, acc: table(p).1 }).collect())
        })
        .unwrap();
        assert_eq!(calls.len(), 1);
        let mut drawn = calls[0].clone();
        drawn.sort();
        assert_eq!(drawn, (1..12).collect::<Vec<_>>(), "all 11 other rows of task a, never the example");
        assert_eq!(s.positive, Some(2));
        assert_eq!(s.hard, vec![5, 4, 6], "the three lowest scores, lowest first");
        assert_eq!(s.cands.iter().map(|c| c.pid).take(3).collect::<Vec<_>>(), vec![1, 2, 3], "best first");
        assert_eq!(s.negatives.len(), 3);
        assert!(s.negatives.iter().all(|&p| pool[p].task == "b"), "{:?}", s.negatives);
        assert_eq!(s.rounds, 1);
    }

    #[test]
    fn resamples_until_a_correct_prompt_then_stops() {
        let pool = pool();
        let sizes = Sizes { l: 3, b: 2, rounds: 7 };
        // Only pid 9 is ever right: rounds continue until it is drawn.
        let mut calls: Vec<Vec<usize>> = Vec::new();
        let s = select(&pool, 0, sizes, 1, &mut |pids| {
            calls.push(pids.to_vec());
            Ok(pids.iter().map(|&p| Cand { pid: p, score: p as f64, acc: if p == 9 { 1.0 } else { 0.0 } }).collect())
        })
        .unwrap();
        let round_of_9 = calls.iter().position(|c| c.contains(&9)).unwrap();
        assert_eq!(s.rounds, round_of_9 + 1);
        assert_eq!(calls.len(), s.rounds);
        let all: Vec<usize> = calls.concat();
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len(), "no candidate drawn twice");
        assert_eq!(s.positive, Some(9));
        assert_eq!(s.cands.len(), all.len(), "every drawn candidate is kept");

        // Nobody right: 11 candidates in rounds of 3 run out after 4 rounds; 7 would be the cap.
        let s = select(&pool, 0, sizes, 1, &mut |pids| Ok(pids.iter().map(|&p| Cand { pid: p, score: 0.0, acc: 0.0 }).collect())).unwrap();
        assert_eq!((s.positive, s.rounds, s.cands.len()), (None, 4, 11));
        let capped = select(&pool, 0, Sizes { l: 1, b: 2, rounds: 7 }, 1, &mut |pids| Ok(pids.iter().map(|&p| Cand { pid: p, score: 0.0, acc: 0.0 }).collect())).unwrap();
        assert_eq!((capped.rounds, capped.cands.len()), (7, 7));
    }

    #[test]
    fn split_keeps_examples_with_a_positive_ninety_ten() {
        let mk = |qid: usize, positive: Option<usize>| Scored { qid, task: "a".into(), input: String::new(), answer: String::new(), cands: vec![], positive, hard: vec![], negatives: vec![], rounds: 1 };
        let scored: Vec<Scored> = (0..25).map(|q| mk(q, if q % 5 == 4 { None } else { Some(0) })).collect();
        let (train, valid) = split(scored.clone(), 0.1, 42);
        assert_eq!((train.len(), valid.len()), (18, 2));
        let mut all: Vec<usize> = train.iter().chain(&valid).map(|s| s.qid).collect();
        all.sort();
        assert_eq!(all, (0..25).filter(|q| q % 5 != 4).collect::<Vec<_>>());
        let mut reversed = scored;
        reversed.reverse();
        assert_eq!(split(reversed, 0.1, 42).1, valid, "the split does not depend on the input order");
    }

    #[test]
    fn the_log_resumes_after_its_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scored.partial.jsonl");
        let mk = |qid| Scored { qid, task: "a".into(), input: "x".into(), answer: "y".into(), cands: vec![Cand { pid: 1, score: 0.5, acc: 1.0 }], positive: Some(1), hard: vec![], negatives: vec![2], rounds: 1 };
        let (mut log, done) = ScoredLog::open(&path).unwrap();
        assert!(done.is_empty());
        log.append(&mk(0)).unwrap();
        log.append(&mk(1)).unwrap();
        drop(log);
        // A kill mid-write leaves a torn line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"qid\": 2, \"ta").unwrap();
        drop(f);
        let (mut log, done) = ScoredLog::open(&path).unwrap();
        assert_eq!(done, vec![mk(0), mk(1)]);
        log.append(&mk(2)).unwrap();
        drop(log);
        let (_, done) = ScoredLog::open(&path).unwrap();
        assert_eq!(done, vec![mk(0), mk(1), mk(2)]);
    }
}
