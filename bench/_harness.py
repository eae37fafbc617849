"""Timing helpers for the kernel benchmarks in bench/ (ops.py, profile_tlg_head.py).

The latency benchmark itself lives in edgefss/benchmark/ (statistics, machine facts, outputs);
this module keeps the small interleaved timer the kernel scripts use on top of it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.benchmark.machine import cpu_info, peak_rss_mb  # noqa: E402,F401  (re-exported for bench/)
from edgefss.benchmark.stats import summarize  # noqa: E402


def stats_ms(samples_s: list[float]) -> dict:
    """Seconds -> summarize() in milliseconds ('median' = 'p50', 'p90', 'spread_pct', 'n', ...)."""
    return summarize([s * 1e3 for s in samples_s])


def time_calls(fn: Callable[[], object], warmup: int, repeat: int) -> dict:
    """Run fn `warmup` times untimed, then `repeat` timed calls; returns stats_ms of the timed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return stats_ms(samples)


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeat: int,
                     budget_s: float | None = None) -> dict[str, dict]:
    """Time several implementations of one case round-robin, so that load changes on a shared
    machine hit all of them alike; returns {name: stats_ms}.

    Each gets `warmup` untimed calls, then up to `repeat` timed rounds; once an implementation
    has spent `budget_s` seconds in timed calls it leaves the rotation (at least one sample each).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            if samples[name] and budget_s is not None and sum(samples[name]) > budget_s:
                continue
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return {k: stats_ms(v) for k, v in samples.items()}


def images(folder: Path | None, n: int, per_folder: int | None = None) -> list:
    """n RGB uint8 (H,W,3) images: the first n .jpg/.png of `folder`, or of the DAVIS subset's
    class folders in ../shared/data (sorted; at most `per_folder` from each, to mix classes).

    Raises SystemExit naming the folders when fewer than n images are found.
    """
    roots = [folder] if folder else sorted((REPO.parent / "shared" / "data" / "davis2016_val_subset").glob("*/images"))
    files = []
    for r in roots:
        files += sorted(p for p in Path(r).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:per_folder]
    if len(files) < n:
        raise SystemExit(f"need {n} images, found {len(files)} under {[str(r) for r in roots]}")
    from edgefss.transforms import load_image

    return [load_image(p) for p in files[:n]]
