#!/usr/bin/env bash
# The whole pipeline on the shared COCO sample, from a fresh machine:
# build, ingest into a shard store, verify it, and benchmark ingest.
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
bin=target/release

echo "==> ingesting $images into $out/shards"
"$bin/slotcon-ingest" "$images" --out "$out/shards" --force
echo "==> verifying the store"
"$bin/slotcon-ingest" verify "$out/shards"

echo "==> benchmarking ingest (median of 3 runs)"
"$bin/slotcon-bench" ingest --images "$images" --repeat 3 | tee "$out/bench-ingest.txt"
"$bin/slotcon-bench" ingest --images "$images" --repeat 3 --json > "$out/bench-ingest.json"

echo
echo "outputs in $out/:"
echo "  shards/manifest.json, shards/shard-*.parquet, shards/ingest-report.json"
echo "  bench-ingest.txt, bench-ingest.json"
