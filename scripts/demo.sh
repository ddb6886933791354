#!/usr/bin/env bash
# The whole pipeline on the shared COCO sample, from a fresh machine:
# build, ingest into a shard store, verify it, benchmark ingest, dump views,
# profile, compare the loader with the PyTorch DataLoader baseline, and train briefly.
# Outputs go to out/demo/ (override with DEMO_OUT=...).
set -euo pipefail
cd "$(dirname "$0")/.."
images=${COCO128:-}
if [ -z "$images" ]; then
  for d in ../shared/data/coco128/images /work/shared/data/coco128/images; do
    [ -d "$d" ] && images=$d && break
  done
fi
[ -n "$images" ] || { echo "error: COCO sample not found; set COCO128=/path/to/coco128/images" >&2; exit 1; }
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"

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
"$SLOTCON_PYTHON" scripts/plot_metrics.py "$out/run"
python3 - "$out/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[:8], rows[-8:]
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
print(f"loss {mean(first, 'loss'):.3f} -> {mean(last, 'loss'):.3f} over {len(rows)} steps; "
      f"{mean(last, 'active_slots_per_image'):.1f} active slots per view; {mean(last, 'img_per_sec'):.1f} img/s")
PY

echo
echo "outputs in $out/:"
echo "  shards/manifest.json, shards/shard-*.parquet, shards/ingest-report.json"
echo "  bench-ingest.json, views/ (PNGs + samples.json), profile.txt, bench-loader.json"
echo "  run/ (config.json, metrics.jsonl, metrics.png, checkpoints/)"
