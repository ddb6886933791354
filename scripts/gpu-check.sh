#!/usr/bin/env bash
# The GPU bring-up (DESIGN §7, issue 24): one short, self-contained run (about 12 minutes
# on one GPU) on a machine with CUDA and PyTorch and no Rust toolchain, from a copy of the
# tree with the `dist` binaries and a small shard store. It
#   (a) checks one training step on the GPU against the same step on LibTorch's CPU (same
#       weights and batch): loss within 1e-3, the parameters' update within 1e-2;
#   (b) times ResNet-50 with the paper's heads, batch 64 at 224 px, in f32, bf16 (AMP) and
#       fp16 (AMP with dynamic loss scaling, the official recipe's --fp16), each NCHW and
#       channels_last, against the same step in PyTorch (f32, torch.autocast bf16,
#       autocast fp16 with GradScaler's kernels; NCHW and channels_last) on the same GPU,
#       with the phase breakdown; PyTorch fp16 NCHW is the official setting;
#   (c) trains from the store with the real loader feeding the GPU for 5 minutes (stopped
#       by SIGTERM, as a scheduler stops a job) and reports img/s and the data wait;
#   (d) trains two ranks (two processes, c10d with Gloo, sharing the device) against one
#       rank on the same global batch: losses within 1e-4 at every step; then the same over
#       NCCL where the device allows two ranks on it (NCCL may refuse one GPU twice: that
#       is reported, not failed);
#   (e) observes one step against PyTorch (slotcon-train-bench --report): outermost ATen
#       calls, the bytes held between steps and the peak, for ResNet-50 in f32 and bf16 and
#       the tiny preset in f32; and the host overhead at a negligible-compute size (tiny,
#       batch 2, 64 px).
# It also checks that the binaries fit the 64 MiB that such a machine accepts. It writes
# OUT/gpu-check.json and OUT/gpu-check.md (the table for bench/RESULTS.md), and prints
# the table.
#
# Build here (DESIGN §7: against the GPU machine's PyTorch, e.g. torch==2.11.0 in a venv):
#   LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
#     cargo build --profile dist --features slotcon-train/tch \
#       --bin slotcon-train --bin slotcon-train-bench
#   target/release/slotcon-ingest ../shared/data/coco128/images --out gpu-shards
# Run there:
#   scripts/gpu-check.sh --bin target/dist --shards gpu-shards --out "$OUT"
# CPU dry run (CI, scripts/test.sh): --device libtorch --quick (small sizes, every part,
# 20 seconds of training for (c)).
#
# Options: --device D (libtorch-cuda:0), --bin DIR (target/dist), --shards DIR (required),
# --out DIR (gpu-check-out), --python PY ($SLOTCON_PYTHON or python3), --threads N (all
# cores), --train-seconds S ((c)'s length: 300, or 20 with --quick), --quick. Exits 1 on
# a failed check, 2 on a bad option.
set -euo pipefail
cd "$(dirname "$0")/.."

device=libtorch-cuda:0 bin=target/dist shards= out=gpu-check-out quick=0 seconds=
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
    --train-seconds) seconds=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
  train=(--preset tiny --batch-size 4 --image-size 64 --workers 2)
  observed=("tiny f32:--preset tiny --batch-size 4 --image-size 64")
  seconds=${seconds:-20}
else
  model=(--preset coco_r50_800ep --batch-size 64 --image-size 224)
  timing=(--warmup 3 --steps 5 --repeats 2)
  train=(--preset coco_r50_800ep --batch-size 64 --image-size 224 --workers $(( threads > 2 ? threads - 2 : 1 )))
  observed=("r50 f32:${model[*]}" "r50 bf16:${model[*]}" "tiny f32:--preset tiny")
  seconds=${seconds:-300}
fi
case "$seconds" in
  ''|*[!0-9]*|0) echo "gpu-check: --train-seconds takes a positive whole number, not '$seconds'" >&2; exit 2 ;;
esac
bench=("$bin/slotcon-train-bench" --shards "$shards" --device "$device" --threads "$threads" --json)

echo "==> (a) one step on $device against LibTorch's CPU"
"${bench[@]}" "${model[@]}" --compare-cpu --warmup 0 --steps 1 --repeats 1 --no-python > "$out/compare.json"

for p in f32 bf16 fp16; do
  for f in contiguous channels_last; do
    echo "==> (b) the step in $p $f against PyTorch ($p $f)"
    "${bench[@]}" "${model[@]}" "${timing[@]}" --breakdown --precision $p --reference-precision $p \
      --memory-format $f --reference-memory-format $f "${reference[@]}" > "$out/step-$p-$f.json"
  done
done

echo "==> (c) ${seconds} s of training with the real loader (then SIGTERM)"
rm -rf "$out/run"
rc=0
timeout -s TERM "$seconds" "$bin/slotcon-train" --shards "$shards" --out "$out/run" --device "$device" \
  "${train[@]}" --epochs 100000 -q || rc=$?
# 124: the signal stopped it (the trainer saves and exits cleanly); 0: it ended first.
[ "$rc" = 0 ] || [ "$rc" = 124 ] || { echo "gpu-check: (c) failed (exit $rc)" >&2; exit 1; }
[ -s "$out/run/metrics.jsonl" ] || { echo "gpu-check: (c) logged no step in $seconds s" >&2; exit 1; }

echo "==> (d) two ranks (gloo) against one rank on the same global batch"
dist=(--shards "$shards" --device "$device" --preset tiny --batch-size 8 --image-size 64 --max-steps 4 --workers 1 -q)
rm -rf "$out/dist-1" "$out/dist-2"
"$bin/slotcon-train" --out "$out/dist-1" "${dist[@]}"
two_ranks() { # OUT_DIR BACKEND TIMEOUT: two ranks on this device; their exit codes' OR
  local port=$(( 20000 + RANDOM % 20000 )) pids=() r p status=0
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      timeout "$3" "$bin/slotcon-train" --out "$1" "${dist[@]}" --dist-backend "$2" --dist-timeout 120 \
      > "$1-rank$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  return $status
}
two_ranks "$out/dist-2" gloo 300 || { cat "$out"/dist-2-rank*.log >&2; echo "gpu-check: a rank of (d) failed" >&2; exit 1; }
nccl=skipped
if [[ "$device" == libtorch-cuda* ]]; then
  rm -rf "$out/dist-nccl"
  if two_ranks "$out/dist-nccl" nccl 180; then nccl=ok; else nccl=refused; fi
  echo "==> (d) two ranks over NCCL on one device: $nccl (logs in $out/dist-nccl-rank*.log)"
fi

for entry in "${observed[@]}"; do
  name=${entry%%:*}
  read -r -a args <<< "${entry#*:}"
  p=${name#* }
  echo "==> (e) one $name step observed against PyTorch"
  "${bench[@]}" "${args[@]}" --report --warmup 1 --steps 1 --repeats 1 --precision "$p" \
    --reference-precision "$p" "${reference[@]}" > "$out/observe-${name// /-}.json"
done
echo "==> (e) host overhead: tiny, batch 2 at 64 px"
"${bench[@]}" --preset tiny --batch-size 2 --image-size 64 "${timing[@]}" "${reference[@]}" > "$out/host.json"

"$python" scripts/gpu_check_summary.py "$out" "$device" "$nccl"
echo "==> wrote $out/gpu-check.json and $out/gpu-check.md"
