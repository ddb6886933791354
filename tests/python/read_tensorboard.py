"""Reads a run's TensorBoard event files with TensorBoard's own readers and prints JSON:
{"scalars": {tag: [[step, value], ...]} as TensorBoard shows them (after it drops the
events a restart superseded), "files": the number of event files, "raw_scalar_events":
every step event in every file, superseded ones included}.

Usage: read_tensorboard.py RUN_DIR/tb
"""
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader

tb = sys.argv[1]
acc = event_accumulator.EventAccumulator(tb, size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
scalars = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
files = sorted(f for f in os.listdir(tb) if "tfevents" in f)
raw = 0
for f in files:
    for event in event_file_loader.EventFileLoader(os.path.join(tb, f)).Load():
        raw += int(event.HasField("summary"))
print(json.dumps({"scalars": scalars, "files": len(files), "raw_scalar_events": raw}))
