"""Per-node profiles of a bundle's graphs: random feeds, one profiled engine, time per op type.

Shared by bench/profile_graph.py (any graph, per op type) and bench/profile_tlg_head.py (the TLG
head, per part). Engines: ONNX Runtime session profiling (its `*_kernel_time` node events) and
OpenVINO PERF_COUNT (`get_profiling_info`). Neither imports torch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

# Op types whose cost is moving or re-laying out bytes, not arithmetic (ONNX Runtime and OpenVINO
# names). Quantize/Dequantize are here: they convert, they do no multiply-adds.
DATA_MOVEMENT = frozenset({
    "Transpose", "Reshape", "Slice", "Concat", "Gather", "GatherElements", "GatherND", "Cast", "Squeeze",
    "Unsqueeze", "Expand", "Identity", "Split", "Flatten", "Pad", "Tile", "Shape", "ConstantOfShape",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MemcpyToHost", "MemcpyFromHost",
    "ReorderInput", "ReorderOutput", "Reorder", "Concatenation", "Convert", "StridedSlice", "Broadcast",
    "ShapeOf", "FakeQuantize", "Permute", "VariadicSplit", "Select", "Where", "Range",
})


def is_data_movement(op_type: str) -> bool:
    return op_type in DATA_MOVEMENT or op_type.startswith("Reorder")


def graph_feeds(manifest: dict, graph: str, seed: int = 0, zeros: tuple = ("pseudo_given",)) -> dict:
    """Random inputs of one bundle graph at its manifest shapes (dynamic dims = 1).

    Returns:
        {input name: array}: float inputs uniform [0, 1) float32 (or the manifest's float dtype),
        integer inputs 0/1, bool inputs False; inputs named in `zeros` (flags such as TLG's
        pseudo_given, where 0 selects the default path) are all zeros.
    """
    rng = np.random.default_rng(seed)
    try:
        inputs = manifest["graphs"][graph]["inputs"]
    except KeyError:
        raise ValueError(f"bundle has no graph {graph!r} with inputs (graphs: {sorted(manifest.get('graphs', {}))})") \
            from None
    feeds = {}
    for name, info in inputs.items():
        shape = [d if isinstance(d, int) else 1 for d in info["shape"]]
        dt = np.dtype(info.get("dtype", "float32"))
        if dt.kind == "f":
            x = rng.random(shape, dtype=np.float32).astype(dt, copy=False)
        elif dt.kind == "b":
            x = np.zeros(shape, dt)
        else:
            x = rng.integers(0, 2, shape).astype(dt)
        if name in zeros:
            x[...] = 0
        feeds[name] = x
    return feeds


def _progress(total: int, desc: str):
    """tqdm on a terminal; one line per run otherwise (logs keep readable lines)."""
    import sys

    try:
        from tqdm import tqdm

        if not sys.stderr.isatty():
            raise ImportError
        return tqdm(total=total, desc=desc, leave=False)
    except ImportError:
        class Line:
            n = 0

            def update(self, k=1):
                self.n += k
                print(f"{desc}: run {self.n}/{total}", flush=True)

            def close(self):
                pass

        return Line()


def ort_kernel_runs(events: list[dict]) -> list[dict]:
    """ONNX Runtime profile events -> per model_run {node name: (op type, µs)} (kernel time only)."""
    bounds = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                    if e.get("cat") == "Session" and e.get("name") == "model_run")
    runs = [{} for _ in bounds]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        k = next((i for i, (a, b) in enumerate(bounds) if a <= e["ts"] <= b), None)
        if k is None:
            continue
        name = e["name"][: -len("_kernel_time")]
        op = (e.get("args") or {}).get("op_name", "?")
        prev = runs[k].get(name, (op, 0.0))
        runs[k][name] = (op, prev[1] + e["dur"])
    return runs


def profile_ort(path, feeds: dict, threads: int, repeats: int, desc: str = "onnxruntime") -> dict:
    """Profile `repeats` runs (after one warm-up) of an ONNX graph on ONNX Runtime's CPU provider with
    the runtime's session options. Returns {"runs": [{node: (op type, ms)}], "wall_ms": [...],
    "optimized_ops": {op type: count} of the graph ORT ran}."""
    import onnx
    import onnxruntime as ort

    from edgefss.runtime.backends.ort import session_options

    tmp = tempfile.mkdtemp(prefix="edgefss_prof_")
    so = session_options(ort, threads)
    so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
    so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, "prof")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    ops = defaultdict(int)
    for n in opt.graph.node:
        ops[n.op_type] += 1
    sess.run(None, feeds)  # warm-up: arenas, first-touch of weights (dropped below)
    wall, bar = [], _progress(repeats, desc)
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feeds)
        wall.append((time.perf_counter() - t) * 1e3)
        bar.update(1)
    bar.close()
    prof = Path(sess.end_profiling())
    runs = ort_kernel_runs(json.loads(prof.read_text()))[1:]
    for f in Path(tmp).iterdir():
        f.unlink()
    os.rmdir(tmp)
    return {"runs": [{k: (op, us / 1e3) for k, (op, us) in r.items()} for r in runs], "wall_ms": wall,
            "optimized_ops": dict(ops)}


def profile_openvino(path, feeds: dict, threads: int, repeats: int, config: dict | None = None,
                     desc: str = "openvino") -> dict:
    """Profile `repeats` runs (after one warm-up) of an IR or ONNX graph on OpenVINO CPU with
    PERF_COUNT; layers that did not execute are left out. Same return shape as `profile_ort`
    (op type = OpenVINO's layer type, plus "exec_types": {layer type: sorted kernel names})."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({p.get_any_name(): ov.PartialShape(list(feeds[p.get_any_name()].shape))
                   for p in model.inputs if p.get_any_name() in feeds})
    cfg = dict(config or {}, PERF_COUNT=True, INFERENCE_NUM_THREADS=int(threads))
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    req.infer(feeds)
    runs, wall, kinds, bar = [], [], defaultdict(set), _progress(repeats, desc)
    for _ in range(repeats):
        t = time.perf_counter()
        req.infer(feeds)
        wall.append((time.perf_counter() - t) * 1e3)
        d = {}
        for info in req.get_profiling_info():
            if str(info.status).endswith("NOT_RUN"):
                continue
            ms = info.real_time.total_seconds() * 1e3
            d[info.node_name] = (info.node_type, d.get(info.node_name, (None, 0.0))[1] + ms)
            kinds[info.node_type].add(info.exec_type)
        runs.append(d)
        bar.update(1)
    bar.close()
    return {"runs": runs, "wall_ms": wall, "exec_types": {k: sorted(v) for k, v in kinds.items()}}
