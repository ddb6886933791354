//! One image's slots: the image, the image coloured by its winning prototype per pixel,
//! and a legend of the prototype ids with their share of the image.

use super::canvas::{palette, Canvas, BLACK, WHITE};

/// Legend width in pixels.
pub const LEGEND: usize = 96;
/// Gap between the panels.
pub const GAP: usize = 8;

/// Prototypes present in `assign`, by pixel count (largest first, then by id).
pub fn present(assign: &[u16]) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for &a in assign {
        *counts.entry(a).or_insert(0usize) += 1;
    }
    let mut v: Vec<(u16, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// `view` (`size × size` RGB) beside its prototype map (`assign`, one id per pixel) and
/// the legend: `2·size + GAP + LEGEND` wide, `size` high.
pub fn overlay_png(view: &[u8], size: usize, assign: &[u16]) -> Canvas {
    let mut c = Canvas::new(2 * size + GAP + LEGEND, size, WHITE);
    c.blit(0, 0, view, size, size);
    c.blit(size + GAP, 0, view, size, size);
    for (i, &a) in assign.iter().enumerate() {
        c.blend(size + GAP + i % size, i / size, palette(a as usize), 0.6);
    }
    let x = 2 * size + GAP + 6;
    let rows = present(assign);
    let fits = (size.saturating_sub(4) / 12).max(1);
    for (line, &(id, n)) in rows.iter().take(fits).enumerate() {
        let y = 4 + line * 12;
        let last_line = line + 1 == fits && rows.len() > fits;
        if last_line {
            c.text(x, y, &format!("+{} more", rows.len() - line), BLACK, 1);
            break;
        }
        c.fill(x, y, 9, 9, palette(id as usize));
        let pct = 100.0 * n as f64 / assign.len() as f64;
        c.text(x + 13, y + 1, &format!("#{id} {pct:.0}%"), BLACK, 1);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_lists_prototypes_by_area() {
        let assign = [3u16, 3, 3, 7, 7, 1, 3, 1, 3];
        assert_eq!(present(&assign), [(3, 5), (1, 2), (7, 2)]);
        let c = overlay_png(&[128; 27], 3, &assign);
        assert_eq!((c.w, c.h), (6 + GAP + LEGEND, 3));
    }
}
