"""Trace-friendly wrappers that split IMR-HSNet into the two exported graphs, stages unrolled.

- encoder: `image` (1,3,S,S) -> `feat_00` … `feat_{L-1}` (the frozen backbone pyramid; the TLG
  encoder wrapper, since both models take HSNet's pyramid from the same backbones).
- head: `query_feat_XX` (1,…), `support_feat_XX` (B,…), `query_pseudo`, `support_pseudo` (B,1,h,h)
  CAM pseudo-masks at the S/8 grid -> `query_logits`, `support_logits` (B,2,S/4,S/4).

The refinement loop has a fixed count (cfg.stages), so tracing unrolls it: the head graph holds
`stages` copies of the 4D learner, GRU update and decoder per branch, sharing one set of weights
(ONNX initialisers are deduplicated by the exporter). There is no on-device pseudo-mask: the CAMs
are inputs (runtime/imr.py). The support batch B is the only dynamic axis.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from edgefss.exporters.conv4d_forms import conv4d_export
from edgefss.exporters.tlg_graphs import TLGEncoderGraph
from edgefss.models.hsnet import EAGER_FORM
from edgefss.models.imr_hsnet import IMRHSNet


def _feat_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}feat_{i:02d}" for i in range(n)]


def imr_io(model: IMRHSNet) -> dict:
    """Graph I/O names and dynamic axes: {"encoder": {...}, "head": {"inputs", "outputs", "dynamic_axes"}}."""
    L = model.backbone.n_feats
    head_in = _feat_names("query_", L) + _feat_names("support_", L) + ["query_pseudo", "support_pseudo"]
    head_out = ["query_logits", "support_logits"]
    dyn = {n: {0: "B"} for n in head_in + head_out if not n.startswith("query_feat")}
    return {"encoder": {"inputs": ["image"], "outputs": _feat_names("", L), "dynamic_axes": {}},
            "head": {"inputs": head_in, "outputs": head_out, "dynamic_axes": dyn}}


IMREncoderGraph = TLGEncoderGraph


class IMRHeadGraph(nn.Module):
    """IMR-HSNet head, inputs in `imr_io(model)["head"]["inputs"]` order.

    Args (forward, positional): L query feats (1,…), L support feats (B,…), query_pseudo,
        support_pseudo (B,1,h,h) float32 in [0,1].
    Returns:
        (query_logits, support_logits) (B,2,S/4,S/4) float32 of the last stage.
    """

    def __init__(self, model: IMRHSNet):
        super().__init__()
        self.model = model
        self.L = model.backbone.n_feats
        self.conv4d_form = EAGER_FORM  # the exported graph's 4D conv form (exporters/conv4d_forms.py)

    def forward(self, *args):
        exporting = torch.onnx.is_in_onnx_export() and self.conv4d_form != EAGER_FORM
        with conv4d_export(self.model, self.conv4d_form) if exporting else contextlib.nullcontext():
            return self._forward(*args)

    def _forward(self, *args):
        L = self.L
        out = self.model.head(list(args[:L]), list(args[L:2 * L]), args[2 * L], args[2 * L + 1])
        return out["query_logits"], out["support_logits"]


def imr_example_inputs(model: IMRHSNet, n_support: int = 1, seed: int = 0) -> dict:
    """Seeded example inputs for both graphs, keyed by graph input name.

    Returns:
        {"encoder": {"image": (1,3,S,S)}, "head": {name: tensor}} float32; the features come from
        the model's encoder on random images, the CAMs (B,1,h,h) are random in [0,1] with a zero
        region (cosine correlation ignores a positive scale, so zeros are what a CAM changes).
    """
    S, h = model.cfg.imgsz, model.grid
    g = torch.Generator().manual_seed(seed)
    B = n_support
    q_img = torch.randn(1, 3, S, S, generator=g)
    s_img = torch.randn(B, 3, S, S, generator=g)
    with torch.no_grad():
        feats = list(model.encode(q_img)) + list(model.encode(s_img))
    cams = []
    for _ in range(2):
        c = torch.rand(B, 1, h, h, generator=g)
        c[..., : h // 3] = 0
        cams.append(c)
    return {"encoder": {"image": q_img}, "head": dict(zip(imr_io(model)["head"]["inputs"], feats + cams))}
