"""A compact PyTorch reference of SlotCon's forward pass and loss, written from DESIGN §6
(student and EMA teacher encoders, projector, semantic grouping, roi_align alignment with
un-flipping, self-distillation with centring, filtered slot contrast), fed the weights a
Rust test exported (safetensors, the Rust module's names) and the same batch.

Usage: slotcon_reference.py DIR with DIR/case.json, DIR/weights.safetensors and
DIR/views.f32 ([2, n, 3, s, s]). Prints {total, group, contrast, center} as JSON."""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file


class Projector(nn.Module):
    def __init__(self, cin, hidden, out):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, hidden, 1), nn.BatchNorm2d(hidden)
        self.conv2, self.bn2 = nn.Conv2d(hidden, hidden, 1), nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out, 1)

    def forward(self, x):
        x = F.gelu(self.bn1(self.conv1(x)))
        x = F.gelu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class Predictor(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(dim, hidden), nn.BatchNorm1d(hidden)
        self.fc2, self.bn2 = nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = F.gelu(self.bn1(self.fc1(x)))
        x = F.gelu(self.bn2(self.fc2(x)))
        return self.fc3(x)


class Grouping(nn.Module):
    def __init__(self, k, dim, temp):
        super().__init__()
        self.slot_embed, self.temp = nn.Embedding(k, dim), temp

    def forward(self, x):
        slots = self.slot_embed.weight.unsqueeze(0).expand(x.size(0), -1, -1)
        dots = torch.einsum("bkd,bdhw->bkhw", F.normalize(slots, dim=2), F.normalize(x, dim=1))
        attn = (dots / self.temp).softmax(dim=1) + 1e-6
        return torch.einsum("bdhw,bkhw->bkd", x, attn / attn.sum(dim=(2, 3), keepdim=True)), dots


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        net = getattr(torchvision.models, c["arch"])()
        self.backbone = nn.Sequential(*list(net.children())[:-2])
        self.projector = Projector(c["channels"], c["dim_hidden"], c["dim_out"])
        self.grouping = Grouping(c["num_prototypes"], c["dim_out"], c["teacher_temp"])

    def forward(self, x):
        return self.grouping(self.projector(self.backbone(x)))


def load(module, weights, prefix):
    """Loads `prefix.*` tensors, renaming the Rust backbone's names to torchvision's."""
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    state = {}
    for key, value in weights.items():
        if not key.startswith(prefix + "."):
            continue
        k = key[len(prefix) + 1:].replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")
        if k.startswith("backbone."):
            head, rest = k[len("backbone."):].split(".", 1)
            k = f"backbone.{names.index(head)}.{rest}"
        state[k] = value
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (prefix, missing, unexpected)


def rust_name(k):
    """The Rust module's name of one of this reference's tensor names."""
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    if k.startswith("backbone."):
        index, rest = k[len("backbone."):].split(".", 1)
        k = f"backbone.{names[int(index)]}.{rest}"
    return k.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")


def export(module, prefix):
    """The inverse of `load`: this module's tensors under the Rust module's names."""
    return {f"{prefix}.{rust_name(k)}": v.detach().clone().contiguous()
            for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def lars_step(params, lr, weight_decay, eta, momentum):
    """One step of LARS from zero momentum, as DESIGN §6 states it (no decay or trust
    ratio on 1-D parameters)."""
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            dp = p.grad
            if p.ndim != 1:
                dp = dp.add(p, alpha=weight_decay)
                pn, un = torch.norm(p), torch.norm(dp)
                q = torch.where(pn > 0.0, torch.where(un > 0, eta * pn / un, torch.ones_like(pn)), torch.ones_like(pn))
                dp = dp.mul(q)
            mu = torch.zeros_like(p).mul_(momentum).add_(dp)
            p.add_(mu, alpha=-lr)


def invaug(x, boxes, flips):
    n, _, h, w = x.shape
    b = boxes.clone()
    b[:, 0], b[:, 2], b[:, 1], b[:, 3] = b[:, 0] * w, b[:, 2] * w, b[:, 1] * h, b[:, 3] * h
    rois = torch.cat([torch.arange(n, dtype=torch.float32).view(n, 1), b], dim=1)
    out = torchvision.ops.roi_align(x, rois, (h, w), aligned=True)
    return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flips)])


def self_distill(q, k, center, valid, c):
    hw = q.shape[2] * q.shape[3]
    q = F.log_softmax(q.permute(0, 2, 3, 1).flatten(0, 2) / c["student_temp"], dim=-1)
    k = F.softmax((k.permute(0, 2, 3, 1).flatten(0, 2) - center) / c["teacher_temp"], dim=-1)
    per_pixel = torch.sum(-k * q, dim=-1)
    weights = valid.float().repeat_interleave(hw)  # pairs without overlap are masked out
    return (per_pixel * weights).sum() / weights.sum().clamp_min(1)


def contrast(q, k, score_q, score_k, predictor, tau):
    q, k = q.flatten(0, 1), F.normalize(k.flatten(0, 1), dim=1)
    active = lambda s: (torch.zeros_like(s).scatter_(1, s.argmax(1, keepdim=True), 1).sum(-1).sum(-1) > 0).long()  # noqa: E731
    mask_q, mask_k = active(score_q), active(score_k).view(-1)
    idxs_q = (mask_q.view(-1) * mask_k).nonzero().squeeze(-1)
    idxs_k = mask_k.nonzero().squeeze(-1)
    if len(idxs_q) < 2:  # BatchNorm1d needs two rows; slotcon skips such a direction too
        return q.sum() * 0.0
    logits = F.normalize(predictor(q[idxs_q]), dim=1) @ k[idxs_k].t() / tau
    labels = mask_k.cumsum(0)[idxs_q] - 1
    return F.cross_entropy(logits, labels) * (2 * tau)


def main(root):
    c = json.load(open(os.path.join(root, "case.json")))
    weights = load_file(os.path.join(root, "weights.safetensors"))
    student, teacher, predictor = Encoder(c), Encoder(c), Predictor(c["dim_out"], c["dim_hidden"])
    load(student, weights, "student")
    load(teacher, weights, "teacher")
    load(predictor, weights, "predictor")
    for m in (student, teacher, predictor):
        m.train()  # batch statistics, as the reference trains (teacher included)
    n, s = c["n"], c["size"]
    views = torch.from_numpy(np.fromfile(os.path.join(root, "views.f32"), np.float32).reshape(2, n, 3, s, s))
    boxes = torch.tensor(c["boxes"], dtype=torch.float32)  # [n, 2, 4]
    flips = c["flips"]  # [n][2]
    valid = torch.tensor(c["valid"])
    center = torch.zeros(1, c["num_prototypes"])
    (q1, sq1), (q2, sq2) = student(views[0]), student(views[1])
    with torch.no_grad():
        (k1, sk1), (k2, sk2) = teacher(views[0]), teacher(views[1])
    f = lambda v: [row[v] for row in flips]  # noqa: E731
    qa1, qa2 = invaug(sq1, boxes[:, 0], f(0)), invaug(sq2, boxes[:, 1], f(1))
    ka1, ka2 = invaug(sk1, boxes[:, 0], f(0)), invaug(sk2, boxes[:, 1], f(1))
    group = self_distill(qa1, ka2, center, valid, c) + self_distill(qa2, ka1, center, valid, c)
    ctr = contrast(q1, k2, sq1, sk2, predictor, c["contrast_temp"]) + contrast(q2, k1, sq2, sk1, predictor, c["contrast_temp"])
    w = c["group_loss_weight"]
    total = w * group + (1 - w) * ctr
    batch_center = torch.cat([sk1, sk2]).permute(0, 2, 3, 1).flatten(0, 2).mean(0, keepdim=True)
    center = center * c["center_momentum"] + batch_center * (1 - c["center_momentum"])
    out = {"total": total.item(), "group": group.item(), "contrast": ctr.item(), "center": center.flatten().tolist()}
    if "lr" in c:  # backward, one LARS step, one EMA update
        total.backward()
        watched = {"student.grouping.slot_embed.weight": student.grouping.slot_embed.weight,
                   "student.projector.conv3.bias": student.projector.conv3.bias,
                   "predictor.fc3.weight": predictor.fc3.weight,
                   "student.backbone.conv1.weight": student.backbone[0].weight}
        out["grads"] = {k: v.grad.flatten().tolist() for k, v in watched.items()}
        lars_step(list(student.parameters()) + list(predictor.parameters()), c["lr"], c["weight_decay"], c["eta"], 0.9)
        with torch.no_grad():
            for pt, ps in zip(teacher.parameters(), student.parameters()):
                pt.copy_(pt * c["ema"] + ps * (1 - c["ema"]))
        state = {**export(student, "student"), **export(teacher, "teacher"), **export(predictor, "predictor")}
        save_file(state, os.path.join(root, "after.safetensors"))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
