"""Counting work: the one place the benchmark and bench/ scripts get MACs from.

Two counters, one convention (1 MAC = one multiply-add = 2 ops; a roofline compares 2 * MACs with
a peak in G ops/s):

- `count_macs(fn)`: torch eager, torch.utils.flop_counter.FlopCounterMode over `fn()`, with the
  CPU attention kernel (`aten._scaled_dot_product_flash_attention_for_cpu`, no formula in torch's
  registry, so attention silently counted as 0) given torch's SDPA formula: 2 * B*H*Nq*Nk*d MACs.
- `graph_macs(model_or_path, input_shapes)`: an ONNX graph, per node, from onnx shape inference
  (no torch). Convolutions, matmuls, com.microsoft FusedMatMul / MultiHeadAttention, and the
  integer ops; Conv/MatMul/Gemm fed by DequantizeLinear (QDQ format) count as int8 because ONNX
  Runtime fuses them into integer kernels. Ops that do no multiply-adds (element-wise, data
  movement, normalisation) count 0: their cost is memory traffic, which the profile shows as time.

This module imports neither torch nor onnx at import time (runtime-side scripts use the ONNX half).
"""

from __future__ import annotations

from math import prod
from pathlib import Path

# ---------------------------------------------------------------------------------------- torch


def count_macs(fn) -> float:
    """MACs of everything `fn()` runs in torch (FLOPs / 2), attention included on CPU.

    Args:
        fn: a no-argument callable running torch ops (wrap it in torch.no_grad() yourself if needed).
    Returns:
        multiply-accumulates as a float (not GMACs).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # the CPU attention kernel has no formula in torch's registry: count it as the CUDA kernels are
    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    cpu_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={cpu_op: cpu_sdpa}) as fc:
        fn()
    return fc.get_total_flops() / 2


# ----------------------------------------------------------------------------------------- ONNX
MS = "com.microsoft"
# op type -> (data input index, weight input index) of the integer ops
INT_OPS = {"QLinearConv": (0, 3), "ConvInteger": (0, 1), "QLinearMatMul": (0, 3), "MatMulInteger": (0, 1),
           "MatMulIntegerToFloat": (0, 1), "DynamicQuantizeMatMul": (0, 1), "QGemm": (0, 3)}
CONV_OPS = {"Conv", "FusedConv", "ConvInteger", "QLinearConv"}
MATMUL_OPS = {"MatMul", "FusedMatMul", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
              "DynamicQuantizeMatMul"}
GEMM_OPS = {"Gemm", "QGemm"}
COUNTED = CONV_OPS | MATMUL_OPS | GEMM_OPS | {"ConvTranspose", "MultiHeadAttention"}


def _fix_inputs(model, input_shapes: dict | None) -> None:
    """Give every graph input a static shape: `input_shapes[name]`, else its dims with unknowns = 1."""
    inits = {i.name for i in model.graph.initializer}
    input_shapes = input_shapes or {}
    unknown = set(input_shapes) - {i.name for i in model.graph.input}
    if unknown:
        raise ValueError(f"graph_macs: input_shapes names {sorted(unknown)} are not graph inputs "
                         f"(inputs: {[i.name for i in model.graph.input if i.name not in inits]})")
    for inp in model.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        want = input_shapes.get(inp.name)
        if want is not None:
            if len(want) != len(dims):
                raise ValueError(f"graph_macs: input_shapes[{inp.name!r}] = {list(want)} has {len(want)} dims; "
                                 f"the graph input has {len(dims)}")
            vals = [int(v) for v in want]
        else:
            vals = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims]
        for d, v in zip(dims, vals):
            d.Clear()
            d.dim_value = v


def load_shaped(model_or_path, input_shapes: dict | None = None):
    """The ONNX model with static input shapes and onnx shape inference run (weights not loaded).

    Args:
        model_or_path: an onnx.ModelProto (copied, not changed) or a path to a .onnx file.
        input_shapes: {input name: [dims]} for the dynamic inputs; other unknown dims become 1.
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        p = Path(model_or_path)
        if not p.is_file():
            raise FileNotFoundError(f"graph_macs: {p} is not a file (expected an .onnx graph)")
        model = onnx.load(str(p), load_external_data=False)  # initializer dims are enough
    else:
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
    _fix_inputs(model, input_shapes)
    try:
        # onnx's own inference loses the dims behind Shape->Gather->Concat->Reshape chains (every
        # torch.onnx head) and knows no com.microsoft op; ONNX Runtime's symbolic inference does both
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        SymbolicShapeInference = None
    if SymbolicShapeInference is not None:
        try:
            out = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
            if out is not None:
                return out
        except Exception:  # an op it cannot handle: fall back to onnx's inference below
            pass
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a contrib op the checker does not know stops strict inference: keep what it found
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)


def _shapes(model) -> dict:
    """tensor name -> list of dims (None for an unknown dim) from inputs, value_info, outputs, initializers."""
    out = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    for i in model.graph.initializer:
        out[i.name] = list(i.dims)
    for n in model.graph.node:  # Constant outputs that inference left without value_info
        if n.op_type == "Constant" and n.output[0] not in out:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = list(a.t.dims)
    return out


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _known(*shapes) -> bool:
    return all(s is not None and all(d is not None for d in s) for s in shapes)


def _conv_out(x, w, node) -> list | None:
    """Spatial output dims of a Conv from its input and attributes (when inference gave none)."""
    sp = x[2:]
    k = w[2:]
    n = len(sp)
    strides = _attr(node, "strides") or [1] * n
    dil = _attr(node, "dilations") or [1] * n
    pads = _attr(node, "pads") or [0] * (2 * n)
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return [-(-s // st) for s, st in zip(sp, strides)]
    if auto == "VALID":
        pads = [0] * (2 * n)
    return [(s + pads[i] + pads[i + n] - dil[i] * (k[i] - 1) - 1) // strides[i] + 1 for i, s in enumerate(sp)]


def _node_macs(node, shp) -> int | None:
    """MACs of one node, None when a needed shape is unknown."""
    op, ins = node.op_type, list(node.input)
    get = lambda i: shp.get(ins[i]) if i < len(ins) and ins[i] else None
    y = shp.get(node.output[0]) if node.output else None
    if op in CONV_OPS:
        x, w = get(0), get(INT_OPS[op][1] if op in INT_OPS else 1)
        if not _known(x, w):
            return None
        sp = y[2:] if _known(y) else _conv_out(x, w, node)
        # each output element: (C/groups) * prod(kernel) MACs
        return int(x[0] * w[0] * prod(sp) * w[1] * prod(w[2:]))
    if op == "ConvTranspose":
        x, w = get(0), get(1)
        if not _known(x, w):
            return None
        # each input element scatters into (M/groups) * prod(kernel) outputs
        return int(prod(x) * w[1] * prod(w[2:]))
    if op in MATMUL_OPS:
        a, b = get(0), get(INT_OPS[op][1] if op in INT_OPS else 1)
        if not _known(a, b):
            return None
        if op == "FusedMatMul":
            a = a[:-2] + a[-2:][::-1] if _attr(node, "transA", 0) and len(a) >= 2 else a
            b = b[:-2] + b[-2:][::-1] if _attr(node, "transB", 0) and len(b) >= 2 else b
        k = a[-1]
        m = a[-2] if len(a) >= 2 else 1
        nn = b[-1] if len(b) >= 2 else 1
        batch = _broadcast(a[:-2], b[:-2])
        return int(prod(batch) * m * k * nn)
    if op in GEMM_OPS:
        a, b = get(0), get(INT_OPS[op][1] if op in INT_OPS else 1)
        if not _known(a, b):
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        nn = b[0] if _attr(node, "transB", 0) else b[1]
        return int(m * k * nn)
    if op == "MultiHeadAttention":
        return _mha_macs(node, get(0), get(1), get(2))
    return 0


def _broadcast(a: list, b: list) -> list:
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + list(a), [1] * (n - len(b)) + list(b)
    return [max(x, y) for x, y in zip(a, b)]


def _mha_macs(node, q, k, v) -> int | None:
    """com.microsoft.MultiHeadAttention: Q K^T and (softmax) V, 2*B*Nq*Nk*D MACs for D = heads*head_size
    (B*Nq*Nk*(Dqk + Dv) when V's width differs). Layouts: Q (B,Nq,D); K/V (B,Nk,D) or (B,heads,Nk,h);
    packed QKV Q (B,N,heads,3,h) without K; packed KV K (B,Nk,heads,2,h)."""
    if not _known(q):
        return None
    if len(q) == 5:  # packed QKV
        b, n, heads, _, h = q
        return int(2 * b * n * n * heads * h)
    b, nq, dq = q
    if not _known(k):
        return None
    if len(k) == 5:  # packed KV
        _, nk, heads, _, h = k
        return int(b * nq * nk * (dq + heads * h))
    nk = k[2] if len(k) == 4 else k[1]
    dv = dq
    if _known(v) and v:
        dv = v[1] * v[3] if len(v) == 4 else v[-1]
    return int(b * nq * nk * (dq + dv))


def _int8_fed(node, producer: dict) -> bool:
    """Whether a float Conv/MatMul/Gemm reads both its data and weight inputs from DequantizeLinear
    (through Identity nodes): the QDQ pattern ONNX Runtime runs as an integer kernel."""
    def from_dq(name):
        n = producer.get(name)
        while n is not None and n.op_type == "Identity":
            n = producer.get(n.input[0])
        return n is not None and n.op_type == "DequantizeLinear"

    ins = [i for i in list(node.input)[:2] if i]
    return len(ins) == 2 and all(from_dq(i) for i in ins)


def graph_macs(model_or_path, input_shapes: dict | None = None) -> list[dict]:
    """Per-node multiply-accumulates of an ONNX graph (nodes that do none are left out).

    Args:
        model_or_path: onnx.ModelProto or path to a .onnx file (external weights not read).
        input_shapes: {input name: [dims]}; unknown input dims default to 1.
    Returns:
        [{"name", "op_type", "macs" (int; None when a shape could not be inferred), "precision":
        "fp32" | "int8"}] in graph order, one per Conv/ConvTranspose/MatMul/Gemm/FusedMatMul/
        MultiHeadAttention/integer op. "fp32" means float (the graph's own float type).
    """
    model = load_shaped(model_or_path, input_shapes)
    shp = _shapes(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    recs = []
    for i, n in enumerate(model.graph.node):
        if n.op_type not in COUNTED:
            continue
        macs = _node_macs(n, shp)
        if n.op_type in INT_OPS:
            prec = "int8"
        elif n.op_type in ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "ConvTranspose"):
            prec = "int8" if _int8_fed(n, producer) else "fp32"
        else:
            prec = "fp32"  # ONNX Runtime's CPU MultiHeadAttention computes in float
        recs.append({"name": n.name or f"{n.op_type}_{i}", "op_type": n.op_type, "macs": macs, "precision": prec})
    return recs


def macs_summary(records: list[dict]) -> dict:
    """{"fp32_macs", "int8_macs", "unknown": [node names whose MACs could not be inferred]}."""
    out = {"fp32_macs": 0, "int8_macs": 0, "unknown": []}
    for r in records:
        if r["macs"] is None:
            out["unknown"].append(r["name"])
        else:
            out[f"{r['precision']}_macs"] += r["macs"]
    return out


def mixed_ideal_ms(fp32_macs: float, int8_macs: float, fp32_peak: float, int8_peak: float | None) -> float:
    """The compute lower bound of a graph whose MACs run part in int8, part in float: each part at
    its own peak (G ops/s), 2 ops per MAC. ms."""
    int8_peak = int8_peak or fp32_peak
    return (2 * int8_macs / (int8_peak * 1e9) + 2 * fp32_macs / (fp32_peak * 1e9)) * 1e3


def bundle_graph(bundle, graph: str):
    """(ONNX path or None, {input: static shape}) of one graph of an edgefss bundle.

    Dynamic dims of the manifest (e.g. "B") become 1. None when the graph is not ONNX (an
    OpenVINO IR bundle: `bundle_graph_macs` reads those through OpenVINO).
    """
    import json

    bundle = Path(bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{bundle}: not an edgefss bundle (manifest.json: {exc})") from None
    g = manifest.get("graphs", {}).get(graph)
    if g is None:
        raise ValueError(f"{bundle}: no graph {graph!r} (graphs: {sorted(manifest.get('graphs', {}))})")
    shapes = {n: [d if isinstance(d, int) else 1 for d in info["shape"]] for n, info in g.get("inputs", {}).items()}
    path = bundle / g["file"]
    return (path if path.suffix == ".onnx" else None), shapes


def bundle_graph_macs(bundle, graph: str = "encoder") -> dict | None:
    """`macs_summary` of one graph of a bundle: ONNX through `graph_macs`, OpenVINO IR through
    `ov_model_macs` (None when the IR's engine, openvino, is not installed)."""
    path, shapes = bundle_graph(bundle, graph)
    if path is not None:
        return macs_summary(graph_macs(path, shapes))
    try:
        import openvino as ov
    except ImportError:
        return None
    import json

    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    model = ov.Core().read_model(str(Path(bundle) / manifest["graphs"][graph]["file"]))
    model.reshape({p.get_any_name(): ov.PartialShape(shapes[p.get_any_name()])
                   for p in model.inputs if p.get_any_name() in shapes})
    return macs_summary(ov_model_macs(model))


# ------------------------------------------------------------------------------------- OpenVINO
def ov_model_macs(model) -> list[dict]:
    """Per-op MACs of an OpenVINO model with static shapes (call `model.reshape` first), the same
    records as `graph_macs`; names are the ops' friendly names (what PERF_COUNT reports).

    Convolution / GroupConvolution / ConvolutionBackpropData from weight and output shapes,
    MatMul with transpose_a/b, ScaledDotProductAttention (Q K^T + A V). "int8" when the data and weight inputs come from FakeQuantize or
    from a Convert of an 8-bit tensor (NNCF's quantized IR), else "fp32".
    """
    def dims(out):
        ps = out.get_partial_shape()
        return None if ps.is_dynamic else [int(d) for d in ps.to_shape()]

    def is_q(inp):
        src = inp.get_source_output().get_node()
        # NNCF's weights: i8 Constant -> Convert -> (Subtract) -> Multiply; activations: FakeQuantize,
        # possibly before a precision-preserving op (the CPU plugin runs MaxPool on int8)
        while src.get_type_name() in ("Reshape", "Transpose", "Subtract", "Multiply", "MaxPool", "Squeeze",
                                      "Unsqueeze") and src.get_input_size():
            src = src.input(0).get_source_output().get_node()
        t = src.get_type_name()
        return t == "FakeQuantize" or (
            t == "Convert" and src.input(0).get_element_type().get_type_name() in ("i8", "u8"))

    recs = []
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t not in ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul",
                     "ScaledDotProductAttention"):
            continue
        x, w, y = dims(op.input_value(0)), dims(op.input_value(1)), dims(op.output(0))
        macs = None
        if x is not None and w is not None and y is not None:
            if t == "Convolution":  # w (O, I, k...)
                macs = y[0] * w[0] * prod(y[2:]) * w[1] * prod(w[2:])
            elif t == "GroupConvolution":  # w (G, O/G, I/G, k...)
                macs = y[0] * w[0] * w[1] * prod(y[2:]) * w[2] * prod(w[3:])
            elif t == "ConvolutionBackpropData":  # w (I, O, k...)
                macs = prod(x) * w[1] * prod(w[2:])
            elif t == "ScaledDotProductAttention":  # Q (..., Nq, d), K (..., Nk, d), V (..., Nk, dv)
                v = dims(op.input_value(2))
                macs = prod(x[:-1]) * w[-2] * (x[-1] + (v[-1] if v else x[-1]))
            else:
                at = op.get_attributes()
                k = x[-2] if at.get("transpose_a") and len(x) >= 2 else x[-1]
                macs = prod(y) * k
        prec = "int8" if t != "ScaledDotProductAttention" and is_q(op.input(0)) and is_q(op.input(1)) else "fp32"
        recs.append({"name": op.get_friendly_name(), "op_type": t, "macs": int(macs) if macs is not None else None,
                     "precision": prec})
    return recs
