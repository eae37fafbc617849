"""`edgefss label` (tiny DiffewS teacher) -> `edgefss train --data` -> `edgefss export`, on shared images.

The label folder must be the layout train and eval read (index.csv), resumable, refuse foreign or
differently-made folders, and take the CST pseudo-mask for a support given without a mask."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from edgefss.cli import main
from edgefss.errors import InputError

TINY = ["--config", "tiny", "--imgsz", "64", "--cst-imgsz", "64", "--no-progress"]


@pytest.fixture
def dog(shared_data, tmp_path):
    d = shared_data / "davis2016_val_subset" / "dog"
    imgs = sorted((d / "images").iterdir())
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in imgs[2:6]:
        os.symlink(p, folder / p.name)  # the shared data is read, never copied
    sup = ["--support", f"{imgs[0]}:dog", f"{imgs[1]}:dog", "--support-mask", f"{imgs[0]}:{d / 'masks' / '00000.png'}"]
    return folder, sup, [p.name for p in imgs[2:6]]


@pytest.mark.slow  # label + train + export: ~50 s on the shared 2-core machine
def test_label_train_export_chain(dog, tmp_path, capsys):
    from edgefss.eval.datasets import detect_kind, load_dataset
    from edgefss.train.records import find_records

    folder, sup, names = dog
    out = tmp_path / "labels"
    assert main(["label", *sup, "--images", str(folder), "--out", str(out), *TINY]) == 0
    man = json.loads((out / "label_manifest.json").read_text())
    assert man["teacher"] == "diffews" and man["thresholds"] == {"r_threshold": 0.25, "cst_pseudo_threshold": 0.4}
    assert [s["mask"] for s in man["supports"]][1] == "cst-pseudo-mask"  # no --support-mask: CST pseudo-mask
    recs = find_records(out)  # what `edgefss train --data` reads
    assert sorted(os.path.basename(r.image) for r in recs) == sorted(names) and {r.cls for r in recs} == {"dog"}
    for r in recs:
        m = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(r.mask))
        assert m.shape == (480, 854) and set(np.unique(m)) <= {0, 255}  # the image's own size, 0/255
    assert detect_kind(out) == "coco_tiny" and len(load_dataset(out)) == 4  # and `edgefss eval --data`
    run = tmp_path / "run"
    assert main(["train", "--model", "cst", "--sup", "mask", "--data", str(out), "--imgsz", "64", "--epochs", "1",
                 "--episodes", "4", "--batch-size", "2", "--out", str(run), "--cache-mb", "64"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", "cst", "--checkpoint", str(run / "model.pt"), "--imgsz", "64",
                 "--out", str(bundle), "--verify-episodes", "1"]) == 0
    bm = json.loads((bundle / "manifest.json").read_text())
    assert bm["weights"]["checkpoint"] == str(run / "model.pt") and bm["verification"]["onnxruntime_fp32"]["passed"]


def test_label_resumes_and_refuses_other_folders(dog, tmp_path, capsys):
    folder, sup, names = dog
    out = tmp_path / "labels"
    sup = sup[:2] + sup[3:]  # one masked support: no CST needed
    assert main(["label", *sup, "--images", str(folder), "--out", str(out), *TINY]) == 0
    first = {p.name: p.read_bytes() for p in (out / "masks" / "dog").iterdir()}
    assert sorted(first) == sorted(n.replace(".jpg", ".png") for n in names)
    (out / "masks" / "dog" / min(first)).unlink()
    capsys.readouterr()
    assert main(["label", *sup, "--images", str(folder), "--out", str(out), *TINY]) == 0
    assert "1 masks written, 3 already there" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "masks" / "dog").iterdir()} == first  # same teacher, same masks
    # other settings than the manifest's: refused, nothing touched
    assert main(["label", *sup, "--images", str(folder), "--out", str(out), *TINY, "--r-threshold", "0.5"]) == 1
    assert "thresholds differ" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["label", *sup, "--images", str(folder), "--out", str(foreign), *TINY]) == 1
    assert "was not written by `edgefss label`" in capsys.readouterr().err
    assert main(["label", "--support", f"{folder}/nope.jpg:dog", "--images", str(folder), "--out",
                 str(tmp_path / "x"), *TINY]) == 1
    assert "--support: " in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_teacher_computes_each_class_support_pass_once(shared_data):
    """Images outer, classes inner: the support bank of each class is made once, not per image."""
    import warnings

    import torch

    from edgefss.imageio import load_image
    from edgefss.models import build_model
    from edgefss.teacher.labeler import DiffewSTeacher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = DiffewSTeacher(build_model("diffews", config="tiny", imgsz=64))
    calls = []
    real = t.model.support_bank
    t.model.support_bank = lambda lat: calls.append(lat.shape) or real(lat)
    imgs = sorted((shared_data / "davis2016_val_subset" / "dog" / "images").iterdir())[:3]
    rgb = [load_image(p) for p in imgs]
    shots = {"dog": [(rgb[0], np.ones((8, 8), np.uint8))], "cat": [(rgb[1], np.zeros((8, 8), np.uint8))]}
    out = {(i, c): t.segment(rgb[i], shots[c]) for i in (1, 2) for c in ("dog", "cat")}
    assert calls == [torch.Size([1, 8, 8, 8])] * 2
    assert out[(1, "dog")].shape == rgb[1].shape[:2] and out[(1, "dog")].dtype == bool


def _err_lines(err: str) -> list:
    return [ln for ln in err.splitlines() if ": error: " in ln]


def test_unreadable_image_is_skipped_listed_and_retried(dog, tmp_path, capsys):
    """A corrupt file among the images: the others are labelled, it gets a warning line, the run
    exits 1 naming it, index.csv leaves it out, and a re-run retries only it."""
    folder, sup, names = dog
    sup = sup[:2] + sup[3:]
    (folder / "zzz.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "labels"
    assert main(["label", *sup, "--images", str(folder), "--out", str(out), *TINY]) == 1
    cap = capsys.readouterr()
    assert sorted(p.name for p in (out / "masks" / "dog").iterdir()) == sorted(n.replace(".jpg", ".png") for n in names)
    warn = [ln for ln in cap.err.splitlines() if ": warning: " in ln and "RANDOMLY" not in ln]
    assert len(warn) == 1 and "zzz.jpg" in warn[0] and warn[0].endswith("; skipped"), cap.err
    err = _err_lines(cap.err)
    assert len(err) == 1 and "--images" in err[0] and "zzz.jpg" in err[0] and "Traceback" not in cap.err, cap.err
    assert "zzz" not in (out / "index.csv").read_text() and len((out / "index.csv").read_text().splitlines()) == 5
    assert main(["label", *sup, "--images", str(folder), "--out", str(out), *TINY]) == 1
    assert "0 masks written, 4 already there" in capsys.readouterr().out


def test_bad_support_mask_and_out_fail_before_writing(dog, tmp_path, capsys):
    from PIL import Image

    folder, sup, _ = dog
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(small)
    img = sup[1].rsplit(":", 1)[0]
    out = tmp_path / "labels"
    assert main(["label", "--support", f"{img}:dog", "--support-mask", f"{img}:{small}", "--images", str(folder),
                 "--out", str(out), *TINY]) == 1
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and "--support-mask" in err[0] and "12x10" in err[0] and "854x480" in err[0], err
    assert not out.exists()  # nothing written: a corrected re-run is not refused as "other settings"
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for bad in (afile, afile / "labels"):
        assert main(["label", *sup[:2], *sup[3:], "--images", str(folder), "--out", str(bad), *TINY]) == 1
        cap = capsys.readouterr()
        err = _err_lines(cap.err)
        assert len(err) == 1 and "--out" in err[0] and "is a file" in err[0] and "Traceback" not in cap.err, cap.err
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("cls", ["..", ".", " "])
def test_class_name_that_is_no_folder_is_refused(dog, tmp_path, capsys, cls):
    """masks/<class>/ must stay inside --out: '..' would put masks next to index.csv."""
    from edgefss.teacher.labeler import Support, label

    folder, sup, _ = dog
    img, mask = sup[1].rsplit(":", 1)[0], sup[4].rsplit(":", 1)[1]
    with pytest.raises(InputError, match="class name"):
        label(None, [Support(img, cls, mask)], folder, tmp_path / "labels", {})
    assert not (tmp_path / "labels").exists()
