"""torch module -> checked ONNX file."""

from __future__ import annotations

from pathlib import Path

from edgefss.errors import StateError, require
from edgefss.exporters.fused_attention import CUSTOM_OPSETS, attention_export, count_fused
from edgefss.exporters.graphs import GraphDef
from edgefss.exporters.stable_norm import group_norm_export

OPSET = 17
# Ops TensorRT's importer gets wrong (ReduceLogSumExp without max-shift, TRT#4772).
FORBIDDEN_OPS = ("ReduceLogSumExp",)


def export_graph(g: GraphDef, example: dict, path) -> Path:
    """Export `g.module` with the fixed I/O names, then run onnx.checker and the op policy.

    Args:
        g: the graph (its `attention` says how ViT attention is emitted, see fused_attention.py,
            its `norm` how GroupNorm statistics are, see stable_norm.py);
            example: {input name: tensor} (all of g.inputs); path: .onnx file.

    Raises:
        StateError: the checker fails, a forbidden op appears, or an attention meant to be
            fused was not.
    """
    torch = require("torch", "ONNX export")
    onnx = require("onnx", "ONNX export")
    args = tuple(example[n] for n in g.inputs)
    with torch.no_grad(), attention_export(g.module, g.attention) as swapped, group_norm_export(g.module, g.norm):
        torch.onnx.export(
            g.module, args, str(path), input_names=g.inputs, output_names=g.outputs,
            dynamic_axes=g.dynamic_axes or None, opset_version=OPSET, do_constant_folding=True,
            dynamo=False, custom_opsets=CUSTOM_OPSETS[g.attention] if swapped else None,
        )
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise StateError(f"exported graph '{Path(path).name}' fails onnx.checker: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    bad = sorted({n.op_type for n in model.graph.node if n.op_type in FORBIDDEN_OPS})
    if bad:
        raise StateError(
            f"exported graph '{Path(path).name}' contains {bad}; the Sinkhorn must export as the "
            "fixed-iteration max-shifted loop (edgefss.ops.torch_ops.lse)"
        )
    fused = count_fused(model)
    if fused != swapped:
        raise StateError(f"exported graph '{Path(path).name}' has {fused} fused attention nodes, expected "
                         f"{swapped} ({g.attention}); the attention core was not traced as one op")
    return Path(path)


def io_signature(path, dynamic_axes: dict, observed: dict | None = None) -> dict:
    """{"inputs": {name: {"shape", "dtype"}}, "outputs": {...}} of an ONNX file.

    Dynamic axes are written as their name ('B'); other dims the tracer left symbolic are taken
    from `observed` ({name: shape} of a real run), so the manifest only holds ints and 'B'.
    """
    onnx = require("onnx", "reading ONNX graphs")
    from onnx import helper

    m = onnx.load(str(path), load_external_data=False)

    def sig(vals):
        out = {}
        for v in vals:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            dyn = dynamic_axes.get(v.name, {})
            seen = (observed or {}).get(v.name)
            dims = [dyn[i] if i in dyn else (int(seen[i]) if isinstance(d, str) and seen is not None else d)
                    for i, d in enumerate(dims)]
            out[v.name] = {"shape": dims, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name}
        return out

    return {"inputs": sig(m.graph.input), "outputs": sig(m.graph.output)}
