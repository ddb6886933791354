//! Image decoding and pixel operations for slotcon, matching PIL's code path.
//!
//! - [`decode::decode_rgb`] turns JPEG or PNG bytes into RGB as PIL's
//!   `Image.open(p).convert('RGB')` does, with a decompression-bomb limit;
//! - [`ops::resize_bicubic`] is Pillow's bicubic `crop(box).resize(size)`, bit for bit.
//!
//! This crate has no burn dependency; it knows pixels, not tensors.
//!
//! ```
//! use slotcon_augment::{decode, ops, ImageRef, Rect};
//!
//! // A 2x1 PNG made on the fly, decoded, then resized to 4x2.
//! let mut png = Vec::new();
//! {
//!     let mut enc = png::Encoder::new(&mut png, 2, 1);
//!     enc.set_color(png::ColorType::Rgb);
//!     let mut w = enc.write_header().unwrap();
//!     w.write_image_data(&[255, 0, 0, 0, 0, 255]).unwrap();
//! }
//! let mut rgb = Vec::new();
//! let info = decode::decode_rgb(&png, decode::Limits::default(), &mut rgb)?;
//! assert_eq!((info.width, info.height), (2, 1));
//!
//! let src = ImageRef::new(&rgb, 2, 1);
//! let mut out = vec![0u8; 4 * 2 * 3];
//! ops::resize_bicubic(src, Rect::full(2, 1), &mut out, 4, 2, &mut Vec::new())?;
//! assert_eq!(&out[..3], &[255, 0, 0]);
//! # Ok::<(), slotcon_augment::Error>(())
//! ```

pub mod decode;
mod error;
mod image;
pub mod ops;

pub use error::{Error, Result};
pub use image::{ImageRef, Rect};
