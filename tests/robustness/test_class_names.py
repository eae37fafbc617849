"""One class, one name (issue 14, class 6): 'dog', 'Dog', 'dog ' are one class everywhere (the
runtime's support set, the TLG text table, the CLI), shown as first spelt; the TLG vocabulary
built from a calibration folder holds no layout-folder names ('images', 'masks')."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgefss.runtime import Segmenter


@pytest.fixture(scope="module")
def imgs():
    r = np.random.default_rng(5)
    out = []
    for k in range(3):
        img = (r.random((40, 56, 3)) * 90).astype(np.uint8)
        img[8 + k: 30, 10: 40 - k] += 150
        out.append(img)
    return out


@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_spellings_of_one_class_are_one_class(cst_bundle, tlg_bundle, imgs, model):
    seg = Segmenter.load(cst_bundle if model == "cst" else tlg_bundle)
    seg.set_support(imgs, ["dog", "Dog", " dog "])
    assert seg.classes == ["dog"]
    got = seg.predict(imgs[0])
    seg.set_support(imgs, ["dog", "dog", "dog"])  # the reference: one name, three shots
    ref = seg.predict(imgs[0])
    assert got.classes == ["dog"] and got.mask.max() <= 1
    assert np.array_equal(got.mask, ref.mask) and np.allclose(got.probs, ref.probs)


def test_first_spelling_is_shown_collapsed(cst_bundle, imgs):
    seg = Segmenter.load(cst_bundle)
    seg.set_support(imgs, ["Golden  Retriever ", "golden retriever", "cat"])
    assert seg.classes == ["Golden Retriever", "cat"]
    assert seg.predict(imgs[1]).mask.max() <= 2


def test_tlg_text_rows_are_shared_by_spellings(tlg_bundle):
    from edgefss.text.table import TextTable

    t = TextTable.load(tlg_bundle / "text_table.npz")
    assert t.index("dog") == t.index("Dog") == t.index(" dog  ") == t.index("DOG")


def test_cli_support_spellings_make_one_class(cst_bundle, imgs, tmp_path, capsys):
    from edgefss.cli import main

    paths = []
    for i, img in enumerate(imgs):
        paths.append(tmp_path / f"s{i}.png")
        Image.fromarray(img).save(paths[-1])
    out = tmp_path / "m.png"
    assert main(["predict", "--bundle", str(cst_bundle), "--support", f"{paths[0]}:dog", f"{paths[1]}:Dog ",
                 "--query", str(paths[2]), "--out", str(out)]) == 0
    with Image.open(out) as im:  # one class: a 0/255 mask, not a 2-class palette
        assert im.mode == "L"


def test_calibration_layout_folders_are_not_classes(tmp_path):
    from edgefss.quant.episodes import find_episodes

    r = np.random.default_rng(0)
    for cls in ("pets", "cars"):
        for sub in ("images", "masks"):
            (tmp_path / cls / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((r.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / cls / "images" / f"{i}.jpg")
            Image.fromarray(((r.random((32, 32)) > 0.5) * 255).astype(np.uint8)).save(tmp_path / cls / "masks" / f"{i}.png")
    eps = find_episodes([tmp_path], 6, shots=1)
    assert {e.cls for e in eps} == {"pets", "cars"}
    for e in eps:  # images are images, masks are their masks
        for s in (*e.support, e.query):
            assert s.image.parent.name == "images" and s.mask is not None and s.mask.parent.name == "masks"
            assert s.mask.stem == s.image.stem
