"""The one NumPy/PIL/OpenCV preprocessing implementation.

Used by the runtime, INT8 calibration, evaluation, training and the tests, so a bundle sees exactly
the pixels the PyTorch model was verified on. Never imports torch.

Both official loaders (CST `data/dataset.py`, TLG `data/dataset.py`) open the image with PIL and
call torchvision `Resize((S, S))` on the PIL image, i.e. `Image.resize((S, S), BILINEAR)`: a
bilinear filter whose support widens with the shrink factor (antialiased when shrinking), rounded
to uint8, then `ToTensor` (/255) and `Normalize`. `resize_image` calls that same PIL resize.

Maps (logits, probabilities, pseudo-masks) are resized like the official `F.interpolate(...,
mode='bilinear', align_corners=True)`: `resize_prob`, a separable interpolation with cached
weights, shared by both models.
"""

from __future__ import annotations

from functools import lru_cache

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
        (1, 3, cfg.imgsz, cfg.imgsz) float32, ImageNet-normalised, PIL bilinear resize as the
        official loaders.
    """
    rgb = load_image(image, name)
    return normalize(resize_image(rgb, cfg.imgsz), cfg)


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8: PIL `Image.resize((size, size), BILINEAR)`,
    exactly what the official loaders' torchvision `Resize` does to their PIL RGB image."""
    from edgefss.errors import require

    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    Image = require("PIL.Image", "image resizing")
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    out = img.resize((size, size), Image.BILINEAR)
    return np.asarray(out)


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


@lru_cache(maxsize=64)
def _align_corners_taps(n_in: int, n_out: int):
    """Source indices and weights of a 1-D align_corners=True linear resize, as PyTorch computes
    them in float32: x = i * ((n_in-1)/(n_out-1)), i0 = floor(x), w1 = x - i0 (0 when n_out = 1)."""
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    x = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(x - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, (np.float32(1) - w1), w1


def _half_pixel_taps(n_in: int, n_out: int):
    """Source indices and weights of a 1-D align_corners=False linear resize (no antialias), as
    PyTorch computes them in float32: x = max((i + 0.5) * n_in / n_out - 0.5, 0)."""
    scale = np.float32(n_in) / np.float32(n_out)
    x = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(x - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, (np.float32(1) - w1), w1


def pseudo_mask_to_network(mask: np.ndarray, size: int) -> np.ndarray:
    """(h, w) {0,1} pseudo-mask at any resolution -> (size, size) float32 {0,1}: bilinear resize
    (align_corners=False, no antialias) then >= 0.5, the way the released TLG loaders bring the
    CAM pseudo-masks to the network size (jarch-ma/TLG data/pascal.py: `F.interpolate(..., (400, 400),
    mode='bilinear')` then `filter_pse_mask`). A soft map (values in [0, 1]) is thresholded the same way.
    """
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"pseudo-mask: expected an (H, W) array, got shape {m.shape}")
    h, w = m.shape
    if (h, w) != (size, size):
        c0, c1, u0, u1 = _half_pixel_taps(w, size)
        r0, r1, v0, v1 = _half_pixel_taps(h, size)
        t = m[:, c0] * u0 + m[:, c1] * u1
        m = t[r0, :] * v0[:, None] + t[r1, :] * v1[:, None]
    return (m >= 0.5).astype(np.float32)


def resize_prob(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (..., h, w) float maps/logits to (..., H, W) float32, align_corners=True.

    The same sampling as the official code's `F.interpolate(x, (H, W), mode='bilinear',
    align_corners=True)` (logit upsampling, pseudo-masks), computed separably with cached taps:
    along the width first, then the height; float32 throughout. It agrees with PyTorch to float32
    rounding (<= 5e-7 on unit-scale maps; PyTorch's vectorised kernel rounds differently).
    """
    H, W = int(hw[0]), int(hw[1])
    a = np.asarray(prob, dtype=np.float32)
    h, w = a.shape[-2:]
    if (h, w) == (H, W):
        return a.copy()
    c0, c1, u0, u1 = _align_corners_taps(w, W)
    r0, r1, v0, v1 = _align_corners_taps(h, H)
    t = a[..., c0] * u0 + a[..., c1] * u1  # (..., h, W)
    return t[..., r0, :] * v0[:, None] + t[..., r1, :] * v1[:, None]
