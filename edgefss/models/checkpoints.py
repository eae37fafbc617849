"""Checkpoint reading shared by all models: format detection, prefix stripping, key reports.

Official layouts handled: DINO `.pth` (flat ViT keys), PyTorch Lightning `.ckpt`
({'state_dict': {...}}), DataParallel `module.`-prefixed dicts (TLG `best_model.pt`),
torchvision `.pth`, and edgefss's own format ({'edgefss': {...meta}, 'state_dict': {...}}).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch

from edgefss.errors import CheckpointError


def read_state_dict(path) -> tuple[dict, dict]:
    """Load a checkpoint file on CPU.

    Returns:
        (state_dict, meta): tensors by key, and the edgefss meta dict ({} for foreign files).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: file not found: '{path}'")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/zip/pickle errors
        # torch's own message can be a bare number (a pickle key): keep it, but say what was expected first
        raise CheckpointError(
            f"checkpoint: '{path}' is not a readable PyTorch checkpoint (expected a file saved by torch.save: "
            f".pt/.pth/.ckpt); torch.load said {type(exc).__name__}: {exc}") from exc
    meta = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = obj.get("edgefss", {}) or {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"checkpoint: '{path}' does not hold a state_dict of tensors")
    return obj, meta


def strip_prefix(sd: dict, prefix: str) -> dict:
    """Keys starting with `prefix` without it; other keys dropped."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def load_into(module: torch.nn.Module, sd: dict, what: str, ignore_missing=(), ignore_unexpected=()) -> None:
    """Strictly load `sd` into `module`; on mismatch raise CheckpointError listing the keys.

    Args:
        what: names the checkpoint/part in the message, e.g. "DINO ViT-S/8 backbone".
        ignore_missing / ignore_unexpected: key prefixes tolerated (e.g. a classifier 'fc.').
    """
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(tuple(ignore_missing))]
    unexpected = [k for k in sd if k not in own and not k.startswith(tuple(ignore_unexpected))]
    bad_shape = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or bad_shape:
        def fmt(xs):
            return ", ".join(xs[:12]) + (f" … (+{len(xs) - 12} more)" if len(xs) > 12 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {fmt(unexpected)}")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatches: {fmt(bad_shape)}")
        raise CheckpointError(f"checkpoint does not fit the {what}: " + "; ".join(parts))
    module.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def warn_random_init(what: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{what}: no checkpoint given, weights are RANDOMLY initialised (seeded). Predictions are "
        "meaningless until you pass the official weights (see README 'Weights').",
        stacklevel=stacklevel,
    )


def build_seeded(make: Callable[[], torch.nn.Module], seed: int, checkpoint, load_checkpoint: Callable,
                 backbone_checkpoint, load_backbone: Callable, random_init_what: str) -> torch.nn.Module:
    """The model builders' shared tail: seeded init, optional weights, loud random-init warning.

    Args:
        make: builds the model; it runs under a forked CPU RNG seeded with `seed`, so the random
            init is reproducible and the caller's RNG stream is left untouched.
        checkpoint / backbone_checkpoint: files or None; loaded (in that order) by
            `load_checkpoint(model, path)` / `load_backbone(model, path)`.
        random_init_what: what the warning names when `checkpoint` is None.
    Returns:
        the model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    if backbone_checkpoint is not None:
        load_backbone(model, backbone_checkpoint)
    if checkpoint is None:
        warn_random_init(random_init_what, stacklevel=4)  # the builder's caller, as before
    return model.eval()


def save_edgefss(path, model: torch.nn.Module, meta: dict) -> None:
    """Save {'edgefss': meta, 'state_dict': ...} atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"edgefss": dict(meta), "state_dict": model.state_dict()}, str(tmp))
    tmp.replace(path)
