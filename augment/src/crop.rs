//! Crop sampling (SlotCon's `CustomTwoCrop`) and the geometry that travels with the views.
//!
//! View 1 is torchvision's `RandomResizedCrop.get_params`: up to `tries` attempts with
//! an area fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`,
//! `w = round(sqrt(area·r))`, `h = round(sqrt(area/r))` (half to even), `i, j` uniform
//! and inclusive, then a centre crop of clamped ratio. View 2 accepts an attempt only if
//! it overlaps crop 1 by at least `min_overlap` of its own target area, and falls back
//! to the unconditioned sampler after `tries` failures.

use serde::{Deserialize, Serialize};

use crate::rng::Draws;

/// A rectangle of an image's pixels, in torchvision's order (`RandomResizedCrop.get_params`):
/// top `i`, left `j`, height `h`, width `w`. The one rectangle type of the image path: the
/// crops the sampler draws, the region a decoder decodes and the part of it a resize reads.
/// Python's `batch.crops` and the dumps' JSON hold it as these four `u32`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Crop {
    /// Top row.
    pub i: u32,
    /// Left column.
    pub j: u32,
    /// Height.
    pub h: u32,
    /// Width.
    pub w: u32,
}

impl Crop {
    /// The rectangle whose top-left pixel is `(x, y)` and whose size is `w × h`. Sizes
    /// past `u32::MAX` (no image has them) saturate.
    pub fn xywh(x: usize, y: usize, w: usize, h: usize) -> Self {
        let px = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Crop {
            i: px(y),
            j: px(x),
            h: px(h),
            w: px(w),
        }
    }

    /// The whole of a `width × height` image.
    pub fn full(width: usize, height: usize) -> Self {
        Crop::xywh(0, 0, width, height)
    }

    /// Left column (`j`).
    pub fn left(&self) -> usize {
        self.j as usize
    }

    /// Top row (`i`).
    pub fn top(&self) -> usize {
        self.i as usize
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.w as usize
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.h as usize
    }

    /// One past the right column (cannot overflow: both terms are `u32`).
    pub fn right(&self) -> usize {
        self.left() + self.width()
    }

    /// One past the bottom row.
    pub fn bottom(&self) -> usize {
        self.top() + self.height()
    }

    /// The number of pixels.
    pub fn area(&self) -> usize {
        self.width() * self.height()
    }
}

/// The sampler's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CropSampler {
    /// Range of the crop's area as a fraction of the image (SlotCon: `(min_scale, 1)`).
    pub scale: (f64, f64),
    /// Range of the aspect ratio `w / h`, sampled log-uniformly.
    pub ratio: (f64, f64),
    /// Attempts before falling back.
    pub tries: u32,
    /// View 2's acceptance threshold: overlap with crop 1 over its own target area.
    pub min_overlap: f64,
}

impl Default for CropSampler {
    fn default() -> Self {
        CropSampler {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            tries: 10,
            min_overlap: 0.01,
        }
    }
}

/// Python's `round` (half to even) of a double, as an integer (torchvision rounds crop
/// sizes and `CenterCrop` offsets with it).
pub fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r as i64 % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

impl CropSampler {
    /// One attempt: a size from the draws, or `None` if it does not fit the image.
    fn attempt(&self, d: &mut impl Draws, width: u32, height: u32) -> Option<(u32, u32, f64)> {
        let area = width as f64 * height as f64;
        let target_area = d.uniform(self.scale.0, self.scale.1) * area;
        let aspect = d.uniform(self.ratio.0.ln(), self.ratio.1.ln()).exp();
        let w = round_half_even((target_area * aspect).sqrt());
        let h = round_half_even((target_area / aspect).sqrt());
        let fits = 0 < w && w <= width as i64 && 0 < h && h <= height as i64;
        fits.then_some((w as u32, h as u32, target_area))
    }

    /// View 1: torchvision's `RandomResizedCrop.get_params` on a `width × height` image.
    pub fn sample(&self, d: &mut impl Draws, width: u32, height: u32) -> Crop {
        for _ in 0..self.tries {
            if let Some((w, h, _)) = self.attempt(d, width, height) {
                let i = d.randint(0, height - h);
                let j = d.randint(0, width - w);
                return Crop { i, j, h, w };
            }
        }
        self.center(width, height)
    }

    /// View 2: like [`CropSampler::sample`] but an attempt must overlap `first`; returns
    /// the crop and whether it came from the unconditioned fallback.
    pub fn sample_overlapping(&self, d: &mut impl Draws, width: u32, height: u32, first: &Crop) -> (Crop, bool) {
        for _ in 0..self.tries {
            if let Some((w, h, target_area)) = self.attempt(d, width, height) {
                let i = d.randint(0, height - h);
                let j = d.randint(0, width - w);
                let c = Crop { i, j, h, w };
                if intersection(&c, first) as f64 >= self.min_overlap * target_area {
                    return (c, false);
                }
            }
        }
        (self.sample(d, width, height), true)
    }

    /// The centre crop of clamped aspect ratio used when every attempt fails.
    pub fn center(&self, width: u32, height: u32) -> Crop {
        let in_ratio = width as f64 / height as f64;
        let (lo, hi) = (self.ratio.0.min(self.ratio.1), self.ratio.0.max(self.ratio.1));
        let (w, h) = if in_ratio < lo {
            (width, round_half_even(width as f64 / lo) as u32)
        } else if in_ratio > hi {
            (round_half_even(height as f64 * hi) as u32, height)
        } else {
            (width, height)
        };
        Crop {
            i: (height - h) / 2,
            j: (width - w) / 2,
            h,
            w,
        }
    }
}

/// The overlap area of two crops in pixels (0 if disjoint).
pub fn intersection(a: &Crop, b: &Crop) -> u64 {
    let x = (a.j + a.w).min(b.j + b.w) as i64 - a.j.max(b.j) as i64;
    let y = (a.i + a.h).min(b.i + b.h) as i64 - a.i.max(b.i) as i64;
    (x.max(0) * y.max(0)) as u64
}

/// A box in a view's normalised frame (0 to 1 across the view, float32 as the official
/// code's coords), `[x1, y1, x2, y2]`: the crops' overlap as the loss aligns it. A box
/// with `x2 <= x1` or `y2 <= y1` (disjoint crops) has no extent. Laid out as its four
/// floats (a batch's boxes are one float32 `[N, 2, 4]` array) and serialised as them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct NormBox(pub [f32; 4]);

impl NormBox {
    /// The box after a horizontal flip of its view: `x1' = 1 - x2`, `x2' = 1 - x1` (float32).
    pub fn flip(self) -> Self {
        let [x1, y1, x2, y2] = self.0;
        NormBox([1.0 - x2, y1, 1.0 - x1, y2])
    }
}

impl<'a> IntoIterator for &'a NormBox {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Deref for NormBox {
    type Target = [f32; 4];

    fn deref(&self) -> &[f32; 4] {
        &self.0
    }
}

/// The overlap of the two crops in each view's normalised frame, `[x1, y1, x2, y2]`,
/// as SlotCon's `_clip_coords` computes it (float32). Disjoint crops give x2 < x1 or
/// y2 < y1, as in the reference.
pub fn overlap_boxes(a: &Crop, b: &Crop) -> [NormBox; 2] {
    let (x1, y1) = (a.j.max(b.j) as f64, a.i.max(b.i) as f64);
    let (x2, y2) = ((a.j + a.w).min(b.j + b.w) as f64, (a.i + a.h).min(b.i + b.h) as f64);
    let frame = |c: &Crop| {
        let (cx, cy, w, h) = (c.j as f64, c.i as f64, c.w as f64, c.h as f64);
        NormBox([
            ((x1 - cx) / w) as f32,
            ((y1 - cy) / h) as f32,
            ((x2 - cx) / w) as f32,
            ((y2 - cy) / h) as f32,
        ])
    };
    [frame(a), frame(b)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Replay, SampleRng};

    #[test]
    fn python_rounding() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (2.4999, 2),
            (3.5, 4),
            (223.5, 224),
            (224.5, 224),
            (7.0, 7),
        ];
        for (x, want) in cases {
            assert_eq!(round_half_even(x), want, "{x}");
        }
    }

    #[test]
    fn injected_draws_reproduce_a_hand_computed_crop() {
        // 640x480, scale u=0.5 -> area fraction 0.54, ratio u=0.5 -> aspect 1.
        let s = CropSampler::default();
        let mut d = Replay::new(vec![0.5, 0.5], vec![10, 20]);
        let c = s.sample(&mut d, 640, 480);
        let side = (0.54f64 * 640.0 * 480.0).sqrt().round() as u32;
        assert_eq!(
            c,
            Crop {
                i: 10,
                j: 20,
                h: side,
                w: side
            }
        );
        assert_eq!(d.remaining(), (0, 0));
    }

    #[test]
    fn fallback_is_a_centre_crop_of_clamped_ratio() {
        let s = CropSampler {
            scale: (2.0, 3.0),
            ..Default::default()
        }; // never fits
        let mut r = SampleRng::new(0, 0, 0, 0);
        assert_eq!(
            s.sample(&mut r, 1000, 100),
            Crop {
                i: 0,
                j: 433,
                h: 100,
                w: 133
            }
        );
        assert_eq!(
            s.sample(&mut r, 100, 1000),
            Crop {
                i: 433,
                j: 0,
                h: 133,
                w: 100
            }
        );
        assert_eq!(
            s.sample(&mut r, 120, 100),
            Crop {
                i: 0,
                j: 0,
                h: 100,
                w: 120
            }
        );
    }

    #[test]
    fn boxes_of_nested_crops() {
        let a = Crop {
            i: 0,
            j: 0,
            h: 100,
            w: 200,
        };
        let b = Crop {
            i: 50,
            j: 100,
            h: 50,
            w: 50,
        };
        let [ba, bb] = overlap_boxes(&a, &b);
        assert_eq!(ba, NormBox([0.5, 0.5, 0.75, 1.0]));
        assert_eq!(bb, NormBox([0.0, 0.0, 1.0, 1.0]));
        assert_eq!(ba.flip(), NormBox([0.25, 0.5, 0.5, 1.0]));
        assert_eq!(ba.flip().flip(), ba);
    }

    #[test]
    fn view_two_overlaps_view_one_unless_it_fell_back() {
        let s = CropSampler::default();
        for index in 0..2000 {
            let first = s.sample(&mut SampleRng::new(1, 0, index, 0), 640, 427);
            let mut r = SampleRng::new(1, 0, index, 1);
            let (second, fallback) = s.sample_overlapping(&mut r, 640, 427, &first);
            let area = second.w as f64 * second.h as f64;
            if !fallback {
                // Accepted against the *target* area, which is within rounding of w*h.
                assert!(
                    intersection(&first, &second) as f64 >= 0.0099 * area * 0.9,
                    "{first:?} {second:?}"
                );
            }
        }
    }
}
