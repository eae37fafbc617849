"""predict(refine_steps=k): IMR-style refinement for CST (support masks) and TLG (query pseudo-mask).

CST runs on tests/tiny_cst_corr.py (predictions depend on images and support masks), TLG on
test_runtime's tiny bundle. The CST reference below runs the bundle's graphs with onnxruntime
directly, following runtime/refine.py's rule written out: query mask -> reverse episode -> new
support mask = pseudo-mask AND reverse mask -> query again.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgefss.config import PreprocessCfg
from edgefss.errors import InputError
from edgefss.transforms import preprocess
from tiny_cst_corr import S, build_corr_bundle


@pytest.fixture(scope="module")
def corr_bundle(tmp_path_factory):
    return build_corr_bundle(tmp_path_factory.mktemp("corr") / "cst")


@pytest.fixture(scope="module")
def tlg_bundle(tmp_path_factory):
    from test_runtime import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tlg") / "tlg", "tlg")


@pytest.fixture(scope="module")
def frames(shared_data):
    d = shared_data / "davis2016_val_subset"
    return {seq: sorted((d / seq / "images").iterdir()) for seq in ("blackswan", "camel", "dog")}


def _fg(logits):
    return 0.5 * (1.0 + np.tanh(0.5 * (logits[:, 1] - logits[:, 0])))  # softmax fg, no overflow


def _up(x):
    """(h, w) map -> (S, S): torch bilinear align_corners=True, as the official code resizes."""
    import torch
    import torch.nn.functional as F

    return F.interpolate(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None], (S, S),
                         mode="bilinear", align_corners=True)[0, 0].numpy()


def _fg_mask(logits):
    """(1, 2, h, w) logits -> (S, S) {0,1}: logits upsampled to S x S, softmax fg > 0.5."""
    up = np.stack([_up(logits[0, 0]), _up(logits[0, 1])])[None]  # both channels, as the official code
    return (_fg(up)[0] > 0.5).astype(np.float32)


def _direct_cst_refine(bundle, support_img, query_img):
    """1-shot, one refinement step with onnxruntime only -> (M0, M1, query logits after the step)."""
    import onnxruntime as ort

    enc = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(bundle / "head.onnx"), providers=["CPUExecutionProvider"])
    cfg = PreprocessCfg(imgsz=S)
    q_qf, q_sf, _ = enc.run(None, {"image": preprocess(query_img, cfg)})
    s_qf, s_sf, s_pp = enc.run(None, {"image": preprocess(support_img, cfg)})
    m0 = (_up(s_pp[0]) > 0.4).astype(np.float32)  # the official pseudo-mask: upsample, then threshold

    def run(qf, sf, m):
        return head.run(["seg_logits"], {"query_feats": qf, "support_feats": sf, "support_mask": m[None]})[0]

    q_mask = _fg_mask(run(q_qf, s_sf, m0))
    # the runtime caches the support's query tokens as float16 (documented memory trade-off)
    rev = _fg_mask(run(s_qf.astype(np.float16).astype(np.float32), q_sf, q_mask))
    m1 = m0 * rev
    if not m1.any():
        m1 = m0
    return m0, m1, run(q_qf, s_sf, m1)


def test_k0_is_bit_identical_to_plain_predict(corr_bundle, tlg_bundle, frames):
    from edgefss.runtime import Segmenter

    for bundle, names in ((corr_bundle, ["swan", "camel", "swan"]), (tlg_bundle, ["dog", "cat", "dog"])):
        seg = Segmenter.load(bundle, ops="graph")
        seg.set_support([frames["blackswan"][0], frames["camel"][0], frames["blackswan"][3]], names)
        a = seg.predict(frames["blackswan"][5])
        b = seg.predict(frames["blackswan"][5], refine_steps=0)
        for f in ("mask", "probs", "logits", "fg_prob"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        if seg.adapter.model == "cst":
            assert np.array_equal(a.support_masks, b.support_masks) and a.support_masks.shape == (3, S, S)
        else:
            assert a.support_masks is None and b.support_masks is None


def test_cst_k1_refines_the_support_mask(corr_bundle, frames):
    from edgefss.runtime import Segmenter

    s_img, q_img = frames["blackswan"][0], frames["blackswan"][5]
    m0, m1, logits1 = _direct_cst_refine(corr_bundle, s_img, q_img)
    assert m1.sum() < m0.sum()  # this pair really refines (the premise of the test)
    seg = Segmenter.load(corr_bundle, ops="graph")
    seg.set_support([s_img], ["swan"])
    p0 = seg.predict(q_img)
    p1 = seg.predict(q_img, refine_steps=1)
    np.testing.assert_array_equal(p0.support_masks[0], m0)
    np.testing.assert_array_equal(p1.support_masks[0], m1)
    np.testing.assert_allclose(p1.logits[0], logits1[0], atol=1e-4)
    assert np.abs(p1.logits - p0.logits).max() > 1e-2
    # more steps stay inside the pseudo-mask and never empty it
    p2 = seg.predict(q_img, refine_steps=2)
    assert p2.support_masks.any() and (p2.support_masks <= p0.support_masks).all()


def test_cst_refine_n_way_k_shot_and_given_masks(corr_bundle, frames, shared_data):
    from edgefss.runtime import Segmenter

    sw, cm = frames["blackswan"], frames["camel"]
    gt = sorted((shared_data / "davis2016_val_subset" / "camel" / "masks").iterdir())[2]
    images = [sw[0], cm[0], sw[2], cm[2]]
    names = ["swan", "camel", "swan", "camel"]
    seg = Segmenter.load(corr_bundle, ops="graph")
    seg.set_support(images, names, masks=[None, None, None, gt])
    p0 = seg.predict(sw[5])
    p2 = seg.predict(sw[5], refine_steps=2)
    assert p2.classes == ["swan", "camel"] and p2.logits.shape == p0.logits.shape
    assert p2.support_masks.shape == (4, S, S) and p2.support_masks.dtype == np.float32
    # rows follow set_support's order: the given mask (row 3) is kept as given
    np.testing.assert_array_equal(p2.support_masks[3], p0.support_masks[3])
    assert (p2.support_masks <= p0.support_masks).all() and p2.support_masks.any(axis=(1, 2)).all()
    assert not np.array_equal(p2.support_masks, p0.support_masks)
    # each row is that image's own 1-shot episode mask: the first swan shot alone refines as above
    m0, m1, _ = _direct_cst_refine(corr_bundle, sw[0], sw[5])
    np.testing.assert_array_equal(p0.support_masks[0], m0)


def test_cst_refine_on_the_native_path_matches_graph(corr_bundle, frames):
    from edgefss.runtime import Segmenter

    preds = {}
    for ops in ("graph", "reference"):
        seg = Segmenter.load(corr_bundle, ops=ops)
        seg.set_support([frames["blackswan"][0]], ["swan"])
        preds[ops] = seg.predict(frames["blackswan"][5], refine_steps=1)
    np.testing.assert_array_equal(preds["graph"].support_masks, preds["reference"].support_masks)
    np.testing.assert_allclose(preds["graph"].logits, preds["reference"].logits, atol=1e-4)


def test_support_reencoded_once_for_refinement(corr_bundle, frames):
    from edgefss.runtime import Segmenter
    from test_runtime_ops_path import CountingBackend

    seg = Segmenter.load(corr_bundle, ops="graph")
    seg.backend = cnt = CountingBackend(seg.backend)
    seg.set_support([frames["blackswan"][0], frames["blackswan"][2]], ["swan", "swan"])
    seg.predict(frames["blackswan"][5], refine_steps=1)
    assert cnt.calls["encoder"] == 2 + 1 + 2  # supports, query, supports once more (query tokens)
    seg.predict(frames["blackswan"][5], refine_steps=2)
    assert cnt.calls["encoder"] == 2 + 1 + 2 + 1  # cached since
    seg.set_support([frames["blackswan"][0]], ["swan"])  # a new support set drops the cache
    seg.predict(frames["blackswan"][5], refine_steps=1)
    assert cnt.calls["encoder"] == 6 + 1 + 1 + 1


def test_bad_refine_steps(corr_bundle, tlg_bundle, frames):
    from edgefss.runtime import Segmenter

    for bundle in (corr_bundle, tlg_bundle):
        seg = Segmenter.load(bundle)
        seg.set_support([frames["dog"][0]], ["dog"])
        for bad in (-1, 2.0, True, "1", None):
            with pytest.raises(InputError, match=r"refine_steps.*int >= 0.*CST and TLG"):
                seg.predict(frames["dog"][3], refine_steps=bad)
