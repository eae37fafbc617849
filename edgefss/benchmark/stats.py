"""Timing statistics and the rules that decide whether a measurement can be trusted (NumPy only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

AGREE_TOL = 0.10  # two runs (halves of one run, or two invocations) must agree within 10 %


def summarize(samples_ms: Sequence[float]) -> dict:
    """Milliseconds -> {'p50', 'p90', 'p10', 'min', 'max', 'spread_pct', 'n'}.

    spread_pct = (p90 - p10) / p50 x 100, the width of the central 80 % relative to the median.
    'median' is kept as an alias of p50 for older readers of latency.json.
    """
    a = np.asarray(samples_ms, np.float64)
    if a.size == 0:
        raise ValueError("summarize: no samples")
    p10, p50, p90 = (float(v) for v in np.percentile(a, [10, 50, 90]))
    return {"p50": p50, "median": p50, "p90": p90, "p10": p10, "min": float(a.min()), "max": float(a.max()),
            "spread_pct": 100.0 * (p90 - p10) / p50 if p50 > 0 else float("nan"), "n": int(a.size)}


def rel_diff(a: float, b: float) -> float:
    """|a - b| / min(a, b) (0 when equal; inf when one is 0 and the other is not)."""
    lo = min(a, b)
    if lo <= 0:
        return 0.0 if a == b else float("inf")
    return abs(a - b) / lo


def is_stable(samples: Sequence[float], tol: float, tail: int = 2) -> bool:
    """True when dropping the last `tail` samples moves the median by at most `tol` (relative)."""
    if len(samples) < tail + 3:
        return False
    return rel_diff(float(np.median(samples)), float(np.median(samples[:-tail]))) <= tol


def halves_agree(samples: Sequence[float], tol: float = AGREE_TOL) -> tuple[bool, float, list[float]]:
    """Medians of the first and second half of the rounds, taken as two consecutive runs.

    Returns:
        (agree, relative difference, [median run 1, median run 2]).
    """
    h = len(samples) // 2
    if h < 1:
        return True, 0.0, [float(np.median(samples))] * 2
    m1, m2 = float(np.median(samples[:h])), float(np.median(samples[h:]))
    d = rel_diff(m1, m2)
    return d <= tol, d, [m1, m2]
