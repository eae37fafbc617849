#!/usr/bin/env python
"""CST head at 400 px: the official attention-block order vs the export's pool-first form
(exporters/cst_forms.py), exported the way the bundles are (GraphDef + export_graph, float64
GroupNorm statistics), timed interleaved on ONNX Runtime and OpenVINO FP32.

    python bench/cst_forms.py --imgsz 400 --rounds 12 --threads 2

Prints per backend and form the median ms (p10-p90), the ratio official / pool_first, and the
max-abs difference of the outputs to torch (random weights; the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _harness import cpu_info, time_interleaved

from edgefss.exporters.cst_forms import FORMS, OFFICIAL
from edgefss.exporters.cst_graphs import CST_IO, CSTHeadGraph, cst_example_inputs
from edgefss.exporters.graphs import GraphDef
from edgefss.exporters.onnx_export import export_graph
from edgefss.models import build_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=400)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", default="onnxruntime,openvino")
    a = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("cst", imgsz=a.imgsz).eval()
    ins, outs, dyn = CST_IO["head"]
    feeds = cst_example_inputs(m, a.imgsz, n_support=1)["head"]
    np_feeds = {k: v.numpy() for k, v in zip(ins, feeds)}
    with torch.no_grad():
        ref = [t.numpy() for t in CSTHeadGraph(m)(*feeds)]
    fns, diffs = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for form in FORMS:
            w = CSTHeadGraph(m)
            w.learner_form = form
            path = export_graph(GraphDef(w, ins, outs, dynamic_axes=dyn), dict(zip(ins, feeds)),
                                Path(work) / f"{form}.onnx")
            for be in a.backends.split(","):
                if be == "onnxruntime":
                    import onnxruntime as ort

                    o = ort.SessionOptions()
                    o.intra_op_num_threads, o.inter_op_num_threads = a.threads, 1
                    s = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
                    run = (lambda s=s: s.run(None, np_feeds))
                else:
                    import openvino as ov

                    c = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": a.threads,
                                                                    "INFERENCE_PRECISION_HINT": "f32"})
                    r = c.create_infer_request()
                    run = (lambda r=r: [np.array(x) for x in r.infer(np_feeds).values()])
                got = run()
                diffs[(be, form)] = max(float(np.abs(g - t).max()) for g, t in zip(got, ref))
                fns[(be, form)] = run
        res = time_interleaved(fns, warmup=2, repeat=a.rounds)
    print(f"CST head {a.imgsz} px, 1 support, {a.threads} threads, {a.rounds} interleaved rounds; {cpu_info()}")
    for be in a.backends.split(","):
        for form in FORMS:
            st = res[(be, form)]
            print(f"  {be:<12}{form:<11}{st['median']:8.1f} ms (p10 {st['p10']:.1f}, p90 {st['p90']:.1f})  "
                  f"max|out - torch| {diffs[(be, form)]:.2g}")
        o, f = res[(be, OFFICIAL)]["median"], res[(be, FORMS[1])]["median"]
        print(f"  {be}: official / pool_first = {o / f:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
