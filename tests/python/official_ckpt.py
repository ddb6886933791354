"""Official-format SlotCon checkpoints for the interop tests (tests/tests/official.rs).

  official_ckpt.py make OUT.pth --arch A --hidden H --dim D --k K --batch B --instances N
                   --steps S --image-size P
      The reference model (slotcon_reference.py's modules, random weights, perturbed
      BatchNorm statistics) under the official key names, with a random centre, LARS 'mu'
      buffers (--optimizer sgd: SGD's 'momentum_buffer') for every trained parameter, num_batches_tracked = 2 S, and 'args' (an
      argparse.Namespace), 'scheduler', 'epoch' as main_pretrain.py saves them ('module.'
      prefix). Key order: the official module tree (official_pth.skeleton).
  official_ckpt.py compare A.pth B.pth
      Prints JSON: whether the state dicts have the same keys in the same order, shapes,
      dtypes and values (bit for bit), the optimizer states are equal, and the epochs.
  official_ckpt.py step CKPT.pth DIR --lr LR --ema M
      One reference training step from the checkpoint's weights, centre and momentum on the
      batch in DIR (case.json, views.u8 [2, n, s, s, 3]): prints {total, group, contrast}
      and writes DIR/after.safetensors (slotcon's names)."""
import argparse
import json
import os
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "..", "train", "eval", "python"))
import slotcon_reference as ref  # noqa: E402
from official_pth import is_buffer, skeleton  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD = {"0": "1", "1": "bn1", "3": "2", "4": "bn2", "6": "3"}
SIDES = {"encoder_q.": "student.backbone.", "encoder_k.": "teacher.backbone.", "projector_q.mlp.": "student.projector.",
         "projector_k.mlp.": "teacher.projector.", "grouping_q.": "student.grouping.", "grouping_k.": "teacher.grouping.",
         "predictor_slot.mlp.": "predictor."}


def ours(official):
    """slotcon's name (slotcon_reference.load's input) of an official tensor name."""
    for a, b in SIDES.items():
        if official.startswith(a):
            rest = official[len(a):]
            if a.endswith("mlp."):
                layer, tail = rest.split(".", 1)
                kind = "fc" if b == "predictor." else "conv"
                rest = (HEAD[layer] if HEAD[layer].startswith("bn") else kind + HEAD[layer]) + "." + tail
            rest = rest.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
            return b + rest
    raise KeyError(official)


def load(path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def reference_modules(c):
    student, teacher = ref.Encoder(c), ref.Encoder(c)
    predictor = ref.Predictor(c["dim_out"], c["dim_hidden"])
    return student, teacher, predictor


def make(a):
    torch.manual_seed(a.seed)
    c = {"arch": a.arch, "channels": 512 if a.arch in ("resnet18", "resnet34") else 2048, "dim_hidden": a.hidden,
         "dim_out": a.dim, "num_prototypes": a.k, "teacher_temp": 0.07}
    student, teacher, predictor = reference_modules(c)
    mods = {"student": student, "teacher": teacher, "predictor": predictor}
    with torch.no_grad():
        for m in mods.values():
            for name, t in m.state_dict().items():
                if name.endswith("running_mean") or name.endswith("bias"):
                    t.copy_(torch.randn_like(t) * 0.05)
                elif name.endswith("running_var"):
                    t.copy_(torch.rand_like(t) + 0.5)
                elif t.is_floating_point() and t.dim() == 1:  # BatchNorm weights
                    t.copy_(1.0 + torch.randn_like(t) * 0.05)
    flat = {}
    for prefix, m in mods.items():
        flat.update(ref.export(m, prefix))
    order = list(skeleton(a.arch, a.hidden, a.dim, a.k).state_dict().keys())
    model = {}
    for k in order:
        if k == "center":
            model[k] = torch.randn(1, a.k) * 0.1
        elif k.endswith("num_batches_tracked"):
            model[k] = torch.tensor(2 * a.steps)
        else:
            model[k] = flat[ours(k)]
    params = [k for k in order if not is_buffer(k)]
    trained = [i for i, k in enumerate(params) if not (k.startswith("encoder_k.") or k.startswith("projector_k.")
                                                       or k.startswith("grouping_k."))]
    key = "mu" if a.optimizer == "lars" else "momentum_buffer"
    state = {i: {key: torch.randn_like(model[params[i]]) * 1e-3} for i in trained}
    lr = a.batch / 256
    if a.optimizer == "lars":
        group = {"lr": lr, "weight_decay": 1e-5, "momentum": 0.9, "eta": 0.001, "weight_decay_filter": None,
                 "lars_adaptation_filter": None}
    else:
        sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9, weight_decay=1e-5)
        group = {k: v for k, v in sgd.param_groups[0].items() if k != "params"}
    group["params"] = list(range(len(params)))
    spe = a.instances // a.batch
    args = argparse.Namespace(arch=a.arch, dim_hidden=a.hidden, dim_out=a.dim, num_prototypes=a.k, batch_size=a.batch,
                              world_size=1, num_instances=a.instances, optimizer=a.optimizer, epochs=a.epochs,
                              warmup_epoch=1, warmup_multiplier=100, base_lr=1.0, weight_decay=1e-5, momentum=0.9,
                              teacher_momentum=0.99, teacher_temp=0.07, student_temp=0.1, center_momentum=0.9,
                              group_loss_weight=0.5, image_size=a.image_size, min_scale=0.08, seed=a.seed, save_freq=5,
                              fp16=a.fp16)
    scheduler = {"last_epoch": a.steps, "warmup_epoch": spe, "multiplier": 100,
                 "after_scheduler": {"T_max": (a.epochs - 1) * spe, "eta_min": 1e-6, "last_epoch": a.steps - spe}}
    ckpt = {"args": args, "model": {"module." + k: v for k, v in model.items()},
            "optimizer": {"state": state, "param_groups": [group]}, "scheduler": scheduler, "epoch": a.steps // spe}
    if a.fp16:
        # main_pretrain.py saves the GradScaler's state_dict with --fp16: a real one's, mid-run.
        scaler = torch.amp.GradScaler("cpu", init_scale=8192.0, growth_interval=500)
        state = scaler.state_dict()
        state["_growth_tracker"] = 37
        scaler.load_state_dict(state)
        ckpt["scaler"] = scaler.state_dict()
    torch.save(ckpt, a.out)


def fp16(ckpt):
    """args.fp16 of a checkpoint whose args are a Namespace (main_pretrain.py) or a dict."""
    args = ckpt["args"]
    return (args if isinstance(args, dict) else vars(args)).get("fp16")


def compare(a, b):
    x, y = load(a), load(b)
    mx, my = x["model"], y["model"]
    same = list(mx) == list(my) and all(mx[k].dtype == my[k].dtype and mx[k].shape == my[k].shape
                                        and torch.equal(mx[k], my[k]) for k in mx)
    sx, sy = x["optimizer"]["state"], y["optimizer"]["state"]
    opt = sorted(sx) == sorted(sy) and all(sorted(sx[i]) == sorted(sy[i]) and all(torch.equal(sx[i][k], sy[i][k]) for k in sx[i])
                                           for i in sx)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in (x["optimizer"]["param_groups"][0], y["optimizer"]["param_groups"][0])]
    print(json.dumps({"model_equal": same, "keys": len(mx), "optimizer_equal": opt, "buffers": len(sx),
                      "epochs": [x["epoch"], y["epoch"]], "param_groups": groups,
                      "steps": [x["scheduler"]["last_epoch"], y["scheduler"]["last_epoch"]],
                      "scalers": [x.get("scaler"), y.get("scaler")], "fp16": [fp16(x), fp16(y)]}))


def step(path, root, lr, ema):
    ckpt = load(path)
    model = {k[len("module."):]: v for k, v in ckpt["model"].items()}
    c = json.load(open(os.path.join(root, "case.json")))
    student, teacher, predictor = reference_modules(c)
    weights = {ours(k): v for k, v in model.items() if k != "center" and not k.endswith("num_batches_tracked")}
    for m, prefix in ((student, "student"), (teacher, "teacher"), (predictor, "predictor")):
        ref.load(m, weights, prefix)
        m.train()
    params = [k for k in model if not is_buffer(k)]
    mu = {ours(params[i]): s["mu"] for i, s in ckpt["optimizer"]["state"].items()}
    n, s = c["n"], c["size"]
    raw = torch.from_numpy(np.fromfile(os.path.join(root, "views.u8"), np.uint8).reshape(2, n, s, s, 3))
    views = raw.permute(0, 1, 4, 2, 3).float().div(255)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    x1, x2 = (views[0] - mean) / std, (views[1] - mean) / std
    boxes, flips, valid = torch.tensor(c["boxes"], dtype=torch.float32), c["flips"], torch.tensor(c["valid"])
    center = model["center"]
    (q1, sq1), (q2, sq2) = student(x1), student(x2)
    with torch.no_grad():
        (k1, sk1), (k2, sk2) = teacher(x1), teacher(x2)
    f = lambda v: [row[v] for row in flips]  # noqa: E731
    qa1, qa2 = ref.invaug(sq1, boxes[:, 0], f(0)), ref.invaug(sq2, boxes[:, 1], f(1))
    ka1, ka2 = ref.invaug(sk1, boxes[:, 0], f(0)), ref.invaug(sk2, boxes[:, 1], f(1))
    group = ref.self_distill(qa1, ka2, center, valid, c) + ref.self_distill(qa2, ka1, center, valid, c)
    tau = c["contrast_temp"]
    ctr = ref.contrast(q1, k2, sq1, sk2, predictor, tau) + ref.contrast(q2, k1, sq2, sk1, predictor, tau)
    w = c["group_loss_weight"]
    total = w * group + (1 - w) * ctr
    total.backward()
    named = [(f"{prefix}.{ref.rust_name(k)}", p) for prefix, m in (("student", student), ("predictor", predictor))
             for k, p in m.named_parameters()]
    with torch.no_grad():
        for name, p in named:
            dp = p.grad
            if p.ndim != 1:
                dp = dp.add(p, alpha=c["weight_decay"])
                pn, un = torch.norm(p), torch.norm(dp)
                one = torch.ones_like(pn)
                dp = dp.mul(torch.where(pn > 0.0, torch.where(un > 0, c["eta"] * pn / un, one), one))
            buf = mu[name].mul(c["momentum"]).add(dp)
            p.add_(buf, alpha=-lr)
        for pt, ps in zip(teacher.parameters(), student.parameters()):
            pt.copy_(pt * ema + ps * (1 - ema))
    state = {**ref.export(student, "student"), **ref.export(teacher, "teacher"), **ref.export(predictor, "predictor")}
    save_file(state, os.path.join(root, "after.safetensors"))
    print(json.dumps({"total": total.item(), "group": group.item(), "contrast": ctr.item()}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["make", "compare", "step"])
    ap.add_argument("paths", nargs="+")
    for flag, kind, default in (("--arch", str, "resnet18"), ("--hidden", int, 64), ("--dim", int, 32), ("--k", int, 16),
                                ("--batch", int, 32), ("--instances", int, 128), ("--steps", int, 8), ("--epochs", int, 20),
                                ("--image-size", int, 64), ("--seed", int, 0), ("--optimizer", str, "lars"), ("--lr", float, 0.0), ("--ema", float, 0.99)):
        ap.add_argument(flag, type=kind, default=default)
    ap.add_argument("--fp16", action="store_true")
    a = ap.parse_args()
    if a.cmd == "make":
        a.out = a.paths[0]
        make(a)
    elif a.cmd == "compare":
        compare(*a.paths)
    else:
        step(a.paths[0], a.paths[1], a.lr, a.ema)


if __name__ == "__main__":
    main()
