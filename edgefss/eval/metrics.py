"""Few-shot segmentation metrics, accumulated exactly as the HSNet code line does (torch-free).

HSNet (`common/evaluation.py`, `common/logger.py:AverageMeter`, spec §6.3):
- per episode, ignored pixels (PASCAL boundaries, 255) are removed from both prediction and
  GT; `area_inter[l]` counts pixels labelled l in both, `area_union[l] = pred[l] + gt[l] - inter[l]`;
- the areas are *summed* per episode class over the whole run (`index_add_`), and only then
  divided: mIoU = mean over the evaluated classes of I_fg[c] / max(U_fg[c], 1) x 100 (a class
  never sampled counts 0, as in HSNet); FB-IoU = mean over {bg, fg} of sum_c I / sum_c U x 100.

FS-CS (spec §6.4): the (N+1)-label map of an N-way episode is histogrammed over labels 0..N
and label i>0 is credited to the absolute class of way i; mIoU excludes the background,
whose areas are summed in their own accumulator for FB-IoU.
The classification metric is the 0/1 exact ratio: an episode counts 1 only if all N presence
predictions (p > 0.5) equal the GT.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgefss.errors import InputError

IGNORE = 255


def area_inter_union(pred: np.ndarray, gt: np.ndarray, n_labels: int, ignore: np.ndarray | None = None):
    """Per-label intersection and union areas of one episode.

    Args:
        pred: (H, W) integer label map, values in 0..n_labels-1.
        gt: (H, W) integer label map of the same shape.
        n_labels: number of labels (2 for fg/bg; N+1 for an N-way episode).
        ignore: optional (H, W) bool, True where a pixel is excluded from both maps.

    Returns:
        (inter, union): two (n_labels,) int64 arrays.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise InputError(f"metrics: prediction {pred.shape} and GT {gt.shape} must be equal (H, W) maps")
    keep = np.ones(pred.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
    if keep.shape != pred.shape:
        raise InputError(f"metrics: ignore mask {keep.shape} must match the maps {pred.shape}")
    p = pred[keep].astype(np.int64)
    g = gt[keep].astype(np.int64)
    for name, arr in (("prediction", p), ("GT", g)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_labels):
            raise InputError(f"metrics: {name} has labels outside 0..{n_labels - 1} (outside the ignore mask)")
    area_p = np.bincount(p, minlength=n_labels)
    area_g = np.bincount(g, minlength=n_labels)
    inter = np.bincount(p[p == g], minlength=n_labels)
    return inter, area_p + area_g - inter


class SegMeter:
    """Summed per-class intersection/union over a run (HSNet `AverageMeter`).

    Rows are [background, foreground] and columns the evaluated classes. Way i's foreground
    areas go to the column of its class. Background areas are summed once per episode
    (HSNet puts them in the episode class's column and sums over columns for FB-IoU, which
    gives the same total for 1-way; for N-way it avoids counting one background N times).
    """

    def __init__(self, classes: Sequence[str]):
        if len(classes) == 0:
            raise InputError("metrics: the list of evaluated classes is empty")
        self.classes = list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.inter = np.zeros((2, len(self.classes)), np.int64)
        self.union = np.zeros((2, len(self.classes)), np.int64)
        self.bg_inter = 0
        self.bg_union = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, way_classes: Sequence[str],
               ignore: np.ndarray | None = None) -> np.ndarray:
        """Add one episode.

        Args:
            pred, gt: (H, W) label maps, 0 = background, i = way_classes[i-1].
            way_classes: the N class names of the episode's ways.
            ignore: optional (H, W) bool of excluded pixels.

        Returns:
            (N,) float64 per-way foreground IoU of this episode alone (for ranking episodes;
            NaN where that way's union is empty).
        """
        n = len(way_classes)
        inter, union = area_inter_union(pred, gt, n + 1, ignore)
        cols = [self._col(c) for c in way_classes]
        if n == 1:
            # HSNet: both rows go to the episode class's column.
            self.inter[:, cols[0]] += inter
            self.union[:, cols[0]] += union
        else:
            for i, c in enumerate(cols):
                self.inter[1, c] += inter[i + 1]
                self.union[1, c] += union[i + 1]
        self.bg_inter += int(inter[0])
        self.bg_union += int(union[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union[1:] > 0, inter[1:] / np.maximum(union[1:], 1), np.nan)

    def _col(self, cls: str) -> int:
        if cls not in self.index:
            raise InputError(f"metrics: class '{cls}' is not one of the evaluated classes {self.classes}")
        return self.index[cls]

    def class_iou(self) -> np.ndarray:
        """(C,) foreground IoU per evaluated class, in [0, 1]; 0 for a class never seen."""
        return self.inter[1] / np.maximum(self.union[1], 1)

    def miou(self) -> float:
        """Mean foreground IoU over the evaluated classes, x 100."""
        return float(self.class_iou().mean() * 100.0)

    def fbiou(self) -> float:
        """Mean of background and foreground IoU over summed areas, x 100."""
        fg = self.inter[1].sum() / max(self.union[1].sum(), 1)
        bg = self.bg_inter / max(self.bg_union, 1)
        return float((fg + bg) / 2.0 * 100.0)

    def unsampled(self) -> list[str]:
        """Classes whose foreground union is still 0 (they pull mIoU down, as in HSNet)."""
        return [c for c, u in zip(self.classes, self.union[1]) if u == 0]


class ExactRatioMeter:
    """FS-CS 0/1 exact ratio: share of episodes whose N presence predictions are all right."""

    def __init__(self):
        self.correct = 0
        self.total = 0

    def update(self, pred_present: Sequence[bool], gt_present: Sequence[bool]) -> bool:
        """Add one episode; returns whether it was exactly right."""
        p = np.asarray(pred_present, bool)
        g = np.asarray(gt_present, bool)
        if p.shape != g.shape or p.ndim != 1:
            raise InputError(f"metrics: presence predictions {p.shape} and GT {g.shape} must be equal (N,) vectors")
        ok = bool(np.all(p == g))
        self.correct += int(ok)
        self.total += 1
        return ok

    def ratio(self) -> float:
        """Exact ratio x 100 (0 when no episode was added)."""
        return 100.0 * self.correct / max(self.total, 1)
