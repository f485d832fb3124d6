//! `retort pull` against a mock hub over real HTTP on loopback.
//! Every test passes an explicit `HubConfig` (endpoint, cache, token), so
//! tests run in parallel without touching the process environment.

#[path = "support/mock_hub.rs"]
mod mock_hub;

use mock_hub::{etag, MockHub, MockRepo};
use retort::hub::{glob_match, pull, HubConfig, PullProgress, PullRequest, RepoKind};
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
    assert_eq!(
        error,
        "none of the 4 files of org/tiny match --include [\"*.bin\"]; \
         the files there are: config.json, tokenizer.json, model.safetensors, sub/extra.json"
    );
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
            "nothing is cached for model org/absent@v2 in {}; pull it while online (`retort pull org/absent`) or unset HF_HUB_OFFLINE",
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
    assert_eq!(error, format!("no such model org/nope on {} (if it is private, set HF_TOKEN)", hub.endpoint()));
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

// ---- Data set repositories ------------------------------------------------------------------

const DATA_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// Seeded bytes standing in for a Parquet shard (the pull moves bytes; it never parses them).
fn parquet_bytes() -> Vec<u8> {
    let mut rng = Rng::new(7);
    (0..200_000).map(|_| rng.below(256) as u8).collect()
}

fn finance_dataset() -> MockRepo {
    MockRepo::dataset(
        "org/finance",
        DATA_COMMIT,
        vec![
            ("README.md", b"---\nlicense: mit\n---\n# finance\n".to_vec()),
            ("data/train-00000-of-00001.parquet", parquet_bytes()),
            ("FiQA_SA/test.json", br#"{"input": "x", "label": 1}"#.to_vec()),
        ],
    )
}

fn dataset_request(spec: &str, include: &[&str]) -> PullRequest {
    PullRequest { kind: RepoKind::Dataset, ..request(spec, include) }
}

#[test]
fn dataset_pull_lands_in_the_datasets_cache_layout() {
    let repo = finance_dataset();
    let hub = MockHub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let (result, events) = run(&config, &dataset_request("org/finance", &[]));
    let snapshot = result.unwrap();

    let folder = cache.path().join("datasets--org--finance");
    assert_eq!(snapshot, folder.join("snapshots").join(DATA_COMMIT));
    assert_eq!(std::fs::read_to_string(folder.join("refs/main")).unwrap(), DATA_COMMIT);
    for (name, bytes) in &repo.files {
        let pointer = snapshot.join(name);
        assert_eq!(&std::fs::read(&pointer).unwrap(), bytes, "{name}");
        assert!(std::fs::read_link(&pointer).unwrap().is_relative(), "{name}");
        let blob = folder.join("blobs").join(etag(bytes));
        assert_eq!(std::fs::canonicalize(&pointer).unwrap(), std::fs::canonicalize(&blob).unwrap());
    }
    // Nothing under the models namespace; the hub was asked through its data set paths.
    let top: Vec<String> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(top, vec!["datasets--org--finance"]);
    let paths: Vec<String> = hub.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[0], "/api/datasets/org/finance/revision/main");
    assert!(paths[1..].iter().all(|p| p.starts_with("/datasets/org/finance/resolve/main/")), "{paths:?}");
    // Byte progress for the shard, as for a model's weights.
    let shard = events
        .iter()
        .filter_map(|e| match e {
            PullProgress::FileBytes { file, done, total } if file.ends_with(".parquet") => Some((*done, *total)),
            _ => None,
        })
        .last();
    assert_eq!(shard, Some((200_000, 200_000)));
}

#[test]
fn dataset_include_filters_and_an_empty_match_lists_the_files() {
    let hub = MockHub::start(vec![finance_dataset()]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let snapshot = run(&config, &dataset_request("org/finance", &["FiQA_SA/*"])).0.unwrap();
    assert_eq!(files_under(&snapshot), vec!["FiQA_SA/test.json"]);
    let fetched: Vec<String> = hub.requests().into_iter().map(|r| r.path).filter(|p| p.contains("/resolve/")).collect();
    assert!(!fetched.is_empty() && fetched.iter().all(|p| p.ends_with("/FiQA_SA/test.json")), "{fetched:?}");

    let error = run(&config, &dataset_request("org/finance", &["*.parquet"])).0.unwrap_err();
    assert_eq!(
        error,
        "none of the 3 files of org/finance match --include [\"*.parquet\"]; \
         the files there are: README.md, data/train-00000-of-00001.parquet, FiQA_SA/test.json"
    );
    // Offline, the same mistake lists what the cache holds.
    let offline = HubConfig { offline: true, ..config };
    let error = run(&offline, &dataset_request("org/finance", &["*.parquet"])).0.unwrap_err();
    assert!(error.contains("matching --include [\"*.parquet\"] (the files there are: FiQA_SA/test.json)"), "{error}");
}

#[test]
fn dataset_offline_uses_the_cache_and_names_a_miss() {
    let mut model_of_same_name = tiny_repo();
    model_of_same_name.id = "org/finance".to_string();
    let hub = MockHub::start(vec![finance_dataset(), model_of_same_name]);
    let cache = tempfile::tempdir().unwrap();
    let online = HubConfig::new(hub.endpoint(), cache.path());
    let pulled = run(&online, &dataset_request("org/finance", &[])).0.unwrap();
    let requests_before = hub.requests().len();

    let offline = HubConfig { offline: true, ..online.clone() };
    let (result, events) = run(&offline, &dataset_request("org/finance", &["data/**"]));
    assert_eq!(result.unwrap(), pulled);
    assert!(matches!(&events[0], PullProgress::Resolved { files, .. } if files == &["data/train-00000-of-00001.parquet"]));
    assert_eq!(hub.requests().len(), requests_before, "offline must not touch the network");

    // The model namespace is separate: a cached data set is no cached model of that name.
    let error = run(&offline, &request("org/finance", &[])).0.unwrap_err();
    assert!(error.starts_with("nothing is cached for model org/finance@main"), "{error}");
    let error = run(&offline, &dataset_request("org/absent", &[])).0.unwrap_err();
    assert_eq!(
        error,
        format!(
            "nothing is cached for dataset org/absent@main in {}; pull it while online (`retort pull --dataset org/absent`) or unset HF_HUB_OFFLINE",
            cache.path().display()
        )
    );
}

#[test]
fn asking_in_the_wrong_namespace_says_which_one_has_it() {
    let hub = MockHub::start(vec![tiny_repo(), finance_dataset()]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let endpoint = hub.endpoint();

    let error = run(&config, &dataset_request("org/tiny", &[])).0.unwrap_err();
    assert_eq!(
        error,
        format!("no such dataset org/tiny on {endpoint}, but a model of that name exists: drop --dataset (in a profile: `dataset = false`) to pull it")
    );
    let error = run(&config, &request("org/finance", &[])).0.unwrap_err();
    assert_eq!(
        error,
        format!("no such model org/finance on {endpoint}, but a dataset of that name exists: add --dataset (in a profile: `dataset = true`) to pull it")
    );
    let error = run(&config, &dataset_request("org/nowhere", &[])).0.unwrap_err();
    assert_eq!(error, format!("no such dataset org/nowhere on {endpoint} (if it is private, set HF_TOKEN)"));
    // The probe is one API call to the other namespace, and nothing was cached.
    assert!(hub.requests().iter().any(|r| r.path == "/api/models/org/tiny/revision/main"));
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn dataset_token_revision_and_resume_work_as_for_models() {
    let mut private = finance_dataset();
    private.token = Some("hf_secret".to_string());
    let hub = MockHub::start(vec![private]);
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig::new(hub.endpoint(), cache.path());
    let error = run(&config, &dataset_request("org/finance", &[])).0.unwrap_err();
    assert!(error.contains("/api/datasets/org/finance/revision/main answered 401: token needed: set HF_TOKEN"), "{error}");

    let config = HubConfig { token: Some("hf_secret".to_string()), ..config };
    let error = run(&config, &dataset_request("org/finance@v9", &[])).0.unwrap_err();
    assert_eq!(error, "no such revision `v9` in org/finance; check the branch, tag or commit after `@`");

    // Half a shard from an interrupted run: the pull asks for the rest only.
    let shard = parquet_bytes();
    let blobs = cache.path().join("datasets--org--finance/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = shard.len() / 2;
    std::fs::write(blobs.join(format!("{}.part", etag(&shard))), &shard[..half]).unwrap();
    let snapshot = run(&config, &dataset_request("org/finance", &["data/*"])).0.unwrap();
    assert_eq!(std::fs::read(snapshot.join("data/train-00000-of-00001.parquet")).unwrap(), shard);
    let ranges: Vec<String> = hub.requests().iter().filter_map(|r| r.range.clone()).collect();
    assert!(ranges.contains(&format!("bytes={half}-")), "{ranges:?}");
}

fn python_with_huggingface_hub() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("RETORT_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python").display().to_string(), "python3".into()],
    };
    candidates.into_iter().find(|py| {
        std::process::Command::new(py).args(["-c", "import huggingface_hub"]).output().is_ok_and(|o| o.status.success())
    })
}

/// Skips with a reason; under `CI=true`, where the CI installs Python with transformers (and so
/// huggingface_hub), a skip would hide a broken setup, so it fails instead.
fn skip(reason: &str) {
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI must run this check, but: {reason}");
    eprintln!("SKIPPED: {reason}");
}

/// Asks Python's huggingface_hub (the reference for the cache layout) what it finds in `cache`.
const HF_CACHE_PROBE: &str = r#"
import json, sys
from huggingface_hub import try_to_load_from_cache, scan_cache_dir
cache, repo, files = sys.argv[1], sys.argv[2], sys.argv[3:]
info = scan_cache_dir(cache)
print(json.dumps({
    "as_dataset": [try_to_load_from_cache(repo, f, cache_dir=cache, repo_type="dataset") for f in files],
    "as_model": [try_to_load_from_cache(repo, f, cache_dir=cache) for f in files],
    "warnings": [str(w) for w in info.warnings],
    "repos": [{
        "id": r.repo_id, "type": r.repo_type,
        "revisions": [{
            "commit": v.commit_hash, "refs": sorted(v.refs),
            "files": sorted([str(f.file_path.relative_to(v.snapshot_path)), f.size_on_disk] for f in v.files),
        } for v in r.revisions],
    } for r in info.repos],
}))
"#;

#[test]
fn huggingface_hub_finds_a_pulled_dataset_in_its_cache() {
    let Some(python) = python_with_huggingface_hub() else {
        skip("no python with huggingface_hub (set RETORT_PYTHON; pip install huggingface_hub)");
        return;
    };
    let repo = finance_dataset();
    let hub = MockHub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let snapshot = run(&HubConfig::new(hub.endpoint(), cache.path()), &dataset_request("org/finance", &[])).0.unwrap();

    let names: Vec<&str> = repo.files.iter().map(|(n, _)| n.as_str()).collect();
    let out = std::process::Command::new(&python)
        .args(["-c", HF_CACHE_PROBE, cache.path().to_str().unwrap(), "org/finance"])
        .args(&names)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let expected: Vec<String> = names.iter().map(|n| snapshot.join(n).display().to_string()).collect();
    assert_eq!(found["as_dataset"], serde_json::json!(expected));
    assert_eq!(found["as_model"], serde_json::json!(vec![serde_json::Value::Null; names.len()]));
    assert_eq!(found["warnings"], serde_json::json!([]));
    let mut files: Vec<(String, usize)> = repo.files.iter().map(|(n, b)| (n.clone(), b.len())).collect();
    files.sort();
    assert_eq!(
        found["repos"],
        serde_json::json!([{
            "id": "org/finance",
            "type": "dataset",
            "revisions": [{ "commit": DATA_COMMIT, "refs": ["main"], "files": files }],
        }])
    );
}

#[test]
fn the_binary_pulls_a_dataset_and_a_profile_stage_hands_it_on_as_text() {
    let d = tempfile::tempdir().unwrap();
    let hub = MockHub::start(vec![finance_dataset(), tiny_repo()]);

    let help = ok(retort_with_hub(d.path(), &hub.endpoint()).args(["pull", "--help"]).output().unwrap());
    assert!(help.contains("--dataset") && help.contains("retort pull --dataset AdaptLLM/finance-tasks --include 'FiQA_SA/*'"), "{help}");

    let printed = ok(retort_with_hub(d.path(), &hub.endpoint())
        .args(["pull", "--dataset", "org/finance", "--include", "data/*"])
        .output()
        .unwrap());
    let snapshot = d.path().join("hub/datasets--org--finance/snapshots").join(DATA_COMMIT);
    assert_eq!(PathBuf::from(printed.trim()), snapshot);
    assert_eq!(files_under(&snapshot), vec!["data/train-00000-of-00001.parquet"]);

    // The wrong namespace from the command line: a clear error, exit status 1, no snapshot.
    let out = retort_with_hub(d.path(), &hub.endpoint()).args(["pull", "--dataset", "org/tiny"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such dataset org/tiny") && stderr.contains("a model of that name exists"), "{stderr}");

    // A profile: the data set stage's output is the snapshot, recorded as the stage's output.
    let profile = d.path().join("corpus.toml");
    let pull_stage = "[[stage]]\nkind = \"pull\"\nname = \"corpus\"\nrepo = \"org/finance\"\ndataset = true\ninclude = [\"README.md\"]\n";
    std::fs::write(&profile, format!("[run]\nname = \"corpus\"\n\n{pull_stage}")).unwrap();
    ok(retort_with_hub(d.path(), &hub.endpoint()).args(["run", profile.to_str().unwrap(), "--headless"]).output().unwrap());
    let run_dir = std::fs::read_dir(d.path().join("runs")).unwrap().next().unwrap().unwrap().path();
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["stages"][0]["output"], snapshot.display().to_string());
    assert!(snapshot.join("README.md").is_file());

    // `@corpus` is text data: a key that needs a model folder refuses it before any work.
    let eval_stage = "[[stage]]\nkind = \"eval\"\nname = \"eval\"\nmodels = [\"@corpus\"]\ntask = \"countdown\"\n";
    std::fs::write(&profile, format!("[run]\nname = \"corpus\"\n\n{pull_stage}\n{eval_stage}")).unwrap();
    let out = retort_with_hub(d.path(), &hub.endpoint()).args(["run", profile.to_str().unwrap(), "--headless"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs a model folder") && stderr.contains("stage `corpus` (pull) makes text data (a `synth` stage, or a `pull` with `dataset = true`)"),
        "{stderr}"
    );
}

/// Python's huggingface_hub downloads `files` of a data set from `endpoint` into `cache`.
const HF_DOWNLOAD: &str = r#"
import sys
from huggingface_hub import hf_hub_download
endpoint, cache, repo, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
for f in files:
    print(hf_hub_download(repo, f, repo_type="dataset", cache_dir=cache, endpoint=endpoint, token=False))
"#;

#[test]
fn a_dataset_downloaded_by_huggingface_hub_is_found_offline() {
    let Some(python) = python_with_huggingface_hub() else {
        skip("no python with huggingface_hub (set RETORT_PYTHON; pip install huggingface_hub)");
        return;
    };
    let repo = finance_dataset();
    let hub = MockHub::start(vec![repo.clone()]);
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&python)
        .args(["-c", HF_DOWNLOAD, &hub.endpoint(), cache.path().to_str().unwrap(), "org/finance"])
        .args(["README.md", "data/train-00000-of-00001.parquet"])
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python_paths: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect();
    let requests_before = hub.requests().len();

    let offline = HubConfig { offline: true, ..HubConfig::new(hub.endpoint(), cache.path()) };
    let (result, events) = run(&offline, &dataset_request("org/finance", &[]));
    let snapshot = result.unwrap();
    assert_eq!(python_paths, vec![snapshot.join("README.md"), snapshot.join("data/train-00000-of-00001.parquet")]);
    assert!(matches!(&events[0], PullProgress::Resolved { commit, files, .. }
        if commit == DATA_COMMIT && files == &["README.md", "data/train-00000-of-00001.parquet"]));
    assert_eq!(std::fs::read(snapshot.join("data/train-00000-of-00001.parquet")).unwrap(), parquet_bytes());
    assert_eq!(hub.requests().len(), requests_before, "offline must not touch the network");

    // Online, retort adds the missing file to Python's snapshot and fetches nothing twice.
    let snapshot = run(&HubConfig::new(hub.endpoint(), cache.path()), &dataset_request("org/finance", &[])).0.unwrap();
    assert_eq!(files_under(&snapshot), vec!["FiQA_SA/test.json", "README.md", "data/train-00000-of-00001.parquet"]);
    let fetched: Vec<String> =
        hub.requests()[requests_before..].iter().filter(|r| r.path.contains("/resolve/")).map(|r| r.path.clone()).collect();
    assert!(fetched.iter().all(|p| p.ends_with("/FiQA_SA/test.json")), "{fetched:?}");
}
