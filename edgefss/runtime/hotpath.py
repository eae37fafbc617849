"""Which implementation runs the correlation on the hot path: `Segmenter.load(ops=...)`.

Values:
- "graph": the bundle's `head` graph, correlation included (works for every bundle).
- "native": `edgefss.ops.cosine_correlation` in the compiled extension, then the `learner` graph
  (CST bundles only; BackendUnavailableError with the reinstall line when edgefss._C is missing).
- "reference": the same split with the NumPy reference correlation (to compare; slow).
- "auto": the faster of "graph" / "native" for the backend, from the measured table AUTO below;
  "graph" whenever the split is unavailable (no learner graph, no extension, TLG) or not the
  gated graph (FP16/INT8 bundles: their `learner` is FP32 while `head` is the quantised,
  accuracy-gated graph).

TLG has no split head: its exporter keeps the hypercorrelation and the Sinkhorn inside `head`
(the figures of what a split would gain are in docs/design.md "Runtime").
"""

from __future__ import annotations

import os

from edgefss.errors import InputError

OPS = ("auto", "graph", "native", "reference")

# The faster CST head path per (backend, device kind), measured on the CST bundle exported at
# S=400 (FP32, random init), 1-shot cached support, 2 threads, interleaved rounds, medians:
#   PYTHONPATH=. python -m edgefss.runtime.measure_ops BUNDLE --threads 2 --repeats 7 (idle machine;
#   an earlier run under load 8.5-13.8 gave graph 1217-1307 vs native 1384-1489 ms on onnxruntime,
#   982-1253 vs 1307-1659 ms on OpenVINO: the same decision)
# The engines' MatMul-based correlation inside the head graph (K = 64 channels per head) costs
# about as much as the native kernel does, and the split hands a ~120 MB volume per support from
# NumPy to the learner graph, so the head graph wins on both CPU engines (AUTO_FIGURES). Part of
# the native path's cost is thread contention: onnxruntime's pool spins after each run while the
# OpenMP kernel starts (corr 116 ms; 68 ms in a one-off run with session.intra_op.allow_spinning=0
# patched into the onnxruntime backend, onnxruntime only), yet even then
# the native head was slower (293 vs 270 ms), so nothing was changed there.
# GPU devices were not measured (no GPU here): they keep the correlation inside the graph, on the
# device, which also avoids copying the volume host -> device.
AUTO = {
    ("onnxruntime", "cpu"): "graph",
    ("openvino", "cpu"): "graph",
}
# median head milliseconds (graph; native incl. its correlation) of that idle run, and its load average
AUTO_FIGURES = {
    ("onnxruntime", "cpu"): dict(graph_head_ms=278, native_head_ms=324, native_corr_ms=112, load1=1.9),
    ("openvino", "cpu"): dict(graph_head_ms=283, native_head_ms=346, native_corr_ms=85, load1=1.9),
}


def _device_kind(backend) -> str:
    dev = str(getattr(backend, "device", "cpu") or "cpu").lower()
    return "cpu" if dev == "cpu" else "gpu"


def auto_choice(backend_name: str, device_kind: str) -> str:
    """'graph' or 'native': the measured faster CST head path for this backend and device kind."""
    return AUTO.get((backend_name, device_kind), "graph")


def check_ops(ops) -> str:
    """InputError unless `ops` is one of OPS."""
    if ops not in OPS:
        raise InputError(f"ops: {ops!r} is not a hot-path choice; expected one of {list(OPS)}")
    return ops


def requested_graphs(ops: str, adapter) -> tuple:
    """The graphs the backend must open for `ops` (the learner only when it may be used)."""
    if ops == "graph" or not adapter.has_split_head():
        return ("encoder", "head")
    if ops == "auto" and ("native" not in AUTO.values() or adapter.manifest.get("precision") != "fp32"):
        return ("encoder", "head")  # auto cannot pick the split here: don't load a graph it never runs
    return ("encoder", "head", "learner")


def resolve_ops(ops: str, adapter, manifest: dict, backend, bundle_dir) -> str:
    """The path that will run: "graph", "native" or "reference".

    Raises:
        InputError: "native"/"reference" for a bundle without a learner graph.
        BackendUnavailableError: "native" without the compiled extension (the ops module's
            message, with its reinstall line).
    """
    from edgefss import ops as edge_ops

    check_ops(ops)
    if ops == "graph":
        return "graph"
    split = adapter.has_split_head()
    if ops in ("native", "reference"):
        if not split:
            raise InputError(
                f"ops: {ops!r} needs a bundle with a 'learner' graph (the CST head without its "
                f"correlation); '{bundle_dir}' ({manifest.get('model')}) has graphs "
                f"{sorted(manifest['graphs'])}. Use ops='graph' or 'auto'"
            )
        if ops == "native":
            edge_ops.native_module(required=True)  # BackendUnavailableError with the reinstall line
        return ops
    if not split or manifest.get("precision") != "fp32" or not edge_ops.has_native():
        return "graph"
    choice = auto_choice(backend.name, _device_kind(backend))
    if choice == "native" and os.environ.get("EDGEFSS_FORCE_REFERENCE", "0") == "1":
        return "reference"  # the ops module's documented switch to force the NumPy path
    return choice

