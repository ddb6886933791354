//! Decoding JPEG and PNG files to 8-bit RGB, as PIL's `Image.open(p).convert('RGB')`.
//!
//! - JPEG: libjpeg-turbo, set up as Pillow sets it up (`crate::jpeg`), so the RGB is
//!   PIL's byte for byte: every coding process libjpeg-turbo decodes (baseline,
//!   progressive, arithmetic, lossless), any subsampling, grayscale (replicated), CMYK
//!   and YCCK (converted as PIL converts CMYK). Truncated or corrupt data is an error
//!   (PIL says "image file is truncated").
//! - PNG: the `png` crate. Palette, low bit depth, gray, gray+alpha, RGBA and 16-bit
//!   files are converted as PIL converts them: alpha is dropped (not composited),
//!   16-bit samples keep their high byte, except 16-bit grayscale (PIL mode `I;16`),
//!   whose values are clamped to 255.
//!
//! Every decode checks the pixel count against [`Limits::max_pixels`] from the header,
//! before any pixel buffer is allocated.

use std::io::Cursor;

use slotcon_shards::{Sample, StoreKind};

use crate::crop::Crop;
use crate::error::{Error, Result};
use crate::image::{resize_exact, ImageRef};

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
    let all = Crop::full(usize::MAX, usize::MAX);
    decode_rgb_region(bytes, limits, all, out).map(|(info, _)| info)
}

/// Decodes the part of `bytes` that covers `want` (clipped to the image) into `out` as
/// RGB, and returns the header and the rectangle decoded, which contains `want`; its
/// pixels equal the same rectangle of [`decode_rgb`]'s. A JPEG is decoded in part, by
/// libjpeg-turbo's cropping (a margin column each side, the left edge on an iMCU column);
/// a PNG row by row, keeping only the rows and columns of `want` (an interlaced PNG pass
/// row by pass row); a JPEG that cannot be decoded in part (lossless, 12-bit, odd
/// sampling) whole. So the memory a decode takes is the region's, 3 bytes a pixel, plus
/// one row.
pub fn decode_rgb_region(bytes: &[u8], limits: Limits, want: Crop, out: &mut Vec<u8>) -> Result<(Info, Crop)> {
    match sniff(bytes)? {
        Format::Jpeg => decode_jpeg(bytes, limits, want, out),
        Format::Png => decode_png(bytes, limits, want, out),
    }
}

/// A stored sample as RGB: the one way from a store's payload to pixels. A raw payload is
/// borrowed as it is; an encoded one is decoded into `buf` as [`decode_rgb`] does. Either
/// must have the size the store's index records, else [`Error::Payload`] (a corrupt
/// entry, not a bad image).
pub fn sample_rgb<'a>(
    store: StoreKind,
    sample: &'a Sample<'_>,
    limits: Limits,
    buf: &'a mut Vec<u8>,
) -> Result<ImageRef<'a>> {
    let all = Crop::full(sample.width as usize, sample.height as usize);
    sample_region(store, sample, limits, all, buf).map(|(img, _)| img)
}

/// [`sample_rgb`] for the part of the image that covers `want`: the pixels of the
/// returned rectangle (which contains `want`), decoded as [`decode_rgb_region`] does.
/// A raw payload is borrowed whole.
pub fn sample_region<'a>(
    store: StoreKind,
    sample: &'a Sample<'_>,
    limits: Limits,
    want: Crop,
    buf: &'a mut Vec<u8>,
) -> Result<(ImageRef<'a>, Crop)> {
    let (w, h) = (sample.width as usize, sample.height as usize);
    let (data, rect): (&'a [u8], Crop) = match store {
        StoreKind::Raw => (&sample.bytes, Crop::full(w, h)),
        StoreKind::Encoded => {
            let (info, rect) = decode_rgb_region(&sample.bytes, limits, want, buf)?;
            if (info.width, info.height) != (sample.width, sample.height) {
                return Err(Error::Payload(format!(
                    "decodes to {}x{}, the index says {w}x{h}",
                    info.width, info.height
                )));
            }
            (buf, rect)
        }
    };
    if data.len() != rect.area() * 3 {
        return Err(Error::Payload(format!(
            "{} bytes of pixels are not {}x{}x3",
            data.len(),
            rect.w,
            rect.h
        )));
    }
    Ok((ImageRef::new(data, rect.width(), rect.height()), rect))
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

fn decode_jpeg(bytes: &[u8], limits: Limits, want: Crop, out: &mut Vec<u8>) -> Result<(Info, Crop)> {
    let check = |h: &crate::jpeg::Header| check_pixels(h.width, h.height, limits);
    let (head, rect) = crate::jpeg::decode(bytes, want, check, out)?;
    let info = Info {
        format: Format::Jpeg,
        width: head.width,
        height: head.height,
    };
    Ok((info, rect))
}

fn png_err(e: impl std::fmt::Display) -> Error {
    Error::Decode {
        format: "PNG",
        reason: e.to_string(),
    }
}

fn decode_png(bytes: &[u8], limits: Limits, want: Crop, out: &mut Vec<u8>) -> Result<(Info, Crop)> {
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
    let (color, depth) = reader.output_color_type();
    let px = color.samples() * if depth == png::BitDepth::Sixteen { 2 } else { 1 };
    let convert = |src: &[u8], dst: &mut [u8]| convert_png_row(src, dst, color.samples(), px / color.samples(), gray16);
    let (w, h) = (width as usize, height as usize);
    let info = Info {
        format: Format::Png,
        width,
        height,
    };
    let rect = png_region(w, h, want);
    resize_exact(out, rect.area() * 3);
    if reader.info().interlaced {
        png_interlaced_region(&mut reader, (w, h), rect, px, &convert, out)?;
        return Ok((info, rect));
    }
    let row_bytes = rect.width() * 3;
    for y in 0..rect.bottom() {
        let row = reader
            .next_row()
            .map_err(png_err)?
            .ok_or_else(|| png_err("fewer rows than the header says"))?;
        if y >= rect.top() {
            let src = &row.data()[rect.left() * px..rect.right() * px];
            convert(src, &mut out[(y - rect.top()) * row_bytes..][..row_bytes]);
        }
    }
    if rect.bottom() == h {
        // Down to the last row: the rest of the image data is read and checked too, as
        // a whole-frame decode does (a region above the last row stops there).
        reader.next_row().map_err(png_err)?;
    }
    Ok((info, rect))
}

/// The seven Adam7 passes as (x step, x offset, y step, y offset), in file order.
const ADAM7: [(usize, usize, usize, usize); 7] = [
    (8, 0, 8, 0),
    (8, 4, 8, 0),
    (4, 0, 8, 4),
    (4, 2, 4, 0),
    (2, 0, 4, 2),
    (2, 1, 2, 0),
    (1, 0, 2, 1),
];

/// The pixels of `rect` from an interlaced PNG, pass row by pass row: each pass row's
/// samples that fall inside `rect` land at their place in `out`, so the memory is the
/// region's plus one row, never the frame. The rows come in file order, pass 1 to 7 and
/// top to bottom within a pass, a pass with no column or no row being absent; the image
/// data is read to its end and checked, as a whole-frame decode does.
fn png_interlaced_region<R: std::io::BufRead + std::io::Seek>(
    reader: &mut png::Reader<R>,
    (w, h): (usize, usize),
    rect: Crop,
    px: usize,
    convert: &dyn Fn(&[u8], &mut [u8]),
    out: &mut [u8],
) -> Result<()> {
    let passes = ADAM7.iter().flat_map(|&(xs, xo, ys, yo)| {
        let (cols, rows) = (w.saturating_sub(xo).div_ceil(xs), h.saturating_sub(yo).div_ceil(ys));
        let rows = if cols == 0 { 0 } else { rows };
        (0..rows).map(move |line| (xs, xo, line * ys + yo, cols))
    });
    for (xs, xo, y, cols) in passes {
        let row = reader
            .next_interlaced_row()
            .map_err(png_err)?
            .ok_or_else(|| png_err("fewer interlaced rows than the header says"))?;
        let data = row.data();
        if data.len() != cols * px {
            return Err(png_err(format!(
                "an interlaced row of {} bytes, not {cols} pixels of {px}",
                data.len()
            )));
        }
        if !(rect.top()..rect.bottom()).contains(&y) {
            continue;
        }
        // The samples k with left <= k * xs + xo < right.
        let first = rect.left().saturating_sub(xo).div_ceil(xs);
        let end = rect.right().saturating_sub(xo).div_ceil(xs).min(cols);
        let dst_row = &mut out[(y - rect.top()) * rect.width() * 3..][..rect.width() * 3];
        for k in first..end {
            let x = k * xs + xo - rect.left();
            convert(&data[k * px..(k + 1) * px], &mut dst_row[x * 3..x * 3 + 3]);
        }
    }
    // Past the last row: the rest of the image data is read and checked.
    if reader.next_interlaced_row().map_err(png_err)?.is_some() {
        return Err(png_err("more interlaced rows than the header says"));
    }
    Ok(())
}

/// `want` clipped to a `w x h` image; the whole image when nothing of it is left.
fn png_region(w: usize, h: usize, want: Crop) -> Crop {
    let (x0, y0) = (want.left().min(w), want.top().min(h));
    let (x1, y1) = (want.right().min(w), want.bottom().min(h));
    if x1 <= x0 || y1 <= y0 {
        return Crop::full(w, h);
    }
    Crop::xywh(x0, y0, x1 - x0, y1 - y0)
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
    fn sniffs_and_reports_unknown_bytes() {
        assert!(matches!(sniff(b""), Err(Error::Empty)));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        let err = sniff(b"hello world").unwrap_err().to_string();
        assert!(err.contains("68 65 6c 6c"), "{err}");
    }

    /// A `w x h` PNG of `color` at `depth`, with pixel values from a hash of the position.
    fn png_file(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        let bytes = color.samples() * if depth == png::BitDepth::Sixteen { 2 } else { 1 };
        let data: Vec<u8> = (0..w as usize * h as usize * bytes)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_png_region_decoded_row_by_row_equals_the_same_rectangle_of_the_whole() {
        use png::{BitDepth::*, ColorType::*};
        let cases = [
            (Rgb, Eight),
            (Rgba, Sixteen),
            (GrayscaleAlpha, Eight),
            (Grayscale, Sixteen),
        ];
        for (color, depth) in cases {
            {
                let file = png_file(61, 47, color, depth);
                let (mut whole, mut part) = (Vec::new(), Vec::new());
                decode_rgb(&file, Limits::default(), &mut whole).unwrap();
                for want in [Crop::xywh(5, 9, 30, 20), Crop::xywh(40, 30, 100, 100)] {
                    let (_, got) = decode_rgb_region(&file, Limits::default(), want, &mut part).unwrap();
                    assert!(
                        got.left() <= want.left() && got.top() <= want.top(),
                        "{color:?} {got:?}"
                    );
                    assert_eq!(part.len(), got.area() * 3);
                    assert!(got.width() < 61 || got.height() < 47, "{color:?}: decoded whole");
                    let row = got.width() * 3;
                    for r in 0..got.height() {
                        let from = ((got.top() + r) * 61 + got.left()) * 3;
                        assert!(
                            part[r * row..(r + 1) * row] == whole[from..from + row],
                            "{color:?} {depth:?}: row {r} of {got:?}"
                        );
                    }
                }
            }
        }
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
