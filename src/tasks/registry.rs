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
