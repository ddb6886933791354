"""`python -m slotcon.bench --shards S`: the loader's throughput through Python.

Iterates whole epochs of `slotcon.Loader` for `--seconds` (touching every batch's
arrays as a training script does) and reports img/s and img/s per worker. With
`--rust PATH` (a `slotcon-bench` binary) it also runs `slotcon-bench loader` on the same
store and settings, alternating `--repeat` times, and reports Python's rate over Rust's.
With `--baseline PATH` (`bench/python/baseline.py` of the slotcon repository) and
`--images DIR` it runs the official PIL + torchvision pipeline the same way and reports
the ratio per core. Prints one JSON object."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from . import Loader


def python_rate(shards, workers, batch_size, seconds, seed, image_size):
    """Samples per second through `slotcon.Loader`; as `slotcon-bench loader` and the
    baseline, the clock starts at the first batch (thread start-up excluded), and each
    epoch takes over the last one's buffers."""
    loader = Loader(shards, batch_size, workers=workers, seed=seed, image_size=image_size)
    samples, epoch, start = 0, 0, None
    while start is None or time.perf_counter() - start < seconds:
        loader.set_epoch(epoch)
        epoch += 1
        for batch in loader:
            np.asarray(batch.views[0][:1, :1, :1])  # what a training script touches first
            if start is None:
                start = time.perf_counter()
                continue
            samples += len(batch)
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    loader.close()
    return samples / elapsed


def rust_rate(binary, shards, workers, batch_size, seconds, seed):
    out = subprocess.run([binary, "loader", "--shards", shards, "--workers", str(workers), "--batch-size",
                          str(batch_size), "--seconds", str(seconds), "--seed", str(seed), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["img_per_sec"]


def baseline_rate(script, images, workers, batch_size, seconds):
    out = subprocess.run([sys.executable, script, "--images", images, "--workers", str(workers), "--batch-size",
                          str(batch_size), "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["img_per_sec"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m slotcon.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--rust", help="a slotcon-bench binary, to compare with `slotcon-bench loader`")
    ap.add_argument("--baseline", help="bench/python/baseline.py, to compare with the official pipeline")
    ap.add_argument("--images", help="the image folder the store was ingested from (for --baseline)")
    a = ap.parse_args(argv)
    if not (a.workers >= 1 and a.batch_size >= 1 and 0 < a.seconds <= 86400 and 1 <= a.repeat <= 100):
        ap.error("need --workers >= 1, --batch-size >= 1, 0 < --seconds <= 86400, 1 <= --repeat <= 100")
    if a.baseline and not a.images:
        ap.error("--baseline needs --images")
    py, rust, base = [], [], []
    for _ in range(a.repeat):
        py.append(python_rate(a.shards, a.workers, a.batch_size, a.seconds, a.seed, 224))
        if a.rust:
            rust.append(rust_rate(a.rust, a.shards, a.workers, a.batch_size, a.seconds, a.seed))
        if a.baseline:
            base.append(baseline_rate(a.baseline, a.images, a.workers, a.batch_size, a.seconds))
    med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
    report = {"bench": "python-loader", "shards": os.fspath(a.shards), "workers": a.workers,
              "batch_size": a.batch_size, "img_per_sec": med(py), "img_per_sec_per_core": med(py) / a.workers,
              "runs": py}
    if rust:
        report.update(rust_img_per_sec=med(rust), rust_runs=rust, python_over_rust=med(py) / med(rust))
    if base:
        report.update(baseline_img_per_sec=med(base), baseline_runs=base, ratio_per_core=med(py) / med(base))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
