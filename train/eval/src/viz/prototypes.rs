//! Fig. 3 of the paper: for sampled prototypes, the images that match them best (mean
//! score over the pixels the prototype wins), with those pixels in red.

use slotcon_augment::{Draws, SampleRng};

use super::canvas::{text_width, Canvas, BLACK, WHITE};

/// An image's match to a prototype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// The image (its position in the collection).
    pub image: usize,
    /// Mean score of the prototype over the pixels it wins there.
    pub score: f32,
}

/// For each of the `k` prototypes, the `topk` best images by mean score over the pixels
/// where the prototype wins, best first. `scores` holds `n` maps `[k, h·w]`.
pub fn retrieve(scores: &[f32], n: usize, k: usize, hw: usize, topk: usize) -> Vec<Vec<Hit>> {
    let mut hits: Vec<Vec<Hit>> = vec![Vec::new(); k];
    let mut sum = vec![(0f32, 0usize); k];
    for image in 0..n {
        let s = &scores[image * k * hw..][..k * hw];
        sum.iter_mut().for_each(|v| *v = (0.0, 0));
        for p in 0..hw {
            let (best, v) =
                (0..k)
                    .map(|c| (c, s[c * hw + p]))
                    .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
            sum[best].0 += v;
            sum[best].1 += 1;
        }
        for (c, &(total, count)) in sum.iter().enumerate() {
            if count > 0 {
                hits[c].push(Hit {
                    image,
                    score: total / count as f32,
                });
            }
        }
    }
    for h in &mut hits {
        h.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.image.cmp(&b.image)));
        h.truncate(topk);
    }
    hits
}

/// `count` prototypes that win pixels somewhere, drawn with `seed`, in id order.
pub fn sample_prototypes(hits: &[Vec<Hit>], count: usize, seed: u64) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..hits.len()).filter(|&c| !hits[c].is_empty()).collect();
    let mut rng = SampleRng::new(seed, 0, 0, 3);
    for i in (1..ids.len()).rev() {
        let j = rng.randint(0, i as u32) as usize;
        ids.swap(i, j);
    }
    ids.truncate(count);
    ids.sort_unstable();
    ids
}

/// Width of the label column.
pub const LABEL: usize = 40;
/// Gap around tiles.
pub const GAP: usize = 4;

/// One grid row: a prototype and its tiles (`tile × tile` RGB with the prototype's
/// pixels, `tile × tile` flags).
pub type Row = (usize, Vec<(Vec<u8>, Vec<bool>)>);

/// The grid: `LABEL + topk·(tile + GAP)` wide, `GAP + rows·(tile + GAP)` high.
pub fn grid_png(rows: &[Row], tile: usize, topk: usize) -> Canvas {
    let mut c = Canvas::new(LABEL + topk * (tile + GAP), GAP + rows.len() * (tile + GAP), WHITE);
    for (r, (proto, tiles)) in rows.iter().enumerate() {
        let y = GAP + r * (tile + GAP);
        let name = format!("#{proto}");
        c.text((LABEL - text_width(&name, 1)) / 2, y + tile / 2 - 3, &name, BLACK, 1);
        for (i, (rgb, mask)) in tiles.iter().take(topk).enumerate() {
            let x = LABEL + i * (tile + GAP);
            c.blit(x, y, rgb, tile, tile);
            for (p, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
                c.blend(x + p % tile, y + p / tile, [255, 0, 0], 0.5);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_match_comes_first() {
        // Two prototypes, 2 pixels, 3 images; prototype 1 wins image 2 strongly.
        let scores = [
            0.9, 0.8, 0.1, 0.2, // image 0: prototype 0 wins both pixels
            0.5, 0.1, 0.4, 0.3, // image 1: 0 wins pixel 0, 1 wins pixel 1
            0.0, 0.0, 0.9, 0.7, // image 2: 1 wins both
        ];
        let hits = retrieve(&scores, 3, 2, 2, 5);
        assert_eq!(hits[0].iter().map(|h| h.image).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(hits[1].iter().map(|h| h.image).collect::<Vec<_>>(), [2, 1]);
        assert!((hits[1][0].score - 0.8).abs() < 1e-6);
        assert_eq!(sample_prototypes(&hits, 5, 0), [0, 1]);
        let g = grid_png(&[(1, vec![(vec![0; 12], vec![true; 4])])], 2, 3);
        assert_eq!((g.w, g.h), (LABEL + 3 * (2 + GAP), GAP + 2 + GAP));
    }
}
