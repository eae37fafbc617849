"""The one NumPy/OpenCV preprocessing implementation.

Used by the runtime, INT8 calibration, evaluation and the tests, so a bundle sees exactly the
pixels the PyTorch model was verified on. Never imports torch.
"""

from __future__ import annotations

import numpy as np

from edgefss.config import PreprocessCfg

# Image and mask reading lives in edgefss.imageio; re-exported here for existing callers.
from edgefss.imageio import MAX_SIDE, ImageLike, load_image, load_mask  # noqa: E402,F401


def _cv2():
    from edgefss.errors import require

    return require("cv2", "image loading")


def preprocess(image: ImageLike, cfg: PreprocessCfg = PreprocessCfg(), name: str = "image") -> np.ndarray:
    """Image -> network input.

    Args:
        image: anything `load_image` accepts.
        cfg: input size and normalisation.

    Returns:
        (1, 3, cfg.imgsz, cfg.imgsz) float32, ImageNet-normalised, bilinear resize (OpenCV
        INTER_LINEAR, the same as the official loaders' PIL bilinear up to rounding).
    """
    rgb = load_image(image, name)
    return normalize(resize_image(rgb, cfg.imgsz), cfg)


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8."""
    cv2 = _cv2()
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    interp = cv2.INTER_AREA if min(rgb.shape[:2]) > 2 * size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def normalize(rgb: np.ndarray, cfg: PreprocessCfg) -> np.ndarray:
    """(S, S, 3) uint8 -> (1, 3, S, S) float32 normalised."""
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) mask to (h, w), dtype kept."""
    cv2 = _cv2()
    h, w = hw
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def resize_prob(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (..., h, w) float maps/logits to (..., H, W) float32."""
    cv2 = _cv2()
    h, w = hw
    lead = prob.shape[:-2]
    flat = prob.reshape(-1, *prob.shape[-2:]).astype(np.float32)
    out = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in flat])
    return out.reshape(*lead, h, w)
