"""Writes a side x side RGB PNG (not interlaced): a gradient with noise, fast to encode.

Usage: make_huge_png.py OUT.png SIDE
"""
import sys

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None
out, side = sys.argv[1], int(sys.argv[2])
y, x = np.mgrid[0:side, 0:side]
rgb = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], -1).astype(np.int16)
rgb += np.random.default_rng(0).integers(-3, 4, size=rgb.shape, dtype=np.int16)
Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(out, compress_level=1)
