"""IMR-HSNet: "Iterative Few-shot Semantic Segmentation from Image Label Text" (Wang et al., IJCAI 2022;
arXiv 2303.05646; code Whileherham/IMR-HSNet@5757227, `model/hsnet_imr.py`). Spec: models-spec §4.2.

An HSNet whose 4D-learner output feeds a convolutional GRU ("iterative mutual refinement"): per
stage and per branch (query, support) the cell takes [CAM (1), after4d (128), mid (512), state
(128)] at the S/8 grid, updates the learnable `state`, decodes `state + after4d` with HSNet's
decoders and fuses the decoder logits with the CAM in the `res` head (1x1 3->10, GELU, 10->2).
Between stages the softmax foreground of each branch's logits becomes that branch's new CAM and
re-masks the features. 2 stages for PASCAL (VOC), 3 for COCO (`stages`).

Inputs are the CAM pseudo-masks the released code reads from `<img>--<cls>.pt` files: (B,h,h)
float maps in [0,1] at the S/8 grid (50x50 at S=400; `generate_cam_voc.py` cv2-resizes the
CLIP Grad-CAM to 50x50). Here they carry a channel axis: (B,1,h,h) float32. Where they come from
(CLIP Grad-CAM, a user's masks) does not matter to this module.

The initial masking, exactly as released (hsnet_imr.py:110-114, `mask_feature` 228-233), and why
it is reproduced:
- The CAMs are SWAPPED: the query features are multiplied by the SUPPORT CAM and the support
  features by the QUERY CAM (each CAM bilinearly resized to the feature size, align_corners=True).
- `mask_feature` writes into the list it is given and returns that same list, so
  `query_feats_masked IS query_feats` and `support_feats_masked IS support_feats`. Hence
  `corr_query = Corr(query_feats, support_feats_masked)` correlates two MASKED pyramids, and
  `corr_support` is the same correlation with the roles exchanged (computed here once and
  transposed: cosine and the clamp at 0 are symmetric).
- Between stages (hsnet_imr.py:206-215) the new CAMs multiply those already-masked features again
  (cumulative masking, again in place), now each branch by its OWN new CAM (100x100 softmax
  foreground, resized to each feature size), and both correlations are recomputed.
- The mid-level features (`q_mid_feat`/`s_mid_feat`, layer-3 sum or VGG conv5_x sum, resized to
  the grid) are taken before any masking.
The released checkpoints were trained with exactly this data flow, so the "intended" unaliased
masking would feed them correlations of a kind they never saw; edgefss reproduces the code.

Weights: the official `best_model.pt` (`nn.DataParallel` state_dict, `module.` keys, backbone and
for ResNet-50 `conv1024_512` included) via `build_model("imr_hsnet", checkpoint=...)`; ImageNet
backbones via `backbone_checkpoint=`. The learnable `state` is (1,128,h,h), so official weights
need imgsz=400; smaller S (multiple of 16, >= 64) builds a consistent model for tests.
"""

from __future__ import annotations

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
from edgefss.models.tlg import _fill_missing_bn_counters, load_torchvision_backbone
from edgefss.models.vgg import VGG16

log = logging.getLogger(__name__)

DIM = 128
MID = 512
GRU_IN = 1 + DIM + MID + DIM  # [cam, after4d, mid, state] = 769
STAGES = {"pascal": 2, "coco": 3}


@dataclass(frozen=True)
class IMRCfg:
    """IMR-HSNet configuration.

    Attributes:
        backbone: "resnet50" or "vgg16".
        stages: refinement stages, 2 (PASCAL, the released test default) or 3 (COCO); any >= 1 runs.
        imgsz: square input size S (multiple of 16, >= 64); 400 for the official weights.
        seed: seed of the random initialisation.
    """

    backbone: str = "resnet50"
    stages: int = 2
    imgsz: int = 400
    seed: int = 0

    def __post_init__(self):
        if self.backbone not in _LAYOUT:
            raise InputError(f"IMR-HSNet backbone must be one of {sorted(_LAYOUT)}, got {self.backbone!r}")
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 1:
            raise InputError(f"IMR-HSNet stages must be an int >= 1 (2 PASCAL, 3 COCO), got {self.stages!r}")
        if not isinstance(self.imgsz, int) or self.imgsz < 64 or self.imgsz % 16:
            raise InputError(f"IMR-HSNet imgsz must be an int multiple of 16 and >= 64, got {self.imgsz!r}")


@dataclass(frozen=True)
class _Layout:
    backbone_cls: type
    blocks: tuple  # HSNet `nbottlenecks`
    mid: tuple  # feature indices summed into the mid-level map (released forward 95-108)
    reduce_mid: bool  # ResNet-50: conv1024_512 brings the 1024-ch sum to 512
    unused_official: tuple  # official keys the forward never reads


_LAYOUT = {
    "resnet50": _Layout(ResNet50, RESNET50_BLOCKS, (4, 5, 6, 7, 8, 9), True, ("backbone.fc.",)),
    "vgg16": _Layout(VGG16, (2, 2, 3, 3, 3, 1), (3, 4, 5), False, ("backbone.classifier.",)),
}


def _expand(x: torch.Tensor, B: int) -> torch.Tensor:
    return x.expand(B, *x.shape[1:])


def mask_features(feats, cam: torch.Tensor) -> list:
    """Released `mask_feature` without the in-place write: every map times `cam` resized to its size.

    Args:
        feats: list of (B,C_l,H_l,W_l) float32; cam: (B,1,h,w) float32.
    Returns:
        new list of (B,C_l,H_l,W_l) float32.
    """
    return [f * F.interpolate(cam, size=f.shape[-2:], mode="bilinear", align_corners=True) for f in feats]


class IMRHSNet(nn.Module):
    """IMR-HSNet (see the module docstring). Build with `build_model("imr_hsnet", ...)`."""

    def __init__(self, cfg: IMRCfg = IMRCfg()):
        super().__init__()
        self.cfg = cfg
        lay = self.layout = _LAYOUT[cfg.backbone]
        self.grid = cfg.imgsz // 8
        self.ids = stack_ids(lay.blocks)
        self.backbone = lay.backbone_cls()
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        if lay.reduce_mid:
            self.conv1024_512 = nn.Conv2d(1024, MID, 1)
        self.hpn_learner = HPNLearner(list(reversed(lay.blocks[-3:])))
        self.state = nn.Parameter(torch.zeros(1, DIM, self.grid, self.grid))
        # the GRU gates: a 1x1 conv to 512 ch, then two 3x3 grouped convs (8 groups) on its halves
        for g in ("z", "r", "h"):
            setattr(self, f"conv{g}0", nn.Conv2d(GRU_IN, 512, 1))
            setattr(self, f"conv{g}1", nn.Conv2d(256, 64, 3, padding=1, groups=8))
            setattr(self, f"conv{g}2", nn.Conv2d(256, 64, 3, padding=1, groups=8))
        self.decoder1 = nn.Sequential(
            nn.Conv2d(DIM, DIM, 3, padding=1), nn.ReLU(), nn.Conv2d(DIM, 64, 3, padding=1), nn.ReLU()
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 2, 3, padding=1))
        self.res = nn.Sequential(nn.Conv2d(3, 10, 1), nn.GELU(), nn.Conv2d(10, 2, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen BN statistics, as the released train_mode()
        return self

    # ---------------------------------------------------------------- parts
    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Frozen backbone: (B,3,S,S) float32 (ImageNet-normalised) -> 13 / 7 pre-ReLU maps."""
        if not torch.onnx.is_in_onnx_export():
            S = self.cfg.imgsz
            if image.dim() != 4 or tuple(image.shape[1:]) != (3, S, S) or not image.is_floating_point():
                raise InputError(
                    f"IMR-HSNet image must be a (B,3,{S},{S}) float tensor, got {tuple(image.shape)} {image.dtype}"
                )
        with torch.no_grad():
            return self.backbone.extract_features(image)

    def mid_features(self, feats) -> torch.Tensor:
        """Unmasked mid-level map: sum of the layout's features, resized to the grid (+ conv1024_512).

        Returns (B,512,h,h) float32.
        """
        with torch.no_grad():
            m = feats[self.layout.mid[0]]
            for i in self.layout.mid[1:]:
                m = m + feats[i]
            m = F.interpolate(m, size=(self.grid, self.grid), mode="bilinear", align_corners=True)
        return self.conv1024_512(m) if self.layout.reduce_mid else m

    def gru(self, cam, after4d, mid, state) -> torch.Tensor:
        """One GRU update (released 132-151): all (B,·,h,h) float32 -> the new state (B,128,h,h)."""
        x = torch.cat([cam, after4d, mid, state], dim=1)

        def gate(g, inp):
            y = getattr(self, f"conv{g}0")(inp)
            return torch.cat([getattr(self, f"conv{g}1")(y[:, :256]), getattr(self, f"conv{g}2")(y[:, 256:])], dim=1)

        z = torch.sigmoid(gate("z", x))
        r = torch.sigmoid(gate("r", x))
        h = torch.tanh(gate("h", torch.cat([cam, after4d, mid, r * state], dim=1)))
        return (1 - z) * state + z * h

    def decode(self, x: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """decoder1 -> x2 -> decoder2 -> `res` with the CAM: (B,128,h,h), (B,1,h,h) -> (B,2,2h,2h)."""
        size = (2 * self.grid, 2 * self.grid)
        y = F.interpolate(self.decoder1(x), size=size, mode="bilinear", align_corners=True)
        c = F.interpolate(cam, size=size, mode="bilinear", align_corners=True)
        return self.res(torch.cat([self.decoder2(y), c], dim=1))

    def _correlations(self, qf, sf):
        corr_q = multilayer_correlation(qf, sf, self.ids)
        return corr_q, [c.permute(0, 1, 4, 5, 2, 3).contiguous() for c in corr_q]

    # ---------------------------------------------------------------- head
    def trace(self, query_feats, support_feats, query_cam, support_cam, stages: int | None = None) -> dict:
        """Everything after the backbone, with per-stage intermediates.

        Args:
            query_feats: list of L (1 or B,C_l,H_l,W_l) float32 (the query broadcast over B).
            support_feats: list of L (B,C_l,H_l,W_l) float32.
            query_cam, support_cam: (1 or B,1,h,h) float32 CAM pseudo-masks in [0,1], h = S/8.
            stages: overrides cfg.stages (the released forward's `stage` argument).

        Returns:
            dict: `query_logits`, `support_logits` (B,2,2h,2h) float32 of the last stage, and per
            stage k (0-based) `q_after4d_k`/`s_after4d_k` (B,128,h,h), `q_state_k`/`s_state_k`
            (B,128,h,h) and `query_logits_k`/`support_logits_k` (B,2,2h,2h).
        """
        n = self.cfg.stages if stages is None else stages
        B = support_feats[0].shape[0]
        if not torch.onnx.is_in_onnx_export():
            self._check_head_inputs(query_feats, support_feats, query_cam, support_cam)
        q_cam, s_cam = _expand(query_cam, B), _expand(support_cam, B)
        qf = [_expand(q, B) for q in query_feats]
        sf = list(support_feats)
        q_mid, s_mid = self.mid_features(qf), self.mid_features(sf)
        with torch.no_grad():
            # the swap and the aliasing of the released code (module docstring)
            qf, sf = mask_features(qf, s_cam), mask_features(sf, q_cam)
            corr_q, corr_s = self._correlations(qf, sf)
        state_q, state_s = _expand(self.state, B), _expand(self.state, B)
        t = {}
        for k in range(n):
            a_q = self.hpn_learner.forward_conv4d(corr_q)
            state_q = self.gru(q_cam, a_q, q_mid, state_q)
            a_s = self.hpn_learner.forward_conv4d(corr_s)
            state_s = self.gru(s_cam, a_s, s_mid, state_s)
            lg_s = self.decode(state_s + a_s, s_cam)
            lg_q = self.decode(state_q + a_q, q_cam)
            t.update({f"q_after4d_{k}": a_q, f"s_after4d_{k}": a_s, f"q_state_{k}": state_q,
                      f"s_state_{k}": state_s, f"query_logits_{k}": lg_q, f"support_logits_{k}": lg_s})
            if k != n - 1:
                # each branch's own softmax foreground (2h x 2h) re-masks its already masked features
                s_new, q_new = lg_s.softmax(dim=1)[:, 1:2], lg_q.softmax(dim=1)[:, 1:2]
                qf, sf = mask_features(qf, q_new), mask_features(sf, s_new)
                corr_q, corr_s = self._correlations(qf, sf)
                g = (self.grid, self.grid)
                q_cam = F.interpolate(q_new, size=g, mode="bilinear", align_corners=True)
                s_cam = F.interpolate(s_new, size=g, mode="bilinear", align_corners=True)
        t["query_logits"], t["support_logits"] = t[f"query_logits_{n - 1}"], t[f"support_logits_{n - 1}"]
        return t

    def head(self, query_feats, support_feats, query_cam, support_cam) -> dict:
        """`trace` without the intermediates: dict(query_logits, support_logits) (B,2,2h,2h) float32."""
        t = self.trace(query_feats, support_feats, query_cam, support_cam)
        return {"query_logits": t["query_logits"], "support_logits": t["support_logits"]}

    def _check_head_inputs(self, query_feats, support_feats, query_cam, support_cam):
        def shape(x):
            return tuple(x.shape) if torch.is_tensor(x) else type(x).__name__

        L = self.backbone.n_feats
        for nm, fs in (("query_feats", query_feats), ("support_feats", support_feats)):
            if not isinstance(fs, (list, tuple)) or len(fs) != L:
                raise InputError(f"IMR-HSNet head: {nm} must be a list of {L} maps from encode(), got {shape(fs)}")
        B = support_feats[0].shape[0]
        for i, (q, s) in enumerate(zip(query_feats, support_feats)):
            if q.shape[1:] != s.shape[1:] or q.shape[0] not in (1, B) or s.shape[0] != B:
                raise InputError(f"IMR-HSNet head: feature {i}: query {shape(q)} and support {shape(s)} "
                                 f"must agree (query batch 1 or {B})")
        h = self.grid
        for nm, c in (("query_cam", query_cam), ("support_cam", support_cam)):
            if not torch.is_tensor(c) or c.dim() != 4 or tuple(c.shape[1:]) != (1, h, h) or c.shape[0] not in (1, B):
                raise InputError(f"IMR-HSNet head: {nm} must be a (B or 1,1,{h},{h}) float tensor (the CAM at "
                                 f"S/8, B={B}), got {shape(c)}")

    def forward(self, query_img, support_img, query_cam, support_cam) -> dict:
        """One episode (or B support images of one query), as the released test forward.

        Args:
            query_img: (1 or B,3,S,S) float32; support_img: (B,3,S,S) float32 (normalised).
            query_cam, support_cam: (1 or B,1,h,h) float32 CAMs, h = S/8.

        Returns:
            dict(query_logits, support_logits) (B,2,S,S) float32 (bilinear, align_corners=True).
        """
        out = self.head(self.encode(query_img), self.encode(support_img), query_cam, support_cam)
        S = self.cfg.imgsz
        return {k: F.interpolate(v, size=(S, S), mode="bilinear", align_corners=True) for k, v in out.items()}


# -------------------------------------------------------------------- checkpoints
def load_imr_checkpoint(model: IMRHSNet, path) -> None:
    """Load an official IMR-HSNet `best_model.pt` (DataParallel `module.` prefix) or an edgefss save.

    The backbone classifier keys (`backbone.fc.*` / `backbone.classifier.*`) are accepted and
    ignored. The learnable `state` (1,128,50,50) fixes imgsz at 400.

    Raises:
        CheckpointError: any other missing/unexpected key or shape mismatch, named.
    """
    sd, _ = read_state_dict(path)
    if any(k.startswith("module.") for k in sd):
        sd = strip_prefix(sd, "module.")
    if "state" in sd and tuple(sd["state"].shape) != tuple(model.state.shape):
        raise CheckpointError(
            f"checkpoint '{path}' has state {tuple(sd['state'].shape)} but the model was built for "
            f"imgsz={model.cfg.imgsz} (needs {tuple(model.state.shape)}); official weights need imgsz=400"
        )
    unused = model.layout.unused_official
    ignored = sorted(k for k in sd if k.startswith(unused))
    if ignored:
        log.info("IMR-HSNet checkpoint '%s': ignoring %d backbone classifier keys", path, len(ignored))
    sd = _fill_missing_bn_counters(model.backbone, sd, prefix="backbone.")
    load_into(model, sd, f"IMR-HSNet ({model.cfg.backbone}) checkpoint '{path}'", ignore_unexpected=unused)


@register_model("imr_hsnet")
def imr_hsnet(checkpoint=None, backbone_checkpoint=None, backbone: str = "resnet50", **cfg) -> IMRHSNet:
    """IMR-HSNet (spec §4.2); backbone "resnet50" | "vgg16", stages 2 (PASCAL) | 3 (COCO)."""
    try:
        c = IMRCfg(backbone=backbone, **cfg)
    except TypeError as exc:
        raise InputError(f"build_model('imr_hsnet'): unknown config option ({exc}); expected fields of IMRCfg") from exc
    what = f"IMR-HSNet ({backbone})" + (" head" if backbone_checkpoint is not None else " head and backbone")
    return build_seeded(lambda: IMRHSNet(c), c.seed, checkpoint, load_imr_checkpoint, backbone_checkpoint,
                        load_torchvision_backbone, what)
