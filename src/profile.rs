//! Profiles: the TOML file that says what a run does.
//!
//! A profile has a `[run]` table and an ordered list of `[[stage]]` tables. Each stage has a
//! `kind` (registered in [`crate::stages`]) whose typed config is deserialized from the rest of
//! the table. Every error names the file, line and column, the key path and what is expected;
//! unknown keys get a "did you mean" suggestion. Presets are embedded from `profiles/*.toml`.

use crate::stage::StageConfig;
use crate::config_keys::{describe_serde_error, suggest};
use crate::stages;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

/// Profiles shipped inside the binary: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("tasks-demo", include_str!("../profiles/tasks-demo.toml")),
    ("sft-countdown-tiny", include_str!("../profiles/sft-countdown-tiny.toml")),
    ("grpo-tiny", include_str!("../profiles/grpo-tiny.toml")),
    ("ppo-tiny", include_str!("../profiles/ppo-tiny.toml")),
    ("flowrl-tiny", include_str!("../profiles/flowrl-tiny.toml")),
    ("entropy-adv-tiny", include_str!("../profiles/entropy-adv-tiny.toml")),
    ("flowrl-vs-grpo-tiny", include_str!("../profiles/flowrl-vs-grpo-tiny.toml")),
    ("rl-compare-tiny", include_str!("../profiles/rl-compare-tiny.toml")),
    ("flowrl-qwen2.5-7b", include_str!("../profiles/flowrl-qwen2.5-7b.toml")),
    ("grpo-qwen2.5-7b", include_str!("../profiles/grpo-qwen2.5-7b.toml")),
    ("flowrl-qwen2.5-1.5b-80gb", include_str!("../profiles/flowrl-qwen2.5-1.5b-80gb.toml")),
    ("grpo-qwen2.5-1.5b-80gb", include_str!("../profiles/grpo-qwen2.5-1.5b-80gb.toml")),
    ("flowrl-qwen2.5-0.5b-24gb", include_str!("../profiles/flowrl-qwen2.5-0.5b-24gb.toml")),
    ("grpo-qwen2.5-0.5b-24gb", include_str!("../profiles/grpo-qwen2.5-0.5b-24gb.toml")),
    ("adaptllm-tiny", include_str!("../profiles/adaptllm-tiny.toml")),
    ("adaptllm-llama-7b", include_str!("../profiles/adaptllm-llama-7b.toml")),
    ("adamllm-tiny", include_str!("../profiles/adamllm-tiny.toml")),
    ("adamllm-qwen2-vl-2b", include_str!("../profiles/adamllm-qwen2-vl-2b.toml")),
    ("toedit-tiny", include_str!("../profiles/toedit-tiny.toml")),
    ("toedit-iterated-tiny", include_str!("../profiles/toedit-iterated-tiny.toml")),
    ("toedit-qwen2-0.5b", include_str!("../profiles/toedit-qwen2-0.5b.toml")),
    ("instruct-pt-tiny", include_str!("../profiles/instruct-pt-tiny.toml")),
    ("instruct-pt-llama3-8b", include_str!("../profiles/instruct-pt-llama3-8b.toml")),
    ("still3-tool-tiny", include_str!("../profiles/still3-tool-tiny.toml")),
    ("still3-tool-1.5b", include_str!("../profiles/still3-tool-1.5b.toml")),
    ("diffusion-ood-tiny", include_str!("../profiles/diffusion-ood-tiny.toml")),
    ("diffusion-ood-roberta-large", include_str!("../profiles/diffusion-ood-roberta-large.toml")),
    ("uprise-tiny", include_str!("../profiles/uprise-tiny.toml")),
    ("uprise-bert-base", include_str!("../profiles/uprise-bert-base.toml")),
];

/// The profile a bare `retort run` starts.
pub const DEFAULT_PROFILE: &str = "flowrl-vs-grpo-tiny";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Names the run folder: `runs/<name>-<YYYYMMDD-HHMMSS>`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Every random draw of the run flows from this seed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// "auto" | "cpu" | "cuda:N" | "metal".
    #[serde(default = "auto")]
    pub device: String,
    /// "auto" | "f32" | "bf16" | "f16".
    #[serde(default = "auto")]
    pub dtype: String,
    /// Paper-scale profiles need real checkpoints and a GPU; `retort profiles` marks them.
    #[serde(default)]
    pub paper_scale: bool,
    /// The GPU a paper-scale profile needs, in words with the preflight's estimate (every
    /// paper-scale preset states it; `retort profiles` shows it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu: String,
}

fn default_seed() -> u64 {
    0
}

fn auto() -> String {
    "auto".to_string()
}

#[derive(Debug)]
pub struct StageEntry {
    pub name: String,
    pub kind: &'static str,
    pub config: Box<dyn StageConfig>,
    /// Keys written under an old name: (as written, current name), relative to the stage.
    pub deprecated: Vec<(String, String)>,
}

impl StageEntry {
    /// One line per key written under an old name ("stage `grpo`: `task_options` is a
    /// deprecated name of `options`; …"): the run's log carries them when the stage starts.
    pub fn deprecation_lines(&self) -> Vec<String> {
        self.deprecated
            .iter()
            .map(|(old, new)| format!("stage `{}`: `{old}` is a deprecated name of `{new}`; it still works, but write `{new}`", self.name))
            .collect()
    }
}

#[derive(Debug)]
pub struct Profile {
    pub run: RunSection,
    pub stages: Vec<StageEntry>,
}

/// A profile mistake, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileError {
    /// The file, or `--set` for an override, or `preset NAME`.
    pub origin: String,
    /// 1-based line and column, when the problem has a place in a file.
    pub at: Option<(usize, usize)>,
    /// The key path, e.g. `stage.sft.lr`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ProfileError {}

impl Profile {
    /// A preset name or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Profile::parse(text, &format!("preset {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        let looks_like_path = name_or_path.ends_with(".toml") || name_or_path.contains('/');
        if !looks_like_path || !path.exists() {
            let mut message = if looks_like_path {
                "no such file".to_string()
            } else {
                format!("no preset named `{name_or_path}` and no such file")
            };
            if let Some(s) = suggest(name_or_path, PRESETS.iter().map(|(n, _)| *n)) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            message.push_str(&format!(
                "\nknown presets: {}\n(`retort profiles` lists them with descriptions)",
                PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ));
            return Err(ProfileError { origin: name_or_path.to_string(), at: None, key: None, message });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            origin: name_or_path.to_string(),
            at: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Profile::parse(&text, name_or_path)
    }

    /// Parse and validate profile text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let err_at = |span: Option<Range<usize>>, key: Option<String>, message: String| ProfileError {
            origin: origin.to_string(),
            at: span.map(|s| line_col(text, s.start)),
            key,
            message,
        };
        let value: toml::Table = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            err_at(e.span(), None, format!("TOML syntax error: {msg}"))
        })?;
        let spans = SpanIndex::build(text);
        Profile::from_value(toml::Value::Table(value), &|path, msg| {
            let span = spans.find(path);
            err_at(span, Some(path.to_string()), msg)
        })
    }

    /// Build from a TOML value tree; `error(path, message)` turns a problem at a key path into
    /// a located error (file positions for a file, the override text for `--set`).
    fn from_value(value: toml::Value, error: &dyn Fn(&str, String) -> ProfileError) -> Result<Profile, ProfileError> {
        let toml::Value::Table(mut top) = value else {
            return Err(error("", "a profile must be a TOML table".into()));
        };
        for key in top.keys() {
            if key != "run" && key != "stage" {
                let mut msg = format!("unknown top-level key `{key}` (expected `[run]` and `[[stage]]` tables)");
                if let Some(s) = suggest(key, ["run", "stage"]) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                return Err(error(key, msg));
            }
        }
        let run_value = top.remove("run").ok_or_else(|| error("run", "missing `[run]` table with at least `name`".into()))?;
        let run: RunSection = deserialize_at(run_value, "run", error)?;
        crate::device::DeviceSpec::parse(&run.device).map_err(|e| error("run.device", e))?;
        crate::device::parse_dtype(&run.dtype).map_err(|e| error("run.dtype", e))?;

        let stage_values = match top.remove("stage") {
            None => return Err(error("stage", "a profile needs at least one `[[stage]]`".into())),
            Some(toml::Value::Array(a)) => a,
            Some(_) => return Err(error("stage", "`stage` must be an array of tables: write `[[stage]]`".into())),
        };
        let mut stages: Vec<StageEntry> = Vec::new();
        for (i, v) in stage_values.into_iter().enumerate() {
            let here = format!("stage.{i}");
            let toml::Value::Table(mut table) = v else {
                return Err(error(&here, "each stage must be a table".into()));
            };
            let kind = match table.remove("kind") {
                Some(toml::Value::String(k)) => k,
                Some(_) => return Err(error(&format!("{here}.kind"), "`kind` must be a string".into())),
                None => {
                    return Err(error(
                        &here,
                        format!("stage {} has no `kind`; one of: {}", i + 1, stages::kind_names().join(", ")),
                    ))
                }
            };
            let Some(kind_def) = stages::find_kind(&kind) else {
                let mut msg = format!("unknown stage kind `{kind}`");
                if let Some(hint) = stages::retired_kind(&kind) {
                    msg.push_str(&format!("; {hint}"));
                } else if let Some(s) = suggest(&kind, stages::kind_names()) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                msg.push_str(&format!(" (known kinds: {})", stages::kind_names().join(", ")));
                return Err(error(&format!("{here}.kind"), msg));
            };
            let name = match table.remove("name") {
                Some(toml::Value::String(n)) => n,
                Some(_) => return Err(error(&format!("{here}.name"), "`name` must be a string".into())),
                None => kind.clone(),
            };
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.is_empty() {
                return Err(error(&format!("{here}.name"), format!("stage name `{name}` may only use letters, digits, - and _")));
            }
            if stages.iter().any(|s| s.name == name) {
                return Err(error(
                    &format!("{here}.name"),
                    format!("two stages are named `{name}`; give each a distinct `name = \"...\"`"),
                ));
            }
            // Spans are found by position (`stage.0.lr`); messages name the stage (`stage.sft.lr`).
            let named = |path: &str, msg: String| {
                let mut e = error(path, msg);
                e.key = Some(path.replacen(&here, &format!("stage.{name}"), 1));
                e
            };
            let config = (kind_def.parse)(toml::Value::Table(table)).map_err(|e| {
                let full = if e.path.is_empty() { here.clone() } else { format!("{here}.{}", e.path) };
                named(&full, e.message)
            })?;
            config.validate().map_err(|(key, msg)| named(&format!("{here}.{key}"), msg))?;
            let deprecated = config.deprecated_keys();
            stages.push(StageEntry { name, kind: kind_def.kind, config, deprecated });
        }
        let profile = Profile { run, stages };
        profile.check_references().map_err(|(i, msg)| error(&format!("stage.{i}"), msg))?;
        Ok(profile)
    }

    /// `@name` references must name an earlier stage whose output is what the key needs.
    fn check_references(&self) -> Result<(), (usize, String)> {
        for (i, stage) in self.stages.iter().enumerate() {
            for r in stage.config.references() {
                let (target, _) = crate::stage::split_reference(&r.value).unwrap_or((r.value.as_str(), None));
                let Some(found) = self.stages[..i].iter().find(|s| s.name == target) else {
                    let earlier: Vec<_> = self.stages[..i].iter().map(|s| s.name.as_str()).collect();
                    return Err((
                        i,
                        format!(
                            "stage `{}` refers to `{}` ({}), but no earlier stage is named `{target}` (earlier stages: {})",
                            stage.name,
                            r.value,
                            r.key,
                            if earlier.is_empty() { "none".to_string() } else { earlier.join(", ") }
                        ),
                    ));
                };
                let made = found.config.produces();
                if !made.is_some_and(|m| r.wants.accepts(m)) {
                    return Err((
                        i,
                        format!(
                            "stage `{}`: {} = \"{}\" needs {}, but stage `{target}` ({}) makes {}",
                            stage.name,
                            r.key,
                            r.value,
                            r.wants.describe(),
                            found.kind,
                            made.map_or("no output", |a| a.describe())
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One line per key written under an old name, for `profiles show`.
    pub fn deprecations(&self) -> Vec<String> {
        self.stages.iter().flat_map(StageEntry::deprecation_lines).collect()
    }

    /// The fully resolved profile (defaults filled in) as a TOML value.
    pub fn to_value(&self) -> toml::Value {
        let mut top = toml::Table::new();
        top.insert("run".into(), toml::Value::try_from(&self.run).unwrap_or(toml::Value::Table(Default::default())));
        let stages = self
            .stages
            .iter()
            .map(|s| {
                let mut t = toml::Table::new();
                t.insert("kind".into(), toml::Value::String(s.kind.to_string()));
                t.insert("name".into(), toml::Value::String(s.name.clone()));
                t.extend(s.config.to_table());
                toml::Value::Table(t)
            })
            .collect();
        top.insert("stage".into(), toml::Value::Array(stages));
        toml::Value::Table(top)
    }

    /// The resolved profile as TOML text; parsing it gives the same profile back.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        if !self.run.description.is_empty() {
            s.push_str(&format!("# {}\n", self.run.description.replace('\n', "\n# ")));
        }
        s.push_str(&toml::to_string_pretty(&self.to_value()).unwrap_or_default());
        s
    }

    /// Apply `--set key.path=value` overrides, then validate the result once (so overrides
    /// that only make sense together, like a task's option pairs, can be given together).
    /// The value is read as TOML (`7`, `1e-4`, `true`, `"text"`, `[1, 2]`); anything that does
    /// not parse as TOML is taken as a string. Stages are addressed by name or position:
    /// `stage.sft.lr` or `stage.1.lr`.
    pub fn apply_sets(self, assignments: &[String]) -> Result<Profile, ProfileError> {
        if assignments.is_empty() {
            return Ok(self);
        }
        let mut value = self.to_value();
        // The resolved profile writes current names only; warnings about old ones carry over.
        let mut deprecated: Vec<Vec<(String, String)>> = self.stages.iter().map(|s| s.deprecated.clone()).collect();
        let mut paths: Vec<(String, &str)> = Vec::new();
        for assignment in assignments {
            let origin = format!("--set {assignment}");
            let fail = |key: Option<String>, message: String| ProfileError { origin: origin.clone(), at: None, key, message };
            let Some((path, raw)) = assignment.split_once('=') else {
                return Err(fail(None, "expected key.path=value, e.g. --set run.seed=7".into()));
            };
            let path = path.trim();
            let new_value = parse_override_value(raw.trim());
            let mut parts: Vec<String> = path.split('.').map(str::to_string).collect();
            if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(fail(Some(path.into()), "expected a path like run.seed or stage.<name>.<key>".into()));
            }
            // Resolve a stage name to its index so the override reaches the right table.
            if parts[0] == "stage" {
                let idx = match parts[1].parse::<usize>() {
                    Ok(i) if i < self.stages.len() => i,
                    _ => self.stages.iter().position(|s| s.name == parts[1]).ok_or_else(|| {
                        let names: Vec<_> = self.stages.iter().map(|s| s.name.as_str()).collect();
                        let mut msg = format!("no stage named `{}` (stages: {})", parts[1], names.join(", "));
                        if let Some(s) = suggest(&parts[1], names.iter().copied()) {
                            msg.push_str(&format!("; did you mean `{s}`?"));
                        }
                        fail(Some(path.into()), msg)
                    })?,
                };
                parts[1] = idx.to_string();
                // An old key name sets the key it became.
                let spec = stages::find_kind(self.stages[idx].kind).and_then(|k| k.source);
                let rest = parts[2..].join(".");
                let renamed = spec.into_iter().flat_map(|s| s.alias_paths()).find(|(old, _)| rest == *old || rest.starts_with(&format!("{old}.")));
                if let Some((old, new)) = renamed {
                    let now = format!("{new}{}", &rest[old.len()..]);
                    parts.truncate(2);
                    parts.extend(now.split('.').map(str::to_string));
                    if !deprecated[idx].iter().any(|(o, _)| *o == old) {
                        deprecated[idx].push((old, new));
                    }
                }
            } else if parts[0] != "run" {
                return Err(fail(Some(path.into()), format!("paths start with `run.` or `stage.`, not `{}`", parts[0])));
            }
            set_path(&mut value, &parts, new_value).map_err(|m| fail(Some(path.into()), m))?;
            paths.push((display_path(&parts.join("."), &self), assignment.as_str()));
        }
        let mut profile = Profile::from_value(value, &|p, msg| {
            let key = display_path(p, &self);
            // Name the override that touched the failing key (or its table), else all of them.
            let origin = paths
                .iter()
                .filter(|(set_path, _)| *set_path == key || set_path.starts_with(&format!("{key}.")) || key.starts_with(&format!("{set_path}.")))
                .map(|(_, a)| format!("--set {a}"))
                .collect::<Vec<_>>();
            let origin = if origin.is_empty() {
                paths.iter().map(|(_, a)| format!("--set {a}")).collect::<Vec<_>>().join(" ")
            } else {
                origin.join(" ")
            };
            ProfileError { origin, at: None, key: Some(key), message: msg }
        })?;
        // Old names inside a value set whole (`--set stage.sft.data={ train = 5 }`) were found
        // by the parse itself; keep those too, once.
        for (stage, old) in profile.stages.iter_mut().zip(deprecated) {
            let found = std::mem::replace(&mut stage.deprecated, old);
            for d in found {
                if !stage.deprecated.contains(&d) {
                    stage.deprecated.push(d);
                }
            }
        }
        Ok(profile)
    }

    /// One override; see [`Profile::apply_sets`].
    pub fn apply_set(self, assignment: &str) -> Result<Profile, ProfileError> {
        self.apply_sets(&[assignment.to_string()])
    }
}

/// Turn `stage.1.lr` back into `stage.sft.lr` for messages.
fn display_path(path: &str, profile: &Profile) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() >= 2 && parts[0] == "stage" {
        if let Some(s) = parts[1].parse::<usize>().ok().and_then(|i| profile.stages.get(i)) {
            let mut out = vec!["stage", s.name.as_str()];
            out.extend(&parts[2..]);
            return out.join(".");
        }
    }
    path.to_string()
}

/// A command-line value read as TOML (`7`, `1e-4`, `true`, `"text"`, `[1, 2]`); anything that
/// does not parse as TOML is taken as a plain string.
pub fn parse_override_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(root: &mut toml::Value, parts: &[String], new_value: toml::Value) -> Result<(), String> {
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(part.clone(), new_value);
                    return Ok(());
                }
                t.entry(part.clone()).or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(a) => {
                let idx: usize = part.parse().map_err(|_| format!("`{part}` is not a position in a list"))?;
                let len = a.len();
                let slot = a.get_mut(idx).ok_or_else(|| format!("position {idx} is past the end (length {len})"))?;
                if last {
                    *slot = new_value;
                    return Ok(());
                }
                slot
            }
            _ => return Err(format!("`{}` is not a table", parts[..i].join("."))),
        };
    }
    Ok(())
}

fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    here: &str,
    error: &dyn Fn(&str, String) -> ProfileError,
) -> Result<T, ProfileError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (path, msg) = describe_serde_error(&e);
        let full = if path.is_empty() { here.to_string() } else { format!("{here}.{path}") };
        error(&full, msg)
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Byte spans of every key in a TOML document, by dotted path (`stage.1.lr`), so that
/// errors found after deserializing can still point at a line and column.
struct SpanIndex {
    keys: HashMap<String, Range<usize>>,
}

impl SpanIndex {
    fn build(text: &str) -> SpanIndex {
        let mut keys = HashMap::new();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            Self::walk_table(doc.get_ref(), "", &mut keys);
        }
        SpanIndex { keys }
    }

    fn walk_table(t: &toml::de::DeTable<'_>, prefix: &str, out: &mut HashMap<String, Range<usize>>) {
        for (k, v) in t.iter() {
            let path = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
            out.insert(path.clone(), k.span());
            Self::walk_value(v.get_ref(), &path, v.span(), out);
        }
    }

    fn walk_value(v: &toml::de::DeValue<'_>, path: &str, span: Range<usize>, out: &mut HashMap<String, Range<usize>>) {
        match v {
            toml::de::DeValue::Table(t) => Self::walk_table(t, path, out),
            toml::de::DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let p = format!("{path}.{i}");
                    out.entry(p.clone()).or_insert_with(|| item.span());
                    Self::walk_value(item.get_ref(), &p, item.span(), out);
                }
            }
            _ => {
                out.entry(format!("{path}#value")).or_insert(span);
            }
        }
    }

    /// The span of the key at `path`, or of its nearest existing parent.
    fn find(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path.to_string();
        loop {
            if let Some(s) = self.keys.get(&p) {
                return Some(s.clone());
            }
            match p.rfind('.') {
                Some(i) => p.truncate(i),
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}

/// `KEY=VALUE` pairs (e.g. `--option min_solutions=4`) as a TOML table, values read by
/// [`parse_override_value`]; `flag` names the option in errors.
pub fn parse_key_values(pairs: &[String], flag: &str) -> Result<toml::Table, String> {
    let mut table = toml::Table::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("{flag} {pair}: expected KEY=VALUE"))?;
        table.insert(k.trim().to_string(), parse_override_value(v.trim()));
    }
    Ok(table)
}
