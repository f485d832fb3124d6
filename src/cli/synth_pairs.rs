//! `retort synth pair-accuracy PAIRS.jsonl... --encyclopedia DIR [--json]`: the pairs an
//! instruction synthesizer wrote (the `instruct` method's `pairs.jsonl`) checked against the
//! known facts of a `tiny-encyclopedia` folder: parse rate, pair accuracy and fact coverage.

use crate::synth::tiny_encyclopedia::{pair_report, TinyEncyclopediaConfig, CONFIG_FILE};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// One row of `pairs.jsonl`: the text and its parsed pairs.
fn read_rows(path: &Path) -> Result<Vec<(String, Vec<(String, String)>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        let Some(context) = v.get("context").and_then(|c| c.as_str()) else {
            bail!("{at}: no string `context` (write pairs.jsonl with the instruct option pairs_context = true)");
        };
        let list = v.get("qa_list").and_then(|l| l.as_array()).with_context(|| format!("{at}: no `qa_list` list"))?;
        let mut pairs = Vec::with_capacity(list.len());
        for (j, p) in list.iter().enumerate() {
            match p.as_array().map(|a| a.as_slice()) {
                Some([q, a]) if q.is_string() && a.is_string() => pairs.push((q.as_str().unwrap_or("").to_string(), a.as_str().unwrap_or("").to_string())),
                _ => bail!("{at}: qa_list[{j}] must be [question, answer], two strings"),
            }
        }
        rows.push((context.to_string(), pairs));
    }
    Ok(rows)
}

pub fn cmd_pair_accuracy(inputs: &[String], encyclopedia: Option<&Path>, json: bool) -> Result<()> {
    let Some(dir) = encyclopedia else { bail!("pair-accuracy needs --encyclopedia DIR (the tiny-encyclopedia output the texts came from)") };
    if inputs.is_empty() {
        bail!("pair-accuracy needs the instruct method's pairs.jsonl as INPUT");
    }
    let cfg_path = dir.join(CONFIG_FILE);
    let cfg: TinyEncyclopediaConfig = serde_json::from_str(&std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {} (is {} a tiny-encyclopedia output?)", cfg_path.display(), dir.display()))?)
        .with_context(|| format!("{}: not a tiny-encyclopedia configuration", cfg_path.display()))?;
    let mut rows = Vec::new();
    for input in inputs {
        rows.extend(read_rows(Path::new(input))?);
    }
    let report = pair_report(&cfg, rows.iter().map(|(c, p)| (c.as_str(), p.as_slice())));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let known = report.texts - report.unknown_texts;
    let pct = |n: u64, d: u64| if d > 0 { 100.0 * n as f64 / d as f64 } else { 0.0 };
    println!("texts             {} ({} not in the encyclopedia)", report.texts, report.unknown_texts);
    println!("with ≥ 1 pair     {} ({:.1} %)", report.texts_with_pairs, pct(report.texts_with_pairs, known));
    println!("pairs             {} ({:.2} a text)", report.pairs, if known > 0 { report.pairs as f64 / known as f64 } else { 0.0 });
    println!("correct           {} ({:.1} %)", report.correct, 100.0 * report.accuracy);
    println!("wrong answer      {} ({:.1} %)", report.wrong, pct(report.wrong, report.pairs));
    println!("unknown question  {} ({:.1} %)", report.unrecognised, pct(report.unrecognised, report.pairs));
    println!("fact coverage     {:.1} % of each entity's facts stated by a correct pair", 100.0 * report.fact_coverage);
    Ok(())
}
