"""CLIP ModifiedResNet image tower (RN50) in PyTorch, with the official OpenAI state-dict key names.

Used by the Grad-CAM pseudo-mask generator (edgefss.cam, IMR-HSNet's `generate_cam_voc.py`).

Architecture (OpenAI CLIP `model.py:ModifiedResNet`, as vendored in IMR-HSNet `model_clip.py:98-155`):
- stem: three 3x3 convs (3 -> w/2 stride 2, w/2 -> w/2, w/2 -> w), each BN + ReLU, then AvgPool2d(2);
- layer1..4: Bottleneck blocks (1x1, 3x3, [AvgPool2d(stride)], 1x1 x4), anti-aliased: a stride-s
  block average-pools after its 3x3 conv, and its downsample is AvgPool2d(s) -> 1x1 conv -> BN
  (keys `downsample.0`, `downsample.1`; the pool is the parameter-free `downsample.-1`);
- attnpool (AttentionPool2d): tokens = [mean of the HW positions, the HW positions] + a learned
  positional embedding ((HW+1) x C), one multi-head attention whose query is the mean token,
  output projection c_proj -> (B, output_dim). Only the mean token's output is returned.

Keys read (prefix `visual.` in a full CLIP checkpoint): conv{1,2,3}.weight, bn{1,2,3}.*,
layer{1..4}.{i}.{conv1,conv2,conv3}.weight, .{bn1,bn2,bn3}.*, .downsample.{0.weight,1.*},
attnpool.positional_embedding, attnpool.{q,k,v,c}_proj.{weight,bias}. RN50: layers (3,4,6,3),
width 64, heads 32, output 1024, input 224 (7x7 layer-4 grid, 2048 channels).

Public API: `load_clip_image(path) -> ClipImageModel`, `build_clip_image(checkpoint=None, cfg=None,
seed=0)`, `ClipImageModel.features(x) -> (B,32w,H/32,W/32)`, `.pool(x4) -> (B,output_dim)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.errors import CheckpointError


@dataclass(frozen=True)
class ClipImageConfig:
    layers: tuple = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32  # OpenAI's rule: width * 32 // 64
    output_dim: int = 1024
    input_resolution: int = 224  # the attention pool's positional embedding fixes it (grid = res / 32)

    @property
    def embed_dim(self) -> int:
        """Channels of the layer-4 features (the attention pool's width)."""
        return self.width * 32

    @property
    def grid(self) -> int:
        return self.input_resolution // 32


RN50 = ClipImageConfig()


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            # OpenAI names the parameter-free pool "-1" so the conv/BN keep the keys 0 / 1
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity())
            self.downsample.add_module("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling; `forward(x (B,C,H,W)) -> (B, output_dim)` (the mean token's output)."""

    def __init__(self, grid: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B, HW+1, C): [mean token, positions] + positional embedding."""
        t = x.flatten(2).transpose(1, 2)
        return torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + self.positional_embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        h, d = self.heads, c // self.heads
        t = self.tokens(x)
        # only the mean token's output is used, so only its query is formed (same result as the
        # full self-attention of the official code, x[0])
        q = self.q_proj(t[:, :1]).reshape(b, 1, h, d).transpose(1, 2)  # (B,h,1,d)
        k = self.k_proj(t).reshape(b, -1, h, d).transpose(1, 2)  # (B,h,T,d)
        v = self.v_proj(t).reshape(b, -1, h, d).transpose(1, 2)
        att = ((q @ k.transpose(-1, -2)) * d**-0.5).softmax(dim=-1)  # (B,h,1,T)
        o = (att @ v).reshape(b, c)
        return self.c_proj(o)


class ClipImageModel(nn.Module):
    """CLIP ModifiedResNet. `forward(x (B,3,R,R) float32, CLIP-normalised) -> (B, output_dim)`
    (not L2-normalised, as `encode_image`); R = cfg.input_resolution."""

    def __init__(self, cfg: ClipImageConfig = RN50):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w // 2)
        self.conv2 = nn.Conv2d(w // 2, w // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w // 2)
        self.conv3 = nn.Conv2d(w // 2, w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = w
        for i, (n, planes) in enumerate(zip(cfg.layers, (w, 2 * w, 4 * w, 8 * w))):
            blocks = [_Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * 4
            blocks += [_Bottleneck(inplanes, planes) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.attnpool = AttentionPool2d(cfg.grid, cfg.embed_dim, cfg.heads, cfg.output_dim)
        std = cfg.embed_dim**-0.5  # CLIP's init of the pool projections
        for lin in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(lin.weight, std=std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,R,R) -> layer-4 output (B, 32*width, R/32, R/32): the Grad-CAM target
        (`visual.layer4[-1]`'s output)."""
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pool(self, x4: torch.Tensor) -> torch.Tensor:
        return self.attnpool(x4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


def image_state_dict(sd: dict, what: str = "clip_checkpoint") -> dict:
    """The `visual.*` tensors of a full CLIP state dict, prefix stripped ('module.' removed too).

    Raises:
        CheckpointError: no image tower, or a ViT one (the Grad-CAM recipe needs the ResNet).
    """
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.") and torch.is_tensor(v)}
    if "proj" in out or "class_embedding" in out:
        raise CheckpointError(
            f"{what}: the file holds a CLIP ViT image tower (visual.proj / visual.class_embedding); the CAM "
            "generator needs CLIP RN50 (ModifiedResNet: visual.layer1..4, visual.attnpool.*), e.g. RN50.pt"
        )
    if "attnpool.positional_embedding" not in out or "layer1.0.conv1.weight" not in out:
        some = ", ".join(list(sd)[:6])
        raise CheckpointError(
            f"{what}: no CLIP ResNet image tower found (expected keys visual.conv1.weight, "
            "visual.layer1..4.*, visual.attnpool.positional_embedding, visual.attnpool.{q,k,v,c}_proj.*); "
            f"the file has: {some} …"
        )
    return out


def config_from_state_dict(sd: dict) -> ClipImageConfig:
    """Sizes of the tower from its (prefix-free) tensors, OpenAI `build_model`'s rules."""
    layers = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{b}.")}) for b in (1, 2, 3, 4))
    width = int(sd["layer1.0.conv1.weight"].shape[0])
    n_tok = int(sd["attnpool.positional_embedding"].shape[0])
    grid = round((n_tok - 1) ** 0.5)
    if grid * grid + 1 != n_tok:
        raise CheckpointError(
            f"clip_checkpoint: visual.attnpool.positional_embedding has {n_tok} rows, expected grid^2 + 1"
        )
    out_dim = int(sd["attnpool.c_proj.weight"].shape[0]) if "attnpool.c_proj.weight" in sd else 1024
    return ClipImageConfig(
        layers=layers,
        width=width,
        heads=max(1, width * 32 // 64),
        output_dim=out_dim,
        input_resolution=grid * 32,
    )


def load_clip_image(path) -> ClipImageModel:
    """Build the image tower from an OpenAI (`RN50.pt`, TorchScript) or open_clip checkpoint, in eval mode.

    The same files the text tower reads (edgefss.text.clip_text); text keys are ignored.

    Raises:
        CheckpointError: missing/unreadable file, no (ResNet) image tower, mismatching keys/shapes
            (the message lists the missing and unexpected keys).
    """
    from edgefss.models.checkpoints import load_into
    from edgefss.text.clip_text import _read_any

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"clip_checkpoint: file not found: '{path}'")
    sd = image_state_dict(_read_any(path))
    model = ClipImageModel(config_from_state_dict(sd))
    own = model.state_dict()
    # BatchNorm step counters are bookkeeping some exporters drop; they do not affect eval outputs
    sd = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **sd}
    load_into(
        model,
        {k: (v if k.endswith("num_batches_tracked") else v.float()) for k, v in sd.items()},
        f"CLIP image tower ({path.name})",
    )
    return model.eval()


def build_clip_image(checkpoint=None, cfg: ClipImageConfig | None = None, seed: int = 0) -> ClipImageModel:
    """`load_clip_image(checkpoint)`, or a seeded random tower (with the project's random-weights
    warning) when checkpoint is None; cfg only applies to the random tower (default RN50)."""
    if checkpoint is not None:
        return load_clip_image(checkpoint)
    from edgefss.models.checkpoints import warn_random_init

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClipImageModel(cfg or RN50)
    warn_random_init("CLIP RN50 image tower (CAM pseudo-masks)")
    return model.eval()
