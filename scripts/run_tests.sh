#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, exactly as CI does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
