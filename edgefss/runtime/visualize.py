"""Label-mask overlays with a class legend (OpenCV only); used by `edgefss predict`, the demo and eval."""

from __future__ import annotations

import numpy as np

from edgefss.errors import InputError, require


def palette(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 RGB colours; row 0 (background) is black, the rest are distinct and stable."""
    cols = [(0, 0, 0)]
    for i in range(n):
        # golden-ratio hue steps keep neighbouring class ids far apart in colour
        h = (i * 0.618033988749895) % 1.0
        cols.append(_hsv_to_rgb(h, 0.75, 0.95))
    return np.array(cols, np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def overlay(image: np.ndarray, mask: np.ndarray, classes, alpha: float = 0.5, legend: bool = True,
            probs=None, note: str | None = None) -> np.ndarray:
    """Blend coloured class regions over an image and draw a legend.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) uint8 labels, 0 background, i = classes[i-1].
        classes: list of N class names.
        alpha: colour weight inside labelled regions.
        legend: draw a box listing each class with its colour (and its presence prob if given).
        probs: optional (N,) floats shown next to the names.
        note: optional line under the legend (e.g. that the bundle's weights are random), so a
            saved picture carries it too.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    cv2 = require("cv2", "drawing overlays")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise InputError(f"mask: shape {mask.shape} does not match the image {image.shape[:2]}")
    if int(mask.max(initial=0)) > len(classes):
        raise InputError(f"mask: label {int(mask.max())} but only {len(classes)} classes")
    pal = palette(len(classes))
    out = image.copy()
    fg = mask > 0
    blend = image[fg].astype(np.float32) * (1 - alpha) + pal[mask[fg]].astype(np.float32) * alpha
    out[fg] = (blend + 0.5).astype(np.uint8)
    # outline each region so small objects stay visible under a low alpha
    for c in range(1, len(classes) + 1):
        m = (mask == c).astype(np.uint8)
        if m.any():
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            width = max(1, min(out.shape[:2]) // 300)
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in pal[c]), width)
    if legend and len(classes):
        _legend(cv2, out, classes, pal, probs, note)
    return out


def _legend(cv2, img: np.ndarray, classes, pal: np.ndarray, probs, note: str | None = None) -> None:
    scale = max(0.4, min(img.shape[:2]) / 800)
    thick = max(1, int(round(scale * 1.5)))
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    row, pad, sw = th + 8, 6, th + 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    labels = list(classes) if probs is None else [f"{c} {float(p):.2f}" for c, p in zip(classes, probs)]
    n_cls = len(labels)
    if note:
        labels.append(note)
    width = max(cv2.getTextSize(t, font, scale, thick)[0][0] for t in labels) + sw + 3 * pad
    height = row * len(labels) + pad
    w, h = min(width, img.shape[1]), min(height, img.shape[0])
    box = img[:h, :w].astype(np.float32)
    img[:h, :w] = (box * 0.4).astype(np.uint8)  # darken behind the text for contrast
    for i, t in enumerate(labels):
        y = pad + i * row
        if i < n_cls:  # the note row has no colour swatch
            col = tuple(int(v) for v in pal[i + 1])
            cv2.rectangle(img, (pad, y), (pad + sw, y + sw), col, -1)
        cv2.putText(img, t, (2 * pad + sw, y + th + 1), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
