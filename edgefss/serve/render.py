"""Prediction -> the JSON the server answers, and the mask / overlay images.

The JSON (classes, presence, per-class areas and boxes) comes from edgefss.runtime.results, shared
with `edgefss predict --save-json`.
"""

from __future__ import annotations

import base64

import numpy as np

from edgefss.runtime.results import MAX_BOXES, class_regions, prediction_json  # noqa: F401  (re-exported)


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
