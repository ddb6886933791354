//! An RGB canvas: rectangles, lines, blending, images, 5×7 text, and PNG output
//! written atomically.

use std::path::Path;

use super::font::{glyph, ADVANCE, HEIGHT};
use crate::error::{Error, Result};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// White.
pub const WHITE: Rgb = [255, 255, 255];
/// Black.
pub const BLACK: Rgb = [0, 0, 0];

/// A `w × h` RGB image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canvas {
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `h × w × 3` bytes.
    pub rgb: Vec<u8>,
}

/// Width of `s` in pixels at `scale`.
pub fn text_width(s: &str, scale: usize) -> usize {
    s.chars().count() * ADVANCE * scale
}

/// Height of a text line at `scale`.
pub fn text_height(scale: usize) -> usize {
    HEIGHT * scale
}

/// A distinct colour for index `i` (golden-ratio hues, full saturation).
pub fn palette(i: usize) -> Rgb {
    let hue = (i as f64 * 0.618_033_988_749_895).fract() * 6.0;
    let (sector, f) = (hue.floor() as usize, hue.fract());
    let (v, q, t) = (230.0, 230.0 * (1.0 - f), 230.0 * f);
    let [r, g, b] = match sector {
        0 => [v, t, 40.0],
        1 => [q, v, 40.0],
        2 => [40.0, v, t],
        3 => [40.0, q, v],
        4 => [t, 40.0, v],
        _ => [v, 40.0, q],
    };
    [r.max(40.0) as u8, g.max(40.0) as u8, b.max(40.0) as u8]
}

impl Canvas {
    /// A canvas filled with `bg`.
    pub fn new(w: usize, h: usize, bg: Rgb) -> Self {
        Canvas {
            w,
            h,
            rgb: bg.iter().copied().cycle().take(w * h * 3).collect(),
        }
    }

    /// Sets a pixel; outside the canvas it does nothing.
    pub fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Mixes `c` into a pixel with weight `alpha`.
    pub fn blend(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            for (dst, src) in self.rgb[i..i + 3].iter_mut().zip(c) {
                *dst = (*dst as f32 * (1.0 - alpha) + src as f32 * alpha).round() as u8;
            }
        }
    }

    /// Fills a rectangle (clipped).
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..y.saturating_add(h).min(self.h) {
            for xx in x..x.saturating_add(w).min(self.w) {
                self.put(xx as i64, yy as i64, c);
            }
        }
    }

    /// Copies an RGB image (`w × h × 3` bytes) with its top-left corner at `(x, y)`.
    pub fn blit(&mut self, x: usize, y: usize, rgb: &[u8], w: usize, h: usize) {
        for yy in 0..h.min(self.h.saturating_sub(y)) {
            let n = w.min(self.w.saturating_sub(x)) * 3;
            let dst = ((y + yy) * self.w + x) * 3;
            self.rgb[dst..dst + n].copy_from_slice(&rgb[yy * w * 3..][..n]);
        }
    }

    /// A one-pixel line (Bresenham), clipped to the canvas: the work is bounded by the
    /// canvas, however far outside the end points lie.
    pub fn line(&mut self, a: (i64, i64), b: (i64, i64), c: Rgb) {
        let inside = |(x, y): (i64, i64)| x >= 0 && y >= 0 && (x as u64) < self.w as u64 && (y as u64) < self.h as u64;
        let ((x0, y0), (x1, y1)) = if inside(a) && inside(b) {
            (a, b)
        } else {
            match self.clip(a, b) {
                Some(ends) => ends,
                None => return,
            }
        };
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.put(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// The part of the segment `a`–`b` inside the canvas, its ends rounded to pixels;
    /// `None` when the segment misses the canvas. End points farther than 2³¹ px are
    /// first pulled in to that distance (Liang–Barsky in f64 is exact to well under a
    /// pixel from there; the pull moves the line by less than a millionth of a pixel per
    /// pixel).
    fn clip(&self, (x0, y0): (i64, i64), (x1, y1): (i64, i64)) -> Option<((i64, i64), (i64, i64))> {
        const FAR: f64 = (1u64 << 31) as f64;
        if self.w == 0 || self.h == 0 {
            return None;
        }
        let (mut a, mut b) = ((x0 as f64, y0 as f64), (x1 as f64, y1 as f64));
        if [a.0, a.1, b.0, b.1].iter().any(|v| v.abs() > FAR) {
            (a, b) = clip_to(a, b, (-FAR, -FAR), (FAR, FAR))?;
        }
        let (a, b) = clip_to(a, b, (0.0, 0.0), ((self.w - 1) as f64, (self.h - 1) as f64))?;
        let pixel = |p: (f64, f64)| (p.0.round() as i64, p.1.round() as i64);
        Some((pixel(a), pixel(b)))
    }

    /// Draws `s` with its top-left corner at `(x, y)` (clipped); returns its width.
    pub fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb, scale: usize) -> usize {
        for (i, ch) in s.chars().enumerate() {
            let left = x.saturating_add(i.saturating_mul(ADVANCE * scale));
            if left >= self.w || y >= self.h {
                break;
            }
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..5 {
                    if bits & (16 >> col) != 0 {
                        self.fill(left + col * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
        text_width(s, scale)
    }

    /// Writes the canvas as an RGB PNG, through a temporary file and a rename.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        let bad = |source| Error::Png {
            path: path.to_path_buf(),
            source,
        };
        enc.write_header()
            .map_err(bad)?
            .write_image_data(&self.rgb)
            .map_err(bad)?;
        Ok(slotcon_shards::format::write_atomic(path, &bytes)?)
    }
}

/// Liang–Barsky: the part of the segment `a`–`b` inside the box `lo`–`hi`, or `None`.
fn clip_to(a: (f64, f64), b: (f64, f64), lo: (f64, f64), hi: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - lo.0), (dx, hi.0 - a.0), (-dy, a.1 - lo.1), (dy, hi.1 - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
            continue;
        }
        let r = q / p;
        if p < 0.0 {
            t0 = t0.max(r);
        } else {
            t1 = t1.min(r);
        }
        if t0 > t1 {
            return None;
        }
    }
    let at = |t: f64| ((a.0 + t * dx).clamp(lo.0, hi.0), (a.1 + t * dy).clamp(lo.1, hi.1));
    Some((at(t0), at(t1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_stays_inside_and_text_has_its_width() {
        let mut c = Canvas::new(40, 12, WHITE);
        assert_eq!(c.text(1, 1, "AB1", BLACK, 1), 18);
        c.line((0, 0), (100, 100), BLACK);
        c.fill(35, 8, 10, 10, [255, 0, 0]);
        assert_eq!(c.rgb.len(), 40 * 12 * 3);
        assert_eq!(&c.rgb[(11 * 40 + 39) * 3..][..3], &[255, 0, 0]);
        assert_ne!(palette(0), palette(1));
    }

    #[test]
    fn lines_far_outside_are_clipped_not_walked() {
        let mut c = Canvas::new(40, 12, WHITE);
        let start = std::time::Instant::now();
        c.line((5, 5), (i64::MAX, i64::MAX), BLACK);
        c.line((i64::MIN, 3), (i64::MAX, 3), BLACK);
        c.line((-10, -10), (-1, 50), BLACK); // misses the canvas
        c.text(usize::MAX - 3, usize::MAX, "far", BLACK, 1);
        c.fill(usize::MAX, 0, usize::MAX, 5, BLACK);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let black = |x: usize, y: usize| c.rgb[(y * 40 + x) * 3..][..3] == BLACK;
        assert!(black(5, 5) && black(6, 6) && black(11, 11));
        assert!((0..40).all(|x| black(x, 3)), "the horizontal line crosses the canvas");
        assert!(!black(0, 0));
        // A line inside is drawn as before, end points included.
        let mut d = Canvas::new(10, 10, WHITE);
        d.line((1, 1), (8, 4), BLACK);
        assert!(d.rgb[(10 + 1) * 3..][..3] == BLACK && d.rgb[(4 * 10 + 8) * 3..][..3] == BLACK);
    }
}
