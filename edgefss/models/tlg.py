"""TLG: "Through the Looking Glass: A Dual Perspective on Weakly-Supervised Few-Shot Segmentation"
(Ma, Xie, Zhao, Li; IEEE TIP 2026; arXiv 2508.16159; code jarch-ma/TLG). Spec: docs models-spec §1, §7.

Weights: the official `best_model.pt` (DataParallel, `module.`-prefixed, backbone included) via
`build_model("tlg", checkpoint=...)`; ImageNet backbones `resnet50-19c8e357.pth` /
`vgg16-397923af.pth` via `backbone_checkpoint=`. Nothing is downloaded; without a checkpoint the
model is randomly initialised (seeded) and says so.

Forward (per support/query pair, the query broadcast over the support batch B):
frozen backbone -> HA (1x1 reducers, concat, `final_cat`) -> 4D correlation (HSNet HPNLearner, both
directions) -> crossed `merge` -> HT (row tokens, self-attention, OT cross-attention, `proj`) ->
heterogeneous residual (support MaxPool / query AvgPool, shared `bn`) -> HC (text map at S/16)
-> HSNet decoders -> `res` fusion with the pseudo-mask.

Pseudo-masks are taken at the input resolution, (B,1,S,S) float32, like the released forward's
(B,400,400) masks, and resampled exactly as it does: straight to the decoder's S/4 grid with
bilinear align_corners=True inside the `res` fusion (point sampling; no area averaging, no
intermediate S/8 grid). The on-device prior used when no pseudo-mask is given is produced at SxS
too (`prior`, tlg_modules.backbone_prior) and goes through the same resampling.

Geometry: the grid h = S/8 (50 at S=400); `proj` is Linear(h, h*h) and the text map is
(h/2)x(h/2) via `linear_512_625` = Linear(512, (h/2)^2). Official weights therefore need S=400;
smaller S (multiple of 16) builds a geometrically consistent model for tests.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.errors import CheckpointError, InputError
from edgefss.models import register_model
from edgefss.models.checkpoints import build_seeded, load_into, read_state_dict, strip_prefix
from edgefss.models.hsnet import HPNLearner, multilayer_correlation, stack_ids
from edgefss.models.resnet import RESNET50_BLOCKS, ResNet50
from edgefss.models.tlg_modules import CrossAttention, SelfAttention, backbone_prior, row_tokens
from edgefss.models.vgg import VGG16

log = logging.getLogger(__name__)

TEXT_DIM = 512
DIM = 128
TEXT_KEYS = ("support", "query_fg", "query_bg")


@dataclass(frozen=True)
class TLGCfg:
    """TLG configuration.

    Attributes:
        backbone: "resnet50" or "vgg16".
        imgsz: square input size S (multiple of 16, >= 64); 400 for the official weights.
        official_forward: True reproduces the released forward's gradient scopes: `no_grad`
            around the backbone + text-map block and around the HC fusion only (model/TLG.py
            120-179 and 221-229), the OT plan detached (POT on numpy). HA and HT run with
            gradients but reach the loss only through that fusion, so only hpn_learner,
            decoder1/2 and `res` get a task-loss gradient. False (default) lets the task loss
            reach HA/HT/HC.
        dropout: dropout of both attention output projections (inactive in eval).
        sinkhorn_eps, sinkhorn_iter: HT's OT step (spec §1.3).
        seed: seed of the random initialisation.
    """

    backbone: str = "resnet50"
    imgsz: int = 400
    official_forward: bool = False
    dropout: float = 0.1
    sinkhorn_eps: float = 0.5
    sinkhorn_iter: int = 11
    seed: int = 0

    def __post_init__(self):
        if self.backbone not in _LAYOUT:
            raise InputError(f"TLG backbone must be one of {sorted(_LAYOUT)}, got {self.backbone!r}")
        if not isinstance(self.imgsz, int) or self.imgsz < 64 or self.imgsz % 16:
            raise InputError(f"TLG imgsz must be an int multiple of 16 and >= 64, got {self.imgsz!r}")


@dataclass(frozen=True)
class _Layout:
    """Which backbone features feed which part (spec §7 TLG 1, 6)."""

    backbone_cls: type
    blocks: tuple  # stage sizes, HSNet `nbottlenecks`
    support_ha: tuple  # (low, mid, high) feature indices
    query_ha: tuple
    reducers: tuple  # reducer module per HA level
    residual: int  # support feature index feeding both residuals
    residual_reducer: str
    prior_levels: tuple  # feature indices used by the backbone prior
    unused_official: tuple  # official keys this implementation drops


_UNUSED = ("conv1024_512.", "voc_conv_bach.", "coco_conv_batch.")
_LAYOUT = {
    "resnet50": _Layout(
        ResNet50, RESNET50_BLOCKS, (3, 9, 12), (0, 4, 10),
        ("conv_512_128", "conv_1024_128", "conv_2048_128"), 9, "conv_1024_128", (9, 12),
        _UNUSED + ("backbone.fc.",),
    ),
    # VGG16: every level is 512-ch, so the released code routes all of them (and the residual)
    # through conv_512_128; its conv_1024_128/conv_2048_128 exist but are never called.
    "vgg16": _Layout(
        VGG16, (2, 2, 3, 3, 3, 1), (2, 5, 6), (0, 3, 6),
        ("conv_512_128",) * 3, 5, "conv_512_128", (5, 6),
        _UNUSED + ("conv_1024_128.", "conv_2048_128.", "backbone.classifier."),
    ),
}


def _expand(x: torch.Tensor, B) -> torch.Tensor:
    return x.expand(B, *x.shape[1:])


class TLG(nn.Module):
    """TLG few-shot segmenter; see the module docstring. Build with `build_model("tlg")`."""

    def __init__(self, cfg: TLGCfg = TLGCfg()):
        super().__init__()
        self.cfg = cfg
        lay = self.layout = _LAYOUT[cfg.backbone]
        self.grid = cfg.imgsz // 8
        self.text_grid = self.grid // 2
        self.ids = stack_ids(lay.blocks)

        self.backbone = lay.backbone_cls()
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.hpn_learner = HPNLearner(list(reversed(lay.blocks[-3:])))

        for name in sorted(set(lay.reducers) | {lay.residual_reducer}):
            setattr(self, name, nn.Conv2d(int(name.split("_")[1]), DIM, 1))
        self.final_cat = nn.Conv2d(3 * DIM, DIM, 1)
        self.merge = nn.Sequential(nn.Conv2d(2 * DIM, DIM, 1, bias=False))
        self.SelfAttention = SelfAttention(DIM, 8, cfg.dropout)
        self.CrossAttention = CrossAttention(DIM, cfg.dropout, cfg.sinkhorn_eps, cfg.sinkhorn_iter)
        self.proj = nn.Linear(self.grid, self.grid * self.grid, bias=False)
        self.bn = nn.BatchNorm2d(DIM)
        self.linear_512_625 = nn.Linear(TEXT_DIM, self.text_grid ** 2)
        self.conv_2_1 = nn.Conv2d(2, 1, 1)
        self.decoder1 = nn.Sequential(
            nn.Conv2d(DIM, DIM, 3, padding=1), nn.ReLU(), nn.Conv2d(DIM, 64, 3, padding=1), nn.ReLU()
        )
        self.decoder2 = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 2, 3, padding=1)
        )
        self.res = nn.Sequential(nn.Conv2d(3, 10, 1), nn.GELU(), nn.Conv2d(10, 2, 1))

    # The backbone stays frozen in eval mode (BN statistics fixed) whatever mode the model is in.
    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def head_parameters(self):
        """Learnable (non-backbone) parameters, by name."""
        return {k: p for k, p in self.named_parameters() if not k.startswith("backbone.")}

    # ---------------------------------------------------------------- features
    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Frozen backbone features.

        Args:
            image: (B,3,S,S) float32, ImageNet-normalised (PreprocessCfg).

        Returns:
            13 (ResNet-50) or 7 (VGG16) pre-ReLU (B,C_l,H_l,W_l) float32 maps.
        """
        if not torch.onnx.is_in_onnx_export():
            S = self.cfg.imgsz
            if image.dim() != 4 or tuple(image.shape[1:]) != (3, S, S) or not image.is_floating_point():
                raise InputError(
                    f"TLG image must be a (B,3,{S},{S}) float tensor, got {tuple(image.shape)} {image.dtype}"
                )
        with torch.no_grad():
            return self.backbone.extract_features(image)

    def prior(self, query_feats, support_feats) -> tuple[torch.Tensor, torch.Tensor]:
        """On-device pseudo-mask generator (replaces the paper's unreleased offline CLIP Grad-CAM).

        Cosine similarity of each query position's high-level feature (layer3-last and layer4-last
        for ResNet-50; conv5_3 and pool5 for VGG16) to every support position, max over the support,
        min-max normalised per image at the feature's own resolution, resized to SxS (bilinear,
        align_corners=True) and averaged over the two levels (PFENet prior); symmetrically for the
        support. SxS is where the released code takes its pseudo-masks, so the prior then goes
        through the same SxS -> S/4 resampling as an external mask (`decode`). Soft, not
        thresholded. Forward-only (no gradient).

        Args:
            query_feats: list of (1 or B,C_l,H_l,W_l) float32; support_feats: list of (B,...).

        Returns:
            (query_pseudo, support_pseudo), each (B,1,S,S) float32 in [0,1].
        """
        B = support_feats[0].shape[0]
        levels = self.layout.prior_levels
        S = self.cfg.imgsz
        with torch.no_grad():
            return backbone_prior(
                [_expand(query_feats[i], B) for i in levels],
                [support_feats[i] for i in levels],
                (S, S),
            )

    # ---------------------------------------------------------------- head parts
    def aggregate(self, feats, idx) -> torch.Tensor:
        """HA: three levels -> 1x1 reducers -> resize to the grid -> concat -> final_cat. (B,128,h,h)."""
        maps = []
        for i, name in zip(idx, self.layout.reducers):
            m = getattr(self, name)(feats[i])
            if m.shape[-1] != self.grid:
                m = F.interpolate(m, size=(self.grid, self.grid), mode="bilinear", align_corners=True)
            maps.append(m)
        return self.final_cat(torch.cat(maps, dim=1))

    def transfer(self, x: torch.Tensor, detach_ot: bool) -> torch.Tensor:
        """HT: (B,128,h,h) -> row tokens (B,h,128) -> self-attn -> OT cross-attn -> proj -> (B,128,h,h)."""
        B = x.shape[0]
        tokens = row_tokens(x)
        y = self.CrossAttention(self.SelfAttention(tokens), tokens, detach_ot=detach_ot)
        return self.proj(y.transpose(1, 2)).reshape(B, DIM, self.grid, self.grid)

    def text_maps(self, text: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """HC text maps: support (refine prompt) and query (conv_2_1 on [fg, bg]); each (B,1,h/2,h/2)."""
        t = self.text_grid

        def to_map(v):
            return self.linear_512_625(v).reshape(-1, 1, t, t)

        q = self.conv_2_1(torch.cat([to_map(text["query_fg"]), to_map(text["query_bg"])], dim=1))
        return to_map(text["support"]), q

    @staticmethod
    def fuse_text(x: torch.Tensor, text_map: torch.Tensor) -> torch.Tensor:
        """HC fusion at half resolution (released code: default align_corners=False both ways)."""
        y = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False) * text_map
        return F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)

    def decode(self, x: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        """HSNet decoders + `res` fusion with the pseudo-mask: (B,128,h,h), (B,1,S,S) -> (B,2,2h,2h)."""
        return self.fuse_pseudo(self.decoder_logits(x), pseudo)

    def decoder_logits(self, x: torch.Tensor) -> torch.Tensor:
        """decoder1 -> x2 (bilinear, align_corners=True) -> decoder2: (B,128,h,h) -> (B,2,2h,2h)."""
        size = (2 * self.grid, 2 * self.grid)
        y = F.interpolate(self.decoder1(x), size=size, mode="bilinear", align_corners=True)
        return self.decoder2(y)

    def fuse_pseudo(self, logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        """`res` fusion: (B,2,2h,2h) decoder logits, (B,1,S,S) pseudo-mask -> (B,2,2h,2h).

        The mask goes straight from SxS to the 2h = S/4 grid by bilinear align_corners=True, as
        in the released forward (it samples the SxS mask at x = i*(S-1)/(S/4-1); no averaging).
        """
        p = F.interpolate(pseudo, size=logits.shape[-2:], mode="bilinear", align_corners=True)
        return self.res(torch.cat([logits, p], dim=1))

    # ---------------------------------------------------------------- head
    def head(self, query_feats, support_feats, text: dict, query_pseudo, support_pseudo) -> dict:
        """Everything after the backbone.

        Args:
            query_feats: list of L (1 or B,C_l,H_l,W_l) float32 (the query is broadcast over B).
            support_feats: list of L (B,C_l,H_l,W_l) float32.
            text: {"support", "query_fg", "query_bg"} each (B or 1,512) float32 CLIP text embeddings.
            query_pseudo, support_pseudo: (B or 1,1,S,S) float32 pseudo-masks in [0,1] at the
                input resolution (the released forward's (B,400,400) masks with a channel axis).

        Returns:
            dict(query_logits (B,2,S/4,S/4), support_logits (B,2,S/4,S/4)) float32.
        """
        t = self.trace(query_feats, support_feats, text, query_pseudo, support_pseudo)
        return {"query_logits": t["query_logits"], "support_logits": t["support_logits"]}

    def trace(self, query_feats, support_feats, text: dict, query_pseudo, support_pseudo) -> dict:
        """`head` with its intermediates, to localise a difference against the released code.

        Args: as `head`.

        Returns:
            dict of float32 tensors, each for the query (`q_`) and support (`s_`) branch:
            `*_ha` HA output (B,128,h,h); `*_after4d` 4D-learner output of the query / support
            direction (B,128,h,h) (`q_after4d` = released `after4d_query`); `*_merge` (B,128,h,h);
            `*_ht` HT output before the residual (B,128,h,h); `*_res` after the heterogeneous
            residual (B,128,h,h); `*_hc` HC fusion output (B,128,h,h); `*_dec` decoder logits
            before `res` (B,2,2h,2h); and `query_logits`, `support_logits` (B,2,2h,2h).
        """
        B = support_feats[0].shape[0]
        if not torch.onnx.is_in_onnx_export():
            self._check_head_inputs(query_feats, support_feats, text, query_pseudo, support_pseudo)
        qf = [_expand(q, B) for q in query_feats]
        sf = list(support_feats)
        text = {k: _expand(text[k], B) for k in TEXT_KEYS}
        query_pseudo, support_pseudo = _expand(query_pseudo, B), _expand(support_pseudo, B)

        corr_q = multilayer_correlation(qf, sf, self.ids)
        # the released code correlates again with the roles swapped; cosine and the clamp at 0 are
        # symmetric, so that pyramid is this one with its query and support dims exchanged —
        # transposing it saves half of the 13-layer correlation (torch at 400 px: 1266 ms of
        # correlation for a 344 ms copy; a permuted view instead of the copy slows the 4D convs more).
        # `swapped=True` makes that copy inside the learner (or, in exported graphs, runs the pass
        # on this layout with the pairs' roles exchanged: exporters/conv4d_forms.py)
        t = {"q_after4d": self.hpn_learner.forward_conv4d(corr_q),
             "s_after4d": self.hpn_learner.forward_conv4d(corr_q, swapped=True)}
        a4_q, a4_s = t["q_after4d"], t["s_after4d"]

        # the released code's no_grad scopes: the text maps sit in its backbone/text block, the HC
        # fusion in a second block; HA, merge, HT and the residual run with gradients
        official = self.cfg.official_forward
        released_no_grad = torch.no_grad if official else contextlib.nullcontext
        with released_no_grad():
            s_text, q_text = self.text_maps(text)
        t["s_ha"] = self.aggregate(sf, self.layout.support_ha)
        t["q_ha"] = self.aggregate(qf, self.layout.query_ha)
        # crossed on purpose (spec §7 TLG 3): each branch's HA meets the other direction's 4D output
        t["s_merge"] = self.merge(torch.cat([t["s_ha"], a4_q], dim=1))
        t["q_merge"] = self.merge(torch.cat([t["q_ha"], a4_s], dim=1))
        t["s_ht"], t["q_ht"] = self.transfer(t["s_merge"], official), self.transfer(t["q_merge"], official)
        # the released code feeds the SUPPORT residual source to both branches (spec §1.2 (5))
        size2 = (2 * self.grid, 2 * self.grid)
        src = F.interpolate(sf[self.layout.residual], size=size2, mode="bilinear", align_corners=True)
        src = getattr(self, self.layout.residual_reducer)(src)
        t["s_res"] = torch.relu(self.bn(t["s_ht"]) + F.max_pool2d(src, 2))
        t["q_res"] = torch.relu(self.bn(t["q_ht"]) + F.avg_pool2d(src, 2))
        with released_no_grad():
            t["s_hc"], t["q_hc"] = self.fuse_text(t["s_res"], s_text), self.fuse_text(t["q_res"], q_text)
        t["q_dec"] = self.decoder_logits(t["q_hc"] + a4_q)
        t["s_dec"] = self.decoder_logits(t["s_hc"] + a4_s)
        t["query_logits"] = self.fuse_pseudo(t["q_dec"], query_pseudo)
        t["support_logits"] = self.fuse_pseudo(t["s_dec"], support_pseudo)
        return t

    def _check_head_inputs(self, query_feats, support_feats, text, query_pseudo, support_pseudo):
        def shape(x):
            return tuple(x.shape) if torch.is_tensor(x) else type(x).__name__

        L = self.backbone.n_feats
        for nm, fs in (("query_feats", query_feats), ("support_feats", support_feats)):
            if not isinstance(fs, (list, tuple)) or len(fs) != L:
                got = f"{type(fs).__name__} of length {len(fs)}" if hasattr(fs, "__len__") else shape(fs)
                raise InputError(f"TLG head: {nm} must be a list of {L} maps from encode(), got {got}")
        B = support_feats[0].shape[0]
        for i, (q, s) in enumerate(zip(query_feats, support_feats)):
            if q.shape[1:] != s.shape[1:] or q.shape[0] not in (1, B) or s.shape[0] != B:
                raise InputError(
                    f"TLG head: feature {i}: query {shape(q)} and support {shape(s)} must agree "
                    f"(query batch 1 or {B})"
                )
        if not isinstance(text, dict) or not set(TEXT_KEYS) <= set(text):
            got = sorted(text) if isinstance(text, dict) else type(text).__name__
            raise InputError(f"TLG head: text must be a dict with keys {TEXT_KEYS}, got {got}")
        for k in TEXT_KEYS:
            v = text[k]
            if not torch.is_tensor(v) or v.dim() != 2 or v.shape[1] != TEXT_DIM or v.shape[0] not in (1, B):
                want = f"(B or 1,{TEXT_DIM})"
                raise InputError(f"TLG head: text[{k!r}] must be a {want} tensor (B={B}), got {shape(v)}")
        S = self.cfg.imgsz
        for nm, p in (("query_pseudo", query_pseudo), ("support_pseudo", support_pseudo)):
            if not torch.is_tensor(p) or p.dim() != 4 or tuple(p.shape[1:]) != (1, S, S) or p.shape[0] not in (1, B):
                want = f"(B or 1,1,{S},{S}) (the input resolution S)"
                raise InputError(f"TLG head: {nm} must be a {want} tensor (B={B}), got {shape(p)}")

    def forward(self, query_img, support_img, text: dict, query_pseudo=None, support_pseudo=None) -> dict:
        """One episode (or B support images of one query).

        Args:
            query_img: (1 or B,3,S,S) float32; support_img: (B,3,S,S) float32 (normalised).
            text: as in `head`.
            query_pseudo, support_pseudo: optional (1 or B,1,S,S) float32 masks in [0,1] at the
                input resolution; None = `prior`.

        Returns:
            dict(query_logits (B,2,S,S), support_logits (B,2,S,S)) float32.
        """
        qf, sf = self.encode(query_img), self.encode(support_img)
        if query_pseudo is None or support_pseudo is None:
            pq, ps = self.prior(qf, sf)
            query_pseudo = pq if query_pseudo is None else query_pseudo
            support_pseudo = ps if support_pseudo is None else support_pseudo
        out = self.head(qf, sf, text, query_pseudo, support_pseudo)
        S = self.cfg.imgsz
        return {k: F.interpolate(v, size=(S, S), mode="bilinear", align_corners=True) for k, v in out.items()}


@torch.no_grad()
def predict_mask_nshot(
    model: TLG, query_img, support_imgs, text: dict, query_pseudo=None, support_pseudo=None
) -> torch.Tensor:
    """K-shot query mask by HSNet voting (spec §1.5): per-shot argmax, summed, / max(max vote, 1), >= 0.5.

    Args:
        query_img: (1,3,S,S) float32; support_imgs: (K,3,S,S) float32.
        text: each (1 or K,512); query_pseudo/support_pseudo: optional (1 or K,1,S,S).

    Returns:
        (1,S,S) int64 mask in {0,1}. For K=1 this is the plain argmax.
    """
    if query_img.dim() != 4 or query_img.shape[0] != 1:
        raise InputError(f"predict_mask_nshot: query_img must be (1,3,S,S), got {tuple(query_img.shape)}")
    K = support_imgs.shape[0]
    if query_pseudo is not None:
        query_pseudo = _expand(query_pseudo, K)
    votes = model(query_img, support_imgs, text, query_pseudo, support_pseudo)["query_logits"].argmax(dim=1)
    votes = votes.sum(dim=0, keepdim=True)
    max_vote = votes.flatten(1).amax(dim=1).clamp(min=1).reshape(1, 1, 1)
    return (votes.float() / max_vote >= 0.5).long()


# -------------------------------------------------------------------- checkpoints
def _fill_missing_bn_counters(module: nn.Module, sd: dict, prefix: str = "") -> dict:
    """Old torchvision files (resnet50-19c8e357) predate BN's num_batches_tracked buffer."""
    sd = dict(sd)
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked") and prefix + k not in sd:
            sd[prefix + k] = v
    return sd


def load_torchvision_backbone(model: TLG, path) -> None:
    """Load torchvision ImageNet weights into `model.backbone` (classifier keys ignored).

    Raises:
        CheckpointError: missing/unexpected/mis-shaped keys, named.
    """
    sd, _ = read_state_dict(path)
    head = "fc." if model.cfg.backbone == "resnet50" else "classifier."
    sd = _fill_missing_bn_counters(model.backbone, sd)
    what = f"torchvision {model.cfg.backbone} backbone ('{path}')"
    load_into(model.backbone, sd, what, ignore_unexpected=(head,))


def load_tlg_checkpoint(model: TLG, path) -> None:
    """Load an official TLG `best_model.pt` (DataParallel `module.` prefix) or an edgefss save.

    Note: the official files also hold convs the released forward never calls (`conv1024_512`,
    `voc_conv_bach`, `coco_conv_batch`; for VGG16 also `conv_1024_128`, `conv_2048_128`) and the
    backbone classifier; those keys are accepted and ignored (logged at INFO).
    The official `proj`/`linear_512_625` shapes fix imgsz at 400.

    Raises:
        CheckpointError: any other missing/unexpected key or shape mismatch, named.
    """
    sd, _ = read_state_dict(path)
    if any(k.startswith("module.") for k in sd):
        sd = strip_prefix(sd, "module.")
    if "proj.weight" in sd and tuple(sd["proj.weight"].shape) != tuple(model.proj.weight.shape):
        raise CheckpointError(
            f"checkpoint '{path}' has proj.weight {tuple(sd['proj.weight'].shape)} but the model was built "
            f"for imgsz={model.cfg.imgsz} (needs {tuple(model.proj.weight.shape)}); official weights need "
            "imgsz=400"
        )
    unused = model.layout.unused_official
    ignored = sorted(k for k in sd if k.startswith(unused))
    if ignored:
        log.info("TLG checkpoint '%s': ignoring %d keys of unused modules: %s",
                 path, len(ignored), ignored[:8])
    sd = _fill_missing_bn_counters(model.backbone, sd, prefix="backbone.")
    load_into(model, sd, f"TLG ({model.cfg.backbone}) checkpoint '{path}'", ignore_unexpected=unused)


def _build(backbone: str, checkpoint=None, backbone_checkpoint=None, **cfg) -> TLG:
    try:
        c = TLGCfg(backbone=backbone, **cfg)
    except TypeError as exc:
        raise InputError(
            f"build_model('tlg'): unknown config option ({exc}); expected fields of TLGCfg"
        ) from exc
    what = f"TLG ({backbone})" + (" head" if backbone_checkpoint is not None else " head and backbone")
    return build_seeded(lambda: TLG(c), c.seed, checkpoint, load_tlg_checkpoint, backbone_checkpoint,
                        load_torchvision_backbone, what)


@register_model("tlg")
def tlg_resnet50(checkpoint=None, backbone_checkpoint=None, **cfg) -> TLG:
    """TLG with a ResNet-50 backbone (spec §1)."""
    return _build("resnet50", checkpoint, backbone_checkpoint, **cfg)


@register_model("tlg_vgg16")
def tlg_vgg16(checkpoint=None, backbone_checkpoint=None, **cfg) -> TLG:
    """TLG with a VGG16 backbone (spec §1)."""
    return _build("vgg16", checkpoint, backbone_checkpoint, **cfg)
