"""`edgefss train --cam-dir`: TLG training episodes take the CAM files of `edgefss pseudo-masks`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefss.cam import files
from edgefss.cli import main
from edgefss.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cam_fixtures import pseudo_masks_argv, tiny_clip_files  # noqa: E402


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    return tiny_clip_files(tmp_path_factory.mktemp("clip"))


def test_train_reads_the_cam_files_as_tlg_pseudo_masks(tmp_path, shared_data, clip_files):
    """`edgefss train --cam-dir`: episodes carry the CAM maps (resized to S x S over the whole image)
    and the TLG step feeds them to the model instead of the prior; dataset of symlinks kept as named."""
    from edgefss.models import build_model
    from edgefss.train.episodes import EpisodeDataset
    from edgefss.train.loop import TrainCfg, _collate, _step, _TextLookup
    from edgefss.train.records import find_records
    from edgefss.transforms import resize_prob

    root = tmp_path / "data"
    recs = [r for r in find_records(shared_data / "davis2016_val_subset") if r.cls in ("dog", "cow")]
    for cls in ("dog", "cow"):
        (root / cls).mkdir(parents=True)
        for i, r in enumerate([r for r in recs if r.cls == cls][:2]):
            os.symlink(r.image, root / cls / f"{i}.jpg")
            os.symlink(r.mask, root / cls / f"{i}.png")
    cams = tmp_path / "cams"
    assert (
        main(pseudo_masks_argv(root, "dog,cow", cams, clip_files)) == 0
    )
    cd = files.CamDir(cams)
    ds = EpisodeDataset(find_records(root), length=2, imgsz=64, seed=0, pseudo=cd.load)
    item = ds[0]
    assert item["query_pseudo"].shape == (1, 64, 64) and item["support_pseudo"].shape == (1, 1, 64, 64)
    cands = [
        resize_prob(cd.load(r.image, item["cls_name"]), (64, 64))
        for r in find_records(root)
        if r.cls == item["cls_name"]
    ]
    assert any(np.array_equal(item["query_pseudo"][0].numpy(), c) for c in cands)
    batch = _collate([ds[0], ds[1]])
    cfg = TrainCfg(model="tlg", sup="mask")
    torch.manual_seed(0)
    model = build_model("tlg", imgsz=64).eval()
    text = _TextLookup(ds.classes, None)
    with torch.no_grad():
        loss, _ = _step(cfg, model, batch, text)
        out = model(
            batch["query"],
            batch["support"][:, 0],
            text(batch["cls_name"]),
            batch["query_pseudo"],
            batch["support_pseudo"][:, 0],
        )
        prior = model(batch["query"], batch["support"][:, 0], text(batch["cls_name"]))
    from edgefss.train.losses import tlg_loss

    assert float(loss) == float(tlg_loss(out, batch, "mask")[0])
    assert not torch.equal(out["query_logits"], prior["query_logits"])
    with pytest.raises(InputError, match="TLG option"):
        from edgefss.train.loop import train

        train(TrainCfg(model="cst", cam_dir=str(cams), out=str(tmp_path / "t")), find_records(root))
