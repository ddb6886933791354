//! Training curves from `metrics.jsonl`: one panel per series (loss, learning rate,
//! active slots), with the value range and the step range written on the axes.

use std::path::Path;

use super::canvas::{text_width, Canvas, Rgb, BLACK, WHITE};
use slotcon_shards::io_err;

use crate::error::{in_range, Error, Result};

/// Panel widths [`curves_png`] accepts: the value labels, the plot and the longest title
/// fit from 160 px on.
pub const PANEL_WIDTH: std::ops::RangeInclusive<usize> = 160..=4096;
/// Panel heights [`curves_png`] accepts.
pub const PANEL_HEIGHT: std::ops::RangeInclusive<usize> = 80..=4096;

/// One series against the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Its title.
    pub title: String,
    /// `(step, value)` points.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: Rgb,
}

/// Reads `metrics.jsonl` into the loss, lr and active-slot curves.
pub fn read_curves(path: &Path) -> Result<Vec<Curve>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if rows.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            reason: "no metrics lines".into(),
        });
    }
    let series = |key: &str, title: &str, color: Rgb| Curve {
        title: title.to_string(),
        points: rows
            .iter()
            .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
            .collect(),
        color,
    };
    Ok(vec![
        series("loss", "loss", [200, 40, 40]),
        series("lr", "learning rate", [40, 90, 200]),
        series("active_slots_per_image", "active slots per view", [30, 140, 60]),
    ])
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// The curves side by side, each in a `panel_w × panel_h` panel ([`PANEL_WIDTH`],
/// [`PANEL_HEIGHT`]; other sizes are an [`Error::Setting`]).
pub fn curves_png(curves: &[Curve], panel_w: usize, panel_h: usize) -> Result<Canvas> {
    in_range("panel_width", panel_w, PANEL_WIDTH)?;
    in_range("panel_height", panel_h, PANEL_HEIGHT)?;
    let mut c = Canvas::new(curves.len() * panel_w, panel_h, WHITE);
    for (i, curve) in curves.iter().enumerate() {
        panel(&mut c, i * panel_w, curve, panel_w, panel_h);
    }
    Ok(c)
}

fn panel(c: &mut Canvas, x0: usize, curve: &Curve, w: usize, h: usize) {
    // Saturating, so that even a panel too small for its margins draws (badly) and ends.
    let (left, top) = (x0 + 64, 22);
    let (right, bottom) = ((x0 + w).saturating_sub(12).max(left), h.saturating_sub(22).max(top));
    let title_x = x0 + w.saturating_sub(text_width(&curve.title, 1)) / 2;
    c.text(title_x, 6, &curve.title, BLACK, 1);
    for (a, b) in [((left, top), (left, bottom)), ((left, bottom), (right, bottom))] {
        c.line((a.0 as i64, a.1 as i64), (b.0 as i64, b.1 as i64), BLACK);
    }
    if curve.points.is_empty() {
        return;
    }
    let lo = |f: fn(&(f64, f64)) -> f64| curve.points.iter().map(f).fold(f64::INFINITY, f64::min);
    let hi = |f: fn(&(f64, f64)) -> f64| curve.points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    let (sx0, sx1, vy0, vy1) = (lo(|p| p.0), hi(|p| p.0), lo(|p| p.1), hi(|p| p.1));
    let (lo_label, hi_label) = (label(vy0), label(vy1));
    let before = |s: &str| (left - 4).saturating_sub(text_width(s, 1));
    c.text(before(&hi_label), top, &hi_label, BLACK, 1);
    c.text(before(&lo_label), bottom.saturating_sub(7), &lo_label, BLACK, 1);
    c.text(left, bottom + 6, &format!("{sx0}"), BLACK, 1);
    let last = format!("step {sx1}");
    c.text(right.saturating_sub(text_width(&last, 1)), bottom + 6, &last, BLACK, 1);
    let px = |s: f64| left as f64 + (s - sx0) / (sx1 - sx0).max(1e-12) * (right - left) as f64;
    let py = |v: f64| bottom as f64 - (v - vy0) / (vy1 - vy0).max(1e-12) * (bottom - top) as f64;
    let pts: Vec<(i64, i64)> = curve
        .points
        .iter()
        .map(|&(s, v)| (px(s).round() as i64, py(v).round() as i64))
        .collect();
    for pair in pts.windows(2) {
        c.line(pair[0], pair[1], curve.color);
    }
    if let [only] = pts[..] {
        c.put(only.0, only.1, curve.color);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_tile_the_canvas() {
        let curve = Curve {
            title: "loss".into(),
            points: vec![(0.0, 6.0), (1.0, 5.5), (2.0, 5.0)],
            color: [200, 0, 0],
        };
        let c = curves_png(&[curve.clone(), curve.clone()], 300, 200).unwrap();
        assert_eq!((c.w, c.h), (600, 200));
        assert!(c.rgb.chunks_exact(3).any(|p| p == [200, 0, 0]), "the line is drawn");
        assert_eq!(label(0.000625), "6.25e-4");
        assert_eq!(label(5.5), "5.500");
    }

    #[test]
    fn small_or_huge_panels_are_refused_and_tiny_ones_still_end() {
        let curve = Curve {
            title: "active slots per view".into(),
            points: vec![(0.0, 6.0), (1.0, 5.5), (2.0, 5.0)],
            color: [200, 0, 0],
        };
        for (w, h) in [(40, 240), (0, 240), (360, 20), (360, 0), (5000, 240), (360, usize::MAX)] {
            let e = curves_png(std::slice::from_ref(&curve), w, h).unwrap_err();
            assert!(matches!(e, Error::Setting { .. }), "{w}x{h}: {e}");
        }
        assert!(curves_png(std::slice::from_ref(&curve), 160, 80).is_ok());
        // The drawing itself ends for any size (it used to walk a line to i64::MAX).
        for (w, h) in [(1, 1), (12, 20), (40, 21), (76, 44)] {
            let mut c = Canvas::new(w, h, WHITE);
            panel(&mut c, 0, &curve, w, h);
        }
    }
}
