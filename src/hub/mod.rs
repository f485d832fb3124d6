//! `retort pull`: fetch a model or data set repository from a Hugging Face hub
//! into the standard cache, or resolve it from that cache when offline.
//!
//! The cache layout is the one Python's `huggingface_hub` uses, so both share
//! downloads: `{cache}/models--org--name` (or `datasets--org--name` for a data
//! set, see [`RepoKind`]) with `blobs/{etag}` holding the bytes,
//! `snapshots/{commit}/{file}` are relative symlinks into `blobs/`, and
//! `refs/{revision}` holds the commit a branch or tag pointed at.
//!
//! Downloads go through hf-hub 0.4.3's sync API (`download_with_progress`,
//! never its own progress bar). What it does about interrupted downloads:
//! bytes stream into `blobs/{etag}.part`; a later pull of the same file
//! reopens that part file and asks the server for `Range: bytes={len}-`, so
//! it resumes where the last run stopped (with `max_retries > 0` it also
//! retries within one run from the current position). hf-hub does not check
//! a hash; retort checks the finished size against the server's size. A file
//! already present in the snapshot of the resolved commit is not fetched
//! again.
//!
//! Environment (read only by [`HubConfig::from_env`]; tests pass explicit
//! configs): `HF_ENDPOINT`, `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`,
//! `HF_TOKEN`, `HF_TOKEN_PATH`, `HF_HUB_OFFLINE`.

pub mod stage;

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::api::{Progress, RepoInfo};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Component, Path, PathBuf};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const DEFAULT_REVISION: &str = "main";

/// Where and how to reach the hub and its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL of the hub (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache directory holding `models--org--name` folders.
    pub cache_dir: PathBuf,
    /// Bearer token for private and gated repositories.
    pub token: Option<String>,
    /// Resolve from the cache only (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Extra attempts for a download that fails midway.
    pub max_retries: usize,
}

impl HubConfig {
    /// The configuration Python's huggingface_hub would use in this environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable source:
    /// cache = `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
    /// token = `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `HF_HOME/token`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let hf_home = match set("HF_HOME") {
            Some(home) => PathBuf::from(home),
            None => {
                let cache_root = set("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                    set("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache")
                });
                cache_root.join("huggingface")
            }
        };
        let cache_dir = set("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let token_path = set("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
        let token = set("HF_TOKEN").or_else(|| read_token_file(&token_path)).map(|t| t.trim().to_string());
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));
        let endpoint = set("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig { endpoint: endpoint.trim_end_matches('/').to_string(), cache_dir, token, offline, max_retries: 3 }
    }

    /// A config for `endpoint` and `cache_dir`, online, without token.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        let endpoint: String = endpoint.into();
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            max_retries: 0,
        }
    }
}

fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// huggingface_hub's reading of boolean variables.
fn is_truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true" | "y" | "t")
}

/// The kind of hub repository. Models and data sets live in separate
/// namespaces on the hub (`org/name` can be both), under separate API paths
/// (`/api/models/…` and `/api/datasets/…`, files at `/{repo}/resolve/…` and
/// `/datasets/{repo}/resolve/…`) and in separate cache folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepoKind {
    #[default]
    Model,
    Dataset,
}

impl RepoKind {
    /// `model` or `dataset`, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }

    /// The other namespace, to tell a user who asked in the wrong one.
    fn other(self) -> RepoKind {
        match self {
            RepoKind::Model => RepoKind::Dataset,
            RepoKind::Dataset => RepoKind::Model,
        }
    }

    /// The cache folder prefix huggingface_hub uses (`models--org--name`).
    fn cache_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// hf-hub's name for it, which decides the API and download URLs.
    fn repo_type(self) -> RepoType {
        match self {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        }
    }

    /// The command that pulls `repo` of this kind.
    fn pull_command(self, repo: &str) -> String {
        match self {
            RepoKind::Model => format!("retort pull {repo}"),
            RepoKind::Dataset => format!("retort pull --dataset {repo}"),
        }
    }

    /// How to ask for this kind instead of the other one.
    fn how_to_ask(self) -> &'static str {
        match self {
            RepoKind::Model => "drop --dataset (in a profile: `dataset = false`)",
            RepoKind::Dataset => "add --dataset (in a profile: `dataset = true`)",
        }
    }
}

/// What to pull: `org/name`, an optional revision, and file globs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullRequest {
    pub repo: String,
    /// A model or a data set repository.
    pub kind: RepoKind,
    /// Branch, tag or commit; `main` when absent.
    pub revision: Option<String>,
    /// Globs over repo paths (`*`, `?`, `**`); empty means every file.
    pub include: Vec<String>,
    /// Resolve from the cache only, whatever the config says.
    pub offline: bool,
}

impl PullRequest {
    /// Parse `org/name` or `org/name@revision` (the revision may contain `/`,
    /// e.g. `refs/pr/1`).
    pub fn parse(spec: &str) -> Result<Self, HubError> {
        let bad = |reason: &str| HubError::BadRepoSpec { spec: spec.to_string(), reason: reason.to_string() };
        let (repo, revision) = match spec.split_once('@') {
            Some((_, "")) => return Err(bad("nothing after `@`; write org/name@revision")),
            Some((repo, revision)) => (repo, Some(revision.to_string())),
            None => (spec, None),
        };
        validate_repo_id(repo).map_err(|reason| bad(&reason))?;
        Ok(PullRequest { repo: repo.to_string(), kind: RepoKind::Model, revision, include: Vec::new(), offline: false })
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }
}

fn validate_repo_id(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err("a repo id is `name` or `org/name`, with one `/` at most".to_string());
    }
    for part in parts {
        if part.is_empty() {
            return Err("empty organisation or name".to_string());
        }
        if let Some(bad) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(format!("character {bad:?} is not allowed in a repo id (letters, digits, - _ .)"));
        }
        if part.starts_with('.') || part.contains("..") {
            return Err("a repo id part cannot start with `.` or contain `..`".to_string());
        }
    }
    Ok(())
}

/// Progress of a pull, for the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// The revision resolved to `commit`; these files will be provided.
    Resolved { repo: String, commit: String, files: Vec<String> },
    /// File `index` of `count` starts downloading.
    FileStarted { file: String, index: usize, count: usize },
    /// Bytes of the current file on disk so far (resumed bytes included).
    FileBytes { file: String, done: u64, total: u64 },
    /// The file is in the snapshot; `cached` when nothing was downloaded.
    FileDone { file: String, cached: bool },
}

/// Why a pull failed, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("bad repo `{spec}`: {reason}")]
    BadRepoSpec { spec: String, reason: String },
    #[error("{url} answered {status}: token needed: set HF_TOKEN (or put a token in the token file) with read access to {repo}{gated}")]
    TokenNeeded { url: String, status: u16, repo: String, gated: &'static str },
    #[error("no such {} {repo} on {endpoint}{}", .kind.noun(), other_kind_hint(*.kind, .other_kind_exists))]
    RepoNotFound { repo: String, kind: RepoKind, endpoint: String, other_kind_exists: bool },
    #[error("no such revision `{revision}` in {repo}; check the branch, tag or commit after `@`")]
    RevisionNotFound { repo: String, revision: String },
    #[error("no such file `{file}` in {repo}@{revision}")]
    FileNotFound { repo: String, revision: String, file: String },
    #[error("no network: cannot reach {endpoint} ({detail}); {}", cached_hint(.repo, .cached))]
    NoNetwork { endpoint: String, detail: String, repo: String, cached: Option<PathBuf> },
    #[error("nothing is cached for {} {repo}@{revision} in {cache_dir}{detail}; pull it while online (`{}`) or unset HF_HUB_OFFLINE", .kind.noun(), .kind.pull_command(.repo))]
    NotCached { repo: String, kind: RepoKind, revision: String, cache_dir: PathBuf, detail: String },
    #[error("none of the {count} files of {repo} match --include {include:?}; {}", some_files(.count, .examples))]
    NoFilesMatch { repo: String, count: usize, include: Vec<String>, examples: Vec<String> },
    #[error("{url} answered HTTP {status}: {body}")]
    Http { url: String, status: u16, body: String },
    #[error("downloading `{file}` of {repo} failed: {message}")]
    Download { repo: String, file: String, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn other_kind_hint(kind: RepoKind, other_kind_exists: &bool) -> String {
    if *other_kind_exists {
        let other = kind.other();
        format!(", but a {} of that name exists: {} to pull it", other.noun(), other.how_to_ask())
    } else {
        " (if it is private, set HF_TOKEN)".to_string()
    }
}

/// How many file names a "nothing matched" error shows.
const EXAMPLE_FILES: usize = 8;

fn some_files(count: &usize, examples: &[String]) -> String {
    let more = count.saturating_sub(examples.len());
    let more = if more > 0 { format!(", … ({more} more)") } else { String::new() };
    format!("the files there are: {}{more}", examples.join(", "))
}

fn cached_hint(repo: &str, cached: &Option<PathBuf>) -> String {
    match cached {
        Some(path) => format!("a cached copy of {repo} exists at {}: set HF_HUB_OFFLINE=1 to use it", path.display()),
        None => format!("no cached copy of {repo} exists either; connect and pull again"),
    }
}

/// Make the files of `req` available under one snapshot directory and
/// return it. Online: list the repo at the revision, keep the files matching
/// `req.include`, download those not yet cached. Offline (`req.offline` or
/// `config.offline`): resolve from the cache only.
pub fn pull(config: &HubConfig, req: &PullRequest, progress: &mut dyn FnMut(PullProgress)) -> Result<PathBuf, HubError> {
    validate_repo_id(&req.repo).map_err(|reason| HubError::BadRepoSpec { spec: req.repo.clone(), reason })?;
    if req.offline || config.offline {
        return pull_offline(config, req, progress);
    }
    let api = ApiBuilder::from_cache(Cache::new(config.cache_dir.clone()))
        .with_endpoint(config.endpoint.clone())
        .with_token(config.token.clone())
        .with_progress(false)
        .with_retries(config.max_retries)
        .build()
        .map_err(|error| HubError::Download { repo: req.repo.clone(), file: String::new(), message: error.to_string() })?;
    let repo = api.repo(hub_repo(req, req.kind));
    let info = match fetch_info(config, req, &repo) {
        Err(HubError::RepoNotFound { repo, kind, endpoint, .. }) => {
            let other_kind_exists = exists_as(&api.repo(hub_repo(req, kind.other())));
            return Err(HubError::RepoNotFound { repo, kind, endpoint, other_kind_exists });
        }
        other => other?,
    };
    let files = select_files(req, &info)?;
    progress(PullProgress::Resolved { repo: req.repo.clone(), commit: info.sha.clone(), files: files.clone() });

    let snapshot = repo_folder(config, req.kind, &req.repo).join("snapshots").join(&info.sha);
    for (index, file) in files.iter().enumerate() {
        if snapshot.join(file).exists() {
            progress(PullProgress::FileDone { file: file.clone(), cached: true });
            continue;
        }
        progress(PullProgress::FileStarted { file: file.clone(), index, count: files.len() });
        download_file(config, req, &repo, file, progress)?;
        progress(PullProgress::FileDone { file: file.clone(), cached: false });
    }
    write_ref(config, req, &info.sha)?;
    Ok(snapshot)
}

fn hub_repo(req: &PullRequest, kind: RepoKind) -> Repo {
    Repo::with_revision(req.repo.clone(), kind.repo_type(), req.revision().to_string())
}

/// Whether the hub lists `repo` (at its revision, or at least knows the repo):
/// one small API call, made only to explain a "not found".
fn exists_as(repo: &ApiRepo) -> bool {
    match repo.info_request().call() {
        Ok(_) => true,
        Err(ureq::Error::Status(_, response)) => response.header("X-Error-Code") == Some("RevisionNotFound"),
        Err(ureq::Error::Transport(_)) => false,
    }
}

/// `{cache}/models--org--name` or `{cache}/datasets--org--name`, as Python names it.
pub fn repo_folder(config: &HubConfig, kind: RepoKind, repo: &str) -> PathBuf {
    config.cache_dir.join(format!("{}--{}", kind.cache_prefix(), repo.replace('/', "--")))
}

fn fetch_info(config: &HubConfig, req: &PullRequest, repo: &ApiRepo) -> Result<RepoInfo, HubError> {
    let request = repo.info_request();
    let url = request.url().to_string();
    match request.call() {
        Ok(response) => response.into_json::<RepoInfo>().map_err(|error| HubError::Http {
            url,
            status: 200,
            body: format!("not a repo listing ({error}); is HF_ENDPOINT a Hugging Face hub?"),
        }),
        Err(error) => Err(classify_ureq(config, req, None, error)),
    }
}

/// The repo's files that match the include globs, in the hub's order.
fn select_files(req: &PullRequest, info: &RepoInfo) -> Result<Vec<String>, HubError> {
    let mut files = Vec::new();
    for sibling in &info.siblings {
        let name = &sibling.rfilename;
        if !is_safe_relative_path(name) {
            return Err(HubError::Download {
                repo: req.repo.clone(),
                file: name.clone(),
                message: "the hub listed a path that leaves the repository; refusing it".to_string(),
            });
        }
        if req.include.is_empty() || req.include.iter().any(|pattern| glob_match(pattern, name)) {
            files.push(name.clone());
        }
    }
    if files.is_empty() {
        let examples = info.siblings.iter().take(EXAMPLE_FILES).map(|s| s.rfilename.clone()).collect();
        return Err(HubError::NoFilesMatch {
            repo: req.repo.clone(),
            count: info.siblings.len(),
            include: req.include.clone(),
            examples,
        });
    }
    Ok(files)
}

fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|component| matches!(component, Component::Normal(_)))
}

/// Forwards hf-hub's byte counts as [`PullProgress::FileBytes`], at most
/// about 256 events per file plus the last one.
struct ProgressForwarder<'a> {
    file: String,
    done: u64,
    total: u64,
    last_sent: u64,
    sink: &'a mut dyn FnMut(PullProgress),
}

impl ProgressForwarder<'_> {
    fn send(&mut self) {
        self.last_sent = self.done;
        (self.sink)(PullProgress::FileBytes { file: self.file.clone(), done: self.done, total: self.total });
    }
}

impl Progress for ProgressForwarder<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        self.send();
    }
    fn update(&mut self, size: usize) {
        self.done += size as u64;
        let step = (self.total / 256).max(64 * 1024);
        if self.done >= self.total || self.done - self.last_sent >= step {
            self.send();
        }
    }
    fn finish(&mut self) {
        if self.last_sent != self.done {
            self.send();
        }
    }
}

fn download_file(
    config: &HubConfig,
    req: &PullRequest,
    repo: &ApiRepo,
    file: &str,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<(), HubError> {
    let mut expected_size = 0u64;
    let forwarder = ProgressForwarder {
        file: file.to_string(),
        done: 0,
        total: 0,
        last_sent: 0,
        sink: &mut |event: PullProgress| {
            if let PullProgress::FileBytes { total, .. } = &event {
                expected_size = *total;
            }
            progress(event)
        },
    };
    let path = repo.download_with_progress(file, forwarder).map_err(|error| classify_api(config, req, file, error))?;
    let actual_size = std::fs::metadata(&path).map_err(|source| HubError::Io { path: path.clone(), source })?.len();
    if actual_size != expected_size {
        return Err(HubError::Download {
            repo: req.repo.clone(),
            file: file.to_string(),
            message: format!(
                "{} has {actual_size} bytes but the hub announced {expected_size}; delete it and its blob, then pull again",
                path.display()
            ),
        });
    }
    Ok(())
}

/// `refs/{revision}` = commit, as huggingface_hub writes it (hf-hub writes it
/// too after a download; this covers a pull whose files were all cached).
fn write_ref(config: &HubConfig, req: &PullRequest, commit: &str) -> Result<(), HubError> {
    let ref_path = repo_folder(config, req.kind, &req.repo).join("refs").join(req.revision());
    let io_error = |source| HubError::Io { path: ref_path.clone(), source };
    if let Some(parent) = ref_path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    std::fs::write(&ref_path, commit).map_err(io_error)
}

fn classify_api(config: &HubConfig, req: &PullRequest, file: &str, error: ApiError) -> HubError {
    match error {
        ApiError::RequestError(error) => classify_ureq(config, req, Some(file), *error),
        ApiError::TooManyRetries(inner) => classify_api(config, req, file, *inner),
        ApiError::MissingHeader(header) => HubError::Download {
            repo: req.repo.clone(),
            file: file.to_string(),
            message: format!("the server's answer lacks the `{header}` header; is {} a Hugging Face hub?", config.endpoint),
        },
        ApiError::LockAcquisition(lock) => HubError::Download {
            repo: req.repo.clone(),
            file: file.to_string(),
            message: format!("another process holds {}; wait for it to finish or remove the lock file", lock.display()),
        },
        ApiError::InvalidResume => HubError::Download {
            repo: req.repo.clone(),
            file: file.to_string(),
            message: "the partial download in blobs/*.part is longer than the file; delete the .part file and pull again"
                .to_string(),
        },
        other => HubError::Download { repo: req.repo.clone(), file: file.to_string(), message: other.to_string() },
    }
}

/// Turn an HTTP-level failure into the error that says what to do. The hub
/// names the missing thing in its `X-Error-Code` header (RepoNotFound,
/// RevisionNotFound, EntryNotFound, GatedRepo); without it the status and
/// which request failed decide.
fn classify_ureq(config: &HubConfig, req: &PullRequest, file: Option<&str>, error: ureq::Error) -> HubError {
    let repo = req.repo.clone();
    let revision = req.revision().to_string();
    // Whether the other kind exists is asked by `pull`, which holds the API client.
    let not_found =
        || HubError::RepoNotFound { repo: req.repo.clone(), kind: req.kind, endpoint: config.endpoint.clone(), other_kind_exists: false };
    match error {
        ureq::Error::Status(status, response) => {
            let url = response.get_url().to_string();
            let code = response.header("X-Error-Code").unwrap_or_default().to_string();
            match (status, code.as_str(), file) {
                (_, "RepoNotFound", _) => not_found(),
                (_, "RevisionNotFound", _) => HubError::RevisionNotFound { repo, revision },
                (_, "EntryNotFound", Some(file)) => HubError::FileNotFound { repo, revision, file: file.to_string() },
                (401 | 403, "GatedRepo", _) => {
                    HubError::TokenNeeded { url, status, repo, gated: " (a gated repo: accept its terms on the hub first)" }
                }
                (401 | 403, _, _) => HubError::TokenNeeded { url, status, repo, gated: "" },
                (404, _, Some(file)) => HubError::FileNotFound { repo, revision, file: file.to_string() },
                (404, _, None) if req.revision.is_none() => not_found(),
                (404, _, None) => HubError::RevisionNotFound { repo, revision },
                _ => {
                    let body: String = response.into_string().unwrap_or_default().chars().take(300).collect();
                    HubError::Http { url, status, body }
                }
            }
        }
        ureq::Error::Transport(transport) => {
            let detail = transport.to_string();
            match transport.kind() {
                ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::ProxyConnect => {
                    let cached = resolve_cached(config, req).ok().map(|(path, _)| path);
                    HubError::NoNetwork { endpoint: config.endpoint.clone(), detail, repo, cached }
                }
                _ => HubError::Download { repo, file: file.unwrap_or_default().to_string(), message: detail },
            }
        }
    }
}

fn pull_offline(config: &HubConfig, req: &PullRequest, progress: &mut dyn FnMut(PullProgress)) -> Result<PathBuf, HubError> {
    let (snapshot, commit) = resolve_cached(config, req)?;
    let files = cached_files(&snapshot, req)?;
    progress(PullProgress::Resolved { repo: req.repo.clone(), commit, files: files.clone() });
    for file in files {
        progress(PullProgress::FileDone { file, cached: true });
    }
    Ok(snapshot)
}

/// The cached snapshot for the request's revision, and its commit: through
/// `refs/{revision}`, or directly when the revision is a cached commit.
/// Whether every file of the repo is there cannot be known offline.
pub fn resolve_cached(config: &HubConfig, req: &PullRequest) -> Result<(PathBuf, String), HubError> {
    let not_cached = |detail: String| HubError::NotCached {
        repo: req.repo.clone(),
        kind: req.kind,
        revision: req.revision().to_string(),
        cache_dir: config.cache_dir.clone(),
        detail,
    };
    let folder = repo_folder(config, req.kind, &req.repo);
    let ref_path = folder.join("refs").join(req.revision());
    let commit = match std::fs::read_to_string(&ref_path) {
        Ok(text) => text.trim().to_string(),
        Err(_) => req.revision().to_string(),
    };
    let snapshot = folder.join("snapshots").join(&commit);
    if commit.is_empty() || !is_safe_relative_path(&commit) || !snapshot.is_dir() {
        return Err(not_cached(String::new()));
    }
    let has_file = std::fs::read_dir(&snapshot).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if !has_file {
        return Err(not_cached(format!(" (snapshot {} is empty)", snapshot.display())));
    }
    Ok((snapshot, commit))
}

/// Files under a snapshot (relative, `/`-separated, sorted) matching the globs.
fn cached_files(snapshot: &Path, req: &PullRequest) -> Result<Vec<String>, HubError> {
    let mut all = Vec::new();
    collect_files(snapshot, "", &mut all)?;
    all.sort();
    let matching: Vec<String> =
        all.iter().filter(|f| req.include.is_empty() || req.include.iter().any(|p| glob_match(p, f))).cloned().collect();
    if matching.is_empty() {
        let examples: Vec<String> = all.iter().take(EXAMPLE_FILES).cloned().collect();
        return Err(HubError::NotCached {
            repo: req.repo.clone(),
            kind: req.kind,
            revision: req.revision().to_string(),
            cache_dir: snapshot.to_path_buf(),
            detail: format!(" matching --include {:?} ({})", req.include, some_files(&all.len(), &examples)),
        });
    }
    Ok(matching)
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), HubError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HubError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| HubError::Io { path: dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().to_string();
        let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        // Snapshot entries are symlinks into blobs/; `is_dir` follows them.
        if entry.path().is_dir() {
            collect_files(&entry.path(), &relative, out)?;
        } else {
            out.push(relative);
        }
    }
    Ok(())
}

/// Match a `/`-separated path against a glob: `*` is any run of characters
/// within one segment, `?` one character, and a `**` segment any number of
/// whole segments (none included). So `*.json` matches top-level JSON files
/// only and `**/*.json` every JSON file. (huggingface_hub's `allow_patterns`
/// use fnmatch, where `*` also crosses `/`; write `**/` to get that here.)
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    match_segments(&pattern, &path)
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => match_segment(first, segment) && match_segments(rest, path_rest),
            None => false,
        },
    }
}

fn match_segment(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with one backtrack point (the last `*`).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_repo_and_revision() {
        let req = PullRequest::parse("Qwen/Qwen2.5-0.5B-Instruct@refs/pr/1").unwrap();
        assert_eq!(req.repo, "Qwen/Qwen2.5-0.5B-Instruct");
        assert_eq!(req.revision.as_deref(), Some("refs/pr/1"));
        let req = PullRequest::parse("gpt2").unwrap();
        assert_eq!((req.repo.as_str(), req.revision()), ("gpt2", "main"));
    }

    #[test]
    fn rejects_bad_repo_specs_with_reason() {
        for (spec, needle) in [
            ("a/b/c", "one `/` at most"),
            ("org/", "empty"),
            ("org/na me", "' ' is not allowed"),
            ("org/name@", "nothing after `@`"),
            ("../etc", "cannot start with `.`"),
        ] {
            let error = PullRequest::parse(spec).unwrap_err().to_string();
            assert!(error.starts_with(&format!("bad repo `{spec}`")), "{error}");
            assert!(error.contains(needle), "{spec}: {error}");
        }
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_match("*.json", "config.json"));
        assert!(!glob_match("*.json", "sub/config.json"));
        assert!(glob_match("**/*.json", "config.json"));
        assert!(glob_match("**/*.json", "a/b/config.json"));
        assert!(glob_match("model-?????-of-*.safetensors", "model-00001-of-00002.safetensors"));
        assert!(!glob_match("model-?????-of-*.safetensors", "model-0001-of-00002.safetensors"));
        assert!(glob_match("onnx/**", "onnx/a/b.onnx"));
        assert!(!glob_match("onnx/**", "other/a.onnx"));
        assert!(glob_match("*", "README.md"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("tokenizer*", "tokenizer_config.json"));
    }

    #[test]
    fn config_from_vars_follows_huggingface_hub_precedence() {
        let vars = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            HubConfig::from_vars(move |name| map.get(name).cloned())
        };
        let config = vars(&[("HOME", "/home/u")]);
        assert_eq!(config.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert!(!config.offline);
        let config = vars(&[("HOME", "/home/u"), ("HF_HOME", "/hf"), ("HF_HUB_OFFLINE", "1"), ("HF_ENDPOINT", "http://x:1/")]);
        assert_eq!(config.cache_dir, PathBuf::from("/hf/hub"));
        assert_eq!(config.endpoint, "http://x:1");
        assert!(config.offline);
        let config = vars(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c"), ("HF_TOKEN", " hf_abc\n"), ("HF_HUB_OFFLINE", "0")]);
        assert_eq!(config.cache_dir, PathBuf::from("/c"));
        assert_eq!(config.token.as_deref(), Some("hf_abc"));
        assert!(!config.offline);
    }

    #[test]
    fn token_file_is_read_when_no_variable() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("token"), "hf_file\n").unwrap();
        let home_text = home.path().display().to_string();
        let config = HubConfig::from_vars(|name| (name == "HF_HOME").then(|| home_text.clone()));
        assert_eq!(config.token.as_deref(), Some("hf_file"));
        let with_var = HubConfig::from_vars(|name| match name {
            "HF_HOME" => Some(home_text.clone()),
            "HF_TOKEN" => Some("hf_var".to_string()),
            _ => None,
        });
        assert_eq!(with_var.token.as_deref(), Some("hf_var"));
    }
}
