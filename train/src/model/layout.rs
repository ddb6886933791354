//! The memory format of activations and convolution weights on LibTorch: NCHW
//! (`contiguous`) or NHWC strides (`channels_last`), as `Tensor::contiguous(format)` and
//! `model.to(memory_format=torch.channels_last)` give them in PyTorch.
//!
//! The values are the same in both; only the order in memory differs, and with it which
//! kernels oneDNN and cuDNN pick. ATen keeps a channels_last input channels_last through
//! convolutions, BatchNorm, ReLU and pooling, and so the step converts the two views and
//! every convolution weight once ([`memory_format`], [`weights_in_format`]); the rest
//! follows. Flex keeps its own layout.

// burn-tch's `LibTorch` is deprecated upstream but is the LibTorch path DESIGN §7 asks for;
// the extension macro names it in generated code.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// A tensor in a memory format, its values unchanged.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeLayout: Backend {
    /// `x` with NHWC strides when `channels_last` (4-D tensors only), else NCHW; `x` itself
    /// when it already is. Flex: `x`.
    fn memory_format_native(x: FloatTensor<Self>, channels_last: bool) -> FloatTensor<Self> {
        let _ = channels_last;
        x
    }
}

impl NativeLayout for Flex {}

/// The strides of a tensor, in elements, where the backend tells them.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeStrides: Backend {
    /// `x`'s strides; `None` where the backend keeps its own layout (flex).
    fn strides_native(x: FloatTensor<Self>) -> Option<Vec<i64>> {
        let _ = x;
        None
    }
}

impl NativeStrides for Flex {}

impl<B: NativeStrides, C: CheckpointStrategy> NativeStrides for Autodiff<B, C> {
    fn strides_native(x: FloatTensor<Self>) -> Option<Vec<i64>> {
        B::strides_native(x.into_primitive())
    }
}

#[cfg(feature = "tch")]
impl NativeLayout for burn::backend::LibTorch {
    fn memory_format_native(x: FloatTensor<Self>, channels_last: bool) -> FloatTensor<Self> {
        super::torch_ops::memory_format(x, channels_last)
    }
}

#[cfg(feature = "tch")]
impl NativeStrides for burn::backend::LibTorch {
    fn strides_native(x: FloatTensor<Self>) -> Option<Vec<i64>> {
        Some(x.tensor.stride())
    }
}

/// Whether `x` has NHWC strides (`Some(false)`: NCHW or another order; `None` on flex). A
/// dimension of size 1 may have any stride, as in ATen.
pub fn is_channels_last(x: &Tensor<4>) -> Option<bool> {
    let strides = <Dispatch as NativeStrides>::strides_native(x.clone().into_dispatch())?;
    let [n, c, h, w] = x.dims().map(|d| d as i64);
    let want = [h * w * c, 1, w * c, c];
    let sizes = [n, c, h, w];
    Some((0..4).all(|i| sizes[i] == 1 || strides[i] == want[i]))
}

/// The gradient of a change of memory format: the output's gradient, as it is.
#[derive(Debug)]
struct LayoutBackward;

impl<B: Backend> Backward<B, 1> for LayoutBackward {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: NativeLayout, C: CheckpointStrategy> NativeLayout for Autodiff<B, C> {
    fn memory_format_native(x: FloatTensor<Self>, channels_last: bool) -> FloatTensor<Self> {
        let prep = LayoutBackward.prepare::<C>([x.node()]).compute_bound();
        prep.stateless(B::memory_format_native(x.into_primitive(), channels_last))
    }
}

/// `x` in NHWC strides when `channels_last`, else NCHW (LibTorch; flex keeps its own).
pub fn memory_format<const D: usize>(x: Tensor<D>, channels_last: bool) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as NativeLayout>::memory_format_native(
        x.into_dispatch(),
        channels_last,
    ))
}

/// `module` with every 4-D parameter (the convolution weights) in NHWC strides when
/// `channels_last`, else NCHW, each still a leaf that requires a gradient when it did. A
/// weight already in that format is kept as it is, so that once a run's weights are
/// converted (the optimiser's and the EMA's element-wise updates keep the format), this
/// costs a check per weight.
pub fn weights_in_format<M: Module>(module: M, channels_last: bool) -> M {
    module.map(&mut InFormat(channels_last))
}

struct InFormat(bool);

impl ModuleMapper for InFormat {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 4 {
            return param;
        }
        let channels_last = self.0;
        // On the inner backend: a leaf that requires a gradient stays one (an op on it under
        // autodiff would make a non-leaf).
        param.map(|t| match (t.is_autodiff(), t.is_require_grad()) {
            (false, _) => memory_format(t, channels_last),
            (true, tracked) => {
                let t = Tensor::from_inner(memory_format(t.inner(), channels_last));
                if tracked {
                    t.require_grad()
                } else {
                    t
                }
            }
        })
    }
}

/// Calls `f(path, weight)` for every 4-D parameter of `module` (the convolution weights),
/// as it is held (its strides unchanged); `path` is dotted (`student.backbone.conv1.weight`).
pub fn each_weight_4d<M: Module>(module: &M, f: impl FnMut(&str, Tensor<4>)) {
    struct Each<F> {
        path: Vec<String>,
        f: F,
    }
    impl<F: FnMut(&str, Tensor<4>)> ModuleVisitor for Each<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 4 {
                let weight = Tensor::<4>::from_dispatch(param.val().into_dispatch());
                (self.f)(&self.path.join("."), weight);
            }
        }
    }
    module.visit(&mut Each { path: Vec::new(), f });
}
