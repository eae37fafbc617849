"""Where a TLG head spends its time, per engine, and what moving its correlation and Sinkhorn out
of the graph into the native kernels would gain: the measurement behind keeping them in `head`.

    PYTHONPATH=. python bench/profile_tlg_head.py BUNDLE [--threads 2] [--repeats 7] [--out DIR]

BUNDLE is an FP32 TLG bundle (`edgefss export --model tlg --out BUNDLE`). The head runs on random
features of the bundle's shapes (B = 1) with per-node profiling (onnxruntime: session profiling;
OpenVINO: PERF_COUNT). Nodes are attributed by dataflow over the graph that ran (ORT's optimised
graph; the ONNX graph for OpenVINO): "hypercorr" = normalisation of the 13 feature maps, their
correlation MatMuls and the clamp/stack tail; "prior" = the prior's correlation (MatMuls whose
output meets a ReduceMax); "sinkhorn" = HT's OT iterations (from the cost to the plan MatMul in
CrossAttention); "other" = the rest. Each profiled run is followed by the native kernels on the
same shapes (one hypercorrelation direction, as the head computes; both HT Sinkhorns), so load
hits both alike. Writes profile.json under --out and prints the shares, the native speed-ups and
the whole-head gain a split would bring: total / (total - graph part + native part).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.benchmark.profile import graph_feeds, ort_kernel_runs

PARTS = ("hypercorr", "prior", "sinkhorn", "other")
TAIL_OPS = {"Clip", "Max", "Relu", "Reshape", "Unsqueeze", "Concat", "Identity", "Squeeze", "Transpose"}
MATMULS = ("MatMul", "FusedMatMul")


def _walk(tensors, step, stop, forward: bool) -> set:
    """Names of the nodes reached from `tensors` through step(tensor) -> nodes, not past stop(node)."""
    seen, stack = set(), list(tensors)
    while stack:
        for n in step(stack.pop()):
            if n.name not in seen and not stop(n):
                seen.add(n.name)
                stack.extend(n.output if forward else n.input)
    return seen


def classify(model) -> dict[str, str]:
    """node name -> part (PARTS) for an ONNX TLG head graph."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)

    def down(t):
        return consumers.get(t, [])

    def up(t):
        return [producer[t]] if t in producer else []

    inputs = {i.name for i in model.graph.input}
    feats = [i for i in inputs if "feat_" in i]
    # between the feature inputs and the first MatMul/Conv: the normalisation of the features
    pre = _walk(feats, down, lambda n: n.op_type in MATMULS + ("Conv", "FusedConv", "Gemm"), True)
    corr_mm = [n for n in nodes if n.op_type in MATMULS and "Attention" not in n.name and "proj" not in n.name
               and any(i in inputs or (i in producer and producer[i].name in pre) for i in n.input)]
    prior_mm = [m for m in corr_mm if any(c.op_type == "ReduceMax" for o in m.output for c in down(o))]
    part = {}
    for mm in corr_mm:
        name = "prior" if mm in prior_mm else "hypercorr"
        for nm in _walk(mm.input, up, lambda n: n.name not in pre, False) | {mm.name}:
            part.setdefault(nm, name)
        if name == "hypercorr":  # clamp, reshape, stack (and the transposed copy) up to the Concat
            stack = list(mm.output)
            while stack:
                for n in down(stack.pop()):
                    if n.op_type in TAIL_OPS and n.name not in part:
                        part[n.name] = "hypercorr"
                        if n.op_type != "Concat":
                            stack.extend(n.output)
    for sm in (n for n in nodes if n.op_type == "Softmax" and "CrossAttention" in n.name):
        after = _walk(sm.output, down, lambda n: False, True)
        plan = [n for n in nodes
                if n.name in after and "CrossAttention" in n.name and n.name.endswith("MatMul_1")]
        if plan:
            for nm in after & _walk(plan[0].input[:1], up, lambda n: False, False):
                part.setdefault(nm, "sinkhorn")
    return {n.name: part.get(n.name, "other") for n in nodes}


def head_feeds(manifest: dict, seed: int = 0) -> dict:
    """Random head inputs at the manifest shapes (B = 1; pseudo_given = 0: the prior path)."""
    return graph_feeds(manifest, "head", seed, zeros=("pseudo_given",))


def native_parts(feeds: dict):
    """Callables running the native kernels on the head's shapes: one hypercorrelation direction
    (13 layers, clamp 0) and both HT Sinkhorns (2 x 50x50, 11 iterations)."""
    from edgefss import ops

    if not ops.has_native():
        raise SystemExit("profile_tlg_head: edgefss._C is not built (pip install -e . builds it)")
    def flat(prefix):
        return [feeds[n].reshape(1, feeds[n].shape[1], -1) for n in sorted(feeds) if n.startswith(prefix)]

    q, s = flat("query_feat_"), flat("support_feat_")
    grid = int(round(np.sqrt(q[0].shape[-1])))
    cost = np.random.default_rng(1).random((2, grid, grid)).astype(np.float32)
    return (lambda: ops.cosine_correlation(q, s, clamp_min=0.0, eps=1e-5, impl="native"),
            lambda: ops.sinkhorn_log(cost, eps=0.5, n_iter=11, impl="native"))


def _summary(node_ms: list[dict], wall: list[float], ncorr: list[float], nsink: list[float]) -> dict:
    med = {p: float(np.median([d[p] for d in node_ms])) for p in PARTS + ("all",)}
    nc, ns = float(np.median(ncorr)), float(np.median(nsink))
    split = med["all"] - med["hypercorr"] - med["sinkhorn"] + nc + ns
    return {"wall_ms": float(np.median(wall)), "node_ms": med,
            "share": {p: med[p] / med["all"] for p in PARTS},
            "native_hypercorr_ms": nc, "native_sinkhorn_ms": ns,
            "native_speedup": {"hypercorr": med["hypercorr"] / nc, "sinkhorn": med["sinkhorn"] / ns},
            "split_gain": med["all"] / split, "load": list(os.getloadavg())}


def profile_onnxruntime(head_path, feeds, threads, repeats, natives):
    import onnx
    import onnxruntime as ort

    tmp = tempfile.mkdtemp(prefix="edgefss_prof_")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.optimized_model_filepath = os.path.join(tmp, "head_opt.onnx")
    so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, "prof")
    sess = ort.InferenceSession(str(head_path), so, providers=["CPUExecutionProvider"])
    part = classify(onnx.load(so.optimized_model_filepath, load_external_data=False))
    sess.run(None, feeds)  # warm-up (first profiled run, dropped below)
    wall, ncorr, nsink = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feeds)
        wall.append((time.perf_counter() - t) * 1e3)
        for fn, acc in zip(natives, (ncorr, nsink)):
            t = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t) * 1e3)
    per_run = []
    for run in ort_kernel_runs(json.loads(Path(sess.end_profiling()).read_text())):
        d = defaultdict(float)
        for name, (_, us) in run.items():
            d[part.get(name, "other")] += us / 1e3
            d["all"] += us / 1e3
        per_run.append(d)
    return _summary(per_run[1:], wall, ncorr, nsink)


def profile_openvino(head_path, feeds, threads, repeats, natives):
    import onnx
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(head_path))
    model.reshape({n: ov.PartialShape(list(x.shape)) for n, x in feeds.items()})
    req = core.compile_model(model, "CPU", {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32",
                                            "INFERENCE_NUM_THREADS": threads}).create_infer_request()
    part = classify(onnx.load(str(head_path), load_external_data=False))
    req.infer(feeds)
    node_ms, wall, ncorr, nsink = [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        req.infer(feeds)
        wall.append((time.perf_counter() - t) * 1e3)
        d = defaultdict(float)
        for info in req.get_profiling_info():
            ms = info.real_time.total_seconds() * 1e3
            d[part.get(info.node_name, "other")] += ms
            d["all"] += ms
        node_ms.append(d)
        for fn, acc in zip(natives, (ncorr, nsink)):
            t = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t) * 1e3)
    return _summary(node_ms, wall, ncorr, nsink)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="FP32 TLG bundle directory")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--engines", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--out", default="runs/profile_tlg_head")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # before edgefss._C loads OpenMP

    bundle = Path(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest.get("model") != "tlg":
        raise SystemExit(f"profile_tlg_head: {bundle} is a {manifest.get('model')!r} bundle; "
                         "expected a TLG bundle")
    feeds = head_feeds(manifest)
    natives = native_parts(feeds)
    profilers = {"onnxruntime": profile_onnxruntime, "openvino": profile_openvino}
    res = {"bundle": str(bundle), "threads": args.threads, "repeats": args.repeats}
    for eng in args.engines:
        print(f"profiling {eng} ({args.repeats} runs, {args.threads} threads) ...", flush=True)
        res[eng] = r = profilers[eng](bundle / manifest["graphs"]["head"]["file"], feeds, args.threads,
                                      args.repeats, natives)
        nm = r["node_ms"]
        print(f"{eng}: head {nm['all']:.0f} ms (wall {r['wall_ms']:.0f}); "
              + ", ".join(f"{p} {nm[p]:.0f} ms ({100 * r['share'][p]:.1f} %)" for p in PARTS))
        sp = r["native_speedup"]
        print(f"  native: hypercorr {r['native_hypercorr_ms']:.0f} ms ({sp['hypercorr']:.2f}x), "
              f"sinkhorn {r['native_sinkhorn_ms']:.2f} ms ({sp['sinkhorn']:.1f}x); "
              f"split gain {r['split_gain']:.2f}x; load {r['load'][0]:.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "profile.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out / "profile.json")
    print(f"wrote {out / 'profile.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
