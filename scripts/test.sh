#!/usr/bin/env bash
# Installs what the tests need (a Python venv with Pillow, pyarrow, DuckDB, datasets),
# builds the release binaries, and runs every test. CI runs this and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "==> installing python3-venv (apt-get)"
  sudo_=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq python3-venv
fi
SLOTCON_PYTHON=$(scripts/python-env.sh | tail -n 1)
export SLOTCON_PYTHON

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo build --release --bins"
cargo build --release --bins
echo "==> cargo test --release"
cargo test --release --workspace
