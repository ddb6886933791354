//! Training curves from `metrics.jsonl`: one panel per series (loss, learning rate,
//! active slots), with the value range and the step range written on the axes.

use std::path::Path;

use super::canvas::{text_width, Canvas, Rgb, BLACK, WHITE};
use slotcon_shards::io_err;

use crate::error::{Error, Result};

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

/// The curves side by side, each in a `panel_w × panel_h` panel.
pub fn curves_png(curves: &[Curve], panel_w: usize, panel_h: usize) -> Canvas {
    let mut c = Canvas::new(curves.len() * panel_w, panel_h, WHITE);
    for (i, curve) in curves.iter().enumerate() {
        panel(&mut c, i * panel_w, curve, panel_w, panel_h);
    }
    c
}

fn panel(c: &mut Canvas, x0: usize, curve: &Curve, w: usize, h: usize) {
    let (left, right, top, bottom) = (x0 + 64, x0 + w - 12, 22, h - 22);
    c.text(x0 + (w - text_width(&curve.title, 1)) / 2, 6, &curve.title, BLACK, 1);
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
    c.text(left - 4 - text_width(&hi_label, 1), top, &hi_label, BLACK, 1);
    c.text(left - 4 - text_width(&lo_label, 1), bottom - 7, &lo_label, BLACK, 1);
    c.text(left, bottom + 6, &format!("{sx0}"), BLACK, 1);
    let last = format!("step {sx1}");
    c.text(right - text_width(&last, 1), bottom + 6, &last, BLACK, 1);
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
        let c = curves_png(&[curve.clone(), curve], 300, 200);
        assert_eq!((c.w, c.h), (600, 200));
        assert!(c.rgb.chunks_exact(3).any(|p| p == [200, 0, 0]), "the line is drawn");
        assert_eq!(label(0.000625), "6.25e-4");
        assert_eq!(label(5.5), "5.500");
    }
}
