//! `retort pull` against a mock hub over real HTTP on loopback.
//! Every test passes an explicit `HubConfig` (endpoint, cache, token), so
//! tests run in parallel without touching the process environment.

#[path = "support/mock_hub.rs"]
mod mock_hub;

use mock_hub::{etag, MockHub, MockRepo};
use retort::hub::{glob_match, pull, HubConfig, PullProgress, PullRequest};
use retort::rng::Rng;
use std::path::{Path, PathBuf};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn safetensors_bytes() -> Vec<u8> {
    let mut rng = Rng::new(42);
    (0..300_000).map(|_| rng.below(256) as u8).collect()
}

fn tiny_repo() -> MockRepo {
    MockRepo::new(
        "org/tiny",
        COMMIT,
        vec![
            ("config.json", br#"{"hidden_size": 8}"#.to_vec()),
            ("tokenizer.json", br#"{"version": "1.0"}"#.to_vec()),
            ("model.safetensors", safetensors_bytes()),
            ("sub/extra.json", b"{}".to_vec()),
        ],
    )
}

fn request(spec: &str, include: &[&str]) -> PullRequest {
    let mut req = PullRequest::parse(spec).unwrap();
    req.include = include.iter().map(|s| s.to_string()).collect();
    req
}

fn run(config: &HubConfig, req: &PullRequest) -> (Result<PathBuf, String>, Vec<PullProgress>) {
    let mut events = Vec::new();
    let result = pull(config, req, &mut |event| events.push(event)).map_err(|e| e.to_string());
    (result, events)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

fn resolve_gets(hub: &MockHub) -> usize {
    hub.requests().iter().filter(|r| r.path.contains("/resolve/")).count()
}

#[test]
fn pull_lands_files_in_the_standard_cache_layout() {
    let repo = tiny_repo();
    let hub = MockHub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let (result, events) = run(&config, &request("org/tiny", &[]));
    let snapshot = result.unwrap();

    let folder = cache.path().join("models--org--tiny");
    assert_eq!(snapshot, folder.join("snapshots").join(COMMIT));
    assert_eq!(std::fs::read_to_string(folder.join("refs/main")).unwrap(), COMMIT);
    for (name, bytes) in &repo.files {
        let pointer = snapshot.join(name);
        assert_eq!(&std::fs::read(&pointer).unwrap(), bytes, "{name}");
        // Snapshot entries are relative symlinks to blobs named by ETag.
        let target = std::fs::read_link(&pointer).unwrap();
        assert!(target.is_relative(), "{target:?}");
        let blob = folder.join("blobs").join(etag(bytes));
        assert_eq!(std::fs::canonicalize(&pointer).unwrap(), std::fs::canonicalize(&blob).unwrap());
    }
    let mut blobs = files_under(&folder.join("blobs"));
    blobs.retain(|name| !name.ends_with(".lock"));
    assert_eq!(blobs.len(), repo.files.len(), "{blobs:?}");

    // Progress: resolution first, per-file byte counts ending at the size, a done per file.
    assert!(matches!(&events[0], PullProgress::Resolved { commit, files, .. } if commit == COMMIT && files.len() == 4));
    let model_bytes: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            PullProgress::FileBytes { file, done, total } if file == "model.safetensors" => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert!(model_bytes.len() >= 2, "{model_bytes:?}");
    assert!(model_bytes.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(*model_bytes.last().unwrap(), (300_000, 300_000));
    let done: Vec<&PullProgress> = events.iter().filter(|e| matches!(e, PullProgress::FileDone { cached: false, .. })).collect();
    assert_eq!(done.len(), 4);
    // Only GETs, and with no token configured no Authorization header.
    assert!(hub.requests().iter().all(|r| r.method == "GET" && r.authorization.is_none()));
}

#[test]
fn second_pull_downloads_nothing() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    run(&config, &request("org/tiny", &[])).0.unwrap();
    let gets_after_first = resolve_gets(&hub);
    let (result, events) = run(&config, &request("org/tiny", &[]));
    result.unwrap();
    assert_eq!(resolve_gets(&hub), gets_after_first);
    assert_eq!(events.iter().filter(|e| matches!(e, PullProgress::FileDone { cached: true, .. })).count(), 4);
}

#[test]
fn include_globs_select_files() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let snapshot = run(&config, &request("org/tiny", &["*.json"])).0.unwrap();
    assert_eq!(files_under(&snapshot), vec!["config.json", "tokenizer.json"]);
    run(&config, &request("org/tiny", &["**/*.json"])).0.unwrap();
    assert_eq!(files_under(&snapshot), vec!["config.json", "sub/extra.json", "tokenizer.json"]);
    assert!(glob_match("**/*.json", "sub/extra.json"));

    let error = run(&config, &request("org/tiny", &["*.bin"])).0.unwrap_err();
    assert_eq!(error, "none of the 4 files of org/tiny match --include [\"*.bin\"]");
}

#[test]
fn named_revision_resolves_and_writes_its_ref() {
    let mut repo = tiny_repo();
    repo.revisions.push("v1".to_string());
    let hub = MockHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let snapshot = run(&config, &request("org/tiny@v1", &["config.json"])).0.unwrap();
    assert!(snapshot.ends_with(COMMIT));
    let refs = cache.path().join("models--org--tiny/refs");
    assert_eq!(std::fs::read_to_string(refs.join("v1")).unwrap(), COMMIT);
    assert!(hub.requests().iter().any(|r| r.path == "/api/models/org/tiny/revision/v1"));
}

#[test]
fn offline_resolves_from_cache_after_a_pull() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let online = HubConfig::new(hub.endpoint(), cache.path());
    let pulled = run(&online, &request("org/tiny", &[])).0.unwrap();
    let requests_before = hub.requests().len();

    let offline = HubConfig { offline: true, ..online.clone() };
    let (result, events) = run(&offline, &request("org/tiny", &["*.json"]));
    assert_eq!(result.unwrap(), pulled);
    assert!(matches!(&events[0], PullProgress::Resolved { files, .. } if files == &["config.json", "tokenizer.json"]));
    // By commit too, and through the request flag instead of the config.
    let mut by_commit = request(&format!("org/tiny@{COMMIT}"), &[]);
    by_commit.offline = true;
    assert_eq!(run(&online, &by_commit).0.unwrap(), pulled);
    assert_eq!(hub.requests().len(), requests_before, "offline must not touch the network");
}

#[test]
fn offline_miss_says_nothing_is_cached() {
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig { offline: true, ..HubConfig::new("http://127.0.0.1:9", cache.path()) };
    let error = run(&config, &request("org/absent@v2", &[])).0.unwrap_err();
    assert_eq!(
        error,
        format!(
            "nothing is cached for org/absent@v2 in {}; pull it while online (`retort pull org/absent`) or unset HF_HUB_OFFLINE",
            cache.path().display()
        )
    );
}

#[test]
fn private_repo_needs_a_token() {
    let mut repo = tiny_repo();
    repo.token = Some("hf_secret".to_string());
    let hub = MockHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let error = run(&config, &request("org/tiny", &[])).0.unwrap_err();
    assert!(error.contains("answered 401: token needed: set HF_TOKEN"), "{error}");

    let with_token = HubConfig { token: Some("hf_secret".to_string()), ..config };
    run(&with_token, &request("org/tiny", &["config.json"])).0.unwrap();
    let authorized = hub.requests().iter().filter(|r| r.authorization.as_deref() == Some("Bearer hf_secret")).count();
    assert!(authorized >= 3, "info + metadata + download should carry the token, got {authorized}");
}

#[test]
fn missing_repo_revision_and_file_are_named() {
    let mut repo = tiny_repo();
    repo.ghost_files.push("ghost.bin".to_string());
    let hub = MockHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());

    let error = run(&config, &request("org/nope", &[])).0.unwrap_err();
    assert_eq!(error, format!("no such repo org/nope on {} (if it is private, set HF_TOKEN)", hub.endpoint()));
    let error = run(&config, &request("org/tiny@nobranch", &[])).0.unwrap_err();
    assert_eq!(error, "no such revision `nobranch` in org/tiny; check the branch, tag or commit after `@`");
    let error = run(&config, &request("org/tiny", &["ghost.bin"])).0.unwrap_err();
    assert_eq!(error, "no such file `ghost.bin` in org/tiny@main");
}

fn closed_port_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn closed_port_reports_no_network_and_the_cached_copy() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let snapshot = run(&HubConfig::new(hub.endpoint(), cache.path()), &request("org/tiny", &[])).0.unwrap();

    let unreachable = HubConfig::new(closed_port_endpoint(), cache.path());
    let error = run(&unreachable, &request("org/tiny", &[])).0.unwrap_err();
    assert!(error.starts_with(&format!("no network: cannot reach {}", unreachable.endpoint)), "{error}");
    assert!(
        error.contains(&format!("a cached copy of org/tiny exists at {}: set HF_HUB_OFFLINE=1", snapshot.display())),
        "{error}"
    );
    let error = run(&unreachable, &request("org/other", &[])).0.unwrap_err();
    assert!(error.contains("no cached copy of org/other exists either"), "{error}");
}

#[test]
fn partial_download_resumes_with_a_range_request() {
    let repo = tiny_repo();
    let model = safetensors_bytes();
    let hub = MockHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let blobs = cache.path().join("models--org--tiny/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = model.len() / 2;
    std::fs::write(blobs.join(format!("{}.part", etag(&model))), &model[..half]).unwrap();

    let config = HubConfig::new(hub.endpoint(), cache.path());
    let (result, events) = run(&config, &request("org/tiny", &["model.safetensors"]));
    let snapshot = result.unwrap();
    assert_eq!(std::fs::read(snapshot.join("model.safetensors")).unwrap(), model);
    let ranges: Vec<String> = hub.requests().iter().filter_map(|r| r.range.clone()).collect();
    assert!(ranges.contains(&format!("bytes={half}-")), "{ranges:?}");
    // The resumed bytes count as done from the start of the transfer.
    let first_real = events.iter().find_map(|e| match e {
        PullProgress::FileBytes { done, .. } if *done > 0 => Some(*done),
        _ => None,
    });
    assert!(first_real.unwrap() >= half as u64);
}

/// The binary with a private Hugging Face home, cache and endpoint.
fn retort_with_hub(home: &Path, endpoint: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_retort"));
    for v in ["HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "RETORT_RUNS_DIR"] {
        c.env_remove(v);
    }
    c.env("HF_HOME", home).env("HF_ENDPOINT", endpoint).current_dir(home);
    c
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pulled_model_is_the_model_that_was_served_and_runs_in_a_profile() {
    // A real tiny model made by `model init`, served by the mock hub, pulled by the binary
    // (command and profile stage), then used like a downloaded checkpoint.
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    ok(retort_with_hub(d.path(), "http://127.0.0.1:9")
        .args(["model", "init", "--preset", "tiny", "--out", src.to_str().unwrap(), "--seed", "3"])
        .output()
        .unwrap());
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    let hub = MockHub::start(vec![MockRepo::new("acme/tiny-countdown", COMMIT, files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect())]);

    let snapshot = PathBuf::from(
        ok(retort_with_hub(d.path(), &hub.endpoint()).args(["pull", "acme/tiny-countdown"]).output().unwrap()).trim(),
    );
    assert!(snapshot.starts_with(d.path().join("hub/models--acme--tiny-countdown/snapshots")), "{}", snapshot.display());
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(snapshot.join(name)).unwrap(), bytes, "{name} differs after the pull");
    }
    // The pulled folder is the same model: same greedy continuation as the source folder.
    let generate = |model: &Path| {
        ok(retort_with_hub(d.path(), &hub.endpoint())
            .args(["generate", model.to_str().unwrap(), "--prompt", "countdown 2 3 4 -> 14\n", "--greedy", "--max-new-tokens", "12"])
            .output()
            .unwrap())
    };
    assert_eq!(generate(&snapshot), generate(&src));

    // A profile whose pull stage feeds an eval stage, with per-file progress events.
    let profile = d.path().join("pulled.toml");
    std::fs::write(
        &profile,
        "[run]\nname = \"pulled\"\n\n[[stage]]\nkind = \"pull\"\nname = \"base\"\nrepo = \"acme/tiny-countdown\"\n\n\
         [[stage]]\nkind = \"eval\"\nname = \"eval\"\nmodels = [\"@base\"]\ntask = \"countdown\"\nn = 4\nk = [1, 4]\nlimit = 3\nmax_new_tokens = 12\n",
    )
    .unwrap();
    ok(retort_with_hub(d.path(), &hub.endpoint()).args(["run", profile.to_str().unwrap(), "--headless"]).output().unwrap());
    let run = std::fs::read_dir(d.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(events.contains("\"event\":\"progress\",\"stage\":\"base\""), "no pull progress in the run's log");
    assert!(run.join("eval/results.json").is_file());

    // Offline, with the hub gone: the cached snapshot is found without any request.
    drop(hub);
    let offline = ok(retort_with_hub(d.path(), "http://127.0.0.1:9").env("HF_HUB_OFFLINE", "1").args(["pull", "acme/tiny-countdown"]).output().unwrap());
    assert_eq!(PathBuf::from(offline.trim()), snapshot);
}
