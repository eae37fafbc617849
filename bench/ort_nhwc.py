#!/usr/bin/env python
"""ONNX Runtime's NHWC rewrite of QLinearConv, on and off, for a bundle graph (default: the head).

    python bench/ort_nhwc.py runs/latency400_s8/bundles/tlg_400_onnxruntime_int8 [--graph head] [--rounds 6]

ONNX Runtime's NhwcTransformer runs every QLinearConv in NHWC and wraps it in Transposes, which
cancel only across layout-agnostic neighbours; the 4D-convolution reshapes of the TLG head stop
them (240 Transposes in the 400 px INT8 head). This times the graph with the transformer on (the
runtime's setting) and off (`disabled_optimizers=["NhwcTransformer"]`), interleaved, on seeded
inputs shaped like the real ones (post-ReLU features, unit text vectors, a box pseudo-mask), and
counts the Transposes in each optimised graph.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def feeds_for(session, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in session.get_inputs():
        shp = [1 if isinstance(d, str) or d is None else d for d in i.shape]
        if i.name == "pseudo_given":
            a = np.ones(shp, np.float32)
        elif "pseudo" in i.name or "mask" in i.name:
            a = np.zeros(shp, np.float32)
            a[..., shp[-2] // 4: 3 * shp[-2] // 4, shp[-1] // 4: 3 * shp[-1] // 4] = 1
        elif i.name.startswith("text"):
            a = rng.standard_normal(shp).astype(np.float32)
            a /= np.linalg.norm(a, axis=-1, keepdims=True)
        else:
            a = np.maximum(rng.standard_normal(shp), 0).astype(np.float32)
        out[i.name] = a
    return out


def main(argv=None) -> int:
    import onnx
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--graph", default="head")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    path = Path(a.bundle) / f"{a.graph}.onnx"
    if not path.is_file():
        raise SystemExit(f"bundle: {path} not found; expected an ONNX Runtime bundle with a {a.graph}.onnx")
    sessions, transposes = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for tag, disabled in (("nhwc on (runtime)", []), ("nhwc off", ["NhwcTransformer"])):
            o = ort.SessionOptions()
            o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = a.threads, 1, 3
            o.optimized_model_filepath = str(Path(work) / f"{len(sessions)}.onnx")
            sessions[tag] = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"],
                                                 disabled_optimizers=disabled)
            g = onnx.load(o.optimized_model_filepath, load_external_data=False).graph
            transposes[tag] = sum(n.op_type == "Transpose" for n in g.node)
    feeds = feeds_for(next(iter(sessions.values())))
    ref = {k: s.run(None, feeds) for k, s in sessions.items()}
    ms = {k: [] for k in sessions}
    for _ in range(a.rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            ms[k].append((time.perf_counter() - t) * 1e3)
    base = next(iter(sessions))
    print(f"{path} ({a.threads} threads, {a.rounds} interleaved rounds)")
    for k in sessions:
        d = max(float(np.abs(x - y).max()) for x, y in zip(ref[k], ref[base]))
        print(f"  {k:<18} median {statistics.median(ms[k]):7.1f} ms (min {min(ms[k]):.1f})  "
              f"Transposes {transposes[k]:4d}  max|diff| vs on {d:.2g}")
    print(f"  on / off = {statistics.median(ms[base]) / statistics.median(ms['nhwc off']):.2f}x (>1: the rewrite costs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
