"""edgefss.models.clip_image: the CLIP ModifiedResNet image tower, official key layout and loading."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from edgefss.errors import CheckpointError
from edgefss.models.clip_image import RN50, ClipImageConfig, ClipImageModel, build_clip_image, load_clip_image

REPO = Path(__file__).resolve().parents[1]
GOLD = REPO / "tests" / "goldens" / "cam"
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
from cam_weights import SEED, TINY, clip_state_dict, edgefss_shapes  # noqa: E402

TINY_CFG = ClipImageConfig(
    layers=TINY["vision_layers"],
    width=TINY["vision_width"],
    heads=TINY["vision_width"] * 32 // 64,
    output_dim=TINY["embed_dim"],
    input_resolution=TINY["image_resolution"],
)


@pytest.fixture(scope="module")
def tiny_sd():
    return clip_state_dict(edgefss_shapes(), SEED)


def test_rn50_keys_and_shapes_equal_the_official_layout():
    """Every visual.* key and shape of the official CLIP RN50 (listed from the official code by
    scripts/goldens/make_cam_goldens.py), nothing more: an OpenAI RN50.pt loads key for key."""
    official = json.loads((GOLD / "rn50_keys.json").read_text())
    with torch.device("meta"):
        ours = {f"visual.{k}": list(v.shape) for k, v in ClipImageModel(RN50).state_dict().items()}
    assert ours == official
    assert official["visual.attnpool.positional_embedding"] == [50, 2048]


def test_loads_a_plain_and_an_open_clip_checkpoint(tmp_path, tiny_sd):
    torch.save(tiny_sd, tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_sd.items()}}, tmp_path / "oc.pt")
    x = torch.randn(1, 3, 96, 96)
    outs = []
    for f in ("plain.pt", "oc.pt"):
        m = load_clip_image(tmp_path / f)
        assert m.cfg == TINY_CFG and not m.training
        for k, v in m.state_dict().items():
            assert torch.equal(v, tiny_sd[f"visual.{k}"]), k
        with torch.no_grad():
            outs.append(m(x))
    assert outs[0].shape == (1, 32) and torch.equal(outs[0], outs[1])


def test_missing_batch_counters_are_tolerated(tmp_path, tiny_sd):
    sd = {k: v for k, v in tiny_sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "c.pt")
    load_clip_image(tmp_path / "c.pt")


def test_wrong_files_name_missing_and_unexpected_keys(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    del sd["visual.layer2.0.conv2.weight"]
    sd["visual.layer2.0.extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: layer2\.0\.conv2\.weight.*unexpected keys: "
        r"layer2\.0\.extra\.weight",
    ):
        load_clip_image(tmp_path / "bad.pt")
    sd = dict(tiny_sd)
    sd["visual.attnpool.c_proj.weight"] = torch.zeros(32, 100)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_clip_image(tmp_path / "shape.pt")


def test_vit_text_only_and_missing_files_are_refused(tmp_path, tiny_sd):
    vit = {
        "visual.proj": torch.zeros(8, 4),
        "visual.class_embedding": torch.zeros(8),
        "text_projection": torch.zeros(2),
    }
    torch.save(vit, tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="ViT image tower.*RN50"):
        load_clip_image(tmp_path / "vit.pt")
    torch.save({k: v for k, v in tiny_sd.items() if not k.startswith("visual.")}, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="no CLIP ResNet image tower"):
        load_clip_image(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="file not found"):
        load_clip_image(tmp_path / "nope.pt")


def test_random_init_warns_and_is_seeded():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = build_clip_image(cfg=TINY_CFG, seed=3)
        b = build_clip_image(cfg=TINY_CFG, seed=3)
    assert any("RANDOMLY initialised" in str(x.message) for x in w)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_attention_pool_equals_torch_multi_head_attention(tiny_sd, tmp_path):
    """The pool forms only the mean token's query; the official code runs the full
    F.multi_head_attention_forward and keeps x[0] (model_clip.py:71-95): same output."""
    torch.save(tiny_sd, tmp_path / "t.pt")
    m = load_clip_image(tmp_path / "t.pt")
    p = m.attnpool
    x4 = torch.randn(2, 256, 3, 3)
    t = p.tokens(x4).transpose(0, 1)  # (T,B,C)
    ref, _ = torch.nn.functional.multi_head_attention_forward(
        t,
        t,
        t,
        256,
        p.heads,
        None,
        torch.cat([p.q_proj.bias, p.k_proj.bias, p.v_proj.bias]),
        None,
        None,
        False,
        0.0,
        p.c_proj.weight,
        p.c_proj.bias,
        training=False,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=p.q_proj.weight,
        k_proj_weight=p.k_proj.weight,
        v_proj_weight=p.v_proj.weight,
    )
    with torch.no_grad():
        assert torch.allclose(p(x4), ref[0], atol=1e-5, rtol=1e-5)
