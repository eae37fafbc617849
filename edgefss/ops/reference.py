"""NumPy reference implementations: the specification of edgefss's hot-path ops.

Pure NumPy (float64 accumulation where it matters), no torch. The PyTorch versions
(`torch_ops.py`) and the native kernels (`csrc/`) are tested against these.
"""

from __future__ import annotations

import numpy as np

from edgefss.ops.checks import check_correlation_args, check_sinkhorn_args


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """Max-shifted log-sum-exp: finite whenever one entry is finite."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def sinkhorn_log(
    cost: np.ndarray,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    eps: float = 0.5,
    n_iter: int = 11,
    stop_thr: float | None = None,
    return_duals: bool = False,
):
    """Entropic optimal transport by log-domain Sinkhorn iterations.

    Solves min_T <T, C> - eps * H(T) s.t. T 1 = a, T^T 1 = b. Each iteration updates
    g = eps*log b - eps*LSE_i((f_i - C_ij)/eps), then f = eps*log a - eps*LSE_j((g_j - C_ij)/eps),
    starting from f = 0 (the same iterates as POT's `sinkhorn_log` and, in exact arithmetic,
    as plain Sinkhorn-Knopp started from u = 1/n, which TLG's official code uses).

    Args:
        cost: (n, m) or (B, n, m) float cost matrix.
        a: (n,) or (B, n) source marginals, positive; default uniform 1/n.
        b: (m,) or (B, m) target marginals, positive; default uniform 1/m.
        eps: entropic regularisation (> 0). TLG uses 0.5.
        n_iter: number of (g, f) update pairs. TLG's official POT call converges in 11.
        stop_thr: if given, stop early once the column-marginal L1 error of every problem is
            below it (checked after each iteration).
        return_duals: also return the dual potentials.

    Returns:
        plan with the shape of `cost`, float32 for float16/32 input and float64 for float64;
        with return_duals also f (…, n) and g (…, m).
    """
    cost, a, b, squeeze = check_sinkhorn_args(np, cost, a, b, eps, n_iter)
    out_dtype = np.float64 if cost.dtype == np.float64 else np.float32
    C = cost.astype(np.float64)
    la = np.log(a.astype(np.float64))
    lb = np.log(b.astype(np.float64))
    f = np.zeros(C.shape[:2])
    g = np.zeros((C.shape[0], C.shape[2]))
    for _ in range(n_iter):
        g = eps * lb - eps * _lse((f[:, :, None] - C) / eps, axis=1)
        f = eps * la - eps * _lse((g[:, None, :] - C) / eps, axis=2)
        if stop_thr is not None:
            plan = np.exp((f[:, :, None] + g[:, None, :] - C) / eps)
            if np.max(np.abs(plan.sum(1) - b).sum(-1)) < stop_thr:
                break
    plan = np.exp((f[:, :, None] + g[:, None, :] - C) / eps)
    if squeeze:
        plan, f, g = plan[0], f[0], g[0]
    if return_duals:
        return plan.astype(out_dtype), f.astype(out_dtype), g.astype(out_dtype)
    return plan.astype(out_dtype)


def cosine_correlation(
    query: np.ndarray,
    support: np.ndarray,
    heads: int = 1,
    clamp_min: float | None = None,
    support_mask: np.ndarray | None = None,
    eps: float = 1e-5,
):
    """Head-wise cosine similarity between every query and support position.

    corr[..., h, i, j] = <q_h[:, i], s_h[:, j]> / ((|q_h[:, i]| + eps) (|s_h[:, j]| + eps)),
    where q_h / s_h are the h-th slice of C/heads channels, and s is first multiplied by the
    support mask (HSNet masks support features before correlating; TLG and CST do not).

    Args:
        query: (..., C, Nq) float features (a list of such arrays is mapped over).
        support: (..., C, Ns) float features, same leading dims and C as query.
        heads: split C into this many groups of C/heads channels (CST: 6).
        clamp_min: clamp the result from below (HSNet/TLG: 0).
        support_mask: optional (..., Ns) weights multiplied into the support features.
        eps: added to each norm (HSNet's convention, 1e-5).

    Returns:
        (..., heads, Nq, Ns) float32 (float64 for float64 input).
    """
    if isinstance(query, (list, tuple)):
        masks = support_mask if isinstance(support_mask, (list, tuple)) else [support_mask] * len(query)
        return [
            cosine_correlation(q, s, heads, clamp_min, m, eps) for q, s, m in zip(query, support, masks)
        ]
    query, support, support_mask = check_correlation_args(np, query, support, heads, support_mask)
    out_dtype = np.float64 if query.dtype == np.float64 else np.float32
    q = query.astype(np.float64)
    s = support.astype(np.float64)
    if support_mask is not None:
        s = s * support_mask.astype(np.float64)[..., None, :]
    lead = q.shape[:-2]
    C = q.shape[-2]
    q = q.reshape(*lead, heads, C // heads, q.shape[-1])
    s = s.reshape(*s.shape[:-2], heads, C // heads, s.shape[-1])
    qn = q / (np.sqrt((q * q).sum(-2, keepdims=True)) + eps)
    sn = s / (np.sqrt((s * s).sum(-2, keepdims=True)) + eps)
    corr = np.einsum("...ci,...cj->...ij", qn, sn)
    if clamp_min is not None:
        corr = np.maximum(corr, clamp_min)
    return corr.astype(out_dtype)
