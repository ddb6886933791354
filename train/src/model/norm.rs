//! Batch normalisation with PyTorch's running statistics.
//!
//! Burn's `BatchNorm` keeps the *biased* batch variance in `running_var` and leaves the
//! newest running value pending in a per-thread slot until the next forward, so a
//! checkpoint or the teacher's EMA read the value of the step before. This one follows
//! `torch.nn.BatchNorm{1,2}d` in train mode: `running ← (1 − m)·running + m·batch` with
//! m = 0.1 and the *unbiased* variance (`n / (n − 1)`), and settles the new value at once.
//! The field names are Burn's (`gamma`, `beta`, `running_mean`, `running_var`), so the
//! torchvision adapters map them to `weight`, `bias` and the running buffers.
//!
//! The training-mode normalisation is the backend extension [`NativeBatchNorm`]: burn-tch
//! 0.22 leaves `batch_norm_train` and its backward at Burn's generic composition (each
//! pass copies the input through a transpose), so on LibTorch it runs
//! `at::native_batch_norm` and, backwards, `at::native_batch_norm_backward`
//! ([`BatchNormOps`]), the kernels of `torch.nn.BatchNorm2d`; flex keeps Burn's.

// burn-tch's `LibTorch` is deprecated upstream but is the LibTorch path DESIGN §7 asks for;
// the extension macro names it in generated code.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use burn::tensor::module::batch_norm;

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
    pub running_mean: RunningState<Tensor<1>>,
    /// Running unbiased variance, `[c]`.
    pub running_var: RunningState<Tensor<1>>,
}

/// A fresh layer of `channels`: γ = `gamma` (1, or 0 for the last BN of a residual
/// branch), β = 0, running mean 0 and variance 1.
pub fn batch_norm_layer(channels: usize, gamma: f32, device: &Device) -> BatchNorm {
    BatchNorm {
        gamma: Param::from_tensor(Tensor::full([channels], gamma, device)),
        beta: Param::from_tensor(Tensor::zeros([channels], device)),
        running_mean: RunningState::new(Tensor::zeros([channels], device)),
        running_var: RunningState::new(Tensor::ones([channels], device)),
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
        let (out, mean, variance) = <Dispatch as NativeBatchNorm>::batch_norm_native(
            x.into_dispatch(),
            self.gamma.val().into_dispatch(),
            self.beta.val().into_dispatch(),
            EPSILON,
        );
        let (mean, variance) = (Tensor::<1>::from_dispatch(mean), Tensor::<1>::from_dispatch(variance));
        let unbiased = variance.detach() * (n as f64 / n.saturating_sub(1).max(1) as f64);
        settle(&self.running_mean, mean.detach());
        settle(&self.running_var, unbiased);
        Tensor::from_dispatch(out)
    }
}

/// Training-mode batch normalisation with the backend's own kernels, forward and backward.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeBatchNorm: Backend {
    /// `(output, batch mean, biased batch variance)` of `x` `[n, c, ...]`.
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// A backend's training-mode batch norm: the forward keeps a statistic of its choice
/// (`saved`) beside the mean, which its backward and [`BatchNormOps::bn_variance`] read.
/// By default Burn's generic ops, which save the biased variance.
pub trait BatchNormOps: Backend {
    /// `[output, mean, saved]`.
    fn bn_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        let out = Self::batch_norm_train(x, gamma, beta, eps);
        [out.output, out.mean, out.variance]
    }

    /// The biased variance from `saved`.
    fn bn_variance(saved: FloatTensor<Self>, _eps: f64) -> FloatTensor<Self> {
        saved
    }

    /// `[d x, d gamma, d beta]` for the output gradient `grad`.
    fn bn_backward(
        [x, gamma, mean, saved]: [FloatTensor<Self>; 4],
        eps: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let g = Self::batch_norm_train_backward(x, gamma, mean, saved, eps, grad);
        [g.x_grad, g.gamma_grad, g.beta_grad]
    }
}

impl BatchNormOps for Flex {}

/// LibTorch saves 1/sqrt(var + eps), as `torch.nn.BatchNorm2d` does.
#[cfg(feature = "tch")]
impl BatchNormOps for burn::backend::LibTorch {
    fn bn_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        super::torch_ops::batch_norm_forward(x, gamma, beta, eps)
    }

    fn bn_variance(invstd: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        use burn::backend::ops::FloatTensorOps;
        let var = Self::float_recip(Self::float_mul(invstd.clone(), invstd));
        Self::float_sub_scalar(var, eps.into())
    }

    fn bn_backward(
        [x, gamma, mean, invstd]: [FloatTensor<Self>; 4],
        eps: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        super::torch_ops::batch_norm_backward([&x, &gamma, &mean, &invstd], eps, &grad)
    }
}

fn bn_native<B: BatchNormOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [out, mean, saved] = B::bn_forward(x, gamma, beta, eps);
    (out, mean, B::bn_variance(saved, eps))
}

impl NativeBatchNorm for Flex {
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_native::<Self>(x, gamma, beta, eps)
    }
}

#[cfg(feature = "tch")]
impl NativeBatchNorm for burn::backend::LibTorch {
    fn batch_norm_native(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        bn_native::<Self>(x, gamma, beta, eps)
    }
}

/// The autodiff node of [`NativeBatchNorm::batch_norm_native`]'s output.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: BatchNormOps> Backward<B, 3> for BatchNormBackward {
    /// x, gamma, the mean, the saved statistic, ε.
    type State = ([FloatTensor<B>; 4], f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (saved, eps) = ops.state;
        let dx_dgamma_dbeta = B::bn_backward(saved, eps, grad);
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
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let lift = <FloatTensor<Self>>::new;
        let prep = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
        let [out, mean, saved] = B::bn_forward(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), eps);
        let variance = lift(B::bn_variance(saved.clone(), eps));
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish(([xp, gp, mean.clone(), saved], eps), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, lift(mean), variance)
    }
}

/// Blends `batch` into `state` and makes the result its value now (not at the next
/// forward), so that whatever reads the module next sees it.
fn settle(state: &RunningState<Tensor<1>>, batch: Tensor<1>) {
    let old = state.value_sync().to_device(&batch.device());
    state.update((old * (1.0 - MOMENTUM) + batch * MOMENTUM).detach());
    // The update sits in this thread's slot until a sync; sync it now.
    let _ = state.value_sync();
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
