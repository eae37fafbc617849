"""Which torch modules become which graphs, per model (the exporters' model adapter).

`load_graphs(kind, checkpoint, imgsz)` returns a `ModelGraphs`: the model, the graph wrappers
with their fixed I/O names (design.md "Graph I/O names") and seeded example inputs. Wrappers
live in `tlg_graphs.py` / `cst_graphs.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from edgefss.config import CST_PSEUDO_THRESHOLD
from edgefss.errors import InputError
from edgefss.exporters.fused_attention import PLAIN
from edgefss.exporters.stable_norm import F64_STATS

MODEL_VARIANT = {"tlg": "resnet50", "cst": "vit_small_patch8", "imr_hsnet": "resnet50"}


@dataclass
class GraphDef:
    """One exported graph: a torch module and its ONNX I/O contract."""

    module: object  # torch.nn.Module
    inputs: list
    outputs: list
    dynamic_axes: dict = field(default_factory=dict)
    attention: str = PLAIN  # how ViT attention inside `module` is emitted (fused_attention.py)
    norm: str = F64_STATS  # how GroupNorm statistics are emitted (stable_norm.py; TensorRT: plain)


@dataclass
class ModelGraphs:
    """A model split into graphs.

    Attributes:
        kind: 'tlg' | 'cst'; variant: backbone name; imgsz: S.
        graphs: {'encoder': GraphDef, 'head': GraphDef[, 'learner': GraphDef]} in export order.
        example_inputs: fn(n_support) -> {graph: {input name: tensor}}.
        random_init: True when no checkpoint was loaded.
        pseudo_mask: manifest "pseudo_mask" entry.
    """

    kind: str
    variant: str
    imgsz: int
    model: object
    graphs: dict
    example_inputs: Callable
    random_init: bool
    pseudo_mask: dict
    extra_feeds: Callable | None = None  # fn(graph, head feeds {name: array}) -> feeds of another graph


def _io_triplet(entry):
    # TLG_IO uses {"inputs","outputs","dynamic_axes"}; a (inputs, outputs, dynamic_axes) tuple is also accepted
    if isinstance(entry, dict):
        return list(entry["inputs"]), list(entry["outputs"]), dict(entry.get("dynamic_axes") or {})
    ins, outs, dyn = entry
    return list(ins), list(outs), dict(dyn or {})


def _tlg(checkpoint, imgsz, backbone_checkpoint=None) -> ModelGraphs:
    from edgefss.exporters.tlg_graphs import TLGEncoderGraph, TLGHeadGraph, tlg_example_inputs, tlg_io
    from edgefss.models import tlg as tlg_mod

    model = tlg_mod.tlg_resnet50(checkpoint=checkpoint, backbone_checkpoint=backbone_checkpoint,
                                 imgsz=imgsz).eval()
    io = tlg_io(model)
    graphs = {
        "encoder": GraphDef(TLGEncoderGraph(model).eval(), *_io_triplet(io["encoder"])),
        "head": GraphDef(TLGHeadGraph(model).eval(), *_io_triplet(io["head"])),
    }
    return ModelGraphs(
        "tlg", "resnet50", imgsz, model, graphs,
        lambda n_support=1: tlg_example_inputs(model, imgsz, n_support=n_support),
        checkpoint is None,
        {"threshold": None, "generator": "on-device prior (head output query_prior) blended in when pseudo_given=0"},
    )


def _cst(checkpoint, imgsz, attention, backbone_checkpoint=None) -> ModelGraphs:
    try:
        from edgefss.exporters import cst_graphs as g
        from edgefss.models import cst as cst_mod  # noqa: F401
    except ModuleNotFoundError as exc:
        raise InputError(f"--model cst is not available in this build ({exc})") from exc
    from edgefss.models import build_model

    model = build_model("cst", checkpoint=checkpoint, backbone_checkpoint=backbone_checkpoint,
                        imgsz=imgsz).eval()
    graphs = {
        "encoder": GraphDef(g.CSTEncoderGraph(model).eval(), *_io_triplet(g.CST_IO["encoder"]), attention),
        "head": GraphDef(g.CSTHeadGraph(model).eval(), *_io_triplet(g.CST_IO["head"])),
    }
    if "learner" in g.CST_IO and hasattr(g, "CSTLearnerGraph"):
        graphs["learner"] = GraphDef(g.CSTLearnerGraph(model).eval(), *_io_triplet(g.CST_IO["learner"]))
    def examples(n_support=1):
        ex = g.cst_example_inputs(model, imgsz, n_support)
        return {k: v if isinstance(v, dict) else dict(zip(graphs[k].inputs, v)) for k, v in ex.items() if k in graphs}

    def learner_feeds(graph, head_feeds):
        # the learner's input is the head's correlation volume: computed by the model itself
        import torch

        with torch.no_grad():
            corr = model.correlation(torch.from_numpy(head_feeds["query_feats"]),
                                     torch.from_numpy(head_feeds["support_feats"]))
        return {"corr": corr.numpy(), "support_mask": head_feeds["support_mask"]}

    return ModelGraphs(
        "cst", "vit_small_patch8", imgsz, model, graphs, examples, checkpoint is None,
        {"threshold": CST_PSEUDO_THRESHOLD,
         "generator": "encoder output pseudo_prob (last-block key/CLS-query cosine), upsampled to imgsz "
                      "(bilinear, align_corners) before the threshold"},
        learner_feeds if "learner" in graphs else None,
    )


def _imr(checkpoint, imgsz, backbone_checkpoint=None, backbone=None, stages=None) -> ModelGraphs:
    from edgefss.exporters.imr_graphs import IMREncoderGraph, IMRHeadGraph, imr_example_inputs, imr_io
    from edgefss.models import build_model

    cfg = {k: v for k, v in (("backbone", backbone), ("stages", stages)) if v is not None}
    model = build_model("imr_hsnet", checkpoint=checkpoint, backbone_checkpoint=backbone_checkpoint,
                        imgsz=imgsz, **cfg).eval()
    io = imr_io(model)
    graphs = {
        "encoder": GraphDef(IMREncoderGraph(model).eval(), *_io_triplet(io["encoder"])),
        "head": GraphDef(IMRHeadGraph(model).eval(), *_io_triplet(io["head"])),
    }
    return ModelGraphs(
        "imr_hsnet", model.cfg.backbone, imgsz, model, graphs,
        lambda n_support=1: imr_example_inputs(model, n_support=n_support),
        checkpoint is None,
        {"threshold": None, "stages": model.cfg.stages,
         "generator": "external: CAM pseudo-masks at imgsz/8 are head inputs (query_pseudo, support_pseudo)"},
    )


def load_graphs(kind: str, checkpoint=None, imgsz: int = 400, attention: str = PLAIN,
                backbone_checkpoint=None, imr_backbone=None, imr_stages=None) -> ModelGraphs:
    """Build model `kind` ('tlg' | 'cst') and its graph wrappers (random init without checkpoint).

    `attention` (fused_attention.MS_MHA | PLAIN) is how the CST encoder's ViT attention is
    exported; TLG has none. `backbone_checkpoint`: torchvision ResNet-50 (TLG) / DINO ViT-S/8
    (CST) weights, loaded after `checkpoint` (edgefss.models.checkpoints.build_seeded).
    `imr_backbone` ('resnet50' | 'vgg16') and `imr_stages` (int >= 1): IMR-HSNet only (None: its
    defaults, ResNet-50 and 2 stages); the manifest records them as "variant" and pseudo_mask.stages.
    """
    if kind == "tlg":
        return _tlg(checkpoint, imgsz, backbone_checkpoint)
    if kind == "cst":
        return _cst(checkpoint, imgsz, attention, backbone_checkpoint)
    if kind == "imr_hsnet":
        return _imr(checkpoint, imgsz, backbone_checkpoint, imr_backbone, imr_stages)
    raise InputError(f"--model {kind!r}; expected 'tlg', 'cst' or 'imr_hsnet'")
