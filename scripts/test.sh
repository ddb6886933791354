#!/usr/bin/env bash
# Installs what the tests need (a Python venv with Pillow, pyarrow, DuckDB, datasets;
# jpegtran; gloo's headers for c10d),
# builds the release binaries, and runs every test. CI runs this and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_=$([ "$(id -u)" = 0 ] || echo sudo)
apt_packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
# jpegtran makes the arithmetic-coded JPEGs that an ingest test feeds in.
command -v jpegtran >/dev/null || apt_packages+=(libjpeg-turbo-progs)
# c10d's ProcessGroupGloo header includes gloo's own headers, which the torch wheel lacks
# (train/build.rs compiles native/dist.cpp against them).
[ -f /usr/include/gloo/config.h ] || apt_packages+=(libgloo-dev)
# turbojpeg-sys builds libjpeg-turbo from source with cmake, its SIMD code with nasm.
command -v cmake >/dev/null || apt_packages+=(cmake)
command -v nasm >/dev/null || apt_packages+=(nasm)
# ip(8): the two-host tests join two network namespaces with a veth pair.
command -v ip >/dev/null || apt_packages+=(iproute2)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "==> installing ${apt_packages[*]} (apt-get)"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${apt_packages[@]}"
fi
# The shared COCO sample: $SLOTCON_COCO128, else shared/data/coco128 beside the checkout
# or beside a folder above it.
if [ -z "${SLOTCON_COCO128:-}" ]; then
  d=$PWD
  while [ "$d" != / ]; do
    d=$(dirname "$d")
    if [ -d "$d/shared/data/coco128/images" ]; then export SLOTCON_COCO128=$d/shared/data/coco128; break; fi
  done
fi
echo "==> COCO sample: ${SLOTCON_COCO128:-not found (tests will say so)}"
# Measured on a clean clone: the venv (7.3 GB with PyTorch's CUDA libraries, more while
# pip unpacks), a clean build (~2 GB) and the tests' temporary files peak at ~11 GB.
free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
echo "==> free disk: ${free_gb} GB here (a clean run needs about 12 GB)"
SLOTCON_PYTHON=$(scripts/python-env.sh | tail -n 1)
export SLOTCON_PYTHON
# LibTorch for the `tch` feature comes from the venv's PyTorch 2.9.0 (burn-tch pins it);
# the binaries get an rpath to it (train/build.rs finds it), so no LD_LIBRARY_PATH is needed.
VIRTUAL_ENV=$(dirname "$(dirname "$SLOTCON_PYTHON")")
export VIRTUAL_ENV PATH="$VIRTUAL_ENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
features=slotcon-train/tch,slotcon-tests/tch
echo "==> cargo clippy --all-targets -- -D warnings (flex and LibTorch)"
cargo clippy --release --workspace --all-targets --features "$features" -- -D warnings
# The libraries' pages: every public item documented (missing_docs, above) and every
# intra-doc link resolving (rustdoc::broken_intra_doc_links, [workspace.lints]).
echo "==> cargo doc --workspace --no-deps --lib (rustdoc warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps --lib --features "$features"
# Every target with the features `cargo test --workspace` resolves (dev-dependencies
# included), so the test step reuses this build instead of compiling Burn a second time.
echo "==> cargo build --release --workspace --all-targets --features slotcon-train/tch,slotcon-tests/tch (flex and LibTorch)"
cargo build --release --workspace --all-targets --features "$features"
echo "==> cargo test --release (trainer parity on flex and LibTorch CPU)"
cargo test --release --workspace --features "$features"
echo "==> the Python package (python/): its wheel with maturin, installed in the venv, pytest"
rm -f target/wheels/slotcon-*.whl
maturin build --release -q -m python/Cargo.toml
pip install -q --no-deps --force-reinstall target/wheels/slotcon-*.whl
SLOTCON_BIN=$PWD/target/release pytest -q -p no:cacheprovider python/tests
# The `dist` profile is the release one, stripped (Cargo.toml); stripping the release
# binaries gives the same files without building every crate a second time (~10 min).
echo "==> the dist binaries (slotcon-train and slotcon-train-bench with LibTorch, stripped, for a GPU machine)"
mkdir -p target/dist
for b in slotcon-train slotcon-train-bench; do
  strip --strip-all -o "target/dist/$b" "target/release/$b"
done
echo "==> scripts/gpu-check.sh --device libtorch --quick (its CPU dry run; the dist binaries' size)"
gpu_tmp=$(mktemp -d)
trap 'rm -rf "$gpu_tmp"' EXIT
target/release/slotcon-ingest "$SLOTCON_COCO128/images" --out "$gpu_tmp/shards" -q
scripts/gpu-check.sh --device libtorch --quick --bin target/dist --shards "$gpu_tmp/shards" --out "$gpu_tmp/out"
