"""Trace-friendly wrappers that split TLG into the two exported graphs (design.md "TLG graph I/O").

- `TLGEncoderGraph`: `image` (1,3,S,S) -> `feat_00` … `feat_{L-1}` (the frozen backbone pyramid).
- `TLGHeadGraph`: query/support features, three text embeddings, the two external pseudo-masks
  (B,1,S,S) and `pseudo_given` -> `query_logits`, `support_logits` (B,2,S/4,S/4), `query_prior`
  (B,1,S,S).

Pseudo-masks travel at the input resolution S, as the released forward takes them ((B,400,400));
the head resamples them to S/4 exactly as that code does (models/tlg.py `fuse_pseudo`). The
on-device prior is produced at SxS too, so the blend below and the resampling are the same for both.

`pseudo_given` is a blend weight instead of an `if`: mask = given*external + (1-given)*prior, so
one graph serves both "caller supplies masks" and "use the on-device prior" without control flow.
The support batch B (= N ways x K shots) is the only dynamic axis.

The head's 4D convolutions export in the form `TLGHeadGraph.conv4d_form` names (set per backend and
precision by the export, exporters/conv4d_forms.py); run in torch, the head stays eager.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from edgefss.errors import InputError
from edgefss.exporters.conv4d_forms import conv4d_export
from edgefss.models.hsnet import EAGER_FORM
from edgefss.models.tlg import TEXT_DIM, TEXT_KEYS, TLG


def _feat_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}feat_{i:02d}" for i in range(n)]


def _io(L: int) -> dict:
    head_in = (
        _feat_names("query_", L)
        + _feat_names("support_", L)
        + ["text_support", "text_query_fg", "text_query_bg", "query_pseudo", "support_pseudo", "pseudo_given"]
    )
    head_out = ["query_logits", "support_logits", "query_prior"]
    # the query features keep batch 1 (one query per episode); everything else carries B
    dyn = {n: {0: "B"} for n in head_in + head_out if not n.startswith("query_feat")}
    return {
        "encoder": {"inputs": ["image"], "outputs": _feat_names("", L), "dynamic_axes": {}},
        "head": {"inputs": head_in, "outputs": head_out, "dynamic_axes": dyn},
    }


def tlg_io(model: TLG) -> dict:
    """Graph I/O names and dynamic axes for `model` (L = 13 ResNet-50, 7 VGG16).

    Returns:
        {"encoder": {"inputs", "outputs", "dynamic_axes"}, "head": {...}}.
    """
    return _io(model.backbone.n_feats)


# ResNet-50 TLG (the default model); `tlg_io(model)` gives the VGG16 variant's names.
TLG_IO = _io(13)


class TLGEncoderGraph(nn.Module):
    """image (1,3,S,S) float32 -> tuple of L feature maps (1,C_l,H_l,W_l) float32."""

    def __init__(self, model: TLG):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return tuple(self.model.encode(image))


class TLGHeadGraph(nn.Module):
    """TLG head with the on-device prior, inputs in `tlg_io(model)["head"]["inputs"]` order.

    Args (forward, positional): L query feats (1,…), L support feats (B,…), text_support,
        text_query_fg, text_query_bg (B,512), query_pseudo, support_pseudo (B,1,S,S) in [0,1],
        pseudo_given (B,1,1,1) float32 in {0,1}.
    Returns:
        (query_logits (B,2,S/4,S/4), support_logits (B,2,S/4,S/4), query_prior (B,1,S,S)).
    """

    def __init__(self, model: TLG):
        super().__init__()
        self.model = model
        self.L = model.backbone.n_feats
        self.conv4d_form = EAGER_FORM  # how the 4D convs are written in the exported graph only

    def forward(self, *args):
        exporting = torch.onnx.is_in_onnx_export() and self.conv4d_form != EAGER_FORM
        with conv4d_export(self.model, self.conv4d_form) if exporting else contextlib.nullcontext():
            return self._forward(*args)

    def _forward(self, *args):
        L = self.L
        qf, sf = list(args[:L]), list(args[L:2 * L])
        t_s, t_fg, t_bg, q_ext, s_ext, given = args[2 * L:]
        q_prior, s_prior = self.model.prior(qf, sf)
        q_mask = given * q_ext + (1.0 - given) * q_prior
        s_mask = given * s_ext + (1.0 - given) * s_prior
        text = dict(zip(TEXT_KEYS, (t_s, t_fg, t_bg)))
        out = self.model.head(qf, sf, text, q_mask, s_mask)
        return out["query_logits"], out["support_logits"], q_prior


def tlg_example_inputs(model: TLG, imgsz: int | None = None, n_support: int = 1, seed: int = 0) -> dict:
    """Seeded example inputs for both graphs, keyed by graph input name.

    Args:
        imgsz: must equal model.cfg.imgsz (default); n_support: the support batch B.

    Returns:
        {"encoder": {"image": (1,3,S,S)}, "head": {name: tensor}} float32 tensors; the features
        come from running the model's encoder on random images, text is random L2-normalised,
        pseudo-masks (B,1,S,S) random in [0,1], pseudo_given alternates 1,0,… over B.
    """
    S = model.cfg.imgsz if imgsz is None else imgsz
    if S != model.cfg.imgsz:
        raise InputError(f"tlg_example_inputs: imgsz {S} differs from the model's imgsz {model.cfg.imgsz}")
    g = torch.Generator().manual_seed(seed)
    B = n_support
    q_img = torch.randn(1, 3, S, S, generator=g)
    s_img = torch.randn(B, 3, S, S, generator=g)
    io = tlg_io(model)["head"]["inputs"]
    with torch.no_grad():
        feats = list(model.encode(q_img)) + list(model.encode(s_img))
    text = [torch.nn.functional.normalize(torch.randn(B, TEXT_DIM, generator=g), dim=1) for _ in range(3)]
    masks = [torch.rand(B, 1, S, S, generator=g) for _ in range(2)]
    given = (torch.arange(B) % 2 == 0).float().reshape(B, 1, 1, 1)
    return {"encoder": {"image": q_img}, "head": dict(zip(io, feats + text + masks + [given]))}
