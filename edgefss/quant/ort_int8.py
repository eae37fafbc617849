"""ONNX Runtime static INT8 (QDQ) with the edgefss exclusion policy (torch-free).

Policy (deployment-notes §3, §0 "ViT quantization recipe"):
- only Conv / MatMul / Gemm are quantized; every other node (LayerNorm, Softmax, GELU, residual
  Add, the Sinkhorn's ReduceMax/Exp/Log loop, resizes) is listed in `nodes_to_exclude`, which
  still calibrates all tensors (excluding by node, not by op type, avoids ORT's uncalibrated
  Softmax crash);
- MatMuls whose both inputs are activations (attention, the correlation) stay float
  (`MatMulConstBOnly`): cosine similarities lose most of their signal in 8 bits;
- in head graphs, the last quantizable layer before each output stays float;
- S8S8 QDQ, per-channel symmetric weights, symmetric activations: the default U8S8 saturates
  on AVX2 without VNNI (measured token cosine 0.990 vs 0.999 S8S8).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgefss.errors import require

QUANT_OPS = ("Conv", "MatMul", "Gemm")


def last_layers(model) -> list[str]:
    """Names of the last Conv/MatMul/Gemm node on every path to a graph output.

    Args:
        model: onnx.ModelProto.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    init = {i.name for i in model.graph.initializer}
    found, seen = [], set()
    stack = [o.name for o in model.graph.output]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in QUANT_OPS:
            found.append(n.name)
            continue
        stack.extend(i for i in n.input if i and i not in init)
    return sorted(found)


def exclusion_policy(model, keep_last: bool, extra: tuple = ()) -> list[str]:
    """Node names ORT must leave in float: all non-Conv/MatMul/Gemm, heads' last layers, `extra`."""
    excl = {n.name for n in model.graph.node if n.op_type not in QUANT_OPS}
    if keep_last:
        excl.update(last_layers(model))
    excl.update(extra)
    return sorted(excl)


def _name_nodes(model) -> None:
    # nodes_to_exclude works by name; exporters may leave some nodes unnamed
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def quantize_onnx(fp32_path, out_path, feeds: list, keep_last: bool, extra_exclude: tuple = (),
                  cache_path=None, label: str = "calibrating") -> dict:
    """Quantize one graph to S8S8 QDQ.

    Args:
        fp32_path: FP32 ONNX file; out_path: where the QDQ model goes.
        feeds: calibration feeds [{input name: float32 array}] (ignored when `cache_path`
            already holds the ranges of an earlier call).
        keep_last: keep each output's last quantizable layer float (head graphs).
        extra_exclude: more node names to keep float (sensitivity search, user overrides).
        cache_path: JSON calibration cache; re-quantizations with other exclusions reuse it.
        label: tqdm label.

    Returns:
        dict(quantized_nodes, float_nodes, excluded_last, extra_excluded).
    """
    onnx = require("onnx", "INT8 quantization")
    q = require("onnxruntime.quantization", "ONNX Runtime INT8 quantization")
    from edgefss.quant.reader import FeedReader

    model = onnx.load(str(fp32_path))
    _name_nodes(model)
    excl = exclusion_policy(model, keep_last, tuple(extra_exclude))
    named = Path(str(out_path) + ".named.onnx")
    named.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(named))
    # ORT logs every float bias and the skipped pre-processing on the root logger: hundreds of lines
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        q.quantize_static(
            str(named), str(out_path), FeedReader(feeds, progress=label),
            quant_format=q.QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS),
            per_channel=True, reduce_range=False,
            activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
            nodes_to_exclude=excl, calibrate_method=q.CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True},
            calibration_cache_path=None if cache_path is None else str(cache_path),
        )
    finally:
        root.setLevel(level)
        named.unlink(missing_ok=True)
    quantizable = [n.name for n in model.graph.node if n.op_type in QUANT_OPS]
    qmodel = onnx.load(str(out_path), load_external_data=False)
    dq_consumers = _quantized_nodes(qmodel)
    return {
        "quantized_nodes": len([n for n in quantizable if n in dq_consumers]),
        "quantizable_nodes": len(quantizable),
        "excluded_last": last_layers(model) if keep_last else [],
        "extra_excluded": sorted(extra_exclude),
    }


def _quantized_nodes(qmodel) -> set:
    # a node counts as quantized when its weight (input 1) is dequantized: activation QDQ pairs
    # are shared between consumers, so a float node can still read a QDQ'd input
    dq_out = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in qmodel.graph.node
            if n.op_type in QUANT_OPS and len(n.input) > 1 and n.input[1] in dq_out}
