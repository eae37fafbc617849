"""Uploaded bytes -> pixels, with the server's limits; every refusal names the form field.

Pixel counts come from the file header (PIL) before anything is decoded, so a small file that
expands to a huge image is refused without allocating it. Channel/dtype conversions are
edgefss.imageio's (load_image/load_mask on the decoded array), the same as for files.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from edgefss.errors import InputError
from edgefss.imageio import apply_orientation, load_image, load_mask, orientation_of


class HTTPFieldError(Exception):
    """A request error for one field: becomes `{"detail": message, "field": field}` with `status`."""

    def __init__(self, status: int, field: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers


def check_size(data: bytes, field: str, limit: int) -> None:
    if not data:
        raise HTTPFieldError(422, field, f"{field}: the upload is empty (0 bytes); expected a JPEG/PNG image")
    if len(data) > limit:
        raise HTTPFieldError(
            413,
            field,
            f"{field}: {len(data)} bytes; expected at most {limit} bytes "
            f"({limit / 2**20:.2f} MiB, server flag --max-upload-mb)",
        )


def _header_size(data: bytes):
    """(width, height) from the header, or None when PIL cannot parse it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the decompression-bomb warning: the caller decides
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        return (1 << 16, 1 << 16)
    except Exception:  # noqa: BLE001 — not an image PIL knows: OpenCV decides below
        return None


def _check_pixels(w: int, h: int, field: str, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise HTTPFieldError(
            413,
            field,
            f"{field}: {w}x{h} = {w * h} pixels; expected at most {max_pixels} "
            "(server flag --max-megapixels)",
        )


def _decode(data: bytes, field: str, max_pixels: int, kind: str) -> np.ndarray:
    import cv2

    size = _header_size(data)
    if size is not None:
        _check_pixels(size[0], size[1], field, max_pixels)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise HTTPFieldError(
            422,
            field,
            f"{field}: could not be decoded as an image (corrupt, truncated or not an "
            f"image); expected a JPEG/PNG/BMP/TIFF/WebP {kind}",
        )
    _check_pixels(arr.shape[1], arr.shape[0], field, max_pixels)
    arr = apply_orientation(arr, orientation_of(data))  # phone photos: upright as viewers show them
    if kind == "mask":
        return arr
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]  # OpenCV decodes BGR
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    return arr


def decode_image(data: bytes, field: str, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Upload -> (H, W, 3) uint8 RGB. Raises HTTPFieldError (413 too large, 422 not an image)."""
    check_size(data, field, max_bytes)
    arr = _decode(data, field, max_pixels, "image")
    try:
        return load_image(arr, field)
    except InputError as exc:
        raise HTTPFieldError(422, field, str(exc)) from None


def decode_mask(data: bytes, field: str, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Upload -> (H, W) uint8 {0, 1}. Palette/gray PNGs are read as their indices (like imageio)."""
    check_size(data, field, max_bytes)
    arr = None
    size = _header_size(data)
    if size is not None:
        _check_pixels(size[0], size[1], field, max_pixels)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            if im.mode in ("P", "L", "1", "I", "I;16"):
                arr = apply_orientation(np.asarray(im), orientation_of(data))
    if arr is None:
        arr = _decode(data, field, max_pixels, "mask")
    try:
        return load_mask(arr, field)
    except InputError as exc:
        raise HTTPFieldError(422, field, str(exc)) from None
