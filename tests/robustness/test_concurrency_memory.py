"""The runtime under load: 4 threads give the serial results, and 1,000 predictions do not grow RSS."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _queries(n, seed=7):
    r = np.random.default_rng(seed)
    return [(r.random((int(r.integers(24, 80)), int(r.integers(24, 80)), 3)) * 255).astype(np.uint8) for _ in range(n)]


def test_four_threads_equal_serial(seg):
    queries = _queries(24)
    serial = [seg.predict(q) for q in queries]
    with ThreadPoolExecutor(4) as ex:
        par = list(ex.map(seg.predict, queries * 2))  # each query twice, interleaved across threads
    for i, p in enumerate(par):
        s = serial[i % len(queries)]
        np.testing.assert_array_equal(p.mask, s.mask)
        np.testing.assert_allclose(p.logits, s.logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(p.probs, s.probs, rtol=1e-5, atol=1e-6)
        assert p.classes == s.classes


def _rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; falls back to ru_maxrss)."""
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_no_memory_growth_over_1000_predictions(seg):
    queries = _queries(8, seed=11)
    for q in queries * 10:  # warm-up: engine arenas, OpenCV buffers reach their steady size
        seg.predict(q)
    gc.collect()
    before = _rss_mb()
    for i in range(1000):
        seg.predict(queries[i % len(queries)])
    gc.collect()
    grown = _rss_mb() - before
    # leaking one query feature set per call (~0.3 MB at S=32) would add ~300 MB; the bound is generous
    assert grown < 25.0, f"RSS grew {grown:.1f} MB over 1,000 predictions"
