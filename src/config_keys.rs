//! How a key error in a TOML table reads: the key path and a plain message, with "did you
//! mean" for unknown keys. Shared by the profile loader, the stage registry and the problem
//! source, which all deserialize parts of a profile; it depends on none of them.

/// The key path and a plain message for a serde error, with a suggestion for unknown keys.
pub fn describe_serde_error(e: &serde_path_to_error::Error<toml::de::Error>) -> (String, String) {
    describe_serde_error_with(e, &[])
}

/// [`describe_serde_error`], where the table also takes keys that serde did not see:
/// `extra_keys` holds (path from the table the error is relative to, the name to suggest),
/// so an old name can be offered as the name it became.
pub fn describe_serde_error_with(e: &serde_path_to_error::Error<toml::de::Error>, extra_keys: &[(String, String)]) -> (String, String) {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let raw = e.inner().message().trim().to_string();
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        // serde: "unknown field `lrr`, expected one of `lr`, `steps`" (or "expected `lr`").
        let unknown = rest.split('`').next().unwrap_or("").to_string();
        let mut expected: Vec<&str> = rest.split('`').skip(1).enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, s)| s).collect();
        // serde_path_to_error already ends the path with the unknown key; older versions did not.
        if !(path == unknown || path.ends_with(&format!(".{unknown}"))) {
            path = if path.is_empty() { unknown.clone() } else { format!("{path}.{unknown}") };
        }
        // Extra keys of the table the unknown key sits in (`data.task` for `data.x`).
        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
        let mut candidates: Vec<(&str, &str)> = expected.iter().map(|&k| (k, k)).collect();
        for (key, shown) in extra_keys {
            let (key_parent, name) = key.rsplit_once('.').unwrap_or(("", key.as_str()));
            if key_parent == parent {
                candidates.push((name, shown));
                if name == shown && !expected.contains(&name) {
                    expected.push(name);
                }
            }
        }
        let best = suggest(&unknown, candidates.iter().map(|(k, _)| *k));
        let suggestion = best.and_then(|b| candidates.iter().find(|(k, _)| *k == b)).map(|(_, shown)| *shown);
        let mut msg = format!("unknown key `{unknown}`");
        if let Some(s) = suggestion {
            msg.push_str(&format!("; did you mean `{s}`?"));
        }
        if !expected.is_empty() {
            msg.push_str(&format!(" (expected one of: {})", expected.join(", ")));
        }
        return (path, msg);
    }
    (path, raw)
}

/// The closest candidate within a small edit distance, for "did you mean".
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("seed", "seeed"), 1);
        assert_eq!(suggest("seeed", ["seed", "name", "device"]), Some("seed"));
        assert_eq!(suggest("xyzzy", ["seed", "name"]), None);
    }
}
