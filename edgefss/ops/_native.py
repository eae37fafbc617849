"""NumPy-facing wrappers over the compiled extension `edgefss._C` (csrc/), plus its loader.

The wrappers take exactly the arguments of `edgefss.ops.reference` and return the same shapes and
dtypes; they validate with `edgefss.ops.checks` (so bad input raises the same InputError as the
reference), fold leading dims into the kernels' batch dim, and convert float16 to float32 (the
kernels accumulate in float32; float64 input runs in float64). Never imports torch.
"""

from __future__ import annotations

import numpy as np

from edgefss.errors import BackendUnavailableError
from edgefss.ops.checks import check_correlation_args, check_sinkhorn_args

_MOD = None
_TRIED = False
_ERROR: str | None = None  # why `import edgefss._C` failed, verbatim


def native_module(required: bool = False):
    """The imported `edgefss._C`, or None when it cannot be imported (BackendUnavailableError if
    `required`, with the import error and the reinstall line)."""
    global _MOD, _TRIED, _ERROR
    if not _TRIED:
        _TRIED = True
        try:
            from edgefss import _C  # type: ignore[attr-defined]

            _MOD = _C
        except ImportError as exc:  # not built, or built but unloadable (missing symbol/library)
            _MOD, _ERROR = None, f"{type(exc).__name__}: {exc}"
    if _MOD is None and required:
        raise BackendUnavailableError(
            f"the native extension edgefss._C cannot be imported ({_ERROR}); reinstall with a C++ "
            "compiler and CMake available: pip install --force-reinstall --no-deps ."
        )
    return _MOD


def native_error() -> str | None:
    """The ImportError of `edgefss._C` ("ModuleNotFoundError: ..." when it was never built), or
    None when it imported."""
    native_module()
    return _ERROR


def has_native() -> bool:
    """True when the compiled extension edgefss._C is importable."""
    return native_module() is not None


def _work_dtype(x) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _device_fn(name: str, device: str):
    mod = native_module(required=True)
    if device == "cpu":
        return getattr(mod, name)
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if not mod.cuda_available():
        raise BackendUnavailableError("edgefss._C has no usable CUDA device (built without CUDA or no GPU present)")
    return getattr(mod, name + "_cuda")


def sinkhorn_log(cost, a=None, b=None, eps=0.5, n_iter=11, stop_thr=None, return_duals=False, device="cpu"):
    """Native log-domain Sinkhorn; same arguments, iterates and outputs as `reference.sinkhorn_log`.

    Args:
        cost: (n, m) or (B, n, m) float16/32/64 array (array-likes are converted).
        a, b: optional (n,)/(B, n) and (m,)/(B, m) positive marginals (default uniform).
        eps, n_iter, stop_thr, return_duals: as in the reference.
        device: "cpu", or "cuda" (float32 on the GPU; host arrays in and out).

    Returns:
        plan shaped like cost, float32 (float64 for float64 cost); with return_duals also f, g.
    """
    cost = np.asarray(cost)
    cost, a, b, squeeze = check_sinkhorn_args(np, cost, None if a is None else np.asarray(a),
                                              None if b is None else np.asarray(b), eps, n_iter)
    if stop_thr is not None and not stop_thr >= 0:
        raise ValueError(f"sinkhorn: stop_thr must be None or >= 0, got {stop_thr!r}")
    dt = _work_dtype(cost) if device == "cpu" else np.dtype(np.float32)
    fn = _device_fn("sinkhorn_log", device)
    plan, f, g, _ = fn(np.ascontiguousarray(cost, dtype=dt), np.ascontiguousarray(a, dtype=dt),
                       np.ascontiguousarray(b, dtype=dt), float(eps), int(n_iter),
                       None if stop_thr is None else float(stop_thr))
    if squeeze:
        plan, f, g = plan[0], f[0], g[0]
    return (plan, f, g) if return_duals else plan


def cosine_correlation(query, support, heads=1, clamp_min=None, support_mask=None, eps=1e-5, device="cpu"):
    """Native fused cosine correlation; same arguments and outputs as `reference.cosine_correlation`.

    A list of layers (shapes may differ per layer) runs as ONE kernel call, parallel over all layers.

    Args:
        query: (..., C, Nq) float array, or a list of them (one per layer).
        support: (..., C, Ns) float array (or a list), same leading dims and C as query.
        heads: split C into this many groups of C/heads channels (CST: 6).
        clamp_min: clamp the result from below (HSNet/TLG: 0), or None.
        support_mask: None, or (..., Ns) weights (a list, or one array shared by all layers).
        eps: added to each norm.
        device: "cpu", or "cuda" (float32; host arrays in and out).

    Returns:
        (..., heads, Nq, Ns) float32 (float64 for float64 input), or a list of them.
    """
    is_list = isinstance(query, (list, tuple))
    queries = list(query) if is_list else [query]
    supports = list(support) if isinstance(support, (list, tuple)) else [support]
    if len(supports) != len(queries):
        raise ValueError(f"cosine_correlation: support must have one entry per query layer ({len(queries)}), "
                         f"got {len(supports)}")
    masks = list(support_mask) if isinstance(support_mask, (list, tuple)) else [support_mask] * len(queries)
    if len(masks) != len(queries):
        raise ValueError(f"cosine_correlation: support_mask must have one entry per layer ({len(queries)}), "
                         f"got {len(masks)}")
    if not queries:
        return []
    qs, ss, ms, leads = [], [], [], []
    dt = None
    for q, s, m in zip(queries, supports, masks):
        q, s = np.asarray(q), np.asarray(s)
        q, s, m = check_correlation_args(np, q, s, heads, None if m is None else np.asarray(m))
        if m is not None and not np.issubdtype(m.dtype, np.number):
            raise ValueError(f"cosine_correlation: support_mask must be numeric, got dtype {m.dtype}")
        dt = dt or (_work_dtype(q) if device == "cpu" else np.dtype(np.float32))
        lead = q.shape[:-2]
        P = int(np.prod(lead)) if lead else 1
        qs.append(np.ascontiguousarray(q, dtype=dt).reshape(P, *q.shape[-2:]))
        ss.append(np.ascontiguousarray(s, dtype=dt).reshape(P, *s.shape[-2:]))
        ms.append(None if m is None else np.ascontiguousarray(m, dtype=dt).reshape(P, s.shape[-1]))
        leads.append(lead)
    if clamp_min is not None:
        clamp_min = float(clamp_min)
    fn = _device_fn("cosine_correlation", device)
    outs = fn(qs, ss, ms, int(heads), clamp_min, float(eps))
    outs = [o.reshape(*lead, *o.shape[1:]) for o, lead in zip(outs, leads)]
    return outs if is_list else outs[0]
