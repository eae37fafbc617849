"""edgefss.benchmark.flops against MACs worked out by hand from each op's definition."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

from edgefss.benchmark.flops import graph_macs, macs_summary, mixed_ideal_ms


def _model(nodes, inputs, outputs, inits=(), ms=False):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          initializer=list(inits))
    ops = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    return helper.make_model(g, opset_imports=ops)


def _w(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


def test_conv_groups_stride_dilation_pads():
    # X (2,8,17,19), W (12, 8/2, 3,3), stride (2,1), dilation (1,2), pads top 1 left 0 bottom 1 right 2
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", group=2, strides=[2, 1], dilations=[1, 2],
                            pads=[1, 0, 1, 2])
    (r,) = graph_macs(_model([node], [("x", [2, 8, 17, 19])], ["y"], [_w("w", [12, 4, 3, 3])]))
    oh = (17 + 2 - 1 * (3 - 1) - 1) // 2 + 1  # 9
    ow = (19 + 2 - 2 * (3 - 1) - 1) // 1 + 1  # 17
    assert (oh, ow) == (9, 17)
    # every output element: C/groups input channels x 3x3 taps
    assert r["macs"] == 2 * 12 * oh * ow * 4 * 3 * 3
    assert r["precision"] == "fp32" and r["op_type"] == "Conv"


def test_conv3d_and_conv_transpose():
    c3 = helper.make_node("Conv", ["x", "w"], ["y"], name="c3", pads=[1] * 6)
    ct = helper.make_node("ConvTranspose", ["z", "wt"], ["t"], name="ct", strides=[2, 2])
    recs = graph_macs(_model([c3, ct], [("x", [1, 3, 5, 6, 7]), ("z", [1, 4, 5, 5])], ["y", "t"],
                             [_w("w", [4, 3, 3, 3, 3]), _w("wt", [4, 3, 3, 3])]))
    by = {r["name"]: r["macs"] for r in recs}
    assert by["c3"] == 1 * 4 * (5 * 6 * 7) * 3 * 27  # 'same' padding keeps 5x6x7
    assert by["ct"] == 1 * 4 * 25 * 3 * 9  # each input element scatters into M x 3x3 outputs


def test_matmul_broadcast_gemm_fusedmatmul():
    mm = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    gm = helper.make_node("Gemm", ["p", "q"], ["g"], name="gm", transB=1)
    fm = helper.make_node("FusedMatMul", ["f1", "f2"], ["f"], name="fm", domain="com.microsoft", transB=1)
    recs = graph_macs(_model([mm, gm, fm], [("a", [3, 1, 5, 7]), ("b", [4, 7, 2]), ("p", [6, 9]),
                                            ("f1", [2, 5, 8]), ("f2", [2, 3, 8])], ["y", "g", "f"],
                             [_w("q", [11, 9])], ms=True))
    by = {r["name"]: r["macs"] for r in recs}
    assert by["mm"] == (3 * 4) * 5 * 7 * 2  # batch (3,1) x (4,) broadcasts to 3x4
    assert by["gm"] == 6 * 9 * 11
    assert by["fm"] == 2 * 5 * 8 * 3  # B^T: (2,8,3)


def test_multihead_attention_counts_qk_and_av():
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"], name="mha", domain="com.microsoft",
                            num_heads=4)
    (r,) = graph_macs(_model([node], [("q", [2, 10, 16]), ("k", [2, 12, 16]), ("v", [2, 12, 16])], ["o"], ms=True))
    # Q K^T: B*Nq*Nk*D, softmax(.) V: B*Nq*Nk*D
    assert r["macs"] == 2 * 2 * 10 * 12 * 16
    assert r["precision"] == "fp32"


def test_dynamic_dims_from_input_shapes():
    node = helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")
    m = _model([node], [("a", ["B", 5, 7])], ["y"], [_w("w", [7, 3])])
    assert graph_macs(m)[0]["macs"] == 5 * 7 * 3  # unknown batch -> 1
    assert graph_macs(m, {"a": [4, 5, 7]})[0]["macs"] == 4 * 5 * 7 * 3
    with pytest.raises(ValueError, match="nope"):
        graph_macs(m, {"nope": [1]})


def _qdq_conv_graph():
    """x -> Q -> DQ -> Conv(W from DQ(int8)) -> y1 (int8 kernel in ORT); x -> Conv(float W) -> y2;
    x -> Conv(W from DQ, activation float) -> y3 (not an integer kernel)."""
    sc = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    zp = numpy_helper.from_array(np.array(0, np.uint8), "zp")
    wq = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.int8), "wq")
    wzp = numpy_helper.from_array(np.array(0, np.int8), "wzp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "sc", "zp"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["wq", "sc", "wzp"], ["wd"], name="dqw"),
             helper.make_node("Identity", ["wd"], ["wdi"], name="id"),
             helper.make_node("Conv", ["xd", "wdi"], ["y1"], name="qconv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wf"], ["y2"], name="fconv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wd"], ["y3"], name="halfconv", pads=[1, 1, 1, 1])]
    return _model(nodes, [("x", [1, 3, 16, 16])], ["y1", "y2", "y3"], [sc, zp, wq, wzp, _w("wf", [8, 3, 3, 3])])


def test_qdq_conv_counts_as_int8():
    recs = graph_macs(_qdq_conv_graph())
    per = 1 * 8 * 16 * 16 * 3 * 9
    assert {r["name"]: (r["macs"], r["precision"]) for r in recs} == {
        "qconv": (per, "int8"), "fconv": (per, "fp32"), "halfconv": (per, "fp32")}
    s = macs_summary(recs)
    assert (s["int8_macs"], s["fp32_macs"], s["unknown"]) == (per, 2 * per, [])


def test_integer_ops_are_int8():
    zp8 = numpy_helper.from_array(np.array(0, np.uint8), "zp8")
    sc = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    w = numpy_helper.from_array(np.ones((4, 6), np.int8), "w")
    wz = numpy_helper.from_array(np.array(0, np.int8), "wz")
    nodes = [helper.make_node("QuantizeLinear", ["a", "sc", "zp8"], ["aq"], name="q"),
             helper.make_node("MatMulInteger", ["aq", "w", "zp8", "wz"], ["m"], name="mmi"),
             helper.make_node("QLinearMatMul", ["aq", "sc", "zp8", "w", "sc", "wz", "sc", "zp8"], ["qm"], name="qmm")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 5, 4])],
                          [helper.make_tensor_value_info("m", TensorProto.INT32, None),
                           helper.make_tensor_value_info("qm", TensorProto.UINT8, None)], initializer=[zp8, sc, w, wz])
    recs = graph_macs(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert {r["name"]: (r["macs"], r["precision"]) for r in recs} == {
        "mmi": (3 * 5 * 4 * 6, "int8"), "qmm": (3 * 5 * 4 * 6, "int8")}


def test_project_quantizer_output_counts_as_int8(tmp_path):
    # the project's own ONNX Runtime INT8 path (QDQ): its convs must come out int8, MACs unchanged
    pytest.importorskip("onnxruntime")
    from edgefss.quant.ort_int8 import quantize_onnx

    m = _model([helper.make_node("Conv", ["x", "w"], ["h"], name="c1", pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["h"], ["r"], name="relu"),
                helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])],
               [("x", [1, 3, 16, 16])], ["y"],
               [numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
                numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")])
    fp = tmp_path / "f.onnx"
    onnx.save(m, str(fp))
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(4)]
    q = tmp_path / "q.onnx"
    quantize_onnx(fp, q, feeds, keep_last=False)
    f32, i8 = macs_summary(graph_macs(fp)), macs_summary(graph_macs(q))
    assert f32["fp32_macs"] == 16 * 16 * (8 * 3 * 9 + 4 * 8 * 9) and f32["int8_macs"] == 0
    assert i8["int8_macs"] == f32["fp32_macs"] and i8["fp32_macs"] == 0


def test_mixed_ideal_ms():
    # 10 G int8 MACs at 1000 G ops/s + 5 G fp32 MACs at 250 G ops/s: 20 ms + 40 ms
    assert mixed_ideal_ms(5e9, 10e9, 250.0, 1000.0) == pytest.approx(60.0)


# ------------------------------------------------------------------------------------------- torch
def test_count_macs_includes_cpu_attention():
    torch = pytest.importorskip("torch")
    from edgefss.benchmark.flops import count_macs
    from edgefss.models.dino_vit import Block

    n, d, heads = 37, 32, 2
    blk = Block(d, heads).eval()
    hidden = blk.mlp.fc1.out_features
    x = torch.randn(1, n, d)
    with torch.no_grad():
        macs = count_macs(lambda: blk(x))
    linear = n * (d * 3 * d + d * d + d * hidden + hidden * d)  # qkv, proj, fc1, fc2
    attention = 2 * n * n * d  # Q K^T and A V over all heads: 2 N^2 D
    assert macs == linear + attention


def test_count_torch_uses_the_attention_counter():
    torch = pytest.importorskip("torch")
    from edgefss.benchmark.worker import count_torch
    from edgefss.models.dino_vit import Block

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 32, 8, stride=8)
            self.block = Block(32, 2)

        def encode(self, x):
            return self.block(self.backbone(x).flatten(2).transpose(1, 2))

    m = Tiny().eval()
    out = count_torch(m, 48)  # 6x6 = 36 tokens
    n, d, hid = 36, 32, m.block.mlp.fc1.out_features
    macs = n * 32 * 3 * 64 + n * (d * 3 * d + d * d + 2 * d * hid) + 2 * n * n * d
    assert out["backbone_gmacs"] * 1e9 == pytest.approx(macs, rel=1e-12)


# ------------------------------------------------------------------------------------ benchmark rows
def test_int8_row_gets_a_mixed_roofline_fp32_row_the_plain_one():
    from edgefss.benchmark import engine as E

    peaks = {"peaks": {"fp32_fma_avx2": 230.0, "fp32_fma_avx512": 223.0, "int8_vnni_avx512": 928.0}, "threads": 2}
    base = {"model": "cst", "backend": "onnxruntime", "size": 400, "status": "ok", "backbone_gmacs": 110.0,
            "encode_ms": 700.0}
    i8 = {**base, "precision": "int8", "backbone_gflops_s": 2 * 110.0 / 0.7,
          "encoder_int8_gmacs": 50.0, "encoder_fp32_gmacs": 60.0}
    f32 = {**base, "precision": "fp32", "backbone_gflops_s": 2 * 110.0 / 0.7}
    lines = E.roofline_lines([i8, f32], peaks)
    ideal = (2 * 50e9 / 928e9 + 2 * 60e9 / 230e9) * 1e3  # each part at its own instruction set's peak
    assert i8["roofline_pct"] == pytest.approx(100 * ideal / 700.0)
    assert "mixed: 100.00 G int8 ops + 120.00 G fp32 ops" in lines[0]
    assert f32["roofline_pct"] == pytest.approx(100 * (2 * 110.0 / 0.7) / 230.0)
    assert "mixed" not in lines[1]


def test_encoder_split_reads_the_bundles_encoder(tmp_path):
    from _bundles import write_bundle

    from edgefss.benchmark import engine as E

    b = write_bundle(tmp_path / "b", "tlg", {"encoder": _qdq_conv_graph()},
                     {"encoder": ([("x", [1, 3, 16, 16])], [("y1", [1, 8, 16, 16]), ("y2", [1, 8, 16, 16]),
                                                             ("y3", [1, 8, 16, 16])])}, imgsz=16, precision="int8")
    per = 8 * 16 * 16 * 3 * 9
    assert E.encoder_split(b) == {"encoder_int8_gmacs": per / 1e9, "encoder_fp32_gmacs": 2 * per / 1e9}


def test_recount_an_earlier_run(tmp_path):
    # python -m edgefss.benchmark.recount: an old latency.json's rows recounted from their bundles
    from _bundles import write_bundle

    from edgefss.benchmark import recount as RC

    io = {"encoder": ([("x", [1, 3, 16, 16])], [("y1", [1, 8, 16, 16]), ("y2", [1, 8, 16, 16]),
                                                 ("y3", [1, 8, 16, 16])])}
    write_bundle(tmp_path / "bundles" / "tlg_16_onnxruntime_int8", "tlg", {"encoder": _qdq_conv_graph()}, io,
                 imgsz=16, precision="int8")
    row = {"model": "tlg", "backend": "onnxruntime", "precision": "int8", "size": 16, "status": "ok",
           "encode_ms": 1.0, "backbone_gmacs": 1.0}
    missing = {**row, "backend": "openvino"}
    (tmp_path / "latency.json").write_text(json.dumps({"rows": [row, missing], "machine": {"peaks": {
        "threads": 2, "peaks": {"fp32_fma_avx2": 100.0, "int8_vnni_avx512": 400.0}}}}))
    lines = RC.recount(tmp_path / "latency.json")
    per = 8 * 16 * 16 * 3 * 9
    assert f"encoder {3 * per / 1e9:.2f} GMACs (the run recorded 1.00)" in lines[0]
    assert "no bundle to count" in lines[1]
    ideal = (2 * per / 400e9 + 2 * 2 * per / 100e9) * 1e3
    assert f"needs >= {ideal:.1f} ms" in lines[2] and f"= {100 * ideal / 1.0:.0f} %" in lines[2]


def test_openvino_ir_counter_and_nncf_int8_pattern():
    # NNCF's quantized IR: activations through FakeQuantize, weights i8 Constant -> Convert -> Multiply
    pytest.importorskip("openvino")
    import openvino as ov
    from openvino import opset13 as ops

    from edgefss.benchmark.flops import ov_model_macs

    x = ops.parameter([1, 3, 16, 16], np.float32, name="x")
    lo, hi = ops.constant(np.float32(-1)), ops.constant(np.float32(1))
    xq = ops.fake_quantize(x, lo, hi, lo, hi, 256)
    wq = ops.multiply(ops.convert(ops.constant(np.ones((8, 3, 3, 3), np.int8)), np.float32),
                      ops.constant(np.float32(0.1)))
    qconv = ops.convolution(xq, wq, [1, 1], [1, 1], [1, 1], [1, 1])
    qconv.set_friendly_name("qconv")
    fconv = ops.convolution(x, ops.constant(np.ones((8, 3, 3, 3), np.float32)), [2, 2], [0, 0], [0, 0], [1, 1])
    fconv.set_friendly_name("fconv")
    q, k, v = (ops.parameter([1, 2, 10, 4], np.float32, name=n) for n in "qkv")
    att = ops.scaled_dot_product_attention(q, k, v, causal=False)
    att.set_friendly_name("sdpa")
    m = ov.Model([qconv, fconv, att], [x, q, k, v])
    got = {r["name"]: (r["macs"], r["precision"]) for r in ov_model_macs(m)}
    assert got["qconv"] == (8 * 16 * 16 * 27, "int8")
    assert got["fconv"] == (8 * 7 * 7 * 27, "fp32")  # (16 - 3) // 2 + 1 = 7
    assert got["sdpa"] == (2 * 2 * 10 * 10 * 4, "fp32")  # B*H * Nq*Nk * (d + dv)
