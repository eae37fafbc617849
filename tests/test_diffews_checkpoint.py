"""DiffewS checkpoint layouts on synthetic tiny files: the official release (diffusers save_pretrained
folders, unet/unet/ as the evaluation reads it), stock SD2.1 (no conv_in_ref), edgefss saves, and
wrong files reported with their missing/unexpected keys."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from safetensors.torch import save_file

from edgefss.errors import CheckpointError
from edgefss.models import build_model

S = 64


def _tiny(seed, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("diffews", config="tiny", imgsz=S, seed=seed, **kw)


def _release(tmp_path, src, stock=False):
    """Write `src` as the release lays it out: <rel>/unet/unet/ (save_pretrained, safetensors) and the
    SD2.1 folder <sd>/vae/ + the stored empty-prompt embedding."""
    rel, sd = tmp_path / "coco_fold0", tmp_path / "sd21-ref8"
    usd = {k: v.contiguous() for k, v in src.unet.state_dict().items() if not (stock and k.startswith("conv_in_ref."))}
    (rel / "unet" / "unet").mkdir(parents=True)
    save_file(usd, str(rel / "unet" / "unet" / "diffusion_pytorch_model.safetensors"))
    src.vae.save_pretrained(str(sd / "vae"))
    save_file({"prompt_embeds": src.prompt_embeds.contiguous()}, str(sd / "prompt_embeds.safetensors"))
    return rel, sd


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_release_layout_loads(tmp_path):
    src = _tiny(seed=1)
    rel, sd = _release(tmp_path, src)
    assert (sd / "vae" / "diffusion_pytorch_model.safetensors").is_file()  # diffusers' own writer
    m = _tiny(seed=2)
    assert not _same(m, src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads without any warning
        m = build_model("diffews", config="tiny", imgsz=S, seed=2, checkpoint=str(rel), vae_checkpoint=str(sd))
    assert _same(m, src)


def test_stock_sd_unet_gets_conv_in_ref_from_the_rule(tmp_path):
    src = _tiny(seed=3)
    with torch.no_grad():
        src.unet.conv_in_ref.weight.add_(1.0)  # a fine-tuned value the stock file does not have
    rel, sd = _release(tmp_path, src, stock=True)
    with pytest.warns(UserWarning, match="stock Stable Diffusion UNet"):
        m = build_model("diffews", config="tiny", imgsz=S, seed=4, checkpoint=str(rel), vae_checkpoint=str(sd))
    torch.testing.assert_close(m.unet.conv_in.weight, src.unet.conv_in.weight, rtol=0, atol=0)
    torch.testing.assert_close(m.unet.conv_in_ref.weight, src.unet.conv_in.weight.repeat(1, 2, 1, 1) / 2,
                               rtol=0, atol=0)


def test_sd21_folder_layout_with_unet_and_vae_side_by_side(tmp_path):
    src = _tiny(seed=5)
    root = tmp_path / "stable-diffusion-2-1-ref8inchannels-tag4inchannels"
    src.unet.save_pretrained(str(root / "unet"))  # the layout save_pretrained of the pipeline writes
    src.vae.save_pretrained(str(root / "vae"))
    torch.save(src.prompt_embeds.clone(), str(root / "prompt_embeds.pt"))
    m = _tiny(seed=6, checkpoint=str(root))
    assert _same(m, src)


def test_wrong_unet_keys_are_listed(tmp_path):
    src = _tiny(seed=7)
    rel, sd = _release(tmp_path, src)
    f = rel / "unet" / "unet" / "diffusion_pytorch_model.safetensors"
    usd = {k: v.contiguous() for k, v in src.unet.state_dict().items() if k != "mid_block.resnets.0.conv1.weight"}
    usd["extra_head.weight"] = torch.zeros(3)
    save_file(usd, str(f))
    with pytest.raises(CheckpointError) as ei:
        _tiny(seed=8, checkpoint=str(rel), vae_checkpoint=str(sd))
    msg = str(ei.value)
    assert "1 missing keys: mid_block.resnets.0.conv1.weight" in msg and "1 unexpected keys: extra_head.weight" in msg


def test_shape_mismatch_and_missing_vae_are_reported(tmp_path):
    src = _tiny(seed=9)
    rel, sd = _release(tmp_path, src)
    with pytest.raises(CheckpointError, match="no VAE weights"):
        _tiny(seed=9, checkpoint=str(rel))
    big = _tiny(seed=9)
    big.unet.conv_in_ref = torch.nn.Conv2d(8, 32, 5, padding=2)
    (rel / "unet" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    save_file({k: v.contiguous() for k, v in big.unet.state_dict().items()},
              str(rel / "unet" / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatches: conv_in_ref.weight: checkpoint \(32, 8, 5, 5\)"):
        _tiny(seed=9, checkpoint=str(rel), vae_checkpoint=str(sd))


def test_edgefss_single_file_roundtrip_and_foreign_files(tmp_path):
    from edgefss.models.checkpoints import save_edgefss

    src = _tiny(seed=10)
    save_edgefss(tmp_path / "diffews.pt", src, {"model": "diffews", "config": "tiny"})
    assert _same(_tiny(seed=11, checkpoint=str(tmp_path / "diffews.pt")), src)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(tmp_path / "v2-1.safetensors"))
    with pytest.raises(CheckpointError, match="original \\(LDM\\) single-file"):
        _tiny(seed=10, checkpoint=str(tmp_path / "v2-1.safetensors"))
    torch.save({"learner.x": torch.zeros(1)}, str(tmp_path / "cst.pt"))
    with pytest.raises(CheckpointError, match="not a DiffewS checkpoint"):
        _tiny(seed=10, checkpoint=str(tmp_path / "cst.pt"))


def test_missing_prompt_embedding_warns(tmp_path):
    src = _tiny(seed=12)
    rel, sd = _release(tmp_path, src)
    (sd / "prompt_embeds.safetensors").unlink()
    with pytest.warns(UserWarning, match="prompt embedding stays RANDOM"):
        build_model("diffews", config="tiny", imgsz=S, seed=12, checkpoint=str(rel), vae_checkpoint=str(sd))
