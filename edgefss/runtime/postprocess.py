"""N-way K-shot combination (models-spec §3.5, CST `predict_cls_seg`), in NumPy.

Each support image gives one 1-way prediction for its class (the query is paired with every
support image in one head batch). Per class c with shots k = 1..K_c:
- p_fg(c, pixel) = mean_k softmax(resize(seg_logits_k))[fg], the logits resized bilinearly to the
  original query size first with align_corners=True, as the official code and edgefss's torch
  path do (`edgefss.transforms.resize_prob`);
- CST presence p(c) = mean_k softmax(cls_logits_k)[fg]; present iff p(c) > 0.5;
- TLG has no classification output: presence = fraction of query pixels with p_fg(c) > 0.5, and the
  class counts as present when that fraction exceeds PRESENCE_MIN_AREA;
- pixel label = 1 + argmax_c p_fg(c), background (0) where max_c p_fg < 0.5.
"""

from __future__ import annotations

import numpy as np

from edgefss.errors import InputError
from edgefss.transforms import resize_prob

FG_THRESHOLD = 0.5
# A class covering less than 0.1 % of the query is treated as absent for TLG (no cls head);
# smaller blobs are mostly isolated boundary pixels of other objects.
PRESENCE_MIN_AREA = 1e-3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # softmax over 2 channels: p_fg = 1 / (1 + exp(l_bg - l_fg)) = sigmoid(l_fg - l_bg), evaluated stably
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def check_groups(groups, n_batch: int) -> list[list[int]]:
    """Validate that `groups` partitions range(n_batch); returns them as lists of int."""
    groups = [[int(i) for i in g] for g in groups]
    if not groups or any(len(g) == 0 for g in groups):
        raise InputError("groups: every class needs at least one support shot")
    flat = sorted(i for g in groups for i in g)
    if flat != list(range(n_batch)):
        raise InputError(f"groups: must partition the {n_batch} head outputs, got {groups}")
    return groups


def fg_probability(seg_logits: np.ndarray, groups: list[list[int]], out_hw: tuple[int, int]) -> np.ndarray:
    """Per-class foreground probability at the original query size.

    Args:
        seg_logits: (B, 2, h, w) float32 head logits, channel 0 = background, 1 = foreground.
        groups: groups[c] = indices into B of class c's shots.
        out_hw: (H, W) original query size.

    Returns:
        (N, H, W) float32 mean over shots of the per-shot softmax foreground probability.
    """
    groups = check_groups(groups, seg_logits.shape[0])
    H, W = out_hw
    out = np.zeros((len(groups), H, W), np.float32)
    for c, shots in enumerate(groups):
        for k in shots:
            # bilinear resize is linear, so resizing the logit difference equals resizing both channels
            diff = resize_prob(seg_logits[k, 1] - seg_logits[k, 0], (H, W))
            out[c] += _sigmoid(diff)
        out[c] /= len(shots)
    return out


def cls_probability(cls_logits: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """(B, 2) cls logits -> (N,) float32 mean over shots of softmax[fg]."""
    groups = check_groups(groups, cls_logits.shape[0])
    p = _sigmoid((cls_logits[:, 1] - cls_logits[:, 0]).astype(np.float32))
    return np.array([p[g].mean() for g in groups], np.float32)


def area_presence(p_fg: np.ndarray, threshold: float = FG_THRESHOLD) -> np.ndarray:
    """(N, H, W) fg probabilities -> (N,) float32 fraction of pixels with p_fg > threshold (TLG presence)."""
    return (p_fg > threshold).reshape(p_fg.shape[0], -1).mean(axis=1).astype(np.float32)


def mean_logits(seg_logits: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """(B, 2, h, w) -> (N, 2, h, w) float32 raw head logits averaged over each class's shots."""
    groups = check_groups(groups, seg_logits.shape[0])
    return np.stack([seg_logits[g].mean(axis=0) for g in groups]).astype(np.float32)


def label_mask(p_fg: np.ndarray, threshold: float = FG_THRESHOLD) -> np.ndarray:
    """(N, H, W) fg probabilities -> (H, W) uint8: 0 background, i = class i-1."""
    if p_fg.shape[0] > 255:
        raise InputError(f"class_names: {p_fg.shape[0]} classes do not fit a uint8 label mask (max 255)")
    best = p_fg.argmax(axis=0)
    mask = (best + 1).astype(np.uint8)
    mask[p_fg.max(axis=0) < threshold] = 0
    return mask
