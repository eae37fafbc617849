"""DINO ViT-S/8: official key layout, checkpoint loading, position-embedding resize, attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgefss.errors import CheckpointError
from edgefss.models.dino_vit import DinoViT, dino_vit_small8, interpolate_pos_embed, load_dino_checkpoint

D = 384


def official_layout() -> dict[str, tuple]:
    """Key -> shape of `dino_deitsmall8_300ep_pretrain.pth`, written from the spec (§3.1, §3.7)."""
    keys = {
        "cls_token": (1, 1, D),
        "pos_embed": (1, 785, D),
        "patch_embed.proj.weight": (D, 3, 8, 8),
        "patch_embed.proj.bias": (D,),
        "norm.weight": (D,),
        "norm.bias": (D,),
    }
    for i in range(12):
        b = f"blocks.{i}."
        keys.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "mlp.fc1.weight": (4 * D, D), b + "mlp.fc1.bias": (4 * D,),
            b + "mlp.fc2.weight": (D, 4 * D), b + "mlp.fc2.bias": (D,),
        })
    return keys


def synthetic_official_sd(seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=gen) * 0.02 for k, s in official_layout().items()}


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return dino_vit_small8().eval()


def test_param_count_and_official_keys(vit):
    assert sum(p.numel() for p in vit.parameters()) == 21_670_272
    sd = vit.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_layout()


def _bicubic_ref(grid: np.ndarray, out_hw, scale_hw) -> np.ndarray:
    """Independent NumPy bicubic (A=-0.75, edge clamp, half-pixel, torch's 1/scale mapping)."""
    A = -0.75

    def w(t):
        t = abs(t)
        if t <= 1:
            return (A + 2) * t**3 - (A + 3) * t**2 + 1
        if t < 2:
            return A * t**3 - 5 * A * t**2 + 8 * A * t - 4 * A
        return 0.0

    def axis(n_in, n_out, scale):
        M = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = (o + 0.5) / scale - 0.5
            f = math.floor(src)
            for j in range(f - 1, f + 3):
                M[o, min(max(j, 0), n_in - 1)] += w(src - j)
        return M

    Mh = axis(grid.shape[-2], out_hw[0], scale_hw[0])
    Mw = axis(grid.shape[-1], out_hw[1], scale_hw[1])
    return Mh @ grid @ Mw.T  # (C,out_h,out_w)


def test_pos_embed_interpolation_matches_numpy_bicubic_with_dino_scale(vit):
    pe = vit.pos_embed.detach()
    out = interpolate_pos_embed(pe, 50, 50)
    assert out.shape == (1, 2501, D)
    torch.testing.assert_close(out[:, 0], pe[:, 0])
    grid = pe[0, 1:].reshape(28, 28, D).permute(2, 0, 1).double().numpy()
    ref = _bicubic_ref(grid, (50, 50), (50.1 / 28, 50.1 / 28))
    got = out[0, 1:].reshape(50, 50, D).permute(2, 0, 1).double().numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # the +0.1 trick shifts the grid: a plain size=(50,50) resize is measurably different
    plain = F.interpolate(pe[:, 1:].reshape(1, 28, 28, D).permute(0, 3, 1, 2), size=(50, 50), mode="bicubic")
    assert (plain[0].double().numpy() - got).__abs__().max() > 1e-4


def test_pos_embed_cache_is_reused_and_invalidated_by_loading():
    torch.manual_seed(0)
    m = dino_vit_small8().eval()
    m.requires_grad_(False)
    a = m.pos_embed_for(50, 50)
    assert m.pos_embed_for(50, 50) is a
    m.load_state_dict(synthetic_official_sd(3))
    b = m.pos_embed_for(50, 50)
    assert b is not a
    torch.testing.assert_close(b, interpolate_pos_embed(m.pos_embed.detach(), 50, 50))


def test_sdpa_attention_equals_explicit_softmax(vit):
    x = torch.randn(2, 17, D)
    attn = vit.blocks[0].attn
    with torch.no_grad():
        y, q, k = attn(x, return_qk=True)
        qkv = attn.qkv(x).reshape(2, 17, 3, 6, 64).permute(2, 0, 3, 1, 4)
        p = (qkv[0] @ qkv[1].transpose(-1, -2) / 8.0).softmax(-1)
        ref = attn.proj((p @ qkv[2]).transpose(1, 2).reshape(2, 17, D))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q, qkv[0])
    torch.testing.assert_close(k, qkv[1])


def test_intermediate_layers_are_normed_block_outputs(vit):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs, q, k = vit.get_intermediate_layers(x, n=12, return_qk=True)
        assert len(outs) == 12 and all(o.shape == (1, 65, D) for o in outs)
        assert q.shape == k.shape == (1, 6, 65, 64)
        t = vit.prepare_tokens(x)
        for i, blk in enumerate(vit.blocks):
            t = blk(t)
            torch.testing.assert_close(outs[i], vit.norm(t))
        torch.testing.assert_close(vit(x), outs[-1][:, 0])


def _save(obj, path):
    torch.save(obj, str(path))
    return path


def test_load_official_and_prefixed_checkpoints_round_trip(tmp_path):
    sd = synthetic_official_sd(1)
    x = torch.randn(1, 3, 32, 32)
    outs = []
    for i, obj in enumerate([sd, {"state_dict": {"backbone." + k: v for k, v in sd.items()} | {"learner.x": torch.ones(1)}}]):
        m = DinoViT().eval()
        load_dino_checkpoint(m, _save(obj, tmp_path / f"ck{i}.pth"))
        for k, v in sd.items():
            assert torch.equal(m.state_dict()[k], v), k
        with torch.no_grad():
            outs.append(m.get_intermediate_layers(x)[-1])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("edit, needle", [
    (lambda sd: sd.pop("norm.bias"), "norm.bias"),
    (lambda sd: sd.__setitem__("head.weight", torch.zeros(1000, D)), "head.weight"),
    (lambda sd: sd.__setitem__("pos_embed", torch.zeros(1, 197, D)), "pos_embed"),
])
def test_load_errors_name_the_keys(tmp_path, edit, needle):
    sd = synthetic_official_sd(1)
    edit(sd)
    with pytest.raises(CheckpointError, match=needle) as ei:
        load_dino_checkpoint(DinoViT(), _save(sd, tmp_path / "bad.pth"))
    assert "DINO ViT-S/8" in str(ei.value)


def test_load_error_for_a_non_vit_file(tmp_path):
    p = _save({"module.hpn_learner.w": torch.zeros(3)}, tmp_path / "tlg.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_dino_checkpoint(DinoViT(), p)
