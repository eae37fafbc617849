"""Evaluation report panels (torch-free): the runtime's overlays, side by side with titles.

Overlays and PNG writing are the runtime's (`edgefss.runtime.visualize`), so reports look like
`edgefss predict` and the demo app.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgefss.errors import require
from edgefss.runtime.visualize import overlay  # noqa: F401 (the one overlay, used by eval/runner.py)
from edgefss.fsio import write_png_atomic as save_png  # noqa: F401 (the one atomic PNG writer)


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
