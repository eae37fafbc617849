"""Prediction -> the JSON the server answers, and the mask / overlay images.

Boxes are [x0, y0, x1, y1] in pixels of the query (x1, y1 exclusive): `box` around all of a
class's pixels, `boxes` around each 8-connected region (largest first, at most MAX_BOXES).
"""

from __future__ import annotations

import base64

import numpy as np

MAX_BOXES = 20


def class_regions(mask: np.ndarray, label: int) -> dict:
    """Area, bounding box and per-region boxes of `mask == label`; mask is (H, W) uint8."""
    import cv2

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
    """Prediction (edgefss.runtime) -> {"classes", "results": [...], "timings", "ops_path", ...}."""
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


def png_bytes(img: np.ndarray) -> bytes:
    """(H, W) uint8 or (H, W, 3) uint8 RGB -> PNG bytes."""
    import cv2

    arr = img if img.ndim == 2 else np.ascontiguousarray(img[:, :, ::-1])
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def jpeg_bytes(rgb: np.ndarray, quality: int = 80) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def overlay_image(rgb: np.ndarray, pred, alpha: float = 0.5) -> np.ndarray:
    from edgefss.runtime.visualize import overlay

    return overlay(rgb, pred.mask, pred.classes, alpha=alpha, probs=pred.probs)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
