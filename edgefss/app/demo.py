"""The demo loop: load a bundle, set the support set, segment each frame, draw overlays + FPS.

Used by `edgefss demo` and examples/camera_app.py. Imports only the runtime (never torch).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edgefss.app.sink import check_output, open_sink
from edgefss.app.stream import open_source
from edgefss.bundle import unwind_on_signals
from edgefss.errors import InputError, require
from edgefss.runtime import Segmenter
from edgefss.runtime.visualize import overlay


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Attributes:
        bundle: bundle directory written by `edgefss export`.
        support: support image paths; support[i] shows classes[i] (repeat a name for K shots).
        classes: class names, one per support image.
        masks: optional mask paths, one per support image (None: on-device pseudo-masks).
        source: camera index, video file or folder of images.
        output: None = show a window; a .mp4/.avi path = annotated video; else a folder of PNGs.
        backend, device, threads: passed to Segmenter.load (None = the bundle's backend / engine default).
        max_frames: stop after this many frames (None = until the source ends or `q`).
        alpha: overlay opacity.
    """

    bundle: str
    support: tuple
    classes: tuple
    masks: tuple | None = None
    source: str | int = 0
    output: str | None = None
    backend: str | None = None
    device: str | None = None
    threads: int | None = None
    max_frames: int | None = None
    alpha: float = 0.5


@dataclass
class DemoStats:
    """frames: frames segmented; fps: mean end-to-end frames/s; latency_ms: per-frame predict()
    times in ms; present: per class, the number of frames where it was found; skipped: unreadable
    source frames; resized: frames of another size resized to the video's."""

    frames: int = 0
    fps: float = 0.0
    latency_ms: list = field(default_factory=list)
    present: dict = field(default_factory=dict)
    skipped: int = 0  # source frames that could not be read (each named on stderr)
    resized: int = 0  # frames resized to the video's size (said once on stderr)


def draw_hud(rgb: np.ndarray, fps: float, latency_ms: float) -> np.ndarray:
    """Write 'FPS x | y ms' in the bottom-left corner of an (H, W, 3) uint8 RGB frame (in place)."""
    cv2 = require("cv2", "drawing the FPS counter")
    text = f"{fps:5.1f} FPS | {latency_ms:6.1f} ms"
    scale = max(0.4, min(rgb.shape[:2]) / 800)
    thick = max(1, int(round(scale * 1.5)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    y = rgb.shape[0] - 6
    rgb[max(0, y - h - 6):, : w + 12] //= 3  # darken behind the text for contrast
    cv2.putText(rgb, text, (6, y - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return rgb


def _check_not_source(source, output) -> None:
    """The annotated output must not replace the source (a folder of frames, a video file)."""
    from pathlib import Path

    from edgefss.fsio import same_file

    if output is None or isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return
    if Path(source).exists() and same_file(source, output):
        raise InputError(f"output: '{output}' is the source itself; choose another output so the "
                         "frames are not overwritten")


def _headless() -> bool:
    return os.name != "nt" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")


def _stream(seg, src, pending: deque):
    """seg.predict_stream over the source's frames; each (name, frame) is queued in `pending` as
    it is read, so the caller pairs every Prediction with its frame (results come in order)."""
    def frames():
        for name, frame in src:
            pending.append((name, frame))
            yield frame

    with warnings.catch_warnings():
        # without room for a second frame in flight the stream runs frame by frame, as this loop always did
        warnings.filterwarnings("ignore", message="predict_stream: frames run one after the other")
        return seg.predict_stream(frames())


def run_demo(cfg: DemoConfig, segmenter: Segmenter | None = None, progress=None) -> DemoStats:
    """Run the demo loop until the source ends, `max_frames` or `q` in the window.

    Args:
        cfg: see DemoConfig.
        segmenter: an already loaded Segmenter (else one is loaded from cfg.bundle).
        progress: optional callable(stats, frame_name) called after each frame.

    Returns:
        DemoStats.

    Raises:
        InputError: bad source/output/support, or no output given on a machine without a display.
    """
    if cfg.output is None and _headless():
        raise InputError("output: no display found (DISPLAY unset); pass --output out.mp4 or --output frames/ for headless mode")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise InputError(f"max_frames: expected a positive int or None, got {cfg.max_frames!r}")
    check_output(cfg.output)
    _check_not_source(cfg.source, cfg.output)
    seg = segmenter or Segmenter.load(cfg.bundle, backend=cfg.backend, threads=cfg.threads, device=cfg.device)
    seg.set_support(list(cfg.support), list(cfg.classes), None if cfg.masks is None else list(cfg.masks))
    stats = DemoStats(present={c: 0 for c in seg.classes})
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the video written so far is finished and kept
    with unwind_on_signals(), open_source(cfg.source) as src:
        sink = open_sink(cfg.output, src.fps)
        ok, ema, t_start = False, None, time.perf_counter()
        pending, preds = deque(), None
        try:
            # predict_stream ("auto", runtime/stream.py): on a CPU, CPUs // threads frames in flight when
            # --threads <= half the CPUs (results still in order); on a GPU the encoder of frame t+1
            # beside the head of frame t; else one by one
            preds = _stream(seg, src, pending)
            t_prev = time.perf_counter()
            for pred in preds:
                name, frame = pending.popleft()
                now = time.perf_counter()
                gap, t_prev = now - t_prev, now  # time between results: what the FPS counter shows
                dt = pred.timings["total"] / 1e3  # this frame's own latency, read to result
                ema = gap if ema is None else 0.9 * ema + 0.1 * gap  # smoothed so the counter is readable
                vis = overlay(frame, pred.mask, pred.classes, alpha=cfg.alpha, probs=pred.probs)
                draw_hud(vis, 1.0 / max(ema, 1e-9), dt * 1e3)
                stats.frames += 1
                stats.latency_ms.append(dt * 1e3)
                for c, p in zip(pred.classes, pred.present):
                    stats.present[c] += int(bool(p))
                more = sink.write(name, vis)  # written before it is reported as processed
                if progress is not None:
                    progress(stats, name)
                if not more or (cfg.max_frames and stats.frames >= cfg.max_frames):
                    break
            ok = True
        finally:
            if preds is not None:
                preds.close()  # stops the encoder thread before the source is closed
            stats.skipped = getattr(src, "skipped", 0)
            stats.resized = getattr(sink, "resized", 0)
            note = sink.close(ok)
            if note:
                print(note, file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start
    stats.fps = stats.frames / elapsed if elapsed > 0 else 0.0
    return stats
