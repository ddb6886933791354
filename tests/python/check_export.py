"""Checks slotcon-export's files from PyTorch: the torchvision safetensors loads into
torchvision's ResNet (only fc.* missing) and gives the C5 features slotcon computed;
the detectron2 pickle has detectron2's key names (renamed here independently, as MoCo's
convert-pretrain-to-detectron2.py does) and the same arrays.

Usage: check_export.py DIR with DIR/case.json {arch, n, size},
DIR/export.safetensors, DIR/export.pkl, DIR/input.f32, DIR/c5.f32. Prints JSON."""
import json
import os
import pickle
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import load_file


def d2_name(k):
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def main(root):
    c = json.load(open(os.path.join(root, "case.json")))
    state = load_file(os.path.join(root, "export.safetensors"))
    net = getattr(torchvision.models, c["arch"])()
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"], missing
    assert not unexpected, unexpected
    net.eval()
    n, s = c["n"], c["size"]
    x = torch.from_numpy(np.fromfile(os.path.join(root, "input.f32"), np.float32).reshape(n, 3, s, s))
    with torch.no_grad():
        c5 = torch.nn.Sequential(*list(net.children())[:-2])(x)
    ours = torch.from_numpy(np.fromfile(os.path.join(root, "c5.f32"), np.float32).reshape(c5.shape))
    rel = ((c5 - ours).abs().max() / c5.abs().max()).item()

    d2 = pickle.load(open(os.path.join(root, "export.pkl"), "rb"))
    assert d2["matching_heuristics"] is True and isinstance(d2["__author__"], str)
    want = {d2_name(k): v for k, v in net.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    got = d2["model"]
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:10]
    for k, v in want.items():
        assert isinstance(got[k], np.ndarray) and got[k].dtype == np.float32, k
        assert got[k].shape == tuple(v.shape), (k, got[k].shape, v.shape)
        assert np.array_equal(got[k], v.numpy()), k
    print(json.dumps({"c5_rel": rel, "tensors": len(state), "d2_keys": len(got),
                      "num_batches_tracked": int(state["bn1.num_batches_tracked"])}))


if __name__ == "__main__":
    main(sys.argv[1])
