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
