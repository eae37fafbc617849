"""How many CPU threads an engine may use: never more than this process may run on."""

from __future__ import annotations

import os
import warnings


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_threads(threads: int | None) -> int | None:
    """`threads` capped at usable_cpus(), with a warning when capped (oversubscribed intra-op
    pools spin against each other: 256 threads on 2 cores ran 28x slower). None stays None."""
    if threads is None:
        return None
    n = usable_cpus()
    if threads > n:
        warnings.warn(f"threads: {threads} asked for, but this process may use {n} CPU(s); using {n}",
                      stacklevel=3)
        return n
    return threads
