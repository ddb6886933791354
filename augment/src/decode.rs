//! Decoding JPEG and PNG files to 8-bit RGB, as PIL's `Image.open(p).convert('RGB')`.
//!
//! - JPEG: zune-jpeg in strict mode, so truncated or corrupt data is an error (PIL says
//!   "image file is truncated"). Grayscale JPEGs are replicated to 3 channels. CMYK and
//!   YCCK JPEGs are refused ([`Error::Unsupported`]): their conversion is not PIL's.
//!   Arithmetic-coded JPEGs (SOF9-15) and lossless or hierarchical Huffman ones (SOF3,
//!   SOF5-7) are refused ([`Error::UnsupportedCoding`]): zune-jpeg does not implement
//!   them.
//! - PNG: the `png` crate. Palette, low bit depth, gray, gray+alpha, RGBA and 16-bit
//!   files are converted as PIL converts them: alpha is dropped (not composited),
//!   16-bit samples keep their high byte, except 16-bit grayscale (PIL mode `I;16`),
//!   whose values are clamped to 255.
//!
//! Every decode checks the pixel count against [`Limits::max_pixels`] from the header,
//! before any pixel buffer is allocated.

use std::io::Cursor;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::errors::DecodeErrors;
use zune_jpeg::JpegDecoder;

use slotcon_shards::{Sample, StoreKind};

use crate::error::{Error, Result};
use crate::image::ImageRef;

/// PIL's `Image.MAX_IMAGE_PIXELS`: `1024 * 1024 * 1024 // 4 // 3`.
pub const PIL_MAX_IMAGE_PIXELS: u64 = 1024 * 1024 * 1024 / 4 / 3;

/// The container formats we decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JPEG / JFIF.
    Jpeg,
    /// PNG.
    Png,
}

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The container format.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Decoding limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: PIL_MAX_IMAGE_PIXELS,
        }
    }
}

/// Tells the format from the first bytes.
pub fn sniff(bytes: &[u8]) -> Result<Format> {
    match bytes {
        [] => Err(Error::Empty),
        [0xFF, 0xD8, 0xFF, ..] => Ok(Format::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Ok(Format::Png),
        _ => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Err(Error::UnknownFormat(head.join(" ")))
        }
    }
}

/// Decodes `bytes` into `out` (resized to `width * height * 3`) as RGB.
pub fn decode_rgb(bytes: &[u8], limits: Limits, out: &mut Vec<u8>) -> Result<Info> {
    match sniff(bytes)? {
        Format::Jpeg => decode_jpeg(bytes, limits, out),
        Format::Png => decode_png(bytes, limits, out),
    }
}

/// A stored sample as RGB: the one way from a store's payload to pixels. A raw payload is
/// borrowed as it is; an encoded one is decoded into `buf` as [`decode_rgb`] does. Either
/// must have the size the store's index records, else [`Error::Payload`] (a corrupt
/// entry, not a bad image).
pub fn sample_rgb<'a>(
    store: StoreKind,
    sample: &Sample<'a>,
    limits: Limits,
    buf: &'a mut Vec<u8>,
) -> Result<ImageRef<'a>> {
    let (w, h) = (sample.width as usize, sample.height as usize);
    let data: &'a [u8] = match store {
        StoreKind::Raw => sample.bytes,
        StoreKind::Encoded => {
            let info = decode_rgb(sample.bytes, limits, buf)?;
            if (info.width, info.height) != (sample.width, sample.height) {
                return Err(Error::Payload(format!(
                    "decodes to {}x{}, the index says {w}x{h}",
                    info.width, info.height
                )));
            }
            buf
        }
    };
    if data.len() != w * h * 3 {
        return Err(Error::Payload(format!(
            "{} bytes of pixels are not {w}x{h}x3",
            data.len()
        )));
    }
    Ok(ImageRef::new(data, w, h))
}

fn check_pixels(width: u32, height: u32, limits: Limits) -> Result<()> {
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(Error::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(Error::Geometry(format!("image has zero size {width}x{height}")));
    }
    Ok(())
}

fn jpeg_err(e: impl std::fmt::Display) -> Error {
    Error::Decode {
        format: "JPEG",
        reason: e.to_string(),
    }
}

/// zune-jpeg's error on `bytes`, with the coding processes it does not implement told
/// apart (it reports them as unparsable segments or short data).
fn zune_err(bytes: &[u8], e: DecodeErrors) -> Error {
    match unsupported_coding(bytes) {
        Some(what) => Error::UnsupportedCoding {
            format: "JPEG",
            what: what.to_string(),
        },
        None => jpeg_err(e),
    }
}

/// The coding process of the first frame header (or arithmetic-conditioning table)
/// before the first scan, when zune-jpeg does not implement it.
fn unsupported_coding(bytes: &[u8]) -> Option<&'static str> {
    let mut at = 2;
    while let [0xFF, marker, hi, lo, ..] = *bytes.get(at..)? {
        match marker {
            0xFF => at += 1, // fill byte
            0xC3 | 0xC5..=0xC7 => return Some("lossless or hierarchical Huffman coding (SOF3, SOF5-7)"),
            0xC9 => return Some("arithmetic coding (sequential, SOF9)"),
            0xCA => return Some("arithmetic coding (progressive, SOF10)"),
            0xCB | 0xCD..=0xCF => return Some("arithmetic coding (lossless or hierarchical, SOF11, SOF13-15)"),
            0xCC => return Some("arithmetic coding (DAC segment)"),
            0xC0..=0xC2 | 0xD9 | 0xDA => return None,
            _ => at += 2 + u16::from_be_bytes([hi, lo]) as usize,
        }
    }
    None
}

fn decode_jpeg(bytes: &[u8], limits: Limits, out: &mut Vec<u8>) -> Result<Info> {
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize);
    let mut probe = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    probe.decode_headers().map_err(|e| zune_err(bytes, e))?;
    let info = probe.info().ok_or_else(|| jpeg_err("no frame header"))?;
    let (width, height) = (info.width as u32, info.height as u32);
    check_pixels(width, height, limits)?;
    let input = probe.input_colorspace().ok_or_else(|| jpeg_err("no colour space"))?;
    let gray = match input {
        ColorSpace::Luma => true,
        ColorSpace::YCbCr | ColorSpace::RGB => false,
        other => {
            return Err(Error::Unsupported {
                format: "JPEG",
                what: format!("{other:?}"),
            })
        }
    };
    let out_space = if gray { ColorSpace::Luma } else { ColorSpace::RGB };
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), options.jpeg_set_out_colorspace(out_space));
    dec.decode_headers().map_err(|e| zune_err(bytes, e))?;
    let n = width as usize * height as usize;
    out.resize(n * 3, 0);
    if gray {
        dec.decode_into(&mut out[..n]).map_err(|e| zune_err(bytes, e))?;
        expand_gray_in_place(out, n);
    } else {
        dec.decode_into(out).map_err(|e| zune_err(bytes, e))?;
    }
    Ok(Info {
        format: Format::Jpeg,
        width,
        height,
    })
}

/// `out[..n]` holds gray values; spreads them to `out[..3n]` as RGB, back to front.
fn expand_gray_in_place(out: &mut [u8], n: usize) {
    for i in (0..n).rev() {
        let v = out[i];
        out[3 * i..3 * i + 3].fill(v);
    }
}

fn png_err(e: impl std::fmt::Display) -> Error {
    Error::Decode {
        format: "PNG",
        reason: e.to_string(),
    }
}

fn decode_png(bytes: &[u8], limits: Limits, out: &mut Vec<u8>) -> Result<Info> {
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND);
    dec.set_limits(png::Limits {
        bytes: (limits.max_pixels as usize).saturating_mul(8),
    });
    let header = dec.read_header_info().map_err(png_err)?;
    let (width, height) = (header.width, header.height);
    check_pixels(width, height, limits)?;
    let gray16 = header.color_type == png::ColorType::Grayscale && header.bit_depth == png::BitDepth::Sixteen;
    let mut reader = dec.read_info().map_err(png_err)?;
    let size = reader.output_buffer_size().ok_or_else(|| png_err("image too large"))?;
    let mut raw = vec![0u8; size];
    let frame = reader.next_frame(&mut raw).map_err(png_err)?;
    let (color, depth) = (frame.color_type, frame.bit_depth);
    let channels = color.samples();
    let sample = if depth == png::BitDepth::Sixteen { 2 } else { 1 };
    out.resize(width as usize * height as usize * 3, 0);
    let stride = frame.line_size;
    for y in 0..height as usize {
        let src = &raw[y * stride..y * stride + width as usize * channels * sample];
        let dst = &mut out[y * width as usize * 3..(y + 1) * width as usize * 3];
        convert_png_row(src, dst, channels, sample, gray16);
    }
    Ok(Info {
        format: Format::Png,
        width,
        height,
    })
}

/// One expanded PNG row to RGB, the way PIL's `convert('RGB')` treats its mode.
fn convert_png_row(src: &[u8], dst: &mut [u8], channels: usize, sample: usize, gray16: bool) {
    let px = channels * sample;
    for (s, d) in src.chunks_exact(px).zip(dst.chunks_exact_mut(3)) {
        let at = |c: usize| {
            if gray16 {
                u16::from_be_bytes([s[0], s[1]]).min(255) as u8
            } else {
                s[c * sample]
            }
        };
        if channels <= 2 {
            d.fill(at(0));
        } else {
            d.copy_from_slice(&[at(0), at(1), at(2)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_coded_jpegs_are_refused_by_name() {
        // SOI, an APP0 stub, then a SOF10 (progressive, arithmetic) frame header: 8x8, gray.
        let sof10 = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 2, 0xFF, 0xCA, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0,
        ];
        let err = decode_rgb(&sof10, Limits::default(), &mut Vec::new()).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "unsupported JPEG coding: arithmetic coding (progressive, SOF10), which zune-jpeg does not decode"
        );
        // A baseline frame header is not named, whatever else is wrong with the file.
        let mut sof0 = sof10;
        sof0[7] = 0xC0;
        assert!(unsupported_coding(&sof0).is_none());
    }

    #[test]
    fn sniffs_and_reports_unknown_bytes() {
        assert!(matches!(sniff(b""), Err(Error::Empty)));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        let err = sniff(b"hello world").unwrap_err().to_string();
        assert!(err.contains("68 65 6c 6c"), "{err}");
    }

    #[test]
    fn gray_expands_in_place() {
        let mut v = vec![1, 2, 0, 0, 0, 0];
        expand_gray_in_place(&mut v, 2);
        assert_eq!(v, [1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn gray16_clamps_and_others_keep_the_high_byte() {
        let mut d = [0u8; 3];
        convert_png_row(&[0x01, 0x00], &mut d, 1, 2, true);
        assert_eq!(d, [255; 3]);
        convert_png_row(&[0x00, 0x7f], &mut d, 1, 2, true);
        assert_eq!(d, [0x7f; 3]);
        convert_png_row(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc], &mut d, 3, 2, false);
        assert_eq!(d, [0x12, 0x56, 0x9a]);
    }
}
