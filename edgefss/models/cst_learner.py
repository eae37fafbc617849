"""CST correlation transformer (the 366,004-parameter learner), spec §3.2.

Input: a head-wise correlation tensor (B, 72, T, 1+s*s): for each of the T query tokens, its
cosine similarity with the support CLS token and the s x s support image tokens. Attention runs
along the support axis, independently per query token, and pools the support image tokens
(s -> s/4 -> 1) so that two tokens remain: [classification, segmentation].

Module names mirror the official checkpoint (`corrtransformer.{0,1}.attn.{short_cut.0,
short_cut.2,qkv,agg.0,agg.2,agg.3,out_norm}`, `.ff.{ff.0,ff.1,ff.3,out_norm}`, `linear.{0,1,3,4}`,
`decoder{1,2}_{cls,seg}.{0,2}`), so `learner.*` keys of a CST Lightning checkpoint load as is.

Export notes: the attention einsums are written as batched matmuls (Einsum is poorly supported by
TensorRT) and the (1,k,k) AvgPool3d as an AvgPool2d over the support grid; both are numerically
the same operations. The support-mask step is a `where`, not Python control flow on values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_FILL = -1e9  # official value; the CLS key is never masked, so a row never becomes all -1e9


def _grid(n_img_tokens: int) -> int:
    g = math.isqrt(n_img_tokens)
    if g * g != n_img_tokens:
        raise ValueError(f"support image tokens must form a square grid, got {n_img_tokens}")
    return g


class SupportTokenPool(nn.Module):
    """Average-pool the support image tokens on their 2-D grid; the CLS token (index 0) is kept.

    (B,C,T,1+g*g) -> (B,C,T,1+(g'*g')) with g' = floor((g-k)/k)+1.
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, T, S = x.shape[1], x.shape[2], x.shape[3]
        g = _grid(int(S) - 1)
        img = x[..., 1:].reshape(-1, C * T, g, g)
        img = F.avg_pool2d(img, self.k, self.k).reshape(-1, C, T, ((g - self.k) // self.k + 1) ** 2)
        return torch.cat([x[..., :1], img], dim=-1)


class CorrAttention(nn.Module):
    """Multi-head attention over support tokens, query side pooled by k (spec §3.2).

    Args (forward): x (B,Cin,T,S) float32; support_mask (B,H,W) float {0,1} or None: the
        official model passes it at the input size (400 x 400); it is resized here, bilinear
        align_corners=True, to this block's g x g support grid (12, then 3) and an image-token key
        is masked where the resized value is exactly 0 (any foreground pixel in reach keeps it).
    Returns: (B,Cout,T,1+(g/k)^2).
    """

    def __init__(self, cin: int, cout: int, k: int, heads: int = 8, groups: int = 4):
        super().__init__()
        hidden = cout // 2
        if hidden % heads:
            raise ValueError(f"CorrAttention: hidden channels {hidden} must divide into {heads} heads")
        self.heads = heads
        self.pool = SupportTokenPool(k)
        self.short_cut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), SupportTokenPool(k), nn.GroupNorm(groups, cout), nn.ReLU()
        )
        self.qkv = nn.Conv2d(cin, 3 * hidden, 1, bias=True)
        self.agg = nn.Sequential(
            nn.GroupNorm(groups, hidden), nn.ReLU(), nn.Conv2d(hidden, cout, 1, bias=False),
            nn.GroupNorm(groups, cout), nn.ReLU(),
        )
        self.out_norm = nn.GroupNorm(groups, cout)
        # False: the official order (1x1 convs, then pool). True: pool x first, then the 1x1 convs
        # of the pooled branches (shortcut, q), and k, v as two convs instead of a chunk; the same
        # arithmetic (a 1x1 conv is per token and the pool averages tokens; bias included), reordered,
        # so ~1e-6 apart. Set only while exporting (exporters/cst_forms.py): the pooled branches
        # then convolve 1+(g/k)^2 tokens instead of 1+g^2, and no split copies the qkv tensor.
        self.pool_first = False

    def forward(self, x: torch.Tensor, support_mask: torch.Tensor | None) -> torch.Tensor:
        T, S = x.shape[2], x.shape[3]
        if self.pool_first:
            px = self.pool(x)
            conv, _, norm, relu = self.short_cut
            shortcut = relu(norm(conv(px)))
            h = self.qkv.out_channels // 3
            w, b = self.qkv.weight, self.qkv.bias
            q = F.conv2d(px, w[:h], b[:h])
            k = F.conv2d(x, w[h:2 * h], b[h:2 * h])
            v = F.conv2d(x, w[2 * h:], b[2 * h:])
        else:
            shortcut = self.short_cut(x)
            # channel layout of qkv is (3, heads, c): chunk splits q/k/v, reshape splits heads
            q, k, v = self.qkv(x).chunk(3, dim=1)
            q = self.pool(q)
        c = q.shape[1] // self.heads
        L = q.shape[3]
        q = q.reshape(-1, self.heads, c, T, L).permute(0, 1, 3, 4, 2)  # (B,g,T,L,c)
        k = k.reshape(-1, self.heads, c, T, S).permute(0, 1, 3, 2, 4)  # (B,g,T,c,S)
        v = v.reshape(-1, self.heads, c, T, S).permute(0, 1, 3, 4, 2)  # (B,g,T,S,c)
        logits = torch.matmul(q, k)  # no 1/sqrt(c): the official block has none
        if support_mask is not None:
            logits = self._mask(logits, support_mask, _grid(int(S) - 1))
        out = torch.matmul(logits.softmax(dim=-1), v)  # (B,g,T,L,c)
        out = out.permute(0, 1, 4, 2, 3).reshape(-1, self.heads * c, T, L)
        return self.out_norm(self.agg(out) + shortcut)

    @staticmethod
    def _mask(logits: torch.Tensor, support_mask: torch.Tensor, g: int) -> torch.Tensor:
        m = F.interpolate(support_mask.unsqueeze(1).float(), (g, g), mode="bilinear", align_corners=True)
        m = m.flatten(1)
        keep = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)  # CLS key always kept
        keep = keep.reshape(keep.shape[0], 1, 1, 1, -1)
        # an additive bias on the (B,1,1,1,S) row instead of masked_fill on the (B,g,T,L,S) logits:
        # exp(logit - 1e9 - max) underflows to exactly 0 as exp(-1e9 - max) does, so the softmax is
        # bit-identical, and a broadcast Add runs ~2x faster than a broadcast Where in ONNX Runtime
        # (`python bench/cst_mask_op.py`: 1x8x2500x10x145 at 400 px, Add+Softmax vs Where+Softmax)
        bias = torch.where(keep == 0, torch.full_like(keep, MASK_FILL), torch.zeros_like(keep))
        return logits + bias


class FeedForward(nn.Module):
    def __init__(self, ch: int, groups: int = 4):
        super().__init__()
        self.ff = nn.Sequential(
            nn.Conv2d(ch, ch // 2, 1, bias=False), nn.GroupNorm(groups, ch // 2), nn.ReLU(),
            nn.Conv2d(ch // 2, ch, 1, bias=False),
        )
        self.out_norm = nn.GroupNorm(groups, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_norm(self.ff(x) + x)


class CorrTransformBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.attn = CorrAttention(cin, cout, k)
        self.ff = FeedForward(cout)

    def forward(self, x: torch.Tensor, support_mask: torch.Tensor | None) -> torch.Tensor:
        return self.ff(self.attn(x, support_mask))


def _convs(chs, ksize: int, last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chs[:-1], chs[1:])):
        layers.append(nn.Conv2d(a, b, ksize, padding=ksize // 2, bias=True))
        if last_relu or i < len(chs) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class CorrelationLearner(nn.Module):
    """Correlation transformer + classification and segmentation heads.

    forward(corr (B,72,T,1+s*s) float32, support_mask (B,S,S) float {0,1} or None) ->
    dict(cls_logits (B,2), seg_logits (B,2,2*sqrt(T),2*sqrt(T))) float32. s must be in 12..23 so the two
    poolings (4, then 3) leave exactly one image token.
    """

    def __init__(self, in_ch: int = 72):
        super().__init__()
        self.corrtransformer = nn.Sequential(CorrTransformBlock(in_ch, 32, 4), CorrTransformBlock(32, 128, 3))
        self.linear = nn.Sequential(
            nn.Conv2d(128, 128, 1), nn.GroupNorm(4, 128), nn.ReLU(),
            nn.Conv2d(128, 128, 1), nn.GroupNorm(4, 128), nn.ReLU(),
        )
        self.decoder1_cls = _convs((128, 128, 64), 1, last_relu=True)
        self.decoder2_cls = _convs((64, 64, 2), 1, last_relu=False)
        self.decoder1_seg = _convs((128, 128, 64), 3, last_relu=True)
        self.decoder2_seg = _convs((64, 64, 2), 3, last_relu=False)

    def forward(self, corr: torch.Tensor, support_mask: torch.Tensor | None = None):
        x = corr
        for blk in self.corrtransformer:
            x = blk(x, support_mask)
        x = self.linear(x)  # (B,128,T,2): [cls token, seg token]
        hq = math.isqrt(int(x.shape[2]))
        in_cls = x[..., 0].reshape(-1, 128, hq, hq)
        in_seg = x[..., 1].reshape(-1, 128, hq, hq)
        cls = self.decoder1_cls(in_cls)
        cls = F.avg_pool2d(cls, 3, stride=2, padding=1)
        cls = self.decoder2_cls(cls).mean(dim=(2, 3))
        seg = self.decoder1_seg(in_seg)
        seg = F.interpolate(seg, (2 * hq, 2 * hq), mode="bilinear", align_corners=True)
        return {"cls_logits": cls, "seg_logits": self.decoder2_seg(seg)}
