"""The official SlotCon training script's loader, replaced: `SlotConLoader` yields
`(crops, coords, flags)` as the official `DataLoader` over `CustomDataAugmentation` does:
`crops` two float32 [N, 3, S, S] tensors normalised with ImageNet's mean and std (as
`ToTensor` + `Normalize`), `coords` two float32 [N, 4] tensors (each view's normalised
x1, y1, x2, y2 of the overlap, after flips), `flags` two bool [N] tensors (flipped).

    train_loader = slotcon.torch.SlotConLoader(args.shards, batch_size=args.batch_size,
                                               workers=args.num_workers, image_size=args.image_size,
                                               min_scale=args.min_scale)
    train_sampler = train_loader          # has set_epoch, like a DistributedSampler"""
import torch

from . import Loader, Store

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(view, device="cpu", non_blocking=False):
    """uint8 [N, S, S, 3] (numpy or tensor) to the official float32 [N, 3, S, S] crop:
    `ToTensor` (divide by 255) then `Normalize(MEAN, STD)`, the same float32 operations."""
    x = torch.as_tensor(view).to(device, non_blocking=non_blocking)
    x = x.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


class SlotConLoader:
    """A drop-in for the official `DataLoader(ImageFolder(..., CustomDataAugmentation),
    sampler=DistributedSampler, drop_last=True)`. `rank`/`world_size` default to
    torch.distributed's when it is initialised; `set_epoch` as the sampler's; `len()` the
    batches per epoch; `.dataset` the store (its `len` is the number of images). `cache`,
    `cache_limit`, `storage_options` and `order` are `slotcon.Loader`'s, for a store at a
    URL."""

    def __init__(self, shards, batch_size, workers=None, seed=0, image_size=224, min_scale=0.08, rank=None,
                 world_size=None, device="cpu", pin_memory=False, cache=None, cache_limit=None,
                 storage_options=None, order="global"):
        dist = torch.distributed
        ready = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if ready else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if ready else 1)
        store = dict(cache=cache, cache_limit=cache_limit, storage_options=storage_options)
        self.loader = Loader(shards, batch_size, workers=workers, seed=seed, image_size=image_size,
                             min_scale=min_scale, rank=rank, world_size=world_size, order=order, **store)
        self.dataset = Store(shards, **store)
        self.device, self.pin_memory = torch.device(device), pin_memory

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            views = [torch.from_numpy(v) for v in batch.views]
            if self.pin_memory:
                views = [v.pin_memory() for v in views]
            crops = [normalize(v, self.device, non_blocking=self.pin_memory) for v in views]
            boxes, flips = torch.from_numpy(batch.boxes.copy()), torch.from_numpy(batch.flips.copy())
            coords = [boxes[:, 0].contiguous(), boxes[:, 1].contiguous()]
            flags = [flips[:, 0].contiguous(), flips[:, 1].contiguous()]
            yield crops, coords, flags
