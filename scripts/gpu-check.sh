#!/usr/bin/env bash
# The GPU check (DESIGN §7): one short, self-contained run on a machine with CUDA and
# PyTorch and no Rust toolchain, from a copy of the tree with the `dist` binaries and a
# small shard store. It
#   (a) checks one training step on the GPU against the same step on LibTorch's CPU (same
#       weights and batch): loss within 1e-3, the parameters' update within 1e-2;
#   (b) times ResNet-50 with the paper's heads, batch 64 at 224 px, in f32, bf16 (AMP) and
#       fp16 (AMP with dynamic loss scaling, the official recipe's --fp16), against the
#       same step in PyTorch (f32, torch.autocast bf16, autocast fp16 with GradScaler's
#       kernels) on the same GPU, with the phase breakdown;
#   (c) trains a few steps with the real loader feeding the GPU and reports the data wait;
#   (d) trains two ranks (two processes, c10d with Gloo, sharing the device) against one
#       rank on the same global batch: losses within 1e-4 at every step.
# It also checks that the binaries fit the 64 MiB that such a machine accepts.
#
# Build here (DESIGN §7: against the GPU machine's PyTorch, e.g. torch==2.11.0 in a venv):
#   LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
#     cargo build --profile dist --features slotcon-train/tch \
#       --bin slotcon-train --bin slotcon-train-bench
#   target/release/slotcon-ingest ../shared/data/coco128/images --out gpu-shards
# Run there:
#   scripts/gpu-check.sh --bin target/dist --shards gpu-shards --out "$OUT"
# CPU dry run (CI, scripts/test.sh): --device libtorch --quick (small sizes, same steps).
#
# Options: --device D (libtorch-cuda:0), --bin DIR (target/dist), --shards DIR (required),
# --out DIR (gpu-check-out), --python PY ($SLOTCON_PYTHON or python3), --threads N (all
# cores), --quick. Writes OUT/gpu-check.json and prints a summary; exits 1 on a failed
# check.
set -euo pipefail
cd "$(dirname "$0")/.."

device=libtorch-cuda:0 bin=target/dist shards= out=gpu-check-out quick=0
python=${SLOTCON_PYTHON:-python3}
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$shards" ] || { echo "gpu-check: --shards DIR is required (see --help)" >&2; exit 2; }
for b in slotcon-train slotcon-train-bench; do
  [ -x "$bin/$b" ] || { echo "gpu-check: $bin/$b: missing (build it, see --help)" >&2; exit 2; }
done
mkdir -p "$out"
python=$(command -v "$python") || { echo "gpu-check: no Python interpreter $python" >&2; exit 2; }
export SLOTCON_PYTHON=$python

# The binaries find libtorch through the rpath of the build machine; here, PyTorch's own.
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The 64 MiB a GPU machine accepts: both binaries together.
size=$(( $(stat -c %s "$bin/slotcon-train") + $(stat -c %s "$bin/slotcon-train-bench") ))
echo "==> binaries: $(( size / 1048576 )) MiB (slotcon-train + slotcon-train-bench; limit 64 MiB)"
[ "$size" -lt $(( 64 * 1048576 )) ] || { echo "gpu-check: the binaries are over 64 MiB" >&2; exit 1; }

# The PyTorch reference needs torchvision, numpy and safetensors besides torch.
reference=()
if ! "$python" -c 'import torchvision, numpy, safetensors' 2>/dev/null; then
  echo "==> no torchvision/numpy/safetensors for $python: timing slotcon only"
  reference=(--no-python)
fi

if [ "$quick" = 1 ]; then
  model=(--preset tiny --batch-size 4 --image-size 64)
  timing=(--warmup 1 --steps 1 --repeats 1)
  train=(--preset tiny --batch-size 4 --image-size 64 --max-steps 3 --workers 2)
else
  model=(--preset coco_r50_800ep --batch-size 64 --image-size 224)
  timing=(--warmup 3 --steps 5 --repeats 3)
  train=(--preset coco_r50_800ep --batch-size 64 --image-size 224 --max-steps 40 --workers $(( threads > 2 ? threads - 2 : 1 )))
fi
bench=("$bin/slotcon-train-bench" --shards "$shards" --device "$device" --threads "$threads" --json)

echo "==> (a) one step on $device against LibTorch's CPU"
"${bench[@]}" "${model[@]}" --compare-cpu --warmup 0 --steps 1 --repeats 1 --no-python > "$out/compare.json"

for p in f32 bf16 fp16; do
  echo "==> (b) the step in $p against PyTorch ($p)"
  "${bench[@]}" "${model[@]}" "${timing[@]}" --breakdown --precision $p --reference-precision $p \
    "${reference[@]}" > "$out/step-$p.json"
done

echo "==> (c) data wait with the real loader"
rm -rf "$out/run"
"$bin/slotcon-train" --shards "$shards" --out "$out/run" --device "$device" "${train[@]}" -q

echo "==> (d) two ranks (gloo) against one rank on the same global batch"
dist=(--shards "$shards" --device "$device" --preset tiny --batch-size 8 --image-size 64 --max-steps 4 --workers 1 -q)
rm -rf "$out/dist-1" "$out/dist-2"
"$bin/slotcon-train" --out "$out/dist-1" "${dist[@]}"
port=$(( 20000 + RANDOM % 20000 ))
pids=()
for r in 0 1; do
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$bin/slotcon-train" --out "$out/dist-2" "${dist[@]}" --dist-backend gloo --dist-timeout 120 \
    > "$out/dist-rank$r.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do
  wait "$p" || { cat "$out"/dist-rank*.log >&2; echo "gpu-check: a rank of (d) failed" >&2; exit 1; }
done

"$python" - "$out" "$device" <<'EOF'
import json, os, sys
out, device = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(os.path.join(out, name)))
compare = load("compare.json")["compare_cpu"]
steps = {p: load(f"step-{p}.json") for p in ("f32", "bf16", "fp16")}
lines = [json.loads(l) for l in open(os.path.join(out, "run", "metrics.jsonl"))]
settled = lines[len(lines) // 4:] or lines
wait = sum(l["data_wait_frac"] for l in settled) / len(settled)
img_s = sum(l["img_per_sec"] for l in settled) / len(settled)
runs = [[json.loads(l) for l in open(os.path.join(out, d, "metrics.jsonl"))] for d in ("dist-1", "dist-2")]
dist_rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(*runs))
grad_sync = sorted(l["grad_sync_ms"] for l in runs[1])[len(runs[1]) // 2]
summary = {"device": device, "compare_cpu": compare, "data_wait_frac": wait, "train_img_per_sec": img_s,
           "two_ranks": {"loss_rel": dist_rel, "grad_sync_ms": grad_sync, "steps": len(runs[1])},
           "steps": {p: {k: s.get(k) for k in ("arch", "batch", "image_size", "slotcon_median_ms",
                                                "pytorch_median_ms", "ratio", "ratios")}
                     for p, s in steps.items()}}
json.dump(summary, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
print(f"(a) one step vs CPU: loss {compare['loss_rel']:.2e} relative, update {compare['update_rel']:.2e}")
for p, s in steps.items():
    ratio = s.get("ratio")
    theirs = f"PyTorch {s['pytorch_median_ms']:.1f} ms, throughput {1 / ratio:.2f}x PyTorch's" if ratio else "no PyTorch"
    print(f"(b) {p}: {s['arch']} batch {s['batch']} at {s['image_size']} px: {s['slotcon_median_ms']:.1f} ms/step; {theirs}")
print(f"(c) real loader: {img_s:.1f} img/s, data wait {100 * wait:.1f} % of the step")
print(f"(d) two ranks vs one: losses within {dist_rel:.2e} relative; gradient all-reduce {grad_sync:.1f} ms/step")
if dist_rel > 1e-4 or len(runs[1]) != len(runs[0]):
    sys.exit("gpu-check: two ranks do not train as one rank")
EOF
echo "==> wrote $out/gpu-check.json"
