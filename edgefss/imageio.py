"""Reading images and masks from files or arrays, torch-free.

The one place that turns a user's file into pixels: decoding, colour order, alpha, bit depth,
EXIF orientation, size limits and label-map checks. Numerics (resizing, normalisation) live in
edgefss.transforms.

Files are returned the way viewers show them: a phone photo stored sideways with an EXIF
orientation tag (OpenCV's IMREAD_UNCHANGED ignores it) is rotated/flipped upright, and so is a
mask file carrying the tag. Arrays are taken as already upright.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from edgefss.errors import InputError

ImageLike = Union[str, os.PathLike, np.ndarray]

# Larger images are almost always a mistake (a raw panorama, a wrong array); decoding one
# would use > 1 GB before it is shrunk to 400x400 anyway.
MAX_SIDE = 8192


def _cv2():
    from edgefss.errors import require

    return require("cv2", "image loading")


def load_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """Load a file path or array as an RGB image.

    Grayscale, RGBA and 16-bit inputs are converted; anything else is rejected.

    Args:
        image: path to an image file, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4),
            uint8 or uint16 (or float in [0, 1]). Arrays are taken as RGB(A).
        name: how the input is named in error messages.

    Returns:
        (H, W, 3) uint8 RGB array, C-contiguous.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{name}: file not found: '{path}'")
        if path.stat().st_size == 0:
            raise InputError(f"{name}: '{path}' is empty (0 bytes); expected a JPEG/PNG image")
        orientation = _check_header(path, name)
        cv2 = _cv2()
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as exc:  # permissions, a folder, an I/O error: one line, not a traceback
            raise InputError(f"{name}: cannot read '{path}': {exc.strerror or exc}") from exc
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputError(
                f"{name}: '{path}' could not be decoded as an image (corrupt, truncated or not "
                "an image file); expected a JPEG/PNG/BMP/TIFF/WebP image"
            )
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr[:, :, ::-1]  # OpenCV decodes BGR
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, [2, 1, 0, 3]]
        arr = apply_orientation(arr, orientation)
        src = f"'{path}'"
    elif isinstance(image, np.ndarray):
        arr = image
        src = f"array of shape {arr.shape} and dtype {arr.dtype}"
    else:
        raise InputError(
            f"{name}: expected a file path or an (H, W, 3) uint8 numpy array, got {type(image).__name__}"
        )
    return _to_rgb_uint8(arr, name, src)

EXIF_ORIENTATION = 0x0112  # TIFF/EXIF tag 274: 1 upright ... 8, how to turn the stored pixels


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H, W[, C]) upright per an EXIF orientation 1..8 (as PIL's
    ImageOps.exif_transpose); other values are left as they are."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = arr.swapaxes(0, 1)[:, ::-1]  # 90 degrees clockwise
    elif orientation == 7:
        arr = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        arr = arr.swapaxes(0, 1)[::-1]  # 90 degrees counter-clockwise
    return np.ascontiguousarray(arr)


def _orientation_of(im) -> int:
    try:
        o = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 — a broken EXIF block: show the pixels as stored
        return 1
    return o if isinstance(o, int) and 1 <= o <= 8 else 1


def orientation_of(source) -> int:
    """EXIF orientation (1..8, 1 = upright or unknown) of an image file path or its bytes."""
    import io

    try:
        from PIL import Image
    except ImportError:
        return 1
    try:
        src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        with Image.open(src) as im:
            return _orientation_of(im)
    except Exception:  # noqa: BLE001 — not a PIL format: shown as stored
        return 1


def _check_header(path: Path, name: str) -> int:
    """Reject an over-sized image from its header, before decoding it (a 10000x10000 file would
    otherwise cost ~300 MB and seconds of decoding only to be refused), and return its EXIF
    orientation (1 = upright). Formats PIL cannot parse are left to the decoder (and the size
    check after it) and count as upright."""
    import warnings

    try:
        from PIL import Image
    except ImportError:
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's decompression-bomb warning: we decide below
            with Image.open(path) as im:
                w, h = im.size
                orientation = _orientation_of(im)
    except Image.DecompressionBombError:
        w = h = MAX_SIDE + 1
        orientation = 1
    except Exception:  # noqa: BLE001 — not a PIL format or corrupt: the decoder reports it
        return 1
    if max(h, w) > MAX_SIDE:
        raise InputError(
            f"{name}: '{path}' is {h}x{w} pixels (from its header); expected at most {MAX_SIDE} per side"
        )
    return orientation

def _to_rgb_uint8(arr: np.ndarray, name: str, src: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"{name}: {src} is not an image; expected shape (H, W), (H, W, 3) or (H, W, 4)")
    h, w = arr.shape[:2]
    if h < 2 or w < 2:
        raise InputError(f"{name}: {src} is {h}x{w} pixels; expected at least 2x2")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{name}: {src} is {h}x{w} pixels; expected at most {MAX_SIDE} per side")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif arr.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name}: {src} contains NaN or Inf; expected finite values in [0, 1]")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise InputError(f"{name}: {src} has float values outside [0, 1]; expected uint8 or [0, 1] floats")
        arr = (arr * 255.0 + 0.5).astype(np.uint8)
    else:
        raise InputError(f"{name}: {src} has dtype {arr.dtype}; expected uint8, uint16 or float in [0, 1]")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        # Composite on black: the alpha channel carries no class information.
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)

def load_mask(mask: ImageLike, name: str = "mask") -> np.ndarray:
    """Load a binary mask.

    Args:
        mask: path to a PNG, or an (H, W) array. Values {0, 1} or {0, 255} are foreground
            where non-zero; other label maps are rejected (pass `mask == class_id` instead).

    Returns:
        (H, W) uint8 in {0, 1}.
    """
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        if not path.is_file():
            raise InputError(f"{name}: file not found: '{path}'")
        arr = _read_mask_file(path, name)
        src = f"'{path}'"
    elif isinstance(mask, np.ndarray):
        arr = mask
        src = f"array of shape {arr.shape}"
    else:
        raise InputError(f"{name}: expected a file path or an (H, W) array, got {type(mask).__name__}")
    if arr.ndim == 3:
        arr = arr[:, :, 0] if arr.shape[2] in (1, 3, 4) else arr
    if arr.ndim != 2:
        raise InputError(f"{name}: {src} has shape {arr.shape}; expected (H, W)")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: {src} contains NaN or Inf; expected a binary mask")
    vals = np.unique(arr)
    if not (set(vals.tolist()) <= {0, 1} or set(vals.tolist()) <= {0, 255}):
        raise InputError(
            f"{name}: {src} is not binary (values {vals[:6].tolist()}...); expected {{0,1}} or {{0,255}}"
        )
    return (arr > 0).astype(np.uint8)

def _read_mask_file(path: Path, name: str) -> np.ndarray:
    """A mask/label file's stored values, upright (EXIF orientation applied), (H, W) or (H, W, C)."""
    orientation = _check_header(path, name)
    arr = _read_indexed_png(path)
    if arr is None:
        cv2 = _cv2()
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"{name}: cannot read '{path}': {exc.strerror or exc}") from exc
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise InputError(f"{name}: '{path}' could not be decoded as a PNG mask")
    return apply_orientation(arr, orientation)


def read_label_map(path, name: str = "mask") -> np.ndarray:
    """Read a label/mask image as an (H, W) integer array of its stored values, upright.

    Palette (P-mode) PNGs give their indices, not palette colours (OpenCV's IMREAD_UNCHANGED
    expands palettes to BGR); RGB(A) files give their first channel (red).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{name}: file not found: '{p}'")
    arr = _read_mask_file(p, name)
    if arr.ndim == 3:
        arr = arr[:, :, 2] if arr.shape[2] >= 3 else arr[:, :, 0]  # OpenCV's BGR(A): red
    if arr.ndim != 2:
        raise InputError(f"{name}: '{p}' has shape {arr.shape}; expected an (H, W) mask")
    return arr


def _read_indexed_png(path: Path):
    """Palette/gray PNGs as their stored indices (OpenCV expands a palette into colours,
    which turns e.g. PerSeg's index-1 foreground into black). None when PIL is absent or the
    file is not such an image."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "1", "I", "I;16"):
                return np.asarray(im)
    except Exception:  # not decodable by PIL: let OpenCV try and report
        return None
    return None
