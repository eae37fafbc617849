"""`edgefss export --model tlg --text-encoder` end to end (CLI -> bundle -> Segmenter with a new name).

Slow (~80 s on a loaded 2-core machine: the random-weight TLG export itself at 64 px); the tower is
the tiny one of tests/test_open_vocab.py, so its share is a few seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from test_open_vocab import TABLE_CLASSES, UNSEEN, clip_files, images  # noqa: F401  (fixtures)


@pytest.mark.slow
def test_export_cli_text_encoder_then_any_name(clip_files, images, tmp_path, monkeypatch):  # noqa: F811
    from edgefss.cli import main
    from edgefss.runtime import Segmenter

    bpe, ckpt, _ = clip_files
    out = tmp_path / "tlg_te"
    monkeypatch.setenv("EDGEFSS_TEXT_CACHE", "off")
    assert main(["export", "--model", "tlg", "--imgsz", "64", "--verify-episodes", "1", "--clip-checkpoint",
                 str(ckpt), "--clip-bpe", str(bpe), "--text-encoder", "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    te = man["text_encoder"]
    assert te["precision"] == "fp32" and te["verification"]["onnxruntime_fp32"]["passed"]
    for f in (te["file"], te["bpe"], te["background"]):
        assert f in man["files"]
    assert man["export_options"]["text_encoder"] == "fp32"
    assert (out / "clip_bpe.txt.gz").read_bytes() == bpe.read_bytes()
    with Segmenter.load(out) as seg:
        v = seg.vocabulary()
        assert v.any_name and v.tower == "fp32" and set(TABLE_CLASSES) <= set(v.table)
        seg.set_support([np.load(images[0])], [UNSEEN])
        p = seg.predict(np.load(images[1]))
        assert p.classes == [UNSEEN] and np.isfinite(p.logits).all()
        assert seg.adapter.text.entry(UNSEEN).origin == "tower"
