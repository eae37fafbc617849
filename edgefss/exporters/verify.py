"""Export self-check: backend outputs vs PyTorch on real images (max-abs per output)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from edgefss.errors import StateError, require
from edgefss.exporters.graphs import GraphDef, ModelGraphs
from edgefss.quant.feeds import FeedBuilder
from edgefss.quant.pipeline import load_episode

FP32_ATOL = 1e-4


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
        stats[f"{graph}.{k}"] = max(stats.get(f"{graph}.{k}", 0.0), err)


def verify_graphs(mg: ModelGraphs, runners: dict, builder: FeedBuilder, episodes: list,
                  atol: float = FP32_ATOL, label: str = "onnxruntime") -> dict:
    """Compare backend graphs with the PyTorch wrappers.

    Every graph runs on real episodes: head inputs are built from the PyTorch encoder outputs (so
    each graph is measured on its own), the CST learner's correlation volume by the model.

    Args:
        runners: {graph name: backend runner}. atol: tolerance on max |backend - torch|.

    Returns:
        dict(backend, episodes, atol, max_abs {graph.output: float}, passed).
    """
    ref = {name: torch_runner(g) for name, g in mg.graphs.items()}
    stats: dict = {}
    for i, ep in enumerate(tqdm(episodes, desc=f"verify {label} vs PyTorch", unit="episode")):
        data = load_episode(builder, ep)
        images = [data["query"]] + data["supports"]
        enc_ref = [ref["encoder"]({"image": im}) for im in images]
        for im, r in zip(images, enc_ref):
            _update(stats, "encoder", r, runners["encoder"]({"image": im}))
        hf = builder.head_feeds(enc_ref[0], enc_ref[1:], data["s_masks"], data["cls"], data["q_mask"],
                                use_given=(i % 2 == 0))
        _update(stats, "head", ref["head"](hf), runners["head"](hf))
        for name in mg.graphs:
            if name not in ("encoder", "head") and name in runners and mg.extra_feeds is not None:
                xf = mg.extra_feeds(name, hf)
                _update(stats, name, ref[name](xf), runners[name](xf))
    worst = max(stats.values()) if stats else 0.0
    return {"backend": label, "episodes": len(episodes), "atol": atol,
            "max_abs": {k: float(f"{v:.3g}") for k, v in stats.items()}, "max_abs_worst": float(f"{worst:.3g}"),
            "passed": bool(worst <= atol)}


def format_verification(v: dict) -> str:
    lines = [f"verification {v['backend']} vs PyTorch on {v['episodes']} real episodes "
             f"(max-abs, tolerance {v['atol']:g}): {'PASS' if v['passed'] else 'FAIL'}"]
    lines += [f"  {k:<32s} {e:.3g}" for k, e in v["max_abs"].items()]
    return "\n".join(lines)
