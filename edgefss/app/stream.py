"""Frame sources for the demo: a camera index, a video file or a folder of images.

Every source yields `(name, frame)` with frame an (H, W, 3) uint8 RGB array, and is a context
manager that releases the camera/file. Bad sources raise InputError naming the source.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from edgefss.errors import InputError, require
from edgefss.transforms import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class FrameSource:
    """Base class: iterate `(name, rgb)` pairs; `fps` is the nominal rate or None when unknown."""

    fps: float | None = None
    description = ""

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class FolderSource(FrameSource):
    """Images of a folder in sorted name order (frame sequences such as DAVIS).

    A frame that cannot be read is skipped with a line naming it (`skipped` counts them), so one
    bad file does not end the video. Names are the file stems, or `stem_suffix` where two files
    share a stem (0001.jpg, 0001.png)."""

    def __init__(self, folder: Path, log=None):
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(f"source: folder '{folder}' holds no images; expected {', '.join(IMAGE_SUFFIXES)} files")
        self.description = f"folder '{folder}' ({len(self.files)} images)"
        stems = [p.stem for p in self.files]
        self.names = [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix[1:]}" for p in self.files]
        self.skipped = 0
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def __iter__(self):
        for name, p in zip(self.names, self.files):
            try:
                frame = load_image(p, f"source frame '{p}'")
            except InputError as exc:
                self.skipped += 1
                self.log(f"skipped frame: {exc}")
                continue
            yield name, frame


class CaptureSource(FrameSource):
    """An OpenCV VideoCapture over a camera index or a video file."""

    def __init__(self, target, description: str):
        cv2 = require("cv2", "reading cameras and videos")
        self._cv2 = cv2
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            hint = "is a camera connected and not in use?" if isinstance(target, int) else "expected a readable video file"
            raise InputError(f"source: could not open {description}; {hint}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        self.description = description

    def __iter__(self):
        i = 0
        while True:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                return
            yield f"{i:06d}", np.ascontiguousarray(bgr[:, :, ::-1])
            i += 1

    def close(self) -> None:
        self.cap.release()


def open_source(spec) -> FrameSource:
    """Open a frame source.

    Args:
        spec: int or digit string = camera index; path to a folder of images; path to a video file.

    Raises:
        InputError: naming `spec` when it is none of these or cannot be opened.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return CaptureSource(int(spec), f"camera {int(spec)}")
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise InputError(f"source: '{path}' is a single image; expected a camera index, a video file or a folder of images")
        return CaptureSource(str(path), f"video '{path}'")
    raise InputError(f"source: '{spec}' not found; expected a camera index (0, 1, ...), a video file or a folder of images")
