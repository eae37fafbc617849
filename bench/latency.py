#!/usr/bin/env python
"""Latency benchmark: TLG / CST on torch eager and exported bundles (onnxruntime, OpenVINO,
TensorRT) at FP32 / FP16 / INT8 — a thin wrapper of `edgefss benchmark` (edgefss/benchmark/).

    python bench/latency.py                 # 400 px (the models' own size), TLG + CST, all installed backends
    python bench/latency.py --sizes 224     # another size on request
    python bench/latency.py --quick         # CI smoke: TLG at 128 px, torch + onnxruntime FP32
    python bench/latency.py --full          # 224 and 400 px, FP16 too, more rounds

Configurations are interleaved round by round until the medians are stable; rows report p50/p90,
spread, ×torch of the same rounds, export time and peak RSS, and whether the two halves of the
run agree within 10 %. Outputs: <out>/latency.json, latency.csv, latency.png (default runs/latency/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.benchmark.engine import add_arguments, finish_args, run  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return finish_args(p.parse_args(argv))


def main(argv=None) -> int:
    return run(parse_args(argv), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main())
