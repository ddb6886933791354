"""SlotCon's two-view augmentation on PIL images, written from DESIGN §4 with Pillow and
torchvision: the reference pipeline that slotcon's augment crate reproduces and that the
benchmarks compare against. Randomness comes from Python's `random` and torch, as in the
reference."""
import math
import random

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

SCALE, RATIO, SIZE = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), 224


def _try_size(width, height, rng):
    target_area = rng.uniform(*SCALE) * width * height
    aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    return w, h, target_area


def sample_crop(width, height, rng=random):
    """torchvision's RandomResizedCrop.get_params, drawing from `rng` (Python's random
    module by default, or anything with `uniform` and `randint`)."""
    for _ in range(10):
        w, h, _ = _try_size(width, height, rng)
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
    """Intersection area of two (i, j, h, w) crops."""
    (i1, j1, h1, w1), (i2, j2, h2, w2) = a, b
    x = max(0, min(j1 + w1, j2 + w2) - max(j1, j2))
    y = max(0, min(i1 + h1, i2 + h2) - max(i1, i2))
    return x * y


def sample_overlapping_crop(width, height, first, rng=random):
    """View 2: a try must overlap crop 1 by at least 1% of its target area; after 10
    failures, the unconditioned sampler. Returns (crop, fell_back)."""
    for _ in range(10):
        w, h, target_area = _try_size(width, height, rng)
        if 0 < w <= width and 0 < h <= height:
            c = (rng.randint(0, height - h), rng.randint(0, width - w), h, w)
            if overlap(c, first) >= 0.01 * target_area:
                return c, False
    return sample_crop(width, height, rng), True


class SlotConAugmentation:
    """Two views with crops, flips, colour jitter, grayscale, blur and solarize."""

    def __init__(self, normalize=True):
        jitter = T.Compose([
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ])
        tail = [T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))] if normalize else []
        blur = lambda img: img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))  # noqa: E731
        self.view1 = T.Compose([jitter, blur, *tail])
        self.view2 = T.Compose([jitter, T.RandomApply([blur], p=0.1), T.RandomApply([lambda im: ImageOps.solarize(im, 128)], p=0.2), *tail])

    def __call__(self, img):
        width, height = img.size
        c1 = sample_crop(width, height)
        c2, _ = sample_overlapping_crop(width, height, c1)
        boxes = overlap_boxes(c1, c2)
        views, flips = [], []
        for c, box in zip((c1, c2), boxes):
            v = TF.resized_crop(img, *c, [SIZE, SIZE], InterpolationMode.BICUBIC)
            flip = bool(torch.rand(1) < 0.5)
            if flip:
                v = TF.hflip(v)
                box[0], box[2] = 1.0 - box[2], 1.0 - box[0]
            views.append(v)
            flips.append(flip)
        return [self.view1(views[0]), self.view2(views[1])], boxes, flips


def overlap_boxes(a, b):
    """The crops' intersection in each crop's normalised frame, [x1, y1, x2, y2], float32."""
    (ai, aj, ah, aw), (bi, bj, bh, bw) = a, b
    x1, y1 = max(aj, bj), max(ai, bi)
    x2, y2 = min(aj + aw, bj + bw), min(ai + ah, bi + bh)
    return [torch.tensor([(x1 - j) / w, (y1 - i) / h, (x2 - j) / w, (y2 - i) / h], dtype=torch.float32) for i, j, h, w in (a, b)]
