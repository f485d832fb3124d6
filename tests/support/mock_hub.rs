//! A small Hugging Face hub stand-in on loopback for integration tests.
//!
//! It speaks just enough HTTP/1.1 for hf-hub 0.4.3's sync client:
//! - `GET /api/models/{repo}/revision/{rev}` → JSON `{id, sha, siblings}`;
//! - `GET /{repo}/resolve/{rev}/{file}` with or without `Range: bytes=a-[b]`
//!   → 206 + `Content-Range` (or 200), `ETag`, `X-Repo-Commit`;
//! - the same for data set repos under `/api/datasets/…` and `/datasets/{repo}/resolve/…`.
//!   As on the hub, models and data sets are separate namespaces;
//! - `HEAD` on a `resolve` path → the GET's headers without the body (Python's
//!   huggingface_hub asks for a file's metadata that way).
//!
//! Errors carry `X-Error-Code` like the real hub (RepoNotFound,
//! RevisionNotFound, EntryNotFound). Every response closes its connection.
//! The server binds 127.0.0.1 on a free port, serves at most
//! `MAX_CONNECTIONS` connections at once, and stops when dropped or after
//! `LIFETIME`, whichever comes first. Every request is logged for asserts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_CONNECTIONS: usize = 16;
const LIFETIME: Duration = Duration::from_secs(120);
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// One repository the mock serves.
#[derive(Clone, Debug)]
pub struct MockRepo {
    pub id: String,
    pub commit: String,
    /// Revision names (branches, tags) that resolve to `commit`; the commit
    /// itself always resolves.
    pub revisions: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
    /// Listed in `siblings` but answered 404 on download.
    pub ghost_files: Vec<String>,
    /// When set, requests must carry `Authorization: Bearer {token}`.
    pub token: Option<String>,
    /// A data set repository (served under `datasets/`), not a model.
    pub dataset: bool,
}

impl MockRepo {
    pub fn new(id: &str, commit: &str, files: Vec<(&str, Vec<u8>)>) -> Self {
        MockRepo {
            id: id.to_string(),
            commit: commit.to_string(),
            revisions: vec!["main".to_string()],
            files: files.into_iter().map(|(name, bytes)| (name.to_string(), bytes)).collect(),
            ghost_files: Vec::new(),
            token: None,
            dataset: false,
        }
    }

    /// A data set repository.
    pub fn dataset(id: &str, commit: &str, files: Vec<(&str, Vec<u8>)>) -> Self {
        MockRepo { dataset: true, ..MockRepo::new(id, commit, files) }
    }

    fn resolves(&self, revision: &str) -> bool {
        revision == self.commit || self.revisions.iter().any(|r| r == revision)
    }
}

/// The ETag the mock gives a file: FNV-1a of the bytes and the length, in
/// hex. (The real hub uses a git SHA-1 or a SHA-256; any stable id works
/// for the cache, which names blobs after it.)
pub fn etag(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}{:08x}", bytes.len())
}

/// A logged request: method, path, and the headers tests look at.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

pub struct MockHub {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl MockHub {
    pub fn start(repos: Vec<MockRepo>) -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let address = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let repos = Arc::new(repos);
        let accept_thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || accept_loop(listener, repos, stop, log))
        };
        MockHub { address, stop, log, accept_thread: Some(accept_thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, repos: Arc<Vec<MockRepo>>, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<LoggedRequest>>>) {
    let deadline = Instant::now() + LIFETIME;
    let active = Arc::new(AtomicUsize::new(0));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = respond(stream, 503, &[], b"busy");
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (repos, log, active) = (repos.clone(), log.clone(), active.clone());
                workers.push(std::thread::spawn(move || {
                    let _ = serve(stream, &repos, &log);
                    active.fetch_sub(1, Ordering::SeqCst);
                }));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break,
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
}

struct Head {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_head(stream: &TcpStream) -> std::io::Result<Head> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_HEAD_BYTES as u64);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok(Head { method, path, headers })
}

fn serve(stream: TcpStream, repos: &[MockRepo], log: &Mutex<Vec<LoggedRequest>>) -> std::io::Result<()> {
    let head = read_head(&stream)?;
    log.lock().unwrap().push(LoggedRequest {
        method: head.method.clone(),
        path: head.path.clone(),
        range: head.headers.get("range").cloned(),
        authorization: head.headers.get("authorization").cloned(),
    });
    if head.method == "HEAD" && head.path.contains("/resolve/") {
        return serve_resolve(stream, repos, &head);
    }
    if head.method != "GET" {
        return respond(stream, 405, &[], b"GET only");
    }
    if let Some(rest) = head.path.strip_prefix("/api/models/") {
        return serve_info(stream, repos, false, &head, rest);
    }
    if let Some(rest) = head.path.strip_prefix("/api/datasets/") {
        return serve_info(stream, repos, true, &head, rest);
    }
    serve_resolve(stream, repos, &head)
}

/// Find the repo of the given kind whose id `path` starts with, followed by `/{marker}/`.
fn split_repo<'a>(repos: &'a [MockRepo], dataset: bool, path: &str, marker: &str) -> Option<(&'a MockRepo, String)> {
    let (repo_id, rest) = path.split_once(&format!("/{marker}/"))?;
    let repo = repos.iter().find(|r| r.id == repo_id && r.dataset == dataset)?;
    Some((repo, rest.to_string()))
}

fn error_code(code: &str) -> Vec<(&'static str, String)> {
    vec![("X-Error-Code", code.to_string())]
}

fn authorized(repo: &MockRepo, head: &Head) -> bool {
    match &repo.token {
        None => true,
        Some(token) => head.headers.get("authorization") == Some(&format!("Bearer {token}")),
    }
}

fn serve_info(stream: TcpStream, repos: &[MockRepo], dataset: bool, head: &Head, rest: &str) -> std::io::Result<()> {
    let Some((repo, revision)) = split_repo(repos, dataset, rest, "revision") else {
        return respond(stream, 404, &error_code("RepoNotFound"), b"Repository not found");
    };
    if !authorized(repo, head) {
        return respond(stream, 401, &[], b"Invalid credentials");
    }
    let revision = revision.replace("%2F", "/");
    if !repo.resolves(&revision) {
        return respond(stream, 404, &error_code("RevisionNotFound"), b"Invalid rev id");
    }
    let siblings: Vec<serde_json::Value> = repo
        .files
        .iter()
        .map(|(name, _)| name.clone())
        .chain(repo.ghost_files.iter().cloned())
        .map(|name| serde_json::json!({ "rfilename": name }))
        .collect();
    let body = serde_json::json!({ "id": repo.id, "sha": repo.commit, "siblings": siblings }).to_string();
    respond(stream, 200, &[("Content-Type", "application/json".to_string())], body.as_bytes())
}

fn serve_resolve(stream: TcpStream, repos: &[MockRepo], head: &Head) -> std::io::Result<()> {
    let path = head.path.trim_start_matches('/');
    let (dataset, path) = match path.strip_prefix("datasets/") {
        Some(path) => (true, path),
        None => (false, path),
    };
    let Some((repo, rest)) = split_repo(repos, dataset, path, "resolve") else {
        return respond(stream, 404, &error_code("RepoNotFound"), b"Repository not found");
    };
    if !authorized(repo, head) {
        return respond(stream, 401, &[], b"Invalid credentials");
    }
    let (revision, file) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let revision = revision.replace("%2F", "/");
    if !repo.resolves(&revision) {
        return respond(stream, 404, &error_code("RevisionNotFound"), b"Invalid rev id");
    }
    let Some((_, bytes)) = repo.files.iter().find(|(name, _)| name == file) else {
        return respond(stream, 404, &error_code("EntryNotFound"), b"Entry not found");
    };
    let mut headers = vec![("ETag", format!("\"{}\"", etag(bytes))), ("X-Repo-Commit", repo.commit.clone())];
    match head.headers.get("range").and_then(|range| parse_range(range, bytes.len())) {
        Some((start, end)) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{}", bytes.len())));
            respond(stream, 206, &headers, &bytes[start..=end])
        }
        None if bytes.is_empty() => {
            headers.push(("Content-Range", "bytes */0".to_string()));
            respond(stream, 200, &headers, bytes)
        }
        None if head.method == "HEAD" => respond_head(stream, &headers, bytes.len()),
        None => respond(stream, 200, &headers, bytes),
    }
}

/// `bytes=a-` or `bytes=a-b` within a file of `len` bytes → inclusive range.
fn parse_range(range: &str, len: usize) -> Option<(usize, usize)> {
    let spec = range.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: usize = start.parse().ok()?;
    let end: usize = if end.is_empty() { len.checked_sub(1)? } else { end.parse::<usize>().ok()?.min(len.checked_sub(1)?) };
    (start <= end).then_some((start, end))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    }
}

fn respond(mut stream: TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    stream.write_all(head_text(status, headers, body.len()).as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// A 200 to a HEAD request: the length of the body a GET would send, and no body.
fn respond_head(mut stream: TcpStream, headers: &[(&str, String)], len: usize) -> std::io::Result<()> {
    stream.write_all(head_text(200, headers, len).as_bytes())?;
    stream.flush()
}

fn head_text(status: u16, headers: &[(&str, String)], len: usize) -> String {
    let mut head = format!("HTTP/1.1 {status} {}\r\nContent-Length: {len}\r\nConnection: close\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}
