"""Label mask and presence from head logits in row bands: peak memory independent of the class
count and bounded for any query size (issue 14).

`postprocess.fg_probability` materialises an (N, H, W) float32 map: 5 classes on an 8192^2 query
is 1.3 GB, plus the temporaries of `label_mask`. `label_mask_banded` computes the same mask (and the
TLG area presence) band by band of output rows, from the same separable align_corners=True taps as
`transforms.resize_prob`, so each value is computed by the same float32 operations in the same
order: the results are identical, bit for bit. `FgProb` gives the full-resolution maps only when
asked for. NumPy only.
"""

from __future__ import annotations

import numpy as np

from edgefss.runtime.postprocess import FG_THRESHOLD, _sigmoid, check_groups
from edgefss.transforms import _align_corners_taps, resize_prob

BAND_BYTES = 32 << 20  # float32 work per band, all classes together


def _width_pass(diff: np.ndarray, W: int) -> np.ndarray:
    """(h, w) -> (h, W): the first (width) pass of resize_prob."""
    h, w = diff.shape
    if w == W:
        return diff
    c0, c1, u0, u1 = _align_corners_taps(w, W)
    return diff[:, c0] * u0 + diff[:, c1] * u1


def label_mask_banded(seg_logits: np.ndarray, groups, out_hw: tuple[int, int], threshold: float = FG_THRESHOLD,
                      band_bytes: int = BAND_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """(mask, area) equal to postprocess.label_mask(fg_probability(...)) and area_presence(...).

    Args:
        seg_logits: (B, 2, h, w) float32 head logits (0 background, 1 foreground).
        groups: groups[c] = indices into B of class c's shots.
        out_hw: (H, W) original query size.
        band_bytes: float32 bytes per band of rows (all classes); bounds the peak memory.

    Returns:
        mask (H, W) uint8: 0 background, i = class i-1; area (N,) float32 fraction of pixels with
        p_fg(c) > threshold.
    """
    groups = check_groups(groups, seg_logits.shape[0])
    H, W = int(out_hw[0]), int(out_hw[1])
    n = len(groups)
    h = seg_logits.shape[-2]
    # per shot, the width pass once: (h, W) each, small (h = S/4)
    rows = [[_width_pass(np.asarray(seg_logits[k, 1] - seg_logits[k, 0], np.float32), W) for k in g]
            for g in groups]
    r0, r1, v0, v1 = _align_corners_taps(h, H) if h != H else (None, None, None, None)
    band = max(1, int(band_bytes // max(1, n * W * 4)))
    mask = np.empty((H, W), np.uint8)
    above = np.zeros(n, np.int64)
    for a in range(0, H, band):
        b = min(H, a + band)
        p = np.zeros((n, b - a, W), np.float32)
        for c, shots in enumerate(rows):
            for t in shots:
                if r0 is None:
                    d = t[a:b]
                else:
                    d = t[r0[a:b], :] * v0[a:b, None] + t[r1[a:b], :] * v1[a:b, None]
                p[c] += _sigmoid(d)
            p[c] /= len(shots)
        above += (p > threshold).reshape(n, -1).sum(axis=1)
        m = (p.argmax(axis=0) + 1).astype(np.uint8)
        m[p.max(axis=0) < threshold] = 0
        mask[a:b] = m
    return mask, (above / float(H * W)).astype(np.float32)


class FgProb:
    """Per-class foreground probability, computed only when asked for.

    `low()`: (N, h, w) at the head's resolution (cheap). `full()`: (N, H, W) float32 at the query
    size, exactly postprocess.fg_probability (N * H * W * 4 bytes: ask only when needed).
    `np.asarray(fg)` and `fg[c]` give full() too (drop-in for the former array field).
    """

    def __init__(self, seg_logits: np.ndarray, groups, out_hw: tuple[int, int]):
        self.seg_logits, self.groups, self.out_hw = seg_logits, check_groups(groups, seg_logits.shape[0]), out_hw

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.groups), int(self.out_hw[0]), int(self.out_hw[1]))

    def low(self) -> np.ndarray:
        from edgefss.runtime.postprocess import fg_probability

        return fg_probability(self.seg_logits, self.groups, self.seg_logits.shape[-2:])

    def full(self) -> np.ndarray:
        from edgefss.runtime.postprocess import fg_probability

        return fg_probability(self.seg_logits, self.groups, self.out_hw)

    def __getitem__(self, idx):
        """fg[c] (an integer class index): only class c's (H, W) map, bit-identical to full()[c];
        any other index goes through full()."""
        if isinstance(idx, (int, np.integer)):
            from edgefss.runtime.postprocess import fg_probability

            n = len(self.groups)
            if not -n <= idx < n:
                raise IndexError(f"fg_prob: class index {idx} out of range for {n} classes")
            shots = self.groups[idx]
            return fg_probability(self.seg_logits[shots], [list(range(len(shots)))], self.out_hw)[0]
        return self.full()[idx]

    def __array__(self, dtype=None, copy=None):
        a = self.full()
        return a if dtype is None else a.astype(dtype)


__all__ = ["FgProb", "label_mask_banded", "resize_prob"]
