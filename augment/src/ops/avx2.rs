//! The colour operations of [`super::color`] eight pixels at a time with AVX2, each equal
//! to the scalar code (tested on every colour) and so to Pillow:
//! - hue: the same tables ([`HueTables`]) read by gathers, the same `q` and `t`
//!   arithmetic in double precision, and Pillow's sector order by blends;
//! - saturation: the same integer luma and single-precision blend;
//! - the sum of luma that contrast blends towards.

use std::arch::x86_64::*;

use super::color::{HueTables, SECTORS};

/// Shifts the hue of every pixel of `rgb` (a whole number of 8-pixel blocks) by `shift`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn hue_blocks(rgb: &mut [u8], shift: u8, t: &HueTables) {
    debug_assert_eq!(rgb.len() % 24, 0);
    for block in rgb.chunks_exact_mut(24) {
        let [r, g, b] = load_rgb(block);
        let (h, s, v) = to_hsv(t, r, g, b);
        let h = _mm256_and_si256(
            _mm256_add_epi32(h, _mm256_set1_epi32(shift as i32)),
            _mm256_set1_epi32(255),
        );
        store_rgb(block, to_rgb(t, h, s, v));
    }
}

/// Pillow's `convert('L')` of eight pixels, as [`super::color::luma`].
#[target_feature(enable = "avx2")]
fn luma(r: __m256i, g: __m256i, b: __m256i) -> __m256i {
    let mul = |x: __m256i, k: i32| _mm256_mullo_epi32(x, _mm256_set1_epi32(k));
    let sum = _mm256_add_epi32(_mm256_add_epi32(mul(r, 19595), mul(g, 38470)), mul(b, 7471));
    _mm256_srli_epi32::<16>(_mm256_add_epi32(sum, _mm256_set1_epi32(0x8000)))
}

/// `ImageEnhance.Color(img).enhance(factor)` of whole 8-pixel blocks, as
/// `saturation_generic`: `l + factor · (v − l)` in single precision, clamped (a no-op
/// when `factor` is in `[0, 1]`: the result lies between `l` and `v`), truncated.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn saturation_blocks(rgb: &mut [u8], factor: f32) {
    debug_assert_eq!(rgb.len() % 24, 0);
    let fac = _mm256_set1_ps(factor);
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    for block in rgb.chunks_exact_mut(24) {
        let [r, g, b] = load_rgb(block);
        let l = luma(r, g, b);
        let lf = _mm256_cvtepi32_ps(l);
        let blend = |v: __m256i| {
            let x = _mm256_add_ps(lf, _mm256_mul_ps(fac, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, l))));
            _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(x, lo), hi))
        };
        store_rgb(block, [blend(r), blend(g), blend(b)]);
    }
}

/// The sum of the luma of whole 8-pixel blocks.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn luma_sum_blocks(rgb: &[u8]) -> u64 {
    debug_assert_eq!(rgb.len() % 24, 0);
    let mut total = 0u64;
    // 4096 blocks of lumas up to 255 per lane stay far inside an i32.
    for run in rgb.chunks(24 * 4096) {
        let mut acc = _mm256_setzero_si256();
        for block in run.chunks_exact(24) {
            let [r, g, b] = load_rgb(block);
            acc = _mm256_add_epi32(acc, luma(r, g, b));
        }
        let mut lanes = [0u32; 8];
        // SAFETY: 32 bytes into an array of 8 u32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        total += lanes.iter().map(|&v| v as u64).sum::<u64>();
    }
    total
}

/// A gather of bytes: `table[idx]` for each lane. Safe as long as every index is below
/// `table.len() - 3` (the tables carry three bytes of padding), which the callers ensure
/// by construction of their keys (at most `3 · 65536 − 1` or `65535`).
#[target_feature(enable = "avx2")]
fn gather_u8(table: &[u8], idx: __m256i) -> __m256i {
    debug_assert!(table.len() >= 65536 + 3);
    // SAFETY: every lane's 4-byte read at table + idx stays inside `table` (see above).
    let words = unsafe { _mm256_i32gather_epi32::<1>(table.as_ptr() as *const i32, idx) };
    _mm256_and_si256(words, _mm256_set1_epi32(0xFF))
}

/// Pillow's H, S and V by the tables, as [`HueTables::to_hsv`].
#[target_feature(enable = "avx2")]
fn to_hsv(t: &HueTables, r: __m256i, g: __m256i, b: __m256i) -> (__m256i, __m256i, __m256i) {
    let maxc = _mm256_max_epi32(_mm256_max_epi32(r, g), b);
    let minc = _mm256_min_epi32(_mm256_min_epi32(r, g), b);
    let (dr, dg, db) = (
        _mm256_sub_epi32(maxc, r),
        _mm256_sub_epi32(maxc, g),
        _mm256_sub_epi32(maxc, b),
    );
    let key = |base: i32, hi: __m256i, lo: __m256i| {
        _mm256_add_epi32(_mm256_set1_epi32(base), _mm256_or_si256(_mm256_slli_epi32::<8>(hi), lo))
    };
    let zero = _mm256_setzero_si256();
    let by_b = key(131072, dg, dr);
    let by_g = _mm256_blendv_epi8(by_b, key(65536, dr, db), _mm256_cmpeq_epi32(dg, zero));
    let key = _mm256_blendv_epi8(by_g, key(0, dg, db), _mm256_cmpeq_epi32(dr, zero));
    let h = gather_u8(&t.hue, key);
    let s = gather_u8(
        &t.sat,
        _mm256_or_si256(_mm256_slli_epi32::<8>(_mm256_sub_epi32(maxc, minc)), maxc),
    );
    (h, s, maxc)
}

/// `round(x)` for `x >= 0` as Rust's `f64::round` compiles: `trunc(x + 0.5 − ½ulp)`.
#[target_feature(enable = "avx2")]
fn round_pos(x: __m256d) -> __m128i {
    let up = _mm256_add_pd(x, _mm256_set1_pd(0.49999999999999994));
    _mm256_cvttpd_epi32(_mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(up))
}

/// Back to R, G, B, as [`HueTables::to_rgb`].
#[target_feature(enable = "avx2")]
fn to_rgb(t: &HueTables, h: __m256i, s: __m256i, v: __m256i) -> [__m256i; 3] {
    // SAFETY: H and S are bytes, inside the 256-entry tables.
    let (f, fs, sector) = unsafe {
        (
            _mm256_i32gather_ps::<4>(t.frac.as_ptr(), h),
            _mm256_i32gather_ps::<4>(t.fs.as_ptr(), s),
            _mm256_i32gather_epi32::<4>(t.sector.as_ptr(), h),
        )
    };
    let p = gather_u8(&t.p, _mm256_or_si256(_mm256_slli_epi32::<8>(s), v));
    let fsf = _mm256_mul_ps(fs, f);
    let half = |x: __m256, hi: bool| {
        let x = if hi {
            _mm256_extractf128_ps::<1>(x)
        } else {
            _mm256_castps256_ps128(x)
        };
        _mm256_cvtps_pd(x)
    };
    let vf = _mm256_cvtepi32_ps(v);
    let one = _mm256_set1_pd(1.0);
    let qt = |hi: bool| {
        let (vd, fsf, fs, f) = (half(vf, hi), half(fsf, hi), half(fs, hi), half(f, hi));
        let q = _mm256_mul_pd(vd, _mm256_sub_pd(one, fsf));
        let t = _mm256_mul_pd(vd, _mm256_sub_pd(one, _mm256_mul_pd(fs, _mm256_sub_pd(one, f))));
        (round_pos(q), round_pos(t))
    };
    let ((q0, t0), (q1, t1)) = (qt(false), qt(true));
    let (q, tt) = (_mm256_set_m128i(q1, q0), _mm256_set_m128i(t1, t0));
    let pick = |c: usize| {
        let order = _mm256_setr_epi32(
            SECTORS[0][c] as i32,
            SECTORS[1][c] as i32,
            SECTORS[2][c] as i32,
            SECTORS[3][c] as i32,
            SECTORS[4][c] as i32,
            SECTORS[5][c] as i32,
            0,
            0,
        );
        let idx = _mm256_permutevar8x32_epi32(order, sector);
        let is = |k: i32| _mm256_cmpeq_epi32(idx, _mm256_set1_epi32(k));
        let out = _mm256_blendv_epi8(v, p, is(1));
        let out = _mm256_blendv_epi8(out, q, is(2));
        _mm256_blendv_epi8(out, tt, is(3))
    };
    [pick(0), pick(1), pick(2)]
}

/// Eight RGB pixels (24 bytes) as R, G and B in eight i32 lanes each.
#[target_feature(enable = "avx2")]
fn load_rgb(block: &[u8]) -> [__m256i; 3] {
    assert_eq!(block.len(), 24);
    // SAFETY: 24 bytes: 16 at 0 and 8 at 16.
    let (lo, hi) = unsafe {
        (
            _mm_loadu_si128(block.as_ptr() as *const __m128i),
            _mm_loadl_epi64(block.as_ptr().add(16) as *const __m128i),
        )
    };
    let z = -1i8;
    let channel = |c: i8| {
        // Bytes c, c+3, ... of the first 16, then the rest from the last 8.
        let from_lo: [i8; 16] = std::array::from_fn(|i| {
            let at = c + 3 * i as i8;
            if i < 8 && at < 16 {
                at
            } else {
                z
            }
        });
        let from_hi: [i8; 16] = std::array::from_fn(|i| {
            let at = c + 3 * i as i8 - 16;
            if i < 8 && (0..8).contains(&at) {
                at
            } else {
                z
            }
        });
        // SAFETY: reading 16 bytes from 16-byte arrays.
        let (ml, mh) = unsafe {
            (
                _mm_loadu_si128(from_lo.as_ptr() as *const __m128i),
                _mm_loadu_si128(from_hi.as_ptr() as *const __m128i),
            )
        };
        _mm256_cvtepu8_epi32(_mm_or_si128(_mm_shuffle_epi8(lo, ml), _mm_shuffle_epi8(hi, mh)))
    };
    [channel(0), channel(1), channel(2)]
}

/// The inverse of [`load_rgb`]: eight pixels from R, G and B lanes (values `0..=255`).
#[target_feature(enable = "avx2")]
fn store_rgb(block: &mut [u8], [r, g, b]: [__m256i; 3]) {
    assert_eq!(block.len(), 24);
    let bytes = |x: __m256i| {
        let words = _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256::<1>(x));
        _mm_packus_epi16(words, words)
    };
    // rg: R0..R7 G0..G7; bb: B0..B7 (twice).
    let (rg, bb) = (_mm_unpacklo_epi64(bytes(r), bytes(g)), bytes(b));
    let z = -1i8;
    // Output byte o is channel o % 3 of pixel o / 3.
    let masks = |first: usize| {
        let from_rg: [i8; 16] = std::array::from_fn(|i| match (first + i) % 3 {
            0 => ((first + i) / 3) as i8,
            1 => 8 + ((first + i) / 3) as i8,
            _ => z,
        });
        let from_b: [i8; 16] = std::array::from_fn(|i| match (first + i) % 3 {
            2 => ((first + i) / 3) as i8,
            _ => z,
        });
        // SAFETY: reading 16 bytes from 16-byte arrays.
        unsafe {
            (
                _mm_loadu_si128(from_rg.as_ptr() as *const __m128i),
                _mm_loadu_si128(from_b.as_ptr() as *const __m128i),
            )
        }
    };
    let out = |first: usize| {
        let (m_rg, m_b) = masks(first);
        _mm_or_si128(_mm_shuffle_epi8(rg, m_rg), _mm_shuffle_epi8(bb, m_b))
    };
    // SAFETY: 24 bytes: 16 at 0 and 8 at 16.
    unsafe {
        _mm_storeu_si128(block.as_mut_ptr() as *mut __m128i, out(0));
        _mm_storel_epi64(block.as_mut_ptr().add(16) as *mut __m128i, out(16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::color::{self, hsv_to_rgb, rgb_to_hsv};

    fn every_colour() -> Vec<u8> {
        (0u32..1 << 24)
            .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
            .collect()
    }

    #[test]
    fn saturation_and_luma_equal_the_scalar_code_on_every_colour() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let all = every_colour();
        // SAFETY: AVX2 was detected above.
        let sum = unsafe { luma_sum_blocks(&all) };
        let scalar: u64 = all.chunks_exact(3).map(|p| color::luma(p[0], p[1], p[2]) as u64).sum();
        assert_eq!(sum, scalar);
        for factor in [0.0f32, 0.8137, 1.0, 1.2, 1.9, -0.3] {
            let mut out = all.clone();
            // SAFETY: as above.
            unsafe { saturation_blocks(&mut out, factor) };
            for (a, b) in all.chunks_exact(3).zip(out.chunks_exact(3)) {
                let l = color::luma(a[0], a[1], a[2]);
                let want = [0, 1, 2].map(|c| color::blend(l, a[c], factor));
                assert_eq!(want, b, "{a:?} by {factor}");
            }
        }
    }

    #[test]
    fn blocks_equal_the_scalar_conversion_on_every_colour() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let all: Vec<u8> = (0u32..1 << 24)
            .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
            .collect();
        for shift in [0u8, 25, 231] {
            let mut out = all.clone();
            // SAFETY: AVX2 was detected above.
            unsafe { hue_blocks(&mut out, shift, HueTables::get()) };
            for (i, (a, b)) in all.chunks_exact(3).zip(out.chunks_exact(3)).enumerate() {
                let (h, s, v) = rgb_to_hsv(a[0], a[1], a[2]);
                let (r, g, bl) = hsv_to_rgb(h.wrapping_add(shift), s, v);
                assert_eq!([r, g, bl], b, "colour {i:06x}, shift {shift}");
            }
        }
    }
}
