"""Export self-check: backend outputs vs PyTorch on real images, per output, relative to its scale.

Tolerance (per output): max |backend - torch| <= max(FP32_RTOL * max |torch|, FP32_ATOL_FLOOR).
float32 rounds at 2^-24 ~ 6e-8; two correct implementations of a graph a few hundred ops deep,
summing in different orders, differ by ~1e-7..1e-5 of the output's scale. FP32_RTOL = 1e-4 keeps
a 10x margin over that while a real export defect (a wrong op, constant or layout) shows up at
1e-2 or more. A fixed absolute tolerance instead refuses correct graphs whose outputs are large
(trained CST logits of order 1-6) and is loose on small ones. The floor covers outputs that are
(nearly) all zero, where a relative bound is meaningless.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from edgefss.errors import StateError, require
from edgefss.exporters.graphs import GraphDef, ModelGraphs
from edgefss.quant.feeds import FeedBuilder
from edgefss.quant.pipeline import load_episode

FP32_RTOL = 1e-4
FP32_ATOL_FLOOR = 1e-6


class TorchGraphs:
    """The PyTorch wrappers behind the `Backend` protocol: run(graph, feeds) -> outputs (float32)."""

    name = "torch"

    def __init__(self, mg: ModelGraphs):
        self.graphs = mg.graphs

    def run(self, graph: str, feeds: dict) -> dict:
        return torch_runner(self.graphs[graph])(feeds)


def torch_runner(g: GraphDef):
    """fn({name: float32 array}) -> {output name: float32 array} running the PyTorch wrapper."""
    torch = require("torch", "export verification")

    def run(feeds: dict) -> dict:
        with torch.no_grad():
            out = g.module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in g.inputs])
        if torch.is_tensor(out):
            out = (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(g.outputs, out)}

    return run


def _update(stats: dict, graph: str, ref: dict, got: dict) -> None:
    for k, v in ref.items():
        if got[k].shape != v.shape:
            raise StateError(f"verification: {graph}.{k} has shape {got[k].shape}, PyTorch gives {v.shape}")
        err = float(np.max(np.abs(got[k].astype(np.float64) - v))) if v.size else 0.0
        scale = float(np.max(np.abs(v))) if v.size else 0.0
        e, s = stats.get(f"{graph}.{k}", (0.0, 0.0))
        stats[f"{graph}.{k}"] = (max(e, err), max(s, scale))


def tolerance(scale: float, rtol: float = FP32_RTOL, floor: float = FP32_ATOL_FLOOR) -> float:
    """The allowed max-abs error of an output whose largest |value| is `scale`."""
    return max(rtol * scale, floor)


def verify_graphs(mg: ModelGraphs, engine, builder: FeedBuilder, episodes: list, rtol: float = FP32_RTOL,
                  label: str = "onnxruntime") -> dict:
    """Compare backend graphs with the PyTorch wrappers.

    Every graph runs on real episodes: head inputs are built from the PyTorch encoder outputs (so
    each graph is measured on its own), the CST learner's correlation volume by the model.

    Args:
        engine: a runtime Backend (edgefss.runtime.session.open_graphs) holding the graphs to check.
        rtol: relative tolerance (module doc); label: names the backend in the report.

    Returns:
        dict(backend, episodes, rtol, atol_floor, outputs {graph.output: {max_abs, scale, tol}},
        max_abs {graph.output: float}, worst (the output closest to its tolerance), passed).
    """
    ref = TorchGraphs(mg)
    stats: dict = {}
    for i, ep in enumerate(tqdm(episodes, desc=f"verify {label} vs PyTorch", unit="episode")):
        data = load_episode(builder, ep)
        images = [data["query"]] + data["supports"]
        enc_ref = [ref.run("encoder", {"image": im}) for im in images]
        for im, r in zip(images, enc_ref):
            _update(stats, "encoder", r, engine.run("encoder", {"image": im}))
        hf = builder.head_feeds(enc_ref[0], enc_ref[1:], data["s_masks"], data["cls"], data["q_mask"],
                                use_given=(i % 2 == 0))
        _update(stats, "head", ref.run("head", hf), engine.run("head", hf))
        for name in mg.graphs:
            if name not in ("encoder", "head") and mg.extra_feeds is not None:
                xf = mg.extra_feeds(name, hf)
                _update(stats, name, ref.run(name, xf), engine.run(name, xf))
    outputs = {k: {"max_abs": float(f"{e:.3g}"), "scale": float(f"{s:.3g}"), "tol": float(f"{tolerance(s, rtol):.3g}")}
               for k, (e, s) in stats.items()}
    worst = max(stats, key=lambda k: stats[k][0] / tolerance(stats[k][1], rtol)) if stats else None
    return {"backend": label, "episodes": len(episodes), "rtol": rtol, "atol_floor": FP32_ATOL_FLOOR,
            "outputs": outputs, "max_abs": {k: v["max_abs"] for k, v in outputs.items()}, "worst": worst,
            "passed": all(e <= tolerance(s, rtol) for e, s in stats.values())}


def failure_line(v: dict) -> str:
    """One line naming the worst output of a failed verification."""
    w = v["outputs"][v["worst"]]
    return (f"{v['backend']} verification failed: {v['worst']} max-abs {w['max_abs']:g} > {w['tol']:g} "
            f"(= max({v['rtol']:g} x scale {w['scale']:g}, {v['atol_floor']:g})); bundle not written")


def format_verification(v: dict) -> str:
    lines = [f"verification {v['backend']} vs PyTorch on {v['episodes']} real episodes (per output: max-abs "
             f"<= max({v['rtol']:g} x max|ref|, {v['atol_floor']:g})): {'PASS' if v['passed'] else 'FAIL'}"]
    lines += [f"  {k:<32s} max-abs {o['max_abs']:<9.3g} scale {o['scale']:<9.3g} tol {o['tol']:.3g}"
              + ("" if o["max_abs"] <= o["tol"] else "  FAIL") for k, o in v["outputs"].items()]
    return "\n".join(lines)
