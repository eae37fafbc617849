"""edgefss.runtime: Segmenter over tiny hand-built bundles, N-way K-shot combination, backends, CLI.

The tiny graphs follow the design.md graph I/O names and shapes at S = 32 (grid S/8 = 4, logits at
S/4 = 8) and are built with onnx.helper, so these tests need neither torch nor the exporters.
`build_tiny_bundle` is also used by tests/test_import_boundaries.py (torch blocked).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from edgefss.config import PreprocessCfg
from edgefss.errors import BackendUnavailableError, BundleError, InputError, StateError
from edgefss.transforms import load_image, load_mask, preprocess

S = 32
G = S // 8
H4 = S // 4
CLASSES = ["dog", "cat", "person", "car"]


# ----------------------------------------------------------------------------- tiny graphs
def _onnx_model(nodes, inputs, outputs, inits, name):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def vi(n, shape):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)

    g = helper.make_graph(
        nodes, name, [vi(n, s) for n, s in inputs], [vi(n, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _cst_graphs(rng):
    from onnx import helper as h

    T, C = G * G, 12 * 384
    enc_in = [("image", [1, 3, S, S])]
    enc_out = [("query_feats", [1, 12, 384, T]), ("support_feats", [1, 12, 384, 2]),
               ("pseudo_prob", [1, G, G])]
    enc = _onnx_model([
        h.make_node("AveragePool", ["image"], ["x"], kernel_shape=[8, 8], strides=[8, 8]),
        h.make_node("Conv", ["x", "w"], ["f"]),
        h.make_node("Reshape", ["f", "qshape"], ["query_feats"]),
        h.make_node("ReduceMean", ["query_feats"], ["smean"], axes=[3], keepdims=1),
        h.make_node("ReduceMax", ["query_feats"], ["smax"], axes=[3], keepdims=1),
        h.make_node("Concat", ["smean", "smax"], ["support_feats"], axis=3),
        h.make_node("ReduceMean", ["x"], ["xm"], axes=[1], keepdims=0),
        h.make_node("Mul", ["xm", "k3"], ["xs"]),
        h.make_node("Sigmoid", ["xs"], ["pseudo_prob"]),
    ], enc_in, enc_out, {
        "w": rng.standard_normal((C, 3, 1, 1)).astype(np.float32),
        "qshape": np.array([1, 12, 384, T], np.int64), "k3": np.float32(3.0),
    }, "cst_encoder")
    head_in = [("query_feats", [1, 12, 384, T]), ("support_feats", ["B", 12, 384, 2]),
               ("support_mask", ["B", S, S])]
    head_out = [("cls_logits", ["B", 2]), ("seg_logits", ["B", 2, H4, H4])]
    head = _onnx_model([
        h.make_node("ReduceMean", ["query_feats"], ["qm"], axes=[1], keepdims=0),      # (1,384,T)
        h.make_node("ReduceMean", ["support_feats"], ["sm0"], axes=[1], keepdims=0),   # (B,384,2)
        h.make_node("Mul", ["sm0", "mix"], ["sm1"]),
        h.make_node("ReduceMean", ["sm1"], ["sm"], axes=[2], keepdims=1),              # (B,384,1)
        h.make_node("Mul", ["qm", "sm"], ["prod"]),                                    # (B,384,T)
        h.make_node("ReduceMean", ["prod"], ["score"], axes=[1], keepdims=0),          # (B,T)
        h.make_node("Unsqueeze", ["support_mask", "ax_m"], ["m4"]),                    # (B,1,S,S)
        h.make_node("AveragePool", ["m4"], ["mg"], kernel_shape=[8, 8], strides=[8, 8]),  # (B,1,G,G)
        h.make_node("Reshape", ["mg", "flat"], ["mflat"]),                             # (B,T)
        h.make_node("Mul", ["mflat", "k_mask"], ["mterm"]),
        h.make_node("Mul", ["score", "k_score"], ["sterm"]),
        h.make_node("Add", ["sterm", "mterm"], ["fg0"]),
        h.make_node("Add", ["fg0", "bias"], ["fg1"]),
        h.make_node("Reshape", ["fg1", "grid"], ["fg2"]),                              # (B,1,G,G)
        h.make_node("Resize", ["fg2", "", "scales"], ["fg"], mode="nearest"),          # (B,1,H4,H4)
        h.make_node("Mul", ["fg", "k_bg"], ["bg"]),
        h.make_node("Concat", ["bg", "fg"], ["seg_logits"], axis=1),
        h.make_node("ReduceMean", ["fg"], ["fgm"], axes=[1, 2, 3], keepdims=1),
        h.make_node("Reshape", ["fgm", "col"], ["c1"]),
        h.make_node("Mul", ["c1", "k_bg"], ["c0"]),
        h.make_node("Concat", ["c0", "c1"], ["cls_logits"], axis=1),
    ], head_in, head_out, {
        "mix": np.array([1.0, -0.5], np.float32), "k_mask": np.float32(1.5), "k_score": np.float32(2.0),
        "ax_m": np.array([1], np.int64),
        "bias": rng.standard_normal(T).astype(np.float32) * 0.5 - 0.4,
        "flat": np.array([-1, T], np.int64), "grid": np.array([-1, 1, G, G], np.int64),
        "scales": np.array([1, 1, 2, 2], np.float32), "k_bg": np.float32(-0.5),
        "col": np.array([-1, 1], np.int64),
    }, "cst_head")
    io = {"encoder": (enc_in, enc_out), "head": (head_in, head_out)}
    return {"encoder": enc, "head": head}, io


def _tlg_graphs(rng):
    from onnx import helper as h

    enc_in = [("image", [1, 3, S, S])]
    enc_out = [("feat_00", [1, 4, H4, H4]), ("feat_01", [1, 8, G, G])]
    enc = _onnx_model([
        h.make_node("AveragePool", ["image"], ["x8"], kernel_shape=[4, 4], strides=[4, 4]),
        h.make_node("Conv", ["x8", "w0"], ["feat_00"]),
        h.make_node("AveragePool", ["image"], ["x4"], kernel_shape=[8, 8], strides=[8, 8]),
        h.make_node("Conv", ["x4", "w1"], ["feat_01"]),
    ], enc_in, enc_out, {
        "w0": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
        "w1": rng.standard_normal((8, 3, 1, 1)).astype(np.float32),
    }, "tlg_encoder")
    head_in = [("query_feat_00", [1, 4, H4, H4]), ("query_feat_01", [1, 8, G, G]),
               ("support_feat_00", ["B", 4, H4, H4]), ("support_feat_01", ["B", 8, G, G]),
               ("text_support", ["B", 512]), ("text_query_fg", ["B", 512]), ("text_query_bg", ["B", 512]),
               ("query_pseudo", ["B", 1, S, S]), ("support_pseudo", ["B", 1, S, S]),
               ("pseudo_given", ["B", 1, 1, 1])]
    # TLG takes its pseudo-masks, and makes its prior, at the input resolution S
    head_out = [("query_logits", ["B", 2, H4, H4]), ("support_logits", ["B", 2, H4, H4]),
                ("query_prior", ["B", 1, S, S])]
    head = _onnx_model([
        h.make_node("ReduceMean", ["query_feat_01"], ["q1"], axes=[1], keepdims=1),
        h.make_node("ReduceMean", ["support_feat_01"], ["s1"], axes=[1, 2, 3], keepdims=1),
        h.make_node("Mul", ["q1", "s1"], ["qs"]),
        h.make_node("Sigmoid", ["qs"], ["prior_g"]),
        h.make_node("Resize", ["prior_g", "", "up8"], ["query_prior"], mode="nearest"),
        h.make_node("Sub", ["one", "pseudo_given"], ["notgiven"]),
        h.make_node("Mul", ["pseudo_given", "query_pseudo"], ["qa"]),
        h.make_node("Mul", ["notgiven", "query_prior"], ["qb"]),
        h.make_node("Add", ["qa", "qb"], ["qmask"]),
        h.make_node("Mul", ["pseudo_given", "support_pseudo"], ["sa"]),
        h.make_node("Add", ["sa", "qb"], ["smask"]),
        h.make_node("Sub", ["text_query_fg", "text_query_bg"], ["tdiff"]),
        h.make_node("Mul", ["tdiff", "text_support"], ["tprod"]),
        h.make_node("ReduceMean", ["tprod"], ["t0"], axes=[1], keepdims=1),
        h.make_node("Reshape", ["t0", "b111"], ["t1"]),
        h.make_node("Mul", ["t1", "k_text"], ["t"]),
        h.make_node("Mul", ["qmask", "four"], ["qm4"]),
        h.make_node("Sub", ["qm4", "two"], ["qm2"]),
        h.make_node("Add", ["qm2", "t"], ["qm3"]),
        h.make_node("Resize", ["qm3", "", "down4"], ["qup"], mode="nearest"),
        h.make_node("ReduceMean", ["query_feat_00"], ["q0"], axes=[1], keepdims=1),
        h.make_node("Mul", ["q0", "half"], ["q0h"]),
        h.make_node("Add", ["qup", "q0h"], ["qfg"]),
        h.make_node("Mul", ["qfg", "k_bg"], ["qbg"]),
        h.make_node("Concat", ["qbg", "qfg"], ["query_logits"], axis=1),
        h.make_node("Resize", ["smask", "", "down4"], ["sup"], mode="nearest"),
        h.make_node("ReduceMean", ["support_feat_00"], ["s0"], axes=[1], keepdims=1),
        h.make_node("Add", ["sup", "s0"], ["sfg"]),
        h.make_node("Mul", ["sfg", "k_bg"], ["sbg"]),
        h.make_node("Concat", ["sbg", "sfg"], ["support_logits"], axis=1),
    ], head_in, head_out, {
        "one": np.float32(1.0), "two": np.float32(2.5), "four": np.float32(4.0), "half": np.float32(2.0),
        "k_text": np.float32(3e3), "k_bg": np.float32(-0.5), "b111": np.array([-1, 1, 1, 1], np.int64),
        "up8": np.array([1, 1, 8, 8], np.float32), "down4": np.array([1, 1, 0.25, 0.25], np.float32),
    }, "tlg_head")
    io = {"encoder": (enc_in, enc_out), "head": (head_in, head_out)}
    return {"encoder": enc, "head": head}, io


def build_tiny_bundle(out_dir, model: str = "cst", backend: str = "onnxruntime", precision: str = "fp32",
                      seed: int = 0) -> Path:
    """Write a tiny bundle with the design.md layout (S = 32) through BundleWriter; returns its path."""
    from _bundles import write_bundle

    rng = np.random.default_rng(seed)
    graphs, io = (_cst_graphs if model == "cst" else _tlg_graphs)(rng)

    def text_table(w, manifest):
        from edgefss.text.table import RANDOM_SOURCE, TextTable

        def unit(n):
            v = rng.standard_normal((n, 512)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        TextTable(np.array(CLASSES), unit(len(CLASSES)), unit(len(CLASSES)), unit(len(CLASSES)),
                  RANDOM_SOURCE).save(w.path("text_table.npz"))
        manifest["text_table"] = {"file": "text_table.npz", "source": RANDOM_SOURCE}

    return write_bundle(out_dir, model, graphs, io, S, backend, precision,
                        extra=text_table if model == "tlg" else None)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cst_bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("b") / "cst", "cst")


@pytest.fixture(scope="module")
def tlg_bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("b") / "tlg", "tlg")


@pytest.fixture(scope="module")
def images():
    """Six seeded RGB images of different sizes (H, W, 3) uint8 with a bright blob each."""
    r = np.random.default_rng(1)
    out = []
    for i, (hh, ww) in enumerate([(40, 56), (48, 48), (37, 61), (64, 40), (50, 50), (33, 45)]):
        img = (r.random((hh, ww, 3)) * 120).astype(np.uint8)
        img[hh // 4: hh // 4 + hh // 3, (i * 7) % (ww // 2): (i * 7) % (ww // 2) + ww // 3] += 120
        out.append(img)
    return out


def _blob_mask(img):
    m = np.zeros(img.shape[:2], np.uint8)
    m[: img.shape[0] // 2, : img.shape[1] // 2] = 1
    return m


class CountingBackend:
    """Backend proxy that counts runs per graph (caching semantics)."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, {}
        self.lock = threading.Lock()

    def run(self, graph, feeds):
        with self.lock:
            self.calls[graph] = self.calls.get(graph, 0) + 1
        return self.inner.run(graph, feeds)


# ----------------------------------------------------------------------------- references
def _reference_combine(seg_logits, cls_logits, groups, hw):
    """Straightforward §3.5: resize both channels (torch, align_corners as the official code),
    softmax per shot, mean over shots, argmax."""
    import torch
    import torch.nn.functional as F

    H, W = hw
    pf, pc = [], []
    for shots in groups:
        acc = np.zeros((2, H, W), np.float64)
        for k in shots:
            up = F.interpolate(torch.from_numpy(seg_logits[k:k + 1]), (H, W), mode="bilinear",
                               align_corners=True)[0].numpy().astype(np.float64)
            e = np.exp(up - up.max(axis=0))
            acc += e / e.sum(axis=0)
        pf.append(acc[1] / len(shots))
        if cls_logits is not None:
            e = np.exp(cls_logits[list(shots)] - cls_logits[list(shots)].max(axis=1, keepdims=True))
            pc.append((e / e.sum(axis=1, keepdims=True))[:, 1].mean())
    pf = np.stack(pf)
    mask = np.where(pf.max(axis=0) >= 0.5, pf.argmax(axis=0) + 1, 0).astype(np.uint8)
    return pf, (np.array(pc) if pc else None), mask


def _direct_cst(bundle, sup_imgs, sup_masks, query):
    """Run the bundle's graphs with onnxruntime directly (no runtime code) -> (seg (B,2,8,8), cls (B,2))."""
    import onnxruntime as ort

    enc = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(bundle / "head.onnx"), providers=["CPUExecutionProvider"])
    cfg = PreprocessCfg(imgsz=S)
    q = enc.run(None, {"image": preprocess(query, cfg)})[0]
    feats, masks = [], []
    for img, m in zip(sup_imgs, sup_masks):
        _, sf, pp = enc.run(None, {"image": preprocess(img, cfg)})
        feats.append(sf[0])
        if m is None:  # the official pseudo-mask: upsample (align_corners) to S x S, then threshold
            import torch
            import torch.nn.functional as F

            up = F.interpolate(torch.from_numpy(pp[None]), (S, S), mode="bilinear", align_corners=True)
            m = (up[0, 0].numpy() > 0.4).astype(np.float32)
        masks.append(m)
    feeds = {"query_feats": q, "support_feats": np.stack(feats), "support_mask": np.stack(masks)}
    cls, seg = head.run(None, feeds)
    return seg, cls


# ----------------------------------------------------------------------------- postprocess
def test_combination_matches_straightforward_reference(rng):
    from edgefss.runtime import postprocess as post

    groups = [[0, 1], [2], [3, 4, 5]]
    seg = rng.standard_normal((6, 2, 8, 8)).astype(np.float32) * 3
    cls = rng.standard_normal((6, 2)).astype(np.float32)
    hw = (37, 53)
    ref_p, ref_c, ref_mask = _reference_combine(seg, cls, groups, hw)
    p = post.fg_probability(seg, groups, hw)
    np.testing.assert_allclose(p, ref_p, atol=2e-6)
    np.testing.assert_allclose(post.cls_probability(cls, groups), ref_c, atol=1e-6)
    got = post.label_mask(p)
    # ties at exactly 0.5 or between classes are measure-zero; compare where the reference is clear
    clear = np.abs(ref_p.max(axis=0) - 0.5) > 1e-5
    assert np.array_equal(got[clear], ref_mask[clear])
    assert set(np.unique(got)) <= {0, 1, 2, 3} and (got == 0).any() and (got > 0).any()
    np.testing.assert_allclose(post.mean_logits(seg, groups)[1], seg[2])
    np.testing.assert_allclose(post.mean_logits(seg, groups)[0], seg[:2].mean(axis=0), atol=1e-6)


def test_label_mask_rules_and_presence():
    from edgefss.runtime import postprocess as post

    p = np.array([[[0.2, 0.6, 0.9], [0.49, 0.5, 0.1]], [[0.3, 0.7, 0.4], [0.1, 0.2, 0.1]]], np.float32)
    assert post.label_mask(p).tolist() == [[0, 2, 1], [0, 1, 0]]
    np.testing.assert_allclose(post.area_presence(p), [2 / 6, 1 / 6])
    with pytest.raises(InputError):
        post.fg_probability(np.zeros((3, 2, 4, 4), np.float32), [[0], [1]], (4, 4))  # shot 2 unassigned


# ----------------------------------------------------------------------------- Segmenter
def test_cst_predict_matches_direct_graph_run(cst_bundle, images):
    from edgefss.runtime import Segmenter, postprocess as post

    seg = Segmenter.load(cst_bundle, threads=1)
    names = ["dog", "cat", "dog", "cat", "person"]
    masks = [None, _blob_mask(images[1]), None, None, None]
    seg.set_support(images[:5], names, masks=masks)
    pred = seg.predict(images[5])
    assert pred.classes == ["dog", "cat", "person"]
    # the runtime orders the head batch class-major: dog shots (0, 2), cat (1, 3), person (4)
    order = [0, 2, 1, 3, 4]
    from edgefss.transforms import resize_mask

    net_masks = [None if m is None else resize_mask(m, (S, S)).astype(np.float32) for m in masks]
    s_ref, c_ref = _direct_cst(cst_bundle, [images[i] for i in order], [net_masks[i] for i in order],
                               images[5])
    groups = [[0, 1], [2, 3], [4]]
    ref_p, ref_c, ref_mask = _reference_combine(s_ref, c_ref, groups, images[5].shape[:2])
    assert pred.mask.shape == images[5].shape[:2] and pred.mask.dtype == np.uint8
    assert pred.logits.shape == (3, 2, H4, H4) and pred.logits.dtype == np.float32
    np.testing.assert_allclose(pred.logits, post.mean_logits(s_ref, groups), atol=1e-5)
    np.testing.assert_allclose(pred.probs, ref_c, atol=1e-5)
    np.testing.assert_allclose(pred.fg_prob, ref_p, atol=1e-5)
    clear = np.abs(ref_p.max(axis=0) - 0.5) > 1e-4
    assert np.array_equal(pred.mask[clear], ref_mask[clear])
    assert np.array_equal(pred.present, ref_c > 0.5)
    assert set(pred.timings) == {"encode", "head", "post", "total"}


def test_support_mask_changes_cst_prediction(cst_bundle, images):
    from edgefss.runtime import Segmenter

    seg = Segmenter.load(cst_bundle)
    seg.set_support([images[0]], ["dog"])
    a = seg.predict(images[3]).logits
    full = np.ones(images[0].shape[:2], np.uint8) * 255  # {0,255} masks are accepted
    seg.set_support([images[0]], ["dog"], masks=[full])
    b = seg.predict(images[3]).logits
    assert np.abs(a - b).max() > 1e-3


def test_caching_semantics(cst_bundle, images):
    from edgefss.runtime import Segmenter

    seg = Segmenter.load(cst_bundle)
    seg.backend = cnt = CountingBackend(seg.backend)
    with pytest.raises(StateError, match="set_support"):
        seg.predict(images[0])
    seg.set_support(images[:3], ["dog", "dog", "cat"])
    assert cnt.calls == {"encoder": 3}  # once per support image, no head yet
    p1 = seg.predict(images[4])
    p2 = seg.predict(images[4])
    assert cnt.calls == {"encoder": 5, "head": 2}  # supports are not re-encoded
    np.testing.assert_array_equal(p1.logits, p2.logits)
    seg.set_support([images[2]], ["car"])  # replaces, not appends
    assert seg.classes == ["car"] and seg.predict(images[4]).logits.shape[0] == 1
    seg.reset_support()
    assert seg.classes == []
    with pytest.raises(StateError):
        seg.predict(images[4])


def test_head_batches_are_chunked(cst_bundle, images):
    from edgefss.runtime import Segmenter

    seg = Segmenter.load(cst_bundle)
    names = ["dog", "cat", "person", "car", "dog"]
    seg.set_support(images[:5], names)
    whole = seg.predict(images[5])
    seg.max_batch = 2
    seg.set_support(images[:5], names)
    seg.backend = cnt = CountingBackend(seg.backend)
    chunked = seg.predict(images[5])
    assert cnt.calls["head"] == 3
    np.testing.assert_allclose(chunked.logits, whole.logits, atol=1e-6)
    np.testing.assert_array_equal(chunked.mask, whole.mask)


def test_inputs_as_paths_and_arrays(cst_bundle, davis_pair):
    from edgefss.runtime import Segmenter

    s_img, s_mask, q_img, _, cls = davis_pair
    seg = Segmenter.load(cst_bundle)
    seg.set_support([s_img], [cls], masks=[s_mask])
    a = seg.predict(q_img)
    seg.set_support([load_image(s_img)], [cls], masks=[str(s_mask)])
    b = seg.predict(load_image(q_img))
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.mask.shape == load_image(q_img).shape[:2]


def test_bad_inputs_raise_clear_errors(cst_bundle, tlg_bundle, images, tmp_path):
    from edgefss.runtime import Segmenter

    seg = Segmenter.load(cst_bundle)
    with pytest.raises(InputError, match="not_there.jpg"):
        seg.set_support([tmp_path / "not_there.jpg"], ["dog"])
    with pytest.raises(InputError, match=r"masks\[0\].*does not match"):
        seg.set_support([images[0]], ["dog"], masks=[np.ones((10, 10), np.uint8)])
    with pytest.raises(InputError, match="empty"):
        seg.set_support([images[0]], ["dog"], masks=[np.zeros(images[0].shape[:2], np.uint8)])
    with pytest.raises(InputError, match="one per image"):
        seg.set_support(images[:2], ["dog"])
    with pytest.raises(InputError, match="at least one"):
        seg.set_support([], [])
    with pytest.raises(StateError):  # the failed calls above left no support set behind
        seg.predict(images[0])
    seg.set_support([images[0]], ["dog"])
    with pytest.raises(InputError, match="query"):
        seg.predict(tmp_path / "missing_query.png")
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InputError, match="refine_steps"):
            seg.predict(images[1], refine_steps=bad)
    tlg = Segmenter.load(tlg_bundle)
    with pytest.raises(InputError, match="did you mean: dog"):
        tlg.set_support([images[0]], ["dgo"])


def test_tampered_and_incompatible_bundles(tmp_path, images):
    from edgefss.runtime import Segmenter

    b = build_tiny_bundle(tmp_path / "t", "cst")
    head = b / "head.onnx"
    data = bytearray(head.read_bytes())
    data[-5] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        Segmenter.load(b)

    q = build_tiny_bundle(tmp_path / "int8trt", "cst", backend="tensorrt", precision="int8")
    with pytest.raises(BundleError, match="INT8 bundle built for tensorrt"):
        Segmenter.load(q, backend="openvino")
    with pytest.raises(InputError, match="not a backend"):
        Segmenter.load(b.parent / "int8trt", backend="tflite")

    man = json.loads((q / "manifest.json").read_text())
    man["format_version"] = 99
    (q / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format_version"):
        Segmenter.load(q)


def test_missing_backend_names_pip_line(tmp_path):
    pytest.importorskip("onnx")
    from importlib.util import find_spec

    if find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    from edgefss.bundle import BundleWriter
    from edgefss.runtime import Segmenter

    src = build_tiny_bundle(tmp_path / "src", "cst")
    man = json.loads((src / "manifest.json").read_text())
    for g in ("encoder", "head"):
        man["graphs"][g]["file"] = f"{g}.plan"
    man.update(backend="tensorrt", precision="fp16")
    with BundleWriter(tmp_path / "trt") as w:
        for g in ("encoder", "head"):
            w.path(f"{g}.plan").write_bytes(b"not a real plan")
        w.commit({k: v for k, v in man.items() if k != "files"})
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        Segmenter.load(tmp_path / "trt")
    with pytest.raises(BundleError, match="onnxruntime cannot read|built for tensorrt"):
        Segmenter.load(tmp_path / "trt", backend="onnxruntime")


def test_tlg_prior_path_and_refine_hook(tlg_bundle, images):
    import onnxruntime as ort

    from edgefss.runtime import Segmenter

    seg = Segmenter.load(tlg_bundle)
    seg.set_support([images[0], images[1], images[2]], ["dog", "cat", "dog"])
    p0 = seg.predict(images[3])
    assert p0.classes == ["dog", "cat"] and p0.logits.shape == (2, 2, H4, H4)
    np.testing.assert_allclose(p0.probs, (np.asarray(p0.fg_prob) > 0.5).reshape(2, -1).mean(axis=1), atol=1e-6)

    # independent run of the graphs: pseudo_given = 0 (prior), text rows of each class
    from edgefss.text.table import TextTable

    tt = TextTable.load(tlg_bundle / "text_table.npz")
    cfg = PreprocessCfg(imgsz=S)
    enc = ort.InferenceSession(str(tlg_bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(tlg_bundle / "head.onnx"), providers=["CPUExecutionProvider"])
    qf = enc.run(None, {"image": preprocess(images[3], cfg)})
    order, names = [0, 2, 1], ["dog", "dog", "cat"]
    sf = [enc.run(None, {"image": preprocess(images[i], cfg)}) for i in order]
    text = tt.lookup_many(names)
    zeros = np.zeros((3, 1, S, S), np.float32)
    feeds = {"query_feat_00": qf[0], "query_feat_01": qf[1],
             "support_feat_00": np.concatenate([f[0] for f in sf]),
             "support_feat_01": np.concatenate([f[1] for f in sf]),
             "text_support": text["support"], "text_query_fg": text["query_fg"],
             "text_query_bg": text["query_bg"], "query_pseudo": zeros, "support_pseudo": zeros,
             "pseudo_given": np.zeros((3, 1, 1, 1), np.float32)}
    ql, _, _ = head.run(None, feeds)
    np.testing.assert_allclose(p0.logits[0], ql[:2].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(p0.logits[1], ql[2], atol=1e-5)

    # refine_steps=1 feeds each class's shot-averaged fg prob, at the network size S (where TLG
    # takes its pseudo-masks) and upsampled as the outputs are, back with pseudo_given = 1
    from edgefss.runtime import postprocess as post

    pcls = post.fg_probability(ql, [[0, 1], [2]], (S, S))
    back = pcls[[0, 0, 1]]
    feeds.update(query_pseudo=back[:, None], pseudo_given=np.ones((3, 1, 1, 1), np.float32))
    ql1, _, _ = head.run(None, feeds)
    p1 = seg.predict(images[3], refine_steps=1)
    np.testing.assert_allclose(p1.logits[1], ql1[2], atol=1e-5)
    assert np.abs(p1.logits - p0.logits).max() > 1e-3


@pytest.mark.openvino
@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_openvino_equals_onnxruntime(model, cst_bundle, tlg_bundle, images):
    from edgefss.runtime import Segmenter

    bundle = cst_bundle if model == "cst" else tlg_bundle
    names = ["dog", "cat", "dog"]
    preds = {}
    for be in ("onnxruntime", "openvino"):
        seg = Segmenter.load(bundle, backend=be, threads=1)
        assert seg.backend.name == be
        seg.set_support(images[:3], names)
        preds[be] = seg.predict(images[4])
    a, b = preds["onnxruntime"], preds["openvino"]
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    clear = np.abs(np.asarray(a.fg_prob).max(axis=0) - 0.5) > 1e-3
    assert np.array_equal(a.mask[clear], b.mask[clear])


@pytest.mark.openvino
def test_openvino_reads_ir_xml(tmp_path, images):
    import openvino as ov

    from edgefss.bundle import BundleWriter
    from edgefss.runtime import Segmenter

    src = build_tiny_bundle(tmp_path / "src", "cst")
    man = json.loads((src / "manifest.json").read_text())
    with BundleWriter(tmp_path / "ir") as w:
        for g in ("encoder", "head"):
            ov_model = ov.Core().read_model(str(src / f"{g}.onnx"))
            ov.save_model(ov_model, str(w.path(f"{g}.xml")), compress_to_fp16=False)
            man["graphs"][g]["file"] = f"{g}.xml"
        man["backend"] = "openvino"
        w.commit({k: v for k, v in man.items() if k != "files"})
    seg_ir = Segmenter.load(tmp_path / "ir")
    seg_ref = Segmenter.load(src)
    for s in (seg_ir, seg_ref):
        s.set_support(images[:2], ["dog", "cat"])
    np.testing.assert_allclose(seg_ir.predict(images[3]).logits, seg_ref.predict(images[3]).logits, atol=1e-4)
    with pytest.raises(BundleError, match="cannot read"):
        Segmenter.load(tmp_path / "ir", backend="onnxruntime")


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_predict_is_thread_safe(backend, cst_bundle, tlg_bundle, images):
    from edgefss.runtime import Segmenter

    for bundle in (cst_bundle, tlg_bundle):
        seg = Segmenter.load(bundle, backend=backend, threads=1)
        seg.set_support(images[:3], ["dog", "cat", "dog"])
        queries = images[2:6] * 3
        serial = [seg.predict(q) for q in queries]
        results = [None] * len(queries)
        errors = []
        barrier = threading.Barrier(4)

        def work(t):
            try:
                barrier.wait()
                for i in range(t, len(queries), 4):
                    results[i] = seg.predict(queries[i])
            except Exception as exc:  # surfaced below with the thread's failure
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for s, r in zip(serial, results):
            np.testing.assert_array_equal(s.logits, r.logits)
            np.testing.assert_array_equal(s.mask, r.mask)


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_tensorrt_equals_onnxruntime(tmp_path, images):
    trt = pytest.importorskip("tensorrt")
    from edgefss.bundle import BundleWriter
    from edgefss.runtime import Segmenter

    src = build_tiny_bundle(tmp_path / "src", "cst")
    man = json.loads((src / "manifest.json").read_text())
    logger = trt.Logger(trt.Logger.WARNING)
    with BundleWriter(tmp_path / "trt") as w:
        for g in ("encoder", "head"):
            builder = trt.Builder(logger)
            net = builder.create_network(0)
            parser = trt.OnnxParser(net, logger)
            assert parser.parse((src / f"{g}.onnx").read_bytes())
            cfg = builder.create_builder_config()
            if g == "head":
                prof = builder.create_optimization_profile()
                for name, info in man["graphs"]["head"]["inputs"].items():
                    shp = info["shape"]
                    dims = [[1 if d == "B" else d for d in shp], [2 if d == "B" else d for d in shp],
                            [8 if d == "B" else d for d in shp]]
                    prof.set_shape(name, *dims)
                cfg.add_optimization_profile(prof)
            w.path(f"{g}.plan").write_bytes(bytes(builder.build_serialized_network(net, cfg)))
            man["graphs"][g]["file"] = f"{g}.plan"
        man["backend"] = "tensorrt"
        w.commit({k: v for k, v in man.items() if k != "files"})
    a, b = Segmenter.load(src), Segmenter.load(tmp_path / "trt")
    for s in (a, b):
        s.set_support(images[:3], ["dog", "cat", "dog"])
    np.testing.assert_allclose(a.predict(images[4]).logits, b.predict(images[4]).logits, atol=1e-3)


# ----------------------------------------------------------------------------- visualize + CLI
def test_overlay_colours_labelled_pixels_only():
    from edgefss.runtime.visualize import overlay, palette

    pal = palette(3)
    assert pal.shape == (4, 3) and (pal[0] == 0).all() and len({tuple(c) for c in pal}) == 4
    img = np.full((120, 160, 3), 100, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[60:100, 20:60], mask[60:100, 100:140] = 1, 3
    out = overlay(img, mask, ["dog", "cat", "car"], alpha=0.5, legend=False)
    expect = ((100 * 0.5 + pal[1].astype(np.float32) * 0.5) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[80, 40], expect)
    np.testing.assert_array_equal(out[30, 80], img[30, 80])  # background untouched
    with_legend = overlay(img, mask, ["dog", "cat", "car"])
    assert (with_legend[:20, :20] != img[:20, :20]).any()  # legend box drawn top-left
    with pytest.raises(InputError):
        overlay(img, mask[:10], ["dog", "cat", "car"])


def test_cli_predict_writes_mask_and_overlay(cst_bundle, davis_pair, tmp_path, capsys):
    import cv2

    from edgefss.cli import main

    s_img, s_mask, q_img, _, cls = davis_pair
    out = tmp_path / "res" / "mask.png"
    rc = main(["predict", "--bundle", str(cst_bundle), "--support", f"{s_img}:{cls}", f"{q_img}:other",
               "--support-mask", f"{s_img}:{s_mask}", "--query", str(q_img), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "overlay" in printed
    from PIL import Image

    with Image.open(out) as im:  # two classes: a palette PNG whose values are the class indices
        assert im.mode == "P"
        m = np.asarray(im)
    ov = cv2.imread(str(out.with_name("mask_overlay.png")))
    h, w = load_image(q_img).shape[:2]
    assert m.shape == (h, w) and m.dtype == np.uint8 and m.max() <= 2
    assert ov.shape == (h, w, 3)
    rc = main(["predict", "--bundle", str(cst_bundle), "--support", f"{s_img}:{cls}",
               "--query", str(tmp_path / "nope.jpg"), "--out", str(out)])
    assert rc == 1 and "nope.jpg" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real export (torch)
@pytest.mark.slow
@pytest.mark.parametrize("model", ["tlg", "cst"])
def test_exported_bundle_matches_pytorch_model(model, tmp_path, davis_pair):
    """`edgefss.exporters.export` at imgsz 64, then Segmenter (torch-free path) vs the PyTorch model's
    own encode/prior/head on the same preprocessed pixels: max-abs on the query logits <= 1e-4."""
    torch = pytest.importorskip("torch")
    from edgefss.exporters import export
    from edgefss.exporters.graphs import load_graphs
    from edgefss.runtime import Segmenter

    s_img, s_mask, q_img, _, cls = davis_pair
    imgsz = 64
    bundle = export(model=model, imgsz=imgsz, out=tmp_path / model, verify_episodes=1, log=lambda *_: None)
    seg = Segmenter.load(bundle, backend="onnxruntime")
    net = load_graphs(model, None, imgsz).model  # same seeded random init as the export
    cfg = PreprocessCfg(imgsz=imgsz)
    xq = torch.from_numpy(preprocess(q_img, cfg))
    xs = torch.from_numpy(preprocess(s_img, cfg))
    with torch.no_grad():
        if model == "tlg":
            from edgefss.text.table import TextTable

            seg.set_support([s_img], [cls])
            pred = seg.predict(q_img)
            qf, sf = net.encode(xq), net.encode(xs)
            qp, sp = net.prior(qf, sf)
            rows = TextTable.load(bundle / "text_table.npz").lookup_many([cls])
            text = {k: torch.from_numpy(v) for k, v in rows.items()}
            ref = net.head(qf, sf, text, qp, sp)["query_logits"].numpy()
        else:
            from edgefss.transforms import resize_mask

            given = torch.from_numpy(resize_mask(load_mask(s_mask), (imgsz, imgsz)).astype(np.float32))[None]
            seg.set_support([s_img], [cls], masks=[s_mask])
            pred = seg.predict(q_img)
            eq, es = net.encode(xq), net.encode(xs)
            out = net.head(eq["query_feats"], es["support_feats"], given)
            ref = out["seg_logits"].numpy()
            p_cls = torch.softmax(out["cls_logits"], dim=1)[:, 1].numpy()
            np.testing.assert_allclose(pred.probs, p_cls, atol=1e-4)
    assert pred.logits.shape == ref.shape
    assert np.abs(pred.logits - ref).max() <= 1e-4
    if model == "cst":
        # the split path: edgefss.ops correlation + the exported learner graph, same logits
        from edgefss.ops import has_native

        for ops in ("reference",) + (("native",) if has_native() else ()):
            split = Segmenter.load(bundle, backend="onnxruntime", ops=ops)
            split.set_support([s_img], [cls], masks=[s_mask])
            assert split.ops_path == ops
            assert np.abs(split.predict(q_img).logits - ref).max() <= 1e-4
