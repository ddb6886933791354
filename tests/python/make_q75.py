"""Re-encodes a few COCO images with Pillow as ordinary JPEGs: 4:2:0, quality 75, at
640x480 and 160x120: typical files, where zune-jpeg (used before) differed from Pillow.
Usage: make_q75.py COCO_IMAGES OUT [COUNT]. Prints the number of files written."""
import os
import sys

from PIL import Image

src, out = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 8
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".jpg"))[:count]
written = 0
for w, h in [(640, 480), (160, 120)]:
    folder = os.path.join(out, f"{w}x{h}")
    os.makedirs(folder, exist_ok=True)
    for path in files:
        img = Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC)
        img.save(os.path.join(folder, os.path.basename(path)), quality=75, subsampling="4:2:0")
        written += 1
print(written)
