"""PyTorch models (torch territory): TLG and CST.

`build_model(name, checkpoint=None, **cfg)` is the one entry point. With no checkpoint the
model is randomly initialised (seeded) and a warning says so: no weights are downloaded, ever.
"""

from __future__ import annotations

from typing import Callable

from edgefss.errors import InputError, require

_REGISTRY: dict[str, Callable] = {}


def register_model(name: str):
    """Decorator: register a builder `fn(checkpoint=None, **cfg) -> nn.Module` under `name`."""

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise RuntimeError(f"model name {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_all():
    require("torch", "building PyTorch models")
    from edgefss.models import cst, diffews, imr_hsnet, tlg  # noqa: F401  (registers builders)


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, checkpoint=None, **cfg):
    """Build a registered model.

    Args:
        name: 'cst', 'tlg' (ResNet-50), 'tlg_vgg16' or 'imr_hsnet' (backbone=, stages=).
        checkpoint: optional path to a checkpoint (official or edgefss format).
        **cfg: model config overrides (e.g. imgsz=400).
    """
    _load_all()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](checkpoint=checkpoint, **cfg)
