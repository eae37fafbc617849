"""HSNet building blocks used by TLG: hypercorrelation pyramid, center-pivot 4D conv, HPNLearner.

HSNet (Min, Kang, Cho, ICCV 2021), `model/base/conv4d.py` and `model/learner.py`; module names
match it so a TLG checkpoint's `hpn_learner.*` keys load as is (spec §4.3).

Export note: HSNet prunes the strided support dims with `index_select` over an index it caches as
a Python attribute on the first call (device and size frozen then). Selecting every s-th row and
column is the same as a strided slice `x[..., ::s, ::s]`, which needs no state at all and exports
as one ONNX Slice, so that is what `CenterPivotConv4d` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.ops.torch_ops import cosine_correlation

HSNET_CHANNELS = (16, 64, 128)


def stack_ids(nbottlenecks) -> tuple[int, int, int]:
    """Cumulative layer counts (from the deepest stage) that split the 13/7 correlations into 3 levels.

    ResNet-50 blocks (3,4,6,3) -> (3,9,13); VGG16 groups (2,2,3,3,3,1) -> (1,4,7).
    """
    counts = list(nbottlenecks)[::-1]
    return counts[0], counts[0] + counts[1], counts[0] + counts[1] + counts[2]


def multilayer_correlation(query_feats, support_feats, ids) -> list[torch.Tensor]:
    """HSNet hypercorrelation pyramid, cosine clamped at 0, NO support masking (TLG).

    Args:
        query_feats, support_feats: lists of L (B,C_l,H_l,W_l) float32 maps (same B).
        ids: `stack_ids(...)` of the backbone.

    Returns:
        [corr_l4 (B,n4,Ha,Wa,Hb,Wb), corr_l3, corr_l2] float32, query dims (Ha,Wa) first.
    """
    corrs = []
    for q, s in zip(query_feats, support_feats):
        B, C, ha, wa = q.shape
        hb, wb = s.shape[-2:]
        c = cosine_correlation(q.flatten(2), s.flatten(2), clamp_min=0.0)  # (B,1,Nq,Ns)
        corrs.append(c.reshape(B, ha, wa, hb, wb))
    a, b, c = ids
    n = len(corrs)
    return [
        torch.stack(corrs[n - a:], dim=1),
        torch.stack(corrs[n - b:n - a], dim=1),
        torch.stack(corrs[n - c:n - b], dim=1),
    ]


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D conv: a 2D conv over the query dims plus a 2D conv over the support dims.

    Input (B,Cin,Ha,Wa,Hb,Wb) -> output (B,Cout,Ha,Wa,Hb',Wb') float32, where the support dims are
    strided by `stride` (the query dims never are).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = True):
        super().__init__()
        pad = kernel_size // 2
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=pad, bias=bias)
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        pruned = x[..., ::s, ::s] if s > 1 else x
        B, cin, ha, wa, hb, wb = pruned.shape
        out1 = pruned.permute(0, 4, 5, 1, 2, 3).reshape(-1, cin, ha, wa)
        out1 = self.conv1(out1)
        cout = out1.shape[1]
        out1 = out1.reshape(B, hb, wb, cout, ha, wa).permute(0, 3, 4, 5, 1, 2)

        B, cin, ha, wa, hb_full, wb_full = x.shape
        out2 = x.permute(0, 2, 3, 1, 4, 5).reshape(-1, cin, hb_full, wb_full)
        out2 = self.conv2(out2)
        out2 = out2.reshape(B, ha, wa, cout, hb, wb).permute(0, 3, 1, 2, 4, 5)
        return out1 + out2


def _building_block(in_channel: int, out_channels, kernel_sizes, strides, group: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (outch, k, s) in enumerate(zip(out_channels, kernel_sizes, strides)):
        inch = in_channel if i == 0 else out_channels[i - 1]
        layers += [CenterPivotConv4d(inch, outch, k, s), nn.GroupNorm(group, outch), nn.ReLU()]
    return nn.Sequential(*layers)


def _resize_query_dims(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinearly resize the query dims (Ha,Wa) of a (B,C,Ha,Wa,Hb,Wb) tensor to `size`."""
    B, C, ha, wa, hb, wb = x.shape
    y = x.permute(0, 4, 5, 1, 2, 3).reshape(-1, C, ha, wa)
    y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=True)
    return y.reshape(B, hb, wb, C, size[0], size[1]).permute(0, 3, 4, 5, 1, 2)


class HPNLearner(nn.Module):
    """HSNet 4D learner (squeeze + mix blocks); TLG uses only `forward_conv4d` (no HSNet decoder).

    Args:
        inch: correlation channels per level, deepest first: (3,6,4) ResNet-50, (1,3,3) VGG16.
    """

    def __init__(self, inch):
        super().__init__()
        c1, c2, c3 = HSNET_CHANNELS
        self.encoder_layer4 = _building_block(inch[0], [c1, c2, c3], [3, 3, 3], [2, 2, 2])
        self.encoder_layer3 = _building_block(inch[1], [c1, c2, c3], [5, 3, 3], [4, 2, 2])
        self.encoder_layer2 = _building_block(inch[2], [c1, c2, c3], [5, 5, 3], [4, 4, 2])
        self.encoder_layer4to3 = _building_block(c3, [c3, c3, c3], [3, 3, 3], [1, 1, 1])
        self.encoder_layer3to2 = _building_block(c3, [c3, c3, c3], [3, 3, 3], [1, 1, 1])

    def forward_conv4d(self, pyramid) -> torch.Tensor:
        """Args: pyramid [corr_l4, corr_l3, corr_l2] from `multilayer_correlation`.

        Returns:
            (B,128,Ha2,Wa2) float32 on the query grid of the finest level (S/8), support dims averaged.
        """
        sqz4 = self.encoder_layer4(pyramid[0])
        sqz3 = self.encoder_layer3(pyramid[1])
        sqz2 = self.encoder_layer2(pyramid[2])
        mix43 = self.encoder_layer4to3(_resize_query_dims(sqz4, sqz3.shape[2:4]) + sqz3)
        mix432 = self.encoder_layer3to2(_resize_query_dims(mix43, sqz2.shape[2:4]) + sqz2)
        return mix432.flatten(4).mean(dim=-1)
