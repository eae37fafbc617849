#!/usr/bin/env python
"""Two bundles of one model, A against B, interleaved query by query in one process.

    python bench/bundle_ab.py runs/a/bundles/tlg_400_openvino_int8 runs/b/tlg_ov_int8_dil_c3d_swap --rounds 16

For a change that only alters how a graph is written (a 4D-conv form, a quantization option), the
fair comparison is the same query on both, alternating, so that the machine's slow stretches
(docs/variance.md) fall on both alike. Prints per bundle the median query, encoder and head ms
(Prediction.timings) over the rounds, and the median of the per-round ratios A/B (>1: B is faster).
Random weights are fine: speed only. Torch-free.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.benchmark.worker import bench_images  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's)")
    a = ap.parse_args(argv)
    from edgefss.runtime import Segmenter

    sup, _, qs, cls, _ = bench_images(1, 1)
    segs = {}
    for key in ("a", "b"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random-weight bundles say so on load
            segs[key] = Segmenter.load(getattr(a, key), threads=a.threads)
        segs[key].set_support(sup, [cls])
        segs[key].predict(qs[0])  # warm-up
    t = {k: {"query": [], "encode": [], "head": []} for k in segs}
    ratios = []
    for r in range(a.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        got = {}
        for k in order:
            t0 = time.perf_counter()
            p = segs[k].predict(qs[0])
            got[k] = (time.perf_counter() - t0) * 1e3
            t[k]["query"].append(got[k])
            t[k]["encode"].append(p.timings.get("encode", float("nan")))
            t[k]["head"].append(p.timings.get("head", float("nan")))
        ratios.append(got["a"] / got["b"])
    for k in ("a", "b"):
        med = {n: statistics.median(v) for n, v in t[k].items()}
        print(f"{k.upper()} {getattr(a, k)}: query {med['query']:.1f} ms (encoder {med['encode']:.1f}, "
              f"head {med['head']:.1f}) median of {a.rounds}")
    print(f"A/B per-round query ratio: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}); > 1 means B is faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
