"""Where any graph of a bundle spends its time, per op type, next to the work (MACs) each op type does.

    PYTHONPATH=. python bench/profile_graph.py BUNDLE [--graph encoder|head|learner|all]
        [--backend onnxruntime|openvino] [--threads 2] [--repeats 5] [--peaks LATENCY_JSON] [--out DIR]

The graph runs on random inputs of its manifest shapes (B = 1) with per-node profiling: ONNX
Runtime session profiling (kernel time of each node of the graph ORT optimised) or OpenVINO
PERF_COUNT (executed layers of the compiled model, by layer type). One warm-up run, then
--repeats profiled runs; figures are medians over them. Per op type: ms per run, share of the
profiled node time, nodes, MACs and achieved G ops/s (2 ops per MAC). MACs come from
edgefss.benchmark.flops (the ONNX graph, or the OpenVINO model itself) and are mapped to the
profiled nodes by name, then through the op an engine fused and named its node after (ORT's NCHWc
convs are named after the Relu output they end in, OpenVINO's attention Subgraph after the Transpose
behind it); MACs that still do not map go to the profiled op type of the same family (conv /
matmul / attention) that took the most time, and the output says how much went each way. "data movement" sums the op types that only move or
convert bytes (edgefss.benchmark.profile.DATA_MOVEMENT). With --peaks (a latency.json, its
machine.peaks) each graph also gets its compute lower bound: its int8 MACs at the INT8 peak plus
its float MACs at the FP32 peak. Writes DIR/profile.json and DIR/profile_<graph>.png (the chart
is skipped with a note without matplotlib). Timings on a shared machine are under load: the load
average at start and end is recorded; compare shares and G ops/s rather than absolute ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.benchmark.flops import graph_macs, macs_summary, mixed_ideal_ms, ov_model_macs
from edgefss.benchmark.profile import graph_feeds, is_data_movement, profile_openvino, profile_ort

FAMILIES = {
    "conv": {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NchwcConv", "ConvTranspose", "Convolution",
             "GroupConvolution", "ConvolutionBackpropData", "Deconvolution"},
    "matmul": {"MatMul", "FusedMatMul", "Gemm", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
               "DynamicQuantizeMatMul", "FullyConnected"},
    "attention": {"MultiHeadAttention", "Attention", "ScaledDotProductAttention"},
}
FAMILY_OF = {op: f for f, ops in FAMILIES.items() for op in ops}


def _candidates(name: str):
    """Original node names an engine's node name may come from (ORT: `_token_N`, `_output_0_nchwc`,
    `/MatMulAddFusion`; OpenVINO: `/WithoutBiases`)."""
    yield name
    base = re.sub(r"(_token_\d+)+$", "", name.rstrip("/"))  # ORT: "/MatMul_7/MatmulTransposeFusion/"
    base = re.sub(r"_(nchwc|quant)$", "", base)
    yield base  # a tensor name (ORT NCHWc) or the node name
    base = re.sub(r"_output_\d+$", "", base)
    yield base
    if "/" in base.strip("/"):
        yield base.rsplit("/", 1)[0]


# ops an engine fuses into the conv/matmul/attention before them (activations, bias, layout): a
# profiled node named after one of them (ORT NCHWc: "<its output>_nchwc"; OpenVINO Subgraph: the
# last op it swallowed) carries the MACs of the counted node it fused
FUSED_AFTER = {"Relu", "Add", "Clip", "Sigmoid", "Mul", "Multiply", "LeakyRelu", "HardSigmoid", "Sum",
               "BatchNormalization", "Identity", "Transpose", "Reshape", "Convert", "Gelu", "Erf", "Div", "Divide",
               "Swish", "Tanh"}


OPAQUE_FUSIONS = {"Subgraph"}  # OpenVINO snippets: several ops in one kernel, named after one of them


def onnx_aliases(path, counted: set) -> dict:
    """{node or tensor name: counted node} for nodes up to 3 FUSED_AFTER steps after a counted node."""
    import onnx

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    producer = {o: n for n in nodes for o in n.output}
    alias = {}
    for n in nodes:
        if n.name in counted:
            alias.update({o: n.name for o in n.output})
            continue
        cur = n
        for _ in range(3):
            if cur.op_type not in FUSED_AFTER:
                break
            src = next((producer[i] for i in cur.input if i in producer), None)
            if src is None:
                break
            if src.name in counted:
                alias[n.name] = src.name
                alias.update({o: src.name for o in n.output})
                break
            cur = src
    return alias


def ov_aliases(model, counted: set) -> dict:
    """The same for an OpenVINO model (friendly names, OpenVINO op types)."""
    alias = {}
    for op in model.get_ordered_ops():
        cur = op
        for _ in range(3):
            if cur.get_type_name() not in FUSED_AFTER or not cur.get_input_size():
                break
            src = cur.input_value(0).get_node()
            if src.get_friendly_name() in counted:
                alias[op.get_friendly_name()] = src.get_friendly_name()
                break
            cur = src
    return alias


def attribute_macs(nodes: dict, recs: list[dict], alias: dict | None = None) -> tuple:
    """MACs of the profiled nodes that map to a counted node: by name (conv/matmul/attention op
    types), then through `alias` (those and OpenVINO Subgraphs: a fused node named after a later op).

    Args:
        nodes: {profiled node name: op type} of one run. recs: flops records of the graph.
        alias: {name: counted node name} (onnx_aliases / ov_aliases).
    Returns:
        ({op type: MACs}, {op type: {"int8": MACs, "fp32": MACs}}, {"by_name", "by_alias",
        "by_family", "unplaced"} MACs (by_name/by_alias filled here), {family: [records not
        mapped]}, {family: [profiled op types of that family]}).
    """
    alias = alias or {}
    by_name = {r["name"]: r for r in recs if r["macs"]}
    used, macs, prec = set(), defaultdict(int), defaultdict(lambda: {"int8": 0, "fp32": 0})
    how = {"by_name": 0, "by_alias": 0, "by_family": 0, "unplaced": 0}

    def take(name, op, key):
        used.add(name)
        r = by_name[name]
        macs[op] += r["macs"]
        prec[op][r["precision"]] += r["macs"]
        how[key] += r["macs"]

    matched = set()
    for node, op in nodes.items():
        if op in FAMILY_OF:
            c = next((c for c in _candidates(node) if c in by_name and c not in used), None)
            if c is not None:
                take(c, op, "by_name")
                matched.add(node)
    for node, op in nodes.items():
        # only nodes that did the work: a conv/matmul renamed by a fusion, or an OpenVINO Subgraph
        # (a Relu the engine ran on its own is named after itself and must not take its conv's MACs)
        if node not in matched and (op in FAMILY_OF or op in OPAQUE_FUSIONS):
            c = next((alias[c] for c in _candidates(node) if alias.get(c) in by_name and alias[c] not in used), None)
            if c is not None:
                take(c, op, "by_alias")
    left = defaultdict(list)
    for name, r in by_name.items():
        if name not in used:
            left[FAMILY_OF.get(r["op_type"], "matmul")].append(r)
    ops_of = defaultdict(list)
    for op in set(nodes.values()):
        if op in FAMILY_OF:
            ops_of[FAMILY_OF[op]].append(op)
    return macs, prec, how, left, ops_of


def summarize(prof: dict, recs: list[dict], alias: dict | None = None) -> dict:
    """Median per-op-type figures over the profiled runs (see module docstring)."""
    runs = prof["runs"]
    per_op = defaultdict(list)
    for r in runs:
        d = defaultdict(float)
        for op, ms in r.values():
            d[op] += ms
        for op in {op for r2 in runs for op, _ in r2.values()}:
            per_op[op].append(d.get(op, 0.0))
    med = {op: float(np.median(v)) for op, v in per_op.items()}
    total = sum(med.values())
    count = defaultdict(int)
    for op, _ in runs[0].values():
        count[op] += 1
    nodes = {n: op for n, (op, _) in runs[0].items()}
    macs, prec, how, left, ops_of = attribute_macs(nodes, recs, alias)
    for fam, rs in left.items():  # renamed or fused nodes: the family's busiest op type gets them
        cands = ops_of.get(fam) or ops_of.get("matmul") or ops_of.get("conv") or []
        m = sum(r["macs"] for r in rs)
        if not cands:
            how["unplaced"] += m
            continue
        op = max(cands, key=lambda o: med.get(o, 0.0))
        macs[op] += m
        for r in rs:
            prec[op][r["precision"]] += r["macs"]
        how["by_family"] += m
    ops = []
    for op in sorted(med, key=med.get, reverse=True):
        ms = med[op]
        row = {"op_type": op, "ms": ms, "share": ms / total if total else 0.0, "count": count.get(op, 0),
               "macs": int(macs.get(op, 0)), "data_movement": is_data_movement(op)}
        if prof.get("exec_types", {}).get(op):  # OpenVINO: the kernels that ran (their names say I8 or f32)
            row["kernels"] = prof["exec_types"][op]
        if row["macs"]:
            row["gops_s"] = 2 * row["macs"] / (ms / 1e3) / 1e9 if ms > 0 else None
            row["macs_int8"], row["macs_fp32"] = prec[op]["int8"], prec[op]["fp32"]
        ops.append(row)
    dm = [o for o in ops if o["data_movement"]]
    s = macs_summary(recs)
    return {"node_ms": total, "wall_ms": float(np.median(prof["wall_ms"])), "ops": ops,
            "data_movement": {"ms": sum(o["ms"] for o in dm), "share": sum(o["share"] for o in dm),
                              "op_types": [o["op_type"] for o in dm]},
            "macs": {"fp32": s["fp32_macs"], "int8": s["int8_macs"], "unknown_nodes": s["unknown"],
                     "attributed": how},
            **{k: prof[k] for k in ("optimized_ops", "exec_types") if k in prof}}


def lower_bound(res: dict, peaks: dict | None) -> dict | None:
    """The graph's MACs at the measured peaks: ms it cannot beat, and the share of that in its node time."""
    if not peaks:
        return None
    from edgefss.benchmark.machine import reference_peak

    p32, p8 = reference_peak(peaks, "fp32"), reference_peak(peaks, "int8")
    if p32 is None:
        return None
    m = res["macs"]
    ms = mixed_ideal_ms(m["fp32"], m["int8"], p32[1], p8[1] if p8 else None)
    return {"ms": ms, "pct_of_node_time": 100 * ms / res["node_ms"] if res["node_ms"] else None,
            "fp32_peak": list(p32), "int8_peak": list(p8) if p8 else None, "threads": peaks.get("threads")}


def profile_one(bundle: Path, manifest: dict, graph: str, backend: str, threads: int, repeats: int) -> dict:
    info = manifest["graphs"][graph]
    path = bundle / info["file"]
    feeds = graph_feeds(manifest, graph)
    if backend == "onnxruntime":
        if path.suffix != ".onnx":
            raise SystemExit(f"profile_graph: {path} is not an ONNX graph; --backend onnxruntime needs an "
                             "onnxruntime bundle (this one is for {manifest.get('backend')})")
        prof = profile_ort(path, feeds, threads, repeats, desc=f"{graph} onnxruntime")
        recs = graph_macs(path, {k: list(v.shape) for k, v in feeds.items()})
        alias = onnx_aliases(path, {r["name"] for r in recs if r["macs"]})
        src = "flops.graph_macs on the bundle's ONNX graph"
    else:
        import openvino as ov

        prof = profile_openvino(path, feeds, threads, repeats, manifest.get("engine_config"),
                                desc=f"{graph} openvino")
        model = ov.Core().read_model(str(path))
        model.reshape({p.get_any_name(): ov.PartialShape(list(feeds[p.get_any_name()].shape))
                       for p in model.inputs if p.get_any_name() in feeds})
        recs = ov_model_macs(model)
        alias = ov_aliases(model, {r["name"] for r in recs if r["macs"]})
        src = "flops.ov_model_macs on the graph OpenVINO read"
    res = summarize(prof, recs, alias)
    res["macs"]["source"] = src
    res["file"] = str(path)
    return res


def print_graph(graph: str, backend: str, r: dict, top: int) -> None:
    m = r["macs"]
    print(f"\n{graph} on {backend}: node time {r['node_ms']:.1f} ms/run (wall {r['wall_ms']:.1f}); "
          f"MACs {m['fp32'] / 1e9:.2f} G fp32 + {m['int8'] / 1e9:.2f} G int8")
    print(f"  {'op type':28s} {'ms':>9s} {'share':>7s} {'count':>6s} {'GMACs':>8s} {'G ops/s':>8s}")
    for o in r["ops"][:top]:
        g = f"{o['gops_s']:.1f}" if o.get("gops_s") else "-"
        mac = f"{o['macs'] / 1e9:.2f}" if o["macs"] else "-"
        print(f"  {o['op_type']:28s} {o['ms']:9.2f} {100 * o['share']:6.1f}% {o['count']:6d} {mac:>8s} {g:>8s}")
    dm = r["data_movement"]
    print(f"  data movement ({'/'.join(dm['op_types']) or 'none'}): {dm['ms']:.1f} ms = {100 * dm['share']:.1f} %")
    a = m["attributed"]
    if a["by_alias"] or a["by_family"] or a["unplaced"]:
        print(f"  note: MACs mapped by node name {a['by_name'] / 1e9:.2f} G; through the op the engine fused and "
              f"named the node after {a['by_alias'] / 1e9:.2f} G; by op family only (the busiest op type of the "
              f"family) {a['by_family'] / 1e9:.2f} G; not placed {a['unplaced'] / 1e9:.2f} G")
    if m["unknown_nodes"]:
        print(f"  note: {len(m['unknown_nodes'])} nodes without inferable shapes are not counted")
    lb = r.get("lower_bound")
    if lb:
        print(f"  compute lower bound at the peaks ({lb['fp32_peak'][1]:.0f} fp32"
              + (f" / {lb['int8_peak'][1]:.0f} int8" if lb["int8_peak"] else "")
              + f" G ops/s): {lb['ms']:.1f} ms = {lb['pct_of_node_time']:.0f} % of the node time")


def write_chart(path: Path, graph: str, backend: str, r: dict, top: int):
    """A horizontal bar per op type (ms), labelled with share and G ops/s. (path | None, why)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "matplotlib is not installed (pip install matplotlib)"
    ops = r["ops"][:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ops) + 1.2))
    ax.barh([o["op_type"] for o in ops], [o["ms"] for o in ops],
            color=["tab:orange" if o["data_movement"] else "tab:blue" for o in ops])
    for i, o in enumerate(ops):
        lab = f" {100 * o['share']:.1f} %" + (f", {o['gops_s']:.0f} G ops/s" if o.get("gops_s") else "")
        ax.text(o["ms"], i, lab, va="center", fontsize=8)
    ax.set_xlabel("ms per run (median); orange = data movement")
    ax.set_title(f"{graph} on {backend}: {r['node_ms']:.0f} ms node time", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path, None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="an edgefss bundle directory")
    ap.add_argument("--graph", default="all", help="a graph of the bundle (encoder, head, learner, ...) or all")
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=12, help="op types printed and charted")
    ap.add_argument("--peaks", default=None, help="a latency.json whose machine.peaks give the compute lower bound")
    ap.add_argument("--out", default="runs/profile_graph")
    a = ap.parse_args(argv)
    if a.repeats < 1 or a.threads < 1:
        raise SystemExit("profile_graph: --repeats and --threads must be >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    bundle = Path(a.bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"profile_graph: {bundle} is not an edgefss bundle (manifest.json: {exc})")
    graphs = list(manifest.get("graphs", {})) if a.graph == "all" else [a.graph]
    bad = [g for g in graphs if g not in manifest.get("graphs", {})]
    if bad:
        raise SystemExit(f"profile_graph: --graph {bad[0]!r} is not in {bundle} (graphs: "
                         f"{sorted(manifest.get('graphs', {}))})")
    peaks = None
    if a.peaks:
        try:
            peaks = json.loads(Path(a.peaks).read_text())["machine"]["peaks"]
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"profile_graph: --peaks {a.peaks}: no machine.peaks in it ({exc})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"bundle": str(bundle), "model": manifest.get("model"), "precision": manifest.get("precision"),
           "backend": a.backend, "threads": a.threads, "repeats": a.repeats, "load_start": list(os.getloadavg()),
           "command": "python bench/profile_graph.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "graphs": {}}
    for g in graphs:
        r = profile_one(bundle, manifest, g, a.backend, a.threads, a.repeats)
        r["lower_bound"] = lower_bound(r, peaks)
        res["graphs"][g] = r
        print_graph(g, a.backend, r, a.top)
        png, why = write_chart(out / f"profile_{g}.png", g, a.backend, r, a.top)
        r["chart"] = str(png) if png else f"skipped: {why}"
        if why:
            print(f"  note: no chart ({why})")
    res["load_end"] = list(os.getloadavg())
    print(f"\nload average at start {res['load_start'][0]:.1f}, at end {res['load_end'][0]:.1f} "
          f"({os.cpu_count()} CPUs): figures under load; compare shares and G ops/s, not absolute ms")
    tmp = out / "profile.json.tmp"
    tmp.write_text(json.dumps(res, indent=1, default=float))
    os.replace(tmp, out / "profile.json")
    print(f"wrote {out / 'profile.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
