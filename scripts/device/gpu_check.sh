#!/usr/bin/env bash
# The CUDA checks that need a GPU, as one script for a lent GPU machine (the project's CI has none).
#
#   bash scripts/device/gpu_check.sh [OUTDIR]
#
# Builds edgefss._C with its CUDA kernels for this GPU (EDGEFSS_FORCE_CUDA: a build without them fails),
# runs tests/test_ops_cuda.py (CUDA kernels vs the float64 NumPy reference, the CPU kernels and POT),
# then bench/ops.py (CUDA kernels vs torch on the same GPU and on the CPU, copies included on both GPU rows).
# Logs, the JUnit report and the benchmark JSON/PNG go to OUTDIR (default runs/gpu_check).
set -uo pipefail
OUT_DIR=${1:-runs/gpu_check}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvcc --version | tail -1
  "$PY" -c "import sys, numpy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | cut -c1-200
} 2>&1 | tee "$OUT_DIR/machine.txt"

arch=$("$PY" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')" 2>/dev/null || echo 90)
b=$(mktemp -d)
echo "== build (CMAKE_CUDA_ARCHITECTURES=$arch)"
t0=$(date +%s)
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Release -DEDGEFSS_FORCE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/edgefss" -DPython_EXECUTABLE="$(command -v "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$OUT_DIR/build.log" 2>&1 \
  && cmake --build "$b" -j "$(nproc)" >>"$OUT_DIR/build.log" 2>&1 || { tail -40 "$OUT_DIR/build.log"; exit 3; }
echo "build ok in $(( $(date +%s) - t0 )) s"
"$PY" -c "import edgefss._C as c; print('with_cuda', c.with_cuda(), 'cuda_available', c.cuda_available(), 'kernel_isa', c.kernel_isa())"

echo "== tests/test_ops_cuda.py + tests/test_ops_native.py"
"$PY" -m pytest -q -p no:cacheprovider tests/test_ops_cuda.py tests/test_ops_native.py -rs \
  --junitxml="$OUT_DIR/junit.xml" 2>&1 | tee "$OUT_DIR/pytest.log" | tail -25
rc_test=${PIPESTATUS[0]}

echo "== bench/ops.py"
timeout 300 "$PY" bench/ops.py --out "$OUT_DIR" --no-memory --repeats 15 2>&1 | tee "$OUT_DIR/bench.log" | tail -45
exit "$rc_test"
