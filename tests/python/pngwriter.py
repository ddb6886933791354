"""A minimal PNG writer for any colour type, bit depth and interlacing (PIL writes
neither every depth nor Adam7). The test scripts import it; it runs nothing itself."""
import struct
import zlib

import numpy as np

# The seven Adam7 passes as (x step, x offset, y step, y offset), in file order.
ADAM7 = [(8, 0, 8, 0), (8, 4, 8, 0), (4, 0, 8, 4), (4, 2, 4, 0), (2, 0, 4, 2), (2, 1, 2, 0), (1, 0, 2, 1)]


def chunk(kind, data):
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width, height, color_type, depth, raw_rows, extra=b"", interlace=False, level=6):
    """A PNG of the given header with `raw_rows` (packed rows, in file order) as its
    image data, each under filter 0; `extra` (chunks) goes before the data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, int(interlace))
    body = b"".join(b"\x00" + row for row in raw_rows)
    idat = chunk(b"IDAT", zlib.compress(body, level))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + idat + chunk(b"IEND", b"")


def pack_row(samples, depth):
    """One row of samples (any shape, read in C order) packed at `depth` bits each."""
    samples = np.asarray(samples).reshape(-1)
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    bits = np.unpackbits(samples.astype(np.uint8)[:, None], axis=1)[:, 8 - depth :]
    return np.packbits(bits.reshape(-1)).tobytes()


def image_rows(samples, depth, interlace=False):
    """The packed rows of an (H, W) or (H, W, C) array of samples, in file order: top to
    bottom, or with `interlace` pass by pass (a pass with no row or column has none)."""
    if not interlace:
        return [pack_row(r, depth) for r in samples]
    rows = []
    for xs, xo, ys, yo in ADAM7:
        part = samples[yo::ys, xo::xs]
        if part.shape[0] and part.shape[1]:
            rows += [pack_row(r, depth) for r in part]
    return rows
