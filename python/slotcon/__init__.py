"""slotcon for Python: the exact SlotCon two-view loader (crop boxes and flips included),
the shard store and ingest, from Rust.

    import slotcon
    loader = slotcon.Loader("shards/", batch_size=64, workers=8, seed=0, image_size=224,
                            min_scale=0.08, rank=rank, world_size=world)
    loader.set_epoch(epoch)
    for batch in loader:
        v1, v2 = batch.views          # numpy uint8 [N, 224, 224, 3] each, no copy
        boxes, flips = batch.boxes, batch.flips

`slotcon.torch.SlotConLoader` yields what the official SlotCon DataLoader yields."""
import os

import numpy as np

from . import _native
from ._native import SampleError, SlotconError, Store

__all__ = ["Batch", "Loader", "SampleError", "SettingsError", "SlotconError", "Store", "ingest", "checksum"]


class SettingsError(SlotconError, ValueError):
    """Loader settings out of their bounds (workers, min_scale, rank, a batch larger than the
    store...), as the loader itself checks them: a `SlotconError` and a `ValueError`."""


class Batch:
    """One batch: `views` (two uint8 [N, S, S, 3] arrays over the loader's buffer, no
    copy), `boxes` (float32 [N, 2, 4]: each view's normalised x1, y1, x2, y2 of the
    overlap, after flips), `flips` (bool [N, 2]), `ids` (uint64 [N]), `crops` (uint32
    [N, 2, 4]: each view's i, j, h, w in the source image), `epoch`, `step`,
    `skipped` ((id, path, reason) of samples left out). The buffer returns to the loader
    once this object and every array made from its views are gone."""

    __slots__ = ("_native", "views", "boxes", "flips", "ids", "epoch", "step")

    def __init__(self, native):
        n = len(native)
        self._native = native
        self.views = (np.asarray(native.view(0)), np.asarray(native.view(1)))
        self.boxes = np.frombuffer(native.boxes_bytes(), dtype="<f4").reshape(n, 2, 4)
        self.flips = np.frombuffer(native.flips_bytes(), dtype=np.uint8).reshape(n, 2).astype(bool)
        self.ids = np.frombuffer(native.ids_bytes(), dtype="<u8")
        self.epoch, self.step = native.epoch, native.step

    def __len__(self):
        return len(self.ids)

    @property
    def crops(self):
        return np.frombuffer(self._native.crops_bytes(), dtype="<u4").reshape(len(self), 2, 4)

    @property
    def skipped(self):
        return self._native.skipped()


class Loader:
    """Batches of two-view samples from a shard store, rendered by Rust worker threads
    (bit-exact with the official PIL + torchvision pipeline). Like a DataLoader with a
    DistributedSampler: `rank`/`world_size` give this process its share, `set_epoch`
    reshuffles, and every epoch has `len(loader)` full batches. `workers` defaults to
    every core. The GIL is released while waiting for a batch.

    A batch's views live in one of the loader's `prefetch + 2` buffers, so at most that
    many batches can be held at once: asking for one more raises `SlotconError` (so
    `list(loader)` fails on a longer epoch). Copy what you keep (`np.array(view)`).
    `shards` may be a URL (`s3://bucket/prefix/`, `gs://`, `az://`, `https://`): blocks
    are fetched with ranged reads into the cache folder `cache` (default `$SLOTCON_CACHE`,
    else `~/.cache/slotcon`), at most `cache_limit` bytes (default the store's size);
    `storage_options` (a dict of str, as fsspec's) sets object_store's options over the
    environment's (`AWS_*`...): `endpoint`, `region`, `access_key_id`, `allow_http`...
    `order="block"` orders each epoch by runs of consecutive samples (shuffled, and mixed
    within windows of runs) instead of uniformly: what a remote or larger-than-memory
    store wants. `set_start_step(s)` applies to the next iteration only. After `os.fork()` the child
    builds its own worker threads on its next `iter(loader)`; an iteration that was under
    way in the parent raises `SlotconError` in the child. `close()` and `set_epoch()` may
    come from another thread: they wait for a `next()` under way."""

    def __init__(self, shards, batch_size, workers=None, seed=0, image_size=224, min_scale=0.08, rank=0,
                 world_size=1, prefetch=2, cache=None, cache_limit=None, order="global", storage_options=None):
        try:
            self._native = _native.Loader(os.fspath(shards), batch_size, workers, seed, image_size, min_scale,
                                          rank, world_size, prefetch, cache, cache_limit, order, storage_options)
        except _native.SettingsError as e:
            raise SettingsError(str(e)) from None

    def set_epoch(self, epoch):
        """The epoch the next iteration runs (stops one that is running)."""
        self._native.set_epoch(epoch)

    def set_start_step(self, step):
        """Resume mid-epoch: the next iteration starts at batch `step`."""
        self._native.set_start_step(step)

    def __len__(self):
        return len(self._native)

    def __iter__(self):
        for native in iter(self._native):
            yield Batch(native)

    def close(self):
        """Stops and joins the worker threads of a running iteration."""
        self._native.close()

    @property
    def running(self):
        return self._native.running


def ingest(src, out, force=False, raw=False, threads=0, progress=None):
    """Ingests every JPEG/PNG under `src` into the shard store `out` (resuming a partial
    run; `force` starts over; `raw` stores decoded pixels); returns the report (a dict:
    written, skipped, ...). `progress(done, total)` is called as files are done; an
    exception it raises ends its calls and is raised when the ingest returns. `threads`
    is 0 (every core) or at most 4 per core (256 at most). Paths may be str, bytes or
    os.PathLike."""
    return _native.ingest(os.fspath(src), os.fspath(out), force, raw, threads, progress)


def checksum(batch, crc=0):
    """CRC-32C of a batch's ids, views, boxes and flips, in `slotcon-bench loader`'s order."""
    for part in (batch.ids.astype("<u8"), batch.views[0], batch.views[1], batch.boxes.astype("<f4"),
                 batch.flips.astype(np.uint8)):
        crc = _native.crc32c(np.ascontiguousarray(part).tobytes(), crc)
    return crc
