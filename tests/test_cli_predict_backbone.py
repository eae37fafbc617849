"""--backbone-weights (issue 19: every weight file a model takes has a CLI flag): a synthetic
checkpoint in torchvision's resnet50 layout (as tests/test_backbones.py builds them) reaches the
model through `edgefss train`, and a wrong file fails with one line listing the keys."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_backbones import _save
from test_train import _subset

from edgefss.cli import main


def _torchvision_resnet50(path, seed=7):
    """A torchvision-layout resnet50 state_dict (with its fc classifier), seeded; returns (path, sd)."""
    from edgefss.models.tlg import TLG, TLGCfg

    torch.manual_seed(seed)
    src = TLG(TLGCfg(backbone="resnet50", imgsz=64)).backbone
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return _save(sd, path), sd


def test_train_backbone_weights_reach_the_model(shared_data, tmp_path, capsys):
    from edgefss.models.checkpoints import read_state_dict

    path, sd = _torchvision_resnet50(tmp_path / "resnet50-19c8e357.pth")
    data = _subset(shared_data, tmp_path, classes=("dog", "cow"), per_class=2)
    out = tmp_path / "run"
    rc = main(["train", "--model", "tlg", "--data", str(data), "--epochs", "1", "--episodes", "1",
               "--batch-size", "1", "--imgsz", "64", "--cache-mb", "0", "--backbone-weights", str(path),
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    saved, _ = read_state_dict(out / "model.pt")
    # the backbone is frozen, so the trained checkpoint carries exactly the given weights
    checked = 0
    for k, v in sd.items():
        if not k.startswith("fc."):
            assert torch.equal(saved[f"backbone.{k}"], v), k
            checked += 1
    assert checked == len(sd) - 2 > 250  # every backbone tensor (fc is the ignored classifier)


@pytest.mark.parametrize("verb", ["train", "eval"])
def test_wrong_backbone_file_lists_missing_and_unexpected_keys(verb, shared_data, tmp_path, capsys):
    vgg = _save({f"features.{i}.weight": torch.zeros(1) for i in range(3)}, tmp_path / "vgg16.pth")
    if verb == "train":
        data = _subset(shared_data, tmp_path, classes=("dog", "cow"), per_class=2)
        argv = ["train", "--model", "tlg", "--data", str(data), "--imgsz", "64"]
    else:
        argv = ["eval", "--model", "tlg", "--imgsz", "64", "--data", str(shared_data / "perseg_examples")]
    rc = main([*argv, "--backbone-weights", str(vgg), "--out", str(tmp_path / "run")])
    assert rc == 1
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ": warning: " not in ln]
    assert len(err) == 1 and "missing keys: conv1.weight" in err[0] and "unexpected keys: features.0" in err[0], err
    assert str(vgg) in err[0]


def test_export_graphs_and_eval_predictor_take_backbone_weights(tmp_path):
    """The Python entry points the export and eval flags reach load the same synthetic file."""
    from edgefss.eval.predictors import load_predictor
    from edgefss.exporters.graphs import load_graphs

    path, sd = _torchvision_resnet50(tmp_path / "resnet50.pth", seed=11)
    mg = load_graphs("tlg", None, 64, backbone_checkpoint=path)
    seg, meta = load_predictor("tlg", imgsz=64, backbone_checkpoint=path)
    assert meta["backbone_checkpoint"] == str(path)
    for model in (mg.model, seg.model):
        own = model.backbone.state_dict()
        assert all(torch.equal(own[k], v) for k, v in sd.items() if not k.startswith("fc.")), model


def test_export_backbone_weights_flag(tmp_path, capsys, monkeypatch):
    """`edgefss export --backbone-weights` reaches load_graphs; a wrong file fails before any graph
    is exported, with one line listing the keys; the option is recorded in the bundle's options."""
    from edgefss.exporters import core
    from edgefss.exporters.graphs import load_graphs

    vgg = _save({f"features.{i}.weight": torch.zeros(1) for i in range(3)}, tmp_path / "vgg16.pth")
    out = tmp_path / "bundle"
    assert main(["export", "--model", "tlg", "--imgsz", "64", "--backbone-weights", str(vgg), "--out", str(out)]) == 1
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ": warning: " not in ln]
    assert len(err) == 1 and "missing keys: conv1.weight" in err[0] and "unexpected keys: features.0" in err[0], err
    assert not out.exists()
    assert main(["export", "--model", "tlg", "--backbone-weights", str(tmp_path), "--out", str(out)]) == 1
    assert "--backbone-weights" in capsys.readouterr().err

    path, sd = _torchvision_resnet50(tmp_path / "resnet50.pth", seed=5)
    seen = {}

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen["mg"] = load_graphs(*args, **kwargs)
        raise Stop

    monkeypatch.setattr(core, "load_graphs", spy)
    with pytest.raises(Stop):
        main(["export", "--model", "tlg", "--imgsz", "64", "--backbone-weights", str(path), "--out", str(out)])
    own = seen["mg"].model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if not k.startswith("fc."))
