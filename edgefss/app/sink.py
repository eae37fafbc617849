"""Where annotated frames go: a window, a video file, or a folder of PNGs.

Video files are written to a temporary name and renamed when closed, so an interrupted demo never
leaves a half-written file under the requested name. PNGs are written atomically one by one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgefss.errors import InputError, require
from edgefss.runtime.visualize import write_png

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


class FrameSink:
    """Base class: `write(name, rgb)` one annotated (H, W, 3) uint8 RGB frame; returns False to stop."""

    def write(self, name: str, rgb: np.ndarray) -> bool:
        raise NotImplementedError

    def close(self, ok: bool = True) -> None:
        pass


class PngSink(FrameSink):
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, name, rgb):
        write_png(self.folder / f"{name}.png", rgb)
        return True


class VideoSink(FrameSink):
    def __init__(self, path: Path, fps: float):
        self.cv2 = require("cv2", "writing videos")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self.fourcc = self.cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        self.fps = fps
        self.writer = None

    def write(self, name, rgb):
        if self.writer is None:  # the frame size is known only now
            h, w = rgb.shape[:2]
            self.writer = self.cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise InputError(f"output: OpenCV cannot write '{self.path}' ({self.path.suffix}); try a .avi file or a folder for PNGs")
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        return True

    def close(self, ok=True):
        if self.writer is not None:
            self.writer.release()
            if ok:
                os.replace(self.tmp, self.path)
        if self.tmp.exists():
            self.tmp.unlink()


class WindowSink(FrameSink):
    """cv2.imshow window; `q` or Esc stops."""

    def __init__(self, title: str = "edgefss demo"):
        self.cv2 = require("cv2", "showing a window")
        self.title = title

    def write(self, name, rgb):
        self.cv2.imshow(self.title, rgb[:, :, ::-1])
        return (self.cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self, ok=True):
        self.cv2.destroyWindow(self.title)


def open_sink(output, fps: float | None) -> FrameSink:
    """output: None = window; '*.mp4|.avi|.mkv|.mov' = video; anything else = folder of PNGs."""
    if output is None:
        return WindowSink()
    path = Path(output)
    if path.suffix.lower() in VIDEO_CODECS:
        return VideoSink(path, fps or 25.0)
    if path.exists() and not path.is_dir():
        raise InputError(f"output: '{path}' exists and is not a folder; expected a video file (.mp4, .avi) or a folder for PNGs")
    return PngSink(path)
