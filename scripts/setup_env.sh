#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install edgefss with everything the main job and
# the tests need. Idempotent: a second run only re-installs edgefss itself.
#   VENV=path   where the venv lives (default: .venv in the repo root)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv at $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU wheel.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu' and not torch.__version__.startswith('2.13.0'))" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU)"
  "$VENV/bin/pip" install -q torch==2.13.0
fi
echo "[setup] installing edgefss[dev] (builds the native extension edgefss._C with CMake)"
"$VENV/bin/pip" install -q --no-build-isolation setuptools wheel pybind11 >/dev/null
EDGEFSS_REQUIRE_EXTENSION="${EDGEFSS_REQUIRE_EXTENSION:-0}" \
  "$VENV/bin/pip" install -q --no-build-isolation -e "$ROOT[dev]"
"$VENV/bin/python" -c "import edgefss, edgefss.ops as o; print('[setup] edgefss', edgefss.__version__, '| native ops:', o.has_native())"
