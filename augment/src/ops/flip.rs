//! Horizontal flip (`Image.transpose(FLIP_LEFT_RIGHT)`), in place.

/// Mirrors each row of a `width`-pixel-wide RGB image.
pub fn hflip(rgb: &mut [u8], width: usize) {
    for row in rgb.chunks_exact_mut(width * 3) {
        let (mut a, mut b) = (0, width - 1);
        while a < b {
            for c in 0..3 {
                row.swap(a * 3 + c, b * 3 + c);
            }
            a += 1;
            b -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flip_is_an_involution() {
        let orig: Vec<u8> = (0..3 * 5 * 3).map(|v| v as u8).collect();
        let mut img = orig.clone();
        super::hflip(&mut img, 5);
        assert_eq!(&img[..6], &[12, 13, 14, 9, 10, 11]);
        super::hflip(&mut img, 5);
        assert_eq!(img, orig);
    }
}
