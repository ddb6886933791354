//! Colour operations on interleaved RGB, in place, bit-exact with PIL's code path:
//! `ImageEnhance` blends (float32 maths, truncated), `convert('L')`, Pillow's 8-bit HSV
//! (as torchvision's PIL `adjust_hue` uses it), and `ImageOps.solarize`.

/// PIL's `convert('L')` of one pixel: ITU-R 601-2 luma in 16-bit fixed point.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Pillow's `ImagingBlend` of one value: `in1 + alpha * (in2 - in1)` in float32, then
/// truncated (interpolation) or clamped and truncated (extrapolation).
#[inline]
pub fn blend(in1: u8, in2: u8, alpha: f32) -> u8 {
    let v = in1 as i32 as f32 + alpha * ((in2 as i32 - in1 as i32) as f32);
    if (0.0..=1.0).contains(&alpha) {
        v as u8
    } else if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// `blend(degenerate, v, alpha)` for a constant degenerate value, for every `v`.
fn blend_table(degenerate: u8, alpha: f32) -> [u8; 256] {
    std::array::from_fn(|v| blend(degenerate, v as u8, alpha))
}

fn apply_table(rgb: &mut [u8], table: &[u8; 256]) {
    for v in rgb {
        *v = table[*v as usize];
    }
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: a blend with black.
pub fn adjust_brightness(rgb: &mut [u8], factor: f32) {
    if factor != 1.0 {
        apply_table(rgb, &blend_table(0, factor));
    }
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: a blend with the image's mean luma,
/// `int(mean(L) + 0.5)`.
pub fn adjust_contrast(rgb: &mut [u8], factor: f32) {
    if factor == 1.0 {
        return;
    }
    let sum = luma_sum(rgb);
    let n = (rgb.len() / 3).max(1) as f64;
    let mean = (sum as f64 / n + 0.5) as u8;
    apply_table(rgb, &blend_table(mean, factor));
}

/// The sum of the luma of every pixel.
fn luma_sum(rgb: &[u8]) -> u64 {
    let plain = |px: &[u8]| px.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u64).sum::<u64>();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let (blocks, rest) = rgb.split_at(rgb.len() / 24 * 24);
        // SAFETY: `is_x86_feature_detected!` has just confirmed AVX2.
        return unsafe { super::avx2::luma_sum_blocks(blocks) } + plain(rest);
    }
    plain(rgb)
}

/// `ImageEnhance.Color(img).enhance(factor)`: a blend with the luma image.
pub fn adjust_saturation(rgb: &mut [u8], factor: f32) {
    if factor == 1.0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `saturation_avx2` requires only that the CPU supports AVX2, which
        // `is_x86_feature_detected!` has just confirmed at run time.
        return unsafe { saturation_avx2(rgb, factor) };
    }
    saturation_generic(rgb, factor)
}

/// The generic code compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn saturation_avx2(rgb: &mut [u8], factor: f32) {
    let whole = rgb.len() / 24 * 24;
    let (blocks, rest) = rgb.split_at_mut(whole);
    // SAFETY: AVX2 is this function's promise.
    unsafe { super::avx2::saturation_blocks(blocks, factor) };
    saturation_generic(rest, factor)
}

#[inline(always)]
fn saturation_generic(rgb: &mut [u8], factor: f32) {
    let (px, rest) = rgb.as_chunks_mut::<3>();
    debug_assert!(rest.is_empty());
    let inside = (0.0..=1.0).contains(&factor);
    for p in px {
        let l = luma(p[0], p[1], p[2]) as i32;
        for v in p.iter_mut() {
            let x = l as f32 + factor * ((*v as i32 - l) as f32);
            // `blend`, branch-free: truncation, clamped when extrapolating.
            *v = if inside { x as u8 } else { x.clamp(0.0, 255.0) as u8 };
        }
    }
}

/// torchvision's PIL `adjust_hue`: convert to Pillow's HSV, add
/// `uint8(hue_factor * 255)` to H with wrap-around, convert back.
///
/// Uses [`HueTables`] (built once) for everything but two products per pixel; the
/// tables are filled by [`rgb_to_hsv`] and [`hsv_to_rgb`] themselves, so the result is
/// theirs exactly.
pub fn adjust_hue(rgb: &mut [u8], hue_factor: f32) {
    // No shortcut for a zero shift: Pillow's HSV round trip is lossy, and torchvision
    // converts anyway.
    let shift = hue_shift(hue_factor);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `hue_avx2` requires only that the CPU supports AVX2 (which implies the
        // SSE4.1 rounding it may use), and `is_x86_feature_detected!` has just confirmed it.
        return unsafe { hue_avx2(rgb, shift) };
    }
    hue_generic(rgb, shift)
}

/// The generic code compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hue_avx2(rgb: &mut [u8], shift: u8) {
    let whole = rgb.len() / 24 * 24;
    let (blocks, rest) = rgb.split_at_mut(whole);
    // SAFETY: AVX2 is this function's promise.
    unsafe { super::avx2::hue_blocks(blocks, shift, HueTables::get()) };
    hue_generic(rest, shift)
}

#[inline(always)]
fn hue_generic(rgb: &mut [u8], shift: u8) {
    let t = HueTables::get();
    for p in rgb.as_chunks_mut::<3>().0 {
        let (h, s, v) = t.to_hsv(p[0], p[1], p[2]);
        let (r, g, b) = t.to_rgb(h.wrapping_add(shift), s, v);
        *p = [r, g, b];
    }
}

/// Lookup tables for Pillow's HSV conversions.
///
/// Pillow's hue depends only on which channel is the maximum (in its tie order) and on
/// the other two channels' distances below it; its saturation only on `(max - min, max)`.
/// Back from HSV, the integer sector and its fraction depend only on H, and `p` only on
/// `(S, V)`; `q` and `t` are computed per pixel with Pillow's float/double maths.
pub struct HueTables {
    /// `hue[branch][d1][d2]`: branch 0 (R max) keyed by (max-G, max-B), 1 (G max) by
    /// (max-R, max-B), 2 (B max) by (max-G, max-R). Three bytes of padding follow, so
    /// that a 4-byte gather at any key stays inside (as in `sat` and `p`).
    pub(crate) hue: Vec<u8>,
    /// `sat[cr][max]`.
    pub(crate) sat: Vec<u8>,
    /// `p[s][v]`.
    pub(crate) p: Vec<u8>,
    /// The sector `0..6` of each H (words, for gathers).
    pub(crate) sector: [i32; 256],
    /// The fraction of each H within its sector.
    pub(crate) frac: [f32; 256],
    /// S as a fraction of 255.
    pub(crate) fs: [f32; 256],
}

impl HueTables {
    /// The tables, built on first use.
    pub fn get() -> &'static HueTables {
        static TABLES: std::sync::OnceLock<HueTables> = std::sync::OnceLock::new();
        TABLES.get_or_init(HueTables::build)
    }

    fn build() -> Self {
        let mut hue = vec![0u8; 3 * 256 * 256 + 3];
        for d1 in 0..256usize {
            for d2 in 0..256usize {
                let (a, b) = (255 - d1 as u8, 255 - d2 as u8);
                hue[d1 * 256 + d2] = rgb_to_hsv(255, a, b).0;
                hue[65536 + d1 * 256 + d2] = if d1 == 0 { 0 } else { rgb_to_hsv(a, 255, b).0 };
                hue[131072 + d1 * 256 + d2] = if d1 == 0 || d2 == 0 { 0 } else { rgb_to_hsv(b, a, 255).0 };
            }
        }
        let mut sat = vec![0u8; 256 * 256 + 3];
        let mut p = vec![0u8; 256 * 256 + 3];
        for x in 0..256usize {
            for y in 0..256usize {
                if x <= y {
                    sat[x * 256 + y] = rgb_to_hsv(y as u8, (y - x) as u8, (y - x) as u8).1;
                }
                p[x * 256 + y] = hsv_parts(0, x as u8, y as u8).0;
            }
        }
        let sector = std::array::from_fn(|h| (h as f32 as f64 * 6.0 / 255.0).floor() as i32 % 6);
        let frac = std::array::from_fn(|h| {
            let hf = h as f32 as f64 * 6.0 / 255.0;
            (hf - hf.floor() as i32 as f32 as f64) as f32
        });
        let fs = std::array::from_fn(|s| (s as f32 as f64 / 255.0) as f32);
        HueTables {
            hue,
            sat,
            p,
            sector,
            frac,
            fs,
        }
    }

    /// [`rgb_to_hsv`] by lookup, without branches (natural images make them
    /// unpredictable): a gray pixel falls out of the tables as `(0, 0, v)`.
    #[inline(always)]
    pub fn to_hsv(&self, r: u8, g: u8, b: u8) -> (u8, u8, u8) {
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let (dr, dg, db) = ((maxc - r) as usize, (maxc - g) as usize, (maxc - b) as usize);
        let by_r = dg << 8 | db;
        let by_g = 65536 | dr << 8 | db;
        let by_b = 131072 | dg << 8 | dr;
        let key = if dr == 0 {
            by_r
        } else if dg == 0 {
            by_g
        } else {
            by_b
        };
        (
            self.hue[key],
            self.sat[(maxc - minc) as usize * 256 + maxc as usize],
            maxc,
        )
    }

    /// [`hsv_to_rgb`] with table lookups for everything but `q` and `t`, without
    /// branches: at `s = 0`, `p`, `q` and `t` are all `v`.
    #[inline(always)]
    pub fn to_rgb(&self, h: u8, s: u8, v: u8) -> (u8, u8, u8) {
        let (f, fs, vf) = (self.frac[h as usize], self.fs[s as usize], v as f32 as f64);
        let p = self.p[s as usize * 256 + v as usize];
        let q = clip_round(vf * (1.0 - (fs * f) as f64));
        let t = clip_round(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
        let values = [v, p, q, t];
        let [a, b, c] = SECTORS[self.sector[h as usize] as usize];
        (values[a as usize], values[b as usize], values[c as usize])
    }
}

/// Pillow's channel order for each of the six hue sectors, as indices into `[v, p, q, t]`
/// (see [`sector_rgb`]).
pub(crate) const SECTORS: [[u8; 3]; 6] = [[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]];

#[inline(always)]
fn clip_round(x: f64) -> u8 {
    (x.round() as i32).clamp(0, 255) as u8
}

/// Pillow's channel order for each of the six hue sectors.
#[inline(always)]
fn sector_rgb(i: i32, v: u8, p: u8, q: u8, t: u8) -> (u8, u8, u8) {
    match i % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// `np.uint8(hue_factor * 255)` as a C cast: truncate toward zero, wrap modulo 256.
pub fn hue_shift(hue_factor: f32) -> u8 {
    (hue_factor as f64 * 255.0) as i32 as u8
}

/// Pillow's `rgb2hsv_row` (Convert.c), with its float/double promotions.
pub fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if minc == maxc {
        return (0, 0, maxc);
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + rc as f64 - bc as f64) as f32
    } else {
        (4.0 + gc as f64 - rc as f64) as f32
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    let clip = |x: f64| (x as i32).clamp(0, 255) as u8;
    (clip(h as f64 * 255.0), clip(s as f64 * 255.0), maxc)
}

/// Pillow's `hsv2rgb` (Convert.c), with its float/double promotions.
pub fn hsv_to_rgb(h: u8, s: u8, v: u8) -> (u8, u8, u8) {
    if s == 0 {
        return (v, v, v);
    }
    let (p, q, t, i) = hsv_parts(h, s, v);
    sector_rgb(i, v, p, q, t)
}

/// `p, q, t` and the sector `i` of Pillow's `hsv2rgb`.
fn hsv_parts(h: u8, s: u8, v: u8) -> (u8, u8, u8, i32) {
    let hf = h as f32 as f64 * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = (hf - i as f32 as f64) as f32;
    let fs = (s as f32 as f64 / 255.0) as f32;
    let vf = v as f32 as f64;
    let p = clip_round(vf * (1.0 - fs as f64));
    let q = clip_round(vf * (1.0 - (fs * f) as f64));
    let t = clip_round(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
    (p, q, t, i)
}

/// torchvision's `rgb_to_grayscale(img, 3)` on PIL: `convert('L')` replicated.
pub fn grayscale(rgb: &mut [u8]) {
    for p in rgb.chunks_exact_mut(3) {
        p.fill(luma(p[0], p[1], p[2]));
    }
}

/// `ImageOps.solarize(img, threshold)`: values `>= threshold` become `255 - v`.
pub fn solarize(rgb: &mut [u8], threshold: u8) {
    for v in rgb {
        if *v >= threshold {
            *v = 255 - *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_known_values() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn blend_identity_and_extrapolation() {
        for v in [0u8, 1, 77, 254, 255] {
            assert_eq!(blend(13, v, 1.0), v);
            assert_eq!(blend(13, v, 0.0), 13);
        }
        assert_eq!(blend(0, 200, 1.4), 255);
        assert_eq!(blend(100, 0, 1.4), 0);
    }

    #[test]
    fn hue_shift_wraps_like_a_c_cast() {
        assert_eq!(hue_shift(0.1), 25);
        assert_eq!(hue_shift(-0.1), 231);
        assert_eq!(hue_shift(0.0), 0);
    }

    #[test]
    fn tables_agree_with_the_scalar_conversions_everywhere() {
        let t = HueTables::get();
        for r in 0..=255u8 {
            for g in 0..=255u8 {
                for b in (0..=255u8).step_by(3) {
                    assert_eq!(t.to_hsv(r, g, b), rgb_to_hsv(r, g, b), "{r} {g} {b}");
                    assert_eq!(t.to_rgb(r, g, b), hsv_to_rgb(r, g, b), "hsv {r} {g} {b}");
                }
            }
        }
    }

    #[test]
    fn gray_pixels_round_trip_through_hsv() {
        for v in 0..=255u8 {
            assert_eq!(rgb_to_hsv(v, v, v), (0, 0, v));
            assert_eq!(hsv_to_rgb(123, 0, v), (v, v, v));
        }
    }
}
