//! Bilinear upsampling of score maps (PyTorch's `interpolate(mode="bilinear",
//! align_corners=False)`) fused with the argmax over the maps.

/// Source index pair and weight of the second one, for each output coordinate.
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// For `maps` `[k, h, w]`, writes into `out` (`out_h × out_w`) the index of the largest
/// map at each pixel after bilinear upsampling (the first on ties).
pub fn upsample_argmax(maps: &[f32], [k, h, w]: [usize; 3], out: &mut [u16], out_h: usize, out_w: usize) {
    assert_eq!(maps.len(), k * h * w, "maps are not [k, h, w]");
    assert_eq!(out.len(), out_h * out_w, "output size");
    let (ty, tx) = (taps(h, out_h), taps(w, out_w));
    let mut row = vec![0f32; k * w]; // the maps interpolated along y, for one output row
    for (oy, &(y0, y1, ly)) in ty.iter().enumerate() {
        for c in 0..k {
            let (a, b) = (&maps[(c * h + y0) * w..][..w], &maps[(c * h + y1) * w..][..w]);
            for x in 0..w {
                row[c * w + x] = a[x] * (1.0 - ly) + b[x] * ly;
            }
        }
        for (ox, &(x0, x1, lx)) in tx.iter().enumerate() {
            let mut best = (f32::NEG_INFINITY, 0u16);
            for c in 0..k {
                let v = row[c * w + x0] * (1.0 - lx) + row[c * w + x1] * lx;
                if v > best.0 {
                    best = (v, c as u16);
                }
            }
            out[oy * out_w + ox] = best.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_match_pytorch_half_pixel_coordinates() {
        // 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (i1 clamped).
        let t = taps(2, 4);
        assert_eq!(t[0], (0, 1, 0.0));
        assert_eq!(t[1], (0, 1, 0.25));
        assert_eq!(t[2], (0, 1, 0.75));
        assert_eq!(t[3], (1, 1, 0.25));
    }

    #[test]
    fn a_ramp_splits_where_the_maps_cross() {
        // Map 0 falls from 1 to 0 across two columns, map 1 rises: they cross at the middle.
        let maps = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let mut out = vec![9u16; 2 * 8];
        upsample_argmax(&maps, [2, 2, 2], &mut out, 2, 8);
        assert_eq!(&out[..8], &[0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(&out[8..], &out[..8]);
    }
}
