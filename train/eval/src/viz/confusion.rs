//! A confusion matrix as a heat map: rows are the labels, columns the predicted classes
//! (same order), each row normalised, with the class names on the left.

use super::canvas::{text_width, Canvas, Rgb, BLACK, WHITE};

/// Pixels per cell.
pub const CELL: usize = 14;

/// The heat map of `counts` (`[n × n]`, row = label, column = prediction) for `classes`.
pub fn confusion_png(counts: &[u64], classes: &[String], title: &str) -> Canvas {
    let n = classes.len();
    assert_eq!(counts.len(), n * n, "a square confusion matrix");
    let left = classes.iter().map(|c| text_width(c, 1)).max().unwrap_or(0) + 8;
    let top = 20;
    let mut c = Canvas::new(left + n * CELL + 8, top + n * CELL + 8, WHITE);
    c.text(4, 6, title, BLACK, 1);
    for (r, name) in classes.iter().enumerate() {
        let row = &counts[r * n..(r + 1) * n];
        let total = row.iter().sum::<u64>().max(1) as f32;
        c.text(left - 4 - text_width(name, 1), top + r * CELL + 4, name, BLACK, 1);
        for (col, &v) in row.iter().enumerate() {
            c.fill(
                left + col * CELL,
                top + r * CELL,
                CELL - 1,
                CELL - 1,
                heat(v as f32 / total),
            );
        }
    }
    c
}

/// White (0) to dark blue (1).
fn heat(v: f32) -> Rgb {
    let mix = |a: f32, b: f32| (a + (b - a) * v.clamp(0.0, 1.0)).round() as u8;
    [mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_follows_the_classes() {
        let classes: Vec<String> = ["person", "sky", "a"].iter().map(|s| s.to_string()).collect();
        let c = confusion_png(&[5, 0, 0, 0, 3, 1, 0, 0, 0], &classes, "T");
        assert_eq!((c.w, c.h), (36 + 8 + 3 * CELL + 8, 20 + 3 * CELL + 8));
    }
}
