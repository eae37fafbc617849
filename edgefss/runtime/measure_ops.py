"""Measure the CST head paths "graph" vs "native" per backend: the figures behind hotpath.AUTO.

    PYTHONPATH=. python -m edgefss.runtime.measure_ops BUNDLE [--backends onnxruntime openvino]
        [--repeats 7] [--threads T]

prints, per backend, the median predict() time of both paths and its head part (cached 1-shot
support, random 480x854 images, paths interleaved round by round) and which one `ops="auto"`
should pick. The head time decides: the encoder is identical work on both paths and, on a loaded
machine, its noise swamps the difference in the predict() totals.
"""

from __future__ import annotations

import os


def measure(bundle_dir, backends=("onnxruntime", "openvino"), repeats: int = 7, threads: int | None = None,
            query=None, support=None) -> dict:
    """Median predict() milliseconds per backend and path ("graph" vs "native"), interleaved.

    One cached 1-shot support; each round runs one predict per (backend, path) in turn, so load
    changes on a shared machine hit both paths alike. The first round is a warm-up.

    Returns:
        {backend: {path: {"predict_ms": median, "head_ms": median, "corr_ms": median or None}}}.
    """
    import numpy as np

    from edgefss.runtime.segmenter import Segmenter

    rng = np.random.default_rng(0)
    query = rng.integers(0, 256, (480, 854, 3), dtype=np.uint8) if query is None else query
    support = rng.integers(0, 256, (480, 854, 3), dtype=np.uint8) if support is None else support
    segs = {}
    for be in backends:
        for path in ("graph", "native"):
            seg = Segmenter.load(bundle_dir, backend=be, threads=threads, ops=path)
            seg.set_support([support], ["object"])
            segs[be, path] = seg
    times = {k: [] for k in segs}
    for r in range(repeats + 1):
        for k, seg in segs.items():
            pred = seg.predict(query)
            if r:
                times[k].append((pred.timings["total"], pred.timings["head"], pred.timings.get("corr")))
    out: dict = {}
    for (be, path), ts in times.items():
        a = np.array([[t[0], t[1], t[2] or 0.0] for t in ts])
        out.setdefault(be, {})[path] = {"predict_ms": float(np.median(a[:, 0])), "head_ms": float(np.median(a[:, 1])),
                                        "corr_ms": float(np.median(a[:, 2])) if path != "graph" else None}
    return out


def main(argv=None) -> int:
    """Print the graph-vs-native table that hotpath.AUTO is decided from (see the module doc)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("bundle")
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    res = measure(a.bundle, a.backends, a.repeats, a.threads)
    for be, paths in res.items():
        g, n = paths["graph"], paths["native"]
        # the encoder is the same work on both paths: the head time (same predict calls) decides
        print(f"{be}: predict graph {g['predict_ms']:.1f} / native {n['predict_ms']:.1f} ms; head graph "
              f"{g['head_ms']:.1f} / native {n['head_ms']:.1f} ms (corr {n['corr_ms']:.1f}); native/graph head "
              f"{n['head_ms'] / g['head_ms']:.3f} -> auto '{'native' if n['head_ms'] < g['head_ms'] else 'graph'}'")
    print(json.dumps({"result": res, "load": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
