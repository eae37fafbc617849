"""Per-image cache of frozen-backbone features for training.

Training episodes re-draw the same few hundred images every epoch, and with a frozen backbone
(eval mode, no augmentation) `model.encode(image)` is a pure function of the pixels, so its
output can be kept and reused. This is exact: the cached value is what `encode` returned for
that image. Keys are a hash of the image tensor's bytes, so nothing about how the batch was
built is assumed. Once `max_bytes` is reached new images are encoded without being stored.
"""

from __future__ import annotations

import hashlib

import torch


def _key(img: torch.Tensor) -> str:
    return hashlib.blake2b(img.detach().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


def _split(out, n: int) -> list:
    """Batch output (dict or list/tuple of (B,...) tensors) -> n per-image outputs (batch dim 1)."""
    if isinstance(out, dict):
        return [{k: v[i:i + 1].clone() for k, v in out.items()} for i in range(n)]
    return [[v[i:i + 1].clone() for v in out] for i in range(n)]


def _cat(parts: list):
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return [torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))]


def _nbytes(out) -> int:
    vals = out.values() if isinstance(out, dict) else out
    return sum(v.numel() * v.element_size() for v in vals)


class CachedEncoder:
    """Drop-in for a frozen `model.encode`: same call, same outputs, computed once per image.

    Args:
        encode: the model's encode, (B,3,S,S) float32 -> dict or list of (B,...) float32 tensors
            (CST: dict of query_feats/support_feats/pseudo_prob; TLG: list of feature maps).
        max_bytes: stop storing new entries past this much cached feature memory.

    Attributes:
        hits, misses: images served from the cache / encoded.
    """

    def __init__(self, encode, max_bytes: int = 3 << 30):
        self.encode = encode
        self.max_bytes = int(max_bytes)
        self.store: dict[str, object] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __call__(self, image: torch.Tensor):
        keys = [_key(image[i]) for i in range(image.shape[0])]
        todo = [i for i, k in enumerate(keys) if k not in self.store]
        fresh = {}
        if todo:
            with torch.no_grad():
                out = self.encode(image[todo])
            for i, part in zip(todo, _split(out, len(todo))):
                fresh[keys[i]] = part
                if self.bytes < self.max_bytes and keys[i] not in self.store:
                    self.store[keys[i]] = part
                    self.bytes += _nbytes(part)
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if len(todo) == len(keys):
            return out  # nothing from the cache: the encoder's batch as it is, no second copy
        return _cat([fresh[k] if k in fresh else self.store[k] for k in keys])


def cache_encoder(model, max_bytes: int = 3 << 30) -> CachedEncoder:
    """Replace `model.encode` (instance attribute, so `forward` picks it up) by a CachedEncoder.

    Only valid while the backbone is frozen and in eval mode; the training loop guarantees it.
    """
    enc = CachedEncoder(model.encode, max_bytes)
    model.encode = enc
    return enc
