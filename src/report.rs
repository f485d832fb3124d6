//! `retort report RUN_DIR`: PNG plots of a run's curves and a Markdown summary.
//!
//! Reads `events.jsonl` (metrics by stage and step, stage summaries and tables) and each eval
//! stage's `results.json`, then writes into `RUN_DIR/report/`:
//! - one PNG of small multiples per metric family (`loss.png`, `reward.png`, `eval.png`,
//!   `entropy.png`, `diversity.png`, `length.png`, `policy.png`, `optimizer.png`,
//!   `timing.png`, `ood.png`, `other.png`): one panel per metric, one series per stage, chosen by exact
//!   names and prefixes ([`families`]: a `timing/` metric is never a reward). A training series
//!   is its faint raw values under a debiased EMA line ([`style::SMOOTHING`]), a `…/mean` with
//!   `…/min` and `…/max` companions gets a shaded min–max band, `eval/…` metrics are markers;
//!   the legend is a strip above the grid ([`panels`]). A family without data gets no file;
//! - `passk-<stage>.png`: pass@k against k on a log2 axis, one line per evaluated model (the
//!   curves crossing is the capability-boundary diagnostic of docs/METHODS.md §6.1);
//! - `entropy-position-<stage>.png`: mean token entropy by relative position (§6.2);
//! - `ppl_hist-<stage>.png`, `token_prob-<stage>.png`: the corpus statistics of a synth stage
//!   with `stats = true` (its `corpus_stats.json`, measured under a prior);
//! - the diffusion-OOD plots of `denoise` stages and of eval stages with an `ood` table
//!   (held-out reconstruction loss over steps and over t, score histograms per set; see
//!   [`ood`]);
//!
//! and `RUN_DIR/report.md`: the run's final table and, for a seed paper's preset, the paper's
//! block of `retort papers` beside it; then the stage summaries, the eval tables and the images.
//! Every series has one colour in all the charts of a report ([`style::Palette`], keyed by
//! name: GRPO blue, FlowRL orange, PPO green, SFT grey).
//!
//! Plots are drawn with `plotters` into bitmaps, text with `ab_glyph` (pure Rust: no
//! fontconfig or freetype). It needs a TrueType font file: `RETORT_FONT` names one, else
//! common system locations are tried (DejaVu, Liberation, Noto, FreeFont, macOS Helvetica/
//! Arial). Without one, the plots are drawn without any text (axes, lines and grid only) and
//! report.md says so; `RETORT_FONT=none` forces that mode.

pub mod families;
mod ood;
pub mod panels;
pub mod papers;
pub mod style;

use crate::bus::{Event, Outcome};
use crate::eval::stage::{StageResults, RESULTS_FILE};
use crate::synth::stage_stats::CORPUS_STATS_FILE;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use style::Palette;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What `write_report` produced.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Things the user should know (no font found, unreadable results).
    pub notes: Vec<String>,
}

const FONT_FAMILY: &str = "sans-serif";

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a TrueType font with plotters once per process; false when none is usable.
pub(crate) fn fonts_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let chosen: Vec<PathBuf> = match std::env::var("RETORT_FONT") {
            Ok(v) if v == "none" => return false,
            Ok(v) => vec![PathBuf::from(v)],
            Err(_) => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        for path in chosen {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts as &'static; this runs once per process (OnceLock),
                // so exactly one font file is leaked.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// One named line of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    /// x values are log2 k; ticks are labelled with k.
    pub log2_x: bool,
    /// The report's colours; names it lacks get free ones ([`Palette::with`]).
    pub palette: &'a Palette,
}

/// The data range padded by 5% (and widened when flat, so a constant series is visible).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 0.5 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A tick label: at most three decimals, trailing zeros dropped ("0.5", not "0.500").
fn tick_label(v: f64) -> String {
    if v.abs() >= 1000.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// Draws `chart` as a 900×540 PNG at `path`, written atomically (a failed or interrupted
/// drawing leaves no file behind, not even an empty one). The error names the file once.
pub fn line_chart(path: &Path, chart: &Chart) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |tmp| draw_line_chart(tmp, chart)).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

fn draw_line_chart(path: &Path, chart: &Chart) -> Result<()> {
    let text = fonts_available();
    let palette = chart.palette.with(chart.series.iter().map(|s| s.name.as_str()));
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    // The legend is a column right of the plot, never over the data.
    let legend_w = if text && !chart.series.is_empty() {
        let longest = chart.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0);
        (40 + 8 * longest as u32).clamp(110, 300)
    } else {
        0
    };
    let (plot_area, legend_area) = root.split_horizontally(900 - legend_w);
    let xs = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = padded_range(xs);
    let (y0, y1) = padded_range(ys);
    let mut builder = ChartBuilder::on(&plot_area);
    builder.margin(20).x_label_area_size(if text { 48 } else { 8 }).y_label_area_size(if text { 70 } else { 8 });
    if text {
        builder.caption(chart.title, (FONT_FAMILY, 22));
    }
    let mut ctx = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(plot_err)?;
    let k_label = |v: &f64| format!("{}", 2f64.powf(*v).round());
    let plain = |v: &f64| tick_label(*v);
    let y_tick = |v: &f64| panels::tick_label_at(*v, (y1 - y0) / 10.0);
    let mut mesh = ctx.configure_mesh();
    mesh.max_light_lines(1).light_line_style(RGBColor(245, 245, 245)).bold_line_style(RGBColor(222, 222, 222));
    if text {
        mesh.x_desc(chart.x_label).y_desc(chart.y_label).label_style((FONT_FAMILY, 15)).axis_desc_style((FONT_FAMILY, 17));
        mesh.y_label_formatter(&y_tick);
        if chart.log2_x {
            mesh.x_label_formatter(&k_label).x_labels(((x1 - x0).ceil() as usize + 1).clamp(2, 12));
        } else {
            mesh.x_label_formatter(&plain);
        }
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(plot_err)?;
    for s in chart.series {
        let color = palette.color(&s.name);
        ctx.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))).map_err(plot_err)?;
        // Markers where the points are few, so a single point or a short curve is visible.
        if s.points.len() <= 40 {
            ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(plot_err)?;
        }
    }
    if legend_w > 0 {
        let entries: Vec<(String, RGBColor)> = chart.series.iter().map(|s| (s.name.clone(), palette.color(&s.name))).collect();
        legend_column(&legend_area, &entries)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A legend in one column from the top: a coloured swatch and the name of each series.
fn legend_column(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, entries: &[(String, RGBColor)]) -> Result<()> {
    let font = (FONT_FAMILY, 14).into_font();
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = 60 + 24 * i as i32;
        area.draw(&Rectangle::new([(4, y + 3), (24, y + 11)], color.filled())).map_err(plot_err)?;
        area.draw_text(name, &font.color(&BLACK), (30, y)).map_err(plot_err)?;
    }
    Ok(())
}

/// What the events say about each stage.
#[derive(Default)]
struct StageView {
    kind: String,
    outcome: Option<Outcome>,
    summary: BTreeMap<String, f64>,
    table: Option<String>,
    /// metric → (step, value) in event order.
    metrics: BTreeMap<String, Vec<(f64, f64)>>,
}

fn read_stages(run_dir: &Path) -> Result<(Vec<(String, StageView)>, String, String)> {
    let path = run_dir.join(crate::run::EVENTS);
    let (records, _) = crate::run::read_events(&path).with_context(|| format!("{} is not a run folder (no readable events.jsonl)", run_dir.display()))?;
    let mut order: Vec<String> = Vec::new();
    let mut stages: BTreeMap<String, StageView> = BTreeMap::new();
    let mut title = String::new();
    let mut profile = String::new();
    let touch = |name: &str, order: &mut Vec<String>| {
        if !order.iter().any(|n| n == name) {
            order.push(name.to_string());
        }
    };
    for r in records {
        match r.event {
            Event::RunStarted { run, profile: p, stages: infos, .. } => {
                title = format!("{run} (profile {p})");
                profile = p;
                for s in infos {
                    touch(&s.name, &mut order);
                    stages.entry(s.name).or_default().kind = s.kind;
                }
            }
            Event::StageStarted { stage, kind, .. } => {
                touch(&stage, &mut order);
                stages.entry(stage).or_default().kind = kind;
            }
            Event::Metrics { stage, step, values } => {
                touch(&stage, &mut order);
                let view = stages.entry(stage).or_default();
                for (k, v) in values {
                    if v.is_finite() {
                        view.metrics.entry(k).or_default().push((step as f64, v));
                    }
                }
            }
            Event::StageFinished { stage, outcome, summary, table } => {
                touch(&stage, &mut order);
                let view = stages.entry(stage).or_default();
                view.outcome = Some(outcome);
                view.summary = summary;
                view.table = table;
            }
            _ => {}
        }
    }
    let list = order.into_iter().map(|n| {
        let v = stages.remove(&n).unwrap_or_default();
        (n, v)
    });
    Ok((list.collect(), title, profile))
}

/// The report's colours: its stages in order, then the models its eval stages compared (their
/// labels are mostly stage names already), so each keeps one colour in every chart.
fn report_palette(run_dir: &Path, stages: &[(String, StageView)]) -> Palette {
    let mut names: Vec<String> = stages.iter().map(|(n, _)| n.clone()).collect();
    for (stage, _) in stages.iter().filter(|(_, v)| v.kind == "eval") {
        let text = std::fs::read_to_string(run_dir.join(stage).join(RESULTS_FILE)).unwrap_or_default();
        if let Ok(r) = serde_json::from_str::<StageResults>(&text) {
            names.extend(r.models.iter().map(|m| m.label.clone()));
        }
    }
    Palette::new(names)
}

fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Writes the plots and report.md; returns the files written.
pub fn write_report(run_dir: &Path) -> Result<Written> {
    let (stages, title, profile) = read_stages(run_dir)?;
    let out_dir = run_dir.join("report");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Written::default();
    if !fonts_available() {
        written.notes.push("no TrueType font found (set RETORT_FONT=/path/to/font.ttf): plots have no text".into());
    }
    let mut images: Vec<(String, String)> = Vec::new(); // (caption, file name)
    let palette = report_palette(run_dir, &stages);

    let with_metrics: Vec<(&str, &BTreeMap<String, Vec<(f64, f64)>>)> = stages.iter().map(|(n, v)| (n.as_str(), &v.metrics)).collect();
    for (family, family_panels) in families::panels(&with_metrics) {
        let file = format!("{}.png", family.file());
        let title = format!("{} vs {}", family.title(), family.x());
        panels::draw_panels(&out_dir.join(&file), &title, &family_panels, &palette)?;
        images.push((title, file));
    }

    let mut eval_sections: Vec<(String, StageResults)> = Vec::new();
    for (stage, view) in &stages {
        if view.kind != "eval" {
            continue;
        }
        let path = run_dir.join(stage).join(RESULTS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            written.notes.push(format!("{}: missing, so no pass@k plot for stage {stage}", path.display()));
            continue;
        };
        let results: StageResults = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                written.notes.push(format!("{}: unreadable ({e}); skipped", path.display()));
                continue;
            }
        };
        if results.models.is_empty() {
            // Text sets or OOD detection only: no samples, so no pass@k or entropy plots.
            eval_sections.push((stage.clone(), results));
            continue;
        }
        let curves: Vec<Series> = results
            .models
            .iter()
            .map(|m| Series {
                name: m.label.clone(),
                points: m
                    .report
                    .config
                    .ks
                    .iter()
                    .filter_map(|&k| m.report.aggregate.get(&format!("pass@{k}")).map(|&v| ((k as f64).log2(), v)))
                    .collect(),
            })
            .collect();
        let file = format!("passk-{}.png", safe_name(stage));
        let title = format!("pass@k ({stage})");
        line_chart(&out_dir.join(&file), &Chart { title: &title, x_label: "k (log2 scale)", y_label: "pass@k", series: &curves, log2_x: true, palette: &palette })?;
        images.push((title, file));
        let positions: Vec<Series> = results
            .models
            .iter()
            .map(|m| {
                let bins = m.report.entropy_by_position.len().max(1) as f64;
                let points = m
                    .report
                    .entropy_by_position
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| ((i as f64 + 0.5) / bins, v)))
                    .collect();
                Series { name: m.label.clone(), points }
            })
            .collect();
        if positions.iter().any(|s| !s.points.is_empty()) {
            let file = format!("entropy-position-{}.png", safe_name(stage));
            let title = format!("token entropy by relative position ({stage})");
            line_chart(&out_dir.join(&file), &Chart { title: &title, x_label: "relative position in response", y_label: "entropy (nats)", series: &positions, log2_x: false, palette: &palette })?;
            images.push((title, file));
        }
        eval_sections.push((stage.clone(), results));
    }

    // Corpus statistics a synth stage wrote (`stats = true`): its PNGs, redrawn here.
    for (stage, _) in &stages {
        let path = run_dir.join(stage).join(CORPUS_STATS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let data = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| CorpusPlotData::from_json(&v));
        let Some(data) = data else {
            written.notes.push(format!("{}: unreadable; no corpus statistics plots for stage {stage}", path.display()));
            continue;
        };
        let drawn = data.draw(&out_dir, "", &format!("-{}", safe_name(stage)), &format!(" ({stage})"))?;
        if drawn.is_empty() {
            written.notes.push(format!("{}: no prior (stats_prior), so no corpus statistics plots for stage {stage}", path.display()));
        }
        for (caption, p) in drawn {
            images.push((caption, p.file_name().unwrap_or_default().to_string_lossy().into_owned()));
        }
    }

    ood::plots(run_dir, &stages, &out_dir, &palette, &mut images)?;

    let mut md = markdown(&title, &stages, &eval_sections, &images, &written.notes);
    md = with_result_first(md, run_dir, &profile, &stages);
    let md_path = run_dir.join("report.md");
    crate::fsutil::write_atomic(&md_path, md.as_bytes()).with_context(|| format!("cannot write {}", md_path.display()))?;
    written.files.extend(images.iter().map(|(_, f)| out_dir.join(f)));
    written.files.push(md_path);
    Ok(written)
}

/// report.md opens with the run's final table (the last stage that made one) and, when the
/// profile is one of a seed paper's presets, that paper's block of `retort papers` beside it
/// (the same text, its latest-run line read from the runs folder this run is in) and this
/// run's figures of the keys the paper's row shows.
fn with_result_first(md: String, run_dir: &Path, profile: &str, stages: &[(String, StageView)]) -> String {
    let mut head = String::new();
    if let Some((stage, table)) = stages.iter().rev().find_map(|(n, v)| v.table.as_ref().map(|t| (n, t))) {
        head.push_str(&format!("## Result (stage `{stage}`)\n\n```text\n{table}\n```\n\n"));
    }
    let runs_dir = run_dir.parent().unwrap_or(run_dir);
    let manifest = crate::run::read_manifest(run_dir).ok();
    for p in papers::of_preset(profile) {
        let block = papers::block(p, runs_dir);
        head.push_str(&format!("### Beside the paper: {} (as `retort papers` shows it)\n\n```text\n{block}```\n\n", p.key));
        // This run's own figures, unless it is the latest run the block already shows.
        let this = run_dir.file_name().map(|n| format!("latest run    {}:", n.to_string_lossy())).unwrap_or_default();
        if let Some(m) = manifest.as_ref().filter(|_| !p.show.is_empty() && !block.contains(&this)) {
            head.push_str(&format!("This run: {}.\n\n", papers::result_of(m, p.show)));
        }
    }
    match md.split_once("\n\n") {
        Some((title, rest)) if !head.is_empty() => format!("{title}\n\n{head}{rest}"),
        _ => md,
    }
}

fn markdown(title: &str, stages: &[(String, StageView)], evals: &[(String, StageResults)], images: &[(String, String)], notes: &[String]) -> String {
    let mut md = format!("# Run report: {title}\n\n");
    md.push_str("## Stages\n\n| stage | kind | outcome | summary |\n| --- | --- | --- | --- |\n");
    for (name, v) in stages {
        let outcome = v.outcome.map(|o| format!("{o:?}").to_lowercase()).unwrap_or_else(|| "not finished".into());
        // Eval summaries are long (per model); their tables follow, so show pass@1 only.
        let shown: BTreeMap<String, f64> = if v.kind == "eval" {
            v.summary.iter().filter(|(k, _)| *k == "pass@1" || k.ends_with("/pass@1")).map(|(k, x)| (k.clone(), *x)).collect()
        } else {
            v.summary.clone()
        };
        let summary: Vec<String> = crate::ui::headless::pick_metrics(&shown, 6).into_iter().map(|(k, x)| format!("{k} = {}", fmt(x))).collect();
        md.push_str(&format!("| {name} | {} | {outcome} | {} |\n", v.kind, summary.join(", ")));
    }
    for (stage, results) in evals {
        md.push_str(&format!("\n## Evaluation `{stage}`\n\n"));
        if let Some(first) = results.models.first() {
            md.push_str(&format!("{}, n = {} samples per problem, temperature {}.\n\n", first.report.problem_set, first.report.config.n, first.report.config.temperature));
        }
        let table = stages.iter().find(|(n, _)| n == stage).and_then(|(_, v)| v.table.clone());
        if let Some(t) = table {
            md.push_str(&format!("```text\n{t}\n```\n\n"));
        }
        for o in &results.overlaps {
            md.push_str(&format!(
                "Unsolvable sets, {} vs {}: {} only {}, {} only {}, {} both (Jaccard {:.3}).\n\n",
                o.first,
                o.other,
                o.only_first.len(),
                o.first,
                o.only_other.len(),
                o.other,
                o.both.len(),
                o.jaccard
            ));
        }
    }
    if !images.is_empty() {
        md.push_str("\n## Plots\n\n");
        md.push_str(&format!(
            "Training curves: one panel per metric, one colour per stage in every chart. Faint lines are the raw values \
             per step; the bold line over them is an exponential moving average with smoothing weight {} (TensorBoard's \
             debiased EMA: s_t = w·s_(t−1) + (1−w)·x_t from s_0 = 0, divided by 1 − w^t). Shaded bands span a metric's \
             min and max in each step (from its `/min` and `/max` companions); dots are evaluation points (`eval/…`, `eval_loss`; \
             not smoothed), as are series of fewer than {} points.\n\n",
            style::SMOOTHING,
            panels::SMOOTH_FROM
        ));
        for (caption, file) in images {
            md.push_str(&format!("### {caption}\n\n![{caption}](report/{file})\n\n"));
        }
    }
    if !notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for n in notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    md
}

// ---------------------------------------------------------------------------------------------
// Corpus statistics (`retort synth stats --out DIR`, docs/CORPUS_STATS.md):
// - `ppl_hist.png`: per-document perplexity histograms of the corpora, overlaid;
// - `token_prob.png`: the ten-bin token-probability histograms (percent), bars side by side.

/// Bars to draw: per series a name and one value per bin; bins are `[edges[i], edges[i+1])`.
pub struct Bars<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub edges: &'a [f64],
    pub series: Vec<(String, Vec<f64>)>,
    /// Side by side within each bin (true) or overlaid translucent (false).
    pub grouped: bool,
}

/// Draws `bars` as a 900×540 PNG at `path`, atomically.
pub fn bar_chart(path: &Path, bars: &Bars) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |tmp| draw(tmp, bars)).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

fn draw(path: &Path, bars: &Bars) -> Result<()> {
    let text = fonts_available();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    // The legend is a column right of the bars, never over them.
    let legend_w = if text && !bars.series.is_empty() {
        let longest = bars.series.iter().map(|s| s.0.chars().count()).max().unwrap_or(0);
        (40 + 8 * longest as u32).clamp(110, 300)
    } else {
        0
    };
    let (plot_area, legend_area) = root.split_horizontally(900 - legend_w);
    let (x0, x1) = (bars.edges[0], *bars.edges.last().unwrap_or(&1.0));
    let ymax = bars.series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()).fold(0f64, f64::max);
    let y1 = if ymax > 0.0 { ymax * 1.08 } else { 1.0 };
    let mut builder = ChartBuilder::on(&plot_area);
    builder.margin(20).x_label_area_size(if text { 48 } else { 8 }).y_label_area_size(if text { 70 } else { 8 });
    if text {
        builder.caption(bars.title, (FONT_FAMILY, 24));
    }
    let mut ctx = builder.build_cartesian_2d(x0..x1, 0f64..y1).map_err(plot_err)?;
    let plain = |v: &f64| tick_label(*v);
    let mut mesh = ctx.configure_mesh();
    mesh.max_light_lines(1).light_line_style(RGBColor(245, 245, 245)).bold_line_style(RGBColor(222, 222, 222)).disable_x_mesh();
    if text {
        mesh.x_desc(bars.x_label).y_desc(bars.y_label).label_style((FONT_FAMILY, 15)).axis_desc_style((FONT_FAMILY, 17));
        mesh.x_label_formatter(&plain).y_label_formatter(&plain);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(plot_err)?;
    let n = bars.series.len().max(1) as f64;
    let palette = Palette::new(bars.series.iter().map(|s| s.0.as_str()));
    for (k, (name, values)) in bars.series.iter().enumerate() {
        let color = palette.color(name);
        let rects = values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
            let (a, b) = (bars.edges[i], bars.edges[i + 1]);
            let (a, b) = if bars.grouped {
                let w = (b - a) * 0.9 / n;
                let a = a + (b - a) * 0.05 + w * k as f64;
                (a, a + w)
            } else {
                (a, b)
            };
            let style = if bars.grouped { color.filled() } else { color.mix(0.45).filled() };
            Rectangle::new([(a, 0.0), (b, v)], style)
        });
        ctx.draw_series(rects).map_err(plot_err)?;
    }
    if legend_w > 0 {
        let entries: Vec<(String, RGBColor)> = bars.series.iter().map(|(n, _)| (n.clone(), palette.color(n))).collect();
        legend_column(&legend_area, &entries)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A corpus's name and one value per bin.
type NamedValues = (String, Vec<f64>);

/// What the corpus-statistics PNGs show, from a [`crate::synth::stats::StatsReport`] or from
/// its JSON (`corpus_stats.json`, where NaN is written as null).
struct CorpusPlotData {
    /// Bin edges and per corpus (name, documents per bin).
    ppl: Option<(Vec<f64>, Vec<NamedValues>)>,
    /// Per corpus with a prior: (name, percent of tokens per probability bin).
    probs: Vec<(String, Vec<f64>)>,
}

impl CorpusPlotData {
    fn of(report: &crate::synth::stats::StatsReport) -> CorpusPlotData {
        let ppl = report.ppl_histogram.as_ref().map(|h| {
            (h.edges.clone(), report.corpora.iter().zip(&h.counts).map(|(c, counts)| (c.name.clone(), counts.iter().map(|&x| x as f64).collect())).collect())
        });
        let probs = report.corpora.iter().filter_map(|c| c.prior.as_ref().map(|p| (c.name.clone(), p.token_prob_percent.to_vec()))).collect();
        CorpusPlotData { ppl, probs }
    }

    /// From the JSON of a report; None when it is not one.
    fn from_json(v: &serde_json::Value) -> Option<CorpusPlotData> {
        let nums = |v: &serde_json::Value| -> Option<Vec<f64>> { Some(v.as_array()?.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()) };
        let corpora = v.get("corpora")?.as_array()?;
        let names: Vec<String> = corpora.iter().map(|c| c.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_string()).collect();
        let ppl = match v.get("ppl_histogram") {
            Some(h) if !h.is_null() => {
                let edges = nums(h.get("edges")?)?;
                let counts = h.get("counts")?.as_array()?.iter().map(nums).collect::<Option<Vec<_>>>()?;
                if counts.iter().any(|c| c.len() + 1 != edges.len()) {
                    return None;
                }
                Some((edges, names.iter().cloned().zip(counts).collect()))
            }
            _ => None,
        };
        let mut probs = Vec::new();
        for (c, name) in corpora.iter().zip(&names) {
            if let Some(p) = c.get("prior").filter(|p| !p.is_null()) {
                let pct = nums(p.get("token_prob_percent")?)?;
                if pct.len() != 10 {
                    return None;
                }
                probs.push((name.clone(), pct));
            }
        }
        Some(CorpusPlotData { ppl, probs })
    }

    /// Draws the PNGs there is data for into `dir`, named `{prefix}ppl_hist{suffix}.png` and
    /// `{prefix}token_prob{suffix}.png`; returns (caption, path) of each.
    fn draw(&self, dir: &Path, prefix: &str, suffix: &str, caption_suffix: &str) -> Result<Vec<(String, PathBuf)>> {
        let mut written = Vec::new();
        if let Some((edges, series)) = &self.ppl {
            let path = dir.join(format!("{prefix}ppl_hist{suffix}.png"));
            let title = format!("Per-document perplexity under the prior{caption_suffix}");
            bar_chart(&path, &Bars { title: &title, x_label: "perplexity", y_label: "documents", edges, series: series.clone(), grouped: false })?;
            written.push((title, path));
        }
        if !self.probs.is_empty() {
            let edges: Vec<f64> = (0..=10).map(|i| i as f64 / 10.0).collect();
            let path = dir.join(format!("{prefix}token_prob{suffix}.png"));
            let title = format!("Probability of each actual token under the prior{caption_suffix}");
            bar_chart(&path, &Bars { title: &title, x_label: "P(token | prefix)", y_label: "% of tokens", edges: &edges, series: self.probs.clone(), grouped: true })?;
            written.push((title, path));
        }
        Ok(written)
    }
}

/// Writes the PNGs the report has data for into `dir` (`ppl_hist.png`, `token_prob.png`);
/// returns their paths.
pub fn corpus_stats_plots(dir: &Path, report: &crate::synth::stats::StatsReport) -> Result<Vec<PathBuf>> {
    Ok(CorpusPlotData::of(report).draw(dir, "", "", "")?.into_iter().map(|(_, p)| p).collect())
}

/// [`corpus_stats_plots`] when a font is available, else nothing (the synth stage's plotter:
/// a stage folder gets no text-less PNGs).
pub fn corpus_stats_plots_if_fonts(dir: &Path, report: &crate::synth::stats::StatsReport) -> Result<Vec<PathBuf>> {
    if fonts_available() {
        corpus_stats_plots(dir, report)
    } else {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_md_opens_with_the_final_table_and_the_papers_row() {
        let view = |kind: &str, table: Option<&str>| StageView { kind: kind.into(), table: table.map(str::to_string), ..Default::default() };
        let stages = vec![("sft".to_string(), view("sft", None)), ("eval".to_string(), view("eval", Some("metric  sft  grpo\npass@1  0.2  0.25")))];
        let runs = tempfile::tempdir().unwrap();
        let run = runs.path().join("flowrl-vs-grpo-tiny-20261207-100000");
        std::fs::create_dir_all(&run).unwrap();
        let md = with_result_first("# Run report: x\n\n## Stages\n".into(), &run, "flowrl-vs-grpo-tiny", &stages);
        let result = md.find("## Result (stage `eval`)").unwrap();
        let paper = md.find("### Beside the paper: flowrl").unwrap();
        let rest = md.find("## Stages").unwrap();
        assert!(md.starts_with("# Run report: x\n\n") && result < paper && paper < rest, "{md}");
        assert!(md.contains("pass@1  0.2  0.25"), "{md}");
        // The paper's block is `retort papers`'s, word for word, for both papers of the preset.
        for p in papers::PAPERS.iter().filter(|p| ["flowrl", "rlvr-explore"].contains(&p.key)) {
            assert!(md.contains(&papers::block(p, runs.path())), "{md}");
        }
        assert!(md.contains("math average +10.0 % over GRPO") && md.contains("not run yet: `retort run flowrl-vs-grpo-tiny`"), "{md}");
        // A profile of no paper and no table: unchanged.
        let plain = "# Run report: y\n\n## Stages\n".to_string();
        assert_eq!(with_result_first(plain.clone(), &run, "tasks-demo", &[("data".to_string(), view("tasks", None))]), plain);
    }

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(tick_label(4.5), "4.5");
        assert_eq!(tick_label(0.1), "0.1");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.0125), "0.013");
        assert_eq!(tick_label(-0.0001), "0");
        assert_eq!(tick_label(12345.6), "12346");
    }

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded_range([0.0, 10.0].into_iter()), (-0.5, 10.5));
        assert_eq!(padded_range([2.0, 2.0].into_iter()), (1.8, 2.2));
        assert_eq!(padded_range(std::iter::empty()), (0.0, 1.0));
        assert_eq!(padded_range([f64::NAN, 0.0].into_iter()), (-0.5, 0.5));
    }

    #[test]
    fn corpus_stats_json_is_read_with_nan_as_null_and_without_a_prior() {
        let v = serde_json::json!({
            "corpora": [
                {"name": "a", "prior": {"token_prob_percent": [null, 1, 2, 3, 4, 5, 6, 7, 8, 9]}},
                {"name": "b", "prior": null}
            ],
            "ppl_histogram": {"edges": [0.0, 1.0, 2.0], "counts": [[1, 2], [0, 3]]}
        });
        let d = CorpusPlotData::from_json(&v).unwrap();
        assert_eq!(d.probs.len(), 1);
        assert!(d.probs[0].1[0].is_nan() && d.probs[0].1[9] == 9.0);
        let (edges, series) = d.ppl.unwrap();
        assert_eq!(edges.len(), 3);
        assert_eq!(series[1], ("b".to_string(), vec![0.0, 3.0]));
        // Without a prior: nothing to draw; a malformed histogram: not a report.
        let none = CorpusPlotData::from_json(&serde_json::json!({"corpora": [{"name": "a", "prior": null}], "ppl_histogram": null})).unwrap();
        assert!(none.ppl.is_none() && none.probs.is_empty());
        assert!(CorpusPlotData::from_json(&serde_json::json!({"corpora": [], "ppl_histogram": {"edges": [0.0], "counts": [[1, 2]]}})).is_none());
        assert!(CorpusPlotData::from_json(&serde_json::json!({"rows": 3})).is_none());
    }

    #[test]
    fn chart_is_a_png_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let s = [Series { name: "a".into(), points: vec![(0.0, 0.1), (1.0, 0.4), (2.0, 0.5)] }];
        line_chart(&p, &Chart { title: "t", x_label: "k", y_label: "pass@k", series: &s, log2_x: true, palette: &Palette::new(["a"]) }).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height big-endian at bytes 16..24.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 900);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 540);
    }
}
