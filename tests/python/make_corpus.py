"""Writes a folder of good, odd and bad image files for the ingest tests.
Usage: make_corpus.py OUT GOOD_JPEG. Prints a JSON object {file: expectation} where an
expectation is {"ok": true} or {"skip": "substring of the reason"}."""
import json
import os
import sys

import numpy as np
from PIL import Image

from pngwriter import chunk, image_rows, png

out, good = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
expect = {}
rng = np.random.default_rng(0)
src = open(good, "rb").read()


def put(name, data, expectation):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    expect[name] = expectation


# Good and odd-but-valid files, converted as PIL's convert('RGB') does.
os.makedirs(os.path.join(out, "good"), exist_ok=True)
put("good/coco.JPG", src, {"ok": True})
Image.open(good).convert("L").save(os.path.join(out, "gray.jpg"), quality=90)
expect["gray.jpg"] = {"ok": True}
rgba = rng.integers(0, 256, (21, 17, 4), dtype=np.uint8)
Image.fromarray(rgba, "RGBA").save(os.path.join(out, "alpha.png"))
expect["alpha.png"] = {"ok": True}
pal = Image.fromarray(rng.integers(0, 256, (19, 23, 3), dtype=np.uint8), "RGB").quantize(16)
pal.save(os.path.join(out, "palette.png"))
expect["palette.png"] = {"ok": True}
g16 = rng.integers(0, 1024, (13, 11), dtype=np.uint16)  # many values above 255
put("gray16.png", png(11, 13, 0, 16, [r.astype(">u2").tobytes() for r in g16]), {"ok": True})
c16 = rng.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
put("rgb16.PNG", png(7, 9, 2, 16, [r.astype(">u2").tobytes() for r in c16]), {"ok": True})
la = rng.integers(0, 256, (5, 6, 2), dtype=np.uint8)
put("gray_alpha.png", png(6, 5, 4, 8, [r.tobytes() for r in la]), {"ok": True})
bits = rng.integers(0, 256, (8, 2), dtype=np.uint8)  # 1-bit gray, 16 px wide
put("bilevel.png", png(16, 8, 0, 1, [r.tobytes() for r in bits]), {"ok": True})
plte = chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]))
trns = chunk(b"tRNS", b"\x00\x80")
idx = rng.integers(0, 4, (4, 8), dtype=np.uint8)
put("palette_trns.png", png(8, 4, 3, 8, [r.tobytes() for r in idx], plte + trns), {"ok": True})
# Adam7-interlaced PNGs, decoded pass row by pass row (sizes that leave passes empty).
for name, (h, w), ctype, depth, top, extra in [
    ("interlaced_rgb.png", (97, 131), 2, 8, 256, b""),
    ("interlaced_rgba16.png", (9, 7), 6, 16, 65536, b""),
    ("interlaced_bilevel.png", (3, 11), 0, 1, 2, b""),
    ("interlaced_gray4.png", (1, 5), 0, 4, 16, b""),
    ("interlaced_palette2.png", (6, 1), 3, 2, 4, plte + trns),
]:
    channels = {0: 1, 2: 3, 3: 1, 6: 4}[ctype]
    a = rng.integers(0, top, (h, w, channels)).astype(np.uint16)
    put(name, png(w, h, ctype, depth, image_rows(a, depth, interlace=True), extra, interlace=True), {"ok": True})
os.makedirs(os.path.join(out, "Deep/er"), exist_ok=True)
put("Deep/er/nested.jpeg", src, {"ok": True})

# Bad files: skipped, each with a reason.
put("zero.jpg", b"", {"skip": "empty"})
put("truncated.jpg", src[: len(src) // 2], {"skip": "JPEG decode failed"})
put("text.jpg", b"this is not an image, just text\n", {"skip": "not a JPEG or PNG"})
put("text.png", b"\x00\x01\x02 nope", {"skip": "not a JPEG or PNG"})
Image.open(good).convert("CMYK").save(os.path.join(out, "cmyk.jpg"))
expect["cmyk.jpg"] = {"ok": True}
put("bomb.png", png(20000, 20000, 0, 8, [b"\x00" * 20000] * 2)[:200] + b"", {"skip": "exceeds the limit"})
big = png(64, 64, 2, 8, [rng.integers(0, 256, 192, dtype=np.uint8).tobytes() for _ in range(64)])
put("truncated.png", big[: len(big) // 2], {"skip": "PNG decode failed"})
os.symlink("does-not-exist.jpg", os.path.join(out, "broken_link.jpg"))
expect["broken_link.jpg"] = {"skip": "No such file"}
os.makedirs(os.path.join(out, "loop"), exist_ok=True)
os.symlink("..", os.path.join(out, "loop", "back"))
expect["loop/back"] = {"skip": "symlink loop"}
os.mkfifo(os.path.join(out, "fifo.jpg"))
expect["fifo.jpg"] = {"skip": "not a regular file"}
if os.geteuid() != 0:  # root reads anything, so this case needs an ordinary user
    put("unreadable.jpg", src, {"skip": "Permission denied"})
    os.chmod(os.path.join(out, "unreadable.jpg"), 0)
with open(os.path.join(out, "notes.txt"), "w") as f:
    f.write("ignored: not an image extension")
print(json.dumps(expect))
