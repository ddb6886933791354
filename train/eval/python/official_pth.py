"""Reads and writes checkpoints in the format of the official SlotCon code (CVMI-Lab/SlotCon's
main_pretrain.py): a torch.save of {'args': argparse.Namespace (written as a dict), 'model': state_dict with
DDP's 'module.' prefix, 'optimizer': LARS or SGD state_dict, 'scheduler': the warm-up +
cosine scheduler's state, 'epoch': epochs finished, and with --fp16 'scaler': GradScaler's
state_dict}. slotcon-import and slotcon-export run
it with the venv's Python; the tensors pass through safetensors files, the rest as JSON.

Usage:
  official_pth.py read CKPT.pth OUT.safetensors OUT.json [--trust-pickle]
      Every tensor of 'model' (official names, 'module.' removed) and each momentum
      buffer as 'momentum.NAME'; OUT.json: epoch, args, optimizer, scheduler steps, scaler.
  official_pth.py write IN.safetensors IN.json OUT.pth
      The inverse, with keys in the official model's order (the module tree below)."""
import argparse
import io
import json
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file, save_file

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
MOMENTUM = "momentum."


def fail(message):
    raise SystemExit(message)


def head(layer, norm, cin, hidden, out):
    """DINOHead / DINOHead2d with three layers, as an nn.Sequential named `mlp`."""
    box = nn.Module()
    box.mlp = nn.Sequential(layer(cin, hidden), norm(hidden), nn.GELU(), layer(hidden, hidden), norm(hidden), nn.GELU(),
                            layer(hidden, out))
    return box


def skeleton(arch, hidden, out, k):
    """A module with the official SlotCon's names and registration order (on the meta
    device: shapes only), for the key order and a strict load before saving."""
    conv = lambda i, o: nn.Conv2d(i, o, 1)  # noqa: E731
    with torch.device("meta"):
        m = nn.Module()
        m.register_buffer("center", torch.zeros(1, k))
        for side in ("q", "k"):
            net = getattr(torchvision.models, arch)()
            del net.fc  # the encoder stops at C5
            setattr(m, f"encoder_{side}", net)
        channels = 512 if arch in ("resnet18", "resnet34") else 2048
        for side in ("q", "k"):
            setattr(m, f"projector_{side}", head(conv, nn.BatchNorm2d, channels, hidden, out))
        for side in ("q", "k"):
            grouping = nn.Module()
            grouping.slot_embed = nn.Embedding(k, out)
            setattr(m, f"grouping_{side}", grouping)
        m.predictor_slot = head(nn.Linear, nn.BatchNorm1d, out, hidden, out)
    return m


def is_buffer(name):
    return name == "center" or name.rsplit(".", 1)[-1] in BUFFERS


class _Stub:
    """What `_StorageClaims` makes of every global and call: an inert object."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageClaims(pickle.Unpickler):
    """Reads a torch.save pickle without running any of it: every global becomes an inert
    stub class named after it, and each storage reference is recorded as (type, key,
    elements), so the storages' claimed sizes can be checked before torch allocates them."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.claims = []

    def find_class(self, module, name):
        return type(name, (_Stub,), {"pickled_as": f"{module}.{name}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            fail(f"a storage reference {pid!r:.80} is not ('storage', type, key, location, size)")
        self.claims.append((getattr(pid[1], "pickled_as", "?"), str(pid[2]), pid[4]))
        return _Stub()


def storage_bytes(kind, elements, path, key):
    """The bytes `elements` of storage type `kind` ('torch.FloatStorage', ...) take."""
    module, _, name = kind.rpartition(".")
    if module != "torch" or not name.endswith("Storage") or not isinstance(elements, int) or elements < 0:
        fail(f"{path}: storage {key} is {elements!r:.40} of {kind}, not a count of a torch storage type")
    if name == "UntypedStorage":
        return elements
    dtype = getattr(getattr(torch, name, None), "dtype", None)
    if not isinstance(dtype, torch.dtype):
        fail(f"{path}: storage {key} has the unknown type {kind}")
    return elements * dtype.itemsize


def check_storages(path):
    """Refuses a zip checkpoint one of whose storages claims more bytes than its record in
    the file holds (torch would allocate the claim, or with mmap read past the record into
    the rest of the file), before torch.load sees it."""
    with zipfile.ZipFile(path) as z:
        pickles = [i for i in z.infolist() if i.filename.endswith("data.pkl")]
        if len(pickles) != 1 or pickles[0].file_size > 1 << 30:
            fail(f"{path}: not one data.pkl of at most 1 GiB, as torch.save writes")
        records = {i.filename: i.file_size for i in z.infolist()}
        prefix = pickles[0].filename[: -len("data.pkl")]
        claims = _StorageClaims(z.read(pickles[0]))
        try:
            claims.load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            fail(f"{path}: its data.pkl does not unpickle ({type(e).__name__}: {e})")
    for kind, key, elements in claims.claims:
        want = storage_bytes(kind, elements, path, key)
        have = records.get(f"{prefix}data/{key}")
        if have is None:
            fail(f"{path}: storage {key} has no record data/{key} in the file")
        if want > have:
            fail(f"{path}: storage {key} claims {want} bytes, its record data/{key} holds {have}")


def torch_load(path, weights_only):
    """torch.load with the file memory-mapped, so a tensor's bytes are read from the file and
    never allocated at a size the file merely claims; a zip file's storages are first checked
    against their records (`check_storages`); a legacy (non-zip) file loads as before."""
    if zipfile.is_zipfile(path):
        check_storages(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)


def load(path, trust):
    if trust:
        return torch_load(path, False)
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch_load(path, True)
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fail(f"{path}: not a checkpoint PyTorch's safe loader accepts ({first}); "
                 "if you trust the file, pass --trust-pickle")


def model_of(ckpt, path):
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return ckpt["state_dict"]
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt
    fail(f"{path}: holds no 'model' state dict")


def jsonable(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return str(v)


def optimizer_state(ckpt, names, path):
    """(kind, the first group without 'params', {name: buffer}) of ckpt['optimizer']."""
    opt = ckpt.get("optimizer") if isinstance(ckpt, dict) else None
    if not isinstance(opt, dict) or not opt.get("state"):
        return None, {}, {}
    groups = opt.get("param_groups") or [{}]
    count = sum(len(g.get("params", [])) for g in groups)
    if count != len(names):
        fail(f"{path}: the optimizer has {count} parameters, the model {len(names)}")
    kinds, buffers = set(), {}
    for index, state in opt["state"].items():
        kind = "lars" if "mu" in state else "sgd" if "momentum_buffer" in state else None
        if kind is None:
            fail(f"{path}: optimizer state {index} has neither 'mu' (LARS) nor 'momentum_buffer' (SGD): {sorted(state)}")
        kinds.add(kind)
        buffers[names[int(index)]] = state["mu" if kind == "lars" else "momentum_buffer"]
    if len(kinds) > 1:
        fail(f"{path}: the optimizer mixes LARS and SGD buffers")
    group = {k: jsonable(v) for k, v in groups[0].items() if k != "params"}
    return kinds.pop(), group, buffers


def read(src, tensors_out, meta_out, trust):
    ckpt = load(src, trust)
    model = model_of(ckpt, src)
    prefix = all(k.startswith("module.") for k in model)
    model = OrderedDict((k[len("module."):] if prefix else k, v) for k, v in model.items())
    params = [k for k in model if not is_buffer(k)]
    kind, group, buffers = optimizer_state(ckpt, params, src)
    for k, v in list(model.items()) + list(buffers.items()):
        if not torch.is_tensor(v):
            fail(f"{src}: {k} is a {type(v).__name__}, not a tensor")
        # A view that claims more elements than its storage holds (an expanded or crafted
        # stride) would be materialised at the claimed size by .contiguous().
        if v.numel() * v.element_size() > v.untyped_storage().nbytes():
            fail(f"{src}: {k}: shape {list(v.shape)} claims more than its {v.untyped_storage().nbytes()} bytes")
    out = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.items()}
    out.update({MOMENTUM + k: v.detach().float().contiguous() for k, v in buffers.items()})
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    args = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}
    sched = ckpt.get("scheduler") if isinstance(ckpt, dict) else None
    sched = sched if isinstance(sched, dict) else {}
    after = sched.get("after_scheduler") if isinstance(sched.get("after_scheduler"), dict) else sched
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    meta = {"epoch": epoch if isinstance(epoch, int) else None, "args": {k: jsonable(v) for k, v in args.items()},
            "optimizer": kind, "param_group": group, "ddp_prefix": prefix,
            "scheduler_steps": sched.get("last_epoch") if isinstance(sched.get("last_epoch"), int) else None,
            "eta_min": after.get("eta_min") if isinstance(after.get("eta_min"), (int, float)) else None}
    meta["scaler"] = scaler_state(ckpt.get("scaler") if isinstance(ckpt, dict) else None, src)
    save_file(out, tensors_out)
    with open(meta_out, "w") as f:
        json.dump(meta, f)


def scaler_state(s, path):
    """GradScaler's state_dict as the importer reads it (None when absent or empty, as
    GradScaler.state_dict() is for a disabled scaler)."""
    if not isinstance(s, dict) or not s:
        return None
    number = lambda k, kind: s.get(k) if isinstance(s.get(k), kind) and not isinstance(s.get(k), bool) else None
    out = {"scale": number("scale", (int, float)), "growth_tracker": number("_growth_tracker", int),
           "growth_factor": number("growth_factor", (int, float)), "backoff_factor": number("backoff_factor", (int, float)),
           "growth_interval": number("growth_interval", int)}
    bad = [k for k, v in out.items() if v is None]
    if bad or not 0 < out["scale"] < 3.4e38 or out["growth_tracker"] < 0:
        fail(f"{path}: the 'scaler' state is not GradScaler's (bad or missing: {bad or ['scale', '_growth_tracker']})")
    return out


def scheduler_state(s, lr_now):
    """The warm-up + cosine scheduler's state_dict at s['steps'], from a real
    CosineAnnealingLR's (the after-scheduler) plus the warm-up's own fields."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=s["base_lr"])
    after = torch.optim.lr_scheduler.CosineAnnealingLR(dummy, T_max=max(s["t_max"], 1), eta_min=s["eta_min"]).state_dict()
    after_steps = max(s["steps"] - s["warmup_iters"], 0)
    after.update(last_epoch=after_steps, _step_count=after_steps + 1, _last_lr=[lr_now])
    outer = {k: v for k, v in after.items() if k not in ("T_max", "eta_min")}
    outer.update(multiplier=s["multiplier"], warmup_epoch=s["warmup_iters"], finished=False, base_lrs=[s["base_lr"]],
                 last_epoch=s["steps"], _step_count=s["steps"] + 1, _last_lr=[lr_now])
    outer["after_scheduler"] = after
    return outer


def optimizer_dict(meta, names, tensors):
    o = meta["optimizer"]
    if o["kind"] == "lars":
        group = {"lr": o["lr"], "weight_decay": o["weight_decay"], "momentum": o["momentum"], "eta": o["eta"],
                 "weight_decay_filter": None, "lars_adaptation_filter": None}
        key = "mu"
    else:
        sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=o["lr"], momentum=o["momentum"],
                              weight_decay=o["weight_decay"])
        group = {k: v for k, v in sgd.param_groups[0].items() if k != "params"}
        key = "momentum_buffer"
    state = {i: {key: tensors[MOMENTUM + n]} for i, n in enumerate(names) if MOMENTUM + n in tensors}
    group["params"] = list(range(len(names)))
    return {"state": state, "param_groups": [group]}


def write(tensors_in, meta_in, dst):
    tensors = load_file(tensors_in)
    meta = json.load(open(meta_in))
    a = meta["args"]
    model = skeleton(a["arch"], a["dim_hidden"], a["dim_out"], a["num_prototypes"])
    order = list(model.state_dict().keys())
    state = OrderedDict((k, tensors[k]) for k in order if k in tensors)
    extra = sorted(k for k in tensors if k not in state and not k.startswith(MOMENTUM))
    if extra or len(state) != len(order):
        fail(f"{dst}: tensors not in the official model: {extra[:3]}, missing: {[k for k in order if k not in state][:3]}")
    model.load_state_dict(state, strict=True, assign=True)  # names and shapes, checked
    names = [k for k in order if not is_buffer(k)]
    # args as a plain dict, not the argparse.Namespace main_pretrain.py pickles: torch.load's
    # default (weights_only=True since PyTorch 2.6), as viz_slots.py and the transfer/
    # scripts call it, refuses a Namespace; main_pretrain.py never reads args back.
    ckpt = {"args": dict(a), "model": OrderedDict(("module." + k, v) for k, v in state.items()),
            "optimizer": optimizer_dict(meta, names, tensors), "scheduler": scheduler_state(meta["scheduler"], meta["optimizer"]["lr"]),
            "epoch": meta["epoch"]}
    if meta.get("scaler"):
        # main_pretrain.py saves `scaler.state_dict()` when --fp16.
        sc = meta["scaler"]
        ckpt["scaler"] = {"scale": float(sc["scale"]), "growth_factor": float(sc["growth_factor"]),
                          "backoff_factor": float(sc["backoff_factor"]), "growth_interval": int(sc["growth_interval"]),
                          "_growth_tracker": int(sc["growth_tracker"])}
    tmp = f"{dst}.tmp-{os.getpid()}"
    torch.save(ckpt, tmp)
    os.replace(tmp, dst)


def main(argv):
    if len(argv) >= 4 and argv[0] == "read":
        read(argv[1], argv[2], argv[3], "--trust-pickle" in argv[4:])
    elif len(argv) == 4 and argv[0] == "write":
        write(argv[1], argv[2], argv[3])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
