"""The PyTorch models behind the runtime's Segmenter (edgefss/models/torch_segmenter.py).

- the torch backend answers the runtime's Backend protocol;
- calibration/gate/verification feeds (quant/feeds.py) are exactly the head feeds the Segmenter
  builds, masks included (both go through the runtime adapters);
- a TLG model run through the torch backend and the same model exported to an ONNX bundle and run
  by onnxruntime give the same predictions, refinement and external query pseudo-masks included.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgefss.errors import InputError  # noqa: E402
from edgefss.models.torch_segmenter import TorchBackend, torch_segmenter  # noqa: E402
from edgefss.transforms import load_image, load_mask  # noqa: E402


def _seg(model, imgsz):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warning
        return torch_segmenter(model, imgsz=imgsz)


@pytest.fixture(scope="module")
def segs():
    """One model build per kind for the module (the tests share them; none changes weights)."""
    return {"cst": _seg("cst", 64), "tlg": _seg("tlg", 64)}


class Recorder:
    """Backend proxy keeping every head feed dict."""

    def __init__(self, inner):
        self.inner, self.name, self.device, self.heads = inner, inner.name, inner.device, []

    def run(self, graph, feeds):
        if graph == "head":
            self.heads.append({k: np.array(v) for k, v in feeds.items()})
        return self.inner.run(graph, feeds)


def test_torch_backend_protocol(segs):
    seg = segs["cst"]
    assert isinstance(seg.backend, TorchBackend) and seg.backend.name == "torch"
    out = seg.backend.run("encoder", {"image": np.zeros((1, 3, 64, 64), np.float32)})
    assert list(out) == ["query_feats", "support_feats", "pseudo_prob"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out.values())
    with pytest.raises(InputError, match="learner"):
        seg.backend.run("learner", {})
    assert seg.manifest["backend"] == "torch" and seg.manifest["weights"]["random_init"] is True


@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_feed_builder_builds_the_segmenters_head_feeds(model, segs, davis_pair):
    """FeedBuilder (calibration, gate, verification) == the feeds Segmenter.predict gives the head,
    for a support with a given mask and one without (the adapters grid/threshold for both)."""
    from edgefss.config import PreprocessCfg
    from edgefss.quant.feeds import FeedBuilder

    s_img, s_mask, q_img, _, cls = davis_pair
    from edgefss.models.torch_segmenter import TorchSegmenter

    shared = segs[model]
    imgsz = shared.cfg.imgsz
    rec = Recorder(shared.backend)
    seg = TorchSegmenter(rec, shared.adapter, shared.manifest, None)
    seg.set_support([s_img, q_img], [cls, cls], masks=[load_mask(s_mask), None])
    seg.predict(q_img)
    got = rec.heads[-1]
    table = None
    if model == "tlg":
        from edgefss.text.table import build_text_table

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = build_text_table([cls])
    b = FeedBuilder(model, PreprocessCfg(imgsz=imgsz), list(seg.manifest["graphs"]["head"]["inputs"]), table)
    enc = [seg.backend.run("encoder", {"image": b.image(p)}) for p in (q_img, s_img, q_img)]
    want = b.head_feeds(enc[0], enc[1:], [b.network_mask(s_mask), None], cls, use_given=False)
    assert sorted(want) == sorted(got)
    for k in want:
        np.testing.assert_allclose(want[k], got[k], rtol=0, atol=1e-6, err_msg=k)
    mask_key = "support_mask" if model == "cst" else "support_pseudo"
    assert got[mask_key][0].any() and not np.array_equal(got[mask_key][0], got[mask_key][1])


def _export_bundle(seg, out_dir):
    """Export the torch segmenter's own graphs to an ONNX bundle (the exporter's ONNX step)."""
    import onnx
    from _bundles import write_bundle

    from edgefss.exporters.onnx_export import export_graph
    from edgefss.exporters.tlg_graphs import tlg_example_inputs
    from edgefss.text.table import build_text_table

    S = seg.cfg.imgsz
    ex = tlg_example_inputs(seg.model, S, n_support=2)
    graphs, io = {}, {}
    for name, g in seg.backend.graphs.items():
        path = out_dir.parent / f"{out_dir.name}-{name}.onnx"
        export_graph(g, ex[name], path)
        graphs[name] = onnx.load(str(path))
        feeds = {k: v.numpy() for k, v in ex[name].items()}
        outs = seg.backend.run(name, feeds)
        io[name] = ([(k, feeds[k].shape) for k in g.inputs], [(k, outs[k].shape) for k in g.outputs])

    def text(w, manifest):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_text_table(["dog", "cat"]).save(w.path("text_table.npz"))
        manifest["text_table"] = {"file": "text_table.npz"}
        manifest["pseudo_mask"] = {"threshold": None}

    return write_bundle(out_dir, "tlg", graphs, io, S, extra=text)


@pytest.mark.slow
def test_tlg_torch_backend_equals_its_onnx_bundle(tmp_path, segs, davis_pair):
    from edgefss.runtime import Segmenter

    s_img, s_mask, q_img, q_mask, _ = davis_pair
    seg = segs["tlg"]
    bundle = Segmenter.load(_export_bundle(seg, tmp_path / "b"), backend="onnxruntime")
    hw = load_image(q_img).shape[:2]
    ext = [load_mask(q_mask), np.zeros(hw, np.uint8)]
    for s in (seg, bundle):
        s.set_support([s_img, q_img], ["dog", "cat"])
    for kw in ({}, {"refine_steps": 1}, {"query_pseudo": ext}):
        a, b = seg.predict(q_img, **kw), bundle.predict(q_img, **kw)
        assert a.classes == b.classes == ["dog", "cat"]
        assert np.abs(a.logits).max() > 1e-2, kw  # not a comparison of near-zero maps
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-4, err_msg=str(kw))
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    plain, given = seg.predict(q_img), seg.predict(q_img, query_pseudo=ext)
    assert not np.allclose(plain.logits, given.logits)  # the external mask changed the prediction


def test_query_pseudo_is_checked(segs, davis_pair):
    s_img, _, q_img, _, _ = davis_pair
    seg = segs["cst"]
    seg.set_support([s_img], ["dog"])
    hw = load_image(q_img).shape[:2]
    with pytest.raises(InputError, match="query_pseudo: cst has no query pseudo-mask input"):
        seg.predict(q_img, query_pseudo=[np.ones(hw)])
    tlg = segs["tlg"]
    tlg.set_support([s_img], ["dog"])
    with pytest.raises(InputError, match=r"query_pseudo\[0\]: shape \(4, 4\)"):
        tlg.predict(q_img, query_pseudo=[np.ones((4, 4))])
