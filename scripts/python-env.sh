#!/usr/bin/env bash
# Creates (or reuses) the project's Python venv with what the tests and the demo need.
# Usage: scripts/python-env.sh  -> prints the venv's python path on the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SLOTCON_VENV:-$root/.venv}
req=$root/scripts/requirements.txt
stamp=$venv/.requirements.sha
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> python venv: $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  # No wheel cache: PyTorch and its CUDA libraries take ~7 GB installed, and a cached copy
  # of their wheels would take ~4 GB more on a disk that may be small.
  "$venv/bin/python" -m pip install --quiet --no-cache-dir -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
