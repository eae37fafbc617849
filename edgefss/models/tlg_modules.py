"""TLG blocks: HT's two attentions (with the optimal-transport step) and the backbone prior.

Parameter names match the released TLG checkpoint (`SelfAttention.q/kv/proj`,
`CrossAttention.q_fc/k_fc/v_fc/proj`); see models-spec §1.2 (4) and §1.3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.ops.torch_ops import cosine_correlation, sinkhorn_log


class SelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values are the even/odd tokens of one projection.

    The released code reshapes a Linear(dim, dim) output to (B, N/2, 2, heads, dim/heads), so
    token 2i gives key i and token 2i+1 gives value i (N must be even).

    Input/Output: (B,N,dim) float32.
    """

    def __init__(self, dim: int = 128, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h, d = self.heads, C // self.heads
        q = self.q(x).reshape(B, N, h, d).transpose(1, 2)
        kv = self.kv(x).reshape(B, N // 2, 2, h, d).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ kv[0].transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ kv[1]).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class CrossAttention(nn.Module):
    """One-head cross-attention whose softmax map is replaced by an entropic OT plan.

    cost = 1 - softmax(q k^T / sqrt(dim)) (entries <= 0 set to 1e-6 first, as released), uniform
    marginals 1/N, eps 0.5, a fixed number of log-domain Sinkhorn iterations (11 = where POT's
    default stopping rule ends for these inputs, spec §1.3). The plan's rows sum to 1/N, not 1:
    that scale is part of the released model and is kept.

    Args:
        detach_ot: True reproduces the released code (POT on CPU numpy: no gradient through OT).
    Input: q, kv (B,N,dim) float32. Output: (B,N,dim) float32.
    """

    def __init__(self, dim: int = 128, dropout: float = 0.1, eps: float = 0.5, n_iter: int = 11):
        super().__init__()
        self.scale = dim ** -0.5
        self.eps, self.n_iter = eps, n_iter
        self.q_fc = nn.Linear(dim, dim, bias=False)
        self.k_fc = nn.Linear(dim, dim, bias=False)
        self.v_fc = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, detach_ot: bool = False) -> torch.Tensor:
        attn = torch.softmax((self.q_fc(q) @ self.k_fc(kv).transpose(-2, -1)) * self.scale, dim=-1)
        attn = torch.where(attn <= 0, torch.full_like(attn, 1e-6), attn)
        cost = 1.0 - attn
        if detach_ot:
            cost = cost.detach()
        plan = sinkhorn_log(cost, eps=self.eps, n_iter=self.n_iter)
        if detach_ot:
            plan = plan.detach()
        return self.proj_drop(self.proj(plan @ self.v_fc(kv)))


def row_tokens(x: torch.Tensor) -> torch.Tensor:
    """HT tokens: (B,C,h,w) -> (B,h,C), token i = mean of row i.

    Same as the released `AdaptiveAvgPool1d(h)` over the flattened h*w map, written as a mean so
    it does not depend on h*w being a multiple of h in the exporter's pooling lowering.
    """
    return x.mean(dim=3).transpose(1, 2)


# Below this spread a max-cosine map carries no localisation signal; min-max normalising it
# would only amplify float rounding (and make FP32/FP16/backends disagree), so the divisor is
# floored: such a map stays near 0 instead of being stretched to [0,1]. Trained features spread
# over tenths, far above it.
PRIOR_MIN_RANGE = 1e-2


def _max_cosine_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each position of a (B,C,H,W), the max cosine similarity to any position of b (B,C,H',W').

    Returns (B,1,H,W) float32 in [0,1]: min-max normalised per image, the divisor floored at
    PRIOR_MIN_RANGE.
    """
    B, C, H, W = a.shape
    sim = cosine_correlation(a.flatten(2), b.flatten(2))  # (B,1,HW,H'W')
    best = sim.amax(dim=-1).reshape(B, 1, H, W)
    lo = best.flatten(1).amin(dim=1).reshape(B, 1, 1, 1)
    hi = best.flatten(1).amax(dim=1).reshape(B, 1, 1, 1)
    return (best - lo) / (hi - lo).clamp(min=PRIOR_MIN_RANGE)


def backbone_prior(query_levels, support_levels, size) -> tuple[torch.Tensor, torch.Tensor]:
    """PFENet-style training-free prior from frozen high-level features, in both directions.

    This REPLACES the paper's offline CLIP Grad-CAM pseudo-masks (their generator is unreleased):
    a query position that closely resembles some support position is likely the shared class,
    and symmetrically for the support. Forward-only, no control flow, exportable.

    Args:
        query_levels, support_levels: lists of (B,C_l,H_l,W_l) float32 maps (same B), e.g.
            layer3-last and layer4-last; ReLU is applied first (the maps are pre-ReLU).
        size: (H, W) of the output, the model's input resolution (S, S): TLG takes pseudo-masks
            there; each level's map is resized to it with bilinear align_corners=True.

    Returns:
        (query_prior, support_prior), each (B,1,H,W) float32 in [0,1]: the mean over levels of the
        per-image min-max normalised max-cosine maps (see PRIOR_MIN_RANGE for flat maps).
    """
    qs, ss = [], []
    for q, s in zip(query_levels, support_levels):
        q, s = torch.relu(q), torch.relu(s)
        qs.append(F.interpolate(_max_cosine_map(q, s), size=size, mode="bilinear", align_corners=True))
        ss.append(F.interpolate(_max_cosine_map(s, q), size=size, mode="bilinear", align_corners=True))
    return torch.stack(qs).mean(0), torch.stack(ss).mean(0)
