"""The Python package against the Rust loader, the official layout and the reference model.

Run by scripts/test.sh after it installs the wheel: `pytest python/tests`. Needs
$SLOTCON_COCO128 (the COCO sample) and $SLOTCON_BIN (the folder of the release binaries)."""
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import slotcon
import slotcon.torch as slotcon_torch

ROOT = Path(__file__).resolve().parents[2]
COCO = Path(os.environ.get("SLOTCON_COCO128", ROOT.parent / "shared" / "data" / "coco128"))
BIN = Path(os.environ.get("SLOTCON_BIN", ROOT / "target" / "release"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "shards"
    seen = []
    report = slotcon.ingest(COCO / "images", out, threads=2, progress=lambda done, total: seen.append((done, total)))
    assert report["written"] == 128 and not report["skipped"]
    assert seen and seen[-1][0] == seen[-1][1]
    return out


def rust_checksum(shards, workers):
    out = subprocess.run([BIN / "slotcon-bench", "loader", "--shards", shards, "--workers", str(workers),
                          "--batch-size", "32", "--seconds", "0.2", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["checksum"]


def python_checksum(loader, batches=4):
    crc = 0
    for i, batch in enumerate(loader):
        if i == batches:
            break
        crc = slotcon.checksum(batch, crc)
    return f"{crc:08x}"


def test_batches_equal_the_rust_loaders(shards):
    want = rust_checksum(shards, 2)
    for workers in (1, 2):
        loader = slotcon.Loader(shards, batch_size=32, workers=workers, seed=0)
        assert python_checksum(loader) == want, workers
    batch = next(iter(slotcon.Loader(shards, batch_size=32, workers=1)))
    v1, v2 = batch.views
    assert v1.shape == v2.shape == (32, 224, 224, 3) and v1.dtype == np.uint8
    assert batch.boxes.shape == (32, 2, 4) and batch.flips.shape == (32, 2) and batch.ids.shape == (32,)
    assert v1.base is not None, "the view is not a copy: it keeps the loader's batch alive"
    # torch shares the memory, through NumPy (torch.from_numpy) or DLPack.
    assert torch.from_numpy(v1).data_ptr() == v1.ctypes.data == torch.from_dlpack(v1).data_ptr()


def test_epochs_ranks_and_a_mid_epoch_start_follow_the_rust_loader(shards):
    loader = slotcon.Loader(shards, batch_size=16, workers=2, seed=3)
    assert len(loader) == 8
    loader.set_epoch(1)
    whole = [(b.step, slotcon.checksum(b)) for b in loader]
    assert [s for s, _ in whole] == list(range(8))
    loader.set_start_step(5)
    assert [(b.step, slotcon.checksum(b)) for b in loader] == whole[5:]
    loader.set_epoch(2)
    loader.set_start_step(0)
    assert [slotcon.checksum(b) for b in loader] != [c for _, c in whole]
    ranks = [slotcon.Loader(shards, batch_size=8, workers=1, seed=3, rank=r, world_size=2) for r in (0, 1)]
    ids = [np.concatenate([b.ids for b in r]) for r in ranks]
    assert len(ranks[0]) == 8 and not set(ids[0]) & set(ids[1]) and len(ids[0]) + len(ids[1]) == 128


def official_coords(crops, flips):
    """The official transforms' coords of two views' crops (i, j, h, w) and flips, with the
    official arithmetic: `_get_coord` (float32), `_clip_coords` (differences of float32
    tensors, divided as Python floats by the integer sizes, stored as float32), then
    `CustomRandomHorizontalFlip` (`1. - x` in float32)."""
    params = [tuple(int(x) for x in c) for c in crops]
    coords = [torch.Tensor([j, i, j + w, i + h]) for i, j, h, w in params]
    x1_n, y1_n = torch.max(coords[0][0], coords[1][0]), torch.max(coords[0][1], coords[1][1])
    x2_n, y2_n = torch.min(coords[0][2], coords[1][2]), torch.min(coords[0][3], coords[1][3])
    out = []
    for (i, j, h, w), c, flip in zip(params, coords, flips):
        r = torch.Tensor([float(x1_n - c[0]) / w, float(y1_n - c[1]) / h, float(x2_n - c[0]) / w, float(y2_n - c[1]) / h])
        if flip:
            flipped = r.clone()
            flipped[0], flipped[2] = 1. - r[2], 1. - r[0]
            r = flipped
        out.append(r)
    return out


def test_the_official_layout_adapter(shards):
    loader = slotcon_torch.SlotConLoader(shards, batch_size=16, workers=2, image_size=96)
    assert len(loader) == 8 and len(loader.dataset) == 128
    plain = slotcon.Loader(shards, batch_size=16, workers=2, image_size=96)
    (crops, coords, flags), batch = next(iter(loader)), next(iter(plain))
    assert [c.shape for c in crops] == [torch.Size([16, 3, 96, 96])] * 2 and crops[0].dtype == torch.float32
    assert [c.shape for c in coords] == [torch.Size([16, 4])] * 2 and [f.dtype for f in flags] == [torch.bool] * 2
    for n in range(16):
        want = official_coords(batch.crops[n], batch.flips[n])
        for v in range(2):
            assert torch.equal(coords[v][n], want[v]), (n, v)
            assert bool(flags[v][n]) == bool(batch.flips[n, v])
            image = Image.fromarray(batch.views[v][n])
            official = TF.normalize(TF.to_tensor(image), slotcon_torch.MEAN, slotcon_torch.STD)
            assert torch.equal(crops[v][n], official), (n, v)


def test_a_reference_training_step_runs_on_a_batch(shards):
    sys.path.insert(0, str(ROOT / "tests" / "python"))
    import slotcon_reference as ref

    c = {"arch": "resnet18", "channels": 512, "dim_hidden": 64, "dim_out": 32, "num_prototypes": 16,
         "teacher_temp": 0.07, "student_temp": 0.1}
    torch.manual_seed(0)
    student, teacher = ref.Encoder(c), ref.Encoder(c)
    teacher.load_state_dict(student.state_dict())
    predictor = ref.Predictor(32, 64)
    opt = torch.optim.SGD(list(student.parameters()) + list(predictor.parameters()), lr=0.1)
    crops, coords, flags = next(iter(slotcon_torch.SlotConLoader(shards, batch_size=8, workers=2, image_size=64)))
    (q1, sq1), (q2, sq2) = student(crops[0]), student(crops[1])
    with torch.no_grad():
        (k1, sk1), (k2, sk2) = teacher(crops[0]), teacher(crops[1])
    qa1, qa2 = ref.invaug(sq1, coords[0], flags[0].tolist()), ref.invaug(sq2, coords[1], flags[1].tolist())
    ka1, ka2 = ref.invaug(sk1, coords[0], flags[0].tolist()), ref.invaug(sk2, coords[1], flags[1].tolist())
    valid = torch.ones(8, dtype=torch.bool)
    center = torch.zeros(1, 16)
    loss = ref.self_distill(qa1, ka2, center, valid, c) + ref.self_distill(qa2, ka1, center, valid, c)
    loss = loss + ref.contrast(q1, k2, sq1, sk2, predictor, 0.2) + ref.contrast(q2, k1, sq2, sk1, predictor, 0.2)
    before = student.grouping.slot_embed.weight.detach().clone()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, student.grouping.slot_embed.weight)


def small_store(tmp_path):
    """A store of the first 8 COCO images in tmp_path/shards."""
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((COCO / "images" / "train2017").glob("*.jpg"))[:8]:
        (images / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "shards"
    slotcon.ingest(images, out)
    return out


def test_a_corrupt_sample_is_an_exception_naming_it(tmp_path):
    out = small_store(tmp_path)
    shard = sorted(out.glob("shard-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside some image's payload: its CRC no longer matches
    shard.write_bytes(bytes(data))
    loader = slotcon.Loader(out, batch_size=8, workers=1)
    with pytest.raises(slotcon.SampleError) as err:
        list(loader)
    e = err.value
    assert isinstance(e.id, int) and e.path.endswith(".jpg") and e.path in str(e), str(e)
    assert isinstance(e, slotcon.SlotconError)
    store = slotcon.Store(out)
    assert len(store) == 8 and store[-1][2].endswith(".jpg")
    with pytest.raises(IndexError):
        store[8]
    with pytest.raises(slotcon.SlotconError):
        slotcon.Loader(tmp_path / "no-such-store", batch_size=2)
    with pytest.raises(slotcon.SlotconError):
        slotcon.Loader(out, batch_size=9)  # more than the store holds
    for bad in (dict(batch_size=0), dict(batch_size=2, image_size=0), dict(batch_size=2, min_scale=float("nan")),
                dict(batch_size=2, min_scale=2.0), dict(batch_size=2, workers=100000), dict(batch_size=2, prefetch=10**12),
                dict(batch_size=2, rank=1, world_size=1)):
        with pytest.raises((ValueError, slotcon.SlotconError)):
            slotcon.Loader(out, **bad)
    # Bounds are the loader's own check (LoaderBuilder), raised as ValueError.
    for bad in (dict(batch_size=2, min_scale=2.0), dict(batch_size=2, min_scale=float("nan")),
                dict(batch_size=2, workers=100000), dict(batch_size=2, rank=1, world_size=1)):
        with pytest.raises(ValueError, match="loader settings") as err:
            slotcon.Loader(out, **bad)
        assert isinstance(err.value, slotcon.SettingsError) and isinstance(err.value, slotcon.SlotconError)


def loader_threads():
    tasks = Path("/proc/self/task")
    return sum((t / "comm").read_text().startswith("slotcon-loader") for t in tasks.iterdir())


def test_dropping_a_loader_mid_epoch_joins_its_threads(shards):
    base = loader_threads()
    loader = slotcon.Loader(shards, batch_size=8, workers=3)
    it = iter(loader)
    batch = next(it)
    assert loader.running and loader_threads() >= base + 3
    view = batch.views[0]
    del it, batch, loader
    gc.collect()
    deadline = time.time() + 10
    while loader_threads() > base and time.time() < deadline:
        time.sleep(0.05)
    assert loader_threads() == base
    assert view.shape[0] == 8 and int(view[0].sum()) > 0, "a view outlives its loader"


def test_the_benchmark_reports_python_against_rust(shards):
    out = subprocess.run([sys.executable, "-m", "slotcon.bench", "--shards", str(shards), "--seconds", "0.5",
                          "--rust", str(BIN / "slotcon-bench")], check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    assert report["img_per_sec"] > 0 and report["rust_img_per_sec"] > 0, report
    assert report["python_over_rust"] == report["img_per_sec"] / report["rust_img_per_sec"]
    bad = subprocess.run([sys.executable, "-m", "slotcon.bench", "--shards", str(shards), "--seconds", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--seconds" in bad.stderr


def test_ctrl_c_stops_a_loop_over_the_loader(shards):
    # The child restores Python's own SIGINT handler: a shell that starts this test in the
    # background passes SIGINT on as ignored, and Python then installs none.
    code = ("import signal, slotcon\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"loader = slotcon.Loader({str(shards)!r}, batch_size=8, workers=1)\n"
            "print('ready', flush=True)\n"
            "for epoch in range(10**6):\n"
            "    loader.set_epoch(epoch)\n"
            "    for batch in loader:\n"
            "        pass\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    proc.send_signal(2)  # SIGINT, as Ctrl-C
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the loop did not stop on SIGINT")
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err


def test_set_start_step_is_not_sticky_a_resumed_loader_yields_whole_later_epochs(shards):
    loader = slotcon.Loader(shards, batch_size=16, workers=2, seed=4)
    loader.set_epoch(3)
    loader.set_start_step(5)
    assert [b.step for b in loader] == [5, 6, 7]
    for epoch in (3, 4):
        loader.set_epoch(epoch)
        assert [b.step for b in loader] == list(range(8)), epoch
    # The order of the two calls does not matter.
    loader.set_start_step(6)
    loader.set_epoch(5)
    assert [b.step for b in loader] == [6, 7]


def wait_child(pid, seconds=60):
    """The exit code of child `pid`, killing it after `seconds` (a hang)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} hung")


def test_fork_with_a_live_loader_a_child_neither_hangs_nor_panics(shards):
    live = slotcon.Loader(shards, batch_size=8, workers=2, seed=5)
    it = iter(live)
    first = next(it)
    fresh = slotcon.Loader(shards, batch_size=8, workers=2, seed=5)  # never iterated
    want = [slotcon.checksum(b) for b in slotcon.Loader(shards, batch_size=8, workers=1, seed=5)]
    del first
    pid = os.fork()
    if pid == 0:  # the child: report by exit code, never return into pytest
        code = 10
        try:
            try:
                next(it)
                code = 11
            except slotcon.SlotconError as e:
                code = 12 if "fork" in str(e) else 13
            if code == 12 and [slotcon.checksum(b) for b in live] == want:
                code = 14
            if code == 14 and [slotcon.checksum(b) for b in fresh] == want:
                code = 0
        except BaseException:
            code = 15
        os._exit(code)
    assert wait_child(pid) == 0
    # The parent's iteration goes on.
    assert sum(1 for _ in it) == len(live) - 1


def test_a_signal_handlers_own_exception_ends_the_loop_not_keyboard_interrupt(shards):
    code = ("import os, signal, sys, slotcon\n"
            "class Stop(Exception): pass\n"
            "def on_term(*_): sys.exit(0)\n"
            "def on_usr1(*_): raise Stop('from the handler')\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            "signal.signal(signal.SIGUSR1, on_usr1)\n"
            f"loader = slotcon.Loader({str(shards)!r}, batch_size=8, workers=1)\n"
            "print('ready', flush=True)\n"
            "for epoch in range(10**6):\n"
            "    loader.set_epoch(epoch)\n"
            "    for batch in loader:\n"
            "        pass\n")
    for sig, want_code, want_text in ((15, 0, ""), (10, 1, "Stop: from the handler")):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == want_code and want_text in err and "KeyboardInterrupt" not in err, (sig, err)


def test_ingest_bounds_threads_and_raises_the_progress_callbacks_exception(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((COCO / "images" / "train2017").glob("*.jpg"))[:4]:
        (images / p.name).write_bytes(p.read_bytes())
    for threads in (10**6, 2**63):
        with pytest.raises((ValueError, OverflowError)):
            slotcon.ingest(images, tmp_path / "never", threads=threads)
    assert not (tmp_path / "never").exists()
    calls = []

    def progress(done, total):
        calls.append(done)
        raise ZeroDivisionError("the callback's own")

    with pytest.raises(ZeroDivisionError, match="the callback's own"):
        slotcon.ingest(images, tmp_path / "shards", threads=2, progress=progress)
    assert len(calls) == 1, calls
    # The store was written all the same (or resumes): a second call completes it.
    assert slotcon.ingest(images, tmp_path / "shards")["skipped"] == []


def test_close_and_set_epoch_from_another_thread_wait_instead_of_already_borrowed(shards):
    import threading
    loader = slotcon.Loader(shards, batch_size=8, workers=1)
    errors, stop = [], threading.Event()

    def consume():
        try:
            while not stop.is_set():
                for _ in loader:
                    pass
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    try:
        for epoch in range(20):
            loader.set_epoch(epoch)
            assert isinstance(loader.running, bool)
            loader.close()
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive() and not errors, errors


def test_paths_may_be_bytes(shards):
    raw = os.fsencode(str(shards))
    assert len(slotcon.Store(raw)) == 128
    assert len(slotcon.Loader(raw, batch_size=16, workers=1)) == 8


def test_a_shard_truncated_under_an_open_store_or_loader_is_an_exception_not_a_bus_error(tmp_path):
    out = small_store(tmp_path)
    store = slotcon.Store(out)
    loader = slotcon.Loader(out, batch_size=4, workers=1)
    assert store[0][2].endswith(".jpg")
    shard = sorted(out.glob("shard-*.parquet"))[0]
    os.truncate(shard, shard.stat().st_size // 3)
    with pytest.raises(slotcon.SlotconError, match="changed while open") as err:
        store[7]
    assert shard.name in str(err.value)
    with pytest.raises(slotcon.SlotconError, match="changed while open"):
        list(loader)


def test_a_store_in_s3_gives_the_local_stores_batches_cold_and_warm(shards, tmp_path):
    """slotcon.Loader("s3://...") against a real S3 server on 127.0.0.1 (slotcon-s3-server):
    the local store's batches over 2 epochs, cold and warm, on 1 and 2 ranks, and after a
    mid-epoch resume on another number of ranks."""
    server = subprocess.Popen([BIN / "slotcon-s3-server", tmp_path / "root", "--access-key", "k", "--secret-key", "s",
                               "--latency-ms", "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    (tmp_path / "root" / "bucket").mkdir(parents=True)
    try:
        port = server.stdout.readline().strip().rsplit(":", 1)[1]
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "k",
               "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}
        os.environ.update(env)
        subprocess.run([BIN / "slotcon-ingest", COCO / "images", "--out", "s3://bucket/coco/", "--staging",
                        tmp_path / "staging", "-q"], check=True, capture_output=True)
        def two_epochs(store, rank=0, world_size=1, start=0, **kw):
            """Each batch's checksum over epochs 0 and 1, from step `start` of epoch 0."""
            loader = slotcon.Loader(store, batch_size=16, workers=2, seed=7, rank=rank, world_size=world_size, **kw)
            out = []
            for epoch in (0, 1):
                loader.set_epoch(epoch)
                loader.set_start_step(start if epoch == 0 else 0)
                out += [(epoch, b.step, slotcon.checksum(b)) for b in loader]
            return out

        want = python_checksum(slotcon.Loader(shards, batch_size=16, workers=2, seed=7), batches=8)
        local = two_epochs(shards)
        assert len(local) == 16
        for what in ("cold", "warm"):
            loader = slotcon.Loader("s3://bucket/coco/", batch_size=16, workers=2, seed=7, cache=tmp_path / "cache")
            assert python_checksum(loader, batches=8) == want, what
            assert two_epochs("s3://bucket/coco/", cache=tmp_path / "cache") == local, what
        # Two ranks, each with a cold cache of its own, then sharing a warm one; and a
        # resume at step 3 of epoch 0 on 2 ranks of a run begun on 1.
        for rank in (0, 1):
            mine = two_epochs(shards, rank, 2)
            for cache in (tmp_path / f"cache-rank{rank}", tmp_path / "cache"):
                assert two_epochs("s3://bucket/coco/", rank, 2, cache=cache) == mine, (rank, cache)
            resumed = two_epochs(shards, rank, 2, start=3)
            assert resumed == mine[3:] and len(resumed) == 5
            assert two_epochs("s3://bucket/coco/", rank, 2, start=3, cache=tmp_path / "cache") == resumed, rank
        blocks = list((tmp_path / "cache").glob("*/*.blk"))
        assert blocks, "nothing was cached"
        store = slotcon.Store("s3://bucket/coco/", cache=tmp_path / "cache")
        assert len(store) == 128 and store[5][0] == slotcon.Store(shards)[5][0]
        with pytest.raises(slotcon.SlotconError, match="no slotcon store at this URL"):
            slotcon.Store("s3://bucket/nothing/", cache=tmp_path / "cache")
        # The server named by storage_options alone (fsspec's), not the environment.
        options = {"endpoint": env["AWS_ENDPOINT_URL"], "allow_http": "true", "access_key_id": "k",
                   "secret_access_key": "s", "region": "us-east-1"}
        for k in env:
            os.environ.pop(k)
        try:
            store = slotcon.Store("s3://bucket/coco/", cache=tmp_path / "cache-options", storage_options=options)
            assert store[5][0] == slotcon.Store(shards)[5][0]
            loader = slotcon.Loader("s3://bucket/coco/", batch_size=16, workers=2, seed=7,
                                    cache=tmp_path / "cache-options", storage_options=options)
            assert python_checksum(loader, batches=8) == want
            adapter = slotcon_torch.SlotConLoader("s3://bucket/coco/", batch_size=16, workers=2, image_size=64,
                                                  cache=tmp_path / "cache-options", storage_options=options)
            assert len(adapter.dataset) == 128 and len(next(iter(adapter))[0]) == 2
            with pytest.raises(slotcon.SlotconError, match="no_such_option"):
                slotcon.Store("s3://bucket/coco/", storage_options={**options, "no_such_option": "1"})
        finally:
            os.environ.update(env)
        # A child forked with a live remote loader neither hangs nor panics: its reads
        # are refused by name (its connections and fetcher threads stay in the parent).
        loader = slotcon.Loader("s3://bucket/coco/", batch_size=16, workers=2, seed=7, cache=tmp_path / "cache")
        next(iter(loader))
        pid = os.fork()
        if pid == 0:
            code = 10
            try:
                for _ in range(2):  # the parent's iteration, then a new one
                    try:
                        next(iter(loader))
                        code = 11
                        break
                    except slotcon.SlotconError as e:
                        code = 0 if "opened before fork()" in str(e) else 12
            except BaseException:
                code = 13
            os._exit(code)
        assert wait_child(pid) == 0
        assert python_checksum(loader, batches=8) == want
    finally:
        for k in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            os.environ.pop(k, None)
        server.stdin.close()
        server.wait(timeout=30)
