#!/usr/bin/env bash
# The figures of stores elsewhere (bench/RESULTS.md, "Stores in object storage and larger
# than memory"), from the release binaries (cargo build --release --workspace):
#   1. a store in S3: slotcon-bench loader, 1 worker, 2 epochs with an empty cache,
#      against the same store on disk in the same invocation, through slotcon-s3-server
#      (s3s-fs on 127.0.0.1) with 20 ms per request and 50 MB/s per connection;
#   2. a store larger than memory: the loader in a memory cgroup of 320 MiB (needs root)
#      on a JPEG store 2.1x its limit and a raw one 5.5x, block and global order, each
#      against a store of its kind that fits (KINDS="encoded raw" picks the kinds).
# COCO128=/path/to/coco128/images (default: the shared sample), OUT=folder (default: a
# temporary one, removed at the end), COPIES=8 (the COCO sample repeated for part 1),
# PARTS="1 2" (which parts to run).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/release
images=${COCO128:-$PWD/../shared/data/coco128/images}
[ -d "$images" ] || { echo "error: no COCO sample at $images; set COCO128" >&2; exit 1; }
[ -x "$bin/slotcon-s3-server" ] || { echo "error: build first: cargo build --release --workspace" >&2; exit 1; }
out=${OUT:-$(mktemp -d)}
server_pid=
cgroup=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$cgroup" ] && rmdir "$cgroup" 2>/dev/null || true
  if [ -z "${OUT:-}" ]; then rm -rf "$out"; fi
}
trap cleanup EXIT

# A folder of N hard-linked copies of the sample's images.
replicate() { # DIR N
  local c f
  for c in $(seq -w 1 "$2"); do
    mkdir -p "$1/copy$c"
    for f in "$images"/*/*.jpg "$images"/*.jpg; do
      if [ -f "$f" ]; then ln -f "$f" "$1/copy$c/" 2>/dev/null || cp "$f" "$1/copy$c/"; fi
    done
  done
}

parts=${PARTS:-1 2}
if [[ " $parts " == *" 1 "* ]]; then
echo "== 1. a store in S3 (20 ms per request, 50 MB/s per connection), 1 worker"
replicate "$out/src" "${COPIES:-8}"
mkdir -p "$out/root/bucket"
coproc SERVER { exec "$bin/slotcon-s3-server" "$out/root" --access-key k --secret-key s --latency-ms 20 --bandwidth 50000000; }
server_pid=$SERVER_PID
read -r line <&"${SERVER[0]}"
export AWS_ENDPOINT_URL="http://127.0.0.1:${line##*:}" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s AWS_REGION=us-east-1
"$bin/slotcon-ingest" "$out/src" --out s3://bucket/coco/ --staging "$out/local" -q
for order in global block; do
  rm -rf "$out/cache"
  echo "-- --order $order (cache empty at epoch 1)"
  "$bin/slotcon-bench" loader --workers 1 --batch-size 32 --epochs 2 --order "$order" \
    --shards s3://bucket/coco/ --against "$out/local" --cache "$out/cache"
done
kill "$server_pid"; server_pid=
fi
[[ " $parts " == *" 2 "* ]] || exit 0

echo "== 2. a store larger than memory (a memory cgroup)"
limit=$((320 << 20))
if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  cgroup=/sys/fs/cgroup/memory/slotcon-bench-$$; file=memory.limit_in_bytes
else
  cgroup=/sys/fs/cgroup/slotcon-bench-$$; file=memory.max
fi
mkdir "$cgroup" && echo "$limit" > "$cgroup/$file"
drop_cache() { python3 -c "
import os, sys
for d in sys.argv[1:]:
    for n in os.listdir(d):
        p = os.path.join(d, n); fd = os.open(p, os.O_RDONLY); os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)" "$@"; }
# JPEG stores (what the loader decodes, 170 KB an image) and raw RGB ones (what it only
# crops and resizes, 800 KB an image: the disk's pace, not the loader's).
for kind in ${KINDS:-encoded raw}; do
  if [ "$kind" = raw ]; then big=17; small=2; else big=32; small=4; fi
  replicate "$out/$kind-big-src" "$big"     # encoded: ~680 MB, raw: ~1.8 GB
  replicate "$out/$kind-small-src" "$small" # encoded: ~85 MB, raw: ~210 MB: fits
  for size in big small; do
    "$bin/slotcon-ingest" "$out/$kind-$size-src" --out "$out/$kind-$size" --store "$kind" --shard-size 256MiB -q
    rm -rf "$out/$kind-$size-src"
  done
  for size in small big; do
    for order in block global; do
      drop_cache "$out/$kind-$size"
      printf -- "-- %s %s store (%s), --order %s: " "$kind" "$size" "$(du -sh "$out/$kind-$size" | cut -f1)" "$order"
      sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cgroup" \
        "$bin/slotcon-bench" loader --workers 2 --batch-size 32 --epochs 2 --order "$order" --shards "$out/$kind-$size" --json |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(f\"epoch {e['epoch']+1}: {e['img_per_sec']:.1f} img/s\" for e in d['epochs']))"
    done
  done
done
