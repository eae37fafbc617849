"""CLIP text transformer (PyTorch) with the official OpenAI state-dict key names.

Keys: token_embedding.weight, positional_embedding, transformer.resblocks.{i}.{ln_1,ln_2}.{weight,bias},
transformer.resblocks.{i}.attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias},
transformer.resblocks.{i}.mlp.{c_fc,c_proj}.{weight,bias}, ln_final.{weight,bias}, text_projection.
Loads an OpenAI `.pt` (TorchScript archive), a plain state dict, or an open_clip checkpoint
({'state_dict': ...}, optional 'module.' prefix); visual/logit_scale keys are ignored.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgefss.errors import CheckpointError


@dataclass(frozen=True)
class ClipTextConfig:
    embed_dim: int = 512  # output size (text_projection columns)
    width: int = 512
    layers: int = 12
    heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408


CLIP_TEXT_CONFIGS = {
    "ViT-B/32": ClipTextConfig(embed_dim=512),
    "RN50": ClipTextConfig(embed_dim=1024),
}


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI CLIP was trained with (not nn.GELU)."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _Attention(nn.Module):
    """Multi-head self-attention holding its weights under nn.MultiheadAttention's key names."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x, mask):
        """x (B,T,W) float32, mask (T,T) additive (-inf above the diagonal) -> (B,T,W)."""
        b, t, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) * (w // self.heads) ** -0.5 + mask
        y = att.softmax(dim=-1) @ v
        return self.out_proj(y.transpose(1, 2).reshape(b, t, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))


class ClipTextModel(nn.Module):
    """CLIP text tower. `encode(ids (N,T) int64) -> (N, embed_dim) float32`, L2-normalised."""

    def __init__(self, cfg: ClipTextConfig = CLIP_TEXT_CONFIGS["ViT-B/32"]):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        self.transformer = _Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.randn(cfg.width, cfg.embed_dim) * cfg.width**-0.5)
        causal = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)  # not an official key

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encode(ids)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N,T) int64 from ClipTokenizer (T = context_length) -> (N, embed_dim) float32, unit norm.

        The feature is taken at the EOT token, found as the argmax of the ids (EOT has the
        largest id of the vocabulary), as in OpenAI CLIP.
        """
        ids = torch.as_tensor(ids, dtype=torch.long)
        t = ids.shape[-1]
        if t > self.cfg.context_length:
            raise CheckpointError(f"ids: {t} tokens exceed the model's context length {self.cfg.context_length}")
        x = self.token_embedding(ids) + self.positional_embedding[:t]
        mask = self.attn_mask[:t, :t]
        for blk in self.transformer.resblocks:
            x = blk(x, mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1)


TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _read_any(path: Path) -> dict:
    """Tensors by key from a TorchScript archive or a torch.save'd dict."""
    is_script = False
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            # TorchScript archives carry code/ and constants.pkl next to data.pkl.
            is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    try:
        if is_script:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt archives raise many types
        raise CheckpointError(f"clip_checkpoint: '{path}' could not be read as a CLIP checkpoint: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"clip_checkpoint: '{path}' holds a {type(obj).__name__}, not a state dict")
    return obj


def text_state_dict(sd: dict, what: str = "clip_checkpoint") -> dict:
    """The text-tower tensors of a full CLIP state dict ('module.' stripped, visual keys dropped)."""
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    out = {k: v for k, v in sd.items() if k.startswith(TEXT_PREFIXES) and torch.is_tensor(v)}
    if "token_embedding.weight" not in out or "text_projection" not in out:
        some = ", ".join(list(sd)[:6])
        raise CheckpointError(
            f"{what}: no CLIP text tower found (expected keys token_embedding.weight, positional_embedding, "
            f"transformer.resblocks.*, ln_final.*, text_projection); the file has: {some} …"
        )
    return out


def config_from_state_dict(sd: dict) -> ClipTextConfig:
    """Infer the text tower's sizes from its tensors (heads = width / 64, OpenAI's rule)."""
    width = sd["ln_final.weight"].shape[0] if "ln_final.weight" in sd else sd["token_embedding.weight"].shape[1]
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    return ClipTextConfig(
        embed_dim=int(sd["text_projection"].shape[1]),
        width=int(width),
        layers=layers,
        heads=max(1, int(width) // 64),
        context_length=int(sd["positional_embedding"].shape[0]) if "positional_embedding" in sd else 77,
        vocab_size=int(sd["token_embedding.weight"].shape[0]),
    )


def load_clip_text(path, heads: int | None = None) -> ClipTextModel:
    """Build a ClipTextModel from an OpenAI/open_clip checkpoint file, in eval mode.

    Args:
        path: OpenAI `ViT-B-32.pt`/`RN50.pt` (TorchScript), or a torch.save'd (open_clip) state dict.
        heads: attention heads; None = width // 64 (8 for every released CLIP text tower).

    Raises:
        CheckpointError: missing/unreadable file, no text tower, or mismatching keys/shapes.
    """
    from edgefss.models.checkpoints import load_into

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"clip_checkpoint: file not found: '{path}'")
    sd = text_state_dict(_read_any(path))
    cfg = config_from_state_dict(sd)
    if heads is not None:
        cfg = ClipTextConfig(**{**cfg.__dict__, "heads": heads})
    if cfg.width % cfg.heads:
        raise CheckpointError(f"clip_checkpoint: width {cfg.width} is not divisible by {cfg.heads} heads")
    model = ClipTextModel(cfg)
    load_into(model, {k: v.float() for k, v in sd.items()}, f"CLIP text tower ({path.name})")
    return model.eval()
