//! The SlotCon network, on Burn: the backbone so far.

pub mod resnet;
pub mod weights;

pub use resnet::ResNet;
pub use weights::{load_torchvision, LoadReport};
