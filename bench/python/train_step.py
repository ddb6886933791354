"""Times one SlotCon training step in PyTorch, the baseline of `slotcon-train-bench`.

The model and loss are the test reference (tests/python/slotcon_reference.py, DESIGN §6),
loaded with the weights slotcon exported and fed the same loader batch. One step is what
slotcon's Trainer::train_step does: u8 NHWC views to normalised floats, student and
teacher forward on both views, roi_align alignment, grouping + contrast loss, backward,
LARS with momentum, the EMA teacher update and the centre update, ending with loss.item().

With --amp (or --amp=bf16) the forward passes run under torch.autocast(bfloat16), as AMP
trains (f32 weights, optimiser and teacher); with --amp=fp16 under autocast(float16) with
GradScaler's dynamic loss scaling, by its own kernels (scale the loss,
_amp_foreach_non_finite_check_and_unscale_, found_inf.item(), the step only when finite,
_amp_update_scale_), as main_pretrain.py --fp16 trains. With --breakdown each phase (data, forward, loss,
backward, optimizer, ema) ends with a device sync and is timed, as slotcon's Trainer does
when profiling.

With --observe it builds the model and runs --warmup steps and one more under
torch.profiler (profile_memory) and prints, for that last step: the bytes held when it
began (weights, gradients, momentum, teacher: all allocated under the profiler); the ATen
operators by name (every call, and the outermost ones: those not called by another ATen
operator on the same thread); and the peak of the bytes the allocator held above those
held when the step began, in all and per phase (data, forward, loss, backward, optimizer,
ema: the peak and the bytes live at the phase's end), as slotcon_train::observe counts
its own.

Usage: train_step.py DIR --warmup W --steps N --threads T [--device cpu|cuda] [--amp[=bf16|fp16]]
                     [--memory-format contiguous|channels_last] [--breakdown] [--observe]

--memory-format: the views and the model in NCHW (the official code's, the default) or in
torch.channels_last.
DIR holds case.json, weights.safetensors and views.u8 ([2, n, s, s, 3]). Prints JSON."""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "python"))
import slotcon_reference as ref  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Lars:
    """LARS as SlotCon's reference: decay and trust ratio on non-1-D parameters only."""

    def __init__(self, params, weight_decay, eta, momentum):
        self.params, self.wd, self.eta, self.m = list(params), weight_decay, eta, momentum
        self.mu = [None] * len(self.params)

    @torch.no_grad()
    def step(self, lr):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            dp = p.grad
            if p.ndim != 1:
                dp = dp.add(p, alpha=self.wd)
                pn, un = torch.norm(p), torch.norm(dp)
                one = torch.ones_like(pn)
                dp = dp.mul(torch.where(pn > 0.0, torch.where(un > 0, self.eta * pn / un, one), one))
            self.mu[i] = dp.clone() if self.mu[i] is None else self.mu[i].mul_(self.m).add_(dp)
            p.add_(self.mu[i], alpha=-lr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", nargs="?", const="bf16", default=None, choices=["bf16", "fp16"])
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--observe", action="store_true")
    ap.add_argument("--memory-format", default="contiguous", choices=["contiguous", "channels_last"])
    a = ap.parse_args()
    amp_dtype = torch.float16 if a.amp == "fp16" else torch.bfloat16
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    c = json.load(open(os.path.join(a.dir, "case.json")))
    # Observed from before the model is built, so that what the step holds between steps
    # (weights, gradients, momentum, teacher) is seen allocated: observe()'s held_bytes.
    prof = profiler() if a.observe else None
    weights = load_file(os.path.join(a.dir, "weights.safetensors"))
    student, teacher = ref.Encoder(c), ref.Encoder(c)
    predictor = ref.Predictor(c["dim_out"], c["dim_hidden"])
    for m, name in ((student, "student"), (teacher, "teacher"), (predictor, "predictor")):
        ref.load(m, weights, name)
        m.to(dev).train()
    del weights
    fmt = torch.channels_last if a.memory_format == "channels_last" else torch.contiguous_format
    for m in (student, teacher, predictor):
        m.to(memory_format=fmt)
    for p in teacher.parameters():
        p.requires_grad_(False)
    n, s = c["n"], c["size"]
    raw = torch.from_numpy(np.fromfile(os.path.join(a.dir, "views.u8"), np.uint8).reshape(2, n, s, s, 3))
    boxes = torch.tensor(c["boxes"], dtype=torch.float32, device=dev)
    flips, valid = c["flips"], torch.tensor(c["valid"], device=dev)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    center = torch.zeros(1, c["num_prototypes"], device=dev)
    # GradScaler's state (init_scale 2^16, growth 2 every 2000 clean steps, backoff 0.5).
    scale = torch.full((), 65536.0, device=dev)
    growth = torch.zeros((), dtype=torch.int32, device=dev)
    optim = Lars(list(student.parameters()) + list(predictor.parameters()), c["weight_decay"], c["eta"], c["momentum"])

    phases = {k: [] for k in ("data", "forward", "loss", "backward", "optimizer", "ema")}

    class Clock:
        def __init__(self):
            self.last = time.perf_counter()

        def lap(self, name):
            if a.observe:
                # A mark the observation splits the step's bytes at (see observe()).
                with torch.profiler.record_function(f"slotcon::phase::{name}"):
                    pass
            if not a.breakdown:
                return
            if dev.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.times[name] = (now - self.last) * 1000.0
            self.last = now

    def clock_off():
        clock = Clock()
        clock.times = {}
        return clock

    def step(center, clock):
        views = raw.to(dev, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255)
        # NHWC bytes permuted carry NHWC strides: made NCHW unless channels_last is asked.
        x1, x2 = ((views[0] - mean) / std).contiguous(memory_format=fmt), ((views[1] - mean) / std).contiguous(memory_format=fmt)
        clock.lap("data")
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=a.amp is not None):
            (q1, sq1), (q2, sq2) = student(x1), student(x2)
            with torch.no_grad():
                (k1, sk1), (k2, sk2) = teacher(x1), teacher(x2)
        q1, sq1, q2, sq2, k1, sk1, k2, sk2 = (t.float() for t in (q1, sq1, q2, sq2, k1, sk1, k2, sk2))
        clock.lap("forward")
        f = lambda v: [row[v] for row in flips]  # noqa: E731
        qa1, qa2 = ref.invaug(sq1, boxes[:, 0], f(0)), ref.invaug(sq2, boxes[:, 1], f(1))
        ka1, ka2 = ref.invaug(sk1, boxes[:, 0], f(0)), ref.invaug(sk2, boxes[:, 1], f(1))
        group = ref.self_distill(qa1, ka2, center, valid, c) + ref.self_distill(qa2, ka1, center, valid, c)
        tau = c["contrast_temp"]
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=a.amp is not None):
            ctr = ref.contrast(q1, k2, sq1, sk2, predictor, tau) + ref.contrast(q2, k1, sq2, sk1, predictor, tau)
        w = c["group_loss_weight"]
        total = w * group + (1 - w) * ctr.float()
        clock.lap("loss")
        for p in optim.params:
            p.grad = None
        if a.amp == "fp16":
            (total * scale).backward()
            grads = [p.grad for p in optim.params if p.grad is not None]
            found = torch.zeros(1, device=dev)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, scale.double().reciprocal().float())
            skip = found.item() != 0
            torch._amp_update_scale_(scale, growth, found, 2.0, 0.5, 2000)
        else:
            total.backward()
            skip = False
        clock.lap("backward")
        if not skip:
            optim.step(c["lr"])
        clock.lap("optimizer")
        with torch.no_grad():
            if not skip:
                for pt, ps in zip(teacher.parameters(), student.parameters()):
                    pt.mul_(c["ema"]).add_(ps, alpha=1 - c["ema"])
                batch_center = torch.cat([sk1, sk2]).permute(0, 2, 3, 1).flatten(0, 2).mean(0, keepdim=True)
                center = center * c["center_momentum"] + batch_center * (1 - c["center_momentum"])
        loss = total.item()
        clock.lap("ema")
        return loss, center

    if a.observe:
        print(json.dumps(observe(prof, lambda: step(center, clock_off())[1], a.warmup, dev)))
        return
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        clock = Clock()
        clock.times = {}
        loss, center = step(center, clock)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        losses.append(loss)
        if i >= a.warmup:
            times.append((time.perf_counter() - t) * 1000.0)
            for k, v in clock.times.items():
                phases[k].append(v)
    print(json.dumps({"step_ms": times, "losses": losses, "phases_ms": phases if a.breakdown else None, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "device": str(dev)}))


def profiler():
    """torch.profiler with profile_memory, started."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    prof.__enter__()
    return prof


def observe(prof, step, warmup, dev):
    """The last of warmup + 1 steps under the started profiler `prof`: operators, the bytes
    held when the step began (of those allocated since `prof` started) and the peak above."""
    import tempfile

    from torch.profiler import record_function

    try:
        for i in range(max(warmup, 1) + 1):
            with record_function("slotcon::step"):
                step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
    finally:
        prof.__exit__(None, None, None)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        events = json.load(open(path))["traceEvents"]
    last = max((e for e in events if e.get("name") == "slotcon::step" and "dur" in e), key=lambda e: e["ts"])
    start, end = last["ts"], last["ts"] + last["dur"]
    device_type = 1 if dev.type == "cuda" else 0
    held = sum(e["args"]["Bytes"] for e in events
               if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == device_type and e.get("ts", start) < start)
    inside = sorted((e for e in events if start <= e.get("ts", -1) <= end), key=lambda e: (e["ts"], -e.get("dur", 0)))
    live = peak = phase_peak = 0
    ops, open_ops, phases = {}, {}, []
    for e in inside:
        if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == device_type:
            live += e["args"]["Bytes"]
            peak, phase_peak = max(peak, live), max(phase_peak, live)
        elif e.get("name", "").startswith("slotcon::phase::") and "dur" in e:
            phases.append({"name": e["name"].removeprefix("slotcon::phase::"), "peak_bytes": phase_peak, "live_bytes": live})
            phase_peak = live
        elif e.get("cat") == "cpu_op" and e["name"].startswith("aten::"):
            stack = open_ops.setdefault(e.get("tid"), [])
            while stack and stack[-1] <= e["ts"]:
                stack.pop()
            count = ops.setdefault(e["name"], {"total": 0, "top": 0})
            count["total"] += 1
            count["top"] += not stack
            stack.append(e["ts"] + e.get("dur", 0))
    return {"held_bytes": held, "peak_bytes": peak, "retained_bytes": live, "phases": phases, "ops": ops, "torch": torch.__version__}


if __name__ == "__main__":
    main()
