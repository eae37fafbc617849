"""Trace-friendly wrappers that split CST into its exported graphs (design.md "CST graph I/O").

- `CSTEncoderGraph`: `image` (1,3,S,S) -> `query_feats` (1,12,384,T), `support_feats`
  (1,12,384,1+s*s), `pseudo_prob` (1,S/8,S/8) = (head-mean key/CLS-query cosine + 1) / 2.
- `CSTHeadGraph`: `query_feats` (1,…), `support_feats` (B,…), `support_mask` (B,S,S) ->
  `cls_logits` (B,2), `seg_logits` (B,2,S/4,S/4).
- `CSTLearnerGraph`: `corr` (B,72,T,1+s*s), `support_mask` -> the same outputs (the head without
  the correlation, for runtimes with a native correlation op).

The support mask is taken at the input size S x S, as the official model takes it: the graph
resizes it to the 12 x 12 and 3 x 3 token grids itself (bilinear, align_corners=True, key masked
where exactly 0). The runtime makes the weak-path mask from `pseudo_prob` the official way
(upsample to S x S, align_corners=True, then threshold; runtime/cst.py `support_pseudo_mask`).

The support batch B (= N ways x K shots) is the only dynamic axis. The encoder's interpolated
position embedding is computed in eager when the wrapper is built, so the exported encoder holds
it as a constant and has no Resize node.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from edgefss.errors import InputError
from edgefss.exporters.cst_forms import OFFICIAL, cst_learner_export
from edgefss.models.cst import CST
from edgefss.models.dino_vit import DEPTH, EMBED_DIM, HEADS

_B = {0: "B"}

CST_IO = {
    "encoder": (["image"], ["query_feats", "support_feats", "pseudo_prob"], {}),
    "head": (
        ["query_feats", "support_feats", "support_mask"],
        ["cls_logits", "seg_logits"],
        {"support_feats": _B, "support_mask": _B, "cls_logits": _B, "seg_logits": _B},
    ),
    "learner": (
        ["corr", "support_mask"],
        ["cls_logits", "seg_logits"],
        {"corr": _B, "support_mask": _B, "cls_logits": _B, "seg_logits": _B},
    ),
}


class CSTEncoderGraph(nn.Module):
    """image (1,3,S,S) float32 -> (query_feats, support_feats, pseudo_prob), see module doc."""

    def __init__(self, model: CST):
        super().__init__()
        self.model = model
        g = model.cfg.grid
        model.backbone.pos_embed_for(g, g)  # warm the cache: a constant in the traced graph

    def forward(self, image: torch.Tensor):
        out = self.model.encode(image)
        return out["query_feats"], out["support_feats"], out["pseudo_prob"]


class CSTHeadGraph(nn.Module):
    """(query_feats (1,12,384,T), support_feats (B,12,384,1+s*s), support_mask (B,S,S)) ->
    (cls_logits (B,2), seg_logits (B,2,S/4,S/4)), all float32."""

    def __init__(self, model: CST):
        super().__init__()
        self.model = model
        self.learner_form = OFFICIAL  # how the attention blocks are written in the export only

    def forward(self, query_feats, support_feats, support_mask):
        with _export_form(self):
            out = self.model.head(query_feats, support_feats, support_mask)
        return out["cls_logits"], out["seg_logits"]


class CSTLearnerGraph(nn.Module):
    """(corr (B,72,T,1+s*s), support_mask (B,S,S)) -> (cls_logits (B,2), seg_logits (B,2,S/4,S/4))."""

    def __init__(self, model: CST):
        super().__init__()
        self.model = model
        self.learner_form = OFFICIAL

    def forward(self, corr, support_mask):
        with _export_form(self):
            out = self.model.learner(corr, support_mask)
        return out["cls_logits"], out["seg_logits"]


def _export_form(wrapper):
    """The wrapper's learner form while an ONNX export traces it; the official order otherwise."""
    if torch.onnx.is_in_onnx_export() and wrapper.learner_form != OFFICIAL:
        return cst_learner_export(wrapper.model, wrapper.learner_form)
    return contextlib.nullcontext()


def cst_example_inputs(model: CST, imgsz: int | None = None, n_support: int = 2, seed: int = 0) -> dict:
    """Random example inputs for tracing/verifying the three graphs, seeded.

    Args:
        imgsz: must equal model.cfg.imgsz (the graphs are static in S); default that.
        n_support: the support batch B used for the head and learner examples.
    Returns:
        {"encoder": (image,), "head": (query_feats, support_feats, support_mask),
         "learner": (corr, support_mask)}: float32 tensors; each (S,S) mask is one random {0,1}
        rectangle, so the graphs' masking path is exercised (zeros survive the resize).
    """
    S = imgsz or model.cfg.imgsz
    if S != model.cfg.imgsz:
        raise InputError(f"cst_example_inputs: imgsz {S} differs from the model's imgsz {model.cfg.imgsz}")
    g, s = model.cfg.grid, model.cfg.support_grid
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, S, S, generator=gen)
    qf = torch.randn(1, DEPTH, EMBED_DIM, g * g, generator=gen)
    sf = torch.randn(n_support, DEPTH, EMBED_DIM, 1 + s * s, generator=gen)
    mask = torch.zeros(n_support, S, S)
    for b in range(n_support):
        r0, c0 = torch.randint(0, S // 2, (2,), generator=gen).tolist()
        r1, c1 = torch.randint(S // 2 + 1, S + 1, (2,), generator=gen).tolist()
        mask[b, r0:r1, c0:c1] = 1.0
    corr = torch.rand(n_support, HEADS * DEPTH, g * g, 1 + s * s, generator=gen) * 2 - 1
    return {"encoder": (image,), "head": (qf, sf, mask), "learner": (corr, mask)}
