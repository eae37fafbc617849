"""Native kernels (edgefss._C, csrc/) vs the NumPy reference (and POT for Sinkhorn).

Skipped as a whole when the extension is not built (e.g. EDGEFSS_NO_EXTENSION=1 installs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefss import ops
from edgefss.ops import _native, reference

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(
        not _native.has_native(),
        reason="edgefss._C is not built (pip install --no-build-isolation -e . or python setup.py build_ext --inplace)",
    ),
]

# float32 kernels vs float64 reference; float64 kernels are checked much tighter.
TOL = {np.float16: 1e-5, np.float32: 1e-5, np.float64: 1e-10}


def _close(got, want, dtype, scale=1.0):
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (50, 50), (33, 80), (257, 300), (1, 50, 50), (4, 50, 50),
                                   (3, 17, 40)])
@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sinkhorn_matches_reference(shape, eps, dtype):
    rng = np.random.default_rng(sum(shape))
    C = rng.random(shape).astype(dtype)
    n, m = shape[-2:]
    lead = shape[:-2]
    a = rng.random((*lead, n)) + 0.5
    b = rng.random((*lead, m)) + 0.5
    a, b = (a / a.sum(-1, keepdims=True)).astype(dtype), (b / b.sum(-1, keepdims=True)).astype(dtype)
    want = reference.sinkhorn_log(C, a, b, eps=eps, n_iter=20, return_duals=True)
    got = ops.sinkhorn_log(C, a, b, eps=eps, n_iter=20, return_duals=True, impl="native")
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
    plan_scale = float(want[0].max())
    _close(got[0], want[0], dtype, plan_scale)
    _close(got[1], want[1], dtype)
    _close(got[2], want[2], dtype)


def test_sinkhorn_matches_pot():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(1)
    C = rng.random((50, 50))
    want = ot.bregman.sinkhorn_log(np.full(50, 0.02), np.full(50, 0.02), C, 0.5, numItermax=11, stopThr=0.0,
                                   warn=False)
    np.testing.assert_allclose(ops.sinkhorn_log(C, eps=0.5, n_iter=11, impl="native"), want, rtol=1e-10, atol=0)
    np.testing.assert_allclose(ops.sinkhorn_log(C.astype(np.float32), eps=0.5, n_iter=11, impl="native"), want,
                               rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinkhorn_early_stop_same_iterates_as_reference(dtype):
    rng = np.random.default_rng(2)
    C = rng.random((3, 40, 60)).astype(dtype)
    for thr in (1e-2, 1e-4, 1e-6):
        want = reference.sinkhorn_log(C, eps=0.1, n_iter=300, stop_thr=thr)
        got = ops.sinkhorn_log(C, eps=0.1, n_iter=300, stop_thr=thr, impl="native")
        _close(got, want, dtype, float(want.max()))
        assert np.abs(got.sum(1) - 1 / 60).sum(-1).max() < thr * 1.01 + 1e-6


@pytest.mark.parametrize("eps", [1e-3, 1e-2])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_sinkhorn_hard_cases_stay_finite(eps, scale):
    rng = np.random.default_rng(3)
    C = (rng.standard_normal((4, 64, 48)) * scale).astype(np.float32)
    plan, f, g = ops.sinkhorn_log(C, eps=eps, n_iter=30, return_duals=True, impl="native")
    assert np.isfinite(plan).all() and np.isfinite(f).all() and np.isfinite(g).all()
    # the last update is the f-update, so rows match their marginal (exponents are float64)
    np.testing.assert_allclose(plan.sum(2), 1 / 64, rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinkhorn_extreme_eps_matches_float64_reference(dtype):
    # cost/eps up to 5e5: the exponents f_i + g_j - C_ij must be formed in float64, else float32
    # rounding of C/eps alone (~0.03 absolute) puts a few % error into every plan entry.
    rng = np.random.default_rng(7)
    C = (rng.random((2, 30, 40)) * 1e3).astype(dtype)
    for eps in (2e-3, 1e-2):
        want = reference.sinkhorn_log(C, eps=eps, n_iter=25, return_duals=True)
        got = ops.sinkhorn_log(C, eps=eps, n_iter=25, return_duals=True, impl="native")
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-6 * float(want[0].max()))
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6 * 1e3)
        # the last update is the f-update: rows match a to float rounding, not to |C|/eps * 2^-24
        np.testing.assert_allclose(got[0].sum(2), 1 / 30, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinkhorn_wide_marginals_take_the_log_domain_fallback(dtype):
    # marginals spanning 1e-12..1 push the scalings out of their safe range, so half-steps
    # switch to the log domain and re-absorb; the iterates must still be the reference's.
    rng = np.random.default_rng(8)
    C = rng.random((3, 20, 25)).astype(dtype)
    a = 10.0 ** rng.uniform(-12, 0, (3, 20))
    b = 10.0 ** rng.uniform(-12, 0, (3, 25))
    a, b = (a / a.sum(-1, keepdims=True)).astype(dtype), (b / b.sum(-1, keepdims=True)).astype(dtype)
    for eps in (0.01, 0.5):
        want = reference.sinkhorn_log(C, a, b, eps=eps, n_iter=15, return_duals=True)
        got = ops.sinkhorn_log(C, a, b, eps=eps, n_iter=15, return_duals=True, impl="native")
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=TOL[dtype] * float(want[0].max()))
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=TOL[dtype])
        assert np.isfinite(got[0]).all()


def test_sinkhorn_large_problem_threads_match_reference():
    # n*m above the kernel's parallel threshold: the mat-vecs split over rows / column blocks
    rng = np.random.default_rng(9)
    C = rng.random((300, 700)).astype(np.float32)
    want = reference.sinkhorn_log(C, eps=0.05, n_iter=10)
    _close(ops.sinkhorn_log(C, eps=0.05, n_iter=10, impl="native"), want, np.float32, float(want.max()))


def test_sinkhorn_property_never_nan_or_inf():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(n=st.integers(1, 40), m=st.integers(1, 40), scale=st.floats(1e-3, 1e3),
                      eps=st.floats(1e-3, 10.0), seed=st.integers(0, 2**31 - 1))
    def check(n, m, scale, eps, seed):
        rng = np.random.default_rng(seed)
        C = (rng.standard_normal((2, n, m)) * scale).astype(np.float32)
        plan, f, g = ops.sinkhorn_log(C, eps=eps, n_iter=15, return_duals=True, impl="native")
        assert np.isfinite(plan).all() and np.isfinite(f).all() and np.isfinite(g).all()

    check()


@pytest.mark.parametrize("heads", [1, 6])
@pytest.mark.parametrize("clamp_min", [None, 0.0])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_correlation_matches_reference(heads, clamp_min, masked, dtype):
    rng = np.random.default_rng(heads)
    # odd Nq/Ns exercise the partial register tiles
    q = rng.standard_normal((2, 3, 24, 53)).astype(dtype)
    s = rng.standard_normal((2, 3, 24, 19)).astype(dtype)
    mask = (rng.random((2, 3, 19)) > 0.4).astype(dtype) if masked else None
    want = reference.cosine_correlation(q, s, heads, clamp_min, mask)
    got = ops.cosine_correlation(q, s, heads, clamp_min, mask, impl="native")
    assert got.shape == want.shape == (2, 3, heads, 53, 19) and got.dtype == want.dtype
    _close(got, want, dtype)


def test_correlation_layer_list_of_different_shapes_one_call():
    rng = np.random.default_rng(4)
    # TLG-like: channel counts below the kernel's 512-channel pass (64, 300) and above it (520),
    # spatial sizes of 3 scales
    shapes = [(64, 100), (300, 49), (520, 16)]
    qs = [rng.standard_normal((1, c, n)).astype(np.float32) for c, n in shapes]
    ss = [rng.standard_normal((1, c, n)).astype(np.float32) for c, n in shapes]
    want = reference.cosine_correlation(qs, ss, 1, 0.0)
    got = ops.cosine_correlation(qs, ss, 1, 0.0, impl="native")
    assert isinstance(got, list) and len(got) == 3
    for g, w in zip(got, want):
        assert g.shape == w.shape
        _close(g, w, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_correlation_blocking_edges(dtype):
    # 1200 channels over 2 heads = 600 per head: a full 512-channel pass + a partial one; Nq 77 =
    # 2 work items of 36 rows + 5 (a partial 6-row tile); Ns 150 spans two packing jobs of 128
    # columns and ends in a partial 16-column sliver; a mask and two problems x two heads address
    # every packed block
    rng = np.random.default_rng(6)
    q = rng.standard_normal((2, 1200, 77)).astype(dtype)
    s = rng.standard_normal((2, 1200, 150)).astype(dtype)
    mask = (rng.random((2, 150)) > 0.3).astype(dtype)
    for clamp_min in (None, 0.0):
        got = ops.cosine_correlation(q, s, heads=2, clamp_min=clamp_min, support_mask=mask, impl="native")
        want = reference.cosine_correlation(q, s, 2, clamp_min, mask)
        assert got.shape == want.shape == (2, 2, 77, 150)
        _close(got, want, dtype)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not on PATH")
def test_roofline_driver_builds_and_matches_float64(tmp_path):
    # bench/native/corr_roofline.cpp: the kernel without Python, checked in C++ against float64 dots
    root = Path(__file__).resolve().parents[1]
    build = tmp_path / "build"
    cfg = ["cmake", "-S", str(root), "-B", str(build), "-DEDGEFSS_NO_CUDA=ON",
           f"-DPython_EXECUTABLE={sys.executable}"]
    subprocess.run(cfg, check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "corr_roofline"], check=True,
                   capture_output=True)
    res = subprocess.run([str(build / "corr_roofline"), "64", "1"], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stdout + res.stderr
    err = float(res.stdout.split("max |err|")[1])
    assert err < 1e-5 and "GFLOP/s" in res.stdout


def test_correlation_cst_layout_heads_and_layers():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 12, 384, 49)).astype(np.float32)
    s = rng.standard_normal((2, 12, 384, 10)).astype(np.float32)
    q = np.broadcast_to(q, (2, 12, 384, 49))  # query shared by 2 supports
    got = ops.cosine_correlation(q, s, heads=6, impl="native")
    assert got.shape == (2, 12, 6, 49, 10)
    _close(got, reference.cosine_correlation(q, s, heads=6), np.float32)


def test_dispatch_uses_native_when_built(monkeypatch):
    assert ops.has_native() and ops.active_path() == "native"
    monkeypatch.setenv("EDGEFSS_FORCE_REFERENCE", "1")
    assert ops.active_path() == "reference"


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.sinkhorn_log(np.zeros(5), impl="native"), "cost"),
        (lambda: ops.sinkhorn_log(np.zeros((2, 3), np.int32), impl="native"), "floating"),
        (lambda: ops.sinkhorn_log(np.zeros((2, 3)), a=np.ones(4), impl="native"), "marginal a"),
        (lambda: ops.sinkhorn_log(np.zeros((2, 3)), eps=-1.0, impl="native"), "eps"),
        (lambda: ops.sinkhorn_log(np.zeros((2, 3)), stop_thr=-1.0, impl="native"), "stop_thr"),
        (lambda: ops.cosine_correlation(np.zeros((4, 3)), np.zeros((5, 3)), impl="native"), "must agree"),
        (lambda: ops.cosine_correlation(np.zeros((6, 3)), np.zeros((6, 2)), heads=4, impl="native"), "heads"),
        (lambda: ops.cosine_correlation([np.zeros((4, 3))], [], impl="native"), "one entry per query"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_extension_checks_name_the_argument():
    C = _native.native_module()
    f32 = np.float32
    with pytest.raises(ValueError, match="argument 'b' must be of shape \\(1, 2\\), got \\(1, 3\\)"):
        C.sinkhorn_log(np.zeros((1, 2, 2), f32), np.ones((1, 2), f32), np.ones((1, 3), f32), 0.5, 3)
    with pytest.raises(ValueError, match="argument 'a' must be of dtype float32, got float64"):
        C.sinkhorn_log(np.zeros((1, 2, 2), f32), np.ones((1, 2)), np.ones((1, 2), f32), 0.5, 3)
    with pytest.raises(ValueError, match="argument 'cost' must be C-contiguous"):
        C.sinkhorn_log(np.zeros((1, 4, 4), f32)[:, ::2], np.ones((1, 2), f32), np.ones((1, 4), f32), 0.5, 3)
    with pytest.raises(ValueError, match="argument 'support_mask\\[0\\]' must be of shape \\(1, 3\\)"):
        C.cosine_correlation([np.zeros((1, 2, 4), f32)], [np.zeros((1, 2, 3), f32)], [np.ones((1, 4), f32)], 1)


def test_cuda_entry_points_refuse_without_device():
    C = _native.native_module()
    if C.cuda_available():
        pytest.skip("a CUDA device is present; covered by device tests")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        C.sinkhorn_log_cuda(np.zeros((1, 2, 2), np.float32), np.ones((1, 2), np.float32),
                            np.ones((1, 2), np.float32), 0.5, 3)
    with pytest.raises(ImportError, match="CUDA"):
        _native.sinkhorn_log(np.zeros((2, 2), np.float32), device="cuda")


@pytest.fixture(params=["sse2", "avx2", "neon"])
def kernel_variant(request):
    """Each CPU kernel variant (csrc/common/isa.h) this build and CPU can run, switched in-process."""
    C = _native.native_module()
    if request.param not in C.kernel_isas():
        pytest.skip(f"kernel variant {request.param} is not usable here (usable: {C.kernel_isas()})")
    prev = C._set_kernel_isa(request.param)
    yield request.param
    C._set_kernel_isa(prev)


def test_every_kernel_variant_matches_reference(kernel_variant):
    assert _native.native_module().kernel_isa() == kernel_variant
    rng = np.random.default_rng(11)
    C = (rng.random((2, 30, 40)) * 1e3).astype(np.float32)  # cost/eps up to 1e6
    want = reference.sinkhorn_log(C.astype(np.float64), eps=1e-3, n_iter=20, return_duals=True)
    got = ops.sinkhorn_log(C, eps=1e-3, n_iter=20, return_duals=True, impl="native")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-6 * float(want[0].max()))
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6 * 1e3)
    q = rng.standard_normal((2, 1200, 77)).astype(np.float32)
    s = rng.standard_normal((2, 1200, 150)).astype(np.float32)
    mask = (rng.random((2, 150)) > 0.3).astype(np.float32)
    got = ops.cosine_correlation(q, s, heads=2, clamp_min=0.0, support_mask=mask, impl="native")
    _close(got, reference.cosine_correlation(q, s, 2, 0.0, mask), np.float32)


def test_kernel_isa_is_the_best_usable_and_a_bad_request_is_one_clear_error():
    C = _native.native_module()
    usable = C.kernel_isas()
    assert usable and C.kernel_isa() in usable
    with pytest.raises(ValueError, match="EDGEFSS_KERNEL_ISA must name a kernel variant"):
        C._set_kernel_isa("avx9000")
    # a fresh process honours the environment variable and refuses an unusable variant at first use
    code = ("import numpy as np; from edgefss import _C; print(_C.kernel_isa());"
            "_C.sinkhorn_log(np.ones((1,2,2),np.float32), np.full((1,2),.5,np.float32), np.full((1,2),.5,np.float32), .5, 2)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "EDGEFSS_KERNEL_ISA": usable[0]})
    assert res.returncode == 0 and res.stdout.strip() == usable[0], res.stderr
    bad = "neon" if "neon" not in usable else "avx2"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "EDGEFSS_KERNEL_ISA": bad})
    assert res.returncode != 0 and "ValueError: EDGEFSS_KERNEL_ISA" in res.stderr and usable[0] in res.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clamp_min", [None, 0.5])
def test_correlation_zero_channels_is_zero_as_reference(dtype, clamp_min):
    # cosine of empty vectors (with eps) is 0; the output was uninitialised memory before
    q, s = np.zeros((2, 0, 40), dtype), np.zeros((2, 0, 7), dtype)
    for _ in range(3):  # fresh outputs each time: stale heap contents would show
        got = ops.cosine_correlation(q, s, clamp_min=clamp_min, impl="native")
        want = reference.cosine_correlation(q, s, 1, clamp_min)
        assert got.shape == want.shape == (2, 1, 40, 7)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, np.full_like(got, clamp_min or 0.0))


def test_empty_sizes_give_empty_results():
    f32 = np.float32
    got = ops.cosine_correlation(np.zeros((2, 8, 0), f32), np.zeros((2, 8, 5), f32), impl="native")
    assert got.shape == (2, 1, 0, 5)
    got = ops.cosine_correlation(np.zeros((0, 8, 3), f32), np.zeros((0, 8, 5), f32), impl="native")
    assert got.shape == (0, 1, 3, 5)
    plan, f, g = ops.sinkhorn_log(np.zeros((0, 3, 4), f32), eps=0.5, n_iter=3, return_duals=True, impl="native")
    want = reference.sinkhorn_log(np.zeros((0, 3, 4), f32), eps=0.5, n_iter=3, return_duals=True)
    assert plan.shape == want[0].shape == (0, 3, 4) and f.shape == (0, 3) and g.shape == (0, 4)
    with pytest.raises(ValueError, match="non-empty"):
        ops.sinkhorn_log(np.zeros((2, 0, 4), f32), impl="native")
