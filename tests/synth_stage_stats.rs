//! A synth stage with `stats = true` through the binary: its `corpus_stats.json` holds the
//! numbers `retort synth stats --json` gives for the same files, bad stats keys are named at
//! profile load, and `retort report` draws the stage's PNGs.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn retort(cwd: &Path, args: &[&str], font_none: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retort"));
    cmd.args(args).env_remove("RETORT_RUNS_DIR").current_dir(cwd);
    if font_none {
        cmd.env("RETORT_FONT", "none");
    }
    cmd.output().unwrap()
}

fn ok(cwd: &Path, args: &[&str], font_none: bool) -> String {
    let out = retort(cwd, args, font_none);
    assert!(out.status.success(), "retort {args:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(cwd: &Path, args: &[&str]) -> String {
    let out = retort(cwd, args, false);
    assert!(!out.status.success(), "retort {args:?} should fail");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()))
}

/// Every number and string equal, except the keys that name files or models (paths differ
/// between the stage and the CLI); floats to 1e-9 relative.
fn same(a: &Value, b: &Value, at: &str) {
    const NAMES: &[&str] = &["inputs", "model", "name", "a", "b"];
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().filter(|k| !NAMES.contains(&k.as_str())).collect();
            let ky: Vec<&String> = y.keys().filter(|k| !NAMES.contains(&k.as_str())).collect();
            assert_eq!(kx, ky, "{at}: keys");
            for k in kx {
                same(&x[k], &y[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: length");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same(p, q, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (p, q) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((p - q).abs() <= 1e-9 * (1.0 + q.abs()), "{at}: {p} vs {q}");
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

const PROFILE: &str = r#"
[run]
name = "st"

[[stage]]
kind = "synth"
name = "human"
method = "tiny-human"
[stage.options]
docs = 25
heldout = 6
vocab = 300

[[stage]]
kind = "synth"
name = "again"
method = "tiny-human"
stats = true
stats_prior = "prior"
stats_compare = ["@human/human.jsonl"]
[stage.options]
docs = 20
heldout = 4
vocab = 300
seed = 11
"#;

#[test]
fn a_stage_with_stats_writes_what_synth_stats_prints_and_report_draws_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["model", "init", "--preset", "tiny", "--out", "prior", "--seed", "3"], false);
    std::fs::write(d.join("p.toml"), PROFILE).unwrap();
    // No font: the stage draws no PNG into its folder (a text-less plot is for `retort report`).
    let log = ok(d, &["run", "p.toml", "--headless", "--runs-dir", "runs"], true);
    let run_dir = std::fs::read_dir(d.join("runs")).unwrap().next().unwrap().unwrap().path();
    let stage = run_dir.join("again");
    assert!(log.contains("again: human: entropy") && log.contains("median PPL") && log.contains("≥ 0.9:"), "{log}");
    let got: Value = serde_json::from_str(&std::fs::read_to_string(stage.join("corpus_stats.json")).unwrap()).unwrap();
    assert!(!stage.join("ppl_hist.png").exists() && !stage.join("token_prob.png").exists(), "no font: no PNG in the stage folder");
    assert_eq!(got["corpora"].as_array().unwrap().len(), 2);
    assert_eq!(got["corpora"][0]["documents"], 20, "the stage's main file (human.jsonl of `again`) comes first");
    assert_eq!(got["corpora"][1]["documents"], 25, "then stats_compare");
    assert_eq!((got["corpora"][0]["name"].as_str(), got["corpora"][1]["name"].as_str()), (Some("human"), Some("human-2")));
    assert!(got["corpora"][0]["prior"]["doc_ppl"]["p50"].as_f64().unwrap() > 1.0);

    // The same files through `retort synth stats --json`.
    let main = stage.join("human.jsonl");
    let other = run_dir.join("human/human.jsonl");
    let want: Value = serde_json::from_str(&ok(d, &["synth", "stats", main.to_str().unwrap(), "--compare", other.to_str().unwrap(), "--prior", "prior", "--json"], true)).unwrap();
    same(&got, &want, "corpus_stats.json");

    // The stage's summary carries the headline numbers.
    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    assert!(events.contains("stats/human/entropy_bits") && events.contains("stats/human-2/doc_ppl_p50"), "summary numbers in events.jsonl");

    // `retort report` draws the stage's PNGs (with or without a font) and lists them.
    let listed = ok(d, &["report", run_dir.to_str().unwrap()], false);
    for name in ["ppl_hist-again.png", "token_prob-again.png"] {
        assert!(listed.contains(name), "{listed}");
        assert_eq!(png_size(&run_dir.join("report").join(name)), (900, 540));
    }
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("(report/ppl_hist-again.png)") && md.contains("(report/token_prob-again.png)"), "{md}");
}

#[test]
fn a_stage_with_a_font_draws_its_pngs_next_to_corpus_stats_json() {
    // Only where a font exists (as `retort report`, the stage draws text-less plots never).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["model", "init", "--preset", "tiny", "--out", "prior", "--seed", "3"], false);
    let out = d.join("o");
    let log = ok(
        d,
        &["synth", "tiny-human", "--out", out.to_str().unwrap(), "--headless", "--set", "docs=8", "--set", "heldout=2", "--set", "stats=true", "--set", "stats_prior=\"prior\""],
        false,
    );
    assert!(out.join("corpus_stats.json").exists(), "{log}");
    if out.join("ppl_hist.png").exists() {
        for name in ["ppl_hist.png", "token_prob.png"] {
            assert_eq!(png_size(&out.join(name)), (900, 540));
        }
    } else {
        eprintln!("SKIPPED: no TrueType font here, so the stage drew no PNG");
    }
}

#[test]
fn bad_stats_keys_are_named_at_profile_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |body: &str| {
        std::fs::write(d.join("p.toml"), format!("[run]\nname = \"x\"\n[[stage]]\nkind = \"synth\"\nname = \"s\"\nmethod = \"tiny-human\"\n{body}\n")).unwrap();
    };
    write("stats = true\nstats_prio = \"m\"");
    let e = err(d, &["run", "p.toml", "--headless", "--runs-dir", "runs"]);
    assert!(e.contains("stats_prio"), "{e}");
    write("stats_prior = \"m\"");
    let e = err(d, &["run", "p.toml", "--headless", "--runs-dir", "runs"]);
    assert!(e.contains("stats_prior") && e.contains("stats = true"), "{e}");
    write("stats = true\nstats_prior = \"@nosuch\"");
    let e = err(d, &["run", "p.toml", "--headless", "--runs-dir", "runs"]);
    assert!(e.contains("stats_prior") && e.contains("nosuch"), "{e}");
    write("stats = true\nstats_compare = [\"missing.jsonl\"]");
    let e = err(d, &["run", "p.toml", "--headless", "--runs-dir", "runs"]);
    assert!(e.contains("missing.jsonl"), "{e}");
    write("stats = true\nstats_prior = \"no-model-here\"");
    let e = err(d, &["run", "p.toml", "--headless", "--runs-dir", "runs"]);
    assert!(e.contains("no-model-here"), "{e}");
    assert!(!d.join("runs").exists() || std::fs::read_dir(d.join("runs")).unwrap().all(|r| !r.unwrap().path().join("s/human.jsonl").exists()), "nothing generated before the error");
}
