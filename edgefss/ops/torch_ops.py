"""PyTorch versions of edgefss ops: differentiable and ONNX/TensorRT-exportable.

Same signatures and semantics as `edgefss.ops.reference`. The log-sum-exp is written as an
explicit max-shift (not `torch.logsumexp`): exported as ReduceLogSumExp, TensorRT's importer
computes log(sum(exp(x))) without the shift and overflows (TRT#4772), and in FP16 exp(x)
overflows once x > ~11.
"""

from __future__ import annotations

import torch

from edgefss.ops.checks import check_correlation_args, check_sinkhorn_args


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max-shifted log-sum-exp over `dim` (dim removed). The max is detached: it only shifts."""
    m = x.amax(dim=dim, keepdim=True).detach()
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def sinkhorn_log(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float = 0.5,
    n_iter: int = 11,
    stop_thr: float | None = None,
    return_duals: bool = False,
):
    """Log-domain Sinkhorn; see `edgefss.ops.reference.sinkhorn_log` for the maths.

    Args:
        cost: (n, m) or (B, n, m) float16/32/64 tensor.
        a, b: optional (n,)/(B, n) and (m,)/(B, m) positive marginals (default uniform).
        eps, n_iter, stop_thr, return_duals: as in the reference. `stop_thr` is ignored while
            tracing/exporting, where the loop is unrolled to exactly `n_iter` iterations.

    Returns:
        plan (cost's shape; float16 input computes in float32 and returns float16), and
        optionally duals f (…, n), g (…, m).
    """
    in_dtype = cost.dtype
    work = torch.float64 if in_dtype == torch.float64 else torch.float32
    if _exporting():
        squeeze = cost.dim() == 2
        C = (cost[None] if squeeze else cost).to(work)
        B, n, m = C.shape
        la = torch.log(a.to(work)).reshape(-1, n) if a is not None else None
        lb = torch.log(b.to(work)).reshape(-1, m) if b is not None else None
    else:
        C, a, b, squeeze = check_sinkhorn_args(torch, cost, a, b, eps, n_iter)
        C = C.to(work)
        la = torch.log(a.to(work))
        lb = torch.log(b.to(work))
        n, m = C.shape[1], C.shape[2]
    if la is None:
        la = torch.full_like(C[:, :, 0], -float(torch.log(torch.tensor(float(n)))))
    if lb is None:
        lb = torch.full_like(C[:, 0, :], -float(torch.log(torch.tensor(float(m)))))
    Ce = C / eps
    f = torch.zeros_like(C[:, :, 0])
    g = torch.zeros_like(C[:, 0, :])
    for _ in range(n_iter):
        g = eps * lb - eps * lse(f.unsqueeze(2) / eps - Ce, dim=1)
        f = eps * la - eps * lse(g.unsqueeze(1) / eps - Ce, dim=2)
        if stop_thr is not None and not _exporting():
            plan = torch.exp((f.unsqueeze(2) + g.unsqueeze(1)) / eps - Ce)
            if (plan.sum(1) - torch.exp(lb)).abs().sum(-1).max() < stop_thr:
                break
    plan = torch.exp((f.unsqueeze(2) + g.unsqueeze(1)) / eps - Ce)
    if squeeze:
        plan, f, g = plan[0], f[0], g[0]
    out = in_dtype if in_dtype in (torch.float16, torch.bfloat16) else work
    if return_duals:
        return plan.to(out), f.to(out), g.to(out)
    return plan.to(out)


def cosine_correlation(
    query,
    support,
    heads: int = 1,
    clamp_min: float | None = None,
    support_mask: torch.Tensor | None = None,
    eps: float = 1e-5,
):
    """Head-wise cosine correlation; see `edgefss.ops.reference.cosine_correlation`.

    Args:
        query: (..., C, Nq) tensor, or a list of them (one per layer).
        support: (..., C, Ns) tensor (or list), same leading dims and C.
        heads, clamp_min, support_mask, eps: as in the reference.

    Returns:
        (..., heads, Nq, Ns) tensor in the input dtype (or a list).
    """
    if isinstance(query, (list, tuple)):
        masks = support_mask if isinstance(support_mask, (list, tuple)) else [support_mask] * len(query)
        return [cosine_correlation(q, s, heads, clamp_min, m, eps) for q, s, m in zip(query, support, masks)]
    if not _exporting():
        check_correlation_args(torch, query, support, heads, support_mask)
    if support_mask is not None:
        support = support * support_mask.unsqueeze(-2)
    *lead, C, nq = query.shape
    ns = support.shape[-1]
    q = query.reshape(*lead, heads, C // heads, nq)
    s = support.reshape(*lead, heads, C // heads, ns)
    q = q / (q.norm(dim=-2, keepdim=True) + eps)
    s = s / (s.norm(dim=-2, keepdim=True) + eps)
    corr = torch.matmul(q.transpose(-1, -2), s)
    if clamp_min is not None:
        corr = corr.clamp(min=clamp_min)
    return corr
