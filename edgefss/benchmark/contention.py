"""Who else used the CPUs while a sample was timed (Linux /proc; NumPy-free, torch-free).

A wall-clock sample can be slow for two different reasons: the engine did more work (its own CPU
time grows), or it got less of the machine (other processes ran, or the hypervisor took the cores:
"steal"). The benchmark records both per timed query so that a run whose halves disagree can say
which one it was, instead of leaving the spread unexplained.

A `Window` is taken around one sample: `w = Window(); ...; d = w.close()` gives
{'wall_ms', 'own_cpu_ms', 'other_cpu_ms', 'steal_ms'}: own = this process (all its threads),
other = every other process's busy time on the machine, steal = time the hypervisor ran someone
else on our virtual CPUs. On systems without /proc/stat only wall and own CPU are given.
"""

from __future__ import annotations

import os
import time

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _proc_stat() -> tuple[float, float] | None:
    """(busy seconds, steal seconds) summed over all CPUs since boot, or None off Linux.

    busy = user + nice + system + irq + softirq (iowait and idle are not busy; guest time is
    already inside user)."""
    try:
        with open("/proc/stat", "rb") as f:
            head = f.readline().split()
    except OSError:
        return None
    if not head or head[0] != b"cpu":
        return None
    v = [int(x) for x in head[1:]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) * _TICK_S, steal * _TICK_S


class Window:
    """Open at the start of a timed sample; `close()` returns the times in ms (see module doc)."""

    def __init__(self):
        self._stat = _proc_stat()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def close(self) -> dict:
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._cpu
        out = {"wall_ms": wall * 1e3, "own_cpu_ms": own * 1e3}
        end = _proc_stat()
        if self._stat is not None and end is not None:
            busy, steal = end[0] - self._stat[0], end[1] - self._stat[1]
            # the counters tick at 100 Hz: a short sample may read a tick more or less than it used
            out["other_cpu_ms"] = max(0.0, busy - own) * 1e3
            out["steal_ms"] = max(0.0, steal) * 1e3
        return out


def share_pct(d: dict, cpus: int) -> float | None:
    """Share of the machine (cpus x wall) that other processes and the hypervisor took during one
    `Window`, in %; None without /proc/stat."""
    if "other_cpu_ms" not in d or d["wall_ms"] <= 0:
        return None
    return 100.0 * (d["other_cpu_ms"] + d["steal_ms"]) / (cpus * d["wall_ms"])


def explain(wall: list[float], own_cpu: list[float], foreign: list[float | None]) -> str:
    """One clause saying what differed between the two halves of a run whose wall medians disagree.

    Args:
        wall, own_cpu: medians of the first and second half of the rounds, ms.
        foreign: median `share_pct` of each half (None entries without /proc/stat).
    """
    own = f"own CPU time {own_cpu[0]:.0f} vs {own_cpu[1]:.0f} ms"
    if None in foreign:
        return own
    f0, f1 = foreign
    slower = 0 if wall[0] > wall[1] else 1
    if (f0, f1)[slower] - (f0, f1)[1 - slower] >= 5.0:
        return (f"other processes/steal took {f0:.0f} % vs {f1:.0f} % of the CPUs: contention from outside "
                f"the engine ({own})")
    return (f"other processes/steal took {f0:.0f} % vs {f1:.0f} % of the CPUs, so not contention from "
            f"outside: the same work ran slower on the cores ({own}; on a shared VM the host's doing, "
            "docs/variance.md)")
