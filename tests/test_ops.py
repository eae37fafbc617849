"""edgefss.ops reference (NumPy) vs POT vs the PyTorch ops: parity, stability, gradients, errors.

The native kernels are tested against the same reference in tests/test_ops_native.py.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from edgefss.errors import InputError  # noqa: E402
from edgefss.ops import reference  # noqa: E402

torch = pytest.importorskip("torch")
ot = pytest.importorskip("ot")
from edgefss.ops import torch_ops  # noqa: E402


def _cost(rng, shape, scale=1.0):
    return (rng.random(shape) * scale).astype(np.float64)


def _marginal(rng, n, batch=None):
    w = rng.random(n if batch is None else (batch, n)) + 0.1
    return w / w.sum(-1, keepdims=True)


@pytest.mark.parametrize("n,m", [(1, 1), (7, 5), (50, 50), (33, 80)])
@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_sinkhorn_reference_matches_pot(n, m, eps):
    rng = np.random.default_rng(n * 100 + m)
    C, a, b = _cost(rng, (n, m)), _marginal(rng, n), _marginal(rng, m)
    plan, f, g = reference.sinkhorn_log(C, a, b, eps=eps, n_iter=25, return_duals=True)
    # stopThr=0: POT then runs exactly numItermax iterations, like the reference's n_iter.
    want, log = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=25, stopThr=0.0, log=True, warn=False)
    np.testing.assert_allclose(plan, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f, eps * log["log_u"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(g, eps * log["log_v"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("batch", [None, 1, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinkhorn_torch_matches_reference(batch, dtype):
    rng = np.random.default_rng(3)
    shape = (20, 30) if batch is None else (batch, 20, 30)
    C = _cost(rng, shape).astype(dtype)
    a = _marginal(rng, 20, batch).astype(dtype)
    b = _marginal(rng, 30, batch).astype(dtype)
    want = reference.sinkhorn_log(C, a, b, eps=0.1, n_iter=15, return_duals=True)
    got = torch_ops.sinkhorn_log(torch.from_numpy(C), torch.from_numpy(a), torch.from_numpy(b), eps=0.1, n_iter=15,
                                 return_duals=True)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for w, g in zip(want, got):
        assert g.shape == w.shape
        np.testing.assert_allclose(g.numpy(), w, rtol=tol, atol=tol * 1e-2)


def test_sinkhorn_early_stop_matches_reference_and_converges():
    rng = np.random.default_rng(5)
    C = _cost(rng, (3, 40, 40))
    plan_ref = reference.sinkhorn_log(C, eps=0.2, n_iter=500, stop_thr=1e-6)
    plan_t = torch_ops.sinkhorn_log(torch.from_numpy(C), eps=0.2, n_iter=500, stop_thr=1e-6).numpy()
    np.testing.assert_allclose(plan_t, plan_ref, rtol=1e-10, atol=1e-13)
    assert np.abs(plan_ref.sum(1) - 1 / 40).sum(-1).max() < 1e-6
    # stopping early really did fewer iterations than the cap
    full = reference.sinkhorn_log(C, eps=0.2, n_iter=500)
    assert not np.array_equal(full, plan_ref)


def test_sinkhorn_float16_accumulates_in_float32():
    rng = np.random.default_rng(6)
    C = rng.random((50, 50)).astype(np.float16)
    plan = reference.sinkhorn_log(C, eps=0.05, n_iter=11)
    assert plan.dtype == np.float32
    plan_t = torch_ops.sinkhorn_log(torch.from_numpy(C), eps=0.05, n_iter=11)
    assert plan_t.dtype == torch.float16 and torch.isfinite(plan_t).all()
    np.testing.assert_allclose(plan_t.float().numpy(), plan, rtol=2e-3, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    scale=st.floats(1e-3, 1e3),
    eps=st.floats(1e-3, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_sinkhorn_never_nan_or_inf(n, m, scale, eps, seed):
    rng = np.random.default_rng(seed)
    C = (rng.standard_normal((n, m)) * scale).astype(np.float32)
    plan, f, g = reference.sinkhorn_log(C, eps=eps, n_iter=20, return_duals=True)
    assert np.isfinite(plan).all() and np.isfinite(f).all() and np.isfinite(g).all()
    # after the f-update the row marginals hold exactly (up to rounding)
    np.testing.assert_allclose(plan.sum(1), np.full(n, 1 / n), rtol=1e-3)
    tplan = torch_ops.sinkhorn_log(torch.from_numpy(C), eps=eps, n_iter=20)
    assert torch.isfinite(tplan).all()


@pytest.mark.parametrize("heads", [1, 6])
@pytest.mark.parametrize("clamp_min", [None, 0.0])
@pytest.mark.parametrize("masked", [False, True])
def test_correlation_torch_matches_reference(heads, clamp_min, masked):
    rng = np.random.default_rng(heads)
    q = rng.standard_normal((2, 3, 24, 30)).astype(np.float32)
    s = rng.standard_normal((2, 3, 24, 17)).astype(np.float32)
    mask = (rng.random((2, 3, 17)) > 0.4).astype(np.float32) if masked else None
    want = reference.cosine_correlation(q, s, heads, clamp_min, mask)
    got = torch_ops.cosine_correlation(torch.from_numpy(q), torch.from_numpy(s), heads, clamp_min,
                                       None if mask is None else torch.from_numpy(mask))
    assert want.shape == (2, 3, heads, 30, 17) and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    if clamp_min is not None:
        assert want.min() >= clamp_min
    # independent check of the definition on one entry
    h, i, j = heads - 1, 4, 9
    ch = 24 // heads
    qv = q[1, 2, h * ch:(h + 1) * ch, i].astype(np.float64)
    sv = s[1, 2, h * ch:(h + 1) * ch, j].astype(np.float64) * (mask[1, 2, j] if masked else 1.0)
    v = qv @ sv / ((np.linalg.norm(qv) + 1e-5) * (np.linalg.norm(sv) + 1e-5))
    assert want[1, 2, h, i, j] == pytest.approx(max(v, clamp_min) if clamp_min is not None else v, abs=1e-6)


def test_correlation_list_of_layers():
    rng = np.random.default_rng(9)
    shapes = [(16, 25), (32, 9), (64, 4)]
    qs = [rng.standard_normal((2, c, n)).astype(np.float32) for c, n in shapes]
    ss = [rng.standard_normal((2, c, n)).astype(np.float32) for c, n in shapes]
    outs = reference.cosine_correlation(qs, ss, 1, 0.0)
    touts = torch_ops.cosine_correlation([torch.from_numpy(x) for x in qs], [torch.from_numpy(x) for x in ss], 1, 0.0)
    for o, t, (c, n) in zip(outs, touts, shapes):
        assert o.shape == (2, 1, n, n)
        np.testing.assert_allclose(t.numpy(), o, rtol=1e-5, atol=1e-6)


def test_torch_ops_gradcheck_float64():
    rng = np.random.default_rng(11)
    C = torch.tensor(rng.random((2, 4, 5)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: torch_ops.sinkhorn_log(c, eps=0.3, n_iter=4), (C,))
    q = torch.tensor(rng.standard_normal((2, 6, 5)), dtype=torch.float64, requires_grad=True)
    s = torch.tensor(rng.standard_normal((2, 6, 3)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: torch_ops.cosine_correlation(x, y, heads=2), (q, s))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: reference.sinkhorn_log(np.zeros(5)), "cost"),
        (lambda: reference.sinkhorn_log(np.zeros((2, 3), dtype=np.int64)), "floating"),
        (lambda: reference.sinkhorn_log(np.zeros((2, 3)), a=np.ones(4)), "marginal a"),
        (lambda: reference.sinkhorn_log(np.zeros((2, 3)), b=-np.ones(3)), "marginal b"),
        (lambda: reference.sinkhorn_log(np.zeros((2, 3)), eps=0.0), "eps"),
        (lambda: reference.sinkhorn_log(np.zeros((2, 3)), n_iter=0), "n_iter"),
        (lambda: reference.sinkhorn_log(np.full((2, 3), np.nan)), "NaN"),
        (lambda: reference.cosine_correlation(np.zeros((4, 3)), np.zeros((5, 3))), "must agree"),
        (lambda: reference.cosine_correlation(np.zeros((4, 3)), np.zeros((4, 2)), heads=3), "heads"),
        (lambda: reference.cosine_correlation(np.zeros((4, 3), np.int32), np.zeros((4, 2))), "floating"),
        (lambda: reference.cosine_correlation(np.zeros((4, 3)), np.zeros((4, 2)), support_mask=np.ones(3)),
         "support_mask"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert isinstance(info.value, InputError)
