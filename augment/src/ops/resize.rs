//! Pillow's bicubic resampling (`Image.resize(size, Image.BICUBIC)`), bit for bit.
//!
//! This follows Pillow's `Resample.c`: a separable filter with a = -0.5 whose support
//! widens by the scale factor when downscaling (antialiasing); the weights are computed
//! in double precision, normalised, then turned into 22-bit fixed point; the horizontal
//! pass runs first over only the rows the vertical pass needs and rounds to u8, then the
//! vertical pass. A crop is resampled as PIL resamples `img.crop(box)`: the filter never
//! reads outside the crop.

use super::transpose::transpose_rect;
use crate::crop::Crop;
use crate::error::{Error, Result};
use crate::image::{resize_exact, ImageRef};

/// Pillow's `PRECISION_BITS` for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// The support of the bicubic kernel (in input pixels at scale 1).
const BICUBIC_SUPPORT: f64 = 2.0;

/// Pillow's `bicubic_filter` with a = -0.5.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point filter taps along one axis: for output `i`, the inputs
/// `start[i] .. start[i] + count[i]` weighted by `taps[i * ksize ..]`.
#[derive(Clone, Debug, Default)]
pub struct Taps {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    taps: Vec<i32>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` then `normalize_coeffs_8bpc`, for `in_size` inputs
    /// (the box `0..in_size`) and `out_size` outputs.
    pub fn bicubic(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = BICUBIC_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut t = Taps {
            ksize,
            bounds: Vec::with_capacity(out_size),
            taps: vec![0; out_size * ksize],
        };
        let mut weights = vec![0.0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let mut total = 0.0;
            for (x, w) in weights[..count].iter_mut().enumerate() {
                *w = bicubic((x as f64 + xmin as f64 - center + 0.5) / filterscale);
                total += *w;
            }
            for (x, &w) in weights[..count].iter().enumerate() {
                let w = if total != 0.0 { w / total } else { w };
                t.taps[xx * ksize + x] = to_fixed(w);
            }
            t.bounds.push((xmin, count));
        }
        t
    }

    fn of(&self, i: usize) -> (usize, &[i32]) {
        let (start, count) = self.bounds[i];
        (start, &self.taps[i * self.ksize..i * self.ksize + count])
    }
}

/// `normalize_coeffs_8bpc`: round half away from zero into 22-bit fixed point.
fn to_fixed(w: f64) -> i32 {
    let scaled = w * (1u32 << PRECISION_BITS) as f64;
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Pillow's `clip8` on an accumulator.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Reusable buffers for [`resize_bicubic`]: one band of the crop transposed and its
/// filtered form (`BAND` rows each), and the horizontally resized rows.
#[derive(Clone, Debug, Default)]
pub struct ResizeScratch {
    band: Vec<u8>,
    filtered: Vec<u8>,
    rows: Vec<u8>,
    acc: Vec<i32>,
}

/// Crop rows per band of the horizontal pass: the transposed copy holds one band
/// (`crop.w * BAND` pixels), never the whole crop.
pub const BAND: usize = 64;

/// The most bytes a [`ResizeScratch`] grows to for crops of images at most `width`
/// wide and `height` tall, resized to at most `out_w` columns: one band transposed and
/// filtered (`BAND` rows of `max(width, out_w)` pixels each), and the crop's rows
/// resized across (`height` rows of `out_w`), 3 bytes a pixel (besides `acc`, one row).
pub fn scratch_bytes(width: u64, height: u64, out_w: u64) -> u64 {
    let band = width.max(out_w).saturating_mul(BAND as u64 * 3);
    band.saturating_mul(2)
        .saturating_add(out_w.saturating_mul(height).saturating_mul(3))
}

/// Resizes `crop` of `src` to `out_w × out_h` with Pillow's bicubic filter, as
/// `src.crop(crop).resize((out_w, out_h), Image.BICUBIC)` does, into `dst`
/// (`out_w * out_h * 3` bytes).
pub fn resize_bicubic(
    src: ImageRef<'_>,
    crop: Crop,
    dst: &mut [u8],
    out_w: usize,
    out_h: usize,
    scratch: &mut ResizeScratch,
) -> Result<()> {
    check(src, crop, dst.len(), out_w, out_h)?;
    let horiz = Taps::bicubic(crop.width(), out_w);
    let vert = Taps::bicubic(crop.height(), out_h);
    resize_with_taps(src, crop, dst, (out_w, out_h), (&horiz, &vert), scratch);
    Ok(())
}

fn check(src: ImageRef<'_>, crop: Crop, dst_len: usize, out_w: usize, out_h: usize) -> Result<()> {
    let inside = crop.area() > 0 && crop.right() <= src.width && crop.bottom() <= src.height;
    if !inside || out_w == 0 || out_h == 0 {
        return Err(Error::Geometry(format!(
            "crop {crop:?} of {}x{} to {out_w}x{out_h} is not valid",
            src.width, src.height
        )));
    }
    if dst_len != out_w * out_h * 3 {
        return Err(Error::Geometry(format!(
            "destination holds {dst_len} bytes, {out_w}x{out_h}x3 needed"
        )));
    }
    Ok(())
}

/// The two passes with precomputed taps (`horiz` for `crop.w → out_w`, `vert` for
/// `crop.h → out_h`).
///
/// The horizontal pass runs on the transposed rows the vertical pass needs, so both
/// passes are the same column-wise loop, which vectorises; the integer sums are
/// Pillow's, only their order across pixels differs.
pub fn resize_with_taps(
    src: ImageRef<'_>,
    crop: Crop,
    dst: &mut [u8],
    (out_w, out_h): (usize, usize),
    (horiz, vert): (&Taps, &Taps),
    s: &mut ResizeScratch,
) {
    // Rows of the crop that the vertical pass reads.
    let first = vert.bounds[0].0;
    let last = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;
    let rows = last - first;
    resize_exact(&mut s.rows, rows * out_w * 3);
    if out_w == crop.width() {
        let row_bytes = out_w * 3;
        for y in 0..rows {
            let row = &src.row(crop.top() + first + y)[crop.left() * 3..crop.right() * 3];
            s.rows[y * row_bytes..(y + 1) * row_bytes].copy_from_slice(row);
        }
    } else {
        for y0 in (0..rows).step_by(BAND) {
            let n = BAND.min(rows - y0);
            horizontal_band(src, crop, (first, y0, n), out_w, horiz, s);
        }
    }
    // `s.rows` now holds rows `first..last`, `out_w` pixels each.
    if out_h == crop.height() {
        dst.copy_from_slice(&s.rows[..out_h * out_w * 3]);
    } else {
        columns(&s.rows, out_w, first, dst, vert, &mut s.acc);
    }
}

/// The horizontal pass over crop rows `first + y0 ..` (`n <= BAND` of them), written
/// to rows `y0 .. y0 + n` of `s.rows`: the band transposed, filtered down its columns
/// (the horizontal taps), transposed back.
fn horizontal_band(
    src: ImageRef<'_>,
    crop: Crop,
    (first, y0, n): (usize, usize, usize),
    out_w: usize,
    horiz: &Taps,
    s: &mut ResizeScratch,
) {
    resize_exact(&mut s.band, crop.width() * n * 3);
    transpose_rect(
        src.data,
        src.width,
        (crop.left(), crop.top() + first + y0, crop.width(), n),
        &mut s.band,
    );
    resize_exact(&mut s.filtered, out_w * n * 3);
    columns(&s.band, n, 0, &mut s.filtered, horiz, &mut s.acc);
    let rows = &mut s.rows[y0 * out_w * 3..(y0 + n) * out_w * 3];
    transpose_rect(&s.filtered, n, (0, 0, n, out_w), rows);
}

/// Filters down the columns: output row `i` of `dst` is the weighted sum of rows
/// `taps.of(i)` of `src` (rows of `width` pixels, the first being row `first`).
fn columns(src: &[u8], width: usize, first: usize, dst: &mut [u8], taps: &Taps, acc: &mut Vec<i32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `columns_avx2` requires only that the CPU supports AVX2, which
        // `is_x86_feature_detected!` has just confirmed at run time.
        return unsafe { madd::columns_avx2(src, width, first, dst, taps) };
    }
    columns_generic(src, width, first, dst, taps, acc)
}

fn columns_generic(src: &[u8], width: usize, first: usize, dst: &mut [u8], taps: &Taps, acc: &mut Vec<i32>) {
    let stride = width * 3;
    acc.resize(stride, 0);
    for (yy, out) in dst.chunks_exact_mut(stride).enumerate() {
        let (start, k) = taps.of(yy);
        acc.fill(HALF);
        for (i, &w) in k.iter().enumerate() {
            let row = &src[(start + i - first) * stride..(start + i - first + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as i32 * w;
            }
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    }
}

/// The column filter with AVX2's 16-bit multiply-adds, 16 values at a time.
///
/// A 22-bit weight does not fit 16 bits, so each is split as `hi · 2^11 + lo` with
/// `0 ≤ lo < 2^11`: `Σ v·w = 2^11 · Σ v·hi + Σ v·lo`, two `vpmaddwd` sums over pairs of
/// rows. The shifted sum may wrap in 32 bits, but the total is Pillow's `int` sum, which
/// does not overflow, and wrapping arithmetic is exact modulo 2^32, so the result is
/// Pillow's bit for bit.
#[cfg(target_arch = "x86_64")]
mod madd {
    use std::arch::x86_64::*;

    use super::{clip8, Taps, HALF, PRECISION_BITS};

    const SPLIT: i32 = 11;

    /// Two taps' weights as the (hi, lo) halves, each a pair of i16 in every i32 lane.
    #[target_feature(enable = "avx2")]
    fn pair(w0: i32, w1: i32) -> (__m256i, __m256i) {
        let hi = |w: i32| (w >> SPLIT) & 0xFFFF;
        let lo = |w: i32| w & ((1 << SPLIT) - 1);
        (
            _mm256_set1_epi32(hi(w1) << 16 | hi(w0)),
            _mm256_set1_epi32(lo(w1) << 16 | lo(w0)),
        )
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn columns_avx2(src: &[u8], width: usize, first: usize, dst: &mut [u8], taps: &Taps) {
        let stride = width * 3;
        let vectors = stride / 16 * 16;
        for (yy, out) in dst.chunks_exact_mut(stride).enumerate() {
            let (start, k) = taps.of(yy);
            // The rows this output row reads, one after the other.
            let rows = &src[(start - first) * stride..(start - first + k.len()) * stride];
            for x in (0..vectors).step_by(16) {
                // SAFETY: AVX2 is this function's promise; x + 16 <= stride, and `rows`
                // holds k.len() rows of `stride` bytes; `out` holds `stride` bytes.
                unsafe { sixteen(rows, stride, k, x, out.as_mut_ptr().add(x)) };
            }
            for x in vectors..stride {
                let sum = k
                    .iter()
                    .enumerate()
                    .fold(HALF, |a, (i, &w)| a + rows[i * stride + x] as i32 * w);
                out[x] = clip8(sum);
            }
        }
    }

    /// Output values `x .. x + 16` of one row into `out`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `rows` holds `k.len()` rows of `stride` bytes, and
    /// `x + 16 <= stride`; `out` points at 16 writable bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn sixteen(rows: &[u8], stride: usize, k: &[i32], x: usize, out: *mut u8) {
        let zero = _mm256_setzero_si256();
        let (mut hi_a, mut hi_b, mut lo_a, mut lo_b) = (zero, zero, zero, zero);
        debug_assert!(x + 16 <= stride && rows.len() == k.len() * stride);
        // SAFETY: row r < k.len() holds bytes x .. x + 16 (the caller's promise).
        let load = |r: usize| unsafe { _mm_loadu_si128(rows.as_ptr().add(r * stride + x) as *const __m128i) };
        for (i, w) in k.chunks(2).enumerate() {
            let a = load(2 * i);
            let (b, w1) = match w {
                [_, w1] => (load(2 * i + 1), *w1),
                _ => (a, 0),
            };
            let (wh, wl) = pair(w[0], w1);
            let first8 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
            let last8 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
            hi_a = _mm256_add_epi32(hi_a, _mm256_madd_epi16(first8, wh));
            lo_a = _mm256_add_epi32(lo_a, _mm256_madd_epi16(first8, wl));
            hi_b = _mm256_add_epi32(hi_b, _mm256_madd_epi16(last8, wh));
            lo_b = _mm256_add_epi32(lo_b, _mm256_madd_epi16(last8, wl));
        }
        let total = |hi: __m256i, lo: __m256i| {
            let sum = _mm256_add_epi32(_mm256_slli_epi32::<SPLIT>(hi), lo);
            _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm256_add_epi32(sum, _mm256_set1_epi32(HALF)))
        };
        // i32 → i16 (saturating, in range anyway) → u8 (saturating: Pillow's clip8).
        let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(total(hi_a, lo_a), total(hi_b, lo_b)));
        let bytes = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256::<1>(words));
        // SAFETY: `out` points at 16 writable bytes (the caller's promise).
        unsafe { _mm_storeu_si128(out as *mut __m128i, bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|v| (v * 7) as u8).collect();
        let src = ImageRef::new(&data, 4, 3);
        let mut out = vec![0; data.len()];
        resize_bicubic(src, Crop::full(4, 3), &mut out, 4, 3, &mut ResizeScratch::default()).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn constant_image_stays_constant() {
        let data = vec![77u8; 50 * 40 * 3];
        let src = ImageRef::new(&data, 50, 40);
        let mut out = vec![0; 13 * 29 * 3];
        resize_bicubic(
            src,
            Crop::xywh(3, 5, 31, 20),
            &mut out,
            13,
            29,
            &mut ResizeScratch::default(),
        )
        .unwrap();
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_column_filter_equals_the_plain_one() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut state = 12345u32;
        let mut byte = move || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 24) as u8
        };
        // Down- and upscaling (even and odd tap counts), widths that leave a tail.
        for (rows, out_rows, width) in [(640, 224, 75), (97, 224, 7), (300, 13, 16), (5, 3, 33), (224, 224, 1)] {
            let taps = Taps::bicubic(rows, out_rows);
            let src: Vec<u8> = (0..rows * width * 3).map(|_| byte()).collect();
            let (mut plain, mut simd) = (vec![0u8; out_rows * width * 3], vec![0u8; out_rows * width * 3]);
            columns_generic(&src, width, 0, &mut plain, &taps, &mut Vec::new());
            // SAFETY: AVX2 was detected above.
            unsafe { madd::columns_avx2(&src, width, 0, &mut simd, &taps) };
            assert_eq!(plain, simd, "{rows} -> {out_rows} rows of {width}");
        }
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point() {
        for (i, o) in [(640, 224), (100, 224), (7, 3), (3, 7)] {
            let t = Taps::bicubic(i, o);
            for xx in 0..o {
                let s: i32 = t.of(xx).1.iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= 8, "{i}->{o} at {xx}: {s}");
            }
        }
    }

    #[test]
    fn bad_crop_is_an_error() {
        let data = vec![0u8; 4 * 4 * 3];
        let src = ImageRef::new(&data, 4, 4);
        let mut out = vec![0; 2 * 2 * 3];
        assert!(resize_bicubic(
            src,
            Crop::xywh(2, 0, 3, 4),
            &mut out,
            2,
            2,
            &mut ResizeScratch::default()
        )
        .is_err());
    }
}
