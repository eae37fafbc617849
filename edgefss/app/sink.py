"""Where annotated frames go: a window, a video file, or a folder of PNGs.

A video is written to a temporary name and renamed when closed, whether the demo ended, was
interrupted (Ctrl-C, SIGTERM) or hit a bad frame: every frame written so far is kept in a playable
file (a temp left by SIGKILL is removed by the next demo writing that name). Frames of another size
than the first are resized to it (said once), never dropped. PNGs are written atomically one by
one, under unique names.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from edgefss.errors import InputError, require
from edgefss.fsio import OutputError, unique_path, write_png_atomic
from edgefss.signals import deferred_signals

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class FrameSink:
    """Base class: `write(name, rgb)` one annotated (H, W, 3) uint8 RGB frame; returns False to stop.
    `close(ok)` finishes the output and returns a line saying what was written (or None).
    Subclasses implement `_put`, which writes the frame and counts it in `frames`."""

    frames = 0

    def write(self, name: str, rgb: np.ndarray) -> bool:
        # a Ctrl-C/SIGTERM between writing a frame and counting it would make the "kept the N
        # frames" line disagree with the file: the two happen together, the signal right after
        with deferred_signals():
            return self._put(name, rgb)

    def _put(self, name: str, rgb: np.ndarray) -> bool:
        raise NotImplementedError

    def close(self, ok: bool = True) -> str | None:
        return None


class PngSink(FrameSink):
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"output: cannot create the folder '{self.folder}': {exc.strerror}") from exc
        self.taken: set = set()
        self.frames = 0

    def _put(self, name, rgb):
        # two sources may yield one name (0001.jpg, 0001.png): never overwrite this run's frames
        write_png_atomic(unique_path(self.folder / f"{name}.png", self.taken), rgb, what="output")
        self.frames += 1
        return True

    def close(self, ok=True):
        return f"wrote {self.frames} frames to '{self.folder}'" if not ok else None


class VideoSink(FrameSink):
    def __init__(self, path: Path, fps: float, log=_stderr):
        self.cv2 = require("cv2", "writing videos")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"output: cannot create the folder '{self.path.parent}': {exc.strerror}") from exc
        _remove_dead_temps(self.path)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self.fourcc = self.cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        self.fps = fps
        self.writer = None
        self.size = None
        self.frames = 0
        self.resized = 0
        self.log = log

    def _put(self, name, rgb):
        h, w = rgb.shape[:2]
        if self.writer is None:  # the frame size is known only now
            self.size = (w, h)
            self.writer = self.cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                raise InputError(f"output: OpenCV cannot write '{self.path}' ({self.path.suffix}); try a .avi file or a folder for PNGs")
        elif (w, h) != self.size:
            # OpenCV's writer silently drops frames of another size: resize them instead
            if not self.resized:
                self.log(f"note: frame '{name}' is {w}x{h}, the video is {self.size[0]}x{self.size[1]}: "
                         "frames of another size are resized to the first frame's size")
            self.resized += 1
            rgb = self.cv2.resize(rgb, self.size, interpolation=self.cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames += 1
        return True

    def close(self, ok=True):
        """Finish the file; kept under its name when at least one frame was written, ok or not."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            if self.frames:
                try:
                    os.replace(self.tmp, self.path)
                except OSError as exc:
                    raise OutputError(f"output: cannot write '{self.path}': {exc.strerror}") from exc
        if self.tmp.exists():
            self.tmp.unlink()
        if not ok and self.frames:
            return f"stopped early: kept the {self.frames} frames written so far in '{self.path}'"
        return None


def _remove_dead_temps(path: Path) -> None:
    """Temps of demos killed with SIGKILL (`.STEM.PID.tmpSUFFIX`, PID no longer running)."""
    from edgefss.bundle import _pid_alive

    pat = re.compile(re.escape(f".{path.stem}.") + r"(\d+)" + re.escape(f".tmp{path.suffix}") + "$")
    for p in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        m = pat.match(p.name)
        if m and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)


class WindowSink(FrameSink):
    """cv2.imshow window; `q` or Esc stops."""

    def __init__(self, title: str = "edgefss demo"):
        self.cv2 = require("cv2", "showing a window")
        self.title = title

    def _put(self, name, rgb):
        self.cv2.imshow(self.title, rgb[:, :, ::-1])
        return (self.cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self, ok=True):
        self.cv2.destroyWindow(self.title)
        return None


def check_output(output) -> None:
    """Refuse an output the demo cannot write before any work: a suffix that is neither a video
    nor a folder (e.g. .gif would otherwise become a folder), or an existing file as the PNG folder."""
    if output is None:
        return
    path = Path(output)
    if path.suffix.lower() in VIDEO_CODECS:
        if path.is_dir():
            raise InputError(f"output: '{path}' is an existing folder; expected a video file name")
        return
    if path.exists() and not path.is_dir():
        raise InputError(f"output: '{path}' exists and is not a folder; expected a video file "
                         f"({', '.join(VIDEO_CODECS)}) or a folder for PNGs")
    if path.suffix and not path.is_dir():
        raise InputError(f"output: '{path}' has the suffix '{path.suffix}', which the demo cannot write; "
                         f"expected a video file ({', '.join(VIDEO_CODECS)}) or a folder name without a "
                         "suffix for PNGs")


def open_sink(output, fps: float | None, log=_stderr) -> FrameSink:
    """output: None = window; '*.mp4|.avi|.mkv|.mov' = video; a folder (no suffix) = PNGs."""
    if output is None:
        return WindowSink()
    check_output(output)
    path = Path(output)
    if path.suffix.lower() in VIDEO_CODECS:
        return VideoSink(path, fps or 25.0, log=log)
    return PngSink(path)
