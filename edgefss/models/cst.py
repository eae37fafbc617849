"""CST (Kang et al., CVPR 2023): frozen DINO ViT-S/8 + head-wise correlation + correlation transformer.

Split for deployment (design.md "Model API", "CST graph I/O"):
- `encode(image)`: per image, once: the 12 normalised block outputs as query tokens (T) and as
  support tokens (CLS + s x s resized grid), and the attention pseudo-mask map at S/8.
- `head(query_feats, support_feats, support_mask)`: correlation (`edgefss.ops.torch_ops.
  cosine_correlation`, 6 heads x 12 layers = 72 head-major channels) + `learner`.
- `learner(corr, support_mask)`: the 366,004-parameter correlation transformer alone (the
  `learner` submodule itself, returning the same dict), for runtimes that compute the
  correlation natively.

Differences from the released code, all deliberate:
- The support grid s is imgsz//32 clamped to 12..23: the learner's two poolings (4 then 3) need
  it there, so small test sizes (< 384) use s = 12; at 400 it is the official 12.
- Cosine normalisation is x / (||x|| + 1e-12); the official F.normalize divides by
  max(||x||, 1e-12): identical for every non-degenerate token.

Support masks are (B,S,S) {0,1} at the network input size, as in the official code: the learner
resizes them (bilinear, align_corners=True) to the s x s and 3 x 3 token grids and masks a key
where the resized value is exactly 0. The pseudo-mask (spec §3.3) is made the official way: the
head-averaged last-block key/CLS-query cosine at S/8 is upsampled to S x S (bilinear,
align_corners=True), mapped to [0,1] by (x+1)/2 and thresholded at CST_PSEUDO_THRESHOLD. A mask
thresholded at S/8 and then resized is NOT equivalent (different key cells survive). The query
pseudo-mask (the weak training target) uses the SUPPORT image's CLS query (`query_pseudo_mask`).
tests/test_cst_golden.py checks all of this against goldens made with the official code.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.config import CST_PSEUDO_THRESHOLD
from edgefss.errors import CheckpointError, InputError
from edgefss.models import register_model
from edgefss.models.checkpoints import build_seeded, load_into, read_state_dict, strip_prefix
from edgefss.models.cst_learner import CorrelationLearner
from edgefss.models.dino_vit import DEPTH, EMBED_DIM, HEADS, PATCH, DinoViT, load_dino_checkpoint
from edgefss.ops.torch_ops import cosine_correlation

log = logging.getLogger(__name__)

CORR_EPS = 1e-12  # closest to F.normalize's max(norm, 1e-12) of the official code


@dataclasses.dataclass
class CSTCfg:
    """imgsz: square input size S (multiple of 8; 400 official). seed: random-init seed."""

    imgsz: int = 400
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.imgsz, int) or self.imgsz < 64 or self.imgsz % PATCH:
            raise InputError(f"CST config: imgsz must be an int >= 64 and a multiple of {PATCH}, got {self.imgsz!r}")

    @property
    def grid(self) -> int:
        """Query token grid S/8 (50 at 400)."""
        return self.imgsz // PATCH

    @property
    def support_grid(self) -> int:
        """Support token grid s (12 at 400); see the module docstring for the clamp."""
        return min(max(self.imgsz // 32, 12), 23)


class CST(nn.Module):
    """CST model; all images (B,3,S,S) float32 normalised by PreprocessCfg."""

    def __init__(self, cfg: CSTCfg | None = None):
        super().__init__()
        self.cfg = cfg or CSTCfg()
        self.backbone = DinoViT()
        self.learner = CorrelationLearner(in_ch=HEADS * DEPTH)
        self.backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout/BN, but keep it explicit
        return self

    def _check_image(self, image: torch.Tensor, name: str) -> None:
        S = self.cfg.imgsz
        if not torch.is_tensor(image) or image.dim() != 4 or tuple(image.shape[1:]) != (3, S, S):
            got = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise InputError(f"CST: {name} must be a (B,3,{S},{S}) float tensor (model imgsz={S}), got {got}")

    def encode(self, image: torch.Tensor) -> dict:
        """Backbone features and pseudo-mask inputs of images.

        Args:
            image: (B,3,S,S) float32.
        Returns:
            dict, all float32:
            - query_feats (B,12,384,T) with T=(S/8)^2;
            - support_feats (B,12,384,1+s*s), the CLS token first;
            - pseudo_cos (B,S/8,S/8): head-mean cosine of each image token's last-block key with
              the image's own CLS query, in [-1,1] (the official `self_corr` before upsampling);
            - pseudo_prob (B,S/8,S/8) = (pseudo_cos+1)/2 in [0,1] (the exported encoder's output);
            - cls_query (B,6,64), keys (B,6,T,64): the L2-normalised last-block CLS query and
              image-token keys, from which `query_pseudo_mask` builds cross-image masks.
        """
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            self._check_image(image, "image")
        g, s = self.cfg.grid, self.cfg.support_grid
        feats, q, k = self.backbone.get_intermediate_layers(image, n=DEPTH, return_qk=True)
        x = torch.stack(feats, dim=1).transpose(2, 3)  # (B,12,384,1+T)
        query_feats = x[..., 1:]
        grid = query_feats.reshape(-1, EMBED_DIM, g, g)
        grid = F.interpolate(grid, (s, s), mode="bilinear", align_corners=True)
        support_feats = torch.cat([x[..., :1], grid.reshape(-1, DEPTH, EMBED_DIM, s * s)], dim=-1)
        cls_query = F.normalize(q[:, :, 0], dim=-1)  # (B,6,64)
        keys = F.normalize(k[:, :, 1:], dim=-1)  # (B,6,T,64)
        cos = self._head_mean_cos(keys, cls_query)  # (B,T)
        g = self.cfg.grid
        return {
            "query_feats": query_feats,
            "support_feats": support_feats,
            "pseudo_cos": cos.reshape(-1, g, g),
            # clamp (the identity on a cosine: nothing the 0.4 threshold sees changes) and reshape
            # last: this exact tail keeps the output's name through OpenVINO's conversion, which
            # otherwise reports the graph output under the name of the Mul that produces it
            "pseudo_prob": ((cos + 1.0) * 0.5).clamp(0.0, 1.0).reshape(-1, g, g),
            "cls_query": cls_query,
            "keys": keys,
        }

    def pseudo_cos(self, keys: torch.Tensor, cls_query: torch.Tensor) -> torch.Tensor:
        """Spec §3.3: mean over the 6 heads of cos(image-token key, CLS query).

        Args:
            keys: (B,6,T,64) L2-normalised keys; cls_query: (B,6,64) L2-normalised CLS queries.
        Returns:
            (B,S/8,S/8) float32 in [-1,1].
        """
        g = self.cfg.grid
        return self._head_mean_cos(keys, cls_query).reshape(-1, g, g)

    @staticmethod
    def _head_mean_cos(keys: torch.Tensor, cls_query: torch.Tensor) -> torch.Tensor:
        """(B,6,T,64), (B,6,64) -> (B,T) mean over heads of the cosine (inputs L2-normalised)."""
        return torch.matmul(keys, cls_query.unsqueeze(-1)).squeeze(-1).mean(dim=1)

    def pseudo_mask(self, cos: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Official pseudo-mask from a head-mean cosine map (spec §3.3, `generate_pseudo_mask`).

        Args:
            cos: (B,S/8,S/8) float32 head-mean cosine (`pseudo_cos`).
            size: (H,W) of the mask; default the input size (S,S).
        Returns:
            (B,H,W) float32 {0,1}: ((bilinear align_corners upsample of cos) + 1) / 2 > threshold.
        """
        size = size or (self.cfg.imgsz, self.cfg.imgsz)
        up = F.interpolate(cos.unsqueeze(1), size, mode="bilinear", align_corners=True).squeeze(1)
        return (((up + 1.0) * 0.5) > CST_PSEUDO_THRESHOLD).float()

    def support_pseudo_mask(self, enc: dict) -> torch.Tensor:
        """(B,S,S) float32 {0,1} pseudo-masks of encoded support images (their own CLS query)."""
        return self.pseudo_mask(enc["pseudo_cos"])

    def query_pseudo_mask(self, query_enc: dict, support_enc: dict,
                          size: tuple[int, int] | None = None) -> torch.Tensor:
        """Official query pseudo-mask (the weak training target): the query's keys against the
        SUPPORT image's CLS query (spec §3.3 `cros_corr`), not the query's own.

        Args:
            query_enc: `encode` of (1 or B) query images; support_enc: `encode` of B supports.
            size: (H,W) of the mask; default (S,S).
        Returns:
            (B,H,W) float32 {0,1}. Absent-class zeroing is the caller's (it knows the labels).
        """
        B = support_enc["cls_query"].shape[0]
        keys = query_enc["keys"].expand(B, -1, -1, -1)
        return self.pseudo_mask(self.pseudo_cos(keys, support_enc["cls_query"]), size)

    def correlation(self, query_feats: torch.Tensor, support_feats: torch.Tensor) -> torch.Tensor:
        """Head-wise cosine correlation, 72 channels head-major (ch = head*12 + layer).

        Args:
            query_feats: (1 or B,12,384,T) float32, broadcast over the support batch.
            support_feats: (B,12,384,1+s*s) float32.
        Returns:
            (B,72,T,1+s*s) float32.
        """
        query_feats = query_feats.expand(support_feats.shape[0], -1, -1, -1)
        corr = cosine_correlation(query_feats, support_feats, heads=HEADS, eps=CORR_EPS)  # (B,12,6,T,S)
        return corr.transpose(1, 2).reshape(corr.shape[0], HEADS * DEPTH, corr.shape[3], corr.shape[4])

    def head(self, query_feats: torch.Tensor, support_feats: torch.Tensor,
             support_mask: torch.Tensor | None) -> dict:
        """Correlation + learner.

        Args:
            query_feats: (1 or B,12,384,T) float32; support_feats (B,12,384,1+s*s) float32;
            support_mask: (B,S,S) float {0,1} or None (no masking). Any (B,h,w) is resized the
                official way, but only (B,S,S) is the official model's input.
        Returns:
            dict(cls_logits (B,2), seg_logits (B,2,S/4,S/4)) float32.
        """
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            self._check_head_args(query_feats, support_feats, support_mask)
        return self.learner(self.correlation(query_feats, support_feats), support_mask)

    def _check_head_args(self, qf, sf, mask) -> None:
        T, Ss = self.cfg.grid ** 2, 1 + self.cfg.support_grid ** 2
        if qf.dim() != 4 or tuple(qf.shape[1:]) != (DEPTH, EMBED_DIM, T):
            raise InputError(f"CST head: query_feats must be (1|B,{DEPTH},{EMBED_DIM},{T}), got {tuple(qf.shape)}")
        if sf.dim() != 4 or tuple(sf.shape[1:]) != (DEPTH, EMBED_DIM, Ss):
            raise InputError(f"CST head: support_feats must be (B,{DEPTH},{EMBED_DIM},{Ss}), got {tuple(sf.shape)}")
        if qf.shape[0] not in (1, sf.shape[0]):
            raise InputError(f"CST head: query_feats batch {qf.shape[0]} must be 1 or the support batch {sf.shape[0]}")
        if mask is not None and (mask.dim() != 3 or mask.shape[0] != sf.shape[0]):
            raise InputError(f"CST head: support_mask must be (B,h,w) with B={sf.shape[0]}, got {tuple(mask.shape)}")

    def forward(self, query_img: torch.Tensor, support_img: torch.Tensor,
                support_mask: torch.Tensor | None = None) -> dict:
        """One query against B support images (N ways x K shots flattened).

        Args:
            query_img: (1 or B,3,S,S); support_img: (B,3,S,S) float32.
            support_mask: (B,S,S) float {0,1} or None = each support's own pseudo-mask.
        Returns:
            dict(cls_logits (B,2), seg_logits (B,2,S,S), query_pseudo_mask (B,S,S) from the
            query's keys and each support's CLS query (the weak training target),
            support_pseudo_mask (B,S,S)), float32.
        """
        self._check_image(query_img, "query_img")
        self._check_image(support_img, "support_img")
        with torch.no_grad():  # frozen backbone: never build its graph
            q, s = self.encode(query_img), self.encode(support_img)
            support_pseudo = self.support_pseudo_mask(s)
            query_pseudo = self.query_pseudo_mask(q, s)
        if support_mask is None:
            support_mask = support_pseudo
        out = self.head(q["query_feats"], s["support_feats"], support_mask)
        size = (self.cfg.imgsz, self.cfg.imgsz)
        return {
            "cls_logits": out["cls_logits"],
            "seg_logits": F.interpolate(out["seg_logits"], size, mode="bilinear", align_corners=True),
            "query_pseudo_mask": query_pseudo,
            "support_pseudo_mask": support_pseudo,
        }


def predict_nway_kshot(model: CST, query_img: torch.Tensor, support_imgs: torch.Tensor,
                       support_masks: torch.Tensor | None = None, out_size=None) -> dict:
    """N-way K-shot CST inference (spec §3.5), the reference the NumPy runtime is compared with.

    Args:
        query_img: (1,3,S,S) float32.
        support_imgs: (N,K,3,S,S) float32; way n shows class n.
        support_masks: (N,K,S,S) float {0,1} or None (each support's own pseudo-mask, S x S).
        out_size: (H,W) of the returned maps (the original query size); default (S,S).
    Returns:
        dict(mask (H,W) int64: 0 background, n+1 = way n; probs (N,) float32 presence
        probability; present (N,) bool = probs > 0.5; fg_prob (N,H,W) float32).
    """
    if support_imgs.dim() != 5:
        raise InputError(f"predict_nway_kshot: support_imgs must be (N,K,3,S,S), got {tuple(support_imgs.shape)}")
    N, K = support_imgs.shape[:2]
    if support_masks is not None and tuple(support_masks.shape[:2]) != (N, K):
        raise InputError(f"predict_nway_kshot: support_masks must be ({N},{K},h,w), got {tuple(support_masks.shape)}")
    S = model.cfg.imgsz
    H, W = out_size or (S, S)
    with torch.no_grad():
        q = model.encode(query_img)
        s = model.encode(support_imgs.reshape(N * K, *support_imgs.shape[2:]))
        masks = model.support_pseudo_mask(s) if support_masks is None \
            else support_masks.reshape(N * K, *support_masks.shape[2:]).float()
        out = model.head(q["query_feats"], s["support_feats"], masks)
        seg = F.interpolate(out["seg_logits"], (H, W), mode="bilinear", align_corners=True)
        fg = seg.softmax(dim=1)[:, 1].reshape(N, K, H, W).mean(dim=1)
        probs = out["cls_logits"].softmax(dim=1)[:, 1].reshape(N, K).mean(dim=1)
        best, idx = fg.max(dim=0)
        mask = torch.where(best < 0.5, torch.zeros_like(idx), idx + 1)
    return {"mask": mask, "probs": probs, "present": probs > 0.5, "fg_prob": fg}


def _guess_model(sd: dict) -> str:
    keys = list(sd)
    if any("hpn_learner" in k or "linear_512_625" in k for k in keys):
        return "a TLG checkpoint (build_model('tlg'))"
    if any(k.startswith(("layer1.", "features.", "module.layer1.")) for k in keys):
        return "a torchvision ResNet/VGG checkpoint"
    if "cls_token" in sd and not any(k.startswith("learner.") for k in keys):
        return "a DINO backbone-only checkpoint (pass it as backbone_checkpoint=)"
    return "an unknown model"


def load_cst_checkpoint(model: CST, path) -> None:
    """Load a CST Lightning `.ckpt` (`state_dict` with `backbone.*`, `learner.*`) or an edgefss save.

    Raises:
        CheckpointError: the file is another model's (named) or keys are missing/unexpected.
    """
    sd, _ = read_state_dict(path)
    if any(k.startswith("module.") for k in sd) and not any(k.startswith("learner.") for k in sd):
        sd = strip_prefix(sd, "module.")
    if not any(k.startswith("learner.") for k in sd):
        raise CheckpointError(
            f"checkpoint '{path}' is not a CST checkpoint (no 'learner.*' keys); it looks like "
            f"{_guess_model(sd)}"
        )
    load_into(model, sd, f"CST checkpoint '{path}'")


@register_model("cst")
def build_cst(checkpoint=None, backbone_checkpoint=None, **cfg) -> CST:
    """CST with DINO ViT-S/8 (spec §3).

    Args:
        checkpoint: CST Lightning `.ckpt` / edgefss save (backbone + learner), or None.
        backbone_checkpoint: official DINO `dino_deitsmall8_300ep_pretrain.pth`, or None.
        **cfg: CSTCfg fields (imgsz, seed).
    """
    try:
        c = CSTCfg(**cfg)
    except TypeError as exc:
        raise InputError(f"build_model('cst'): unknown config option ({exc}); expected fields of CSTCfg") from exc
    return build_seeded(lambda: CST(c), c.seed, checkpoint, load_cst_checkpoint, backbone_checkpoint,
                        lambda m, path: load_dino_checkpoint(m.backbone, path),
                        "CST learner" + (" and DINO backbone" if backbone_checkpoint is None else ""))
