"""bench/profile_graph.py on a tiny hand-built bundle: per-op-type time, MACs and lower bound."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
CONV_MACS = 1 * 8 * 24 * 24 * 3 * 9  # (N, M, H, W) x C x 3x3
MM_MACS = 24 * 24 * 8 * 5  # (576, 8) @ (8, 5)


def _bundle(tmp_path):
    from _bundles import write_bundle

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
             helper.make_node("Transpose", ["r"], ["t"], name="/t/Transpose", perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["t", "m"], ["feats"], name="/proj/MatMul")]
    g = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 24, 24])],
                          [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 24, 24, 5])],
                          initializer=[numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
                                       numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "m")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return write_bundle(tmp_path / "b", "tlg", {"encoder": m},
                        {"encoder": ([("image", [1, 3, 24, 24])], [("feats", [1, 24, 24, 5])])}, imgsz=24)


def _run(monkeypatch, args):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import profile_graph as P

    return P.main(args)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_profile_graph_per_op_type(tmp_path, monkeypatch, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} not installed")
    b = _bundle(tmp_path)
    peaks = tmp_path / "latency.json"
    peaks.write_text(json.dumps({"machine": {"peaks": {"threads": 1, "peaks": {"fp32_fma_avx2": 50.0,
                                                                                "int8_vnni_avx512": 200.0}}}}))
    out = tmp_path / "prof"
    assert _run(monkeypatch, [str(b), "--graph", "all", "--backend", backend, "--threads", "1", "--repeats", "2",
                              "--peaks", str(peaks), "--out", str(out)]) == 0
    res = json.loads((out / "profile.json").read_text())
    r = res["graphs"]["encoder"]
    assert r["macs"]["fp32"] == CONV_MACS + MM_MACS and r["macs"]["int8"] == 0
    # every MAC lands on some profiled op type (by name, or by family when the engine renamed it)
    assert sum(o["macs"] for o in r["ops"]) == CONV_MACS + MM_MACS
    # and by name or through the op the engine fused (Conv+Relu), not by the family guess
    assert r["macs"]["attributed"]["unplaced"] == 0 and r["macs"]["attributed"]["by_family"] == 0
    import profile_graph as P

    assert sum(o["macs"] for o in r["ops"] if o["op_type"] in P.FAMILIES["conv"]) == CONV_MACS
    assert sum(o["macs"] for o in r["ops"] if o["op_type"] in P.FAMILIES["matmul"]) == MM_MACS
    assert sum(o["share"] for o in r["ops"]) == pytest.approx(1.0)
    assert all(o["ms"] >= 0 for o in r["ops"]) and r["node_ms"] > 0
    for o in r["ops"]:
        if o["macs"] and o["ms"] > 0:
            assert o["gops_s"] == pytest.approx(2 * o["macs"] / (o["ms"] / 1e3) / 1e9)
    assert r["lower_bound"]["ms"] == pytest.approx(2 * (CONV_MACS + MM_MACS) / 50e9 * 1e3)
    assert 0 <= r["data_movement"]["share"] <= 1
    assert res["load_start"] and res["load_end"]
    if backend == "openvino":  # the kernel names OpenVINO chose, per layer type
        assert all(o.get("kernels") for o in r["ops"] if o["macs"])


def test_profile_graph_rejects_an_unknown_graph(tmp_path, monkeypatch):
    b = _bundle(tmp_path)
    with pytest.raises(SystemExit, match="'nope' is not in"):
        _run(monkeypatch, [str(b), "--graph", "nope", "--out", str(tmp_path / "o")])
