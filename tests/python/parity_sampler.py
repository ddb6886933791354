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

# The reference samplers, shared with the benchmark's reference pipeline.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../bench/python"))
from reference_aug import overlap, sample_crop as plain_crop, sample_overlapping_crop as overlapping_crop  # noqa: E402

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
