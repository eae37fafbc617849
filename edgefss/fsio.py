"""Writing output files safely: atomically (temp file + rename), never over an input, and with
one clear error naming the path when the disk is full, read-only, or a parent is a file.

Every writer of user-visible outputs (predict masks and overlays, demo frames) goes through here.
Never imports torch.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from edgefss.errors import EdgeFSSError, InputError, require
from edgefss.signals import deferred_signals


class OutputError(EdgeFSSError, OSError):
    """An output file could not be written (disk full, read-only, permissions, bad parent)."""


def _umask() -> int:
    from edgefss.bundle import _umask as umask

    return umask()


def _why(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        for p in [path.parent, *path.parent.parents]:
            if p.exists() and not p.is_dir():
                return f"'{p}' is a file, not a folder"
    return exc.strerror or str(exc)


def write_bytes_atomic(path, data: bytes, what: str = "output") -> Path:
    """Write `data` to `path` through a temp file in the same folder and a rename, so `path` holds
    the old content or the new, never half of it. Creates missing parent folders.

    Raises:
        OutputError: "<what>: cannot write '<path>': <reason>", nothing left behind.
    """
    path = Path(path)
    # a signal inside mkstemp or between the rename and `tmp = None` could leave a temp behind or
    # count a written file as failed: one write is short, so Ctrl-C/SIGTERM wait for its end
    with deferred_signals():
        return _write_bytes_atomic(path, data, what)


def _write_bytes_atomic(path: Path, data: bytes, what: str) -> Path:
    tmp = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: outputs are ordinary files
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"{what}: cannot write '{path}': {_why(exc, path)}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def encode_png(image: np.ndarray, rgb: bool = True, palette: np.ndarray | None = None) -> bytes:
    """PNG bytes of (H, W) uint8 (gray, or indices with `palette` (n, 3) uint8 RGB -> a palette
    PNG) or (H, W, 3) uint8 RGB (rgb=True; BGR otherwise)."""
    image = np.ascontiguousarray(image)
    if palette is not None:
        Image = require("PIL.Image", "writing palette PNGs")
        im = Image.fromarray(image.astype(np.uint8), mode="P")
        im.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()
    cv2 = require("cv2", "writing PNGs")
    arr = image[:, :, ::-1] if (rgb and image.ndim == 3) else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise InputError(f"could not encode {image.shape} {image.dtype} as PNG")
    return buf.tobytes()


def write_png_atomic(path, image: np.ndarray, rgb: bool = True, palette=None, what: str = "output") -> Path:
    """encode_png + write_bytes_atomic. The name is kept as given (`X.PNG` stays `X.PNG`)."""
    return write_bytes_atomic(path, encode_png(image, rgb=rgb, palette=palette), what)


def same_file(a, b) -> bool:
    """True when paths a and b name the same file (same path once resolved, or hard links)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def check_not_input(out, inputs: dict, what: str = "--out") -> None:
    """Refuse to write `out` over one of `inputs` ({path: 'which flag gave it'}).

    Raises:
        InputError: naming the output, the input and its flag.
    """
    for p, flag in inputs.items():
        if p is not None and not isinstance(p, np.ndarray) and same_file(out, p):
            raise InputError(f"{what}: writing '{out}' would overwrite the input '{p}' ({flag}); "
                             "choose another output name")


def unique_path(path: Path, taken: set) -> Path:
    """`path`, or `stem-2.suffix`, `stem-3.suffix`, ... : the first whose normalised form is not in
    `taken` (which is updated)."""
    key = lambda p: os.path.normcase(os.path.abspath(p))  # noqa: E731
    cand, i = Path(path), 2
    while key(cand) in taken:
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        i += 1
    taken.add(key(cand))
    return cand
