"""CST graph glue (design.md "CST encoder/head" I/O names).

Support entry: `support_feats` (12, 384, 1+s*s) and `support_mask` (S, S) at the network input
size, as the official model takes it (the head graph resizes it to its token grids) — the caller's
mask, or without one the official pseudo-mask (models-spec §3.3): the encoder's `pseudo_prob`
(S/8 x S/8) upsampled to S x S (bilinear, align_corners=True) and thresholded (manifest
"pseudo_mask.threshold", edgefss.config.CST_PSEUDO_THRESHOLD). Query entry: `query_feats`
(1, 12, 384, T). Outputs: `seg_logits`, `cls_logits`.

Two ways to run the head (`Segmenter.load(ops=...)`, resolved in runtime/hotpath.py):
- "graph": the bundle's `head` graph (correlation + correlation transformer in one graph);
- "native" / "reference": the head-wise cosine correlation in `edgefss.ops.cosine_correlation`
  (compiled kernel / NumPy reference), then the bundle's `learner` graph (the head without the
  correlation). `correlation` below reproduces `edgefss.models.cst.CST.correlation` exactly.

Refinement is IMR-style mutual refinement of the support masks (runtime/refine.py).
"""

from __future__ import annotations

import time

import numpy as np

from edgefss.runtime.adapters import Adapter
from edgefss.transforms import resize_prob

# = edgefss.models.dino_vit.HEADS and edgefss.models.cst.CORR_EPS (tests/test_runtime_ops_path.py
# checks both): the runtime cannot import the torch-side modules.
CORR_HEADS = 6
CORR_EPS = 1e-12


def correlation(query_feats: np.ndarray, support_feats: np.ndarray, impl: str) -> np.ndarray:
    """CST head-wise cosine correlation, the `corr` input of the learner graph.

    corr[b, h*L + l, i, j] = cos(q[l, head h channels, i], s[b, l, head h channels, j]) with the
    norm convention x / (||x|| + 1e-12) of the model.

    Args:
        query_feats: (1, L=12, C=384, T) float32 (float16 accepted), shared by every support.
        support_feats: (B, L, C, Ns) float32.
        impl: "native" (compiled kernel) or "reference" (NumPy, float64 accumulation).

    Returns:
        (B, 6*L, T, Ns) float32, channels head-major (h*L + l) as the learner expects.
    """
    from edgefss.ops import cosine_correlation

    B, L, C, Ns = support_feats.shape
    T = query_feats.shape[-1]
    c = C // CORR_HEADS
    # (…, L, heads*c, N) -> (…, heads, L, c, N) with heads=1 in the op: the op's output then comes
    # out already head-major, (B, heads, L, 1, T, Ns), and reshapes to (B, 72, T, Ns) without a copy
    q = np.ascontiguousarray(
        query_feats.reshape(L, CORR_HEADS, c, T).transpose(1, 0, 2, 3), dtype=np.float32)
    s = np.ascontiguousarray(
        support_feats.reshape(B, L, CORR_HEADS, c, Ns).transpose(0, 2, 1, 3, 4), dtype=np.float32)
    q = np.broadcast_to(q, (B, *q.shape))
    corr = cosine_correlation(q, s, heads=1, eps=CORR_EPS, impl=impl)
    return corr.reshape(B, CORR_HEADS * L, T, Ns)


def support_pseudo_mask(pseudo_prob: np.ndarray, size: int, threshold: float) -> np.ndarray:
    """Official CST support pseudo-mask from the encoder's map (models-spec §3.3).

    Args:
        pseudo_prob: (S/8, S/8) float32 encoder output, (head-mean key/CLS-query cosine + 1) / 2.
        size: network input size S.
        threshold: the bundle's pseudo-mask threshold.
    Returns:
        (S, S) float32 {0,1}: upsample (bilinear, align_corners=True) to S x S, then > threshold.
    """
    return (resize_prob(pseudo_prob, (size, size)) > threshold).astype(np.float32)


class CSTAdapter(Adapter):
    model = "cst"
    supports_refine = True
    refine_mode = "mutual"

    def __init__(self, manifest: dict, bundle_dir):
        super().__init__(manifest, bundle_dir)
        self.require_io("encoder", "outputs", ["query_feats", "support_feats", "pseudo_prob"])
        self.require_io("head", "inputs", ["query_feats", "support_feats", "support_mask"])
        self.require_io("head", "outputs", ["cls_logits", "seg_logits"])
        if "learner" in manifest["graphs"]:
            self.require_io("learner", "inputs", ["corr", "support_mask"])
            self.require_io("learner", "outputs", ["cls_logits", "seg_logits"])

    def has_split_head(self) -> bool:
        return "learner" in self.manifest["graphs"]

    def support_entry(self, enc: dict, mask, class_name: str) -> dict:
        if mask is None:
            mask = support_pseudo_mask(enc["pseudo_prob"][0], self.S, self.pseudo_threshold)
        # a given mask is already (S, S) {0,1}: the head resizes it to its token grids itself
        return {"support_feats": enc["support_feats"][0], "support_mask": np.asarray(mask, np.float32)}

    def query_entry(self, enc: dict) -> dict:
        return {"query_feats": enc["query_feats"]}

    def run_head(self, backend, feeds: dict, timings: dict | None = None) -> dict:
        if self.ops_path == "graph":
            return backend.run("head", feeds)
        t = time.perf_counter()
        corr = correlation(feeds["query_feats"], feeds["support_feats"], self.ops_path)
        if timings is not None:
            timings["corr"] = timings.get("corr", 0.0) + (time.perf_counter() - t) * 1e3
        return backend.run("learner", {"corr": corr, "support_mask": feeds["support_mask"]})

    def split_outputs(self, out: dict):
        return out["seg_logits"], out["cls_logits"]
