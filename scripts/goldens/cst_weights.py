"""Seeded CST weights in the official checkpoint layout, rebuilt bit-identically from a seed.

The golden generator (make_cst_goldens.py) loads these into the official code; the golden test
(tests/test_cst_golden.py) rebuilds them and loads them through edgefss's own checkpoint loader.
A 21.7M-parameter state_dict (~85 MB) is too large for git, so the recipe is the artefact.

Every tensor is drawn from its own generator, seeded by (seed, crc32(key)), so the draw does not
depend on key order. Constant-initialised tensors are perturbed (LayerNorm/GroupNorm weights
1 + 0.2 N, every bias 0.1 N) so a loader that drops or mis-assigns them changes the outputs.
Weights are N(0, gain^2 / fan_in), so activations keep their scale through the 12 blocks and the
learner. The last block's q/k biases get opposite offsets along a fixed unit vector per head
(PSEUDO_Q, PSEUDO_K) and every head's key the same image-dependent component along it
(PSEUDO_SPREAD): the head-mean key/CLS-query cosine then varies across the image around the -0.2
that the 0.4 pseudo-mask threshold cuts at, so the pseudo-masks are neither all-on nor all-off. The learner's
last seg/cls convolutions are scaled by LOGIT_GAIN so predictions are far from the 0.5 ties.
"""

from __future__ import annotations

import zlib

import torch

SEED = 20230718
PSEUDO_Q = 4.0  # last-block CLS-query bias offset along u (per head)
PSEUDO_K = 1.0  # last-block key bias offset along -u (per head)
PSEUDO_SPREAD = 4.0  # shared image-dependent key component along u (all heads alike)
LOGIT_GAIN = 6.0
HEADS, HEAD_DIM, EMBED = 6, 64, 384


def _gen(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def official_state_dict(shapes: dict, seed: int = SEED, pseudo_q: float = PSEUDO_Q,
                        pseudo_k: float = PSEUDO_K, pseudo_spread: float = PSEUDO_SPREAD,
                        logit_gain: float = LOGIT_GAIN) -> dict:
    """Args:
        shapes: key -> shape of the official CST state_dict (`backbone.*`, `learner.*`).
    Returns:
        key -> float32 tensor.
    """
    out = {}
    for key, shape in shapes.items():
        g = _gen(seed, key)
        shape = tuple(shape)
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        if len(shape) == 1 and key.endswith(".weight"):  # LayerNorm / GroupNorm scale
            t = 1.0 + 0.2 * z
        elif key.endswith(".bias"):
            t = 0.1 * z
        elif key.endswith(("cls_token", "pos_embed")):
            t = 0.5 * z
        else:  # conv / linear weight: fan_in = all but the output axis
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            t = z / fan_in ** 0.5
        out[key] = t
    last = max(int(k.split(".")[2]) for k in shapes if k.startswith("backbone.blocks."))
    qkv_b = f"backbone.blocks.{last}.attn.qkv.bias"
    u = torch.ones(HEAD_DIM, dtype=torch.float64) / HEAD_DIM ** 0.5
    b = out[qkv_b].clone()
    b[:EMBED] += pseudo_q * u.repeat(HEADS)  # q rows of the [q; k; v] layout
    b[EMBED:2 * EMBED] -= pseudo_k * u.repeat(HEADS)  # k rows
    out[qkv_b] = b
    # every head's key gets the same content-dependent component along u (r . LN(x)), so the
    # head-mean cosine varies across the image instead of averaging out over the 6 heads
    qkv_w = f"backbone.blocks.{last}.attn.qkv.weight"
    r = torch.randn(EMBED, generator=_gen(seed, qkv_w + "#spread"), dtype=torch.float64) / EMBED ** 0.5
    w = out[qkv_w].clone()
    w[EMBED:2 * EMBED] += pseudo_spread * torch.outer(u.repeat(HEADS), r)
    out[qkv_w] = w
    for key in ("learner.decoder2_seg.2.weight", "learner.decoder2_seg.2.bias",
                "learner.decoder2_cls.2.weight", "learner.decoder2_cls.2.bias"):
        out[key] = out[key] * logit_gain
    return {k: v.float() for k, v in out.items()}
