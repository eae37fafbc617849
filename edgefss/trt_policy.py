"""FP16 precision policy for TensorRT engines: which ONNX nodes stay FP32, chosen by graph pattern.

ViT-style graphs built with `BuilderFlag.FP16` and no constraints are silently wrong on TensorRT
(LayerNorm variance and attention logits overflow FP16's 65504; NVIDIA/TensorRT#4723, #4837,
efficientvit#142, segment-anything#696), and TLG's Sinkhorn (exp/log of cost/eps) and the
correlation's L2 norms lose their small terms in FP16. The policy pins, by pattern rather than
by layer name, so it holds for any export of either model:

- "norm":      LayerNormalization / InstanceNormalization / GroupNormalization, and decomposed
               norms (a Sqrt or ReduceL2 with the reductions, eps Add and Div around it);
- "softmax":   every Softmax / LogSoftmax, and inside attention the chain that forms its logits
               back to the Q.K^T MatMul (scale Mul/Div, mask Add);
- "exp/log":   every Exp / Log / Softplus / ReduceLogSumExp, with the max-shift (ReduceMax, Sub)
               feeding an Exp and the ReduceSum of an Exp (the Sinkhorn's log-sum-exps);
- "l2norm":    ReduceL2 / LpNormalization / ReduceSumSquare and the Add (eps) / Div / Clip
               applying them (the correlation's normalisations).

Convolutions, the MLP/projection MatMuls and everything else stay free for FP16/INT8 tactics.
`pinned_nodes` works on an `onnx.ModelProto` (no TensorRT needed, unit-tested on the exported
graphs); `apply_to_network` marks the matching layers of a parsed TensorRT network.
Torch-free.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

NORM_OPS = {"LayerNormalization", "InstanceNormalization", "GroupNormalization", "SimplifiedLayerNormalization",
            "SkipLayerNormalization"}
SOFTMAX_OPS = {"Softmax", "LogSoftmax"}
EXPLOG_OPS = {"Exp", "Log", "Softplus", "ReduceLogSumExp"}
L2_OPS = {"ReduceL2", "LpNormalization", "ReduceSumSquare"}
# Elementwise/shape ops walked through between a Softmax and the MatMul forming its logits.
LOGIT_PATH_OPS = {"Mul", "Div", "Add", "Sub", "Where", "Cast", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}
# Ops around a Sqrt that belong to a decomposed norm (variance, eps, the division).
NORM_PATH_OPS = {"ReduceMean", "ReduceSum", "Pow", "Mul", "Add", "Sub"}
APPLY_OPS = {"Div", "Mul", "Reciprocal", "Add", "Clip", "Max"}


@dataclass(frozen=True)
class Pin:
    """One node kept in FP32: its name (or first output when unnamed), op type and the rule."""

    node: str
    op_type: str
    reason: str
    outputs: tuple


def _name(node) -> str:
    return node.name or (node.output[0] if node.output else "")


def pinned_nodes(model) -> dict[str, Pin]:
    """Nodes of an ONNX graph that the FP16 policy keeps in FP32.

    Args:
        model: onnx.ModelProto (or its GraphProto).

    Returns:
        node name -> Pin, in graph order.
    """
    graph = getattr(model, "graph", model)
    nodes = list(graph.node)
    producer, consumers = {}, defaultdict(list)
    for n in nodes:
        for t in n.output:
            producer[t] = n
        for t in n.input:
            consumers[t].append(n)
    pins: dict[str, Pin] = {}

    def pin(n, reason):
        pins.setdefault(_name(n), Pin(_name(n), n.op_type, reason, tuple(n.output)))

    def parents(n):
        return [producer[t] for t in n.input if t in producer]

    def children(n):
        return [c for t in n.output for c in consumers[t]]

    for n in nodes:
        op = n.op_type
        if op in NORM_OPS:
            pin(n, "norm")
        elif op in SOFTMAX_OPS:
            pin(n, "softmax")
            # back along the logits to the Q.K^T MatMul (at most a few scale/mask/reshape steps)
            frontier, depth = parents(n)[:1], 0
            while frontier and depth < 6:
                p = frontier[0]
                if p.op_type in ("MatMul", "Gemm", "Einsum"):
                    pin(p, "softmax")
                    break
                if p.op_type not in LOGIT_PATH_OPS:
                    break
                pin(p, "softmax")
                # follow the data input (the one not produced by a Constant/initializer chain)
                frontier = [q for q in parents(p) if q.op_type not in ("Constant", "Shape", "ConstantOfShape")][:1]
                depth += 1
        elif op in EXPLOG_OPS:
            pin(n, "exp/log")
            if op == "Exp":
                for p in parents(n):  # the max-shift: x - max(x)
                    if p.op_type == "Sub":
                        pin(p, "exp/log")
                        for q in parents(p):
                            if q.op_type == "ReduceMax":
                                pin(q, "exp/log")
                for c in children(n):  # the sum of exps
                    if c.op_type == "ReduceSum":
                        pin(c, "exp/log")
        elif op in L2_OPS or op == "Sqrt":
            reason = "l2norm" if op != "Sqrt" else "norm"
            pin(n, reason)
            # the reductions under a Sqrt (variance / sum of squares), up to 4 steps back
            frontier = parents(n) if op == "Sqrt" else []
            for _ in range(4):
                nxt = []
                for p in frontier:
                    if p.op_type in NORM_PATH_OPS and _name(p) not in pins:
                        pin(p, reason)
                        nxt += parents(p)
                frontier = nxt
            # eps Add, then the Div / Mul / Clip that applies the norm, 2 steps forward
            frontier = children(n)
            for _ in range(2):
                nxt = []
                for c in frontier:
                    if c.op_type in APPLY_OPS and _name(c) not in pins:
                        pin(c, reason)
                        nxt += children(c)
                frontier = nxt
    order = {_name(n): i for i, n in enumerate(nodes)}
    return dict(sorted(pins.items(), key=lambda kv: order.get(kv[0], 0)))


def summary(pins: dict[str, Pin]) -> dict[str, int]:
    """reason -> number of pinned nodes (the engine build's log line and the manifest entry)."""
    out: dict[str, int] = defaultdict(int)
    for p in pins.values():
        out[p.reason] += 1
    return dict(sorted(out.items()))


def apply_to_network(network, pins: dict[str, Pin], trt) -> int:
    """Marks the TensorRT layers that implement pinned ONNX nodes as FP32; returns how many.

    A layer matches when its name is a pinned node's name (the ONNX parser names layers after
    their node, possibly with a suffix for helper layers) or when one of its outputs is a pinned
    node's output tensor. The caller sets `BuilderFlag.OBEY_PRECISION_CONSTRAINTS`.
    """
    names = set(pins)
    tensors = {t for p in pins.values() for t in p.outputs}
    marked = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        hit = layer.name in names or any(layer.name.startswith(n + "_") or layer.name.startswith(n + " ")
                                         for n in names if n) or any(o is not None and o.name in tensors for o in outs)
        if not hit:
            continue
        layer.precision = trt.float32
        for k, o in enumerate(outs):
            if o is not None and o.dtype in (trt.float32, trt.float16):
                layer.set_output_type(k, trt.float32)
        marked += 1
    return marked
