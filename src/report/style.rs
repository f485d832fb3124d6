//! How the report's plots look, as pure functions: the colour of a series (one fixed
//! qualitative palette, keyed by the series' name so a stage or algorithm keeps its colour in
//! every chart of a report) and the smoothed line drawn over the faint raw one (TensorBoard's
//! debiased exponential moving average).

use plotters::style::RGBColor;

/// The smoothing weight of the EMA line (TensorBoard's "smoothing" slider): each smoothed
/// point keeps this share of the previous one. report.md states it.
pub const SMOOTHING: f64 = 0.9;

/// Tableau 10, then the paired darker / lighter tones of the same hues: 20 colours, no two
/// alike. Names past the 20th get generated hues (see [`Palette::color`]).
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),  // blue
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(214, 39, 40),   // red
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(127, 127, 127), // grey
    RGBColor(188, 189, 34),  // olive
    RGBColor(23, 190, 207),  // cyan
    RGBColor(0, 63, 92),     // navy
    RGBColor(166, 86, 0),    // dark orange
    RGBColor(0, 100, 0),     // dark green
    RGBColor(128, 0, 38),    // maroon
    RGBColor(84, 39, 143),   // indigo
    RGBColor(80, 50, 30),    // dark brown
    RGBColor(174, 1, 126),   // magenta
    RGBColor(40, 40, 40),    // near black
    RGBColor(110, 110, 0),   // dark olive
    RGBColor(0, 120, 130),   // teal
];

/// Names that always get the same slot, in any report: the algorithms and the warm start
/// (so GRPO is blue and FlowRL orange in every report, whatever else the run has).
const RESERVED: &[(&str, usize)] = &[("grpo", 0), ("flowrl", 1), ("ppo", 2), ("sft", 7), ("base", 8), ("init", 8)];

/// A colour for every series name of one report: reserved names their slot, the others the
/// free slots in order of first appearance. Built once from every name the report draws, so a
/// name has one colour across all its charts and no two names share one.
#[derive(Clone, Debug)]
pub struct Palette {
    names: Vec<(String, RGBColor)>,
}

impl Palette {
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Palette {
        let mut taken = [false; PALETTE.len()];
        let mut out: Vec<(String, Option<RGBColor>)> = Vec::new();
        for n in names {
            let n = n.as_ref();
            if out.iter().any(|(m, _)| m == n) {
                continue;
            }
            let slot = RESERVED.iter().find(|(r, _)| *r == n).map(|(_, i)| *i).filter(|&i| !taken[i]);
            if let Some(i) = slot {
                taken[i] = true;
            }
            out.push((n.to_string(), slot.map(|i| PALETTE[i])));
        }
        // Reserved slots a report does not use stay free for the others only after the
        // unreserved ones ran out, so "grpo" keeps blue even when it appears late.
        let mut reserved: Vec<usize> = RESERVED.iter().map(|(_, i)| *i).collect();
        reserved.dedup();
        let mut free = (0..PALETTE.len()).filter(|i| !reserved.contains(i)).chain(reserved.iter().copied()).filter(|&i| !taken[i]).collect::<Vec<_>>().into_iter();
        let mut extra = 0usize;
        let names = out
            .into_iter()
            .map(|(n, c)| {
                let c = c.unwrap_or_else(|| match free.next() {
                    Some(i) => PALETTE[i],
                    None => {
                        extra += 1;
                        generated(extra)
                    }
                });
                (n, c)
            })
            .collect();
        Palette { names }
    }

    /// The colour of `name`; a name the palette was not built with gets grey.
    pub fn color(&self, name: &str) -> RGBColor {
        self.names.iter().find(|(n, _)| n == name).map(|(_, c)| *c).unwrap_or(RGBColor(127, 127, 127))
    }

    /// This palette with `more` names after its own: the names it had keep their colours.
    pub fn with<S: AsRef<str>>(&self, more: impl IntoIterator<Item = S>) -> Palette {
        let more: Vec<String> = more.into_iter().map(|s| s.as_ref().to_string()).collect();
        Palette::new(self.names.iter().map(|(n, _)| n.clone()).chain(more))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(n, _)| n.as_str())
    }
}

/// The k-th colour past the fixed palette: hues a golden angle apart at fixed saturation and
/// lightness, so they stay distinct from each other.
fn generated(k: usize) -> RGBColor {
    let h = (k as f64 * 137.507_764) % 360.0;
    let (s, l) = (0.65, 0.42);
    let c = (1.0 - (2.0 * l - 1.0_f64).abs()) * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    RGBColor(to(r), to(g), to(b))
}

/// TensorBoard's smoothing: an exponential moving average started at 0 and divided by
/// `1 − weight^n` (the debiasing), so the first points are not pulled towards zero.
/// Non-finite values are passed through and do not enter the average.
pub fn ema(values: &[f64], weight: f64) -> Vec<f64> {
    let mut last = 0.0;
    let mut n = 0i32;
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return v;
            }
            last = last * weight + (1.0 - weight) * v;
            n += 1;
            let debias = 1.0 - weight.powi(n);
            if debias > 0.0 {
                last / debias
            } else {
                v
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_matches_a_hand_computation() {
        // weight 0.5 on 2, 4, 8: raw averages 1, 2.5, 5.25; debiased by 0.5, 0.75, 0.875.
        let s = ema(&[2.0, 4.0, 8.0], 0.5);
        let want = [1.0 / 0.5, 2.5 / 0.75, 5.25 / 0.875];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{s:?}");
        }
        // The first point is the raw one; weight 0 is no smoothing; a constant stays constant.
        assert_eq!(ema(&[3.0], 0.8), vec![3.0]);
        assert_eq!(ema(&[1.0, 5.0, 2.0], 0.0), vec![1.0, 5.0, 2.0]);
        assert!(ema(&[7.0; 50], 0.8).iter().all(|v| (v - 7.0).abs() < 1e-9));
        // A NaN is kept in place and skipped by the average.
        let s = ema(&[2.0, f64::NAN, 4.0], 0.5);
        assert!(s[1].is_nan() && (s[2] - 2.5 / 0.75).abs() < 1e-12);
    }

    #[test]
    fn colours_are_stable_across_charts_and_never_repeat() {
        let p = Palette::new(["sft", "grpo", "flowrl", "eval", "data"]);
        // The same name, the same colour, whichever chart asks; reserved names their slot.
        assert_eq!(p.color("grpo"), PALETTE[0]);
        assert_eq!(p.color("flowrl"), PALETTE[1]);
        assert_eq!(p.color("sft"), PALETTE[7]);
        // A report without grpo still gives flowrl orange.
        assert_eq!(Palette::new(["pretrain", "flowrl"]).color("flowrl"), PALETTE[1]);
        // Unreserved names take free slots, not a reserved one while others are free.
        assert_eq!(p.color("eval"), PALETTE[3]);
        assert_eq!(p.color("data"), PALETTE[4]);
        // 40 names: 40 different colours.
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let p = Palette::new(&names);
        let mut seen: Vec<RGBColor> = names.iter().map(|n| p.color(n)).collect();
        seen.sort_by_key(|c| (c.0, c.1, c.2));
        seen.dedup();
        assert_eq!(seen.len(), 40);
        // Extending a palette keeps the colours it had.
        let q = Palette::new(["sft", "grpo", "flowrl", "eval", "data"]);
        let r = q.with(["id", "legal"]);
        assert!(q.names().all(|n| q.color(n) == r.color(n)));
        assert_ne!(r.color("id"), r.color("legal"));
        // Duplicates in the input are one name.
        assert_eq!(Palette::new(["a", "b", "a"]).names().count(), 2);
    }
}
