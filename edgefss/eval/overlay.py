"""Small OpenCV overlays for evaluation reports (torch-free).

Uses `edgefss.runtime.visualize.overlay` when the runtime provides it, so reports look like
the demo app; otherwise a colour-blend of the label map with class names drawn in the corner.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from edgefss.errors import require

# Distinct colours (RGB) for labels 1..; label 0 (background) stays unpainted.
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190],
], np.uint8)


def overlay(rgb: np.ndarray, labels: np.ndarray, classes: Sequence[str] = (), alpha: float = 0.5) -> np.ndarray:
    """Blend a label map onto an image.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        labels: (H, W) integer map, 0 = background, i = classes[i-1].
        classes: names drawn as a legend.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    try:
        from edgefss.runtime.visualize import overlay as runtime_overlay  # written by the runtime part
    except ImportError:
        runtime_overlay = None
    if runtime_overlay is not None:
        try:
            return np.asarray(runtime_overlay(rgb, labels, list(classes)), np.uint8)
        except TypeError:
            pass  # a different signature: fall back to ours
    cv2 = require("cv2", "drawing overlays")
    out = rgb.astype(np.float32).copy()
    for lab in range(1, int(labels.max(initial=0)) + 1):
        sel = labels == lab
        out[sel] = (1 - alpha) * out[sel] + alpha * PALETTE[(lab - 1) % len(PALETTE)]
    out = out.astype(np.uint8)
    for i, name in enumerate(classes):
        color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        cv2.putText(out, str(name), (6, 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return out


def panel(tiles: Sequence[np.ndarray], titles: Sequence[str], height: int = 240) -> np.ndarray:
    """Side-by-side (H, W, 3) uint8 tiles, each resized to `height` with a title."""
    cv2 = require("cv2", "drawing overlays")
    row = []
    for t, title in zip(tiles, titles):
        w = max(1, int(round(t.shape[1] * height / t.shape[0])))
        t = cv2.resize(t, (w, height), interpolation=cv2.INTER_AREA).copy()
        cv2.putText(t, title, (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        row.append(t)
    return np.concatenate(row, axis=1)


def save_png(path, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG atomically (temp file, then rename)."""
    cv2 = require("cv2", "writing PNGs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"could not encode PNG for '{path}'")
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, path)
    return path
