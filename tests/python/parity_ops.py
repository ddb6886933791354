"""Applies the reference (Pillow + torchvision, as SlotCon's CustomDataAugmentation does)
to the cases that a Rust test wrote, and compares with the Rust outputs.

Usage: parity_ops.py DIR. DIR/cases.json lists cases {op, input, w, h, params, output,
ow, oh}; inputs and outputs are raw interleaved RGB u8 files (float32 for `normalize`).
Prints one JSON object {op: {cases, exact, max_abs, mean_abs, worst}}.
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
JITTER = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def load(path, w, h):
    return Image.fromarray(np.fromfile(path, np.uint8).reshape(h, w, 3), "RGB")


def view(img, p):
    """One SlotCon view with injected parameters, step by step as DESIGN §4 lists them."""
    c = p["crop"]
    out = TF.resized_crop(img, c["i"], c["j"], c["h"], c["w"], [p["size"], p["size"]], InterpolationMode.BICUBIC)
    if p["flip"]:
        out = TF.hflip(out)
    j = p["jitter"]
    if j is not None:
        factors = [j["brightness"], j["contrast"], j["saturation"], j["hue"]]
        for op in j["order"]:
            out = JITTER[op](out, factors[op])
    if p["grayscale"]:
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    if p["blur_sigma"] is not None:
        out = out.filter(ImageFilter.GaussianBlur(radius=p["blur_sigma"]))
    if p["solarize"]:
        out = ImageOps.solarize(out, 128)
    return out


def reference(op, img, p):
    if op == "resize":
        return TF.resized_crop(img, p["i"], p["j"], p["h"], p["w"], [p["size"], p["size"]], InterpolationMode.BICUBIC)
    if op == "hflip":
        return TF.hflip(img)
    if op in ("brightness", "contrast", "saturation", "hue"):
        fn = JITTER[["brightness", "contrast", "saturation", "hue"].index(op)]
        return fn(img, p["factor"])
    if op == "grayscale":
        return TF.rgb_to_grayscale(img, num_output_channels=3)
    if op == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=p["sigma"]))
    if op == "solarize":
        return ImageOps.solarize(img, p["threshold"])
    if op == "view":
        return view(img, p)
    if op == "normalize":
        return TF.normalize(TF.to_tensor(img), MEAN, STD).numpy()
    raise ValueError(op)


def main(root):
    cases = json.load(open(os.path.join(root, "cases.json")))
    inputs = {}
    stats = {}
    for case in cases:
        key = case["input"]
        if key not in inputs:
            inputs.clear()  # cases come grouped by input; keep memory flat
            inputs[key] = load(os.path.join(root, key), case["w"], case["h"])
        want = reference(case["op"], inputs[key], case["params"])
        path = os.path.join(root, case["output"])
        if case["op"] == "normalize":
            got = np.fromfile(path, np.float32).reshape(want.shape)
            want = want.astype(np.float32)
        else:
            want = np.asarray(want, np.uint8).astype(np.int32)
            got = np.fromfile(path, np.uint8).reshape(case["oh"], case["ow"], 3).astype(np.int32)
        d = np.abs(got.astype(np.float64) - want.astype(np.float64))
        s = stats.setdefault(case["op"], {"cases": 0, "exact": 0, "max_abs": 0.0, "sum_mean": 0.0, "worst": None})
        s["cases"] += 1
        s["exact"] += int(d.max() == 0)
        if d.max() > s["max_abs"]:
            s["max_abs"], s["worst"] = float(d.max()), {"output": case["output"], "params": case["params"]}
        s["sum_mean"] += float(d.mean())
    for s in stats.values():
        s["mean_abs"] = s.pop("sum_mean") / s["cases"]
    print(json.dumps(stats))


if __name__ == "__main__":
    main(sys.argv[1])
