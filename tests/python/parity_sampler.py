"""Checks the crop samplers against torchvision and against the SlotCon algorithm.

Usage: parity_sampler.py DIR. Reads DIR/injected.json and DIR/dist.json written by the
Rust test, prints one JSON object:
  injected: {cases, equal, mismatches: [...]}: with the same injected draws, view 1
            equals torchvision's RandomResizedCrop.get_params and view 2 equals the
            conditioned sampler of DESIGN §4;
  dist:     Kolmogorov-Smirnov statistics and p-values of scale, log-ratio and view-2
            overlap against torchvision / Python-random draws, and the fallback rates.
"""
import json
import math
import os
import random
import sys

import numpy as np
import torch
from torchvision.transforms import RandomResizedCrop

SCALE, RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)


class Injected:
    """Feeds injected draws to torch (uniform_, randint) and to Python's random."""

    def __init__(self, randoms, ints):
        self.randoms, self.ints = list(randoms), list(ints)

    def random(self):
        return self.randoms.pop(0)

    def uniform(self, lo, hi):
        return lo + (hi - lo) * self.random()  # exactly Python's random.uniform

    def randint(self, lo, hi):
        v = self.ints.pop(0)
        assert lo <= v <= hi, (lo, v, hi)
        return v


def torchvision_crop(width, height, draws):
    """torchvision's own get_params, with its torch draws replaced by the injected ones."""
    def uniform_(t, lo, hi):
        return t.fill_(float(lo) + (float(hi) - float(lo)) * draws.random())

    def randint(lo, hi, size):
        return torch.tensor([draws.randint(lo, hi - 1)])

    saved = (torch.Tensor.uniform_, torch.randint, torch.get_default_dtype())
    torch.Tensor.uniform_, torch.randint = uniform_, randint
    torch.set_default_dtype(torch.float64)  # so log/exp of the ratio are doubles, as in SlotCon
    try:
        return RandomResizedCrop.get_params(torch.empty(3, height, width), list(SCALE), list(RATIO))
    finally:
        torch.Tensor.uniform_, torch.randint = saved[0], saved[1]
        torch.set_default_dtype(saved[2])


def attempt(width, height, rng):
    area = height * width
    target_area = rng.uniform(*SCALE) * area
    aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
    w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
    return w, h, target_area


def plain_crop(width, height, rng):
    """View 1 as DESIGN §4 states it, on Python's random (SlotCon's get_params)."""
    for _ in range(10):
        w, h, _ = attempt(width, height, rng)
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        w, h = int(round(height * max(RATIO))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def overlap(a, b):
    (i1, j1, h1, w1), (i2, j2, h2, w2) = a, b
    x = max(0, min(j1 + w1, j2 + w2) - max(j1, j2))
    y = max(0, min(i1 + h1, i2 + h2) - max(i1, i2))
    return x * y


def overlapping_crop(width, height, first, rng):
    """View 2 as DESIGN §4 states it: accept a try overlapping crop 1 by >= 1% of its
    target area; after 10 failures fall back to the unconditioned sampler."""
    for _ in range(10):
        w, h, target_area = attempt(width, height, rng)
        if 0 < w <= width and 0 < h <= height:
            c = (rng.randint(0, height - h), rng.randint(0, width - w), h, w)
            if overlap(c, first) >= 0.01 * target_area:
                return c, False
    return plain_crop(width, height, rng), True


def injected(cases):
    mismatches = []
    for c in cases:
        d = Injected(c["randoms"], c["ints"])
        if c["kind"] == "plain":
            got = list(torchvision_crop(c["width"], c["height"], d))
            also = list(plain_crop(c["width"], c["height"], Injected(c["randoms"], c["ints"])))
            if also != got:
                mismatches.append({"case": c, "torchvision": got, "design": also})
        else:
            crop, fallback = overlapping_crop(c["width"], c["height"], tuple(c["first"]), d)
            got = list(crop)
        if got != c["expect"]:
            mismatches.append({"case": c, "reference": got})
    return {"cases": len(cases), "equal": len(cases) - len(mismatches), "mismatches": mismatches[:5]}


def ks(a, b):
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    d = np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)))
    ne = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return {"d": float(d), "p": float(min(max(p, 0.0), 1.0))}


def features(crops, width, height):
    c = np.asarray(crops, float)
    return c[:, 2] * c[:, 3] / (width * height), np.log(c[:, 3] / c[:, 2])


def dist(spec):
    width, height, n = spec["width"], spec["height"], len(spec["view1"])
    torch.manual_seed(0)
    ref1 = [RandomResizedCrop.get_params(torch.empty(3, height, width), list(SCALE), list(RATIO)) for _ in range(n)]
    rng = random.Random(0)
    ref_pairs = []
    for _ in range(n):
        first = plain_crop(width, height, rng)
        second, fell = overlapping_crop(width, height, first, rng)
        ref_pairs.append((first, second, fell))
    ours_s, ours_r = features(spec["view1"], width, height)
    ref_s, ref_r = features(ref1, width, height)
    ours_o = [overlap(a, b) / (b[2] * b[3]) for a, b in zip(spec["pair_first"], spec["pair_second"])]
    ref_o = [overlap(a, b) / (b[2] * b[3]) for a, b, _ in ref_pairs]
    s2, r2 = features(spec["pair_second"], width, height)
    rs2, rr2 = features([b for _, b, _ in ref_pairs], width, height)
    ours_fb, ref_fb = float(np.mean(spec["fallback"])), float(np.mean([f for _, _, f in ref_pairs]))
    p = (ours_fb + ref_fb) / 2
    z = (ours_fb - ref_fb) / math.sqrt(max(p * (1 - p) * 2 / n, 1e-300))
    return {
        "n": n,
        "scale": ks(ours_s, ref_s),
        "log_ratio": ks(ours_r, ref_r),
        "view2_scale": ks(s2, rs2),
        "view2_log_ratio": ks(r2, rr2),
        "view2_overlap": ks(ours_o, ref_o),
        "fallback": {"ours": ours_fb, "reference": ref_fb, "z": z},
    }


if __name__ == "__main__":
    root = sys.argv[1]
    out = {"injected": injected(json.load(open(os.path.join(root, "injected.json"))))}
    spec = os.path.join(root, "dist.json")
    if os.path.exists(spec):
        out["dist"] = dist(json.load(open(spec)))
    print(json.dumps(out))
