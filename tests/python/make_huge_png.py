"""Writes a side x side RGB PNG: a gradient with noise, fast to encode; Adam7-interlaced
when a third argument `interlaced` is given.

Usage: make_huge_png.py OUT.png SIDE [interlaced]
"""
import sys

import numpy as np
from PIL import Image

from pngwriter import image_rows, png

Image.MAX_IMAGE_PIXELS = None
out, side = sys.argv[1], int(sys.argv[2])
y, x = np.mgrid[0:side, 0:side]
rgb = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], -1).astype(np.int16)
rgb += np.random.default_rng(0).integers(-3, 4, size=rgb.shape, dtype=np.int16)
rgb = rgb.clip(0, 255).astype(np.uint8)
if sys.argv[3:] == ["interlaced"]:
    with open(out, "wb") as f:
        f.write(png(side, side, 2, 8, image_rows(rgb, 8, interlace=True), interlace=True, level=1))
else:
    Image.fromarray(rgb).save(out, compress_level=1)
