//! From the loader's u8 batches to device tensors and alignment plans.

use burn::prelude::*;
use slotcon_augment::ops::normalize::{MEAN, STD};
use slotcon_augment::{NormBox, TwoViewBatch};

use crate::align::AlignPlan;

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
