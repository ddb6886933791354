//! Transposing RGB images, in cache-sized tiles.

/// `src` is a `w × h` RGB image (rows of `w` pixels); writes its transpose, `h × w`, to
/// `dst`.
pub fn transpose(src: &[u8], dst: &mut [u8], w: usize, h: usize) {
    transpose_rect(src, w, (0, 0, w, h), dst);
}

/// Writes the transpose of the `rw × rh` rectangle at `(x, y)` of an RGB image with
/// `stride_px` pixels per row into `dst` (`rw` rows of `rh` pixels).
pub fn transpose_rect(src: &[u8], stride_px: usize, (x, y, rw, rh): (usize, usize, usize, usize), dst: &mut [u8]) {
    const TILE: usize = 16;
    for y0 in (0..rh).step_by(TILE) {
        for x0 in (0..rw).step_by(TILE) {
            for yy in y0..(y0 + TILE).min(rh) {
                let row = ((y + yy) * stride_px + x) * 3;
                for xx in x0..(x0 + TILE).min(rw) {
                    let (s, d) = (row + xx * 3, (xx * rh + yy) * 3);
                    dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_round_trips() {
        let src: Vec<u8> = (0..5 * 3 * 3).map(|v| v as u8).collect();
        let (mut t, mut back) = (vec![0; src.len()], vec![0; src.len()]);
        transpose(&src, &mut t, 5, 3);
        transpose(&t, &mut back, 3, 5);
        assert_eq!(back, src);
    }

    #[test]
    fn rectangle_transpose_picks_the_rectangle() {
        // 4x3 image whose pixel (x, y) holds [x, y, 0].
        let src: Vec<u8> = (0..3)
            .flat_map(|y| (0..4).flat_map(move |x| [x as u8, y as u8, 0]))
            .collect();
        let mut dst = vec![0u8; 2 * 2 * 3];
        transpose_rect(&src, 4, (1, 1, 2, 2), &mut dst);
        assert_eq!(dst, [1, 1, 0, 1, 2, 0, 2, 1, 0, 2, 2, 0]);
    }
}
