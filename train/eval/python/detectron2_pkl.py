"""Pickles a detectron2 checkpoint from the safetensors that `slotcon-export --to detectron2`
stages: {"model": {name: ndarray}, "__author__": "slotcon", "matching_heuristics": True},
the format detectron2's DetectionCheckpointer reads (as MoCo's and SlotCon's conversion
scripts write it). Written to a temporary file, then renamed.

Usage: detectron2_pkl.py IN.safetensors OUT.pkl"""
import os
import pickle
import sys

from safetensors.numpy import load_file


def main(src, dst):
    model = load_file(src)
    out = {"model": model, "__author__": "slotcon", "matching_heuristics": True}
    tmp = f"{dst}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(out, f)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
