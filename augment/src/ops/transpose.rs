//! Transposing RGB images, in cache-sized tiles.

/// `src` is a `w × h` RGB image (rows of `w` pixels); writes its transpose, `h × w`, to
/// `dst`.
pub fn transpose(src: &[u8], dst: &mut [u8], w: usize, h: usize) {
    transpose_rect(src, w, (0, 0, w, h), dst);
}

/// Writes the transpose of the `rw × rh` rectangle at `(x, y)` of an RGB image with
/// `stride_px` pixels per row into `dst` (`rw` rows of `rh` pixels).
///
/// Panics if the rectangle is not inside `src` or `dst` is too small. With AVX2, whole
/// 8 × 8 blocks go through registers (each pixel widened to a word, the words
/// transposed, narrowed back), and the strips left at the right and bottom edges are
/// copied pixel by pixel.
pub fn transpose_rect(src: &[u8], stride_px: usize, rect: (usize, usize, usize, usize), dst: &mut [u8]) {
    let (x, y, rw, rh) = rect;
    if rw == 0 || rh == 0 {
        return;
    }
    assert!(
        x + rw <= stride_px && ((y + rh - 1) * stride_px + x + rw) * 3 <= src.len(),
        "rectangle outside the image"
    );
    assert!(rw * rh * 3 <= dst.len(), "destination too small");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let (bw, bh) = (rw / 8 * 8, rh / 8 * 8);
        // SAFETY: AVX2 was just detected; the rectangle lies inside `src` and `dst` holds
        // rw * rh pixels (both checked above), and the blocks lie inside the rectangle.
        unsafe { blocks::transpose_blocks(src, stride_px, (x, y, bw, bh), rh, dst) };
        pixels(src, stride_px, rect, (bw..rw, 0..rh), dst);
        pixels(src, stride_px, rect, (0..bw, bh..rh), dst);
        return;
    }
    pixels(src, stride_px, rect, (0..rw, 0..rh), dst);
}

/// [`transpose_rect`] for the pixels `(xx, yy)` of the rectangle in the given ranges, one
/// by one (the rectangle already checked).
fn pixels(
    src: &[u8],
    stride_px: usize,
    (x, y, _, rh): (usize, usize, usize, usize),
    (xs, ys): (std::ops::Range<usize>, std::ops::Range<usize>),
    dst: &mut [u8],
) {
    const TILE: usize = 16;
    for y0 in ys.clone().step_by(TILE) {
        for x0 in xs.clone().step_by(TILE) {
            for yy in y0..(y0 + TILE).min(ys.end) {
                let row = ((y + yy) * stride_px + x) * 3;
                for xx in x0..(x0 + TILE).min(xs.end) {
                    let (s, d) = (row + xx * 3, (xx * rh + yy) * 3);
                    dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod blocks {
    use std::arch::x86_64::*;

    /// Transposes the `bw × bh` rectangle at `(x, y)` (both multiples of 8) in 8 × 8
    /// blocks into `dst`, whose rows hold `rh` pixels.
    ///
    /// # Safety
    /// The CPU must support AVX2; the rectangle lies inside `src` (rows of `stride_px`
    /// pixels); `dst` holds `bw` rows of `rh >= bh` pixels.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_blocks(
        src: &[u8],
        stride_px: usize,
        (x, y, bw, bh): (usize, usize, usize, usize),
        rh: usize,
        dst: &mut [u8],
    ) {
        debug_assert!(bw % 8 == 0 && bh % 8 == 0 && bw * rh * 3 <= dst.len());
        for by in (0..bh).step_by(8) {
            for bx in (0..bw).step_by(8) {
                let rows: [__m256i; 8] = std::array::from_fn(|r| {
                    let at = ((y + by + r) * stride_px + x + bx) * 3;
                    widen(&src[at..at + 24])
                });
                for (j, column) in transpose8(rows).into_iter().enumerate() {
                    let at = ((bx + j) * rh + by) * 3;
                    narrow(column, &mut dst[at..at + 24]);
                }
            }
        }
    }

    /// Eight RGB pixels (24 bytes) as eight words `[r, g, b, 0]`.
    #[target_feature(enable = "avx2")]
    fn widen(px: &[u8]) -> __m256i {
        let mut buf = [0u8; 32];
        buf[..24].copy_from_slice(px);
        // SAFETY: 32 bytes from a 32-byte array.
        let v = unsafe { _mm256_loadu_si256(buf.as_ptr() as *const __m256i) };
        // Lane 0: bytes 0..16 (pixels 0-3 and more); lane 1: bytes 12..28 (pixels 4-7).
        let v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 1, 2, 3, 3, 4, 5, 6));
        let m = _mm256_setr_epi8(
            0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1, 0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1,
        );
        _mm256_shuffle_epi8(v, m)
    }

    /// The inverse of [`widen`]: eight words back to 24 bytes, into `out`.
    #[target_feature(enable = "avx2")]
    fn narrow(v: __m256i, out: &mut [u8]) {
        let m = _mm256_setr_epi8(
            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1,
            -1,
        );
        let packed = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, m), _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));
        let mut buf = [0u8; 32];
        // SAFETY: 32 bytes into a 32-byte array.
        unsafe { _mm256_storeu_si256(buf.as_mut_ptr() as *mut __m256i, packed) };
        out.copy_from_slice(&buf[..24]);
    }

    /// The transpose of an 8 × 8 matrix of words, one row per register.
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
        let t: [__m256i; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_epi32(a, b)
            } else {
                _mm256_unpackhi_epi32(a, b)
            }
        });
        // t[0] = (r0, r1) lo, t[1] = (r0, r1) hi, t[2] = (r2, r3) lo, ...
        let u: [__m256i; 8] = std::array::from_fn(|i| {
            let base = i / 4 * 4;
            let (a, b) = (t[base + (i % 4) / 2], t[base + 2 + (i % 4) / 2]);
            if i % 2 == 0 {
                _mm256_unpacklo_epi64(a, b)
            } else {
                _mm256_unpackhi_epi64(a, b)
            }
        });
        // u[0..4]: columns 0, 1, 2, 3 (and 4-7 in lane 1) of rows 0-3; u[4..8]: rows 4-7.
        std::array::from_fn(|j| {
            let (a, b) = (u[j % 4], u[4 + j % 4]);
            if j < 4 {
                _mm256_permute2x128_si256::<0x20>(a, b)
            } else {
                _mm256_permute2x128_si256::<0x31>(a, b)
            }
        })
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
    fn blocks_and_edges_equal_the_pixel_by_pixel_copy() {
        for (w, h, rect) in [
            (37, 29, (3, 5, 33, 24)),
            (64, 16, (0, 0, 64, 16)),
            (20, 9, (1, 0, 19, 9)),
            (8, 8, (0, 0, 8, 8)),
        ] {
            let src: Vec<u8> = (0..w * h * 3).map(|v| (v * 31 % 251) as u8).collect();
            let (rw, rh) = (rect.2, rect.3);
            let (mut fast, mut plain) = (vec![0u8; rw * rh * 3], vec![0u8; rw * rh * 3]);
            transpose_rect(&src, w, rect, &mut fast);
            pixels(&src, w, rect, (0..rw, 0..rh), &mut plain);
            assert_eq!(fast, plain, "{w}x{h} {rect:?}");
        }
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
