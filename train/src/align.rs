//! A loader batch on the device: its views normalised ([`view_tensor`], [`normalized`]),
//! and the plans that align the two views' score maps ([`plans`], [`AlignPlan`],
//! [`DeviceAlign`]).
//!
//! Aligning score maps to the crops' overlap is torchvision's
//! `roi_align(x, boxes · [W, H, W, H], (H, W), aligned=True)` followed by un-flipping, as
//! SlotCon's `invaug` does, written as two small matrices per sample.
//!
//! With `sampling_ratio = -1` and boxes inside the map, every output bin takes one
//! bilinear sample at its centre, and a bilinear sample is a product of a row weight and
//! a column weight, so the aligned map is `Ay · X · Axᵀ` for each channel, with `Ay`
//! (`H × H`) and `Ax` (`W × W`) built here on the CPU from the boxes and flips. The
//! flip reverses the rows of `Ax`. General sampling grids are supported the same way
//! (the average of separable samples is separable).
//!
//! A box with no extent (`x2 <= x1` or `y2 <= y1`, which the view-2 fallback produces)
//! has all-zero matrices, as torchvision's output is zero there, and is marked invalid:
//! the trainer masks those pairs out of the grouping loss (DESIGN §6).

use burn::prelude::*;
use slotcon_augment::ops::normalize::{MEAN, STD};
use slotcon_augment::{NormBox, TwoViewBatch};

/// View `v` of `batch` as a normalised float tensor `[n, 3, s, s]` on `device`.
pub fn view_tensor(batch: &TwoViewBatch, v: usize, device: &Device) -> Tensor<4> {
    normalized(batch.views()[v].to_vec(), batch.len(), batch.size(), device)
}

/// `n` RGB `s × s` images (u8 NHWC) as a normalised float tensor `[n, 3, s, s]`: the
/// bytes go to the device as they are and are normalised there.
pub fn normalized(bytes: Vec<u8>, n: usize, s: usize, device: &Device) -> Tensor<4> {
    let x = Tensor::<4, Int>::from_data(TensorData::new(bytes, [n, s, s, 3]), device).float();
    let x = x.permute([0, 3, 1, 2]) / 255.0;
    let mean = Tensor::<1>::from_floats(MEAN, device).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(STD, device).reshape([1, 3, 1, 1]);
    (x - mean) / std
}

/// The alignment of each view's score maps (`map × map`) to the pair's overlap.
pub fn plans(batch: &TwoViewBatch, map: usize) -> [AlignPlan; 2] {
    std::array::from_fn(|v| {
        let boxes: Vec<NormBox> = batch.boxes().iter().map(|b| b[v]).collect();
        let flips: Vec<bool> = batch.flips().iter().map(|f| f[v]).collect();
        AlignPlan::new(&boxes, &flips, map, map)
    })
}

/// The alignment of a batch of `n` score maps of `h × w`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignPlan {
    /// Samples.
    pub n: usize,
    /// Map height.
    pub h: usize,
    /// Map width.
    pub w: usize,
    /// Row matrices, `[n, h, h]`: output row × input row.
    pub ay: Vec<f32>,
    /// Column matrices, `[n, w, w]`: output column × input column, flips applied.
    pub ax: Vec<f32>,
    /// False for boxes with no extent.
    pub valid: Vec<bool>,
}

impl AlignPlan {
    /// The plan for `boxes` (`[x1, y1, x2, y2]` in the view's normalised frame, float32)
    /// and `flips`, on `h × w` maps.
    pub fn new(boxes: &[NormBox], flips: &[bool], h: usize, w: usize) -> Self {
        assert_eq!(boxes.len(), flips.len(), "one flip per box");
        let n = boxes.len();
        let mut plan = AlignPlan {
            n,
            h,
            w,
            ay: vec![0.0; n * h * h],
            ax: vec![0.0; n * w * w],
            valid: vec![false; n],
        };
        for (i, (b, &flip)) in boxes.iter().zip(flips).enumerate() {
            let ay = &mut plan.ay[i * h * h..(i + 1) * h * h];
            let rows = axis_weights(b[1] * h as f32, b[3] * h as f32, h, ay);
            let ax = &mut plan.ax[i * w * w..(i + 1) * w * w];
            let cols = axis_weights(b[0] * w as f32, b[2] * w as f32, w, ax);
            if !(rows && cols) {
                ay.fill(0.0);
                ax.fill(0.0);
            } else if flip {
                reverse_rows(ax, w);
            }
            plan.valid[i] = rows && cols;
        }
        plan
    }

    /// Applies sample `i`'s alignment to a `[c, h, w]` map, writing `[c, h, w]` into `out`
    /// (the CPU reference of what the trainer does with tensors).
    pub fn apply(&self, i: usize, map: &[f32], out: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        let ay = &self.ay[i * h * h..(i + 1) * h * h];
        let ax = &self.ax[i * w * w..(i + 1) * w * w];
        let mut tmp = vec![0f32; h * w];
        for (x, o) in map.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
            // tmp = Ay · X
            for r in 0..h {
                for c in 0..w {
                    tmp[r * w + c] = (0..h).map(|k| ay[r * h + k] * x[k * w + c]).sum();
                }
            }
            // out = tmp · Axᵀ
            for r in 0..h {
                for c in 0..w {
                    o[r * w + c] = (0..w).map(|k| tmp[r * w + k] * ax[c * w + k]).sum();
                }
            }
        }
    }
}

/// Fills `m` (`size × size`) with one axis's weights for the box `[start, end)` in map
/// pixels; false when the box has no extent on this axis (the weights stay zero).
fn axis_weights(start: f32, end: f32, size: usize, m: &mut [f32]) -> bool {
    // aligned=True: pixel centres sit at integer + 0.5.
    let (roi_start, roi_end) = (start - 0.5, end - 0.5);
    let roi_len = roi_end - roi_start;
    let bin = roi_len / size as f32;
    let grid = (roi_len / size as f32).ceil() as i64;
    if grid <= 0 {
        return false;
    }
    for p in 0..size {
        for g in 0..grid {
            let pos = roi_start + p as f32 * bin + (g as f32 + 0.5) * bin / grid as f32;
            add_bilinear(&mut m[p * size..(p + 1) * size], pos, 1.0 / grid as f32);
        }
    }
    true
}

/// torchvision's `bilinear_interpolate` along one axis: adds the two weights of
/// position `pos` (times `scale`) to `row`.
fn add_bilinear(row: &mut [f32], pos: f32, scale: f32) {
    let size = row.len();
    if pos < -1.0 || pos > size as f32 {
        return;
    }
    let mut y = pos.max(0.0);
    let mut low = y as usize;
    let high = if low >= size - 1 {
        low = size - 1;
        y = low as f32;
        low
    } else {
        low + 1
    };
    let ly = y - low as f32;
    row[low] += (1.0 - ly) * scale;
    row[high] += ly * scale;
}

fn reverse_rows(m: &mut [f32], size: usize) {
    for r in 0..size / 2 {
        for c in 0..size {
            m.swap(r * size + c, (size - 1 - r) * size + c);
        }
    }
}

/// An [`AlignPlan`] on the device: `Ay` `[n, h, h]` and `Axᵀ` `[n, w, w]`, uploaded once
/// and applied to the student's and the teacher's score maps of the same view.
pub struct DeviceAlign {
    ay: Tensor<3>,
    axt: Tensor<3>,
}

impl DeviceAlign {
    /// Uploads `plan` to `device`.
    pub fn new(plan: &AlignPlan, device: &Device) -> Self {
        let (n, h, w) = (plan.n, plan.h, plan.w);
        let ay = Tensor::<3>::from_data(TensorData::new(plan.ay.clone(), [n, h, h]), device);
        let ax = Tensor::<3>::from_data(TensorData::new(plan.ax.clone(), [n, w, w]), device);
        DeviceAlign {
            ay,
            axt: ax.swap_dims(1, 2),
        }
    }

    /// `Ay · X · Axᵀ` for score maps `[n, k, h, w]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, k, h, w] = x.dims();
        let ay = self.ay.clone().unsqueeze_dim::<4>(1).expand([n, k, h, h]);
        let axt = self.axt.clone().unsqueeze_dim::<4>(1).expand([n, k, w, w]);
        ay.matmul(x).matmul(axt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_frame_is_the_identity() {
        let plan = AlignPlan::new(&[NormBox([0.0, 0.0, 1.0, 1.0])], &[false], 7, 7);
        for r in 0..7 {
            for c in 0..7 {
                let want = if r == c { 1.0 } else { 0.0 };
                assert!((plan.ay[r * 7 + c] - want).abs() < 1e-6 && (plan.ax[r * 7 + c] - want).abs() < 1e-6);
            }
        }
        assert!(plan.valid[0]);
    }

    #[test]
    fn a_flip_mirrors_the_columns() {
        let map: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
        let plan = AlignPlan::new(&[NormBox([0.0, 0.0, 1.0, 1.0]); 2], &[false, true], 3, 4);
        let (mut a, mut b) = (vec![0.0; 12], vec![0.0; 12]);
        plan.apply(0, &map[..12], &mut a);
        plan.apply(1, &map[..12], &mut b);
        for r in 0..3 {
            for c in 0..4 {
                assert!((a[r * 4 + c] - b[r * 4 + 3 - c]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn empty_boxes_are_zero_and_invalid() {
        let plan = AlignPlan::new(
            &[NormBox([0.6, 0.1, 0.5, 0.9]), NormBox([0.1, 0.4, 0.9, 0.4])],
            &[false, true],
            7,
            7,
        );
        assert_eq!(plan.valid, [false, false]);
        assert!(plan.ay.iter().chain(&plan.ax).all(|&v| v == 0.0));
    }

    #[test]
    fn rows_of_an_inner_box_sum_to_one() {
        let plan = AlignPlan::new(&[NormBox([0.2, 0.3, 0.7, 0.9])], &[true], 7, 7);
        for r in 0..7 {
            let s: f32 = plan.ay[r * 7..(r + 1) * 7].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
        }
    }
}
