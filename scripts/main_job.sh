#!/usr/bin/env bash
# The main job: set up, export TLG to an INT8 bundle (calibrated on ../shared/data), and segment a
# real DAVIS frame given only another frame of the same object and its class name.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DATA="${EDGEFSS_SHARED_DATA:-$ROOT/../shared/data}"
OUT="${OUT:-$ROOT/runs/main_job}"
bash "$ROOT/scripts/setup_env.sh"
. "$VENV/bin/activate"
cd "$ROOT"
edgefss export --model tlg --int8 --calib "$DATA" --out "$OUT/tlg_int8"
edgefss predict --bundle "$OUT/tlg_int8" \
  --support "$DATA/davis2016_val_subset/dog/images/00000.jpg:dog" \
  --query "$DATA/davis2016_val_subset/dog/images/00039.jpg" \
  --out "$OUT/dog_mask.png"
