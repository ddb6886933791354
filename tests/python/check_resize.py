"""Checks --max-side against Pillow: each image of the resized raw store must equal
PIL's Image.resize((w, h), BICUBIC) of the same image from the full-size raw store.
Usage: check_resize.py FULL_RAW_STORE RESIZED_RAW_STORE. Prints 'ok N (M resized)'."""
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from PIL import Image


def rows(store):
    m = json.load(open(os.path.join(store, "manifest.json")))
    return [r for s in m["shards"] for r in pq.read_table(os.path.join(store, s["file"])).to_pylist()]


full, small = rows(sys.argv[1]), rows(sys.argv[2])
assert len(full) == len(small)
resized = 0
for a, b in zip(full, small):
    assert a["image"]["path"] == b["image"]["path"]
    img = Image.fromarray(np.frombuffer(a["image"]["bytes"], np.uint8).reshape(a["height"], a["width"], 3), "RGB")
    want = img.resize((b["width"], b["height"]), Image.BICUBIC) if (a["width"], a["height"]) != (b["width"], b["height"]) else img
    resized += want is not img
    got = np.frombuffer(b["image"]["bytes"], np.uint8).reshape(b["height"], b["width"], 3)
    d = np.abs(got.astype(int) - np.asarray(want).astype(int))
    assert d.max() == 0, f'{a["image"]["path"]}: max diff {d.max()}, {int((d > 0).sum())} values differ'
print("ok", len(full), f"({resized} resized)")
