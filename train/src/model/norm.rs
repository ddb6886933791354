//! Batch normalisation with PyTorch's running statistics.
//!
//! Burn's `BatchNorm` keeps the *biased* batch variance in `running_var` and leaves the
//! newest running value pending in a per-thread slot until the next forward, so a
//! checkpoint or the teacher's EMA read the value of the step before. This one follows
//! `torch.nn.BatchNorm{1,2}d` in train mode: `running ← (1 − m)·running + m·batch` with
//! m = 0.1 and the *unbiased* variance (`n / (n − 1)`), and keeps the new value at once
//! ([`Buffer`]).
//! The field names are Burn's (`gamma`, `beta`, `running_mean`, `running_var`), so the
//! torchvision adapters map them to `weight`, `bias` and the running buffers.
//!
//! The training-mode normalisation is the backend extension [`NativeBatchNorm`]: burn-tch
//! 0.22 leaves `batch_norm_train` and its backward at Burn's generic composition (each
//! pass copies the input through a transpose), so on LibTorch it runs
//! `at::native_batch_norm` and, backwards, `at::native_batch_norm_backward`
//! ([`BatchNormOps`]), the kernels of `torch.nn.BatchNorm2d`; flex keeps Burn's.
//!
//! In a distributed run (`crate::dist`) every training-mode batch norm is a SyncBatchNorm,
//! as the reference converts them all: on LibTorch the statistics cover every rank's batch
//! (gathered per-rank moments, combined) and the backward all-reduces the two sums that the
//! input gradient needs (`native/dist.cpp`), as `torch.nn.SyncBatchNorm` does.

// burn-tch's `LibTorch` is deprecated upstream but is the LibTorch path DESIGN §7 asks for;
// the extension macro names it in generated code.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::module::batch_norm;
use burn::tensor::{DType, FloatDType};

pub use super::buffer::Buffer;

/// PyTorch's default momentum of the running statistics.
pub const MOMENTUM: f64 = 0.1;
/// PyTorch's default ε.
pub const EPSILON: f64 = 1e-5;

/// A batch normalisation over the channel axis (dim 1) of `[n, c, ...]` inputs.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// Scale γ, `[c]`.
    pub gamma: Param<Tensor<1>>,
    /// Shift β, `[c]`.
    pub beta: Param<Tensor<1>>,
    /// Running mean, `[c]`.
    pub running_mean: Buffer<1>,
    /// Running unbiased variance, `[c]`.
    pub running_var: Buffer<1>,
}

/// A fresh layer of `channels`: γ = `gamma` (1, or 0 for the last BN of a residual
/// branch), β = 0, running mean 0 and variance 1.
pub fn batch_norm_layer(channels: usize, gamma: f32, device: &Device) -> BatchNorm {
    BatchNorm {
        gamma: Param::from_tensor(Tensor::full([channels], gamma, device)),
        beta: Param::from_tensor(Tensor::zeros([channels], device)),
        running_mean: Buffer::new(Tensor::zeros([channels], device)),
        running_var: Buffer::new(Tensor::ones([channels], device)),
    }
}

impl BatchNorm {
    /// Normalises with the batch's statistics (updating the running ones) on an autodiff
    /// device, with the running statistics elsewhere (inference).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if x.device().is_autodiff() {
            self.forward_train(x)
        } else {
            let device = x.device();
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            batch_norm(x, self.gamma.val(), self.beta.val(), mean, var, EPSILON)
        }
    }

    fn forward_train<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let [channels] = self.gamma.dims();
        let n = x.shape().num_elements() / channels.max(1);
        let device = x.device();
        let running = |s: &Buffer<1>| {
            let value = s.value();
            let value = if value.device() == device {
                value
            } else {
                value.to_device(&device)
            };
            value.into_dispatch()
        };
        let (out, mean, var) = <Dispatch as NativeBatchNorm>::batch_norm_native(
            x.into_dispatch(),
            self.gamma.val().into_dispatch(),
            self.beta.val().into_dispatch(),
            running(&self.running_mean),
            running(&self.running_var),
            EPSILON,
            n,
        );
        self.running_mean.set(Tensor::from_dispatch(mean));
        self.running_var.set(Tensor::from_dispatch(var));
        Tensor::from_dispatch(out)
    }
}

/// Training-mode batch normalisation with the backend's own kernels, forward and backward.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeBatchNorm: Backend {
    /// `(output, new running mean, new running variance)` of `x` `[n, c, ...]`, whose
    /// `count` values per channel are this rank's (the statistics may cover every rank's):
    /// the running statistics blended with the batch's ([`MOMENTUM`], the unbiased variance).
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running_mean: FloatTensor<Self>,
        running_var: FloatTensor<Self>,
        eps: f64,
        count: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// A backend's training-mode batch norm: the forward keeps a statistic of its choice
/// (`saved`) beside the mean, says how many values per channel its statistics cover
/// (`count`: this rank's `local`, or every rank's), and returns the running statistics
/// blended with the batch's; its backward reads `saved`. By default Burn's generic ops,
/// which save the biased variance of this rank's batch, and the blend as separate ops.
///
/// Under autocast `x` (and the output gradient) come in its precision while γ, β and the
/// statistics are f32, as cuDNN's and ATen's batch norms take them: the output and the
/// input gradient are in `x`'s precision, everything else f32. Burn's generic ops want one
/// dtype, so the default computes in f32 and casts the two back.
pub trait BatchNormOps: Backend {
    /// `([output, mean, saved, new running mean, new running var], count)` for `x` with
    /// `local` values per channel.
    fn bn_forward(
        x: FloatTensor<Self>,
        [gamma, beta]: [FloatTensor<Self>; 2],
        running: [FloatTensor<Self>; 2],
        eps: f64,
        local: usize,
    ) -> ([FloatTensor<Self>; 5], usize) {
        let dtype = x.dtype();
        let out = Self::batch_norm_train(as_f32::<Self>(x), gamma, beta, eps);
        let var = unbias::<Self>(out.variance.clone(), local);
        let [mean, saved] = [out.mean, out.variance];
        let [rm, rv] = blend::<Self>(running, [mean.clone(), var]);
        ([cast_to::<Self>(out.output, dtype), mean, saved, rm, rv], local)
    }

    /// `[d x, d gamma, d beta]` for the output gradient `grad`.
    fn bn_backward(
        [x, gamma, mean, saved]: [FloatTensor<Self>; 4],
        eps: f64,
        _count: usize,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let dtype = x.dtype();
        let [x, grad] = [x, grad].map(as_f32::<Self>);
        let g = Self::batch_norm_train_backward(x, gamma, mean, saved, eps, grad);
        [cast_to::<Self>(g.x_grad, dtype), g.gamma_grad, g.beta_grad]
    }
}

/// `x` in f32 (itself when it is).
fn as_f32<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    cast_to::<B>(x, DType::F32)
}

/// `x` in `dtype`, a float type (itself when it is in it already).
fn cast_to<B: Backend>(x: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    if x.dtype() == dtype {
        return x;
    }
    B::float_cast(x, FloatDType::from(dtype))
}

/// `biased · count / (count − 1)` (the biased value itself for a count of one).
fn unbias<B: Backend>(biased: FloatTensor<B>, count: usize) -> FloatTensor<B> {
    let factor = count as f64 / count.saturating_sub(1).max(1) as f64;
    B::float_mul_scalar(biased, factor.into())
}

/// `(1 − m)·running + m·batch` for the mean and the (unbiased) variance, m = [`MOMENTUM`].
fn blend<B: Backend>(running: [FloatTensor<B>; 2], batch: [FloatTensor<B>; 2]) -> [FloatTensor<B>; 2] {
    let [[rm, rv], [bm, bv]] = [running, batch];
    [(rm, bm), (rv, bv)].map(|(old, new)| {
        B::float_add(
            B::float_mul_scalar(old, (1.0 - MOMENTUM).into()),
            B::float_mul_scalar(new, MOMENTUM.into()),
        )
    })
}

impl BatchNormOps for Flex {}

/// LibTorch saves 1/sqrt(var + eps), as `torch.nn.BatchNorm2d` does, and blends the
/// running statistics inside the kernel (`_native_batch_norm_legit_functional`: one ATen
/// call, as PyTorch's in-place `native_batch_norm`). In a distributed run its statistics
/// are every rank's (SyncBatchNorm, `crate::dist`) and the blend is separate ops.
#[cfg(feature = "tch")]
impl BatchNormOps for burn::backend::LibTorch {
    fn bn_forward(
        x: FloatTensor<Self>,
        [gamma, beta]: [FloatTensor<Self>; 2],
        [rm, rv]: [FloatTensor<Self>; 2],
        eps: f64,
        local: usize,
    ) -> ([FloatTensor<Self>; 5], usize) {
        use burn::backend::ops::FloatTensorOps;
        let Some(group) = crate::dist::group() else {
            let out = super::torch_ops::batch_norm_forward(x, [gamma, beta], [rm, rv], MOMENTUM, eps);
            return (out, local);
        };
        let (out, mean, invstd, count) = group.sync_bn_forward(&x.tensor, &gamma.tensor, &beta.tensor, eps);
        let count = count.max(0) as usize;
        let [out, mean, invstd] = [out, mean, invstd].map(<FloatTensor<Self>>::new);
        let var = Self::float_recip(Self::float_mul(invstd.clone(), invstd.clone()));
        let var = unbias::<Self>(Self::float_sub_scalar(var, eps.into()), count);
        let [rm, rv] = blend::<Self>([rm, rv], [mean.clone(), var]);
        ([out, mean, invstd, rm, rv], count)
    }

    fn bn_backward(
        [x, gamma, mean, invstd]: [FloatTensor<Self>; 4],
        eps: f64,
        count: usize,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let Some(group) = crate::dist::group() else {
            return super::torch_ops::batch_norm_backward([&x, &gamma, &mean, &invstd], eps, &grad);
        };
        let grads = group.sync_bn_backward(
            &grad.tensor,
            &x.tensor,
            &gamma.tensor,
            &mean.tensor,
            &invstd.tensor,
            count as i64,
        );
        grads.map(<FloatTensor<Self>>::new)
    }
}

/// The output and the new running statistics of [`BatchNormOps::bn_forward`].
fn bn_native<B: BatchNormOps>(
    x: FloatTensor<B>,
    params: [FloatTensor<B>; 2],
    running: [FloatTensor<B>; 2],
    eps: f64,
    local: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let ([out, _, _, rm, rv], _) = B::bn_forward(x, params, running, eps, local);
    (out, rm, rv)
}

impl NativeBatchNorm for Flex {
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running_mean: FloatTensor<Self>,
        running_var: FloatTensor<Self>,
        eps: f64,
        count: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_native::<Self>(x, [gamma, beta], [running_mean, running_var], eps, count)
    }
}

#[cfg(feature = "tch")]
impl NativeBatchNorm for burn::backend::LibTorch {
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running_mean: FloatTensor<Self>,
        running_var: FloatTensor<Self>,
        eps: f64,
        count: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_native::<Self>(x, [gamma, beta], [running_mean, running_var], eps, count)
    }
}

/// The autodiff node of [`NativeBatchNorm::batch_norm_native`]'s output.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: BatchNormOps> Backward<B, 3> for BatchNormBackward {
    /// x, gamma, the mean, the saved statistic; ε; the count the statistics cover.
    type State = ([FloatTensor<B>; 4], f64, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (saved, eps, count) = ops.state;
        let dx_dgamma_dbeta = B::bn_backward(saved, eps, count, grad);
        for (node, g) in ops.parents.into_iter().zip(dx_dgamma_dbeta) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: BatchNormOps, C: CheckpointStrategy> NativeBatchNorm for Autodiff<B, C> {
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        running_mean: FloatTensor<Self>,
        running_var: FloatTensor<Self>,
        eps: f64,
        local: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let lift = <FloatTensor<Self>>::new;
        let prep = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
        let running = [running_mean.into_primitive(), running_var.into_primitive()];
        let ([out, mean, saved, rm, rv], count) = B::bn_forward(
            x.into_primitive(),
            [gamma.into_primitive(), beta.into_primitive()],
            running,
            eps,
            local,
        );
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish(([xp, gp, mean, saved], eps, count), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, lift(rm), lift(rv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_statistics_are_settled_and_unbiased() {
        let device = Device::flex().autodiff();
        let bn = batch_norm_layer(1, 1.0, &device);
        // One channel, values 0, 1, 2, 3: mean 1.5, biased var 1.25, unbiased 5/3.
        let x = Tensor::<2>::from_floats([[0.0], [1.0], [2.0], [3.0]], &device);
        let _ = bn.forward(x);
        let mean: Vec<f32> = bn
            .running_mean
            .value()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap();
        let var: Vec<f32> = bn
            .running_var
            .value()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap();
        assert!((mean[0] - 0.15).abs() < 1e-6, "{mean:?}");
        assert!((var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "{var:?}");
    }
}
