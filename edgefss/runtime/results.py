"""A Prediction as data: per-class areas and boxes, the JSON `edgefss serve` answers and
`edgefss predict --save-json` writes, and the label rule at another foreground threshold.

Boxes are [x0, y0, x1, y1] in pixels of the original query (x1, y1 exclusive): `box` around all
of a class's pixels, `boxes` around each 8-connected region (largest first, at most MAX_BOXES).
NumPy + OpenCV only (never torch).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgefss.errors import InputError, require

MAX_BOXES = 20


def class_regions(mask: np.ndarray, label: int) -> dict:
    """Area, bounding box and per-region boxes of `mask == label`; mask is (H, W) uint8.

    Returns:
        {"area": int pixels, "area_frac": float in [0, 1], "box": [x0, y0, x1, y1] or None,
         "boxes": [{"box": [...], "area": int}, ...]}.
    """
    cv2 = require("cv2", "measuring mask regions")
    m = (mask == label).astype(np.uint8)
    area = int(m.sum())
    if area == 0:
        return {"area": 0, "area_frac": 0.0, "box": None, "boxes": []}
    ys, xs = np.nonzero(m)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    regions = sorted(stats[1:n].tolist(), key=lambda s: -s[4])[:MAX_BOXES]
    return {
        "area": area,
        "area_frac": round(area / m.size, 6),
        "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
        "boxes": [{"box": [x, y, x + w, y + h], "area": a} for x, y, w, h, a in regions],
    }


def prediction_json(pred, width: int, height: int) -> dict:
    """Prediction -> {"classes", "width", "height", "results": [...], "timings", "ops_path"}.

    results[i] = {"class", "label" (its value in the mask, i + 1), "score" (presence: CST class
    probability, TLG foreground area fraction), "present", **class_regions(mask, i + 1)}.
    """
    results = []
    for i, name in enumerate(pred.classes):
        results.append(
            {
                "class": name,
                "label": i + 1,
                "score": round(float(pred.probs[i]), 6),
                "present": bool(pred.present[i]),
                **class_regions(pred.mask, i + 1),
            }
        )
    return {
        "classes": list(pred.classes),
        "width": width,
        "height": height,
        "results": results,
        "timings": dict(pred.timings),
        "ops_path": pred.ops_path,
    }


def with_threshold(pred, conf: float, class_head: bool):
    """`pred` with its mask and presence recomputed at foreground threshold `conf` instead of
    postprocess.FG_THRESHOLD (0.5), by the same banded rule Segmenter.predict uses.

    A pixel is labelled when its best class's p_fg >= conf (so a higher conf labels a subset of the
    pixels). Presence: with a class head (CST, `class_head=True`) probs stay the class
    probabilities and present = probs > conf; without one (TLG) probs become the fraction of pixels
    with p_fg > conf and present = probs > postprocess.PRESENCE_MIN_AREA.

    Raises:
        InputError: conf outside (0, 1).
    """
    from edgefss.runtime import lowmem
    from edgefss.runtime import postprocess as post

    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 < float(conf) < 1.0:
        raise InputError(f"conf: {conf!r}; expected a foreground probability threshold in (0, 1)")
    conf = float(conf)
    if conf == post.FG_THRESHOLD:
        return pred
    fg = pred.fg_prob
    mask, area = lowmem.label_mask_banded(fg.seg_logits, fg.groups, fg.out_hw, threshold=conf)
    if class_head:
        probs, present = pred.probs, pred.probs > conf
    else:
        probs, present = area, area > post.PRESENCE_MIN_AREA
    return dataclasses.replace(pred, mask=mask, probs=probs, present=present)
