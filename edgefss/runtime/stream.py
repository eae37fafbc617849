"""Streams: Predictions for video/camera frames, faster than one predict after another (torch-free).

Three schedules (`Segmenter.predict_stream(frames, schedule=...)`), all giving each frame exactly
`seg.predict(frame)` (bit-identical), in input order:

- "frames": W frames in flight. W worker threads each run the whole predict (encoder + head) on
  their own frame with engines of T intra-op threads (T = the `threads` the Segmenter was loaded
  with, W = usable_cpus() // T). Engines release the GIL, so the W frames run on the W·T cores
  at once. ONNX Runtime sessions run concurrent calls side by side (each call with intra_op = T
  runs on its calling thread plus T-1 pool threads); OpenVINO gets a second compile of the graphs
  with NUM_STREAMS = W and INFERENCE_NUM_THREADS = W·T (`OpenVinoBackend.concurrent_runs`), since
  its single-stream latency compile would serialize the requests (that compile costs memory:
  each CPU stream holds its own intermediates: 5.3 vs 1.9 GB peak RSS for TLG at 400 px, docs/streams.md).
- "pipeline": two stages. While the head of frame t runs in the caller's thread, one worker reads
  frame t+1 and runs its query encoder; the queue between them holds `depth` encoded frames.
- "sequential": predict one frame after the other in the caller's thread (the reference).

Why "auto" picks what it picks (`choose_schedule`; figures and commands in docs/streams.md): the
head is ~85 % of a TLG query, so a two-stage pipeline with 1 thread per stage is bounded by a
1-thread head; on the idle 2-core machine `bench/latency.py` measured it at 0.49-0.67x the
single-query rate. Frame parallelism splits no frame: with W frames of T-thread predicts on W*T
idle cores it reaches W * t(W*T threads) / t(T threads) of the single-query rate, i.e. exactly
what the engines lose by spreading one frame over more threads (`python bench/stream_schedules.py
BUNDLE` prints the ratio of each schedule and that bound from interleaved rounds). Hence on a CPU:
  threads=T given and usable_cpus() >= 2T  ->  "frames" with W = usable_cpus() // T;
  otherwise (threads=None means every core per engine, or one CPU)  ->  "sequential", with a
  warning saying to load with threads=stream_threads().
On a GPU device the engines' CPU pools are not the work and the encoder of frame t+1 can run while
the head of frame t occupies the device: "pipeline". The choice is logged once per stream
(logger "edgefss.stream"); the sequential fallback is a UserWarning.

Contract (every schedule): iterator in, iterator out, one Prediction per frame in input order; the
input iterator is consumed by one thread only (camera/video readers are not thread-safe): the
caller's thread for "frames" and "sequential", the encoder worker for "pipeline". An exception
raised for a frame (unreadable image, engine error) or by the input iterator surfaces at that
frame's place, after every earlier frame was yielded. Memory is bounded: "frames" holds at most
W frames in flight (frame t+W is read only after frame t was yielded), "pipeline" `depth` + 1.
Breaking out of the loop (or closing the iterator) stops the workers after their current frame
and joins them.
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

from edgefss.errors import InputError
from edgefss.threads import usable_cpus

SCHEDULES = ("auto", "frames", "pipeline", "sequential")
FRAME_WORKER = "edgefss-stream-frame"  # thread-name prefix of the "frames" schedule's workers
_log = logging.getLogger("edgefss.stream")
_END, _OK, _ERR = "end", "ok", "err"
_POLL_S = 0.05  # how often a worker blocked on a full queue checks whether the consumer left


def stream_threads() -> int:
    """Intra-op threads per engine that let the stream's two stages run side by side without
    oversubscribing this process's CPUs: max(1, usable_cpus() // 2)."""
    return max(1, usable_cpus() // 2)


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


def choose_schedule(threads: int | None, device: str | None = "cpu") -> tuple[str, int, str]:
    """The "auto" rule of the module docstring.

    Args:
        threads: the Segmenter's engine intra-op threads as loaded (None: the engine's default).
        device: the engine's device ('cpu', 'cuda', 'GPU', ...).

    Returns:
        (schedule, workers, why): workers = frames in flight for "frames" (1 otherwise); why = one
        sentence for the log or the warning.
    """
    if device is not None and str(device).lower() != "cpu":
        return "pipeline", 1, (f"device {device!r}: the encoder of frame t+1 runs while the head of frame t "
                               "occupies the device")
    n = usable_cpus()
    if threads is not None and n >= 2 * int(threads):
        w = n // int(threads)
        return "frames", w, (f"{w} frames in flight, each predict with {threads}-thread engines on the {n} "
                             "usable CPUs")
    t = "the engine's default (all cores)" if threads is None else f"{threads}"
    return "sequential", 1, (f"the Segmenter's engines use {t} threads each, so a second frame in flight "
                             f"would oversubscribe the {n} usable CPU(s). Load it with threads={stream_threads()} "
                             "(edgefss.runtime.stream.stream_threads()) for frames to run in parallel")


class _Failed:
    """The input iterator's exception, held at the place of the frame it failed to produce."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def frame_parallel(items: Iterable, fn: Callable, workers: int, initializer: Callable | None = None) -> Iterator:
    """Yield `fn(x)` for every x of `items`, in order, with up to `workers` calls running at once.

    `items` is iterated in the caller's thread, and item t+workers is pulled only after the result
    of item t was yielded, so at most `workers` items are in flight. `initializer` runs once in
    each worker thread before its first call (e.g. binding an engine's per-thread stream).

    Raises:
        whatever `items` or `fn` raise, at the item where it happened (earlier results first).
    """
    workers = max(1, int(workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=FRAME_WORKER, initializer=initializer)
    window: deque = deque()
    it = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(window) < workers:
                try:
                    x = next(it)
                except StopIteration:
                    exhausted = True
                except BaseException as exc:  # raised at this item's place, after earlier results
                    window.append(_Failed(exc))
                    exhausted = True
                else:
                    window.append(pool.submit(fn, x))
            if not window:
                return
            head = window.popleft()
            if isinstance(head, _Failed):
                raise head.exc
            yield head.result()
    finally:
        # early break, error or normal end: queued frames are dropped, running ones finish, workers exit
        for f in window:
            if isinstance(f, Future):
                f.cancel()
        pool.shutdown(wait=True)


def predict_stream(seg, frames: Iterable, refine_steps: int = 0, schedule: str = "auto",
                   depth: int = 1) -> Iterator:
    """`Segmenter.predict_stream`: Predictions of `frames` (paths or (H, W, 3) uint8 RGB arrays),
    in order, each equal to `seg.predict(frame, refine_steps)`; see the module docstring.

    Raises:
        InputError: `schedule` not one of SCHEDULES.
    """
    if schedule not in SCHEDULES:
        raise InputError(f"schedule: {schedule!r} is not a stream schedule; expected one of {list(SCHEDULES)}")
    threads = getattr(seg, "threads", None)
    device = getattr(seg.backend, "device", "cpu")
    if schedule == "auto":
        schedule, workers, why = choose_schedule(threads, device)
        if schedule == "sequential":
            warnings.warn(f"predict_stream: frames run one after the other: {why}", stacklevel=3)
        else:
            _log.info("predict_stream: schedule %r: %s", schedule, why)
    elif schedule == "frames":
        # asked for explicitly: at least two frames in flight, as many as the thread budget allows
        workers = max(2, usable_cpus() // max(1, threads or usable_cpus()))
    if schedule == "frames":
        bind = getattr(seg.backend, "concurrent_runs", None)  # engines that need a setup for it (OpenVINO)
        init = bind(workers) if bind is not None else None
        return frame_parallel(frames, lambda f: seg.predict(f, refine_steps), workers, initializer=init)
    return pipelined(frames, lambda f: seg._predict_start(f, refine_steps, None), seg._predict_finish,
                     depth=depth, overlap=schedule == "pipeline")
