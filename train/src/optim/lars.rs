//! LARS as SlotCon uses it (Barlow Twins' implementation): weight decay and the trust
//! ratio `η·‖w‖/‖g‖` only on parameters with more than one dimension, then momentum
//! (`μ ← m·μ + g`) and `w ← w − lr·μ`. With the trust ratio off and decay on every
//! parameter the same rule is SGD with momentum (no dampening).

use std::collections::HashMap;

use burn::backend::Dispatch;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::prelude::*;

use super::ema::visit_parameters;
use super::native::{NativeUpdate, Rule};

use crate::error::{Error, Result};

/// The momentum buffer of one parameter, kept in the parameter's float type (a state
/// restored from a checkpoint comes back as f32 and is cast on its first use).
#[derive(Clone)]
pub struct LarsState<const D: usize> {
    velocity: Tensor<D>,
}

impl<const D: usize> RecordState for LarsState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "velocity", self.velocity.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "velocity")?;
        Some(LarsState {
            velocity: Tensor::from_data(data, device),
        })
    }
}

/// The LARS update rule (or SGD, see [`Lars::sgd`]).
#[derive(Clone, Debug)]
pub struct Lars {
    weight_decay: f64,
    eta: f64,
    momentum: f64,
    /// LARS: decay and trust ratio on non-1-D parameters only; SGD: decay everywhere.
    trust_ratio: bool,
}

impl Lars {
    /// LARS with weight decay `weight_decay`, trust coefficient `eta` and `momentum`.
    pub fn new(weight_decay: f64, eta: f64, momentum: f64) -> Self {
        Lars {
            weight_decay,
            eta,
            momentum,
            trust_ratio: true,
        }
    }

    /// SGD with `momentum` (no dampening, no Nesterov) and `weight_decay` on every
    /// parameter, as `torch.optim.SGD`.
    pub fn sgd(weight_decay: f64, momentum: f64) -> Self {
        Lars {
            weight_decay,
            eta: 0.0,
            momentum,
            trust_ratio: false,
        }
    }

    /// A module optimiser applying the rule to every parameter that has a gradient.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    /// The rule for a parameter of `dims` dimensions: LARS decays and scales by the trust
    /// ratio the non-1-D ones only, SGD decays all and never scales.
    fn rule(&self, dims: usize) -> Rule {
        let multi = dims > 1;
        Rule {
            hyper: [self.weight_decay, self.eta, self.momentum],
            apply: match self.trust_ratio {
                true => [multi, multi],
                false => [true, false],
            },
        }
    }
}

impl Optimizer for Lars {
    type State<const D: usize> = LarsState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<LarsState<D>>,
    ) -> (Tensor<D>, Option<LarsState<D>>) {
        // The trust ratio stays on the device: no host round trip per parameter.
        let first = state.is_none();
        let velocity = match state {
            Some(s) => s.velocity.cast(grad.dtype()),
            None => grad.clone(),
        };
        let (next, velocity) = <Dispatch as NativeUpdate>::lars_native(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            velocity.into_dispatch(),
            first,
            lr,
            self.rule(D),
        );
        let velocity = Tensor::from_dispatch(velocity);
        (Tensor::from_dispatch(next), Some(LarsState { velocity }))
    }

    fn to_device<const D: usize>(state: LarsState<D>, device: &Device) -> LarsState<D> {
        LarsState {
            velocity: state.velocity.to_device(device),
        }
    }
}

/// Sets each parameter's momentum buffer to the "gradient" it is given and leaves the
/// parameter as it is: how [`with_momentum`] fills an optimiser's state.
#[derive(Clone, Debug)]
struct SetMomentum;

impl Optimizer for SetMomentum {
    type State<const D: usize> = LarsState<D>;

    fn step<const D: usize>(
        &self,
        _lr: f64,
        tensor: Tensor<D>,
        buffer: Tensor<D>,
        _state: Option<LarsState<D>>,
    ) -> (Tensor<D>, Option<LarsState<D>>) {
        (tensor, Some(LarsState { velocity: buffer }))
    }

    fn to_device<const D: usize>(state: LarsState<D>, device: &Device) -> LarsState<D> {
        Lars::to_device(state, device)
    }
}

/// The momentum buffers of `optim` as a module shaped like `module`: every parameter that
/// has a buffer holds it in place of its value, the others hold zeros (LARS and SGD treat
/// a missing buffer as a zero one). With the module's own names and layout it can be
/// saved like the module (`SlotConNet::save_safetensors`). `None` when `optim` holds no
/// state (no step taken).
pub fn momentum_module<M: Module>(optim: &ModuleOptimizer, module: M) -> Result<Option<M>> {
    let bytes = optim.into_bytes()?;
    let reader = burn_pack::Reader::from_bytes(bytes)?;
    let mut buffers = HashMap::new();
    for tensor in reader.into_tensors()? {
        let (name, dtype, shape, id, bytes) = tensor.into_parts()?;
        match id {
            Some(id) if name.ends_with(".velocity") => {
                buffers.insert(ParamId::from(id), TensorData::from_bytes(bytes, shape, dtype));
            }
            _ => return Err(Error::OptimizerState { name }),
        }
    }
    if buffers.is_empty() {
        return Ok(None);
    }
    Ok(Some(module.map(&mut Buffers { buffers })))
}

/// Replaces each parameter by its buffer (or zeros).
struct Buffers {
    buffers: HashMap<ParamId, TensorData>,
}

impl ModuleMapper for Buffers {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let buffer = self.buffers.remove(&param.id);
        param.map(|t| match buffer {
            Some(data) => Tensor::<D>::from_data(data, &t.device())
                .cast(t.dtype())
                .reshape(t.shape()),
            None => t.zeros_like(),
        })
    }
}

/// `optim` with its momentum buffers set from `buffers`: modules holding, in place of
/// their values, the buffers of the parameters of `module` with the same ids (the
/// student's and the predictor's, say). Returns `module` unchanged, whatever the outcome,
/// beside the optimiser.
pub fn with_momentum<M: Module>(
    optim: ModuleOptimizer,
    module: M,
    buffers: &[&dyn ModuleParams],
) -> (M, Result<ModuleOptimizer>) {
    let mut grads = GradientsParams::new();
    for b in buffers {
        b.register_values(&mut grads);
    }
    let mut setter = ModuleOptimizer::from(SetMomentum);
    let module = setter.step(0.0, module, grads);
    let optim = setter
        .into_bytes()
        .and_then(|bytes| optim.from_bytes(bytes))
        .map_err(Error::from);
    (module, optim)
}

/// A module whose parameter values can stand for gradients (object-safe, for
/// [`with_momentum`]).
pub trait ModuleParams {
    /// Registers every float parameter's value under its id; not the BatchNorm running
    /// statistics, which are buffers (visited like parameters) that no optimiser trains.
    fn register_values(&self, grads: &mut GradientsParams);
}

impl<M: Module> ModuleParams for M {
    fn register_values(&self, grads: &mut GradientsParams) {
        struct Register<'a>(&'a mut GradientsParams);
        impl ModuleVisitor for Register<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.register::<D>(param.id, param.val().detach());
            }
        }
        visit_parameters(self, &mut Register(grads));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor<2>) -> Vec<f32> {
        t.to_data().convert::<f32>().try_to_vec().unwrap()
    }

    #[test]
    fn sgd_is_torch_sgd_with_momentum_and_decay() {
        let device = Device::flex();
        let t = |v: [f32; 4]| Tensor::<1>::from_floats(v, &device).reshape([2, 2]);
        let (p0, g1, g2) = ([1.0, -2.0, 0.5, 3.0], [0.1, 0.2, -0.3, 0.4], [-0.5, 0.25, 0.0, 1.0]);
        let (lr, wd, m) = (0.1f32, 0.01f32, 0.9f32);
        let opt = Lars::sgd(wd as f64, m as f64);
        let (p1, s) = opt.step(lr as f64, t(p0), t(g1), None);
        let (p2, _) = opt.step(lr as f64, p1.clone(), t(g2), s);
        // torch.optim.SGD: v ← m·v + (g + wd·p); p ← p − lr·v (v₀ = g + wd·p on the first step).
        let want: Vec<f32> = (0..4)
            .map(|i| {
                let v1 = g1[i] + wd * p0[i];
                let q1 = p0[i] - lr * v1;
                let v2 = m * v1 + g2[i] + wd * q1;
                q1 - lr * v2
            })
            .collect();
        for (a, b) in values(&p2).iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
