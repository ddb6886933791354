//! Pixel operations on 8-bit interleaved RGB, each bit-exact with PIL's code path and
//! each writing into a buffer the caller provides (or working in place).

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod blur;
pub mod color;
pub mod flip;
pub mod normalize;
pub mod resize;
pub mod transpose;

pub use blur::{gaussian_blur, BlurScratch};
pub use color::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, grayscale, solarize};
pub use flip::hflip;
pub use resize::{resize_bicubic, ResizeScratch, Taps};
