//! Pixel operations on 8-bit RGB, each writing into a buffer the caller provides.

pub mod resize;

pub use resize::{resize_bicubic, Taps};
