"""Bounded memory for large queries (issue 14, class 7): the banded label mask equals the
full-resolution one bit for bit and its peak stays far below the (N, H, W) float maps; thread
counts above the usable CPUs are capped with a warning."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from edgefss.runtime import postprocess as post
from edgefss.runtime.lowmem import FgProb, label_mask_banded


def _logits(b, h, w, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((b, 2, h, w)) * 3).astype(np.float32)


@pytest.mark.parametrize("groups, hw", [([[0], [1], [2]], (333, 517)), ([[0, 2], [1]], (97, 64)),
                                        ([[0]], (25, 25)), ([[0], [1, 2, 3]], (1, 9))])
def test_banded_mask_equals_the_full_resolution_one(groups, hw):
    seg = _logits(sum(len(g) for g in groups), 25, 25)
    p = post.fg_probability(seg, groups, hw)
    ref_mask, ref_area = post.label_mask(p), post.area_presence(p)
    for band_bytes in (1, 4096, 1 << 30):  # one row per band, a few rows, everything at once
        mask, area = label_mask_banded(seg, groups, hw, band_bytes=band_bytes)
        assert np.array_equal(mask, ref_mask)
        assert np.array_equal(area, ref_area)
    fg = FgProb(seg, groups, hw)
    assert np.array_equal(fg.full(), p) and np.array_equal(np.asarray(fg), p)
    for c in range(len(groups)):  # one class's map alone, bit-identical to its row of the full maps
        assert np.array_equal(fg[c], p[c]) and np.array_equal(fg[np.int64(c) - len(groups)], p[c])
    with pytest.raises(IndexError):
        fg[len(groups)]
    assert fg.shape == p.shape
    assert FgProb(seg, groups, hw).low().shape == (len(groups), 25, 25)


def test_peak_memory_is_bounded_on_a_large_query():
    """2048^2, 5 classes: the full path holds 5 x 16 MiB float maps plus temporaries; the banded
    path the uint8 mask (4 MiB) plus one 32 MiB band at most."""
    seg = _logits(5, 100, 100, seed=1)
    groups = [[i] for i in range(5)]
    hw = (2048, 2048)

    def peak(fn):
        tracemalloc.start()
        fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    full = peak(lambda: post.label_mask(post.fg_probability(seg, groups, hw)))
    banded = peak(lambda: label_mask_banded(seg, groups, hw, band_bytes=8 << 20))
    assert full > 5 * 2048 * 2048 * 4  # the (N, H, W) float32 maps
    assert banded < 4 * 2048 * 2048 + 3 * (8 << 20), banded  # mask + a few band-sized temporaries
    assert banded * 4 < full


def test_threads_above_the_cpu_count_are_capped(cst_bundle):
    from edgefss.runtime import Segmenter
    from edgefss.threads import cap_threads, usable_cpus

    n = usable_cpus()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert cap_threads(256 + n) == n
        assert cap_threads(n) == n and cap_threads(None) is None
    assert len(w) == 1 and f"using {n}" in str(w[0].message)
    with pytest.warns(UserWarning, match=f"256 asked for.*using {n}"):
        Segmenter.load(cst_bundle, threads=256)


def test_predict_on_a_large_query_keeps_peak_memory_independent_of_class_count(cst_bundle):
    """Segmenter.predict itself (not only the helper): 5 classes on a 4096 x 4096 query. The
    full-resolution maps alone would be 5 x 64 MiB; the prediction must stay far below that and
    still give the full maps on request."""
    import tracemalloc

    from edgefss.runtime import Segmenter

    r = np.random.default_rng(0)
    sup = [r.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    names = ["dog", "cat", "car", "bus", "bird"]
    seg = Segmenter.load(cst_bundle)
    seg.set_support(sup, names)
    query = r.integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        pred = seg.predict(query)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    maps = 5 * 4096 * 4096 * 4
    assert pred.mask.shape == (4096, 4096)
    assert peak < maps / 2, f"predict peaked at {peak / 2**20:.0f} MiB; the maps alone are {maps / 2**20:.0f} MiB"
    full = np.asarray(pred.fg_prob)
    assert full.shape == (5, 4096, 4096)
    # the mask is the label rule applied to the maps the caller can still ask for
    ref = (full.argmax(axis=0) + 1).astype(np.uint8)
    ref[full.max(axis=0) < 0.5] = 0
    np.testing.assert_array_equal(pred.mask, ref)
