"""SlotCon's `invaug` (torchvision.ops.roi_align(aligned=True) then un-flip) on maps and
boxes a Rust test wrote. Usage: parity_align.py DIR with DIR/case.json
{n, c, h, w, boxes: [[x1, y1, x2, y2]], flips: [bool]} and DIR/maps.f32 ([n, c, h, w]).
Writes DIR/aligned.f32 ([n, c, h, w]) and prints 'ok'."""
import json
import os
import sys

import numpy as np
import torch
import torchvision

root = sys.argv[1]
case = json.load(open(os.path.join(root, "case.json")))
n, c, h, w = case["n"], case["c"], case["h"], case["w"]
x = torch.from_numpy(np.fromfile(os.path.join(root, "maps.f32"), np.float32).reshape(n, c, h, w))
coords = torch.tensor(case["boxes"], dtype=torch.float32)
# As SlotCon's invaug: scale the normalised boxes to the map, prepend the batch index.
scaled = coords.clone()
scaled[:, 0] = scaled[:, 0] * w
scaled[:, 2] = scaled[:, 2] * w
scaled[:, 1] = scaled[:, 1] * h
scaled[:, 3] = scaled[:, 3] * h
rois = torch.cat([torch.arange(n, dtype=torch.float32).view(n, 1), scaled], dim=1)
aligned = torchvision.ops.roi_align(x, rois, (h, w), aligned=True)
out = torch.stack([a.flip(-1) if f else a for a, f in zip(aligned, case["flips"])])
out.numpy().astype(np.float32).tofile(os.path.join(root, "aligned.f32"))
print("ok")
