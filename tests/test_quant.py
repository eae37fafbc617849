"""edgefss.quant (torch-free): episodes, calibration reader, exclusion policy, QDQ, the gate."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgefss.errors import InputError
from edgefss.quant.episodes import find_episodes
from edgefss.quant import gate as G
from edgefss.quant.gate import agreement, cosine, mask_iou
from edgefss.quant.reader import FeedReader

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _engine(path, backend="onnxruntime", precision="fp32"):
    """fn(feeds) -> outputs over one graph file, opened as the runtime opens bundles."""
    from edgefss.runtime.session import open_graphs

    be = open_graphs(backend, precision, {"g": path})
    return lambda feeds: be.run("g", feeds)


def test_quant_never_imports_torch():
    code = ("import sys, edgefss.quant, edgefss.quant.ort_int8, edgefss.quant.nncf_int8, edgefss.quant.pipeline, "
            "edgefss.quant.gate, edgefss.formats, edgefss.runtime.session; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_episodes_pair_same_class_from_every_default_folder(shared_data):
    folders = [shared_data / f for f in ("davis2016_val_subset", "coco_tiny16", "fss1000_example_eiffel",
                                         "perseg_examples")]
    eps = find_episodes(folders, 40, shots=1, seed=0)
    assert len(eps) == 40
    for e in eps:
        assert len(e.support) == 1 and e.query.cls == e.support[0].cls == e.cls
        assert e.query.image != e.support[0].image or e.query.mask != e.support[0].mask
        assert e.query.image.is_file() and e.query.mask is not None and e.query.mask.is_file()
    roots = {next(p for p in e.query.image.parents if p.parent == shared_data).name for e in eps}
    assert roots == {f.name for f in folders}  # round-robin over classes reaches every folder
    # the FSS-1000 layout: masks (N.png) are never taken as images
    assert not any(e.query.image.suffix == ".png" and e.query.image.with_suffix(".jpg").exists() for e in eps)
    assert [e.query.image for e in find_episodes(folders, 40, seed=0)] == [e.query.image for e in eps]


def test_episodes_plain_folder_and_errors(tmp_path):
    cv2 = pytest.importorskip("cv2")
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / cls / f"{i}.jpg"), np.full((20, 20, 3), 40 * i, np.uint8))
    eps = find_episodes(tmp_path, 10, shots=2)
    assert len(eps) == 2 and {e.cls for e in eps} == {"a", "b"}
    assert all(s.mask is None for e in eps for s in e.support)
    with pytest.raises(InputError, match="at least 4 images"):
        find_episodes(tmp_path, 5, shots=3)
    with pytest.raises(InputError, match="not a directory"):
        find_episodes(tmp_path / "missing", 5)


def test_feed_reader_protocol():
    feeds = [{"x": np.full((1,), i, np.float32)} for i in range(5)]
    r = FeedReader(feeds)
    assert len(r) == 5
    got = [r.get_next()["x"][0] for _ in range(5)]
    assert got == [0, 1, 2, 3, 4] and r.get_next() is None
    r.rewind()
    assert r.get_next()["x"][0] == 0
    r.set_range(2, 4)
    assert len(r) == 2 and [r.get_next()["x"][0], r.get_next()["x"][0]] == [2, 3] and r.get_next() is None
    with pytest.raises(InputError):
        r.set_range(3, 9)
    with pytest.raises(InputError):
        FeedReader([])


def _tiny_convnet(path, seed=0):
    """x (1,3,16,16) -> Conv -> Relu -> Conv -> (+ x-branch Conv) Add -> Conv 'last' -> y."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w3", "b3"], ["c3"], name="conv_skip"),
        helper.make_node("Add", ["c2", "c3"], ["a"], name="residual_add"),
        helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
        helper.make_node("Conv", ["s", "w4", "b4"], ["y"], name="conv_last"),
    ]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("b2", 8), w("w3", 8, 3, 1, 1), w("b3", 8),
             w("w4", 2, 8, 1, 1), w("b4", 2)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return m


def test_exclusion_policy_keeps_non_conv_and_last_layer_float(tmp_path):
    from edgefss.quant.ort_int8 import exclusion_policy, last_layers

    m = _tiny_convnet(tmp_path / "m.onnx")
    assert last_layers(m) == ["conv_last"]
    assert exclusion_policy(m, keep_last=True) == sorted(["relu1", "residual_add", "sig", "conv_last"])
    assert "conv_last" not in exclusion_policy(m, keep_last=False)
    assert "conv1" in exclusion_policy(m, keep_last=False, extra=("conv1",))


def test_quantize_onnx_s8s8_per_channel_and_accuracy(tmp_path):
    from onnx import numpy_helper

    from edgefss.quant.ort_int8 import quantize_onnx

    _tiny_convnet(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    info = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds, keep_last=True,
                         cache_path=tmp_path / "c.json", fmt="qdq_s8s8_pc")
    assert info["quantizable_nodes"] == 4 and info["quantized_nodes"] == 3 and info["excluded_last"] == ["conv_last"]
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    zps = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)  # S8, symmetric (zero point 0)
    dq_w = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].ndim == 4]
    assert dq_w and all(inits[n.input[1]].size > 1 for n in dq_w)  # per-channel weight scales
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    last = next(n for n in q.graph.node if n.name == "conv_last")
    assert not any(i in dq_out for i in last.input[1:])  # last layer's weights stay float
    x = feeds[3]
    ref, got = _engine(tmp_path / "m.onnx")(x)["y"], _engine(tmp_path / "q.onnx", precision="int8")(x)["y"]
    c = cosine(ref, got)
    print(f"tiny convnet INT8 vs FP32 cosine {c:.5f}")
    assert 0.99 < c < 1.0
    # re-quantizing with the cache and one more exclusion needs no feeds and keeps conv1 float
    info2 = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q2.onnx", feeds[:1], keep_last=True,
                          extra_exclude=("conv1",), cache_path=tmp_path / "c.json", fmt="qdq_s8s8_pc")
    assert info2["quantized_nodes"] == 2


def _tiny_attention(path, seed=0, n=16, d=32, heads=2):
    """x (1,n,d) -> MatMul qkv -> Split -> com.microsoft.MultiHeadAttention -> MatMul proj -> y,
    the fused form the CST encoder is exported with. Returns (model, numpy reference fn)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    wqkv = (rng.standard_normal((d, 3 * d)) / np.sqrt(d)).astype(np.float32)  # unit-variance q, k, v
    wo = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "wqkv"], ["qkv"], name="qkv"),
        helper.make_node("Split", ["qkv", "split"], ["q", "k", "v"], name="split", axis=-1),
        helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["att"], name="mha", domain="com.microsoft",
                         num_heads=heads),
        helper.make_node("MatMul", ["att", "wo"], ["y"], name="proj"),
    ]
    inits = [numpy_helper.from_array(wqkv, "wqkv"), numpy_helper.from_array(wo, "wo"),
             numpy_helper.from_array(np.array([d, d, d], np.int64), "split")]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n, d]) for name in ("x", "y")]
    g = helper.make_graph(nodes, "tiny_attn", io[:1], io[1:], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 9
    onnx.save(m, str(path))

    def reference(x):
        q, k, v = np.split(x[0] @ wqkv, 3, axis=-1)
        hd = d // heads
        out = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
            p = np.exp(s - s.max(-1, keepdims=True))
            out.append((p / p.sum(-1, keepdims=True)) @ v[:, sl])
        return (np.concatenate(out, -1) @ wo)[None]

    return m, reference


def test_quantize_onnx_keeps_fused_attention_float(tmp_path):
    from edgefss.quant.ort_int8 import quantize_onnx

    _, reference = _tiny_attention(tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(16)]
    x = feeds[5]
    assert np.abs(_engine(tmp_path / "m.onnx")(x)["y"] - reference(x["x"])).max() < 1e-4
    info = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds, keep_last=False)
    assert info["quantizable_nodes"] == 2 and info["quantized_nodes"] == 2  # both projections are INT8
    q = onnx.load(str(tmp_path / "q.onnx"))
    mha = [n for n in q.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 1 and mha[0].domain == "com.microsoft"
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not any(i in dq_out for i in mha[0].input)  # the attention reads float q, k, v
    c = cosine(reference(x["x"]), _engine(tmp_path / "q.onnx", precision="int8")(x)["y"])
    print(f"tiny attention INT8 vs float cosine {c:.5f}")  # 0.991 with onnxruntime 1.32
    assert 0.98 < c < 1.0


def test_gate_figures_against_direct_computation():
    a = np.zeros((1, 4, 4), bool)
    a[0, :2] = True  # fg fraction 0.5: informative
    b = np.zeros((1, 4, 4), bool)
    b[0, 1:3] = True
    empty = np.zeros((1, 4, 4), bool)
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    x = np.array([1.0, 2.0, 3.0])
    assert cosine(x, -x) == pytest.approx(-1.0) and cosine(x, 2 * x) == pytest.approx(1.0)
    # the empty-mask episode agrees trivially (IoU 1) and is left out of the mask IoU
    r = agreement([{"o": x}] * 3, [{"o": x}, {"o": x + [0, 0, 1]}, {"o": x}], [a, a, empty], [a, b, empty],
                  threshold=0.7)
    assert r.per_episode == pytest.approx([1.0, 4 / 12, 1.0]) and r.informative_episodes == [0, 1]
    assert r.agreement == pytest.approx((1 + 4 / 12) / 2) and r.status == G.FAIL and not r.passed
    assert r.cosine["o"] == pytest.approx(float(x @ (x + [0, 0, 1]) / np.linalg.norm(x) / np.linalg.norm(x + [0, 0, 1])))
    assert r.fg_fraction == pytest.approx(1 / 3)
    d = r.to_dict()
    assert "FAIL" in r.summary() and d["status"] == "fail" and d["informative_episodes"] == 2
    assert d["failures"] == [f"mask IoU {r.agreement:.4f} < 0.7 on 2 informative episodes"]
    r2 = agreement([{"o": x}] * 2, [{"o": x}] * 2, [a, empty], [a, empty], threshold=0.7)
    assert r2.status == G.PASS and r2.agreement == 1.0 and r2.to_dict()["failures"] == []


def _seg_pair(rng, noise):
    """FP32 (2,2,4,4) logits and a copy whose fg-bg margin carries `noise` x its spread."""
    seg = rng.standard_normal((2, 2, 4, 4))
    q = seg.copy()
    q[:, 1] += noise * rng.standard_normal((2, 4, 4))
    return seg, q


def test_gate_fails_inverted_margins_and_flipped_presence_even_with_empty_masks():
    """All-background FP32 masks make mask IoU trivially 1; the margin correlation and presence
    figures still see an INT8 model whose margins are inverted (r = -1) and half of whose presence
    decisions flip: the gate FAILS (it used to pass on the masks alone)."""
    empty = np.zeros((2, 4, 4), bool)
    rng = np.random.default_rng(0)
    seg = rng.standard_normal((2, 2, 4, 4))
    seg_q = seg.copy()
    seg_q[:, 1] = seg[:, 0] - (seg[:, 1] - seg[:, 0])  # INT8 margin = -FP32 margin
    cls = np.array([[0.0, 1.0], [1.0, 0.0]])
    cls_q = np.array([[0.0, 2.0], [0.5, 1.0]])        # first decision kept, second flipped
    r = agreement([{"head.seg": seg, "head.cls": cls}], [{"head.seg": seg_q, "head.cls": cls_q}],
                  [empty], [empty], threshold=0.9)
    assert r.per_episode == [1.0] and r.agreement is None and not r.informative
    assert r.margin_corr["head.seg"] == pytest.approx(-1.0) and r.presence["head.cls"] == pytest.approx(0.5)
    assert r.status == G.FAIL and not r.passed
    assert len(r.failures()) == 2 and "margin r -1.0000" in r.failures()[0] and "presence kept 0.500" in r.failures()[1]
    assert "FAIL" in r.summary() and r.to_dict()["status"] == "fail"


def test_gate_uninformative_when_masks_are_trivial_but_nothing_failed():
    empty = np.zeros((2, 4, 4), bool)
    full = np.ones((2, 4, 4), bool)
    rng = np.random.default_rng(1)
    seg, seg_q = _seg_pair(rng, 0.05)  # small INT8 noise: r ~ 0.999
    cls = np.array([[0.0, 1.0], [1.0, 0.0]])
    r = agreement([{"head.seg": seg, "head.cls": cls}] * 2, [{"head.seg": seg_q, "head.cls": cls + 0.1}] * 2,
                  [empty, full], [empty, full], threshold=0.95)
    assert r.failures() == [] and r.status == G.UNINFORMATIVE and not r.passed
    assert r.margin_corr["head.seg"] > G.MIN_MARGIN_R and r.presence["head.cls"] == 1.0
    assert "UNINFORMATIVE" in r.summary() and r.to_dict()["mask_iou"] is None


@pytest.mark.parametrize("noise, status", [(0.05, G.PASS), (1.0, G.FAIL)])
def test_gate_margin_threshold_decides(noise, status):
    """Same masks (informative, identical): the margin correlation alone decides."""
    half = np.zeros((2, 4, 4), bool)
    half[:, :2] = True
    seg, seg_q = _seg_pair(np.random.default_rng(2), noise)
    r = agreement([{"head.seg": seg}], [{"head.seg": seg_q}], [half], [half], threshold=0.95)
    expect = pearson_by_hand(seg[:, 1] - seg[:, 0], seg_q[:, 1] - seg_q[:, 0])
    assert r.margin_corr["head.seg"] == pytest.approx(expect) and r.agreement == 1.0
    assert (expect >= G.MIN_MARGIN_R) == (status == G.PASS) and r.status == status


def pearson_by_hand(a, b):
    a, b = a.ravel(), b.ravel()
    n = a.size
    cov = (a * b).sum() / n - a.mean() * b.mean()
    return cov / np.sqrt(((a * a).sum() / n - a.mean() ** 2) * ((b * b).sum() / n - b.mean() ** 2))


@pytest.mark.openvino
def test_nncf_quantize_tiny_graph(tmp_path):
    pytest.importorskip("nncf")
    from edgefss.quant.nncf_int8 import quantize_ov

    _tiny_convnet(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    info = quantize_ov(tmp_path / "m.onnx", tmp_path / "q.xml", feeds, transformer=False, ignored=["conv_last"])
    assert (tmp_path / "q.bin").is_file() and info["subset_size"] == 8
    assert "FakeQuantize" in (tmp_path / "q.xml").read_text()
    c = cosine(_engine(tmp_path / "m.onnx")(feeds[0])["y"],
               _engine(tmp_path / "q.xml", "openvino", "int8")(feeds[0])["y"])
    print(f"tiny convnet NNCF INT8 vs FP32 cosine {c:.5f}")
    assert c > 0.98


def _conv_eltwise_net(path):
    """x (1,3,16,16) -> conv -> (h - mean(h)) / sqrt(var + eps) * g + b (a GroupNorm-like chain of
    elementwise ops) -> conv -> y: convolutions with normalisation arithmetic between them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w1", (8, 3, 3, 3)), ("w2", (4, 8, 3, 3)), ("g", (1, 8, 1, 1)), ("b", (1, 8, 1, 1)))]
    inits.append(numpy_helper.from_array(np.array([1e-5], np.float32), "eps"))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["h"], ["mu"], name="mean", axes=[2, 3]),
        helper.make_node("Sub", ["h", "mu"], ["c"], name="sub"),
        helper.make_node("Mul", ["c", "c"], ["c2"], name="sq"),
        helper.make_node("ReduceMean", ["c2"], ["var"], name="var", axes=[2, 3]),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
        helper.make_node("Div", ["c", "sd"], ["n"], name="div"),
        helper.make_node("Mul", ["n", "g"], ["ng"], name="scale"),
        helper.make_node("Add", ["ng", "b"], ["nb"], name="shift"),
        helper.make_node("Conv", ["nb", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "convnorm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _fq_consumers(xml) -> set:
    import openvino as ov

    kinds = set()
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() == "FakeQuantize":
            kinds |= {t.get_node().get_type_name() for out in op.outputs() for t in out.get_target_inputs()}
    return kinds


@pytest.mark.openvino
def test_nncf_head_policy_quantizes_only_convolutions_and_matmuls(tmp_path):
    """Heads on OpenVINO follow the ONNX Runtime policy: FakeQuantize feeds only Convolution/MatMul,
    never the normalisation arithmetic between them (NNCF's defaults quantize that too)."""
    pytest.importorskip("nncf")
    from edgefss.quant.nncf_int8 import HEAD_QUANT_TYPES, quantize_ov

    _conv_eltwise_net(tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    info = quantize_ov(tmp_path / "m.onnx", tmp_path / "q.xml", feeds, transformer=False, ignored=[],
                       only_types=HEAD_QUANT_TYPES)
    assert _fq_consumers(tmp_path / "q.xml") == {"Convolution"}
    assert info["quantized_op_types"] == list(HEAD_QUANT_TYPES)
    quantize_ov(tmp_path / "m.onnx", tmp_path / "d.xml", feeds, transformer=False, ignored=[])
    assert _fq_consumers(tmp_path / "d.xml") - {"Convolution", "MatMul"}  # what the policy removes
    c = cosine(_engine(tmp_path / "m.onnx")(feeds[0])["y"], _engine(tmp_path / "q.xml", "openvino", "int8")(feeds[0])["y"])
    assert c > 0.98


def test_activation_matmuls_are_quantized_and_counted(tmp_path):
    """Activation x activation MatMuls (correlations) are quantized like weight MatMuls (the policy
    of quant/ort_int8.py), and the info the manifest records counts them; a weight read through a
    Transpose is a constant, so that MatMul is not an activation MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    from edgefss.quant.ort_int8 import activation_matmuls, exclusion_policy, quantize_onnx

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 8)) / 3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((8, 8)) / 3).astype(np.float32), "w2")
    w3 = numpy_helper.from_array((rng.standard_normal((6, 4)) / 3).astype(np.float32), "w3")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="proj"),
        helper.make_node("Transpose", ["w2"], ["w2t"], name="w2_t"),
        helper.make_node("MatMul", ["a", "w2t"], ["b"], name="proj_t"),
        # as the heads' cosine normalisation: a float op between the projection and the correlation
        helper.make_node("Div", ["b", "two"], ["bn"], name="norm"),
        helper.make_node("Transpose", ["bn"], ["bt"], name="b_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["bn", "bt"], ["corr"], name="corr"),
        helper.make_node("MatMul", ["corr", "w3"], ["y"], name="out"),
    ]
    g = helper.make_graph(nodes, "corr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4])],
                          [w1, w2, w3, numpy_helper.from_array(np.float32(2.0), "two")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "m.onnx"))
    assert activation_matmuls(m) == ["corr"]
    assert "corr" not in exclusion_policy(m, keep_last=False) and "norm" in exclusion_policy(m, keep_last=False)
    feeds = [{"x": rng.standard_normal((1, 6, 8)).astype(np.float32)} for _ in range(8)]
    info = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds, keep_last=False)
    assert info["quantizable_nodes"] == 4 and info["quantized_nodes"] == 4 and info["activation_matmuls_int8"] == 1
    q = onnx.load(str(tmp_path / "q.onnx"))
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    corr = next(n for n in q.graph.node if n.name == "corr")
    assert all(i in dq_out for i in corr.input)  # both correlation inputs quantized
    proj_t = next(n for n in q.graph.node if n.name == "proj_t")
    assert proj_t.input[1] in dq_out  # the transposed weight is quantized
