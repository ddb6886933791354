//! Turning one source file into what the store keeps: validate by decoding fully, then
//! keep the original bytes, or resize and re-encode, or keep raw RGB.

use slotcon_augment::decode::{decode_rgb, Limits};
use slotcon_augment::ops::resize_bicubic;
use slotcon_augment::{Crop, ImageRef};
use slotcon_shards::input::{read_bounded, MAX_IMAGE_FILE};
use slotcon_shards::StoreKind;

use crate::config::IngestConfig;
use crate::scan::SourceFile;

/// An image ready for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The payload.
    pub bytes: Vec<u8>,
    /// Width of the stored image.
    pub width: u32,
    /// Height of the stored image.
    pub height: u32,
    /// Size of the source file.
    pub bytes_in: u64,
}

/// Why one source file is skipped. Its message is the report's reason, which stands
/// beside the file's path, so it does not repeat the path.
#[derive(Debug, thiserror::Error)]
pub enum Skip {
    /// The file could not be read, or is not a regular file of a bounded size.
    #[error("{}", read_reason(.0))]
    Read(#[source] slotcon_shards::Error),
    /// The file is not an image this decoder accepts, or is corrupt.
    #[error(transparent)]
    Decode(slotcon_augment::Error),
    /// The image could not be resized to `--max-side`.
    #[error(transparent)]
    Resize(slotcon_augment::Error),
    /// The resized image does not fit a JPEG's 65535-pixel sides.
    #[error("{width}x{height} is too large for JPEG")]
    TooLargeForJpeg {
        /// The resized width, in pixels.
        width: u32,
        /// The resized height, in pixels.
        height: u32,
    },
    /// The JPEG encoder failed.
    #[error("JPEG encode failed: {0}")]
    Encode(#[source] jpeg_encoder::EncodingError),
}

/// A read error without the path: a refusal's reason, or the operating system's cause.
fn read_reason(e: &slotcon_shards::Error) -> String {
    match e {
        slotcon_shards::Error::Invalid { reason, .. } => reason.clone(),
        slotcon_shards::Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Per-thread buffers reused from one image to the next.
#[derive(Default)]
pub struct Scratch {
    rgb: Vec<u8>,
    resized: Vec<u8>,
    rows: slotcon_augment::ops::ResizeScratch,
}

/// The size an image of `width × height` is resized to so that its longer side is
/// `max_side`, or `None` if it already fits. The shorter side is rounded to nearest
/// (at least 1).
pub fn fit_within(width: u32, height: u32, max_side: Option<u32>) -> Option<(u32, u32)> {
    let max = max_side?;
    let long = width.max(height);
    if long <= max {
        return None;
    }
    let short = |s: u32| ((s as f64 * max as f64 / long as f64).round() as u32).max(1);
    Some(if width >= height {
        (max, short(height))
    } else {
        (short(width), max)
    })
}

/// Reads, validates and converts one file. `Err` is why it is skipped.
pub fn prepare(file: &SourceFile, cfg: &IngestConfig, s: &mut Scratch) -> Result<Prepared, Skip> {
    // A FIFO, a device or a read that would block is refused, never waited on.
    let bytes = read_bounded(&file.abs, MAX_IMAGE_FILE).map_err(Skip::Read)?;
    let bytes_in = bytes.len() as u64;
    let info = decode_rgb(
        &bytes,
        Limits {
            max_pixels: cfg.max_pixels,
        },
        &mut s.rgb,
    )
    .map_err(Skip::Decode)?;
    let (w, h) = (info.width, info.height);
    let out = |bytes, (width, height)| {
        Ok(Prepared {
            bytes,
            width,
            height,
            bytes_in,
        })
    };
    match (fit_within(w, h, cfg.max_side), cfg.store) {
        (None, StoreKind::Encoded) => out(bytes, (w, h)),
        (None, StoreKind::Raw) => out(s.rgb.clone(), (w, h)),
        (Some(size), store) => {
            resize(s, (w, h), size)?;
            match store {
                StoreKind::Raw => out(s.resized.clone(), size),
                StoreKind::Encoded => out(encode_jpeg(&s.resized, size, cfg.quality)?, size),
            }
        }
    }
}

fn resize(s: &mut Scratch, (w, h): (u32, u32), (nw, nh): (u32, u32)) -> Result<(), Skip> {
    let src = ImageRef::new(&s.rgb, w as usize, h as usize);
    s.resized.resize(nw as usize * nh as usize * 3, 0);
    let rect = Crop::full(w as usize, h as usize);
    resize_bicubic(src, rect, &mut s.resized, nw as usize, nh as usize, &mut s.rows).map_err(Skip::Resize)
}

/// Baseline JPEG, 4:2:0, at `quality`.
fn encode_jpeg(rgb: &[u8], (w, h): (u32, u32), quality: u8) -> Result<Vec<u8>, Skip> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let enc = jpeg_encoder::Encoder::new(&mut out, quality);
    let (w16, h16) = (u16::try_from(w), u16::try_from(h));
    let (Ok(w16), Ok(h16)) = (w16, h16) else {
        return Err(Skip::TooLargeForJpeg { width: w, height: h });
    };
    enc.encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(Skip::Encode)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_within_keeps_aspect_and_only_shrinks() {
        assert_eq!(fit_within(640, 480, None), None);
        assert_eq!(fit_within(640, 480, Some(640)), None);
        assert_eq!(fit_within(640, 480, Some(320)), Some((320, 240)));
        assert_eq!(fit_within(427, 640, Some(100)), Some((67, 100)));
        assert_eq!(fit_within(5000, 1, Some(100)), Some((100, 1)));
    }
}
