//! The SlotCon network, on Burn: backbone, heads, loss (`loss.rs`), and the convolution with the
//! backend's own gradients.

pub mod buffer;
pub mod heads;
pub mod layout;
pub mod loss;
pub mod native;
pub mod norm;
pub mod resnet;
pub mod slotcon;
#[cfg(feature = "tch")]
pub(crate) mod torch_ops;
pub mod weights;

pub use loss::{slotcon_loss, Losses};
pub use resnet::ResNet;
pub use slotcon::{Encoder, SlotConNet};
pub use weights::{load_torchvision, LoadReport};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::DType;

/// Calls `f(path, tensor)` for every float tensor of `module` (parameters and BatchNorm
/// statistics) in visiting order, flattened; `path` is dotted (`student.backbone.conv1.weight`).
pub fn each_float<M: Module>(module: &M, f: impl FnMut(&str, Tensor<1>)) {
    struct Each<F> {
        path: Vec<String>,
        f: F,
    }
    impl<F: FnMut(&str, Tensor<1>)> ModuleVisitor for Each<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            (self.f)(&self.path.join("."), param.val().flatten(0, D - 1));
        }
    }
    module.visit(&mut Each { path: Vec::new(), f });
}

/// One float tensor of a module: its path, stored type and values (as f32).
pub type Floats = (String, DType, Vec<f32>);

/// Every float tensor of `module` (parameters and BatchNorm statistics) in visiting order,
/// read back to the host: for comparing runs and devices, not for a training step.
pub fn floats<M: Module>(module: &M) -> Vec<Floats> {
    let mut out = Vec::new();
    each_float(module, |path, t| {
        let dtype = t.dtype();
        let v = t.into_data().convert::<f32>().try_to_vec().unwrap_or_default();
        out.push((path.to_string(), dtype, v));
    });
    out
}
