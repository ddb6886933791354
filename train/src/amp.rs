//! Mixed precision as PyTorch's autocast does it: parameters, optimiser state, the teacher
//! and the centre stay f32 (the master copy). Inside an [`autocast`] scope the convolutions
//! and the linear layers cast their input, weight and bias down ([`down`]) and leave their
//! output in that precision, so the activations between layers are bf16 (or f16), as
//! autocast keeps them: BatchNorm takes them with its f32 γ, β and statistics and returns
//! the same precision (as cuDNN's and ATen's batch norms do), and ReLU, max pooling, the
//! residual sums and GELU run in it. The heads' outputs come back to f32 ([`up`]), so the
//! grouping, the softmaxes, the losses and their reductions compute in f32. The casts are
//! autodiff ops, so the gradients reach the f32 weights in f32.
//!
//! Like `torch.autocast`, the setting belongs to the thread that runs the forward pass;
//! the backward pass needs none (the casts are in the graph).
//!
//! ```
//! use slotcon_train::amp;
//! use slotcon_train::burn::prelude::*;
//! use slotcon_train::burn::tensor::FloatDType;
//!
//! let x = Tensor::<1>::from_floats([1.0, 2.0], &Device::flex());
//! assert_eq!(amp::down(x.clone()).dtype(), x.dtype()); // no scope: unchanged
//! let _scope = amp::autocast(Some(FloatDType::BF16));
//! assert_eq!(amp::down(x).dtype(), burn::tensor::DType::BF16);
//! ```

use std::cell::Cell;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Restores the previous setting when dropped.
#[must_use = "the autocast scope ends when this is dropped"]
pub struct Autocast {
    previous: Option<FloatDType>,
}

impl Drop for Autocast {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.previous));
    }
}

/// Until the guard drops, [`down`] casts to `dtype` on this thread (`None`: no casts).
pub fn autocast(dtype: Option<FloatDType>) -> Autocast {
    Autocast {
        previous: COMPUTE.with(|c| c.replace(dtype)),
    }
}

/// The input of a convolution or matmul: in the autocast precision when one is set.
pub fn down<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match COMPUTE.with(Cell::get) {
        Some(dtype) if DType::from(dtype) != x.dtype() => x.cast(dtype),
        _ => x,
    }
}

/// The output of an autocast region (a head's last layer): back to f32 when an autocast
/// scope is set.
pub fn up<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match COMPUTE.with(Cell::get) {
        Some(_) if x.dtype() != DType::F32 => x.cast(FloatDType::F32),
        _ => x,
    }
}
