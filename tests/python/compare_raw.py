"""Compares a raw store's pixels with PIL's Image.open(src).convert('RGB') for each row.
Usage: compare_raw.py STORE SRC. Prints JSON {path: [max_abs_diff, mean_abs_diff]}, or
{path: null} for a file PIL itself cannot decode."""
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

store, src = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(store, "manifest.json")))
out = {}
for shard in manifest["shards"]:
    for r in pq.read_table(os.path.join(store, shard["file"])).to_pylist():
        ours = np.frombuffer(r["image"]["bytes"], np.uint8).reshape(r["height"], r["width"], 3).astype(int)
        try:
            pil = np.asarray(Image.open(os.path.join(src, r["image"]["path"])).convert("RGB")).astype(int)
        except OSError:
            out[r["image"]["path"]] = None
            continue
        d = np.abs(ours - pil)
        out[r["image"]["path"]] = [int(d.max()), float(d.mean())]
print(json.dumps(out))
