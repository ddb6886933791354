//! Transposing RGB images, in cache-sized tiles.

/// `src` is a `w × h` RGB image (rows of `w` pixels); writes its transpose, `h × w`, to
/// `dst`.
pub fn transpose(src: &[u8], dst: &mut [u8], w: usize, h: usize) {
    transpose_rect(src, w, (0, 0, w, h), dst);
}

/// Writes the transpose of the `rw × rh` rectangle at `(x, y)` of an RGB image with
/// `stride_px` pixels per row into `dst` (`rw` rows of `rh` pixels).
///
/// Panics if the rectangle is not inside `src` or `dst` is too small; past that check,
/// each pixel moves as one 4-byte word where the word's fourth byte is the first byte of
/// a destination pixel written later (the next along its row), else as 3 bytes.
pub fn transpose_rect(src: &[u8], stride_px: usize, (x, y, rw, rh): (usize, usize, usize, usize), dst: &mut [u8]) {
    const TILE: usize = 16;
    if rw == 0 || rh == 0 {
        return;
    }
    assert!(
        x + rw <= stride_px && ((y + rh - 1) * stride_px + x + rw) * 3 <= src.len(),
        "rectangle outside the image"
    );
    assert!(rw * rh * 3 <= dst.len(), "destination too small");
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for y0 in (0..rh).step_by(TILE) {
        for x0 in (0..rw).step_by(TILE) {
            for yy in y0..(y0 + TILE).min(rh) {
                let row = ((y + yy) * stride_px + x) * 3;
                // A word may be read past a source pixel unless it is the image's last.
                let wide = yy + 1 < rh && row + (x0 + TILE).min(rw) * 3 < src.len();
                for xx in x0..(x0 + TILE).min(rw) {
                    let (s, d) = (row + xx * 3, (xx * rh + yy) * 3);
                    // SAFETY: s + 3 <= src.len() and d + 3 <= rw * rh * 3 <= dst.len() by
                    // the checks above; with `wide`, s + 4 <= src.len() and d + 4 <=
                    // (xx * rh + yy + 1) * 3 + 1 <= dst.len(), and byte d + 3 belongs to
                    // destination pixel (xx, yy + 1), written after this one (tiles run
                    // down `yy`), so the extra byte read or written is in bounds and the
                    // extra byte written is overwritten.
                    unsafe {
                        if wide {
                            let word = (sp.add(s) as *const u32).read_unaligned();
                            (dp.add(d) as *mut u32).write_unaligned(word);
                        } else {
                            std::ptr::copy_nonoverlapping(sp.add(s), dp.add(d), 3);
                        }
                    }
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
