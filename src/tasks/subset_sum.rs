//! Subset sum (docs/METHODS.md §10.1 task 2): pick numbers from a list that add up to a
//! target. Answers have varying length, which exercises FlowRL's length normalisation.
//!
//! Prompt: `subset 2 3 5 8 -> 10\n` (list sorted ascending). Response: chosen numbers joined by
//! `+` in any order, e.g. `2+8` or `8 + 2`, optionally followed by `=10`. A number listed
//! twice may be chosen twice. The canonical form is the sorted multiset of chosen values
//! (`2+3+5`), so two index sets with the same values are one solution.

use super::{decimal_len, instance_data, parse_options, Instance, Task, TaskError, Verdict};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: &str = "subset-sum";
pub const DESCRIPTION: &str = "pick numbers from a list that sum to a target, answer like 2+3+5";

pub const MAX_PROMPT_CHARS: usize = 40;
/// Enumeration visits all 2^len subsets.
pub const MAX_LEN: usize = 12;
const MAX_DRAWS: usize = 10_000;
const PROBE_DRAWS: usize = 2_000;

/// Generator options. Defaults: five or six numbers in 1..=15, targets 10..=40 with at least
/// three distinct solutions; prompts stay under 32 characters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubsetSumOptions {
    pub min_len: usize,
    pub max_len: usize,
    pub min_value: i64,
    pub max_value: i64,
    pub min_target: i64,
    pub max_target: i64,
    /// Redraw the list until the chosen target has at least this many distinct multisets.
    pub min_solutions: usize,
}

impl Default for SubsetSumOptions {
    fn default() -> Self {
        SubsetSumOptions {
            min_len: 5,
            max_len: 6,
            min_value: 1,
            max_value: 15,
            min_target: 10,
            max_target: 40,
            min_solutions: 3,
        }
    }
}

impl SubsetSumOptions {
    fn validate(&self) -> Result<(), String> {
        if self.min_len < 2 || self.max_len > MAX_LEN || self.min_len > self.max_len {
            return Err(format!(
                "need 2 <= min_len <= max_len <= {MAX_LEN}, got min_len = {}, max_len = {}",
                self.min_len, self.max_len
            ));
        }
        if self.min_value < 1 || self.min_value > self.max_value {
            return Err(format!(
                "need 1 <= min_value <= max_value, got min_value = {}, max_value = {}",
                self.min_value, self.max_value
            ));
        }
        if self.min_target > self.max_target {
            return Err(format!("need min_target <= max_target, got {} > {}", self.min_target, self.max_target));
        }
        if self.min_solutions == 0 {
            return Err("min_solutions must be at least 1".to_string());
        }
        let target_len = decimal_len(self.max_target).max(decimal_len(self.min_target));
        let longest = "subset".len() + self.max_len * (1 + decimal_len(self.max_value)) + " -> ".len() + target_len + 1;
        if longest > MAX_PROMPT_CHARS {
            return Err(format!(
                "prompts could reach {longest} characters (limit {MAX_PROMPT_CHARS}); lower max_len, max_value or max_target"
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubsetSumData {
    pub numbers: Vec<i64>,
    pub target: i64,
}

pub struct SubsetSum {
    options: SubsetSumOptions,
}

impl SubsetSum {
    /// Validates the options and checks with a fixed-seed probe that instances with
    /// `min_solutions` solutions exist.
    pub fn new(options: SubsetSumOptions) -> Result<Self, TaskError> {
        let bad = |message: String| TaskError::BadOptions { task: NAME.to_string(), message };
        options.validate().map_err(bad)?;
        let task = SubsetSum { options };
        if task.search(&mut Rng::new(0), PROBE_DRAWS).0.is_none() {
            return Err(bad(format!(
                "no list with a target in {}..={} that has at least {} solutions found in {PROBE_DRAWS} draws; \
                 lower min_solutions or widen the ranges",
                task.options.min_target, task.options.max_target, task.options.min_solutions
            )));
        }
        Ok(task)
    }

    pub fn from_table(options: &toml::Table) -> Result<Self, TaskError> {
        SubsetSum::new(parse_options(NAME, options)?)
    }

    /// Draws lists until one has an eligible target. Returns the found instance, or `None`
    /// and the in-range candidate with the most solutions seen.
    fn search(&self, rng: &mut Rng, draws: usize) -> (Option<SubsetSumData>, Option<SubsetSumData>) {
        let o = &self.options;
        let mut best: Option<(usize, SubsetSumData)> = None;
        for _ in 0..draws {
            let len = rng.range(o.min_len as i64, o.max_len as i64) as usize;
            let mut numbers: Vec<i64> = (0..len).map(|_| rng.range(o.min_value, o.max_value)).collect();
            numbers.sort_unstable();
            let candidates: Vec<(i64, usize)> = solutions_by_sum(&numbers)
                .into_iter()
                .filter(|(sum, _)| (o.min_target..=o.max_target).contains(sum))
                .map(|(sum, s)| (sum, s.len()))
                .collect();
            let eligible: Vec<i64> = candidates.iter().filter(|(_, n)| *n >= o.min_solutions).map(|(t, _)| *t).collect();
            if let Some(target) = rng.choose(&eligible) {
                return (Some(SubsetSumData { numbers, target: *target }), None);
            }
            if let Some((target, n)) = candidates.iter().max_by_key(|(t, n)| (*n, -*t)) {
                if best.as_ref().is_none_or(|(b, _)| n > b) {
                    best = Some((*n, SubsetSumData { numbers, target: *target }));
                }
            }
        }
        (None, best.map(|(_, d)| d))
    }
}

pub fn prompt(numbers: &[i64], target: i64) -> String {
    format!("subset {} -> {target}\n", join(numbers, " "))
}

fn join(values: &[i64], sep: &str) -> String {
    values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(sep)
}

fn canonical(mut chosen: Vec<i64>) -> String {
    chosen.sort_unstable();
    join(&chosen, "+")
}

/// Distinct canonical answers for every reachable sum, over all non-empty index subsets.
pub fn solutions_by_sum(numbers: &[i64]) -> BTreeMap<i64, BTreeSet<String>> {
    let n = numbers.len().min(MAX_LEN);
    let mut by_sum: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for mask in 1usize..(1 << n) {
        let chosen: Vec<i64> = (0..n).filter(|i| mask >> i & 1 == 1).map(|i| numbers[i]).collect();
        by_sum.entry(chosen.iter().sum()).or_default().insert(canonical(chosen));
    }
    by_sum
}

pub fn solutions(data: &SubsetSumData) -> Vec<String> {
    solutions_by_sum(&data.numbers).remove(&data.target).map(|s| s.into_iter().collect()).unwrap_or_default()
}

/// A parsed answer: the chosen numbers in written order and the optional `=N` claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub chosen: Vec<i64>,
    pub claim: Option<i64>,
}

/// Parses `a+b+...` with an optional `=N`, whitespace allowed between tokens. Errors say
/// `parse error at col C: ...` with a 1-based column.
pub fn parse(response: &str) -> Result<Parsed, String> {
    let chars: Vec<char> = response.chars().collect();
    let mut pos = 0;
    let skip = |pos: &mut usize| {
        while chars.get(*pos).is_some_and(|c| c.is_ascii_whitespace()) {
            *pos += 1;
        }
    };
    let found = |pos: usize| match chars.get(pos) {
        Some(c) if c.is_ascii_graphic() => format!("'{c}'"),
        Some(c) => format!("{c:?}"),
        None => "end of response".to_string(),
    };
    let number = |pos: &mut usize| -> Result<i64, String> {
        skip(pos);
        let start = *pos;
        let mut value: i64 = 0;
        while let Some(d) = chars.get(*pos).and_then(|c| c.to_digit(10)) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(d)))
                .ok_or_else(|| format!("parse error at col {}: number too large", start + 1))?;
            *pos += 1;
        }
        if *pos == start {
            return Err(format!("parse error at col {}: expected a number, found {}", start + 1, found(start)));
        }
        Ok(value)
    };
    skip(&mut pos);
    if pos == chars.len() {
        return Err("parse error at col 1: empty response".to_string());
    }
    let mut chosen = vec![number(&mut pos)?];
    skip(&mut pos);
    while chars.get(pos) == Some(&'+') {
        pos += 1;
        chosen.push(number(&mut pos)?);
        skip(&mut pos);
    }
    let mut claim = None;
    if chars.get(pos) == Some(&'=') {
        pos += 1;
        claim = Some(number(&mut pos)?);
        skip(&mut pos);
    }
    if pos < chars.len() {
        let wanted = if claim.is_some() { "end of response" } else { "'+', '=' or end of response" };
        return Err(format!("parse error at col {}: expected {wanted}, found {}", pos + 1, found(pos)));
    }
    Ok(Parsed { chosen, claim })
}

pub fn verify_response(data: &SubsetSumData, response: &str) -> Verdict {
    let parsed = match parse(response) {
        Ok(p) => p,
        Err(reason) => return Verdict::wrong(reason, None),
    };
    let canon = canonical(parsed.chosen.clone());
    let mut left: BTreeMap<i64, usize> = BTreeMap::new();
    for n in &data.numbers {
        *left.entry(*n).or_default() += 1;
    }
    for n in &parsed.chosen {
        match left.get_mut(n) {
            None => return Verdict::wrong(format!("uses {n} which is not in the list"), Some(canon)),
            Some(0) => return Verdict::wrong(format!("reused number {n}"), Some(canon)),
            Some(k) => *k -= 1,
        }
    }
    let Some(sum) = parsed.chosen.iter().try_fold(0_i64, |acc, n| acc.checked_add(*n)) else {
        return Verdict::wrong("sum overflows", Some(canon));
    };
    if sum != data.target {
        return Verdict::wrong(format!("sums to {sum}, target {}", data.target), Some(canon));
    }
    if let Some(claim) = parsed.claim.filter(|c| *c != data.target) {
        return Verdict::wrong(format!("claims ={claim}, target {}", data.target), Some(canon));
    }
    Verdict::correct(canon)
}

impl Task for SubsetSum {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        DESCRIPTION
    }

    fn generate(&self, rng: &mut Rng) -> Instance {
        let data = match self.search(rng, MAX_DRAWS) {
            (Some(data), _) | (None, Some(data)) => data,
            // `new` proved eligible lists exist, so this needs 10 000 unlucky draws in a row;
            // the sum of the smallest list is always a valid target.
            (None, None) => {
                let numbers = vec![self.options.min_value; self.options.min_len];
                let target = numbers.iter().sum();
                SubsetSumData { numbers, target }
            }
        };
        let prompt = prompt(&data.numbers, data.target);
        let id = format!("{NAME}-{}-{}", join(&data.numbers, "_"), data.target);
        Instance { task: NAME.to_string(), id, prompt, data: serde_json::json!(data) }
    }

    fn verify(&self, instance: &Instance, response: &str) -> Verdict {
        match instance_data::<SubsetSumData>(instance) {
            Ok(data) => verify_response(&data, response),
            Err(message) => Verdict::wrong(message, None),
        }
    }

    fn solutions(&self, instance: &Instance) -> Option<Vec<String>> {
        let data = instance_data::<SubsetSumData>(instance).ok()?;
        // Longer lists than the enumerator handles only come from hand-made instances.
        (data.numbers.len() <= MAX_LEN).then(|| solutions(&data))
    }

    fn render_solution(&self, _instance: &Instance, canonical: &str) -> String {
        canonical.to_string()
    }

    fn wrong_response(&self, instance: &Instance, rng: &mut Rng) -> String {
        let Ok(data) = instance_data::<SubsetSumData>(instance) else {
            return "0".to_string();
        };
        let wrong: Vec<String> = solutions_by_sum(&data.numbers)
            .into_iter()
            .filter(|(sum, _)| *sum != data.target)
            .flat_map(|(_, s)| s)
            .collect();
        // Lists have at least two positive numbers, so at least two sums are reachable and
        // one differs from the target; the fallback only guards malformed data.
        rng.choose(&wrong).cloned().unwrap_or_else(|| "0".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(numbers: &[i64], target: i64) -> SubsetSumData {
        SubsetSumData { numbers: numbers.to_vec(), target }
    }

    fn reason(d: &SubsetSumData, response: &str) -> String {
        verify_response(d, response).reason
    }

    // Hand-worked: [2,3,5,8] -> 10: 2+8 and 2+3+5 (3+... needs 7, 5+... needs 5 from {2,3,8}
    // = 2+3, 8+... needs 2). [1,2,2,3] -> 5: 2+3 (either 2) and 1+2+2; 1+... needs 4 = 2+2
    // only. [4,6,9] -> 30: impossible (sum of all is 19).
    #[test]
    fn enumeration_matches_hand_worked_sets() {
        assert_eq!(solutions(&data(&[2, 3, 5, 8], 10)), ["2+3+5", "2+8"]);
        assert_eq!(solutions(&data(&[1, 2, 2, 3], 5)), ["1+2+2", "2+3"]);
        assert!(solutions(&data(&[4, 6, 9], 30)).is_empty());
    }

    #[test]
    fn verifier_accepts_any_order_and_names_mistakes() {
        let d = data(&[1, 2, 2, 3], 5);
        for ok in ["2+3", "3+2", " 3 + 2 ", "2+1+2=5", "1+2+2\n"] {
            let v = verify_response(&d, ok);
            assert!(v.correct, "{ok:?}: {}", v.reason);
        }
        assert_eq!(verify_response(&d, "3 + 2").canonical.as_deref(), Some("2+3"));
        assert_eq!(reason(&d, "3+3"), "reused number 3");
        assert_eq!(reason(&d, "1+2+2+2"), "reused number 2");
        assert_eq!(reason(&d, "4+1"), "uses 4 which is not in the list");
        assert_eq!(reason(&d, "1+3"), "sums to 4, target 5");
        assert_eq!(reason(&d, "2+3=6"), "claims =6, target 5");
        assert_eq!(reason(&d, "2+"), "parse error at col 3: expected a number, found end of response");
        assert_eq!(reason(&d, "2,3"), "parse error at col 2: expected '+', '=' or end of response, found ','");
        assert_eq!(reason(&d, "2*3"), "parse error at col 2: expected '+', '=' or end of response, found '*'");
        assert_eq!(reason(&d, ""), "parse error at col 1: empty response");
        assert_eq!(verify_response(&d, "1+3").canonical.as_deref(), Some("1+3"));
    }

    #[test]
    fn generated_solutions_verify_and_render_to_themselves() {
        let o = SubsetSumOptions::default();
        let task = SubsetSum::new(o.clone()).unwrap();
        let mut rng = Rng::new(4);
        let mut lengths = BTreeSet::new();
        for _ in 0..100 {
            let inst = task.generate(&mut rng);
            let d: SubsetSumData = serde_json::from_value(inst.data.clone()).unwrap();
            assert!(inst.prompt.len() <= MAX_PROMPT_CHARS, "{}", inst.prompt);
            assert!((o.min_len..=o.max_len).contains(&d.numbers.len()));
            assert!((o.min_target..=o.max_target).contains(&d.target));
            let sols = task.solutions(&inst).unwrap();
            assert!(sols.len() >= o.min_solutions);
            for s in &sols {
                let r = task.render_solution(&inst, s);
                let v = task.verify(&inst, &r);
                assert!(v.correct && v.canonical.as_deref() == Some(s.as_str()), "{r}: {}", v.reason);
                assert!(r.len() <= 24);
                lengths.insert(s.split('+').count());
            }
            let w = task.wrong_response(&inst, &mut rng);
            assert!(task.verify(&inst, &w).reason.starts_with("sums to"), "{w}");
        }
        assert!(lengths.len() >= 3, "answers should vary in length: {lengths:?}");
        assert_eq!(prompt(&[2, 3, 5, 8], 10), "subset 2 3 5 8 -> 10\n");
    }

    #[test]
    fn same_seed_same_instances() {
        let task = SubsetSum::new(SubsetSumOptions::default()).unwrap();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| task.generate(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(8), draw(8));
        assert_ne!(draw(8), draw(9));
    }

    #[test]
    fn options_are_validated() {
        let err = |o: SubsetSumOptions| SubsetSum::new(o).err().unwrap().to_string();
        assert!(err(SubsetSumOptions { max_len: 13, ..Default::default() }).contains("max_len <= 12"));
        assert!(err(SubsetSumOptions { min_target: 50, max_target: 40, ..Default::default() }).contains("50 > 40"));
        assert!(err(SubsetSumOptions { max_len: 8, max_value: 999, ..Default::default() }).contains("limit 40"));
        assert!(err(SubsetSumOptions { min_solutions: 1000, ..Default::default() }).contains("lower min_solutions"));
    }
}
