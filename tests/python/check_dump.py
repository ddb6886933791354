"""Re-renders every view that `slotcon-bench dump` wrote, from the store's stored bytes,
with PIL + torchvision and the parameters recorded in samples.json (parity_ops.view: the
reference pipeline with injected parameters), and compares each with the dumped PNG.
Usage: check_dump.py STORE DUMP. Prints JSON {"views": n, "exact": k, "max_abs": m,
"worst": path, "pil_failed": [paths PIL itself cannot decode, not compared]}."""
import io
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_ops import view  # noqa: E402

store, dump = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(store, "manifest.json")))
payloads = {}
for shard in manifest["shards"]:
    for r in pq.read_table(os.path.join(store, shard["file"])).to_pylist():
        payloads[r["image"]["path"]] = (r["image"]["bytes"], r["width"], r["height"])


def exact(x):
    """A float the dump wrote from an f32, as that f32's exact value."""
    return None if x is None else float(np.float32(x))


def params(p, size):
    j = p["jitter"]
    if j is not None:
        j = dict(j, **{k: exact(j[k]) for k in ("brightness", "contrast", "saturation", "hue")})
    return dict(p, size=size, jitter=j, blur_sigma=exact(p["blur_sigma"]))


def source(path):
    data, w, h = payloads[path]
    if manifest.get("store", "encoded") == "raw":
        return Image.frombytes("RGB", (w, h), data)
    return Image.open(io.BytesIO(data)).convert("RGB")


samples = json.load(open(os.path.join(dump, "samples.json")))
n = exact_views = max_abs = 0
worst = None
pil_failed = []
for s in samples:
    try:
        img = source(s["path"])
    except OSError:
        pil_failed.append(s["path"])
        continue
    for v, p in enumerate(s["params"]):
        want = np.asarray(view(img, params(p, s["size"])), np.int16)
        got = np.asarray(Image.open(os.path.join(dump, f"{s['id']}_v{v + 1}.png")).convert("RGB"), np.int16)
        d = int(np.abs(got - want).max())
        n += 1
        exact_views += d == 0
        if d > max_abs:
            max_abs, worst = d, f"{s['path']} view {v + 1}"
print(json.dumps({"views": n, "exact": exact_views, "max_abs": max_abs, "worst": worst, "pil_failed": pil_failed}))
