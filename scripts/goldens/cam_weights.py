"""Seeded tiny CLIP (ModifiedResNet + text transformer) weights in the OpenAI state-dict layout.

make_cam_goldens.py loads them into the official IMR-HSNet CLIP code (`model_clip.build_model`);
tests/test_cam_golden.py rebuilds them bit-identically from the seed, saves them as a checkpoint
file and loads it through edgefss's loaders (official key names, `visual.*` + text keys).

Every tensor comes from its own generator seeded by (seed, crc32(key)). Constant-initialised
tensors are perturbed (BN weights 1 + 0.2 N, biases and running means 0.1 N, running variances
1 + 0.3 |N|, LayerNorm alike) so a loader that drops one changes the outputs. The text projection
is a shared direction plus a small per-token part, so the class text features are close to each
other and the softmax(100 cos) over them is not saturated: its gradient (the CAM) is non-zero.
All values are float16-representable, as in OpenAI's float16 checkpoints (see clip_state_dict).
"""

from __future__ import annotations

import zlib

import torch

SEED = 20220718
TINY = dict(
    embed_dim=32,
    image_resolution=96,
    vision_layers=(2, 1, 1, 2),
    vision_width=8,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=1,
)
SHARED_DIR = 1.0  # weight of the shared text-projection direction
TEXT_SPREAD = 0.03  # per-token part of the text projection


def _gen(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def clip_state_dict(shapes: dict, seed: int = SEED) -> dict:
    """Seeded tensors for every key of `shapes` (key -> shape), float32 (int64 counters)."""
    out = {}
    for key, shape in shapes.items():
        g = _gen(seed, key)
        shape = tuple(shape)
        n = torch.randn(shape, generator=g) if shape else torch.randn((), generator=g)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = 1.0 + 0.3 * n.abs()
        elif key.endswith(("running_mean", ".bias")) or key == "ln_final.bias":
            out[key] = 0.1 * n
        elif key.endswith(".weight") and len(shape) == 1:  # BN / LayerNorm scales
            out[key] = 1.0 + 0.2 * n
        elif key == "text_projection":
            width, dim = shape
            shared = torch.randn(dim, generator=g)
            b = torch.randn(width, generator=g)
            b = b / b.norm()
            out[key] = SHARED_DIR * torch.outer(b, shared / shared.norm()) + TEXT_SPREAD * n
        elif key == "logit_scale":
            out[key] = torch.tensor(4.6052)
        elif key.endswith("positional_embedding"):
            out[key] = 0.1 * n
        elif key == "token_embedding.weight":
            out[key] = 0.02 * n
        else:  # conv / linear weights: N(0, 1/fan_in) keeps the activations' scale
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            out[key] = n * fan_in**-0.5
    # ln_final's bias along the shared row direction b keeps x . b > 0, so every text feature
    # leans the same way (see the module docstring)
    if "text_projection" in out and "ln_final.bias" in out:
        tp = out["text_projection"]
        b = tp @ tp.sum(0)
        out["ln_final.bias"] = out["ln_final.bias"] + 3.0 * b / b.norm()
    # OpenAI's checkpoints are float16 and the official build_model (`convert_weights`, then
    # load_state_dict) rounds conv/linear weights to float16 even on CPU: draw representable values
    return {k: v.half().float() if v.is_floating_point() else v for k, v in out.items()}


def edgefss_shapes() -> dict:
    """Key -> shape of the tiny CLIP in the OpenAI layout, built from edgefss's own modules."""
    from edgefss.models.clip_image import ClipImageConfig, ClipImageModel
    from edgefss.text.clip_text import ClipTextConfig, ClipTextModel

    t = TINY
    img = ClipImageModel(
        ClipImageConfig(
            layers=t["vision_layers"],
            width=t["vision_width"],
            heads=t["vision_width"] * 32 // 64,
            output_dim=t["embed_dim"],
            input_resolution=t["image_resolution"],
        )
    )
    txt = ClipTextModel(
        ClipTextConfig(
            embed_dim=t["embed_dim"],
            width=t["transformer_width"],
            layers=t["transformer_layers"],
            heads=t["transformer_heads"],
            context_length=t["context_length"],
            vocab_size=t["vocab_size"],
        )
    )
    shapes = {f"visual.{k}": tuple(v.shape) for k, v in img.state_dict().items()}
    shapes.update({k: tuple(v.shape) for k, v in txt.state_dict().items()})
    shapes["logit_scale"] = ()
    return shapes
