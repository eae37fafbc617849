"""Admission control: a fixed number of running predictions, a bounded wait, 429 beyond it.

A request to a compute route is admitted before its body is read, or refused at once with 429
when `max_inflight + max_queue` requests are already admitted, so nothing ever queues without
bound (a slow upload holds its place; that is the bound working). Admitted requests run their
model call on a thread pool of exactly `max_inflight` threads; the ones waiting for a thread are
the queue depth. MJPEG streams have their own limit (`max_streams`).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor


class Admission:
    """Counts admitted requests; `try_enter` is False when full. Event-loop and thread safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.admitted = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.admitted >= self.capacity:
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.admitted -= 1


class ComputePool:
    """`max_inflight` worker threads for model calls; `running` and `waiting` feed the metrics."""

    def __init__(self, max_inflight: int):
        self.pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="edgefss-serve")
        self.running = 0
        self.waiting = 0
        self._lock = threading.Lock()

    async def run(self, fn, *args):
        with self._lock:
            self.waiting += 1

        def call():
            with self._lock:
                self.waiting -= 1
                self.running += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.running -= 1

        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
