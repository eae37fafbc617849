#!/usr/bin/env python
"""Which ONNX Runtime INT8 format is fast on this CPU: quantize one FP32 graph several ways and
time every variant against the FP32 graph, interleaved round by round in one process.

    python bench/int8_formats.py --onnx BUNDLE/encoder.onnx [--threads 2] [--rounds 8] [--formats a,b]

Variants (all static MinMax, Conv/MatMul/Gemm only, edgefss.quant.ort_int8's exclusion policy):
    qdq_s8s8_pc   QDQ, int8 activations (symmetric) + int8 per-channel weights (the old default)
    qdq_u8s8_pc   QDQ, uint8 activations (asymmetric) + int8 per-channel weights
    qop_u8s8_pc   QOperator (QLinearConv / MatMulInteger), uint8 activations + int8 per-channel weights
    qdq_u8s8_pt   QDQ, uint8 activations + int8 per-tensor weights
Calibration uses seeded random-normal inputs of the graph's input shapes: the figures are about
speed (integer kernels cost the same whatever the values), not accuracy — the export's gate
judges that. Also prints how many nodes ORT ran as integer kernels after its graph optimisation
(a QDQ pair it cannot fuse runs as DequantizeLinear -> float op -> QuantizeLinear, slower than FP32).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from edgefss.benchmark.machine import cpu_info, load_average  # noqa: E402
from edgefss.benchmark.stats import summarize  # noqa: E402
from edgefss.quant.ort_int8 import FORMATS, quantize_onnx  # noqa: E402

INT_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
           "DynamicQuantizeMatMul", "QGemm", "QAttention", "FusedMatMulInteger"}


def random_feeds(path: str, n: int, seed: int = 0) -> list[dict]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        f = {}
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            f[i.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(f)
    return feeds


def session(path: str, threads: int, optimized_out: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_out:
        so.optimized_model_filepath = optimized_out
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def integer_nodes(path: str) -> dict:
    import onnx

    m = onnx.load(path, load_external_data=False)
    c = Counter(n.op_type for n in m.graph.node)
    return {"integer_kernels": sum(v for k, v in c.items() if k in INT_OPS),
            "float_conv_matmul": c.get("Conv", 0) + c.get("MatMul", 0) + c.get("Gemm", 0) + c.get("FusedConv", 0)
            + c.get("FusedMatMul", 0),
            "dq": c.get("DequantizeLinear", 0), "q": c.get("QuantizeLinear", 0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True, help="FP32 ONNX graph (e.g. a bundle's encoder.onnx)")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    p.add_argument("--calib", type=int, default=4, help="random calibration samples")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--keep-last", action="store_true", help="keep the last layers float (head graphs)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    fmts = [f for f in a.formats.split(",") if f]
    feeds = random_feeds(a.onnx, a.calib)
    work = Path(tempfile.mkdtemp(prefix="int8fmt_"))
    paths = {"fp32": a.onnx}
    quant_s = {}
    for f in fmts:
        t = time.perf_counter()
        out = work / f"{f}.onnx"
        quantize_onnx(a.onnx, out, feeds, keep_last=a.keep_last, fmt=f, label="")
        quant_s[f] = time.perf_counter() - t
        paths[f] = str(out)
    sess, info = {}, {}
    for k, path in paths.items():
        opt = str(work / f"{k}.opt.onnx")
        sess[k] = session(path, a.threads, opt)
        info[k] = integer_nodes(opt)
    x = feeds[0]
    for s in sess.values():  # warm-up: arenas, kernel selection
        s.run(None, x)
        s.run(None, x)
    samples = {k: [] for k in sess}
    for r in range(a.rounds):
        keys = list(sess)
        keys = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in keys:
            t = time.perf_counter()
            sess[k].run(None, x)
            samples[k].append((time.perf_counter() - t) * 1e3)
    m = cpu_info()
    print(f"{a.onnx}: {m['cpu']}, ISA {', '.join(k for k, v in m['isa'].items() if v)}; {a.threads} threads, "
          f"{a.rounds} interleaved rounds; load average {load_average()}")
    base = summarize(samples["fp32"])["p50"]
    res = {}
    for k in sess:
        st = summarize(samples[k])
        res[k] = {**st, "speedup_vs_fp32": base / st["p50"], **info[k], "quantize_s": quant_s.get(k)}
        print(f"{k:12s} p50 {st['p50']:8.1f} ms  p90 {st['p90']:8.1f}  x{base / st['p50']:.2f} vs FP32   "
              f"integer kernels {info[k]['integer_kernels']:3d}  float Conv/MatMul {info[k]['float_conv_matmul']:3d}  "
              f"DQ {info[k]['dq']:3d}")
    if a.json:
        Path(a.json).write_text(json.dumps({"onnx": a.onnx, "threads": a.threads, "load": load_average(),
                                            "results": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
