"""The reference loader: a PyTorch DataLoader over a folder of JPEGs with SlotCon's
two-view augmentation on PIL images (reference_aug.py, written from DESIGN §4), as the
official training script feeds its model. Measures images per second.

Usage: baseline.py --images DIR [--workers N] [--batch-size B] [--seconds S]
Prints one JSON object.
"""
import argparse
import json
import os
import sys
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(__file__))
from reference_aug import SlotConAugmentation  # noqa: E402


class ImageFolder(Dataset):
    def __init__(self, root):
        exts = (".jpg", ".jpeg", ".png")
        self.files = sorted(
            os.path.join(d, f) for d, _, names in os.walk(root, followlinks=True) for f in names if f.lower().endswith(exts)
        )
        self.aug = SlotConAugmentation()

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i]).convert("RGB")
        views, boxes, flips = self.aug(img)
        return views[0], views[1], torch.stack(boxes), torch.tensor(flips)


def one_thread(_):
    torch.set_num_threads(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = ImageFolder(a.images)
    if len(ds) < a.batch_size:
        sys.exit(f"{a.images}: {len(ds)} images make no batch of {a.batch_size}")
    loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers, drop_last=True,
                        persistent_workers=a.workers > 0, worker_init_fn=one_thread)
    samples, start, waits = 0, None, []
    while True:
        t = time.perf_counter()
        for batch in loader:
            now = time.perf_counter()
            if start is None:  # the clock starts at the first batch, as for slotcon's loader
                start, t = now, now
                samples = 0
            else:
                waits.append((now - t) * 1e3)
                samples += batch[0].shape[0]
            if now - start >= a.seconds:
                break
            t = time.perf_counter()
        else:
            continue
        break
    seconds = time.perf_counter() - start
    waits.sort()
    print(json.dumps({
        "bench": "baseline", "images": len(ds), "workers": a.workers, "batch_size": a.batch_size,
        "samples": samples, "seconds": seconds, "img_per_sec": samples / seconds,
        "img_per_sec_per_core": samples / seconds / max(a.workers, 1),
        "p50_batch_ms": waits[len(waits) // 2] if waits else 0.0,
        "p99_batch_ms": waits[int(0.99 * (len(waits) - 1))] if waits else 0.0,
    }))


if __name__ == "__main__":
    main()
