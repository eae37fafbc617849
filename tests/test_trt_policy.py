"""The FP16 precision policy (edgefss.trt_policy) on the exported graphs of both models, no TensorRT.

The graphs are exported at 64 px in the form TensorRT receives (plain MatMul/Softmax attention,
plain GroupNorm: exporters/stable_norm.BACKEND_NORM).
Each test states which nodes must be pinned to FP32 and that the compute-heavy ones are not.
"""

from __future__ import annotations

from collections import Counter

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from edgefss import trt_policy  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    from edgefss.exporters.fused_attention import PLAIN
    from edgefss.exporters.graphs import load_graphs
    from edgefss.exporters.onnx_export import export_graph
    from edgefss.exporters.stable_norm import BACKEND_NORM

    out = {}
    d = tmp_path_factory.mktemp("trt_graphs")
    for model, names in (("cst", ("encoder", "head")), ("tlg", ("head",))):
        mg = load_graphs(model, None, SIZE, PLAIN)
        ex = mg.example_inputs(1)
        for g in names:
            mg.graphs[g].norm = BACKEND_NORM["tensorrt"]  # as exporters/core.py sets it per backend
            p = d / f"{model}_{g}.onnx"
            export_graph(mg.graphs[g], ex[g], p)
            out[f"{model}_{g}"] = onnx.load(str(p))
    return out


def _by_op(model, pins):
    nodes = list(model.graph.node)
    ops = Counter(n.op_type for n in nodes)
    pinned = Counter(p.op_type for p in pins.values())
    return nodes, ops, pinned


def test_cst_encoder_pins_layernorm_softmax_and_attention_logits_only(graphs):
    m = graphs["cst_encoder"]
    pins = trt_policy.pinned_nodes(m)
    nodes, ops, pinned = _by_op(m, pins)
    assert ops["Softmax"] == 12 and pinned["Softmax"] == 12
    assert ops["LayerNormalization"] > 0 and pinned["LayerNormalization"] == ops["LayerNormalization"]
    # the Q.K^T MatMul feeding each softmax is pinned (the ViT overflow), the other MatMuls
    # (qkv, projection, MLP, attn @ V) are left to FP16
    logits = [p for p in pins.values() if p.op_type == "MatMul"]
    assert len(logits) == 12 and all(p.reason == "softmax" for p in logits)
    assert ops["MatMul"] - len(logits) >= 48
    for n in nodes:
        if n.op_type == "Softmax":
            src = next(x for x in nodes if n.input[0] in x.output)
            assert src.name in pins, f"the logits of {n.name} ({src.op_type}) are not pinned"
    assert pinned["Conv"] == 0 and pinned["Erf"] == 0
    assert trt_policy.summary(pins)["softmax"] >= 24


def test_cst_head_pins_correlation_norms_and_instance_norms(graphs):
    m = graphs["cst_head"]
    pins = trt_policy.pinned_nodes(m)
    _, ops, pinned = _by_op(m, pins)
    assert ops["ReduceL2"] > 0 and pinned["ReduceL2"] == ops["ReduceL2"]
    # each norm's application (Div) is pinned with it
    assert pinned["Div"] >= ops["ReduceL2"]
    assert pinned["InstanceNormalization"] == ops["InstanceNormalization"] > 0
    assert pinned["Softmax"] == ops["Softmax"]
    assert pinned["Conv"] == 0


def test_tlg_head_pins_every_sinkhorn_exp_log_and_the_max_shift(graphs):
    m = graphs["tlg_head"]
    pins = trt_policy.pinned_nodes(m)
    nodes, ops, pinned = _by_op(m, pins)
    assert ops["Exp"] > 0 and pinned["Exp"] == ops["Exp"]
    assert ops["Log"] > 0 and pinned["Log"] == ops["Log"]
    assert pinned["ReduceL2"] == ops["ReduceL2"] > 0  # the hypercorrelation's norms
    # every max-shift (ReduceMax -> Sub -> Exp) and sum of exps (Exp -> ReduceSum) is pinned
    producer = {t: n for n in nodes for t in n.output}
    for n in nodes:
        if n.op_type == "Exp":
            sub = producer.get(n.input[0])
            if sub is not None and sub.op_type == "Sub":
                assert sub.name in pins
                for t in sub.input:
                    if t in producer and producer[t].op_type == "ReduceMax":
                        assert producer[t].name in pins
    assert pinned["Conv"] == 0 and pinned["Gemm"] == 0
    # the policy is a small part of the graph, not everything
    assert len(pins) < 0.25 * len(nodes)


def test_apply_to_network_marks_matching_layers_only():
    class DT:
        pass

    class FakeTrt:
        float32, float16, int8 = DT(), DT(), DT()

    class Tensor:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, name, outs):
            self.name, self._outs, self.precision, self.out_types = name, outs, None, {}
            self.num_outputs = len(outs)

        def get_output(self, k):
            return self._outs[k]

        def set_output_type(self, k, t):
            self.out_types[k] = t

    class Network:
        def __init__(self, layers):
            self.layers = layers
            self.num_layers = len(layers)

        def get_layer(self, i):
            return self.layers[i]

    pins = {"/attn/Softmax": trt_policy.Pin("/attn/Softmax", "Softmax", "softmax", ("sm_out",)),
            "/sink/Exp": trt_policy.Pin("/sink/Exp", "Exp", "exp/log", ("exp_out",))}
    layers = [Layer("/attn/Softmax", [Tensor("sm_out", FakeTrt.float16)]),
              Layer("/attn/Softmax_reshape", [Tensor("tmp", FakeTrt.float16)]),  # parser helper layer
              Layer("renamed", [Tensor("exp_out", FakeTrt.float32)]),  # matched by its output tensor
              Layer("/mlp/MatMul", [Tensor("mm", FakeTrt.float16)]),
              Layer("/attn/Softmax2", [Tensor("x", FakeTrt.float16)])]  # a different node, not a helper
    assert trt_policy.apply_to_network(Network(layers), pins, FakeTrt) == 3
    assert [lay.precision is FakeTrt.float32 for lay in layers] == [True, True, True, False, False]
    assert layers[0].out_types == {0: FakeTrt.float32} and layers[3].out_types == {}
