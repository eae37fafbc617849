"""DiffewS (Zhu et al., NeurIPS 2024): few-shot segmentation with a Stable Diffusion 2.1 UNet + VAE.

The workstation teacher (docs/teacher.md), built on diffusers (`pip install 'edgefss[teacher]'`,
imported only when a DiffewS model is built). Facts from aim-uofa/DiffewS@d12c396:

- UNet: SD2.1 `UNet2DConditionModel` plus `conv_in_ref` (Conv2d 8->320, 3x3) for the support
  branch, whose input is cat[support image latent, support mask latent]; the query keeps the
  4-channel `conv_in` (`unet_2d_condition.py`, `is_target`). `conv_in_ref` starts as
  `conv_in.weight.repeat(1, 2, 1, 1) / 2` and a copy of the bias
  (`train_tools/load_ckpt_and_modify_ref8in_tag4in.py`).
- KV-fusion self-attention (edgefss.teacher.attention): a support pass fills the key/value bank,
  the query pass attends to [own ; support] keys/values; K shots are flattened into the batch.
- Prompt: the empty prompt's CLIP text embedding, (1, 2, 1024) at inference (tokenised without
  padding), stored here as the buffer `prompt_embeds`, so no text encoder is needed.
- One denoising step: DDIM with `scheduler_1.0_1.0` (beta = 1, so alpha_bar = 0, v-prediction,
  1 step -> timestep 1): the prediction x0 = -v (the training target is -mask latent).
- VAE: latents are the encoder posterior MEAN x 0.18215; the decoded image is clipped to
  [-1, 1], mapped to [0, 1] and stored as uint8 (truncation); mask = mean over RGB > 0.25 x its
  max (`--r_threshold 0.25`, `evaluation_util/main_oss.py`).
- Preprocessing: images resized to 512 x 512 (bilinear), /255, normalised to [-1, 1]; support
  masks resized nearest, repeated to 3 channels, mapped {0,1} -> {-1,1} and VAE-encoded.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
from torch import nn

from edgefss.errors import InputError
from edgefss.models import register_model
from edgefss.models.checkpoints import build_seeded
from edgefss.teacher import configs
from edgefss.teacher.attention import FUSE, STORE, FusionState, install
from edgefss.teacher.deps import diffusers

TIMESTEP = 1  # scheduler_1.0_1.0, 1 inference step, 'leading' spacing + steps_offset 1 (x test_timestep 1)
R_THRESHOLD = 0.25  # mask = mean RGB > R_THRESHOLD x max (evaluation scripts: --r_threshold 0.25)
IMGSZ = 512  # the official --img-size


@dataclasses.dataclass
class DiffewSCfg:
    """config: 'sd21' (the real model) or 'tiny' (tests); imgsz: square input (multiple of 8x the VAE
    factor); r_threshold: the mask rule's relative threshold; seed: random-init seed."""

    config: str = "sd21"
    imgsz: int = IMGSZ
    r_threshold: float = R_THRESHOLD
    seed: int = 0

    def __post_init__(self):
        configs.get(self.config)
        if not isinstance(self.imgsz, int) or self.imgsz < 64 or self.imgsz % 64:
            raise InputError(f"DiffewS config: imgsz must be an int multiple of 64, got {self.imgsz!r}")
        if not 0.0 <= float(self.r_threshold) < 1.0:
            raise InputError(f"DiffewS config: r_threshold must be in [0, 1), got {self.r_threshold!r}")


def init_conv_in_ref(unet) -> None:
    """The official initialisation: conv_in_ref.weight = conv_in.weight repeated over the two
    4-channel inputs and halved; bias copied. Works on any config (in-place, no grad)."""
    with torch.no_grad():
        unet.conv_in_ref.weight.copy_(unet.conv_in.weight.repeat(1, 2, 1, 1) / 2)
        unet.conv_in_ref.bias.copy_(unet.conv_in.bias)


@contextlib.contextmanager
def _support_input(unet):
    """The support pass: `conv_in_ref` in place of `conv_in` (the official `is_target=False`)."""
    conv = unet.conv_in
    unet.conv_in = unet.conv_in_ref
    try:
        yield
    finally:
        unet.conv_in = conv


class DiffewS(nn.Module):
    """DiffewS teacher. Images are (.., 3, S, S) float32 in [-1, 1]; masks {0,1}."""

    def __init__(self, cfg: DiffewSCfg | None = None):
        super().__init__()
        self.cfg = cfg or DiffewSCfg()
        d = diffusers()
        ucfg, vcfg = configs.get(self.cfg.config)
        self.unet = d.UNet2DConditionModel(**ucfg)
        c0 = ucfg["block_out_channels"][0]
        self.unet.conv_in_ref = nn.Conv2d(configs.IN_CHANNELS_REF, c0, kernel_size=3, padding=1)
        init_conv_in_ref(self.unet)
        self.vae = d.AutoencoderKL(**vcfg)
        self.latent_scale = float(vcfg["scaling_factor"])
        self.vae_factor = 2 ** (len(vcfg["block_out_channels"]) - 1)
        emb = torch.randn(1, configs.PROMPT_TOKENS, ucfg["cross_attention_dim"])
        self.register_buffer("prompt_embeds", emb)
        self.fusion = FusionState()
        self.n_fused = install(self.unet, self.fusion)

    # ---------------------------------------------------------------------------------- parts
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) float in [-1,1] -> (N,4,S/f,S/f) latents: posterior mean x scaling factor."""
        moments = self.vae.encoder(images)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        return moments.chunk(2, dim=1)[0] * self.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N,4,h,w) latents -> (N,3,h*f,w*f) float in [0,1] (decoded, clipped to [-1,1], shifted)."""
        z = latents / self.latent_scale
        if self.vae.post_quant_conv is not None:
            z = self.vae.post_quant_conv(z)
        return self.vae.decoder(z).clamp(-1.0, 1.0) * 0.5 + 0.5

    def support_bank(self, support_latent: torch.Tensor) -> dict:
        """The support pass (`conv_in_ref`, plain self-attention): every fused layer's keys/values.

        Args:
            support_latent: (B*K,8,h,w) cat[support image latent, support mask latent]; rows
                b*K .. b*K+K-1 are the K shots of query b.
        Returns:
            {layer: (K, V)} each (B*K, h'*w', C); it depends on the supports only, so a labeller
            computes it once per class.
        """
        emb = self.prompt_embeds.to(support_latent.dtype)
        try:
            self.fusion.bank, self.fusion.mode = {}, STORE
            with _support_input(self.unet):
                self.unet(support_latent, TIMESTEP, emb.expand(support_latent.shape[0], -1, -1))
            return self.fusion.bank
        finally:
            self.fusion.clear()

    def query_step(self, query_latent: torch.Tensor, bank: dict) -> torch.Tensor:
        """The query pass with KV fusion: (B,4,h,w) query latents + `support_bank` -> (B,4,h,w) v."""
        B = query_latent.shape[0]
        BK = next(iter(bank.values()))[0].shape[0] if bank else B
        if BK % B:
            raise InputError(f"DiffewS: {BK} support rows do not split into K shots for {B} queries")
        emb = self.prompt_embeds.to(query_latent.dtype)
        try:
            self.fusion.bank, self.fusion.mode = bank, FUSE
            return self.unet(query_latent, TIMESTEP, emb.expand(B, -1, -1)).sample
        finally:
            self.fusion.clear()

    def unet_step(self, query_latent: torch.Tensor, support_latent: torch.Tensor) -> torch.Tensor:
        """The one denoising step: support pass (bank) then query pass (KV fusion).

        Args:
            query_latent: (B,4,h,w) query image latents; support_latent: (B*K,8,h,w) (support_bank).
        Returns:
            (B,4,h,w) the UNet's v-prediction for the query.
        """
        if support_latent.shape[0] % query_latent.shape[0]:
            raise InputError(f"DiffewS: {support_latent.shape[0]} support latents do not split into K shots "
                             f"for {query_latent.shape[0]} queries")
        return self.query_step(query_latent, self.support_bank(support_latent))

    def support_latents(self, supports: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) images in [-1,1], (N,S,S) masks {0,1} -> (N,8,S/f,S/f) cat[image, mask] latents."""
        m = support_masks.reshape(-1, 1, *support_masks.shape[-2:]).to(supports.dtype) * 2.0 - 1.0
        return torch.cat([self.encode(supports), self.encode(m.expand(-1, 3, -1, -1))], dim=1)

    def predict_from_bank(self, query: torch.Tensor, bank: dict) -> dict:
        """(B,3,S,S) queries in [-1,1] + `support_bank` -> forward's dict (mask, rgb, latent)."""
        x0 = -self.query_step(self.encode(query), bank)  # alpha_bar = 0: DDIM's x0 = sqrt(ab) x - sqrt(1-ab) v
        rgb = self.decode(x0)
        return {"mask": self.mask_rule(rgb), "rgb": rgb, "latent": x0}

    def mask_rule(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) decoded image in [0,1] -> (B,H,W) bool: mean over RGB > r_threshold x max.

        As the official code, the image is first stored as uint8 (x255, truncated) and the max is
        taken over all channels and pixels of the query."""
        q = torch.floor(rgb.clamp(0.0, 1.0) * 255.0) / 255.0
        thr = q.amax(dim=(1, 2, 3), keepdim=True)[:, :, 0] * self.cfg.r_threshold  # (B,1,1)
        return q.mean(dim=1) > thr

    # -------------------------------------------------------------------------------- forward
    def forward(self, query: torch.Tensor, supports: torch.Tensor, support_masks: torch.Tensor) -> dict:
        """One-step DiffewS segmentation.

        Args:
            query: (B,3,S,S) float32 in [-1,1]; supports: (B,K,3,S,S) float32 in [-1,1];
            support_masks: (B,K,S,S) float/bool {0,1}.
        Returns:
            dict(mask (B,S,S) bool, rgb (B,3,S,S) float32 decoded prediction in [0,1],
                 latent (B,4,S/f,S/f) float32 x0 = -v).
        """
        self._check(query, supports, support_masks)
        B, K = supports.shape[:2]
        S = query.shape[-1]
        bank = self.support_bank(self.support_latents(supports.reshape(B * K, 3, S, S), support_masks))
        return self.predict_from_bank(query, bank)

    def _check(self, query, supports, support_masks) -> None:
        S = self.cfg.imgsz
        if query.dim() != 4 or tuple(query.shape[1:]) != (3, S, S):
            raise InputError(f"DiffewS: query must be (B,3,{S},{S}), got {tuple(query.shape)}")
        B = query.shape[0]
        if supports.dim() != 5 or supports.shape[0] != B or tuple(supports.shape[2:]) != (3, S, S):
            raise InputError(f"DiffewS: supports must be ({B},K,3,{S},{S}), got {tuple(supports.shape)}")
        if tuple(support_masks.shape) != (B, supports.shape[1], S, S):
            raise InputError(f"DiffewS: support_masks must be ({B},{supports.shape[1]},{S},{S}), "
                             f"got {tuple(support_masks.shape)}")


# ------------------------------------------------------------------------------- preprocessing
def preprocess_image(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H,W,3) uint8 RGB -> (3,size,size) float32 in [-1,1] (bilinear resize, as torchvision's
    Resize on a PIL image in the official dataset)."""
    from edgefss.transforms import resize_image

    x = torch.from_numpy(resize_image(rgb, size).astype(np.float32) / 255.0).permute(2, 0, 1)
    return x * 2.0 - 1.0


def preprocess_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H,W) mask, > 0 = foreground -> (size,size) float32 {0,1} (nearest resize)."""
    from PIL import Image

    im = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8)).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(im, dtype=np.float32))


@register_model("diffews")
def build_diffews(checkpoint=None, vae_checkpoint=None, **cfg) -> DiffewS:
    """DiffewS teacher (SD2.1 UNet + VAE, or the 'tiny' test configuration).

    Args:
        checkpoint: a folder: the official DiffewS release (`<dir>/unet/...` as written by the
            training script's `save_pretrained`), a stock SD2.1 diffusers folder (`unet/`, `vae/`;
            `conv_in_ref` then starts from the official rule), or an edgefss save; None: random.
        vae_checkpoint: folder holding `vae/` (and `prompt_embeds.*`) when `checkpoint` has none
            (the release keeps the VAE in the SD2.1 folder).
        **cfg: DiffewSCfg fields (config, imgsz, r_threshold, seed).
    """
    from edgefss.teacher.checkpoint import load_diffews

    try:
        c = DiffewSCfg(**cfg)
    except TypeError as exc:
        raise InputError(f"build_model('diffews'): unknown config option ({exc}); expected fields of "
                         "DiffewSCfg") from exc
    return build_seeded(lambda: DiffewS(c), c.seed, checkpoint,
                        lambda m, p: load_diffews(m, p, vae_checkpoint), None, None,
                        "DiffewS UNet, VAE and prompt embedding")
