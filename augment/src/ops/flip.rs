//! Horizontal flip (`Image.transpose(FLIP_LEFT_RIGHT)`), in place.

/// Mirrors each row of a `width`-pixel-wide RGB image.
pub fn hflip(rgb: &mut [u8], width: usize) {
    for row in rgb.chunks_exact_mut(width * 3) {
        row.as_chunks_mut::<3>().0.reverse();
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
