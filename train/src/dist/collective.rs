//! The collectives as a Burn backend extension, so that they take and give Burn tensors on
//! any device: LibTorch runs them through the process group, flex (single-process) and a
//! world of one return their input.

// burn-tch's `LibTorch` is deprecated upstream but is the LibTorch path DESIGN §7 asks for;
// the extension macro names it in generated code.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::prelude::*;

/// Which collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sum over ranks.
    Sum,
    /// Concatenation along dim 0 in rank order.
    Gather,
    /// Rank 0's value.
    Broadcast,
}

/// One collective over the process group (see [`super`]). Not differentiable: on an
/// autodiff device the result is a fresh, untracked tensor.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait Collective: Backend {
    /// `op` applied to `x` across the ranks.
    fn collective(x: FloatTensor<Self>, op: Op) -> FloatTensor<Self>;
}

impl Collective for Flex {
    fn collective(x: FloatTensor<Self>, _: Op) -> FloatTensor<Self> {
        assert!(!super::is_distributed(), "flex is single-process");
        x
    }
}

#[cfg(feature = "tch")]
impl Collective for burn::backend::LibTorch {
    fn collective(x: FloatTensor<Self>, op: Op) -> FloatTensor<Self> {
        let Some(group) = super::group() else {
            return x;
        };
        let t = match op {
            Op::Sum => group.all_reduce(&x.tensor),
            Op::Gather => group.all_gather(&x.tensor),
            Op::Broadcast => group.broadcast(&x.tensor),
        };
        <FloatTensor<Self>>::new(t)
    }
}

impl<B: Collective, C: CheckpointStrategy> Collective for Autodiff<B, C> {
    fn collective(x: FloatTensor<Self>, op: Op) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::collective(x.into_primitive(), op))
    }
}

/// `op` on `x` (the input itself in a world of one).
pub(super) fn run<const D: usize>(x: Tensor<D>, op: Op) -> Tensor<D> {
    if !super::is_distributed() {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as Collective>::collective(x.into_dispatch(), op))
}
