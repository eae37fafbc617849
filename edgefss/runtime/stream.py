"""Streams: a bounded two-stage pipeline over video/camera frames (torch-free).

While the head of frame t runs in the caller's thread, one worker thread reads frame t+1 and runs
the query encoder on it. Engines release the GIL while they run, so the two stages overlap on
the cores; the queue between them holds at most `depth` encoded frames, so memory stays bounded
and a slow consumer slows the reader instead of buffering the whole video.

Thread budget (edgefss/threads.py): each stage's engine runs its own intra-op pool. Two pools of
N threads on N cores spin against each other, so frames overlap only when the Segmenter was
loaded with `threads <= usable_cpus() // 2` (see `stream_threads`), or runs on a GPU; otherwise
the stream runs the frames one after the other (same outputs) and says why once.

Contract (`Segmenter.predict_stream`): iterator in, iterator out, one Prediction per frame in
input order; an exception raised for a frame (unreadable image, engine error) or by the input
iterator surfaces at that frame's place; breaking out of the loop (or closing the iterator)
stops the worker after its current step.
"""

from __future__ import annotations

import queue
import threading
import warnings
from typing import Callable, Iterable, Iterator

from edgefss.threads import usable_cpus

_END, _OK, _ERR = "end", "ok", "err"
_POLL_S = 0.05  # how often a worker blocked on a full queue checks whether the consumer left


def stream_threads() -> int:
    """Intra-op threads per engine that let the stream's two stages run side by side without
    oversubscribing this process's CPUs: max(1, usable_cpus() // 2)."""
    return max(1, usable_cpus() // 2)


def can_overlap(threads: int | None, device: str | None = "cpu") -> tuple[bool, str]:
    """Whether the encoder and head stages may run at the same time, and why not.

    Args:
        threads: the engine's intra-op threads (None: the engine's default, usually all cores).
        device: the engine's device ('cpu', 'cuda', 'GPU', ...).
    """
    if device is not None and str(device).lower() not in ("cpu",):
        return True, ""
    n = usable_cpus()
    if n < 2:
        return False, f"this process may use {n} CPU, so the encoder and head stages cannot overlap"
    if threads is None or 2 * threads > n:
        t = "the engine's default (all cores)" if threads is None else f"{threads}"
        return False, (f"the Segmenter's engines use {t} threads each; two stages running at once would "
                       f"oversubscribe the {n} usable CPUs. Load it with threads={stream_threads()} "
                       "(edgefss.runtime.stream.stream_threads()) for frames to overlap")
    return True, ""


def pipelined(items: Iterable, first: Callable, second: Callable, depth: int = 1,
              overlap: bool = True) -> Iterator:
    """Yield `second(first(x))` for every x of `items`, in order.

    With `overlap`, `first` runs (and `items` is iterated) in one worker thread, at most `depth`
    results ahead of `second`, which runs in the caller's thread. Without it, both run in the
    caller's thread one item at a time (the reference the overlapped form must equal).

    Raises:
        whatever `items`, `first` or `second` raise, at the item where it happened (earlier items'
        results are yielded first).
    """
    if not overlap:
        for x in items:
            yield second(first(x))
        return
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for x in items:
                if stop.is_set():
                    return
                if not put((_OK, first(x))):
                    return
        except BaseException as exc:  # handed to the consumer, raised there at this item's place
            put((_ERR, exc))
            return
        put((_END, None))

    worker = threading.Thread(target=work, name="edgefss-stream-encoder", daemon=True)
    worker.start()
    try:
        while True:
            kind, val = q.get()
            if kind == _END:
                return
            if kind == _ERR:
                raise val
            yield second(val)
    finally:
        stop.set()  # early break, consumer error or normal end: the worker stops after its current step
        worker.join()


def predict_stream(seg, frames: Iterable, refine_steps: int = 0, depth: int = 1) -> Iterator:
    """`Segmenter.predict_stream`: Predictions of `frames` (paths or (H, W, 3) uint8 RGB arrays),
    in order, each equal to `seg.predict(frame, refine_steps)`; see the module docstring."""
    ok, why = can_overlap(getattr(seg, "threads", None), getattr(seg.backend, "device", "cpu"))
    if not ok:
        warnings.warn(f"predict_stream: frames run one after the other: {why}", stacklevel=3)
    return pipelined(frames, lambda f: seg._predict_start(f, refine_steps, None), seg._predict_finish,
                     depth=depth, overlap=ok)
