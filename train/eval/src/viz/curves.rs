//! Training curves from `metrics.jsonl`: one panel per series (loss, learning rate,
//! active slots), each run of several in its own colour, on axes with ticks at round
//! values, a grid and labels, smoothed as TensorBoard smooths (the raw values drawn
//! faintly behind).
//!
//! The picture is drawn on [`Canvas`] with its 5x7 font rather than with a plotting
//! crate: those draw text through a TrueType font found on the system or embedded, and
//! this machine-independent bitmap font keeps every PNG byte-identical on any machine.

use std::path::Path;

use super::canvas::{palette, text_width, Canvas, Rgb, BLACK, WHITE};
use slotcon_shards::io_err;

use crate::error::{in_range, Error, Result};

/// Panel widths [`curves_png`] accepts: the value labels, the plot and the longest title
/// fit from 160 px on.
pub const PANEL_WIDTH: std::ops::RangeInclusive<usize> = 160..=4096;
/// Panel heights [`curves_png`] accepts.
pub const PANEL_HEIGHT: std::ops::RangeInclusive<usize> = 80..=4096;
/// Smoothing weights [`curves_png`] accepts (TensorBoard's slider: 0 draws the raw values).
pub const SMOOTHING: std::ops::RangeInclusive<f64> = 0.0..=0.999;
/// How many runs one picture holds.
pub const RUNS: std::ops::RangeInclusive<usize> = 1..=16;

/// The panels: `metrics.jsonl`'s field and the panel's title.
pub const SERIES: [(&str, &str); 3] = [
    ("loss", "loss"),
    ("lr", "learning rate"),
    ("active_slots_per_image", "active slots per view"),
];

const GRID: Rgb = [228, 228, 228];
/// Pixels from a panel's edges to its plot: value labels left, title above, steps below.
const MARGIN: (usize, usize, usize, usize) = (64, 22, 12, 24);

/// One run's curves: a name for the legend and, per [`SERIES`] entry, `(step, value)`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    /// The run's name in the legend.
    pub name: String,
    /// One list of points per [`SERIES`] entry, in step order.
    pub series: Vec<Vec<(f64, f64)>>,
}

/// How [`curves_png`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvesStyle {
    /// Width of one panel ([`PANEL_WIDTH`]).
    pub panel_width: usize,
    /// Height of one panel ([`PANEL_HEIGHT`]).
    pub panel_height: usize,
    /// The weight of TensorBoard's debiased moving average ([`SMOOTHING`]).
    pub smoothing: f64,
}

/// Reads a run's `metrics.jsonl` into the curves of [`SERIES`].
pub fn read_curves(name: &str, path: &Path) -> Result<RunCurves> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if rows.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            reason: "no metrics lines".into(),
        });
    }
    let series = SERIES
        .iter()
        .map(|(key, _)| {
            rows.iter()
                .filter_map(|r| Some((r["step"].as_f64()?, r[*key].as_f64()?)))
                .filter(|(s, v)| s.is_finite() && v.is_finite())
                .collect()
        })
        .collect();
    Ok(RunCurves {
        name: name.to_string(),
        series,
    })
}

/// The colour of run `i`: red, blue, green, purple, orange, teal, then [`palette`].
pub fn run_color(i: usize) -> Rgb {
    const FIRST: [Rgb; 6] = [
        [200, 40, 40],
        [40, 90, 200],
        [30, 140, 60],
        [140, 60, 180],
        [225, 120, 20],
        [20, 150, 160],
    ];
    FIRST.get(i).copied().unwrap_or_else(|| palette(i))
}

/// TensorBoard's smoothing: a moving average with weight `w`, debiased so that the first
/// points are not pulled towards zero.
pub fn smooth(values: &[f64], w: f64) -> Vec<f64> {
    let mut last = 0.0;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            last = last * w + (1.0 - w) * v;
            last / (1.0 - w.powi(i as i32 + 1))
        })
        .collect()
}

/// Round values (1, 2 or 5 times a power of ten) from `lo` to `hi`, at most about
/// `target` of them; the step between them.
pub fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / target.max(1) as f64;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let values = (first..=last.min(first + 100)).map(|k| k as f64 * step).collect();
    (values, step)
}

/// A tick label with as many decimals as the step between ticks needs.
pub fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if step < 1e-3 || v.abs() >= 1e5 {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// The curves of every run, one panel per [`SERIES`] entry side by side, and under them a
/// legend naming each run when there are several. A style out of its ranges, or a count
/// of runs out of [`RUNS`], is an [`Error::Setting`].
pub fn curves_png(runs: &[RunCurves], style: &CurvesStyle) -> Result<Canvas> {
    in_range("panel_width", style.panel_width, PANEL_WIDTH)?;
    in_range("panel_height", style.panel_height, PANEL_HEIGHT)?;
    in_range("smoothing", style.smoothing, SMOOTHING)?;
    in_range("runs", runs.len(), RUNS)?;
    let legend = if runs.len() > 1 { 6 + 12 * runs.len() } else { 0 };
    let (w, h) = (style.panel_width, style.panel_height);
    let mut c = Canvas::new(SERIES.len() * w, h + legend, WHITE);
    for (i, (_, title)) in SERIES.iter().enumerate() {
        let lines: Vec<(&[(f64, f64)], Rgb)> = runs
            .iter()
            .enumerate()
            .map(|(r, run)| (run.series.get(i).map_or(&[][..], Vec::as_slice), run_color(r)))
            .collect();
        panel(&mut c, (i * w, w, h), title, &lines, style.smoothing);
    }
    if legend > 0 {
        for (r, run) in runs.iter().enumerate() {
            let y = h + 4 + 12 * r;
            c.fill(MARGIN.0, y, 16, 7, run_color(r));
            c.text(MARGIN.0 + 22, y, &run.name, BLACK, 1);
        }
    }
    Ok(c)
}

/// The pixel box of a panel's plot and the value ranges it shows.
struct Frame {
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, (s, v): (f64, f64)) -> (i64, i64) {
        let fx = (s - self.x.0) / (self.x.1 - self.x.0).max(1e-12);
        let fy = (v - self.y.0) / (self.y.1 - self.y.0).max(1e-12);
        let x = self.left as f64 + fx * (self.right - self.left) as f64;
        let y = self.bottom as f64 - fy * (self.bottom - self.top) as f64;
        (x.round() as i64, y.round() as i64)
    }
}

/// One panel at `(x0, w, h)` with each run's line in its colour.
fn panel(
    c: &mut Canvas,
    (x0, w, h): (usize, usize, usize),
    title: &str,
    lines: &[(&[(f64, f64)], Rgb)],
    smoothing: f64,
) {
    // Saturating, so that even a panel too small for its margins draws (badly) and ends.
    let (left, top) = (x0 + MARGIN.0, MARGIN.1);
    let right = (x0 + w).saturating_sub(MARGIN.2).max(left);
    let bottom = h.saturating_sub(MARGIN.3).max(top);
    c.text(x0 + w.saturating_sub(text_width(title, 1)) / 2, 6, title, BLACK, 1);
    let points = || lines.iter().flat_map(|(p, _)| p.iter());
    let range = |f: fn(&(f64, f64)) -> f64| {
        points()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x, mut y) = (range(|p| p.0), range(|p| p.1));
    if x.0 <= x.1 {
        if y.1 - y.0 <= y.0.abs() * 1e-9 {
            let pad = (y.0.abs() * 0.05).max(1e-6);
            y = (y.0 - pad, y.1 + pad);
        }
        let frame = Frame {
            left,
            top,
            right,
            bottom,
            x,
            y,
        };
        axes(c, &frame, x0);
        for (pts, color) in lines {
            draw_line(c, &frame, pts, *color, smoothing);
        }
    }
    for (a, b) in [((left, top), (left, bottom)), ((left, bottom), (right, bottom))] {
        c.line((a.0 as i64, a.1 as i64), (b.0 as i64, b.1 as i64), BLACK);
    }
}

/// The grid, the tick marks and their labels of both axes, and the word "step".
fn axes(c: &mut Canvas, f: &Frame, x0: usize) {
    let (ys, ystep) = ticks(f.y.0, f.y.1, ((f.bottom - f.top) / 36).max(2));
    for v in ys {
        let (_, py) = f.px((f.x.0, v));
        c.line((f.left as i64, py), (f.right as i64, py), GRID);
        c.line((f.left as i64 - 3, py), (f.left as i64, py), BLACK);
        let label = tick_label(v, ystep);
        let lx = f.left.saturating_sub(6 + text_width(&label, 1));
        c.text(lx, (py - 3).max(0) as usize, &label, BLACK, 1);
    }
    let (xs, xstep) = ticks(f.x.0, f.x.1, ((f.right - f.left) / 64).max(2));
    for s in xs {
        let (px, _) = f.px((s, f.y.0));
        c.line((px, f.top as i64), (px, f.bottom as i64), GRID);
        c.line((px, f.bottom as i64), (px, f.bottom as i64 + 3), BLACK);
        let label = tick_label(s, xstep);
        let lx = (px.max(0) as usize).saturating_sub(text_width(&label, 1) / 2);
        c.text(lx, f.bottom + 6, &label, BLACK, 1);
    }
    c.text(x0 + 4, f.bottom + 6, "step", BLACK, 1);
}

/// A run's line: smoothed in its colour over the raw values in a pale one, or only the
/// raw values when `smoothing` is 0; a single point is a dot.
fn draw_line(c: &mut Canvas, f: &Frame, pts: &[(f64, f64)], color: Rgb, smoothing: f64) {
    let pale = color.map(|v| (v as u32 * 3 / 10 + 255 * 7 / 10) as u8);
    let mut draw = |values: &[f64], color: Rgb| {
        let px: Vec<(i64, i64)> = pts.iter().zip(values).map(|(p, v)| f.px((p.0, *v))).collect();
        for pair in px.windows(2) {
            c.line(pair[0], pair[1], color);
        }
        if let [only] = px[..] {
            c.put(only.0, only.1, color);
        }
    };
    let raw: Vec<f64> = pts.iter().map(|p| p.1).collect();
    if smoothing > 0.0 {
        draw(&raw, pale);
        draw(&smooth(&raw, smoothing), color);
    } else {
        draw(&raw, color);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, scale: f64) -> RunCurves {
        let pts: Vec<(f64, f64)> = (0..50).map(|s| (s as f64, scale * (6.0 - 0.05 * s as f64))).collect();
        RunCurves {
            name: name.into(),
            series: vec![pts.clone(), pts.clone(), pts],
        }
    }

    const STYLE: CurvesStyle = CurvesStyle {
        panel_width: 300,
        panel_height: 200,
        smoothing: 0.6,
    };

    #[test]
    fn ticks_fall_on_round_values_and_labels_show_their_step() {
        assert_eq!(ticks(0.0, 10.0, 5), (vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0], 2.0));
        let (t, step) = ticks(5.27, 6.01, 4);
        assert_eq!(step, 0.2);
        assert_eq!(
            t.iter().map(|v| tick_label(*v, step)).collect::<Vec<_>>(),
            ["5.4", "5.6", "5.8", "6.0"]
        );
        assert_eq!(tick_label(0.0005, 0.0001), "5.0e-4");
        assert_eq!(tick_label(250.0, 50.0), "250");
        // A span of zero still ends with a bounded list.
        assert!(ticks(3.0, 3.0, 4).0.len() <= 101);
    }

    #[test]
    fn smoothing_is_tensorboards_debiased_average() {
        let s = smooth(&[1.0, 2.0, 3.0], 0.5);
        // last: 0.5, 1.25, 2.125; debiased by 0.5, 0.75, 0.875.
        assert_eq!(s, vec![1.0, 1.25 / 0.75, 2.125 / 0.875]);
        assert_eq!(smooth(&[4.0, 2.0], 0.0), vec![4.0, 2.0]);
    }

    #[test]
    fn several_runs_share_panels_and_are_named_in_a_legend() {
        let one = curves_png(&[run("a", 1.0)], &STYLE).unwrap();
        assert_eq!((one.w, one.h), (900, 200));
        let two = curves_png(&[run("a", 1.0), run("b", 0.5)], &STYLE).unwrap();
        assert_eq!((two.w, two.h), (900, 200 + 6 + 24));
        for color in [run_color(0), run_color(1)] {
            let drawn = two.rgb.chunks_exact(3).filter(|p| *p == color).count();
            assert!(drawn > 100, "{color:?}: {drawn} pixels");
        }
        let pale = run_color(0).map(|v| (v as u32 * 3 / 10 + 255 * 7 / 10) as u8);
        assert!(
            two.rgb.chunks_exact(3).any(|p| p == pale),
            "the raw values behind the smoothed"
        );
        assert!(two.rgb.chunks_exact(3).any(|p| p == GRID), "a grid");
    }

    #[test]
    fn bad_styles_and_run_counts_are_refused_and_tiny_panels_still_end() {
        let r = run("a", 1.0);
        let bad = [
            (40, 240, 0.6),
            (0, 240, 0.0),
            (360, 20, 0.0),
            (5000, 240, 0.0),
            (360, usize::MAX, 0.0),
        ];
        let smoothing = [f64::NAN, -0.1, 1.0];
        let styles = bad
            .iter()
            .map(|&(panel_width, panel_height, smoothing)| CurvesStyle {
                panel_width,
                panel_height,
                smoothing,
            })
            .chain(smoothing.iter().map(|&smoothing| CurvesStyle { smoothing, ..STYLE }));
        for style in styles {
            let e = curves_png(std::slice::from_ref(&r), &style).unwrap_err();
            assert!(matches!(e, Error::Setting { .. }), "{style:?}: {e}");
        }
        for n in [0, 17] {
            let e = curves_png(&vec![r.clone(); n], &STYLE).unwrap_err();
            assert!(matches!(e, Error::Setting { name: "runs", .. }), "{n}: {e}");
        }
        let small = CurvesStyle {
            panel_width: 160,
            panel_height: 80,
            smoothing: 0.0,
        };
        assert!(curves_png(std::slice::from_ref(&r), &small).is_ok());
        // The drawing itself ends for any size (it used to walk a line to i64::MAX).
        for (w, h) in [(1, 1), (12, 20), (40, 21), (76, 44)] {
            let mut c = Canvas::new(w, h, WHITE);
            panel(
                &mut c,
                (0, w, h),
                "active slots per view",
                &[(&r.series[0], run_color(0))],
                0.6,
            );
        }
    }
}
