"""HSNet building blocks used by TLG: hypercorrelation pyramid, center-pivot 4D conv, HPNLearner.

HSNet (Min, Kang, Cho, ICCV 2021), `model/base/conv4d.py` and `model/learner.py`; module names
match it so a TLG checkpoint's `hpn_learner.*` keys load as is (spec §4.3).

Export note: HSNet prunes the strided support dims with `index_select` over an index it caches as
a Python attribute on the first call (device and size frozen then). Selecting every s-th row and
column is the same as a strided slice `x[..., ::s, ::s]`, which needs no state at all and exports
as one ONNX Slice, so that is what `CenterPivotConv4d` does.

Formulations (`Conv4dForm`): the eager path folds the other dim pair into the batch with
permutes (as HSNet). `HPNLearner.conv4d_form` (None = eager; set only by
edgefss/exporters/conv4d_forms.py during ONNX export) selects the same arithmetic written without
those copies: a 2D conv over the outer pair (dims 2,3) as a Conv3d with a (k,k,1) kernel or as a 2D
conv dilated by the inner size; over the inner pair (dims 4,5) as a Conv3d with a (1,k,k) kernel;
and the support-direction pass run on the query-first layout with the pairs' roles exchanged
instead of on a transposed copy. Same weights, same state-dict keys; tests/test_conv4d_forms.py.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        B, _C, ha, wa = q.shape
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


@dataclass(frozen=True)
class Conv4dForm:
    """How the center-pivot 4D convs are written (see the module docstring); EAGER is HSNet's.

    outer: 2D conv over dims (2,3), stride 1: 'perm' | 'c3d' (Conv3d, (k,k,1) kernel) |
        'dil' (2D conv on (B,C,H,W*M) dilated by M = inner size).
    inner: 2D conv over dims (4,5), any stride: 'perm' | 'c3d' (Conv3d, (1,k,k) kernel).
    outer_strided: strided 2D conv over dims (2,3) (support pass when `swap`): 'perm' | 'c3d'.
    swap: the support pass runs on the query-first pyramid with the pairs' roles exchanged
        (False: on a transposed copy, as eager).
    """

    outer: str = "perm"
    inner: str = "perm"
    outer_strided: str = "perm"
    swap: bool = False

    def __post_init__(self):
        for name, val, ok in (("outer", self.outer, ("perm", "c3d", "dil")), ("inner", self.inner, ("perm", "c3d")),
                              ("outer_strided", self.outer_strided, ("perm", "c3d"))):
            if val not in ok:
                raise ValueError(f"Conv4dForm.{name}={val!r}; expected one of {ok}")

    @property
    def name(self) -> str:
        return f"outer={self.outer},inner={self.inner},outer_strided={self.outer_strided},swap={int(self.swap)}"


EAGER_FORM = Conv4dForm()


def _geometry(conv: nn.Conv2d, a: int, b: int):
    """(strides, paddings, output size over an (a, b) plane, out channels) of a 2D conv."""
    (k0, k1), (s0, s1), (p0, p1) = conv.kernel_size, conv.stride, conv.padding
    return (s0, s1), (p0, p1), ((a + 2 * p0 - k0) // s0 + 1, (b + 2 * p1 - k1) // s1 + 1), conv.out_channels


def conv_outer(x: torch.Tensor, conv: nn.Conv2d, form: str) -> torch.Tensor:
    """`conv` over dims (2,3) of x (B,C,H,W,h,w) float32 -> (B,Cout,H',W',h,w); form as Conv4dForm.outer."""
    B, C, H, W, h, w = x.shape
    (s0, s1), (p0, p1), (H2, W2), cout = _geometry(conv, H, W)
    if form == "perm":
        y = conv(x.permute(0, 4, 5, 1, 2, 3).reshape(B * h * w, C, H, W))
        return y.reshape(B, h, w, cout, H2, W2).permute(0, 3, 4, 5, 1, 2)
    if form == "c3d":
        y = F.conv3d(x.reshape(B, C, H, W, h * w), conv.weight.unsqueeze(-1), conv.bias,
                     stride=(s0, s1, 1), padding=(p0, p1, 0))
        return y.reshape(B, cout, H2, W2, h, w)
    if form == "dil":
        if (s0, s1) != (1, 1) or 2 * p1 != conv.kernel_size[1] - 1:
            raise ValueError("conv_outer form 'dil' needs stride 1 and 'same' padding")
        M = h * w
        # the W taps land M apart; zero padding of p1*M covers exactly the out-of-range neighbours
        y = F.conv2d(x.reshape(B, C, H, W * M), conv.weight, conv.bias, padding=(p0, p1 * M), dilation=(1, M))
        return y.reshape(B, cout, H2, W, h, w)
    raise ValueError(f"conv_outer form {form!r}")


def conv_inner(x: torch.Tensor, conv: nn.Conv2d, form: str) -> torch.Tensor:
    """`conv` over dims (4,5) of x (B,C,H,W,h,w) float32 -> (B,Cout,H,W,h',w'); form as Conv4dForm.inner."""
    B, C, H, W, h, w = x.shape
    (s0, s1), (p0, p1), (h2, w2), cout = _geometry(conv, h, w)
    if form == "perm":
        y = conv(x.permute(0, 2, 3, 1, 4, 5).reshape(B * H * W, C, h, w))
        return y.reshape(B, H, W, cout, h2, w2).permute(0, 3, 1, 2, 4, 5)
    if form == "c3d":
        y = F.conv3d(x.reshape(B, C, H * W, h, w), conv.weight.unsqueeze(2), conv.bias,
                     stride=(1, s0, s1), padding=(0, p0, p1))
        return y.reshape(B, cout, H, W, h2, w2)
    raise ValueError(f"conv_inner form {form!r}")


def center_pivot_form(m: CenterPivotConv4d, x: torch.Tensor, form: Conv4dForm, swapped: bool) -> torch.Tensor:
    """`m(x)` written in `form`.

    swapped=False: x (B,Cin,Ha,Wa,Hb,Wb), query pair (2,3), as `m.forward`.
    swapped=True: the query pair is (4,5) (the support pass on the query-first layout); equals
        `m(x.permute(0,1,4,5,2,3)).permute(0,1,4,5,2,3)`.
    """
    s = m.stride
    if not swapped:
        pruned = x[..., ::s, ::s] if s > 1 else x
        return conv_outer(pruned, m.conv1, form.outer) + conv_inner(x, m.conv2, form.inner)
    pruned = x[:, :, ::s, ::s] if s > 1 else x
    strided = form.outer if s == 1 else form.outer_strided
    return conv_inner(pruned, m.conv1, form.inner) + conv_outer(x, m.conv2, strided)


def _block_form(block: nn.Sequential, x: torch.Tensor, form: Conv4dForm, swapped: bool) -> torch.Tensor:
    for layer in block:
        x = center_pivot_form(layer, x, form, swapped) if isinstance(layer, CenterPivotConv4d) else layer(x)
    return x


def _resize_support_dims(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinearly resize dims (4,5) of a (B,C,H,W,h,w) tensor to `size` (no permute: they are last)."""
    B, C, H, W, h, w = x.shape
    y = F.interpolate(x.reshape(B, C * H * W, h, w), size=tuple(size), mode="bilinear", align_corners=True)
    return y.reshape(B, C, H, W, size[0], size[1])


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

    # None: the eager formulation; a Conv4dForm only inside edgefss.exporters.conv4d_forms.conv4d_export
    conv4d_form: Conv4dForm | None = None

    def forward_conv4d(self, pyramid, swapped: bool = False) -> torch.Tensor:
        """Args: pyramid [corr_l4, corr_l3, corr_l2] from `multilayer_correlation`; swapped: run
        the support direction, i.e. on the pyramid with its query and support pairs exchanged
        (what the released code gets by correlating again with the roles swapped).

        Returns:
            (B,128,Ha2,Wa2) float32 on the query grid of the finest level (S/8), support dims averaged
            (swapped: on the support grid, query dims averaged).
        """
        form = self.conv4d_form
        if form is not None and form != EAGER_FORM:
            if swapped and not form.swap:
                pyramid = [c.permute(0, 1, 4, 5, 2, 3).contiguous() for c in pyramid]
                swapped = False
            return self._forward_form(pyramid, form, swapped)
        if swapped:
            pyramid = [c.permute(0, 1, 4, 5, 2, 3).contiguous() for c in pyramid]
        sqz4 = self.encoder_layer4(pyramid[0])
        sqz3 = self.encoder_layer3(pyramid[1])
        sqz2 = self.encoder_layer2(pyramid[2])
        mix43 = self.encoder_layer4to3(_resize_query_dims(sqz4, sqz3.shape[2:4]) + sqz3)
        mix432 = self.encoder_layer3to2(_resize_query_dims(mix43, sqz2.shape[2:4]) + sqz2)
        return mix432.flatten(4).mean(dim=-1)

    def _forward_form(self, pyramid, form: Conv4dForm, swapped: bool) -> torch.Tensor:
        """`forward_conv4d` in `form`; swapped: the query pair of this pass is dims (4,5)."""
        sqz4 = _block_form(self.encoder_layer4, pyramid[0], form, swapped)
        sqz3 = _block_form(self.encoder_layer3, pyramid[1], form, swapped)
        sqz2 = _block_form(self.encoder_layer2, pyramid[2], form, swapped)
        if swapped:
            mix43 = _block_form(self.encoder_layer4to3, _resize_support_dims(sqz4, sqz3.shape[4:6]) + sqz3,
                                form, swapped)
            mix432 = _block_form(self.encoder_layer3to2, _resize_support_dims(mix43, sqz2.shape[4:6]) + sqz2,
                                 form, swapped)
            return mix432.flatten(2, 3).mean(dim=2)
        mix43 = _block_form(self.encoder_layer4to3, _resize_query_dims(sqz4, sqz3.shape[2:4]) + sqz3, form, swapped)
        mix432 = _block_form(self.encoder_layer3to2, _resize_query_dims(mix43, sqz2.shape[2:4]) + sqz2, form, swapped)
        return mix432.flatten(4).mean(dim=-1)
