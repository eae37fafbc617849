"""DINO ViT-S/8 (the frozen CST backbone), defined here because timm/torchvision are not deps.

Parameter names follow the official `dino_deitsmall8_300ep_pretrain.pth` exactly (flat keys:
`cls_token`, `pos_embed` (1,785,384), `patch_embed.proj.*`, `blocks.{i}.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2}.*`, `norm.*`), so the file loads without renaming: 21,670,272 parameters.

Deployment choices:
- Attention runs through `F.scaled_dot_product_attention` (fused kernel in eager). The per-head
  core is one swappable function, `Attention.attend` ((B,N,D) q, k, v -> (B,N,D)), so an exporter
  can emit a fused attention op for it (edgefss/exporters/fused_attention.py) without touching
  the weights; plain ONNX export gives the MatMul/Softmax pattern.
- The 28x28 -> (S/8)x(S/8) position-embedding resize (DINO's bicubic "+0.1" trick) is computed
  once per input size in eager and cached, so a traced/exported graph holds it as a constant and
  contains no Resize (bicubic Resize is where ONNX/TensorRT backends disagree).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.errors import InputError
from edgefss.models.checkpoints import load_into, read_state_dict, strip_prefix

EMBED_DIM = 384
DEPTH = 12
HEADS = 6
PATCH = 8
PRETRAIN_GRID = 28  # DINO trained at 224 / 8
LN_EPS = 1e-6


class PatchEmbed(nn.Module):
    def __init__(self, dim: int = EMBED_DIM, patch: int = PATCH):
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B, H/8*W/8, dim), row-major tokens."""
        return self.proj(x).flatten(2).transpose(1, 2)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B,N,D) -> (B,heads,N,D/heads) view."""
    B, N, D = t.shape
    return t.reshape(B, N, heads, D // heads).transpose(1, 2)


def sdpa_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(D/heads)) v on (B,N,D) float tensors -> (B,N,D).

    The default scale 1/sqrt(64) is DINO's qk_scale.
    """
    B, N, D = q.shape
    y = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    return y.transpose(1, 2).reshape(B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int = EMBED_DIM, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        # fn(q, k, v, heads) -> (B,N,D); a plain attribute (no weights) so exporters can swap it
        self.attend = sdpa_heads

    def forward(self, x: torch.Tensor, return_qk: bool = False):
        """x (B,N,D) -> (B,N,D); with `return_qk` also q, k (B,heads,N,D/heads)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B,N,D) each: the checkpoint's [q; k; v] row order
        y = self.proj(self.attend(q, k, v, self.heads))
        if return_qk:
            return y, split_heads(q, self.heads), split_heads(k, self.heads)
        return y


class Mlp(nn.Module):
    def __init__(self, dim: int = EMBED_DIM, hidden: int = 4 * EMBED_DIM):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int = EMBED_DIM, heads: int = HEADS):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, return_qk: bool = False):
        if return_qk:
            y, q, k = self.attn(self.norm1(x), return_qk=True)
        else:
            y = self.attn(self.norm1(x))
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return (x, q, k) if return_qk else x


def _under_torch_export() -> bool:
    comp = getattr(torch, "compiler", None)
    return bool(comp and (comp.is_compiling() or getattr(comp, "is_exporting", lambda: False)()))


def interpolate_pos_embed(pos_embed: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """DINO's position-embedding resize: (1,1+G*G,D) -> (1,1+gh*gw,D), same dtype.

    Bicubic (A=-0.75, no antialias, align_corners=False) with DINO's scale factor (g+0.1)/G: the
    +0.1 makes floor(G*scale) == g and, since torch maps coordinates with 1/scale, it also shifts
    the sampling grid slightly compared with a plain `size=(gh,gw)` resize. Same size -> as is.
    """
    n = pos_embed.shape[1] - 1
    G = int(math.sqrt(n))
    if gh == G and gw == G:
        return pos_embed
    cls_pe, patch_pe = pos_embed[:, :1], pos_embed[:, 1:]
    D = pos_embed.shape[-1]
    grid = patch_pe.reshape(1, G, G, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((gh + 0.1) / G, (gw + 0.1) / G), mode="bicubic")
    if tuple(grid.shape[-2:]) != (gh, gw):
        raise InputError(f"pos-embed interpolation gave {tuple(grid.shape[-2:])}, expected ({gh}, {gw})")
    return torch.cat([cls_pe, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, D)], dim=1)


class DinoViT(nn.Module):
    """DINO ViT-S/8 without a classifier: `get_intermediate_layers` is the only output used."""

    def __init__(self, dim: int = EMBED_DIM, depth: int = DEPTH, heads: int = HEADS, patch: int = PATCH):
        super().__init__()
        self.embed_dim = dim
        self.heads = heads
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAIN_GRID**2, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self._pe_cache: dict = {}
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pos_embed_for(self, gh: int, gw: int) -> torch.Tensor:
        """Interpolated position embedding (1,1+gh*gw,D) for a gh x gw token grid.

        Cached per (grid, pos_embed version) when no gradient is needed, so loading weights
        invalidates it and an exported graph sees a constant instead of a Resize.
        """
        pe = self.pos_embed
        if pe.requires_grad and torch.is_grad_enabled():
            return interpolate_pos_embed(pe, gh, gw)
        if _under_torch_export():
            # parameters are fake tensors here: use the eager-built constant, never cache fakes
            hit = self._pe_cache.get((gh, gw))
            return hit[1] if hit is not None else interpolate_pos_embed(pe, gh, gw)
        key = (gh, gw, pe._version, pe.data_ptr(), pe.dtype, pe.device)
        hit = self._pe_cache.get((gh, gw))
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, interpolate_pos_embed(pe.detach(), gh, gw).clone())
            self._pe_cache[(gh, gw)] = hit
        return hit[1]

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,1+H/8*W/8,D): CLS first, position embedding added."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"DINO ViT: image must be (B,3,H,W), got {tuple(x.shape)}")
        p = self.patch_embed.patch_size
        H, W = int(x.shape[-2]), int(x.shape[-1])
        if H % p or W % p:
            raise InputError(f"DINO ViT: image size {H}x{W} must be a multiple of the patch size {p}")
        tok = self.patch_embed(x)
        tok = torch.cat([self.cls_token.expand(tok.shape[0], -1, -1), tok], dim=1)
        return tok + self.pos_embed_for(H // p, W // p)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = DEPTH, return_qk: bool = False):
        """Outputs of the last `n` blocks, each through the final LayerNorm.

        Args:
            x: (B,3,H,W) float32 normalised image, H and W multiples of 8.
            return_qk: also return the last block's attention query and key.
        Returns:
            list of n (B,1+T,384) tensors (T=H*W/64, CLS first); with `return_qk` a tuple
            (list, q (B,6,1+T,64), k (B,6,1+T,64)).
        """
        x = self.prepare_tokens(x)
        out, q, k = [], None, None
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if return_qk and i == last:
                x, q, k = blk(x, return_qk=True)
            else:
                x = blk(x)
            if last - i < n:
                out.append(self.norm(x))
        return (out, q, k) if return_qk else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> normalised CLS embedding (B,384), as DINO's forward."""
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


def dino_vit_small8() -> DinoViT:
    return DinoViT(EMBED_DIM, DEPTH, HEADS, PATCH)


def load_dino_checkpoint(model: DinoViT, path) -> None:
    """Load DINO ViT-S/8 weights into `model`.

    Accepts the official `dino_deitsmall8_300ep_pretrain.pth` (flat keys), a CST Lightning `.ckpt`
    or any state dict whose ViT keys are prefixed `backbone.` (other keys ignored), and
    DataParallel `module.`-prefixed dicts.

    Raises:
        CheckpointError: missing/unexpected/mis-shaped keys, named (e.g. a TLG or ResNet file).
    """
    sd, _ = read_state_dict(path)
    for prefix in ("backbone.", "module.backbone.", "module."):
        if any(k.startswith(prefix) for k in sd) and "cls_token" not in sd:
            sd = strip_prefix(sd, prefix)
            break
    load_into(model, sd, f"DINO ViT-S/8 backbone ('{path}')")
