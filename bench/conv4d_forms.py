"""How the exported 4D center-pivot convolutions are written, measured per backend (issue 20).

Exports the HSNet learner of TLG (both directions: query pass on corr_q, support pass on the
exchanged pyramid) -- and optionally the whole TLG head graph -- once per formulation
(edgefss.models.hsnet.Conv4dForm), then times them INTERLEAVED (one run of each form in turn per
round) on ONNX Runtime FP32, ONNX Runtime INT8 (the project's own quantizer,
edgefss.quant.ort_int8.quantize_onnx) and OpenVINO FP32, repeating rounds until the medians settle.
Prints per-backend ratios against the eager form (perm/perm, transposed copy for the support pass)
and writes JSON. Random weights and random correlations: speed only.

    python bench/conv4d_forms.py                      # learner, 400 px, all backends
    python bench/conv4d_forms.py --what head --forms eager,best   # whole TLG head graph
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from edgefss.exporters.conv4d_forms import FORMS, conv4d_export
from edgefss.exporters.stable_norm import F64_STATS, group_norm_export
from edgefss.models.hsnet import HPNLearner


class _Learner(torch.nn.Module):
    """pyramid (3 tensors (1,C,Ha,Wa,Hb,Wb)) -> (query-direction, support-direction) (1,128,h,h)."""

    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def forward(self, c4, c3, c2):
        p = [c4, c3, c2]
        return self.learner.forward_conv4d(p), self.learner.forward_conv4d(p, swapped=True)


def _learner_case(imgsz: int):
    torch.manual_seed(0)
    learner = HPNLearner((3, 6, 4)).eval()
    g = [(imgsz + 31) // 32, (imgsz + 15) // 16, (imgsz + 7) // 8]  # ResNet-50 layer4/3/2 grids
    feeds = {f"c{n}": torch.rand(1, ch, h, h, h, h) for n, ch, h in zip((4, 3, 2), (3, 6, 4), g)}
    return _Learner(learner).eval(), learner, feeds


def _head_case(imgsz: int):
    from edgefss.exporters.tlg_graphs import TLGHeadGraph, tlg_example_inputs, tlg_io
    from edgefss.models.tlg import tlg_resnet50

    torch.manual_seed(0)
    model = tlg_resnet50(imgsz=imgsz).eval()
    feeds = tlg_example_inputs(model, imgsz, n_support=1)["head"]
    graph = TLGHeadGraph(model).eval()
    graph.io = tlg_io(model)["head"]
    return graph, model.hpn_learner, feeds


def _export(module, learner, feeds, form, path, dyn=None):
    with torch.no_grad(), group_norm_export(module, F64_STATS), conv4d_export(learner, FORMS[form]):
        torch.onnx.export(module, tuple(feeds.values()), str(path), input_names=list(feeds),
                          opset_version=17, do_constant_folding=True, dynamo=False, dynamic_axes=dyn)
    return path


def _sessions(paths, np_feeds, backends, threads, work):
    import onnxruntime as ort

    runs = {}
    for form, p in paths.items():
        for be in backends:
            if be == "ort_fp32" or be == "ort_int8":
                src = p
                if be == "ort_int8":
                    from edgefss.quant.ort_int8 import quantize_onnx

                    src = Path(work) / f"{p.stem}.int8.onnx"
                    quantize_onnx(p, src, [np_feeds], keep_last=False, label="")
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
                # no spin-waiting: a waiting thread then costs no CPU time, so the CPU-time column
                # measures work, which a loaded shared machine disturbs far less than wall time
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                s = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
                runs[(be, form)] = (lambda s=s: s.run(None, np_feeds))
            elif be == "ov_fp32":
                import openvino as ov

                core = ov.Core()
                c = core.compile_model(str(p), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                       "INFERENCE_PRECISION_HINT": "f32",
                                                       "PERFORMANCE_HINT": "LATENCY"})
                req = c.create_infer_request()
                runs[(be, form)] = (lambda req=req: req.infer(np_feeds))
            else:
                raise SystemExit(f"--backends: unknown {be!r}; expected ort_fp32, ort_int8, ov_fp32")
    return runs


def _check(runs, forms, backends, ref_out):
    """Max-abs difference of each backend/form output from torch eager (speed means nothing if wrong)."""
    diff = {}
    for (be, form), fn in runs.items():
        out = fn()
        vals = list(out.values()) if isinstance(out, dict) or hasattr(out, "values") else out
        vals = [np.asarray(v) for v in (out.to_tuple() if hasattr(out, "to_tuple") else vals)]
        diff[f"{be}/{form}"] = max(float(np.abs(a - b).max()) for a, b in zip(vals, ref_out))
    return diff


def time_rounds(runs, min_rounds, max_rounds, tol):
    """Round-robin timing until every median of the last half agrees with the median of all
    rounds within `tol` (relative), after `min_rounds`. Returns {key: [seconds]}."""
    samples = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for r in range(max_rounds):
        for k, fn in runs.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
        if r + 1 >= min_rounds:
            settled = all(abs(statistics.median(v[len(v) // 2:]) / statistics.median(v) - 1) < tol
                          for v in list(samples.values()) + list(cpu.values()))
            if settled:
                break
    return samples, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=("learner", "head"), default="learner")
    ap.add_argument("--imgsz", type=int, default=400)
    ap.add_argument("--forms", default="eager,dil_c3d_swap,c3d_swap,dil_perm,dil_c3d")
    ap.add_argument("--backends", default="ort_fp32,ov_fp32,ort_int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-rounds", type=int, default=6)
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument("--tol", type=float, default=0.03)
    ap.add_argument("--out", default="runs/conv4d_forms.json")
    a = ap.parse_args(argv)
    forms = a.forms.split(",")
    for f in forms:
        if f not in FORMS:
            raise SystemExit(f"--forms: unknown {f!r}; expected some of {sorted(FORMS)}")
    backends = a.backends.split(",")
    torch.set_num_threads(a.threads)
    module, learner, feeds = (_learner_case if a.what == "learner" else _head_case)(a.imgsz)
    with torch.no_grad():
        ref = module(*feeds.values())
    ref = [r.numpy() for r in ref]
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    with tempfile.TemporaryDirectory(prefix="conv4d_forms.") as work:
        t0 = time.time()
        dyn = None
        paths = {f: _export(module, learner, feeds, f, Path(work) / f"{a.what}_{f}.onnx", dyn) for f in forms}
        print(f"exported {len(paths)} forms in {time.time() - t0:.0f} s", flush=True)
        runs = _sessions(paths, np_feeds, backends, a.threads, work)
        diff = _check(runs, forms, backends, ref)
        samples, cpu = time_rounds(runs, a.min_rounds, a.max_rounds, a.tol)
    rows = []
    print(f"\n{a.what} at {a.imgsz} px, {a.threads} threads, interleaved; ratio = eager median / form median")
    print("(cpu = process CPU time per run, all threads; less disturbed by other load than wall time)")
    print(f"{'backend':9s} {'form':18s} {'p50 ms':>8s} {'p90 ms':>8s} {'n':>3s} {'x eager':>8s} "
          f"{'cpu p50':>8s} {'cpu x eager':>11s} {'max|d| torch':>12s}")
    for be in backends:
        base = statistics.median(samples[(be, "eager")]) if (be, "eager") in samples else None
        cbase = statistics.median(cpu[(be, "eager")]) if (be, "eager") in cpu else None
        for f in forms:
            v = samples[(be, f)]
            med, cmed = statistics.median(v), statistics.median(cpu[(be, f)])
            p90 = float(np.percentile(v, 90))
            ratio = base / med if base else None
            cratio = cbase / cmed if cbase else None
            rows.append({"backend": be, "form": f, "form_fields": FORMS[f].name, "p50_ms": med * 1e3,
                         "p90_ms": p90 * 1e3, "n": len(v), "x_eager": ratio, "cpu_p50_ms": cmed * 1e3,
                         "cpu_x_eager": cratio, "max_abs_diff": diff[f"{be}/{f}"]})
            print(f"{be:9s} {f:18s} {med * 1e3:8.1f} {p90 * 1e3:8.1f} {len(v):3d} {(ratio or float('nan')):8.3f} "
                  f"{cmed * 1e3:8.1f} {(cratio or float('nan')):11.3f} {diff[f'{be}/{f}']:12.2e}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"what": a.what, "imgsz": a.imgsz, "threads": a.threads, "argv": sys.argv,
                               "rows": rows}, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
