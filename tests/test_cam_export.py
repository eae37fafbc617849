"""`edgefss export --model tlg --pseudo cam` end to end (CLI flags, core hook, manifest, Segmenter)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefss.cli import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
from cam_weights import SEED, clip_state_dict, edgefss_shapes  # noqa: E402


@pytest.mark.slow
def test_export_pseudo_cam_writes_a_verified_cam_graph_the_segmenter_uses(tmp_path, shared_data):
    from edgefss.imageio import load_image
    from edgefss.runtime import Segmenter
    from edgefss.text.tokenizer import ClipTokenizer

    bpe = tmp_path / "tiny_vocab.txt.gz"
    bpe.write_bytes(gzip.compress(b"#version: 0.2\np h\no t\nph o\nd o\n"))
    shapes = edgefss_shapes()
    shapes["token_embedding.weight"] = (ClipTokenizer(bpe).vocab_size, shapes["token_embedding.weight"][1])
    torch.save(clip_state_dict(shapes, SEED), tmp_path / "rn50_tiny.pt")
    out = tmp_path / "bundle"
    rc = main(
        [
            "export",
            "--model",
            "tlg",
            "--imgsz",
            "64",
            "--verify-episodes",
            "1",
            "--out",
            str(out),
            "--pseudo",
            "cam",
            "--cam-classes",
            "voc",
            "--cam-checkpoint",
            str(tmp_path / "rn50_tiny.pt"),
            "--clip-bpe",
            str(bpe),
        ]
    )
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    p = m["pseudo"]
    assert p["kind"] == "cam" and p["classes"] == "voc" and p["class_source"] == "dataset:voc"
    assert p["verification"]["onnxruntime_fp32"]["passed"] and p["random_init"] is False
    assert {"cam.onnx", "cam_text.npz"} <= set(m["files"])
    seg = Segmenter.load(out)
    img = load_image(shared_data / "coco_tiny16" / "images" / "000000318219.jpg")
    seg.set_support([img], ["person"])
    ref = seg.cam.query_masks(img, ["person"], img.shape[:2])
    assert np.array_equal(seg.predict(img).mask, seg.predict(img, query_pseudo=ref).mask)
