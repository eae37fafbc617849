"""CUDA kernels (edgefss._C *_cuda) against the NumPy float64 reference and the CPU kernels.

Skipped unless the extension was built with CUDA and a device is present: on machines without a
GPU (CI here) the CUDA sources are only compiled. On a GPU machine run
`pytest tests/test_ops_cuda.py` (and `python bench/ops.py` for timings).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgefss.ops import _native, reference


def _cuda_ready() -> bool:
    mod = _native.native_module()
    return bool(mod is not None and mod.with_cuda() and mod.cuda_available())


pytestmark = pytest.mark.skipif(not _cuda_ready(), reason="no CUDA device (CUDA sources are compile-only here)")


def _marginals(rng, lead, n, m):
    a = rng.random((*lead, n)) + 0.5
    b = rng.random((*lead, m)) + 0.5
    return (a / a.sum(-1, keepdims=True)).astype(np.float32), (b / b.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (50, 50), (33, 80), (16, 50, 50), (2, 257, 300), (1, 1024, 1024)])
@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_cuda_sinkhorn_matches_reference(shape, eps):
    rng = np.random.default_rng(sum(shape))
    C = rng.random(shape).astype(np.float32)
    a, b = _marginals(rng, shape[:-2], *shape[-2:])
    want = reference.sinkhorn_log(C.astype(np.float64), a.astype(np.float64), b.astype(np.float64), eps=eps,
                                  n_iter=20, return_duals=True)
    got = _native.sinkhorn_log(C, a, b, eps=eps, n_iter=20, return_duals=True, device="cuda")
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float32
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5 * float(want[0].max()))
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want[1]).max())))
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want[2]).max())))


def test_cuda_sinkhorn_matches_pot():
    ot = pytest.importorskip("ot")
    C = np.random.default_rng(1).random((50, 50))
    want = ot.bregman.sinkhorn_log(np.full(50, 0.02), np.full(50, 0.02), C, 0.5, numItermax=11, stopThr=0.0,
                                   warn=False)
    got = _native.sinkhorn_log(C.astype(np.float32), eps=0.5, n_iter=11, device="cuda")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


def test_cuda_sinkhorn_hard_cases_stay_finite_and_agree_with_cpu():
    rng = np.random.default_rng(3)
    for eps, scale in ((1e-3, 1e3), (1e-3, 1.0), (10.0, 1e3)):
        C = (rng.random((4, 60, 45)) * scale).astype(np.float32)
        gpu = _native.sinkhorn_log(C, eps=eps, n_iter=15, return_duals=True, device="cuda")
        cpu = _native.sinkhorn_log(C, eps=eps, n_iter=15, return_duals=True, device="cpu")
        assert all(np.isfinite(x).all() for x in gpu), (eps, scale)
        np.testing.assert_allclose(gpu[0].sum(-1), 1 / 60, rtol=1e-3)  # last update is the row update
        np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(cpu[1]).max())))


def test_cuda_sinkhorn_early_stop():
    C = np.random.default_rng(2).random((3, 40, 60)).astype(np.float32)
    for thr in (1e-2, 1e-4):
        want = reference.sinkhorn_log(C.astype(np.float64), eps=0.1, n_iter=300, stop_thr=thr)
        got = _native.sinkhorn_log(C, eps=0.1, n_iter=300, stop_thr=thr, device="cuda")
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6 * float(want.max()))


@pytest.mark.parametrize("heads", [1, 6])
@pytest.mark.parametrize("clamp_min", [None, 0.0])
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_correlation_matches_reference(heads, clamp_min, masked):
    rng = np.random.default_rng(heads + 2 * masked)
    q = rng.standard_normal((2, 3, 24, 53)).astype(np.float32)
    s = rng.standard_normal((2, 3, 24, 19)).astype(np.float32)
    mask = (rng.random((2, 3, 19)) > 0.4).astype(np.float32) if masked else None
    want = reference.cosine_correlation(q, s, heads, clamp_min, mask)
    got = _native.cosine_correlation(q, s, heads, clamp_min, mask, device="cuda")
    assert got.shape == want.shape == (2, 3, heads, 53, 19) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cuda_correlation_model_shapes_match_cpu():
    # TLG's 13-layer pyramid at 208 px and CST's 12 layers x 6 heads, one call each
    rng = np.random.default_rng(5)
    specs = [(512, 26 * 26)] * 4 + [(1024, 13 * 13)] * 6 + [(2048, 7 * 7)] * 3
    q = [np.maximum(rng.standard_normal((1, c, n)), 0).astype(np.float32) for c, n in specs]
    s = [np.maximum(rng.standard_normal((1, c, n)), 0).astype(np.float32) for c, n in specs]
    for g, c in zip(_native.cosine_correlation(q, s, 1, 0.0, device="cuda"),
                    _native.cosine_correlation(q, s, 1, 0.0, device="cpu")):
        np.testing.assert_allclose(g, c, rtol=1e-5, atol=1e-5)
    qc = rng.standard_normal((1, 12, 384, 784)).astype(np.float32)
    sc = rng.standard_normal((1, 12, 384, 50)).astype(np.float32)
    np.testing.assert_allclose(_native.cosine_correlation(qc, sc, heads=6, device="cuda"),
                               reference.cosine_correlation(qc, sc, heads=6), rtol=1e-5, atol=1e-5)


def test_cuda_sinkhorn_extreme_eps_matches_float64_reference():
    # cost/eps up to 5e5: the CUDA kernel forms exponents in float64 as the CPU kernel does, so the
    # plan matches the float64 reference as tightly as the CPU kernel's (tests/test_ops_native.py)
    rng = np.random.default_rng(7)
    C = (rng.random((2, 30, 40)) * 1e3).astype(np.float32)
    for eps in (2e-3, 1e-2):
        want = reference.sinkhorn_log(C.astype(np.float64), eps=eps, n_iter=25, return_duals=True)
        got = _native.sinkhorn_log(C, eps=eps, n_iter=25, return_duals=True, device="cuda")
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-6 * float(want[0].max()))
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6 * 1e3)
        np.testing.assert_allclose(got[0].sum(2), 1 / 30, rtol=1e-5)


def test_cuda_empty_sizes():
    f32 = np.float32
    got = _native.cosine_correlation(np.zeros((2, 0, 40), f32), np.zeros((2, 0, 7), f32), clamp_min=0.5,
                                     device="cuda")
    np.testing.assert_array_equal(got, np.full((2, 1, 40, 7), 0.5, f32))
    assert _native.cosine_correlation(np.zeros((2, 8, 0), f32), np.zeros((2, 8, 5), f32),
                                      device="cuda").shape == (2, 1, 0, 5)
    plan = _native.sinkhorn_log(np.zeros((0, 3, 4), f32), eps=0.5, n_iter=3, device="cuda")
    assert plan.shape == (0, 3, 4)
