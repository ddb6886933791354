"""Plots a run's metrics.jsonl (loss, its two parts, and active slots per image) to
RUN/metrics.png. Usage: scripts/plot_metrics.py RUN (run with the project venv)."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

run = sys.argv[1]
rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
steps = [r["step"] for r in rows]
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for key, label in [("loss", "total"), ("loss_group", "grouping"), ("loss_contrast", "contrast")]:
    a.plot(steps, [r[key] for r in rows], label=label, lw=1)
a.set_xlabel("step")
a.set_ylabel("loss")
a.legend()
b.plot(steps, [r["active_slots_per_image"] for r in rows], color="tab:green", lw=1)
b.set_xlabel("step")
b.set_ylabel("active slots per view (teacher)")
fig.suptitle(os.path.basename(os.path.abspath(run)))
fig.tight_layout()
out = os.path.join(run, "metrics.png")
fig.savefig(out, dpi=100)
print(out)
