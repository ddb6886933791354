//! The SlotCon network, on Burn: the backbone so far.

pub mod heads;
pub mod norm;
pub mod resnet;
pub mod slotcon;
pub mod weights;

pub use resnet::ResNet;
pub use slotcon::{align, slotcon_loss, Encoder, Losses, SlotConNet};
pub use weights::{load_torchvision, LoadReport};
