"""Argument checks shared by every implementation of an op (NumPy, PyTorch).

`xp` is the array module (numpy or torch); only attribute access common to both is used.
Every message names the argument and what was expected.
"""

from __future__ import annotations

import numbers

from edgefss.errors import InputError


def _shape(x):
    return tuple(x.shape)


def _is_float(xp, x) -> bool:
    # dtype.kind (NumPy) / is_floating_point (torch): str(dtype) costs ~10 us, a third of a
    # native 50x50 Sinkhorn call.
    kind = getattr(x.dtype, "kind", None)
    return kind == "f" if kind is not None else bool(x.dtype.is_floating_point)


def _all_finite(xp, x) -> bool:
    return bool(xp.isfinite(x).all())


def check_sinkhorn_args(xp, cost, a, b, eps, n_iter):
    """Validate and broadcast Sinkhorn inputs to (B, n, m), (B, n), (B, m).

    Returns:
        cost, a, b (batched; marginals default to uniform), squeeze flag (input was 2-D).
    """
    if not hasattr(cost, "shape") or cost.ndim not in (2, 3):
        raise InputError(f"sinkhorn: cost must be an (n, m) or (B, n, m) array, got {_shape(cost) if hasattr(cost, 'shape') else type(cost).__name__}")
    if not _is_float(xp, cost):
        raise InputError(f"sinkhorn: cost must be a floating-point array, got dtype {cost.dtype}")
    if not isinstance(eps, numbers.Real) or not eps > 0:
        raise InputError(f"sinkhorn: eps must be a positive number, got {eps!r}")
    if not isinstance(n_iter, numbers.Integral) or n_iter < 1:
        raise InputError(f"sinkhorn: n_iter must be an integer >= 1, got {n_iter!r}")
    squeeze = cost.ndim == 2
    if squeeze:
        cost = cost[None]
    B, n, m = _shape(cost)
    if n < 1 or m < 1:
        raise InputError(f"sinkhorn: cost must be non-empty, got shape {_shape(cost)}")
    if not _all_finite(xp, cost):
        raise InputError("sinkhorn: cost contains NaN or Inf; expected finite values")
    a = _marginal(xp, a, B, n, "a", cost)
    b = _marginal(xp, b, B, m, "b", cost)
    return cost, a, b, squeeze


def _marginal(xp, v, B, n, name, like):
    if v is None:
        if xp.__name__ == "torch":
            return xp.full((B, n), 1.0 / n, dtype=xp.float64 if like.dtype == xp.float64 else xp.float32, device=like.device)
        return xp.full((B, n), 1.0 / n)
    if v.ndim == 1:
        v = v[None]
    if _shape(v)[-1] != n or _shape(v)[0] not in (1, B) or v.ndim != 2:
        raise InputError(f"sinkhorn: marginal {name} must have shape ({n},) or ({B}, {n}), got {_shape(v)}")
    if not _all_finite(xp, v) or bool((v <= 0).any()):
        raise InputError(f"sinkhorn: marginal {name} must be finite and strictly positive")
    if _shape(v)[0] != B:
        v = v.expand(B, n) if xp.__name__ == "torch" else xp.broadcast_to(v, (B, n))
    return v


def check_correlation_args(xp, query, support, heads, support_mask):
    """Validate cosine-correlation inputs; returns (query, support, support_mask)."""
    for nm, x in (("query", query), ("support", support)):
        if not hasattr(x, "shape") or x.ndim < 2:
            raise InputError(f"cosine_correlation: {nm} must be an array of shape (..., C, N), got {type(x).__name__ if not hasattr(x, 'shape') else _shape(x)}")
        if not _is_float(xp, x):
            raise InputError(f"cosine_correlation: {nm} must be floating point, got dtype {x.dtype}")
    if _shape(query)[:-1] != _shape(support)[:-1]:
        raise InputError(
            f"cosine_correlation: query {_shape(query)} and support {_shape(support)} must agree on "
            "all dims but the last (..., C, N)"
        )
    C = _shape(query)[-2]
    if not isinstance(heads, numbers.Integral) or heads < 1 or C % heads:
        raise InputError(f"cosine_correlation: heads must divide the channel count {C}, got {heads!r}")
    if support_mask is not None:
        want = _shape(support)[:-2] + (_shape(support)[-1],)
        if _shape(support_mask) != want:
            raise InputError(f"cosine_correlation: support_mask must have shape {want}, got {_shape(support_mask)}")
    return query, support, support_mask
