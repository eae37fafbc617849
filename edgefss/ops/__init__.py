"""Hot-path ops with one signature and three implementations.

`sinkhorn_log` and `cosine_correlation` here take NumPy arrays and dispatch to the native
extension `edgefss._C` when it was built (and the inputs fit it), else to the NumPy reference.
`edgefss.ops.torch_ops` has the PyTorch versions used inside the models. Never imports torch.

Set EDGEFSS_FORCE_REFERENCE=1 (or pass `impl="reference"`) to force the NumPy path, e.g. to
compare against the native one.
"""

from __future__ import annotations

import os

from edgefss.ops import reference
from edgefss.ops._native import has_native, native_module

__all__ = ["sinkhorn_log", "cosine_correlation", "has_native", "active_path"]


def _use_native(impl: str) -> bool:
    if impl not in ("auto", "native", "reference"):
        raise ValueError(f"impl must be 'auto', 'native' or 'reference', got {impl!r}")
    if impl == "reference":
        return False
    if impl == "native":
        native_module(required=True)
        return True
    return has_native() and os.environ.get("EDGEFSS_FORCE_REFERENCE", "0") != "1"


def active_path() -> str:
    """'native' or 'reference': which implementation `impl="auto"` uses in this process."""
    return "native" if _use_native("auto") else "reference"


def sinkhorn_log(cost, a=None, b=None, eps=0.5, n_iter=11, stop_thr=None, return_duals=False, impl="auto"):
    """Log-domain Sinkhorn over NumPy arrays; see `reference.sinkhorn_log` for shapes."""
    if _use_native(impl):
        from edgefss.ops._native import sinkhorn_log as native

        return native(cost, a, b, eps, n_iter, stop_thr, return_duals)
    return reference.sinkhorn_log(cost, a, b, eps, n_iter, stop_thr, return_duals)


def cosine_correlation(query, support, heads=1, clamp_min=None, support_mask=None, eps=1e-5, impl="auto"):
    """Head-wise cosine correlation over NumPy arrays; see `reference.cosine_correlation`."""
    if _use_native(impl):
        from edgefss.ops._native import cosine_correlation as native

        return native(query, support, heads, clamp_min, support_mask, eps)
    return reference.cosine_correlation(query, support, heads, clamp_min, support_mask, eps)
