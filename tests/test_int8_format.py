"""ONNX Runtime INT8 format per target instruction set (edgefss.quant.ort_int8): ISA detection,
the format choice and the one mismatch that is refused, constant-Identity folding so ORT can fuse
integer convolutions, and streamed calibration ranges equal to min/max over every sample."""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgefss.errors import InputError  # noqa: E402
from edgefss.quant import ort_int8 as Q  # noqa: E402

X86 = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse4_2 avx2 fma {}\n"


def test_target_isa_from_cpuinfo_and_format_choice():
    assert Q.target_isa(X86.format("avx512f avx512_vnni")) == "avx512_vnni"
    assert Q.target_isa(X86.format("avx_vnni")) == "avx_vnni"
    assert Q.target_isa(X86.format("")) == "avx2"
    assert Q.target_isa("processor\t: 0\nFeatures\t: fp asimd asimddp\n") == "neon_dot"
    assert Q.target_isa("") == "generic"
    assert Q.format_for("avx512_vnni") == "qdq_u8s8_pc" and Q.format_for("avx2") == "qdq_s8s8_pc"
    with pytest.raises(InputError, match="instruction set"):
        Q.format_for("sse2")


def test_only_u8s8_on_x86_without_vnni_is_refused():
    u8 = {"format": "qdq_u8s8_pc", "target_isa": "avx512_vnni"}
    assert "saturate" in Q.check_target(u8, "avx2")
    assert Q.check_target(u8, "avx512_vnni") is None and Q.check_target(u8, "neon_dot") is None
    assert Q.check_target({"format": "qdq_s8s8_pc", "target_isa": "avx2"}, "avx512_vnni") is None
    assert Q.check_target({}, "avx2") is None  # bundles from before the field: nothing to judge


def _shared_bias_convnet(path, seed=0):
    """x -> Conv(w1, b) -> Relu -> Conv(w2, Identity(b)) -> Relu -> y: the second bias is read
    through an Identity, as torch.onnx writes deduplicated constants."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = lambda n, *s: numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)  # noqa: E731
    nodes = [
        helper.make_node("Identity", ["b"], ["b_copy"], name="dedup"),
        helper.make_node("Conv", ["x", "w1", "b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b_copy"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b"], ["y"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    inits = [w("w1", 16, 3, 3, 3), w("w2", 16, 16, 3, 3), w("w3", 16, 16, 3, 3), w("b", 16)]
    g = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 24, 24])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 24, 24])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))


def _optimized_ops(path, tmp_path) -> list[str]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


def test_identity_folding_lets_ort_run_every_conv_as_integer(tmp_path):
    _shared_bias_convnet(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 24, 24)).astype(np.float32)} for _ in range(6)]
    info = Q.quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds, keep_last=False,
                           fmt="qdq_u8s8_pc", isa="avx512_vnni")
    assert info["folded_identities"] == 1 and info["quantized_nodes"] == 3
    assert info["format"] == "qdq_u8s8_pc" and info["target_isa"] == "avx512_vnni"
    ops = _optimized_ops(tmp_path / "q.onnx", tmp_path)
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops and "FusedConv" not in ops, ops
    x = feeds[2]
    ref = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert 0.99 < cos <= 1.0 + 1e-6


def test_streamed_calibration_ranges_cover_every_sample(tmp_path):
    # the input's range must be the min/max over all samples, not over the last chunk: the
    # largest value sits in the first sample
    _shared_bias_convnet(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((1, 3, 24, 24)).astype(np.float32)} for _ in range(5)]
    feeds[0]["x"][0, 0, 0, 0] = 9.0
    feeds[3]["x"][0, 1, 1, 1] = -7.0
    Q.quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", feeds, keep_last=False, fmt="qdq_u8s8_pc",
                    isa="avx512_vnni", cache_path=tmp_path / "c.json")
    text = (tmp_path / "c.json").read_text()
    cache = json.loads(text)
    blob = json.dumps(cache)
    assert "9.0" in blob and "-7.0" in blob, blob[:500]
