//! PIL's `ImageFilter.GaussianBlur(radius=sigma)`, bit for bit (Pillow's `BoxBlur.c`):
//! three passes of an extended box blur per axis (box radius from Gwosdek et al.),
//! 24-bit fixed point, edge pixels repeated, rows first, then columns.

/// Pillow's `_gaussian_blur_radius` (float32, as in C): the extended box radius that
/// `passes` box blurs need to approximate a Gaussian of standard deviation `sigma`.
pub fn box_radius(sigma: f32, passes: u32) -> f32 {
    let sigma2 = sigma * sigma / passes as f32;
    let big_l = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// The fixed-point weights of one box pass: integer radius, inner weight, edge weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BoxKernel {
    radius: usize,
    ww: u32,
    fw: u32,
}

impl BoxKernel {
    fn new(radius: f32) -> Self {
        let r = radius as i32 as usize;
        let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
        let fw = ((1u32 << 24) - (r as u32 * 2 + 1) * ww) / 2;
        BoxKernel { radius: r, ww, fw }
    }
}

/// Blurs a `width × height` RGB image in place. `scratch` is reused between calls.
pub fn gaussian_blur(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    sigma: f32,
    scratch: &mut Vec<u8>,
) {
    const PASSES: u32 = 3;
    let radius = box_radius(sigma, PASSES);
    if sigma == 0.0 || radius == 0.0 {
        return;
    }
    let kernel = BoxKernel::new(radius);
    scratch.resize(rgb.len() + width.max(height) * 3, 0);
    let (transposed, line) = scratch.split_at_mut(rgb.len());
    for _ in 0..PASSES {
        for row in rgb.chunks_exact_mut(width * 3) {
            blur_line(row, &mut line[..width * 3], kernel);
        }
    }
    transpose(rgb, transposed, width, height);
    for _ in 0..PASSES {
        for col in transposed.chunks_exact_mut(height * 3) {
            blur_line(col, &mut line[..height * 3], kernel);
        }
    }
    transpose(transposed, rgb, height, width);
}

/// `src` is `w × h` RGB; writes its transpose (`h × w`) to `dst`.
fn transpose(src: &[u8], dst: &mut [u8], w: usize, h: usize) {
    for y in 0..h {
        for x in 0..w {
            let (s, d) = ((y * w + x) * 3, (x * h + y) * 3);
            dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
}

/// One box pass over one line of RGB pixels (Pillow's `ImagingLineBoxBlur32`), in place
/// through `tmp`.
fn blur_line(line: &mut [u8], tmp: &mut [u8], k: BoxKernel) {
    let n = line.len() / 3;
    for c in 0..3 {
        let px = |x: usize| line[x * 3 + c] as u32;
        let last = n - 1;
        let r = k.radius;
        let edge_a = (r + 1).min(n);
        // The accumulator for pixel -1: the first pixel r+1 times, then pixels 0..r-1
        // (clamped to the line).
        let mut acc = px(0).wrapping_mul(r as u32 + 1);
        for x in 0..edge_a.saturating_sub(1) {
            acc = acc.wrapping_add(px(x));
        }
        acc = acc.wrapping_add(px(last).wrapping_mul((r + 1 - edge_a) as u32));
        let clamp = |x: isize| x.clamp(0, last as isize) as usize;
        for x in 0..n {
            let (sub, add, far) = (
                clamp(x as isize - r as isize - 1),
                clamp((x + r) as isize),
                clamp((x + r + 1) as isize),
            );
            acc = acc.wrapping_add(px(add)).wrapping_sub(px(sub));
            let bulk = acc
                .wrapping_mul(k.ww)
                .wrapping_add((px(sub) + px(far)).wrapping_mul(k.fw));
            tmp[x * 3 + c] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        }
    }
    line.copy_from_slice(tmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_is_unchanged() {
        let mut img = vec![93u8; 17 * 11 * 3];
        gaussian_blur(&mut img, 17, 11, 1.7, &mut Vec::new());
        assert!(img.iter().all(|&v| v == 93));
    }

    #[test]
    fn box_radius_grows_with_sigma() {
        let rs: Vec<f32> = [0.1f32, 0.5, 1.0, 2.0]
            .iter()
            .map(|&s| box_radius(s, 3))
            .collect();
        assert!(rs.windows(2).all(|w| w[0] < w[1]), "{rs:?}");
    }

    #[test]
    fn transpose_round_trips() {
        let src: Vec<u8> = (0..5 * 3 * 3).map(|v| v as u8).collect();
        let (mut t, mut back) = (vec![0; src.len()], vec![0; src.len()]);
        transpose(&src, &mut t, 5, 3);
        transpose(&t, &mut back, 3, 5);
        assert_eq!(back, src);
    }
}
