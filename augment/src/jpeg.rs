//! JPEG to RGB with libjpeg-turbo, configured as Pillow configures it, so that the pixels
//! equal `Image.open(p).convert('RGB')` byte for byte.
//!
//! libjpeg-turbo 3.1.0 is built from source by `turbojpeg-sys` (its vendored copy, with
//! cmake and nasm: SIMD on); Pillow 12.0 ships 3.1.2, whose ChangeLog changes no
//! decompressed pixel (docs/differences.md; tested bit-exact on the COCO sample
//! and on generated files of every kind: `tests/python/compare_raw.py`). Through the
//! TurboJPEG 3 API, as PIL's decoder sets libjpeg up: the accurate integer IDCT
//! (`JDCT_ISLOW`), fancy upsampling, no scaling, RGB out (grayscale replicated by
//! libjpeg, as PIL's `L` → `RGB`); a warning
//! (truncated or corrupt data) is an error, as PIL's "image file is truncated". CMYK and
//! YCCK files come out as CMYK (libjpeg converts YCCK) and go to RGB as PIL's
//! `CMYK` → `RGB` does, after PIL's inversion of Adobe files (`CMYK;I`).
//!
//! A region is decoded with TurboJPEG's cropping ([`region`]): the same pixels as a full
//! decode, for the rows and columns the two crops need.
//!
//! One decompressor per thread, made on first use and reused.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};

use turbojpeg_sys as tj;

use crate::crop::Crop;
use crate::error::{Error, Result};
use crate::image::resize_exact;

/// A TurboJPEG decompressor.
struct Decompressor(tj::tjhandle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: a handle from tj3Init, destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// What the frame header says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub width: u32,
    pub height: u32,
    /// CMYK or YCCK (four components).
    pub cmyk: bool,
    /// libjpeg-turbo can decode a part of it: 8-bit, lossy, a subsampling TurboJPEG knows.
    pub croppable: bool,
}

/// Every iMCU width libjpeg-turbo can have (8 × a sampling factor of 1, 2 or 4) divides
/// this, so a region's left edge aligned to it is one `jpeg_crop_scanline` keeps.
const ALIGN: usize = 32;

/// Fancy upsampling computes a pixel from the chroma samples on either side of its own;
/// at the left and right edges of a partial decode libjpeg-turbo replicates the edge
/// sample instead, so with horizontal subsampling the outermost column on each side may
/// differ from a full decode's (measured: exactly those columns, and no row). So one
/// more column is decoded on each side of the wanted rectangle, and then dropped.
const MARGIN: usize = 1;

fn jpeg_err(reason: impl Into<String>) -> Error {
    Error::Decode {
        format: "JPEG",
        reason: reason.into(),
    }
}

/// libjpeg-turbo's message for the last error on `handle`.
fn last_error(handle: tj::tjhandle) -> Error {
    // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
    let text = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(handle)) };
    jpeg_err(text.to_string_lossy().trim().to_string())
}

/// Runs `f` with this thread's decompressor, configured as Pillow's. A decompressor that
/// has failed is dropped, and the next call makes a fresh one: after some header errors
/// (a bad DHT class or index, bad Huffman counts, a 0x0 frame) libjpeg-turbo 3.1.0 leaves
/// the handle in a state in which every later file fails with the same error, so one bad
/// file would cost every good file after it on the thread.
fn with_decompressor<T>(f: impl FnOnce(tj::tjhandle) -> Result<T>) -> Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let handle = match slot.as_ref() {
            Some(d) => d.0,
            None => slot.insert(new_decompressor()?).0,
        };
        let result = f(handle);
        if result.is_err() {
            *slot = None;
        }
        result
    })
}

fn new_decompressor() -> Result<Decompressor> {
    // SAFETY: tj3Init has no preconditions; a null handle is checked.
    let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
    if handle.is_null() {
        return Err(jpeg_err("cannot create a libjpeg-turbo decompressor"));
    }
    let decompressor = Decompressor(handle);
    let settings = [
        (tj::TJPARAM_TJPARAM_STOPONWARNING, 1),
        (tj::TJPARAM_TJPARAM_FASTDCT, 0),
        (tj::TJPARAM_TJPARAM_FASTUPSAMPLE, 0),
        // A progressive file with thousands of scans is a CPU bomb (libjpeg-turbo's advice).
        (tj::TJPARAM_TJPARAM_SCANLIMIT, 500),
    ];
    for (param, value) in settings {
        // SAFETY: a live handle and one of TurboJPEG's parameters.
        if unsafe { tj::tj3Set(handle, param as c_int, value) } != 0 {
            return Err(last_error(handle));
        }
    }
    Ok(decompressor)
}

/// Reads the frame header of `bytes` into `h`'s state.
fn read_header(h: tj::tjhandle, bytes: &[u8]) -> Result<Header> {
    // SAFETY: `bytes` is live for the call; the handle is this thread's.
    if unsafe { tj::tj3DecompressHeader(h, bytes.as_ptr(), bytes.len() as _) } != 0 {
        return Err(last_error(h));
    }
    // SAFETY: as above.
    let get = |p: tj::TJPARAM| unsafe { tj::tj3Get(h, p as c_int) };
    let space = get(tj::TJPARAM_TJPARAM_COLORSPACE);
    Ok(Header {
        width: get(tj::TJPARAM_TJPARAM_JPEGWIDTH).max(0) as u32,
        height: get(tj::TJPARAM_TJPARAM_JPEGHEIGHT).max(0) as u32,
        cmyk: space == tj::TJCS_TJCS_CMYK as c_int || space == tj::TJCS_TJCS_YCCK as c_int,
        croppable: get(tj::TJPARAM_TJPARAM_PRECISION) == 8
            && get(tj::TJPARAM_TJPARAM_LOSSLESS) == 0
            && get(tj::TJPARAM_TJPARAM_SUBSAMP) != tj::TJSAMP_TJSAMP_UNKNOWN,
    })
}

/// Reads the frame header of `bytes`.
#[cfg(test)]
pub(crate) fn header(bytes: &[u8]) -> Result<Header> {
    with_decompressor(|h| read_header(h, bytes))
}

/// The rectangle to decode for `want` (clipped to the image) and the part of it that is
/// exact: `want` widened by [`MARGIN`] columns each side, the left edge aligned down to
/// [`ALIGN`]; the exact part drops the margin columns that are not the image's edges. The
/// whole image (all of it exact) when the file cannot be decoded in part or the region
/// would be all of it.
pub(crate) fn region(head: &Header, want: Crop) -> (Crop, Crop) {
    let (w, h) = (head.width as usize, head.height as usize);
    let x0 = want.left().min(w).saturating_sub(MARGIN) / ALIGN * ALIGN;
    let x1 = (want.right() + MARGIN).min(w);
    let y0 = want.top().min(h);
    let y1 = want.bottom().min(h);
    if !head.croppable || x1 <= x0 + 2 * MARGIN || y1 <= y0 {
        return (Crop::full(w, h), Crop::full(w, h));
    }
    let decoded = Crop::xywh(x0, y0, x1 - x0, y1 - y0);
    let (left, right) = (usize::from(x0 > 0) * MARGIN, usize::from(x1 < w) * MARGIN);
    let exact = Crop::xywh(x0 + left, y0, x1 - x0 - left - right, y1 - y0);
    (decoded, exact)
}

/// Moves the `exact` part of the `decoded` RGB rectangle in `out` to its front.
fn keep_exact(out: &mut Vec<u8>, decoded: Crop, exact: Crop) {
    if exact == decoded {
        return;
    }
    let (dx, dy) = (exact.left() - decoded.left(), exact.top() - decoded.top());
    let row = exact.width() * 3;
    for r in 0..exact.height() {
        let from = ((r + dy) * decoded.width() + dx) * 3;
        out.copy_within(from..from + row, r * row);
    }
    out.truncate(exact.area() * 3);
}

/// Decodes the part of `bytes` that covers `want` into `out` as RGB, and returns the
/// header and the rectangle `out` holds (`rect.area() * 3` bytes): a rectangle that
/// holds `want`, whose pixels are those of a full decode. `check` sees the header first,
/// before any pixel buffer is sized.
pub(crate) fn decode(
    bytes: &[u8],
    want: Crop,
    check: impl FnOnce(&Header) -> Result<()>,
    out: &mut Vec<u8>,
) -> Result<(Header, Crop)> {
    let (head, rect, exact) = with_decompressor(|h| {
        let head = read_header(h, bytes)?;
        check(&head)?;
        let (rect, exact) = region(&head, want);
        let (format, channels) = if head.cmyk {
            (tj::TJPF_TJPF_CMYK, 4)
        } else {
            (tj::TJPF_TJPF_RGB, 3)
        };
        resize_exact(out, rect.area() * channels);
        set_region(h, &head, rect)?;
        // SAFETY: the header was just read from the same bytes by this handle; `out` holds
        // rect.area() * channels bytes, the packed cropped image at pitch 0.
        let status = unsafe {
            tj::tj3Decompress8(
                h,
                bytes.as_ptr(),
                bytes.len() as _,
                out.as_mut_ptr(),
                0,
                format as c_int,
            )
        };
        if status != 0 {
            return Err(last_error(h));
        }
        Ok((head, rect, exact))
    })?;
    if head.cmyk {
        cmyk_to_rgb_in_place(out, rect.area(), adobe_inverted(bytes));
    }
    keep_exact(out, rect, exact);
    Ok((head, exact))
}

/// Sets (or, for the whole image, clears) the handle's cropping region.
fn set_region(h: tj::tjhandle, head: &Header, rect: Crop) -> Result<()> {
    let full = rect == Crop::full(head.width as usize, head.height as usize);
    let region = if full {
        tj::tjregion { x: 0, y: 0, w: 0, h: 0 }
    } else {
        tj::tjregion {
            x: rect.j as c_int,
            y: rect.i as c_int,
            w: rect.w as c_int,
            h: rect.h as c_int,
        }
    };
    // SAFETY: a live handle whose header has been read.
    if unsafe { tj::tj3SetCroppingRegion(h, region) } != 0 {
        return Err(last_error(h));
    }
    Ok(())
}

/// Whether the file has an Adobe APP14 segment before its first scan: PIL then reads the
/// CMYK values inverted (`CMYK;I`), as Adobe writes them.
fn adobe_inverted(bytes: &[u8]) -> bool {
    let mut at = 2;
    while let Some(&[ff, marker, hi, lo]) = bytes.get(at..at + 4) {
        if ff != 0xFF {
            return false;
        }
        match marker {
            0xFF => at += 1,
            0xDA | 0xD9 => return false,
            0xEE => return bytes.get(at + 4..at + 9) == Some(&b"Adobe"[..]),
            _ => at += 2 + u16::from_be_bytes([hi, lo]) as usize,
        }
    }
    false
}

/// PIL's `CMYK` → `RGB` (`cmyk2rgb`): `255 − k` times `1 − c/255`, rounded as its
/// `MULDIV255`; front to back over `out` (4 bytes read ahead of each 3 written).
fn cmyk_to_rgb_in_place(out: &mut Vec<u8>, n: usize, inverted: bool) {
    let flip = if inverted { 255 } else { 0 };
    for i in 0..n {
        let p = [out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]].map(|v| v ^ flip);
        let nk = 255 - p[3] as u32;
        for c in 0..3 {
            out[3 * i + c] = (nk - muldiv255(p[c] as u32, nk)) as u8;
        }
    }
    out.truncate(n * 3);
}

/// `a · b / 255` rounded as PIL's `MULDIV255`.
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_rounds_as_pil() {
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                let exact = (a * b) as f64 / 255.0;
                assert_eq!(muldiv255(a, b), exact.round() as u32, "{a} {b}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let e = header(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 2, 1]).unwrap_err();
        assert!(e.to_string().starts_with("JPEG decode failed"), "{e}");
    }
}
