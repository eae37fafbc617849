"""IMR-HSNet export (stages unrolled into the head graph) and a torch-blocked Segmenter that segments
with given CAM pseudo-masks through the bundle; the VGG16 / 3-stage export options and their refusal
for other models (64 px, random weights: the toolchain is under test;
the model's parity with the released code is tests/test_imr_golden.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
S = 64


def _soft(mask: np.ndarray) -> np.ndarray:
    """A CAM-like soft map from a {0,1} mask (box blur, / max): a stand-in for a CLIP Grad-CAM."""
    import cv2

    m = cv2.blur(mask.astype(np.float32), (31, 31))
    return (m / max(float(m.max()), 1e-7)).astype(np.float32)


def _block_mean(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    rows = (np.arange(S) * h // S).clip(0, h - 1)  # nearest, as cv2 INTER_NEAREST: floor(i * h / S)
    cols = (np.arange(S) * w // S).clip(0, w - 1)
    return mask.astype(np.float64)[rows][:, cols].reshape(S // 8, 8, S // 8, 8).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_data):
    from edgefss.exporters import export

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("imr_export") / "bundle"
    logs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model="imr_hsnet", imgsz=S, out=str(out), verify_episodes=1, log=logs.append)
    return out, logs


def test_export_unrolls_the_stages_and_verifies_against_pytorch(bundle):
    onnx = pytest.importorskip("onnx")
    out, _ = bundle
    man = json.loads((out / "manifest.json").read_text())
    assert man["model"] == "imr_hsnet" and man["pseudo_mask"]["stages"] == 2
    head = man["graphs"]["head"]
    assert head["input_names"][-2:] == ["query_pseudo", "support_pseudo"]
    assert head["inputs"]["query_pseudo"]["shape"] == ["B", 1, S // 8, S // 8]
    ver = man["verification"]["onnxruntime_fp32"]
    assert ver["passed"], ver
    # two stages x two branches of the 4D learner: the first center-pivot conv appears 4 times,
    # with ONE shared weight initialiser
    g = onnx.load(str(out / "head.onnx"))
    conv_w = [n.input[1] for n in g.graph.node if n.op_type == "Conv"]
    first = "model.hpn_learner.encoder_layer4.0.conv1.weight"
    assert conv_w.count(first) == 4, sorted(set(conv_w))[:5]
    assert sum(i.name == first for i in g.graph.initializer) == 1


def test_torch_blocked_segmenter_uses_the_given_pseudo_masks(bundle, shared_data, tmp_path):
    """Segmenter (torch blocked) with a support mask and a soft query CAM: its logits equal the
    PyTorch model's head on the same preprocessed images and gridded CAMs (<= 1e-4 of scale), a
    different query CAM changes them, and a missing CAM is one clear error."""
    from edgefss.bundle import read_manifest
    from edgefss.config import PreprocessCfg
    from edgefss.imageio import load_image, load_mask
    from edgefss.models import build_model
    from edgefss.runtime.imr import IMRAdapter
    from edgefss.transforms import normalize, resize_image

    out, _ = bundle
    d = shared_data / "coco_tiny16"
    s_img, q_img = (load_image(d / "images" / n) for n in ("000000318219.jpg", "000000554625.jpg"))
    s_mask = load_mask(d / "masks" / "person" / "000000318219.png")
    q_cam = _soft(load_mask(d / "masks" / "person" / "000000554625.png"))
    np.save(tmp_path / "q_cam.npy", q_cam)
    code = f"""
import sys
sys.modules['torch'] = None
import numpy as np
from edgefss.errors import InputError
from edgefss.runtime import Segmenter
d = {str(tmp_path)!r}
data = {str(d)!r}
seg = Segmenter.load({str(out)!r})
try:
    seg.set_support([data + "/images/000000318219.jpg"], ["person"])
    raise SystemExit("no error without a support pseudo-mask")
except InputError as e:
    assert "pseudo-mask" in str(e), e
seg.set_support([data + "/images/000000318219.jpg"], ["person"], masks=[data + "/masks/person/000000318219.png"])
q = data + "/images/000000554625.jpg"
try:
    seg.predict(q)
    raise SystemExit("no error without a query pseudo-mask")
except InputError as e:
    assert "query_pseudo" in str(e), e
cam = np.load(d + "/q_cam.npy")
p = seg.predict(q, query_pseudo=[cam])
p0 = seg.predict(q, query_pseudo=[1.0 - cam])
np.save(d + "/logits.npy", p.logits)
np.save(d + "/logits_inv.npy", p0.logits)
assert 'torch' not in {{k for k, v in sys.modules.items() if v is not None}}
print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr

    # the same inputs through the PyTorch model (same seed as the export's random init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("imr_hsnet", imgsz=S).eval()
    cfg = PreprocessCfg(imgsz=S)
    x = [torch.from_numpy(normalize(resize_image(i, S), cfg)) for i in (q_img, s_img)]
    ad = IMRAdapter(read_manifest(out), out)
    sc, qc = ad.network_mask(s_mask), ad.network_mask(q_cam)
    # the grid map is the 8x8 block mean of the nearest-resized mask: an independent check of it
    assert np.allclose(sc, _block_mean(s_mask), atol=1e-6)
    with torch.no_grad():
        ref = m.head(m.encode(x[0]), m.encode(x[1]), torch.from_numpy(qc)[None, None],
                     torch.from_numpy(sc)[None, None])["query_logits"][0].numpy()
    got = np.load(tmp_path / "logits.npy")[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), np.abs(got - ref).max()
    # the query CAM is used: the inverted CAM moves the logits far beyond that tolerance
    assert np.abs(np.load(tmp_path / "logits_inv.npy")[0] - got).max() > 1e-2 * np.abs(ref).max()


@pytest.fixture(scope="module")
def vgg_bundle(tmp_path_factory, shared_data):
    """VGG16 backbone, 3 stages (the COCO setting) through `--imr-backbone` / `--imr-stages`."""
    from edgefss.exporters import export

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("imr_vgg_export") / "bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model="imr_hsnet", imgsz=S, out=str(out), verify_episodes=1, imr_backbone="vgg16", imr_stages=3,
               log=lambda *_: None)
    return out


def test_vgg16_three_stage_export_verifies_and_segments_with_given_pseudo_masks(vgg_bundle, shared_data):
    """The backbone/stage options reach the model: the manifest records VGG16 and 3 stages, the
    encoder has VGG16's 7 pyramid maps, the head holds 3 stages x 2 branches of the 4D learner, the
    FP32 check passed, and the Segmenter's logits with a given support mask and query CAM equal the
    PyTorch VGG16 3-stage model's head (<= 1e-4 of scale)."""
    onnx = pytest.importorskip("onnx")
    from edgefss.config import PreprocessCfg
    from edgefss.imageio import load_image, load_mask
    from edgefss.models import build_model
    from edgefss.runtime import Segmenter
    from edgefss.transforms import normalize, resize_image

    out = vgg_bundle
    man = json.loads((out / "manifest.json").read_text())
    assert man["variant"] == "vgg16" and man["pseudo_mask"]["stages"] == 3
    assert (man["export_options"]["imr_backbone"], man["export_options"]["imr_stages"]) == ("vgg16", 3)
    assert man["graphs"]["encoder"]["output_names"] == [f"feat_{i:02d}" for i in range(7)]
    ver = man["verification"]["onnxruntime_fp32"]
    assert ver["passed"], ver
    g = onnx.load(str(out / "head.onnx"))
    conv_w = [n.input[1] for n in g.graph.node if n.op_type == "Conv"]
    assert conv_w.count("model.hpn_learner.encoder_layer4.0.conv1.weight") == 6

    d = shared_data / "coco_tiny16"
    s_path, q_path = (d / "images" / n for n in ("000000318219.jpg", "000000554625.jpg"))
    s_mask = load_mask(d / "masks" / "person" / "000000318219.png")
    q_cam = _soft(load_mask(d / "masks" / "person" / "000000554625.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        seg = Segmenter.load(str(out))
    seg.set_support([str(s_path)], ["person"], masks=[s_mask])
    got = seg.predict(str(q_path), query_pseudo=[q_cam]).logits[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("imr_hsnet", imgsz=S, backbone="vgg16", stages=3).eval()
    assert m.cfg.stages == 3
    cfg = PreprocessCfg(imgsz=S)
    xq, xs = (torch.from_numpy(normalize(resize_image(load_image(p), S), cfg)) for p in (q_path, s_path))
    sc = torch.from_numpy(_block_mean(s_mask).astype(np.float32))[None, None]
    qc = torch.from_numpy(_block_mean(q_cam).astype(np.float32))[None, None]
    with torch.no_grad():
        ref = m.head(m.encode(xq), m.encode(xs), qc, sc)["query_logits"][0].numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), np.abs(got - ref).max()


def test_imr_backbone_and_stages_are_refused_for_other_models():
    from edgefss.errors import InputError
    from edgefss.exporters import export
    from edgefss.exporters.options import resolve

    assert (resolve(model="imr_hsnet", imr_backbone="vgg16", imr_stages=3).imr_stages) == 3
    for model in ("tlg", "cst"):
        with pytest.raises(InputError, match=f"only apply to --model imr_hsnet, not --model {model}"):
            resolve(model=model, imr_stages=3)
    with pytest.raises(InputError, match="not --model diffews"):
        export(model="diffews", imr_backbone="vgg16")
    with pytest.raises(InputError, match="--imr-backbone 'vgg19'; expected 'resnet50' or 'vgg16'"):
        resolve(model="imr_hsnet", imr_backbone="vgg19")
    with pytest.raises(InputError, match="--imr-stages 0; expected an int >= 1"):
        resolve(model="imr_hsnet", imr_stages=0)
