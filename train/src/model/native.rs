//! Convolutions and ReLUs whose gradients are the backend's own.
//!
//! Burn's autodiff differentiates a convolution with `conv2d_x_backward` and
//! `conv2d_weight_backward`, which burn-tch 0.22 leaves at Burn's generic formulas (a
//! transposed convolution and a convolution over swapped dimensions): on LibTorch that
//! backward took 1.8x PyTorch's. [`conv2d`] runs a convolution through the backend
//! extension [`NativeConv`], whose autodiff node asks the backend for both gradients at
//! once ([`ConvGrads`]): LibTorch answers with `at::convolution_backward`, the function
//! PyTorch's own autograd calls (through `native/backward.cpp`), flex with Burn's
//! formulas as before. Forward and results are unchanged; only who computes the gradient.
//! [`relu`] likewise: its backward is LibTorch's `threshold_backward` (one pass) where
//! Burn's generic one compares, then fills (two passes and a mask).

// burn-tch's `LibTorch` is deprecated upstream but is the LibTorch path DESIGN §7 asks for;
// the extension macro names it in generated code.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;

use crate::amp;

/// A convolution whose autodiff node uses [`ConvGrads`].
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeConv: Backend {
    /// `conv2d(x, weight)` without bias.
    fn conv2d_native(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }
}

impl NativeConv for Flex {}

#[cfg(feature = "tch")]
impl NativeConv for burn::backend::LibTorch {}

/// The gradients of a bias-free convolution with respect to its input and its weight (each
/// only when asked for).
pub trait ConvGrads: Backend {
    /// `(d x, d weight)` for the output gradient `grad`; Burn's generic formulas by default.
    fn conv2d_grads(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        want: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        let dx = want[0].then(|| Self::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone()));
        let dw = want[1].then(|| Self::conv2d_weight_backward(x, weight, grad, options));
        [dx, dw]
    }
}

impl ConvGrads for Flex {}

#[cfg(feature = "tch")]
impl ConvGrads for burn::backend::LibTorch {
    fn conv2d_grads(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        want: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        super::torch_ops::conv2d_backward(&x, &weight, &grad, &options, want)
    }
}

/// The autodiff node of [`NativeConv::conv2d_native`].
#[derive(Debug)]
struct ConvBackward;

impl<B: ConvGrads> Backward<B, 2> for ConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, options) = ops.state;
        let want = [node_x.is_some(), node_w.is_some()];
        let [dx, dw] = B::conv2d_grads(x, weight, grad, options, want);
        for (node, g) in [(node_x, dx), (node_w, dw)] {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: ConvGrads, C: CheckpointStrategy> NativeConv for Autodiff<B, C> {
    fn conv2d_native(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let out = B::conv2d(xp.clone(), wp.clone(), None, options.clone());
                prep.finish((xp, wp, options), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d(x.into_primitive(), weight.into_primitive(), None, options))
            }
        }
    }
}

/// The options of `conv` (symmetric explicit padding, as every convolution here has).
fn options(conv: &Conv2d) -> ConvOptions<2> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, _, _) => [top, left],
        _ => [0, 0],
    };
    ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups)
}

/// `conv.forward(x)`, with the backend's own gradients, in the autocast precision when one
/// is set ([`amp::autocast`]: input, weight and bias cast down, and the output left in that
/// precision, as autocast leaves it).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let (x, weight) = (amp::down(x), amp::down_param(&conv.weight));
    let out = <Dispatch as NativeConv>::conv2d_native(x.into_dispatch(), weight.into_dispatch(), options(conv));
    let out = Tensor::<4>::from_dispatch(out);
    match &conv.bias {
        Some(bias) => out + amp::down_param(bias).reshape([1, -1, 1, 1]),
        None => out,
    }
}

/// A ReLU whose autodiff node uses [`ReluGrad`].
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeRelu: Backend {
    /// `max(x, 0)`.
    fn relu_native(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }
}

impl NativeRelu for Flex {}

#[cfg(feature = "tch")]
impl NativeRelu for burn::backend::LibTorch {}

/// The gradient of a ReLU from its output (positive exactly where its input is).
pub trait ReluGrad: Backend {
    /// `grad` where `out > 0`, else 0; Burn's generic formula by default.
    fn relu_grad(out: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu_backward(out, grad)
    }
}

impl ReluGrad for Flex {}

#[cfg(feature = "tch")]
impl ReluGrad for burn::backend::LibTorch {
    fn relu_grad(out: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // ATen's `threshold_backward(grad_output, self, threshold)`: tch makes `self` the
        // receiver. PyTorch's in-place ReLU passes its output there too.
        <FloatTensor<Self>>::new(out.tensor.threshold_backward(&grad.tensor, 0.0))
    }
}

#[derive(Debug)]
struct ReluBackward;

impl<B: ReluGrad> Backward<B, 1> for ReluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::relu_grad(ops.state, grad));
        }
    }
}

impl<B: ReluGrad, C: CheckpointStrategy> NativeRelu for Autodiff<B, C> {
    fn relu_native(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match ReluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            // The output is saved, not the input: `out > 0` exactly where `x > 0` (and a
            // NaN stays a NaN), and the output is what the next layer saves anyway, so the
            // input (a BatchNorm's output, a residual sum) is freed at once, as PyTorch's
            // in-place ReLU leaves only one of the two.
            OpsKind::Tracked(prep) => {
                let out = B::relu(x.into_primitive());
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu(x.into_primitive())),
        }
    }
}

/// `max(x, 0)` with the backend's own gradient.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as NativeRelu>::relu_native(x.into_dispatch()))
}
