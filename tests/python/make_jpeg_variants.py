"""Writes JPEGs of every kind libjpeg-turbo and PIL decode, from a few COCO images at
several sizes (full, 161x121, 37x23, 17x9, 1x1): Pillow at 4:4:4, 4:2:2 and 4:2:0,
progressive, with restart markers, grayscale and CMYK (Adobe); cjpeg at 4:4:0, 4:1:1,
4:4:1 and an odd sampling TurboJPEG cannot name (2x2 luma, 2x1 Cb, 1x1 Cr); jpegtran's
lossless transcodes to arithmetic coding, sequential and progressive (13 kinds).
Usage: make_jpeg_variants.py COCO_IMAGES OUT [COUNT]. Prints the number of files."""
import os
import subprocess
import sys

from PIL import Image

src, out = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 3
os.makedirs(out, exist_ok=True)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".jpg"))[:count]


def tool(*args):
    subprocess.run(args, check=True)


for i, path in enumerate(files):
    img = Image.open(path).convert("RGB")
    for w, h in [img.size, (161, 121), (37, 23), (17, 9), (1, 1)]:
        j = img.resize((w, h), Image.BICUBIC)
        base = os.path.join(out, f"{i}_{w}x{h}")
        for ss in ["4:4:4", "4:2:2", "4:2:0"]:
            j.save(f"{base}_{ss.replace(':', '')}.jpg", quality=75, subsampling=ss)
        j.save(f"{base}_progressive.jpg", quality=85, progressive=True)
        j.save(f"{base}_restart.jpg", quality=90, restart_marker_rows=1)
        j.convert("L").save(f"{base}_gray.jpg", quality=80)
        j.convert("CMYK").save(f"{base}_cmyk.jpg", quality=80)
        ppm = f"{base}.ppm"
        j.save(ppm)
        for kind, sample in [("440", "1x2"), ("411", "4x1"), ("441", "1x4"), ("odd", "2x2,2x1,1x1")]:
            tool("cjpeg", "-sample", sample, "-quality", "80", "-outfile", f"{base}_{kind}.jpg", ppm)
        os.remove(ppm)
        tool("jpegtran", "-arithmetic", "-outfile", f"{base}_arith.jpg", f"{base}_420.jpg")
        tool("jpegtran", "-arithmetic", "-progressive", "-outfile", f"{base}_arithprog.jpg", f"{base}_444.jpg")
print(len(os.listdir(out)))
