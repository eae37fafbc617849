"""edgefss.cam: the Grad-CAM gradient as a forward computation vs torch.autograd, the generator vs a
direct autograd Grad-CAM (pytorch_grad_cam's steps), and the recipe's class lists and quirks."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefss.cam import recipe
from edgefss.cam.generator import CamGenerator, build_cam_generator
from edgefss.cam.gradient import gradcam, gradcam_weights, layer4_gradient
from edgefss.errors import InputError
from edgefss.models.clip_image import ClipImageConfig, ClipImageModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
from cam_weights import SEED, clip_state_dict, edgefss_shapes  # noqa: E402

CFG = ClipImageConfig(layers=(2, 1, 1, 2), width=8, heads=4, output_dim=32, input_resolution=96)


def _random_model(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClipImageModel(CFG).eval()


def _calibrated_model():
    """Seeded weights with every BN/bias perturbed (scripts/goldens/cam_weights.py) and text features
    from the same checkpoint's layout: a softmax far from saturation."""
    sd = clip_state_dict(edgefss_shapes(), SEED)
    m = ClipImageModel(CFG).eval()
    m.load_state_dict({k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")})
    return m


def _text(k=6, d=32, seed=1, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g)
    t = base + spread * torch.randn(k, d, generator=g)
    return torch.nn.functional.normalize(t, dim=-1)


def _autograd_grad(model, x, text, targets):
    """d softmax(100 cos)[target] / d layer-4 output by torch.autograd, per (image, target)."""
    x4 = model.features(x).detach().requires_grad_(True)
    y = model.pool(x4)
    probs = (100.0 * torch.nn.functional.normalize(y, dim=-1) @ text.t()).softmax(-1)
    out = torch.zeros((x.shape[0], targets.shape[1]) + x4.shape[1:])
    for b in range(x.shape[0]):
        for m in range(targets.shape[1]):
            (g,) = torch.autograd.grad(probs[b, targets[b, m]], x4, retain_graph=True)
            out[b, m] = g[b]
    return x4.detach(), out, probs.detach()


CASES = {
    "random": (_random_model, dict(spread=1.0)),
    "calibrated": (_calibrated_model, dict(spread=0.05)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_gradient_equals_autograd(case):
    make, tkw = CASES[case]
    model = make()
    text = _text(**tkw)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([[0, 3, 5], [2, 1, 4]])
    x4, ref, probs = _autograd_grad(model, x, text, targets)
    if case == "calibrated":  # the case must exercise a live softmax, not a saturated one
        assert 0.01 < float(probs.max()) < 0.99
    with torch.no_grad():
        full = layer4_gradient(model.attnpool, x4, text, targets)
        w = gradcam_weights(model.attnpool, x4, text, targets)
        cam = gradcam(model.attnpool, x4, text, targets)
    scale = ref.abs().amax(dim=(2, 3, 4), keepdim=True)
    assert float(scale.min()) > 0
    assert float(((full - ref).abs() / scale).max()) < 1e-5
    wref = ref.mean(dim=(3, 4))
    assert float(((w - wref).abs() / wref.abs().amax(-1, keepdim=True)).max()) < 1e-5
    cref = torch.relu(torch.einsum("bmc,bchw->bmhw", wref, x4))
    cn = recipe.postprocess(cam.numpy(), 96)
    cnref = recipe.postprocess(cref.numpy(), 96)
    assert np.abs(cn - cnref).max() <= 1e-5
    assert cn.max() > 0.9  # a real map, not all zeros


def _pytorch_grad_cam_reference(model, x, text, target, size):
    """pytorch_grad_cam/base_cam.py + grad_cam.py + generate_cam_voc.py:32-33 step by step, with a
    forward hook and a full backward hook on layer4[-1] as the official ActivationsAndGradients."""
    import cv2

    acts, grads = [], []
    layer = model.layer4[-1]
    h1 = layer.register_forward_hook(lambda mod, i, o: acts.append(o.detach()))
    h2 = layer.register_full_backward_hook(lambda mod, gi, go: grads.append(go[0].detach()))
    try:
        y = model(x)
        out = (100.0 * (y / y.norm(dim=-1, keepdim=True)) @ text.t()).softmax(dim=-1)
        model.zero_grad()
        out[0, target].backward()
    finally:
        h1.remove()
        h2.remove()
    a, g = acts[0].numpy(), grads[0].numpy()
    weights = np.mean(g, axis=(2, 3))
    cam = (weights[:, :, None, None] * a).sum(axis=1)
    cam[cam < 0] = 0
    img = cam[0] - np.min(cam[0])
    img = img / (1e-7 + np.max(img))
    img = cv2.resize(np.float32(img), (size, size))
    img = np.maximum(np.float32([img])[:, None], 0).mean(axis=1)[0]
    img = img - np.min(img)
    img = img / (1e-7 + np.max(img))
    return cv2.resize(np.float32(img), (50, 50))


def test_generator_equals_direct_autograd_grad_cam():
    model = _calibrated_model()
    for p in model.parameters():
        p.requires_grad_(True)
    text = _text(k=5, spread=0.05)
    names = ["cat", "dog", "sky", "person", "grass"]
    gen = CamGenerator(model, text, names, recipe.SOURCE_GIVEN)
    rng = np.random.default_rng(0)
    image = (rng.random((70, 130, 3)) * 255).astype(np.uint8)  # non-square: the crop is exercised
    masks = gen(image, names)
    assert masks.shape == (5, 50, 50) and masks.dtype == np.float32
    x = torch.from_numpy(recipe.preprocess(image, 96))[None]
    live = 0
    for t in range(5):
        ref = _pytorch_grad_cam_reference(model, x, text, t, 96)
        assert np.abs(masks[t] - ref).max() <= 1e-5
        live += ref.max() > 0.9
    assert live >= 2  # some targets' CAMs are all negative (ReLU -> 0); most are real maps


def test_cam_sees_only_the_centre_crop():
    """The documented quirk: pixels outside the 224 (here 96) centre crop do not change the CAM."""
    gen = CamGenerator(_calibrated_model(), _text(k=4, spread=0.05), ["a", "b", "c", "d"], "given")
    rng = np.random.default_rng(1)
    img = (rng.random((96, 200, 3)) * 255).astype(np.uint8)  # short side already 96: no resize
    other = img.copy()
    other[:, :40] = 0
    other[:, -40:] = 255  # the crop is columns 52..147
    assert np.array_equal(gen(img, ["b"]), gen(other, ["b"]))
    other[:, 60] = 0
    assert not np.array_equal(gen(img, ["b"]), gen(other, ["b"]))


def test_preprocess_follows_torchvision_on_pil():
    """Resize(short side) with int() of the long side, banker's-rounded crop offsets, CLIP mean/std."""
    from PIL import Image

    rng = np.random.default_rng(2)
    img = (rng.random((101, 150, 3)) * 255).astype(np.uint8)
    x = recipe.preprocess(img, 96)
    pil = Image.fromarray(img).resize((int(96 * 150 / 101), 96), Image.BICUBIC)  # 142 x 96
    assert pil.size == (142, 96)
    crop = np.asarray(pil)[:, 23:119].astype(np.float32) / 255  # round(46 / 2) = 23
    ref = (crop - np.float32(recipe.CLIP_MEAN)) / np.float32(recipe.CLIP_STD)
    assert x.shape == (3, 96, 96) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref.transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(InputError, match="uint8"):
        recipe.preprocess(img.astype(np.float32), 96)


def test_postprocess_is_min_max_in_unit_range():
    cam = np.array([[0.0, 1.0, 2.0], [-1.0, 4.0, 0.5], [0.2, 0.1, 3.0]], np.float32)
    out = recipe.postprocess(cam, 96)
    assert out.shape == (50, 50) and out.min() >= 0 and out.max() <= 1
    assert recipe.postprocess(np.zeros((2, 3, 3), np.float32), 96).max() == 0  # all-zero stays zero
    assert recipe.to_image_size(out, (120, 80)).shape == (120, 80)


def test_softmax_class_lists():
    names, src = recipe.softmax_classes(["dining table", "cat"], "voc")
    assert src == "dataset:voc" and names == list(recipe.IMR_VOC_CLASSES) and "diningtable" in names
    assert recipe.target_index(["dining table", "cat"], names) == [10, 7]
    names, src = recipe.softmax_classes(["Eiffel_Tower", "sky"], "support+background")
    assert src == "support+background" and names[:2] == ["eiffel tower", "sky"]
    assert names.count("sky") == 1 and "grass" in names and "mountain" in names
    assert names[2:] == [w for w in recipe.background_vocabulary() if w != "sky"]
    names, src = recipe.softmax_classes(["tv"], "coco")
    assert src == "dataset:coco" and len(names) == 80
    with pytest.raises(InputError, match="not in the CAM softmax class list"):
        recipe.softmax_classes(["eiffel tower"], "voc")
    with pytest.raises(InputError, match="not 'voc'"):
        recipe.softmax_classes(["cat"], "imagenet")
    assert recipe.prompts(["cat"]) == ["a photo of a cat"]


def test_build_without_checkpoint_warns_random():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gen = build_cam_generator(["cat"], "voc", cfg=CFG)
    assert any("RANDOM" in str(x.message) for x in w)
    assert gen.class_source == "dataset:voc" and gen.text.shape == (20, 32)
    assert gen((np.zeros((50, 60, 3), np.uint8)), ["cat"]).shape == (1, 50, 50)


def test_recipe_is_torch_free():
    """The runtime makes CAM inputs and masks with edgefss.cam.recipe on a device without torch."""
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from edgefss.cam import recipe, softmax_classes\n"
        "x = recipe.preprocess(np.zeros((30, 40, 3), np.uint8), 64)\n"
        "m = recipe.postprocess(np.ones((2, 2, 2), np.float32), 64)\n"
        "assert x.shape == (3, 64, 64) and m.shape == (2, 50, 50)\n"
        "assert 'edgefss.cam.generator' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
