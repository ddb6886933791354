//! The SlotCon network, on Burn: backbone, heads, loss, and the convolution with the
//! backend's own gradients.

pub mod heads;
pub mod native;
pub mod norm;
pub mod resnet;
pub mod slotcon;
#[cfg(feature = "tch")]
mod torch_ops;
pub mod weights;

pub use resnet::ResNet;
pub use slotcon::{align, slotcon_loss, Encoder, Losses, SlotConNet};
pub use weights::{load_torchvision, LoadReport};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::DType;

/// One float tensor of a module: its path, stored type and values (as f32).
pub type Floats = (String, DType, Vec<f32>);

/// Every float tensor of `module` (parameters and BatchNorm statistics) in visiting order,
/// read back to the host: for comparing runs and devices, not for a training step.
pub fn floats<M: Module>(module: &M) -> Vec<Floats> {
    #[derive(Default)]
    struct Collect {
        path: Vec<String>,
        out: Vec<Floats>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let dtype = t.dtype();
            let v = t.into_data().convert::<f32>().try_to_vec().unwrap_or_default();
            self.out.push((self.path.join("."), dtype, v));
        }
    }
    let mut c = Collect::default();
    module.visit(&mut c);
    c.out
}
