//! The built-in task families by name, and train/test splits without overlap.

use super::{arithmetic, countdown, subset_sum, Instance, Task, TaskError};
use crate::rng::Rng;
use std::collections::HashSet;

/// `(name, description)` of every built-in task, in a stable order.
pub fn names() -> Vec<(&'static str, &'static str)> {
    vec![
        (countdown::NAME, countdown::DESCRIPTION),
        (arithmetic::NAME, arithmetic::DESCRIPTION),
        (subset_sum::NAME, subset_sum::DESCRIPTION),
    ]
}

/// Builds a task from its name and its options table (`[task.options]` in a profile).
/// Unknown names list the known ones; unknown option keys are named in the error.
pub fn build(name: &str, options: &toml::Table) -> Result<Box<dyn Task>, TaskError> {
    match name {
        countdown::NAME => Ok(Box::new(countdown::Countdown::from_table(options)?)),
        arithmetic::NAME => Ok(Box::new(arithmetic::Arithmetic::from_table(options)?)),
        subset_sum::NAME => Ok(Box::new(subset_sum::SubsetSum::from_table(options)?)),
        _ => Err(TaskError::UnknownTask {
            name: name.to_string(),
            known: names().iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Draws per wanted instance before giving up on a too-small instance space.
const DRAWS_PER_INSTANCE: usize = 20;
const MIN_DRAWS: usize = 200;

/// `n` instances with distinct prompts, none of whose prompts is in `exclude` (pass the
/// training prompts when drawing a test split so the two never overlap). Ids are
/// `<task>-<index:06>` in draw order. Gives up with [`TaskError::SpaceTooSmall`] after
/// `max(200, 20 n)` draws, which only a nearly exhausted instance space reaches.
pub fn generate_split(
    task: &dyn Task,
    rng: &mut Rng,
    n: usize,
    exclude: &HashSet<String>,
) -> Result<Vec<Instance>, TaskError> {
    let attempts = MIN_DRAWS.max(DRAWS_PER_INSTANCE.saturating_mul(n));
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..attempts {
        if out.len() == n {
            break;
        }
        let mut instance = task.generate(rng);
        if exclude.contains(&instance.prompt) || !seen.insert(instance.prompt.clone()) {
            continue;
        }
        instance.id = format!("{}-{:06}", task.name(), out.len());
        out.push(instance);
    }
    if out.len() < n {
        return Err(TaskError::SpaceTooSmall { task: task.name().to_string(), wanted: n, got: out.len(), attempts });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn every_listed_task_builds_with_defaults_and_round_trips_instances() {
        let listed = names();
        assert_eq!(listed.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["countdown", "arithmetic", "subset-sum"]);
        for (name, description) in listed {
            let task = build(name, &toml::Table::new()).unwrap();
            assert_eq!(task.name(), name);
            assert_eq!(task.describe(), description);
            let inst = task.generate(&mut Rng::new(1));
            assert_eq!(inst.task, name);
            let line = serde_json::to_string(&inst).unwrap();
            let back: Instance = serde_json::from_str(&line).unwrap();
            assert_eq!(back, inst);
            let first = &task.solutions(&back).unwrap()[0];
            assert!(task.verify(&back, &task.render_solution(&back, first)).correct);
        }
    }

    #[test]
    fn unknown_task_lists_the_known_ones() {
        let err = build("countdwn", &toml::Table::new()).err().unwrap();
        assert_eq!(err.to_string(), "unknown task `countdwn`; known tasks: countdown, arithmetic, subset-sum");
    }

    #[test]
    fn options_are_deserialized_and_unknown_keys_named() {
        let err = build("countdown", &table("max_nmbers = 5")).err().unwrap().to_string();
        assert!(err.starts_with("task `countdown`: bad options:") && err.contains("max_nmbers"), "{err}");
        assert!(err.contains("expected one of `min_numbers`"), "{err}");
        let err = build("subset-sum", &table("min_len = \"five\"")).err().unwrap().to_string();
        assert!(err.contains("task `subset-sum`") && err.contains("string"), "{err}");
        let err = build("arithmetic", &table("digits = 12")).err().unwrap().to_string();
        assert!(err.contains("digits must be in 1..=9, got 12"), "{err}");
        let task = build("countdown", &table("allow_division = true\nmax_target = 30")).unwrap();
        let inst = task.generate(&mut Rng::new(3));
        assert_eq!(inst.data["allow_division"], serde_json::json!(true));
        assert!(inst.data["target"].as_i64().unwrap() <= 30);
    }

    #[test]
    fn splits_are_distinct_disjoint_numbered_and_deterministic() {
        let task = build("subset-sum", &toml::Table::new()).unwrap();
        let train = generate_split(task.as_ref(), &mut Rng::new(1), 200, &HashSet::new()).unwrap();
        let prompts: HashSet<String> = train.iter().map(|i| i.prompt.clone()).collect();
        assert_eq!(prompts.len(), 200);
        assert_eq!(train[0].id, "subset-sum-000000");
        assert_eq!(train[123].id, "subset-sum-000123");
        let test = generate_split(task.as_ref(), &mut Rng::new(2), 100, &prompts).unwrap();
        assert!(test.iter().all(|i| !prompts.contains(&i.prompt)));
        assert_eq!(train, generate_split(task.as_ref(), &mut Rng::new(1), 200, &HashSet::new()).unwrap());
    }

    #[test]
    fn too_small_a_space_is_an_error_not_a_hang() {
        // One-digit addition has exactly 9 * 9 = 81 distinct problems.
        let task = build("arithmetic", &table("ops = [\"add\"]\ndigits = 1")).unwrap();
        let all = generate_split(task.as_ref(), &mut Rng::new(5), 60, &HashSet::new()).unwrap();
        assert_eq!(all.len(), 60);
        let err = generate_split(task.as_ref(), &mut Rng::new(5), 82, &HashSet::new()).err().unwrap();
        match err {
            TaskError::SpaceTooSmall { wanted, got, attempts, .. } => {
                assert_eq!((wanted, attempts), (82, 1640));
                assert!(got <= 81, "{got}");
            }
            other => panic!("unexpected {other}"),
        }
        let exclude: HashSet<String> = all.iter().map(|i| i.prompt.clone()).collect();
        let rest = generate_split(task.as_ref(), &mut Rng::new(6), 10, &exclude).unwrap();
        assert!(rest.iter().all(|i| !exclude.contains(&i.prompt)));
        assert!(generate_split(task.as_ref(), &mut Rng::new(6), 22, &exclude).is_err());
    }
}
