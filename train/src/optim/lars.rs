//! LARS as SlotCon uses it (Barlow Twins' implementation): weight decay and the trust
//! ratio `η·‖w‖/‖g‖` only on parameters with more than one dimension, then momentum
//! (`μ ← m·μ + g`) and `w ← w − lr·μ`.

use burn::optim::momentum::{Momentum, MomentumConfig, MomentumState};
use burn::optim::{ModuleOptimizer, Optimizer};
use burn::prelude::*;

/// The LARS update rule.
#[derive(Clone)]
pub struct Lars {
    weight_decay: f64,
    eta: f64,
    momentum: Momentum,
}

impl Lars {
    /// LARS with weight decay `weight_decay`, trust coefficient `eta` and `momentum`.
    pub fn new(weight_decay: f64, eta: f64, momentum: f64) -> Self {
        let m = MomentumConfig::new()
            .with_momentum(momentum)
            .with_dampening(0.0)
            .with_nesterov(false);
        Lars {
            weight_decay,
            eta,
            momentum: Momentum::new(&m),
        }
    }

    /// A module optimiser applying LARS to every parameter that has a gradient.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    /// The gradient after weight decay and the trust ratio (non-1-D parameters only).
    pub fn adapt<const D: usize>(&self, param: &Tensor<D>, grad: Tensor<D>) -> Tensor<D> {
        if D == 1 {
            return grad;
        }
        let grad = grad + param.clone() * self.weight_decay;
        let norm = |t: &Tensor<D>| t.clone().powi_scalar(2).sum().sqrt().into_scalar::<f32>() as f64;
        let (pn, un) = (norm(param), norm(&grad));
        let q = if pn > 0.0 && un > 0.0 { self.eta * pn / un } else { 1.0 };
        grad * q
    }
}

impl Optimizer for Lars {
    type State<const D: usize> = MomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<MomentumState<D>>,
    ) -> (Tensor<D>, Option<MomentumState<D>>) {
        let grad = self.adapt(&tensor, grad);
        let (update, state) = self.momentum.transform(grad, state);
        (tensor - update * lr, Some(state))
    }

    fn to_device<const D: usize>(state: MomentumState<D>, device: &Device) -> MomentumState<D> {
        state.to_device(device)
    }
}
