"""`edgefss predict --source`: files, folders, globs, videos and cameras -> a lazy stream of frames.

    expand_sources(["img.jpg", "photos/", "shots/*.png", "clip.mp4", "0"]) -> [Source, ...]

A folder gives its images in sorted name order (not its subfolders: a folder of frame sequences
or class folders would otherwise be mixed into one stream; pass `dir/**/*.jpg` for that). A glob
gives the images and videos it matches, sorted. Videos and cameras are read frame by frame
through edgefss.app.stream.CaptureSource (the demo's reader), so a long video never sits in
memory. Every error names the flag and the spec given. Torch-free.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefss.app.stream import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from edgefss.errors import InputError

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Source:
    """One input: kind 'image' (path), 'video' (path) or 'camera' (index); spec as given."""

    kind: str
    path: str | int
    spec: str

    @property
    def stem(self) -> str:
        return f"camera{self.path}" if self.kind == "camera" else Path(self.path).stem


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def expand_sources(specs, flag: str = "--source") -> list[Source]:
    """Expand each spec, in the order given.

    Args:
        specs: strings: an image or video file, a folder of images, a glob ('*', '?', '['; '**'
            crosses folders), or a camera index (a non-negative integer).

    Raises:
        InputError: naming `flag` and the spec when it matches nothing or a folder holds no image.
    """
    out: list[Source] = []
    for spec in specs:
        spec = str(spec)
        if spec.isdigit():
            out.append(Source("camera", int(spec), spec))
            continue
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                vids = [p.name for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES]
                hint = (
                    f"; it holds videos ({', '.join(sorted(vids)[:3])}): pass them as --source"
                    if vids
                    else ""
                )
                raise InputError(
                    f"{flag}: folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)}){hint}"
                )
            out += [Source("image", str(p), spec) for p in files]
        elif path.is_file():
            out.append(Source(_kind(path), str(path), spec))
        elif any(c in spec for c in _GLOB_CHARS):
            wanted = IMAGE_SUFFIXES + VIDEO_SUFFIXES
            files = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            files = [p for p in files if p.is_file() and p.suffix.lower() in wanted]
            if not files:
                raise InputError(f"{flag}: no image or video matches the pattern '{spec}'")
            out += [Source(_kind(p), str(p), spec) for p in files]
        else:
            raise InputError(
                f"{flag}: '{spec}' not found; expected an image or video file, a folder of "
                "images, a glob such as 'photos/*.jpg' or a camera index (0, 1, ...)"
            )
    return out


def frame_count(source: Source) -> int | None:
    """Frames `source` will give: 1 for an image, the container's count for a video (None when it
    does not say), None for a camera. Only reads the video's header."""
    if source.kind == "image":
        return 1
    if source.kind == "camera":
        return None
    from edgefss.errors import require

    cv2 = require("cv2", "reading videos")
    cap = cv2.VideoCapture(str(source.path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV's own WARN lines off while a capture opens (a missing camera prints two, each
    backend's guess): the one error line that follows says what went wrong."""
    try:
        import cv2
    except ImportError:  # CaptureSource says which pip line installs it
        cv2 = None
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(old)


def frames(source: Source, max_frames: int | None = None, flag: str = "--source") -> Iterator[tuple]:
    """Yield (name, frame index or None, (H, W, 3) uint8 RGB) of `source`, lazily.

    Images: one item, decoded by edgefss.transforms.load_image (errors name `flag` and the file).
    Videos and cameras: edgefss.app.stream.CaptureSource, at most `max_frames` frames; names are
    '<stem>_<index:06d>'.
    """
    from edgefss.transforms import load_image

    if source.kind == "image":
        yield source.stem, None, load_image(source.path, flag)  # its errors name the file
        return
    from edgefss.app.stream import CaptureSource

    desc = f"camera {source.path}" if source.kind == "camera" else f"video '{source.path}'"
    try:
        with _quiet_opencv():
            cap = CaptureSource(source.path if source.kind == "camera" else str(source.path), desc)
    except InputError as exc:
        raise InputError(f"{flag}: {str(exc).removeprefix('source: ')}") from None
    with cap:
        n = 0
        for _, rgb in cap:
            if max_frames is not None and n >= max_frames:
                break
            yield f"{source.stem}_{n:06d}", n, np.ascontiguousarray(rgb)
            n += 1
        if n == 0:
            raise InputError(
                f"{flag}: {desc} gave no frame; expected a readable video "
                "(is its codec supported by this OpenCV build?)"
            )
