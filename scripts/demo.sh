#!/usr/bin/env bash
# The whole pipeline on the shared COCO sample, from a fresh machine:
# build, ingest into a shard store, verify it, benchmark ingest, dump views,
# profile, compare the loader with the PyTorch DataLoader baseline, train briefly, then
# evaluate the run (COCO-Stuff-27 mIoU), draw its prototypes, export its backbone, and move
# it through the official SlotCon checkpoint format and back.
# Outputs go to out/demo/ (override with DEMO_OUT=...).
set -euo pipefail
cd "$(dirname "$0")/.."
# The COCO sample: $COCO128, else shared/data/coco128 beside the checkout or a folder above.
images=${COCO128:-}
d=$PWD
while [ -z "$images" ] && [ "$d" != / ]; do
  d=$(dirname "$d")
  [ -d "$d/shared/data/coco128/images" ] && images=$d/shared/data/coco128/images
done
[ -d "$images" ] || { echo "error: COCO sample not found beside the checkout; set COCO128=/path/to/coco128/images" >&2; exit 1; }
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"

# libjpeg-turbo is built from source (turbojpeg-sys): cmake, and nasm for its SIMD code.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v nasm >/dev/null || missing+=(nasm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (apt-get)"
  sudo_=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${missing[@]}"
fi

echo "==> building (release)"
cargo build --release --bins
echo "==> python venv for the baseline"
SLOTCON_PYTHON=$(scripts/python-env.sh | tail -n 1)
export SLOTCON_PYTHON
bin=target/release

echo "==> ingesting $images into $out/shards"
"$bin/slotcon-ingest" "$images" --out "$out/shards" --force
echo "==> verifying the store"
"$bin/slotcon-ingest" verify "$out/shards"

echo "==> benchmarking ingest (median of 3 runs)"
"$bin/slotcon-bench" ingest --images "$images" --repeat 3 --json > "$out/bench-ingest.json"
cat "$out/bench-ingest.json"; echo

echo "==> two views of the first samples, as PNGs with their geometry"
"$bin/slotcon-bench" dump --shards "$out/shards" --n 8 --seed 0 --out "$out/views"

echo "==> where a core's time goes per sample"
"$bin/slotcon-bench" profile --shards "$out/shards" --n 256 | tee "$out/profile.txt"

echo "==> the loader against the PyTorch DataLoader baseline (10 s each, 1 worker)"
"$bin/slotcon-bench" compare --shards "$out/shards" --images "$images" --workers 1 --seconds 10 --json > "$out/bench-loader.json"
python3 - "$out/bench-loader.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"slotcon {r['slotcon']['img_per_sec_per_core']:.1f} img/s/core, "
      f"baseline {r['baseline']['img_per_sec_per_core']:.1f} img/s/core, "
      f"ratio_per_core {r['ratio_per_core']:.2f}")
PY

echo "==> training briefly (preset tiny, 40 steps on flex, CPU)"
rm -rf "$out/run"
"$bin/slotcon-train" --shards "$out/shards" --out "$out/run" --max-steps 40
python3 - "$out/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[:8], rows[-8:]
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
print(f"loss {mean(first, 'loss'):.3f} -> {mean(last, 'loss'):.3f} over {len(rows)} steps; "
      f"{mean(last, 'active_slots_per_image'):.1f} active slots per view; {mean(last, 'img_per_sec'):.1f} img/s")
PY

coco=$(dirname "$images")
echo "==> what the slots learned: COCO-Stuff-27 segmentation of the 100 labelled images"
"$bin/slotcon-eval" segment --run "$out/run" --images "$coco/images/train2017" \
  --masks "$coco/semantic/train2017" --categories "$coco/panoptic_train2017.json" -q
echo "==> pictures: prototype retrieval grid, one image's slots, curves"
"$bin/slotcon-viz" prototypes --run "$out/run" --shards "$out/shards" --out "$out/run/prototypes.png"
"$bin/slotcon-viz" image --run "$out/run" --image "$coco/images/train2017/000000000009.jpg" --out "$out/run/slots.png"
"$bin/slotcon-viz" curves --run "$out/run"
echo "==> exporting the teacher backbone for torchvision and detectron2"
"$bin/slotcon-export" "$out/run" --to torchvision --out "$out/run/export/resnet18-torchvision.safetensors"
"$bin/slotcon-export" "$out/run" --to detectron2 --out "$out/run/export/resnet18-detectron2.pkl"
echo "==> the official SlotCon checkpoint format, both ways: export the run, import it, export again"
"$bin/slotcon-export" "$out/run" --to slotcon --out "$out/run/export/slotcon-official.pth"
"$bin/slotcon-import" "$out/run/export/slotcon-official.pth" --out "$out/imported" --preset tiny --force
"$bin/slotcon-export" "$out/imported" --to slotcon --out "$out/imported/again.pth" -q
"$SLOTCON_PYTHON" - "$out/run/export/slotcon-official.pth" "$out/imported/again.pth" <<'PY'
import sys, torch
a, b = (torch.load(p) for p in sys.argv[1:3])
same = list(a["model"]) == list(b["model"]) and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
same_opt = sa.keys() == sb.keys() and all(torch.equal(sa[i]["mu"], sb[i]["mu"]) for i in sa)
print(f"{len(a['model'])} tensors, {len(sa)} LARS buffers, epoch {a['epoch']}: "
      f"{'identical' if same and same_opt else 'DIFFERENT'} after import and export")
sys.exit(0 if same and same_opt else 1)
PY
"$bin/slotcon-viz" image --run "$out/imported" --image "$coco/images/train2017/000000000009.jpg" --out "$out/imported/slots.png"

echo
echo "outputs in $out/:"
echo "  shards/manifest.json, shards/shard-*.parquet, shards/ingest-report.json"
echo "  bench-ingest.json, views/ (PNGs + samples.json), profile.txt, bench-loader.json"
echo "  run/ (config.json, metrics.jsonl, tb/, curves.png, checkpoints/)"
echo "  run/eval/ (segment.json, confusion-hungarian.png, confusion-majority.png)"
echo "  run/prototypes.png, run/slots.png, run/export/ (torchvision .safetensors, detectron2 .pkl, official .pth)"
echo "  imported/ (the official .pth made a run again: config.json, checkpoints/, imported.json, slots.png)"
