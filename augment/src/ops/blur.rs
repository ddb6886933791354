//! PIL's `ImageFilter.GaussianBlur(radius=sigma)`, bit for bit (Pillow's `BoxBlur.c`):
//! three passes of an extended box blur per axis (box radius from Gwosdek et al.),
//! 24-bit fixed point, edge pixels repeated, rows first, then columns.

use super::transpose::transpose;

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

/// Reusable buffers for [`gaussian_blur`].
#[derive(Clone, Debug, Default)]
pub struct BlurScratch {
    a: Vec<u8>,
    b: Vec<u8>,
    acc: Vec<u32>,
}

/// Blurs a `width × height` RGB image in place.
///
/// Each box pass runs down the columns of a whole image at once (one accumulator per
/// column and channel), which vectorises; the row passes run the same code on the
/// transposed image, as Pillow's column passes do.
pub fn gaussian_blur(rgb: &mut [u8], width: usize, height: usize, sigma: f32, s: &mut BlurScratch) {
    const PASSES: u32 = 3;
    let radius = box_radius(sigma, PASSES);
    if sigma == 0.0 || radius == 0.0 {
        return;
    }
    let kernel = BoxKernel::new(radius);
    s.a.resize(rgb.len(), 0);
    s.b.resize(rgb.len(), 0);
    // Rows: blur the columns of the transpose.
    transpose(rgb, &mut s.a, width, height);
    for _ in 0..PASSES {
        box_pass_down(&s.a, &mut s.b, height, width, kernel, &mut s.acc);
        std::mem::swap(&mut s.a, &mut s.b);
    }
    transpose(&s.a, rgb, height, width);
    // Columns.
    s.a.copy_from_slice(rgb);
    for _ in 0..PASSES {
        box_pass_down(&s.a, &mut s.b, width, height, kernel, &mut s.acc);
        std::mem::swap(&mut s.a, &mut s.b);
    }
    rgb.copy_from_slice(&s.a);
}

/// One box pass down every column of a `w × h` RGB image (Pillow's
/// `ImagingLineBoxBlur32` run on each column, all columns together): rows outside the
/// image repeat the edge rows. Uses AVX2 when the CPU has it (same integer results).
fn box_pass_down(src: &[u8], dst: &mut [u8], w: usize, h: usize, k: BoxKernel, acc: &mut Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `box_pass_down_avx2` requires only that the CPU supports AVX2, which
        // `is_x86_feature_detected!` has just confirmed at run time.
        return unsafe { box_pass_down_avx2(src, dst, w, h, k, acc) };
    }
    box_pass_down_generic(src, dst, w, h, k, acc)
}

/// The generic code compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn box_pass_down_avx2(src: &[u8], dst: &mut [u8], w: usize, h: usize, k: BoxKernel, acc: &mut Vec<u32>) {
    box_pass_down_generic(src, dst, w, h, k, acc)
}

#[inline(always)]
fn box_pass_down_generic(src: &[u8], dst: &mut [u8], w: usize, h: usize, k: BoxKernel, acc: &mut Vec<u32>) {
    let stride = w * 3;
    let row = |y: usize| &src[y * stride..(y + 1) * stride];
    let (r, last) = (k.radius, h - 1);
    let edge_a = (r + 1).min(h);
    acc.clear();
    acc.extend(row(0).iter().map(|&v| v as u32 * (r as u32 + 1)));
    for y in 0..edge_a.saturating_sub(1) {
        add_row(acc, row(y), 1);
    }
    add_row(acc, row(last), (r + 1 - edge_a) as u32);
    for y in 0..h {
        let clamp = |v: isize| v.clamp(0, last as isize) as usize;
        let (sub, add, far) = (
            clamp(y as isize - r as isize - 1),
            clamp((y + r) as isize),
            clamp((y + r + 1) as isize),
        );
        let out = &mut dst[y * stride..(y + 1) * stride];
        let (rs, ra, rf) = (row(sub), row(add), row(far));
        for ((((a, o), &s), &ad), &f) in acc.iter_mut().zip(out.iter_mut()).zip(rs).zip(ra).zip(rf) {
            *a = a.wrapping_add(ad as u32).wrapping_sub(s as u32);
            let bulk = a
                .wrapping_mul(k.ww)
                .wrapping_add((s as u32 + f as u32).wrapping_mul(k.fw));
            *o = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        }
    }
}

fn add_row(acc: &mut [u32], row: &[u8], times: u32) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a = a.wrapping_add(v as u32 * times);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_is_unchanged() {
        let mut img = vec![93u8; 17 * 11 * 3];
        gaussian_blur(&mut img, 17, 11, 1.7, &mut BlurScratch::default());
        assert!(img.iter().all(|&v| v == 93));
    }

    #[test]
    fn box_radius_grows_with_sigma() {
        let rs: Vec<f32> = [0.1f32, 0.5, 1.0, 2.0].iter().map(|&s| box_radius(s, 3)).collect();
        assert!(rs.windows(2).all(|w| w[0] < w[1]), "{rs:?}");
    }
}
