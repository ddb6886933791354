//! The normalisation constants of `ToTensor()` then `Normalize(mean, std)`.
//!
//! The normalisation itself runs where the training runs, on the device:
//! `slotcon_train::normalized` (u8 NHWC to float NCHW), tested bit-exact against
//! torchvision there. Shipping u8 to the device moves 4x fewer bytes.

/// ImageNet mean, as SlotCon uses it.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
