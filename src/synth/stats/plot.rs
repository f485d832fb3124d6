//! The PNGs of `retort synth stats --out DIR` (drawn as `retort report` draws: plotters into a
//! bitmap, text with the font `crate::report` finds, written atomically):
//! - `ppl_hist.png`: per-document perplexity histograms of the corpora, overlaid;
//! - `token_prob.png`: the ten-bin token-probability histograms (percent), bars side by side.

use super::StatsReport;
use crate::report::{fonts_available, plot_err, tick_label, COLORS, FONT_FAMILY};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

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
    let (x0, x1) = (bars.edges[0], *bars.edges.last().unwrap_or(&1.0));
    let ymax = bars.series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()).fold(0f64, f64::max);
    let y1 = if ymax > 0.0 { ymax * 1.08 } else { 1.0 };
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20).x_label_area_size(if text { 48 } else { 8 }).y_label_area_size(if text { 70 } else { 8 });
    if text {
        builder.caption(bars.title, (FONT_FAMILY, 24));
    }
    let mut ctx = builder.build_cartesian_2d(x0..x1, 0f64..y1).map_err(plot_err)?;
    let plain = |v: &f64| tick_label(*v);
    let mut mesh = ctx.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235)).disable_x_mesh();
    if text {
        mesh.x_desc(bars.x_label).y_desc(bars.y_label).label_style((FONT_FAMILY, 15)).axis_desc_style((FONT_FAMILY, 17));
        mesh.x_label_formatter(&plain).y_label_formatter(&plain);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(plot_err)?;
    let n = bars.series.len().max(1) as f64;
    for (k, (name, values)) in bars.series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
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
        let drawn = ctx.draw_series(rects).map_err(plot_err)?;
        if text {
            drawn.label(name.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
        }
    }
    if text && !bars.series.is_empty() {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT_FAMILY, 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Writes the PNGs the report has data for into `dir`; returns their paths.
pub fn write_plots(dir: &Path, report: &StatsReport) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if let Some(h) = &report.ppl_histogram {
        let series = report.corpora.iter().zip(&h.counts).map(|(c, counts)| (c.name.clone(), counts.iter().map(|&x| x as f64).collect())).collect();
        let path = dir.join("ppl_hist.png");
        bar_chart(&path, &Bars { title: "Per-document perplexity under the prior", x_label: "perplexity", y_label: "documents", edges: &h.edges, series, grouped: false })?;
        written.push(path);
    }
    let probs: Vec<(String, Vec<f64>)> = report.corpora.iter().filter_map(|c| c.prior.as_ref().map(|p| (c.name.clone(), p.token_prob_percent.to_vec()))).collect();
    if !probs.is_empty() {
        let edges: Vec<f64> = (0..=10).map(|i| i as f64 / 10.0).collect();
        let path = dir.join("token_prob.png");
        bar_chart(&path, &Bars { title: "Probability of each actual token under the prior", x_label: "P(token | prefix)", y_label: "% of tokens", edges: &edges, series: probs, grouped: true })?;
        written.push(path);
    }
    Ok(written)
}
