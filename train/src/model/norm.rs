//! Batch normalisation with PyTorch's running statistics.
//!
//! Burn's `BatchNorm` keeps the *biased* batch variance in `running_var` and leaves the
//! newest running value pending in a per-thread slot until the next forward, so a
//! checkpoint or the teacher's EMA read the value of the step before. This one follows
//! `torch.nn.BatchNorm{1,2}d` in train mode: `running ← (1 − m)·running + m·batch` with
//! m = 0.1 and the *unbiased* variance (`n / (n − 1)`), and settles the new value at once.
//! The field names are Burn's (`gamma`, `beta`, `running_mean`, `running_var`), so the
//! torchvision adapters map them to `weight`, `bias` and the running buffers.

use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use burn::tensor::module::{batch_norm, batch_norm_train};

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
        let out = batch_norm_train(x, self.gamma.val(), self.beta.val(), EPSILON);
        let unbiased = out.variance.detach() * (n as f64 / n.saturating_sub(1).max(1) as f64);
        settle(&self.running_mean, out.mean.detach());
        settle(&self.running_var, unbiased);
        out.output
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
