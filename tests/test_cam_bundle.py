"""The CAM generator as a bundle graph: ONNX export verified against PyTorch, and a torch-blocked
Segmenter whose TLG query pseudo-masks come from the class name (runtime/cam.py)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefss.cam import recipe
from edgefss.cam.generator import CamGenerator, encode_prompts
from edgefss.errors import InputError
from edgefss.exporters.cam_graph import stage_cam_generator
from edgefss.models.clip_image import load_clip_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
sys.path.insert(0, str(REPO / "tests"))
from cam_weights import SEED, clip_state_dict, edgefss_shapes  # noqa: E402
from test_runtime import CLASSES, _tlg_graphs  # noqa: E402

MERGES = [("p", "h"), ("o", "t"), ("ph", "o"), ("d", "o")]


def _image(shared_data, name, size):
    import cv2

    from edgefss.imageio import load_image

    img = load_image(shared_data / "coco_tiny16" / "images" / name)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def cam_bundle(tmp_path_factory, shared_data):
    import gzip

    from _bundles import write_bundle
    from edgefss.text.table import RANDOM_SOURCE, TextTable
    from edgefss.text.tokenizer import ClipTokenizer

    d = tmp_path_factory.mktemp("cam")
    bpe = d / "tiny_vocab.txt.gz"
    bpe.write_bytes(
        gzip.compress(("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n").encode())
    )
    shapes = edgefss_shapes()
    shapes["token_embedding.weight"] = (ClipTokenizer(bpe).vocab_size, shapes["token_embedding.weight"][1])
    ckpt = d / "tiny_clip.pt"
    torch.save(clip_state_dict(shapes, SEED), ckpt)
    imgs = [
        _image(shared_data, "000000318219.jpg", (120, 90)),
        _image(shared_data, "000000554625.jpg", (90, 120)),
    ]
    rng = np.random.default_rng(0)
    graphs, io = _tlg_graphs(rng)
    logs = []

    def extra(w, manifest):
        unit = rng.standard_normal((len(CLASSES), 512)).astype(np.float32)
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        TextTable(np.array(CLASSES), unit, unit, unit, RANDOM_SOURCE).save(w.path("text_table.npz"))
        manifest["text_table"] = {"file": "text_table.npz", "source": RANDOM_SOURCE}
        manifest["pseudo"] = stage_cam_generator(
            ckpt, bpe, "support+background", CLASSES, d / "work", w, imgs[:1], logs.append
        )

    (d / "work").mkdir()
    bundle = write_bundle(d / "bundle", "tlg", graphs, io, 32, extra=extra)
    return bundle, ckpt, bpe, imgs, logs


def test_export_verifies_the_graph_and_records_the_recipe(cam_bundle):
    import json

    bundle, *_, logs = cam_bundle
    m = json.loads((bundle / "manifest.json").read_text())["pseudo"]
    assert (
        m["kind"] == "cam"
        and m["class_source"] == "support+background"
        and m["classes"] == "support+background"
    )
    ver = m["verification"]["onnxruntime_fp32"]
    assert ver["passed"] and ver["max_abs"] <= 1e-5 and ver["raw_rel"] <= 1e-5 and ver["maps"] == 6
    assert ver["ref_max"] > 0.5  # the check compared real maps, not all-zero ones
    assert m["inputs"]["cam_text"]["shape"] == ["K", 32] and m["outputs"]["cam"]["shape"] == [1, "M", 3, 3]
    assert any("verification cam onnxruntime vs PyTorch" in line for line in logs)
    assert (bundle / "cam.onnx").is_file() and (bundle / "cam_text.npz").is_file()


def test_torch_blocked_segmenter_makes_query_pseudo_masks_from_the_class_name(cam_bundle, tmp_path):
    bundle, ckpt, bpe, imgs, _ = cam_bundle
    support, query = imgs
    names, _ = recipe.softmax_classes(["dog", "person"], "support+background")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = CamGenerator(
            load_clip_image(ckpt), encode_prompts(ckpt, names, bpe), names, recipe.SOURCE_SUPPORT_BG
        )
    ref = np.stack([recipe.to_image_size(m, query.shape[:2]) for m in gen(query, ["dog", "person"])])
    assert ref.max() > 0.5
    np.save(tmp_path / "support.npy", support)
    np.save(tmp_path / "query.npy", query)
    np.save(tmp_path / "ref.npy", ref)
    code = f"""
import sys
sys.modules['torch'] = None
import numpy as np
from edgefss.runtime import Segmenter
d = {str(tmp_path)!r}
seg = Segmenter.load({str(bundle)!r})
assert seg.cam is not None
s, q, ref = (np.load(f"{{d}}/{{n}}.npy") for n in ("support", "query", "ref"))
got = np.stack(seg.cam.query_masks(q, ["dog", "person"], q.shape[:2]))
assert np.abs(got - ref).max() <= 1e-5, np.abs(got - ref).max()
seg.set_support([s, s], ["dog", "person"])
cam = seg.predict(q)
given = seg.predict(q, query_pseudo=list(ref))
zeros = seg.predict(q, query_pseudo=[np.zeros(q.shape[:2], np.float32)] * 2)
assert np.array_equal(cam.mask, given.mask)
assert not np.array_equal(cam.mask, zeros.mask)
assert 'torch' not in {{k for k, v in sys.modules.items() if v is not None}}
print("OK", int((cam.mask > 0).sum()))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_runtime_names_a_class_without_a_shipped_text_feature(cam_bundle):
    from edgefss.bundle import read_manifest
    from edgefss.runtime.cam import CamPseudo

    bundle = cam_bundle[0]
    cp = CamPseudo(read_manifest(bundle), bundle)
    assert cp.masks(cam_bundle[3][0], ["cat"]).shape == (1, 50, 50)
    with pytest.raises(
        InputError, match="no CLIP RN50 text feature in this bundle for \\['zebra crossing'\\]"
    ):
        cp.masks(cam_bundle[3][0], ["zebra crossing"])


def test_export_options_for_pseudo():
    from edgefss.exporters.options import resolve

    assert resolve(model="tlg").pseudo == "prior"
    assert resolve(model="tlg", pseudo="cam", cam_classes="voc").cam_classes == "voc"
    with pytest.raises(InputError, match="--pseudo cam only applies to --model tlg"):
        resolve(model="cst", pseudo="cam")
    with pytest.raises(InputError, match="only apply with --pseudo cam"):
        resolve(model="tlg", cam_classes="voc")
    with pytest.raises(InputError, match="--pseudo 'x'"):
        resolve(model="tlg", pseudo="x")


def test_export_leaves_the_tower_in_eval_mode(tmp_path):
    """torch.onnx.export restores the wrapper's mode onto the tower it shares with the PyTorch
    reference; a train-mode wrapper would leave BatchNorm using batch statistics afterwards."""
    from edgefss.exporters.cam_graph import export_cam_graph
    from edgefss.models.clip_image import ClipImageConfig, ClipImageModel

    m = ClipImageModel(ClipImageConfig(layers=(1, 1, 1, 1), width=8, heads=4, output_dim=16,
                                       input_resolution=64)).eval()
    export_cam_graph(m, tmp_path / "cam.onnx")
    assert not any(x.training for x in m.modules())
