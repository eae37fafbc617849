"""edgefss's CAM generator vs goldens of the released IMR-HSNet generator (official model_clip +
pytorch_grad_cam + generate_cam_voc.py's steps on a tiny seeded CLIP; scripts/goldens/make_cam_goldens.py).

The checkpoint is rebuilt from its seed, its SHA-256 checked against the one the official code was
given, saved as a file and read through edgefss's loaders (image tower AND text tower, official keys).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefss.cam import recipe
from edgefss.cam.generator import CamGenerator
from edgefss.cam.gradient import gradcam_weights
from edgefss.models.clip_image import load_clip_image
from edgefss.text.clip_text import load_clip_text

REPO = Path(__file__).resolve().parents[1]
GOLD = REPO / "tests" / "goldens" / "cam"
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
from cam_weights import SEED, clip_state_dict, edgefss_shapes  # noqa: E402
from make_cam_goldens import sd_sha256  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    gold = dict(np.load(GOLD / "tiny.npz"))
    meta = json.loads((GOLD / "meta.json").read_text())
    sd = clip_state_dict(edgefss_shapes(), SEED)
    assert sd_sha256(sd) == meta["state_dict_sha256"]  # the official code got exactly these tensors
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(sd, path)
    return gold, load_clip_image(path), load_clip_text(path)


def test_text_tower_from_the_same_file_matches_official_text_features(setup):
    gold, _, text_model = setup
    with torch.no_grad():
        t = text_model.encode(torch.from_numpy(gold["ids"])).numpy()
    assert np.abs(t - gold["text"]).max() <= 1e-5


def test_preprocessing_equals_the_official_transform(setup):
    gold = setup[0]
    for i in range(2):
        assert np.array_equal(recipe.preprocess(gold[f"image{i}"], 96), gold["x"][i])


def test_softmax_weights_and_cams_equal_the_official_generator(setup):
    gold, image_model, _ = setup
    classes = [str(c) for c in gold["classes"]]
    gen = CamGenerator(image_model, torch.from_numpy(gold["text"]), classes, recipe.SOURCE_GIVEN)
    for i in range(2):
        x = torch.from_numpy(gold["x"][i])[None]
        targets = torch.from_numpy(gold["targets"][i])[None]
        with torch.no_grad():
            y = image_model(x)
            probs = (100 * torch.nn.functional.normalize(y, dim=-1) @ gen.text.t()).softmax(-1)[0].numpy()
            w = gradcam_weights(image_model.attnpool, image_model.features(x), gen.text, targets)[0].numpy()
        assert np.abs(probs - gold["probs"][i]).max() <= 1e-5
        wg = gold["weights"][i]
        assert (np.abs(w - wg).max(axis=1) / np.abs(wg).max(axis=1)).max() <= 2e-5
        masks = gen(gold[f"image{i}"], [classes[t] for t in gold["targets"][i]])
        assert np.abs(masks - gold["cam50"][i]).max() <= 1e-5
        assert gold["cam50"][i].max() > 0.9
