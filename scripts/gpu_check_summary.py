"""The summary of scripts/gpu-check.sh: reads what its parts wrote in OUT and writes
OUT/gpu-check.json and OUT/gpu-check.md (the table bench/RESULTS.md takes), then prints
the table. Exits 1 when two ranks did not train as one.

Usage: gpu_check_summary.py OUT DEVICE NCCL   (NCCL: ok, refused or skipped)"""
import glob
import json
import os
import sys

FORMATS = ("contiguous", "channels_last")
PRECISIONS = ("f32", "bf16", "fp16")


def load(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def observed_rows(out):
    """Per observed step: outermost calls, MiB held between steps and the peak, each side."""
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, "observe-*.json"))):
        with open(path) as f:
            sides = json.load(f).get("observed") or {}
        row = {}
        for side in ("slotcon", "pytorch"):
            s = sides.get(side)
            if s:
                held = s.get("held_bytes", 0)
                row[side] = {"calls": sum(c["top"] for c in s["ops"].values()),
                             "held_mib": held / 2**20, "peak_mib": (held + s["peak_bytes"]) / 2**20}
        rows[os.path.basename(path)[len("observe-"):-len(".json")]] = row
    return rows


def table(summary, steps):
    first = next(iter(steps.values()))
    md = [f"GPU check on {summary['device']}: {first['arch']} batch {first['batch']} at {first['image_size']} px", "",
          "| step | slotcon ms | PyTorch ms | throughput vs PyTorch |", "|---|---:|---:|---:|"]
    for (p, f), s in steps.items():
        ratio, theirs = s.get("ratio"), s.get("pytorch_median_ms")
        if ratio:
            md.append(f"| {p} {f} | {s['slotcon_median_ms']:.1f} | {theirs:.1f} | {1 / ratio:.2f}x |")
        else:
            md.append(f"| {p} {f} | {s['slotcon_median_ms']:.1f} | - | - |")
    best = summary["best"]
    line = f"Best slotcon setting: {best['setting']}, {best['ms']:.1f} ms"
    if best["vs_official"]:
        line += f", {best['vs_official']:.2f}x the throughput of the official setting (PyTorch fp16 NCHW, {best['official_ms']:.1f} ms)"
    md += ["", line + ".", "",
           "| one step observed (slotcon / PyTorch) | outermost ATen calls | held MiB | peak MiB, held incl. |",
           "|---|---:|---:|---:|"]
    for name, row in summary["observed"].items():
        def cell(key, fmt):
            return " / ".join(fmt.format(row[s][key]) if s in row else "-" for s in ("slotcon", "pytorch"))
        md.append(f"| {name} | {cell('calls', '{}')} | {cell('held_mib', '{:.0f}')} | {cell('peak_mib', '{:.0f}')} |")
    h, r, t = summary["host_overhead"], summary["two_ranks"], summary["train"]
    host = f"Host overhead (tiny, batch 2, 64 px): {h['slotcon_median_ms']:.1f} ms/step"
    if h.get("ratio"):
        host += f", {h['ratio']:.2f}x PyTorch's {h['pytorch_median_ms']:.1f} ms"
    c = summary["compare_cpu"]
    md += ["", host + ".",
           f"Training from the store: {t['img_per_sec']:.1f} img/s over {t['logged_steps']} logged steps, "
           f"data wait {100 * t['data_wait_frac']:.1f} % of the step.",
           f"Two ranks (gloo) against one: losses within {r['loss_rel']:.2e}, all-reduce {r['grad_sync_ms']:.1f} ms/step; "
           f"NCCL, two ranks on one device: {r['nccl']}.",
           f"One step against LibTorch's CPU: loss {c['loss_rel']:.2e} relative, update {c['update_rel']:.2e}."]
    return md


def main():
    out, device, nccl = sys.argv[1:4]
    steps = {(p, f): load(out, f"step-{p}-{f}.json") for p in PRECISIONS for f in FORMATS}
    lines = jsonl(os.path.join(out, "run", "metrics.jsonl"))
    settled = lines[len(lines) // 4:] or lines
    runs = [jsonl(os.path.join(out, d, "metrics.jsonl")) for d in ("dist-1", "dist-2")]
    dist_rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(*runs))
    official = steps[("fp16", "contiguous")].get("pytorch_median_ms")
    best = min(steps, key=lambda k: steps[k]["slotcon_median_ms"])
    best_ms = steps[best]["slotcon_median_ms"]
    host = load(out, "host.json")
    summary = {
        "device": device,
        "compare_cpu": load(out, "compare.json")["compare_cpu"],
        "train": {"img_per_sec": sum(x["img_per_sec"] for x in settled) / len(settled),
                  "data_wait_frac": sum(x["data_wait_frac"] for x in settled) / len(settled),
                  "logged_steps": len(lines)},
        "two_ranks": {"loss_rel": dist_rel, "steps": len(runs[1]), "nccl": nccl,
                      "grad_sync_ms": sorted(x["grad_sync_ms"] for x in runs[1])[len(runs[1]) // 2]},
        "steps": {f"{p} {f}": {k: s.get(k) for k in ("arch", "batch", "image_size", "slotcon_median_ms",
                                                      "pytorch_median_ms", "ratio", "ratios")}
                  for (p, f), s in steps.items()},
        "best": {"setting": " ".join(best), "ms": best_ms, "official_ms": official,
                 "vs_official": official / best_ms if official else None},
        "observed": observed_rows(out),
        "host_overhead": {k: host.get(k) for k in ("slotcon_median_ms", "pytorch_median_ms", "ratio")},
    }
    with open(os.path.join(out, "gpu-check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = table(summary, steps)
    with open(os.path.join(out, "gpu-check.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    if dist_rel > 1e-4 or len(runs[1]) != len(runs[0]):
        sys.exit("gpu-check: two ranks do not train as one rank")


if __name__ == "__main__":
    main()
