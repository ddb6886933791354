"""The bilinear upsampling + argmax of slotcon-eval against PyTorch's
F.interpolate(mode="bilinear", align_corners=False).argmax(1).

Usage: check_upsample.py DIR with DIR/case.json {k, h, w, out_h, out_w}, DIR/maps.f32 and
DIR/ours.u16. Prints JSON {pixels, differ, differ_not_tied}."""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def main(root):
    c = json.load(open(os.path.join(root, "case.json")))
    maps = torch.from_numpy(np.fromfile(os.path.join(root, "maps.f32"), np.float32).reshape(1, c["k"], c["h"], c["w"]))
    ours = torch.from_numpy(np.fromfile(os.path.join(root, "ours.u16"), np.uint16).astype(np.int64))
    up = F.interpolate(maps, size=(c["out_h"], c["out_w"]), mode="bilinear", align_corners=False)[0]
    ref = up.argmax(0).flatten()
    differ = (ref != ours).nonzero().flatten()
    flat = up.flatten(1)
    # A pixel where the two picks score within float rounding of each other is a tie.
    gap = (flat[ref[differ], differ] - flat[ours[differ], differ]).abs()
    print(json.dumps({"pixels": int(ref.numel()), "differ": int(differ.numel()),
                      "differ_not_tied": int((gap > 1e-5).sum())}))


if __name__ == "__main__":
    main(sys.argv[1])
