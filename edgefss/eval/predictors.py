"""The predictor the evaluator scores: a bundle or a PyTorch model, both an `edgefss.runtime.Segmenter`.

A PyTorch model runs through the torch backend (edgefss/models/torch_segmenter.py), so shot
grouping, mask gridding, refinement, presence and post-processing are the runtime's own and
PyTorch-vs-bundle differences come from the graphs alone.
"""

from __future__ import annotations

from edgefss.errors import InputError


def load_predictor(model: str | None = None, checkpoint=None, bundle=None, backend=None, imgsz: int = 400,
                   clip_checkpoint=None, threads: int | None = None, backbone_checkpoint=None):
    """(Segmenter, description dict) from `--model/--checkpoint[/--backbone-weights]` or `--bundle/--backend`.

    backbone_checkpoint: backbone weights for --model (torchvision ResNet-50/VGG16 .pth for TLG, DINO
    .pth for CST), loaded after `checkpoint` by build_model."""
    if (model is None) == (bundle is None):
        raise InputError("eval: give exactly one of --model (PyTorch) or --bundle (exported bundle)")
    if bundle is not None and backbone_checkpoint is not None:
        raise InputError("--backbone-weights: only for --model (a bundle holds its weights)")
    if bundle is not None:
        from edgefss.runtime import Segmenter

        seg = Segmenter.load(bundle, backend=backend, threads=threads)
        m = seg.manifest
        return seg, {"predictor": "bundle", "bundle": str(bundle), "model": m.get("model"),
                     "backend": backend or m.get("backend"), "precision": m.get("precision"),
                     "imgsz": m.get("preprocess", {}).get("imgsz"),
                     "random_init": m.get("weights", {}).get("random_init")}
    from edgefss.models.torch_segmenter import torch_segmenter

    built = None
    if backbone_checkpoint is not None:
        from edgefss.models import build_model

        built = build_model(model, checkpoint=checkpoint, imgsz=imgsz,
                            backbone_checkpoint=backbone_checkpoint)
    seg = torch_segmenter(model, checkpoint=checkpoint, imgsz=imgsz, clip_checkpoint=clip_checkpoint,
                          threads=threads, built=built)
    return seg, {"predictor": "torch", "model": model, "backend": "torch", "precision": "fp32",
                 "imgsz": imgsz, "checkpoint": None if checkpoint is None else str(checkpoint),
                 "random_init": checkpoint is None,
                 "backbone_checkpoint": None if backbone_checkpoint is None else str(backbone_checkpoint)}
