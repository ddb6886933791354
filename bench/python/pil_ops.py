"""Times the reference (Pillow + torchvision) versions of the ops that slotcon-bench ops
times, on the same image, crop and factors. Usage: pil_ops.py JPEG [SECONDS].
Prints one JSON list [{op, us}] (median microseconds per call)."""
import io
import json
import os
import sys
import timeit

import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

sys.path.insert(0, os.path.dirname(__file__))
from reference_aug import SlotConAugmentation  # noqa: E402

SIZE, CROP = 224, (40, 60, 300, 400)  # i, j, h, w as in bench/src/ops.rs


def main(path, seconds):
    data = open(path, "rb").read()
    img = Image.open(io.BytesIO(data)).convert("RGB")
    view = TF.resized_crop(img, *CROP, [SIZE, SIZE], InterpolationMode.BICUBIC)
    aug = SlotConAugmentation(normalize=False)
    ops = {
        "decode": lambda: Image.open(io.BytesIO(data)).convert("RGB"),
        "resize": lambda: TF.resized_crop(img, *CROP, [SIZE, SIZE], InterpolationMode.BICUBIC),
        "hflip": lambda: TF.hflip(view),
        "brightness": lambda: TF.adjust_brightness(view, 1.3),
        "contrast": lambda: TF.adjust_contrast(view, 0.7),
        "saturation": lambda: TF.adjust_saturation(view, 1.1),
        "hue": lambda: TF.adjust_hue(view, 0.05),
        "grayscale": lambda: TF.rgb_to_grayscale(view, num_output_channels=3),
        "blur": lambda: view.filter(ImageFilter.GaussianBlur(radius=1.0)),
        "solarize": lambda: ImageOps.solarize(view, 128),
        "normalize": lambda: TF.normalize(TF.to_tensor(view), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "two_views": lambda: aug(img),
    }
    out = []
    for name, fn in ops.items():
        once = timeit.timeit(fn, number=1)
        number = max(1, int(seconds / 10 / max(once, 1e-7)))
        runs = sorted(timeit.repeat(fn, number=number, repeat=10))
        out.append({"op": name, "us": (runs[4] + runs[5]) / 2 / number * 1e6})
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)
