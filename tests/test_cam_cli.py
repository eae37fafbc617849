"""`edgefss pseudo-masks` (offline CAM files) and `edgefss eval --query-pseudo cam` reading them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefss.cam import files, recipe
from edgefss.cam.generator import CamGenerator, encode_prompts
from edgefss.cli import main
from edgefss.eval.datasets import load_dataset
from edgefss.eval.episodes import EpisodeSampler
from edgefss.eval.runner import evaluate
from edgefss.errors import InputError
from edgefss.models.clip_image import load_clip_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
sys.path.insert(0, str(REPO / "tests"))
from _cam_fixtures import pseudo_masks_argv, tiny_clip_files  # noqa: E402


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """A tiny CLIP checkpoint (official keys) with a vocabulary that fits a tiny merges file."""
    return tiny_clip_files(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def images(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp("imgs")
    src = sorted((shared_data / "coco_tiny16" / "images").glob("*.jpg"))[:2]
    (d / "sub").mkdir()
    (d / "a.jpg").write_bytes(src[0].read_bytes())
    (d / "sub" / "b.jpg").write_bytes(src[1].read_bytes())
    (d / "mask.png").write_bytes(b"not an image; .png is not taken by default")
    return d


def test_cli_writes_resumes_and_matches_the_generator(tmp_path, clip_files, images, capsys):
    ckpt, bpe = clip_files
    out = tmp_path / "cams"
    argv = [
        "pseudo-masks",
        "--images",
        str(images),
        "--classes",
        "dog,person",
        "--clip-checkpoint",
        str(ckpt),
        "--clip-bpe",
        str(bpe),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "2 images x 2 classes written" in capsys.readouterr().out
    man = json.loads((out / files.MANIFEST).read_text())
    assert man["class_source"] == "support+background" and man["softmax_classes"][:2] == ["dog", "person"]
    assert man["targets"] == ["dog", "person"] and man["random_init"] is False and man["size"] == 50
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert written == ["a--dog.npy", "a--person.npy", "sub/b--dog.npy", "sub/b--person.npy"]
    # the file holds what the generator computes for that image
    gen = CamGenerator(
        load_clip_image(ckpt),
        encode_prompts(ckpt, man["softmax_classes"], bpe),
        man["softmax_classes"],
        man["class_source"],
    )
    from edgefss.imageio import load_image

    ref = gen(load_image(images / "sub" / "b.jpg"), ["dog", "person"])
    cd = files.CamDir(out)
    np.testing.assert_array_equal(cd.load(images / "sub" / "b.jpg", "person"), ref[1])
    assert ref.max() > 0
    # rerun: nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert main(argv) == 0
    assert "0 images x 2 classes written, 2 already there (resumed)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == mtimes
    # another recipe into the same folder: refused, nothing touched
    assert main(argv[:4] + ["dog"] + argv[5:]) == 1
    assert "another recipe (differs in softmax_classes, targets)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == mtimes


def test_cli_never_overwrites_a_foreign_file_and_checks_inputs(tmp_path, images, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a--cat.npy").write_bytes(b"mine")
    assert main(["pseudo-masks", "--images", str(images), "--classes", "cat", "--out", str(out)]) == 1
    assert "was not made by this command" in capsys.readouterr().err
    assert (out / "a--cat.npy").read_bytes() == b"mine" and not (out / files.MANIFEST).exists()
    assert (
        main(["pseudo-masks", "--images", str(tmp_path / "none"), "--classes", "cat", "--out", str(out)]) == 1
    )
    assert "is not a folder" in capsys.readouterr().err


def test_voc_keyword_uses_the_benchmark_list(tmp_path, images, clip_files):
    out = tmp_path / "v"
    assert (
        main(pseudo_masks_argv(images, "voc", out, clip_files)) == 0
    )
    man = json.loads((out / files.MANIFEST).read_text())
    assert man["class_source"] == "dataset:voc" and man["softmax_classes"] == list(recipe.IMR_VOC_CLASSES)
    assert man["random_init"] is False and len(list(out.glob("a--*.npy"))) == 20
    assert files.CamDir(out).load(images / "a.jpg", "dining table").shape == (50, 50)


class _RecordingPredictor:
    """Records the external query pseudo-masks it gets; predicts them thresholded at 0.5."""

    def __init__(self):
        self.seen = []

    def set_support(self, images, class_names, masks=None):
        self.names = list(dict.fromkeys(class_names))

    def predict(self, query, refine_steps=0, query_pseudo=None):
        from types import SimpleNamespace

        self.seen.append([np.asarray(m) for m in query_pseudo])
        labels = np.zeros(query.shape[:2], np.uint8)
        for i, m in enumerate(query_pseudo):
            labels[np.asarray(m) > 0.5] = i + 1
        return SimpleNamespace(
            mask=labels, present=np.array([bool((m > 0.5).any()) for m in query_pseudo]), classes=self.names
        )


def test_eval_query_pseudo_cam_feeds_the_stretched_files(tmp_path, shared_data, clip_files, capsys):
    data = shared_data / "coco_tiny16"
    ds = load_dataset(data)
    out = tmp_path / "cams"
    assert (
        main(pseudo_masks_argv(data, ",".join(ds.classes), out, clip_files)) == 0
    )
    cd = files.CamDir(out)
    s = EpisodeSampler(ds, way=1, shot=1, seed=0, protocol="fss")
    pred = _RecordingPredictor()
    res = evaluate(pred, ds, s, 3, progress=False, query_pseudo="cam", cam_masks=cd.query_masks)
    assert res["query_pseudo"] == "cam" and len(pred.seen) == 3
    for i, got in enumerate(pred.seen):
        ep = s[i]
        h, w = ds.load_image(ep.query).shape[:2]
        ref = recipe.to_image_size(cd.load(ep.query.image, ep.classes[0]), (h, w))
        assert got[0].shape == (h, w) and np.array_equal(got[0], ref)
    with pytest.raises(InputError, match="--cam-dir"):
        evaluate(pred, ds, s, 1, progress=False, query_pseudo="cam")
    with pytest.raises(InputError, match="holds no pseudo_masks.json"):
        files.CamDir(tmp_path)
    rc = main(
        [
            "eval",
            "--model",
            "tlg",
            "--imgsz",
            "64",
            "--data",
            str(data),
            "--query-pseudo",
            "cam",
            "--episodes",
            "1",
            "--out",
            str(tmp_path / "ev"),
            "--no-progress",
        ]
    )
    assert rc == 1 and "give --cam-dir" in capsys.readouterr().err  # refused before the model loads

