//! Small multiples: one PNG per metric family, one panel per metric in a grid, the stages as
//! coloured series (colours from the report's [`Palette`]). Each training series is drawn as
//! its faint raw values with the smoothed EMA line over them ([`SMOOTHING`]), a min–max band
//! where the metric has one, and evaluation points as markers. The legend is a strip above the
//! grid, outside every panel.

use super::families::Panel;
use super::style::{ema, Palette, SMOOTHING};
use super::{fonts_available, padded_range, plot_err, tick_label, FONT_FAMILY};

/// A tick label with as many decimals as ticks `step` apart need to differ (so values near 1
/// with a small spread do not all read "1"); tiny magnitudes in scientific notation.
pub fn tick_label_at(v: f64, step: f64) -> String {
    if !(step.is_finite() && step > 0.0) {
        return tick_label(v);
    }
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    if v.abs() < step / 2.0 {
        return "0".into();
    }
    if decimals > 4 && v.abs() < 0.01 {
        // Enough significant digits for neighbours `step` apart.
        let prec = (v.abs().log10().floor() - step.log10().floor()).max(0.0) as usize;
        return format!("{v:.prec$e}");
    }
    let decimals = decimals.min(9);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" { "0".into() } else { s }
}
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Series shorter than this are drawn as their points, not smoothed.
pub const SMOOTH_FROM: usize = 30;

const PANEL_W: u32 = 440;
const PANEL_H: u32 = 290;
const TITLE_H: u32 = 44;
const LEGEND_H: u32 = 34;

/// Columns of the grid for `n` panels: one for one, two up to four, else three.
pub fn columns(n: usize) -> usize {
    match n {
        0 | 1 => 1,
        2..=4 => 2,
        _ => 3,
    }
}

/// Draws `panels` as a grid at `path`, atomically.
pub fn draw_panels(path: &Path, title: &str, panels: &[Panel], palette: &Palette) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |tmp| draw(tmp, title, panels, palette)).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

fn draw(path: &Path, title: &str, panels: &[Panel], palette: &Palette) -> Result<()> {
    let text = fonts_available();
    let cols = columns(panels.len());
    let rows = panels.len().div_ceil(cols).max(1);
    let (w, h) = (cols as u32 * PANEL_W, TITLE_H + LEGEND_H + rows as u32 * PANEL_H);
    let root = BitMapBackend::new(path, (w.max(600), h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (head, grid) = root.split_vertically(TITLE_H + LEGEND_H);
    if text {
        let (title_area, legend_area) = head.split_vertically(TITLE_H);
        title_area.draw_text(title, &(FONT_FAMILY, 22).into_font().color(&BLACK), (14, 12)).map_err(plot_err)?;
        // The series of this chart, in the palette's order (the report's stage order).
        let names: Vec<&str> = palette.names().filter(|n| panels.iter().any(|p| p.lines.iter().any(|l| l.series == *n))).collect();
        let entries: Vec<(String, RGBColor)> = names.iter().map(|n| (n.to_string(), palette.color(n))).collect();
        let any_band = panels.iter().any(|p| p.lines.iter().any(|l| !l.band.is_empty()));
        let any_smooth = panels.iter().any(|p| !p.eval_points && p.lines.iter().any(|l| l.points.len() >= SMOOTH_FROM));
        let mut how = Vec::new();
        if any_smooth {
            how.push(format!("faint: raw; bold: EMA {SMOOTHING}"));
        }
        if any_band {
            how.push("shade: min–max".to_string());
        }
        if panels.iter().any(|p| p.eval_points || p.lines.iter().any(|l| l.points.len() < SMOOTH_FROM)) {
            how.push("dots: eval points, short series".to_string());
        }
        legend_strip(&legend_area, &entries, &how.join(" · "))?;
    }
    let areas = grid.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(area, panel, palette, text)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A legend in one row: a coloured line and the name of each series, then how to read them.
pub fn legend_strip(area: &DrawingArea<BitMapBackend, Shift>, entries: &[(String, RGBColor)], how: &str) -> Result<()> {
    let font = (FONT_FAMILY, 15).into_font().color(&BLACK);
    let mut x = 16i32;
    let y = 10i32;
    for (name, color) in entries {
        area.draw(&PathElement::new(vec![(x, y + 8), (x + 22, y + 8)], color.stroke_width(4))).map_err(plot_err)?;
        area.draw_text(name, &font, (x + 28, y)).map_err(plot_err)?;
        let (tw, _) = area.estimate_text_size(name, &font).map_err(plot_err)?;
        x += 28 + tw as i32 + 22;
    }
    if !how.is_empty() {
        area.draw_text(how, &(FONT_FAMILY, 13).into_font().color(&RGBColor(100, 100, 100)), (x + 10, y + 2)).map_err(plot_err)?;
    }
    Ok(())
}

/// Whether `panel` reads better on a log axis: every value positive and spanning at least
/// [`LOG_SPAN`] (a loss falling from 10 to 0.01 is a flat line after its first steps on a
/// linear axis). Anything with a zero or a negative value stays linear.
pub fn wants_log_scale(panel: &Panel) -> bool {
    let values = panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1).chain(l.band.iter().flat_map(|b| [b.1, b.2])));
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        if v <= 0.0 {
            return false;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    lo.is_finite() && hi / lo >= LOG_SPAN
}

/// The ratio of largest to smallest value from which a panel is drawn on a log axis.
pub const LOG_SPAN: f64 = 100.0;

/// A log-axis tick: the value 10^`exponent` with two significant digits.
pub fn log_tick_label(exponent: f64) -> String {
    let v = 10f64.powf(exponent);
    if !(1e-3..1e5).contains(&v) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let decimals = (1.0 - v.log10().floor()).max(0.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn draw_panel(area: &DrawingArea<BitMapBackend, Shift>, panel: &Panel, palette: &Palette, text: bool) -> Result<()> {
    // On a log axis every y is drawn as its log10, and the EMA is taken of the logs too: an
    // EMA of raw values decaying by decades lags far above them on a log axis.
    let log = wants_log_scale(panel);
    let fy = |y: f64| if log { y.log10() } else { y };
    let xs = panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = panel.lines.iter().flat_map(|l| l.points.iter().map(|p| fy(p.1)).chain(l.band.iter().flat_map(|b| [fy(b.1), fy(b.2)])));
    let (x0, x1) = padded_range(xs);
    let (y0, y1) = padded_range(ys);
    let mut builder = ChartBuilder::on(area);
    builder.margin(10).margin_right(18).x_label_area_size(if text { 26 } else { 4 }).y_label_area_size(if text { 58 } else { 4 });
    let title = if log { format!("{} (log scale)", panel.title) } else { panel.title.clone() };
    if text {
        builder.caption(&title, (FONT_FAMILY, 15));
    }
    let mut ctx = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(plot_err)?;
    let x_tick = |v: &f64| tick_label(*v);
    let y_tick = |v: &f64| if log { log_tick_label(*v) } else { tick_label_at(*v, (y1 - y0) / 6.0) };
    let mut mesh = ctx.configure_mesh();
    mesh.max_light_lines(1).light_line_style(RGBColor(245, 245, 245)).bold_line_style(RGBColor(222, 222, 222)).x_labels(6).y_labels(6);
    if text {
        mesh.label_style((FONT_FAMILY, 12)).x_label_formatter(&x_tick).y_label_formatter(&y_tick);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(plot_err)?;
    // Bands first, under every line.
    for line in &panel.lines {
        if line.band.len() > 1 {
            let color = palette.color(&line.series);
            let outline: Vec<(f64, f64)> = line.band.iter().map(|b| (b.0, fy(b.2))).chain(line.band.iter().rev().map(|b| (b.0, fy(b.1)))).collect();
            ctx.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.1).filled()))).map_err(plot_err)?;
        }
    }
    for line in &panel.lines {
        let color = palette.color(&line.series);
        let points: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, fy(p.1))).collect();
        // Evaluation points and short series are markers: an EMA over a dozen points lags.
        if panel.eval_points || line.points.len() < SMOOTH_FROM {
            ctx.draw_series(LineSeries::new(points.iter().copied(), color.mix(0.7).stroke_width(1))).map_err(plot_err)?;
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        } else if panel.schedule {
            ctx.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2))).map_err(plot_err)?;
        } else {
            ctx.draw_series(LineSeries::new(points.iter().copied(), color.mix(0.25).stroke_width(1))).map_err(plot_err)?;
            let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
            let smooth = ema(&ys, SMOOTHING);
            ctx.draw_series(LineSeries::new(points.iter().map(|p| p.0).zip(smooth), color.stroke_width(2))).map_err(plot_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::families::Line;

    #[test]
    fn tick_labels_have_the_decimals_their_spacing_needs() {
        assert_eq!(tick_label_at(1.0004, 0.0002), "1.0004");
        assert_eq!(tick_label_at(1.0, 0.0002), "1");
        assert_eq!(tick_label_at(0.25, 0.05), "0.25");
        assert_eq!(tick_label_at(150.0, 25.0), "150");
        assert_eq!(tick_label_at(3e-6, 1e-6), "3e-6");
        assert_eq!(tick_label_at(2.5e-6, 5e-7), "2.5e-6");
        // Near 1 with a spread of millionths: fixed point, not "1" five times.
        assert_eq!(tick_label_at(1.000002, 1e-6), "1.000002");
        assert_eq!(tick_label_at(-1e-9, 1e-6), "0");
    }

    #[test]
    fn panels_spanning_two_decades_of_positive_values_use_a_log_axis() {
        use crate::report::families::Line;
        let panel = |ys: &[f64]| Panel {
            title: "loss".into(),
            eval_points: false,
            schedule: false,
            lines: vec![Line { series: "sft".into(), points: ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect(), band: Vec::new() }],
        };
        assert!(wants_log_scale(&panel(&[10.0, 1.0, 0.1])));
        assert!(!wants_log_scale(&panel(&[10.0, 1.0, 0.11])), "a span under 100 stays linear");
        assert!(!wants_log_scale(&panel(&[100.0, 1.0, 0.0])), "a zero cannot go on a log axis");
        assert!(!wants_log_scale(&panel(&[100.0, -1.0, 0.5])));
        assert!(wants_log_scale(&panel(&[f64::NAN, 5.0, 0.05])), "non-finite values are skipped");
        assert!(!wants_log_scale(&panel(&[])));
    }

    #[test]
    fn log_ticks_read_as_values() {
        assert_eq!(log_tick_label(0.0), "1");
        assert_eq!(log_tick_label(2.0), "100");
        assert_eq!(log_tick_label(-1.0), "0.1");
        assert_eq!(log_tick_label(-0.5), "0.32");
        assert_eq!(log_tick_label(0.5), "3.2");
        assert_eq!(log_tick_label(-4.0), "1e-4");
        assert_eq!(log_tick_label(6.0), "1e6");
        assert_eq!(log_tick_label(-3.5), "3.2e-4");
    }

    #[test]
    fn grids_have_at_most_three_columns() {
        assert_eq!([1, 2, 4, 5, 9, 10].map(columns), [1, 2, 2, 3, 3, 3]);
    }

    #[test]
    fn a_grid_png_is_sized_by_its_panels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        let line = |s: &str| Line { series: s.into(), points: (0..10).map(|i| (i as f64, (i * i) as f64)).collect(), band: Vec::new() };
        let panel = |t: &str| Panel { title: t.into(), eval_points: false, schedule: false, lines: vec![line("grpo"), line("flowrl")] };
        let panels: Vec<Panel> = ["a", "b", "c", "d", "e"].iter().map(|t| panel(t)).collect();
        draw_panels(&p, "t", &panels, &Palette::new(["grpo", "flowrl"])).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // Five panels: three columns, two rows.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 3 * PANEL_W);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), TITLE_H + LEGEND_H + 2 * PANEL_H);
    }
}
