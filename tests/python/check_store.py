"""Reads a slotcon store with pyarrow, DuckDB, Hugging Face datasets and PIL, and checks it
against the source folder: ids in sorted-path order, sizes as PIL sees them, bytes equal
to the source files. Usage: check_store.py STORE SRC [--raw]. Prints 'ok N' on success."""
import io
import json
import os
import sys

import duckdb
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

store, src = sys.argv[1], sys.argv[2]
raw = "--raw" in sys.argv
manifest = json.load(open(os.path.join(store, "manifest.json")))
files = [os.path.join(store, s["file"]) for s in manifest["shards"]]

# pyarrow: schema, metadata and every row.
table = pq.read_table(files)
schema = table.schema
assert str(schema.field("image").type) == "struct<bytes: binary, path: string>", schema
assert str(schema.field("id").type) == "int64" and str(schema.field("width").type) == "int32", schema
hf = json.loads(schema.metadata[b"huggingface"])
assert hf["info"]["features"]["image"] == ({"bytes": {"dtype": "binary", "_type": "Value"}, "path": {"dtype": "string", "_type": "Value"}} if raw else {"_type": "Image"}), hf
rows = table.to_pylist()
assert len(rows) == manifest["total_rows"], (len(rows), manifest["total_rows"])
paths = [r["image"]["path"] for r in rows]
assert paths == sorted(paths, key=lambda p: p.encode()), "rows are not in sorted path order"
for i, r in enumerate(rows):
    assert r["id"] == i, (i, r["id"])
    source = os.path.join(src, r["image"]["path"])
    im = Image.open(source).convert("RGB")
    assert (r["width"], r["height"]) == im.size, (source, r["width"], r["height"], im.size)
    if raw:
        assert len(r["image"]["bytes"]) == im.size[0] * im.size[1] * 3
    else:
        assert r["image"]["bytes"] == open(source, "rb").read(), f"{source}: stored bytes differ"
        assert Image.open(io.BytesIO(r["image"]["bytes"])).size == im.size

# DuckDB: the same rows through another Parquet reader.
glob = os.path.join(store, "shard-*.parquet")
n, lo, hi, w = duckdb.sql(f"select count(*), min(id), max(id), sum(width) from '{glob}'").fetchone()
assert (n, lo, hi, w) == (len(rows), 0, len(rows) - 1, sum(r["width"] for r in rows)), (n, lo, hi, w)
blen = duckdb.sql(f"select sum(octet_length(image.bytes)) from '{glob}'").fetchone()[0]
assert blen == manifest["total_image_bytes"], (blen, manifest["total_image_bytes"])

# Hugging Face datasets: `image` is an Image feature (encoded store) and decodes.
import tempfile  # noqa: E402

import datasets  # noqa: E402

# Its Arrow cache in a folder of our own (the default, ~/.cache/huggingface, would keep a
# ~100 MB copy of the store after every run).
cache = tempfile.TemporaryDirectory(prefix="slotcon-hf-")
ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache.name)
assert len(ds) == len(rows)
if not raw:
    assert isinstance(ds.features["image"], datasets.Image), ds.features
    first = ds[0]["image"]
    assert first.size == (rows[0]["width"], rows[0]["height"]), first.size
else:
    a = np.frombuffer(ds[0]["image"]["bytes"], np.uint8)
    assert a.size == rows[0]["width"] * rows[0]["height"] * 3
print("ok", len(rows))
