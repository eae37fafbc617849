"""OpenVINO INT8 through NNCF post-training quantization (torch-free).

CST (a ViT) uses `ModelType.TRANSFORMER`: SmoothQuant, and LayerNorm internals / residual
adds / non-constant MatMul activations handled the transformer way (deployment-notes §4).
Heads keep their last layers in float through an IgnoredScope, as with ONNX Runtime.
"""

from __future__ import annotations

from edgefss.errors import require


# What a head graph may quantize on OpenVINO: the same policy as ONNX Runtime (quant/ort_int8.py
# QUANT_OPS). Left to its defaults NNCF also put FakeQuantize on the elementwise and reduction ops of
# the Sinkhorn, GroupNorm and softmax-like arithmetic (931 FakeQuantize nodes in the 400 px TLG head, 14
# of them feeding a Convolution directly), which costs accuracy and makes its statistics pass hold
# ~3 GB at 400 px.
HEAD_QUANT_TYPES = ("Convolution", "GroupConvolution", "MatMul")
_NEVER_QUANTIZED = {"Parameter", "Result", "Constant"}


def quantize_ov(onnx_fp32_path, out_xml, feeds: list, transformer: bool, ignored: list,
                only_types: tuple | None = None) -> dict:
    """Quantize an FP32 ONNX graph with NNCF and save OpenVINO IR (xml + bin).

    Args:
        onnx_fp32_path: FP32 ONNX graph; out_xml: IR path (the .bin goes beside it).
        feeds: calibration feeds [{input name: float32 array}].
        transformer: use nncf.ModelType.TRANSFORMER (CST).
        ignored: node names kept float (e.g. the head's last layers).
        only_types: OpenVINO op types whose inputs may be quantized (None: NNCF's defaults); every
            other type in the graph goes to NNCF's IgnoredScope.

    Returns:
        dict(model_type, subset_size, ignored).
    """
    ov = require("openvino", "OpenVINO INT8 export")
    nncf = require("nncf", "OpenVINO INT8 quantization")
    model = ov.convert_model(str(onnx_fp32_path))
    kwargs = {}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    skip_types = []
    if only_types is not None:
        present = {op.get_type_name() for op in model.get_ops()}
        skip_types = sorted(present - set(only_types) - _NEVER_QUANTIZED)
    if ignored or skip_types:
        # OV friendly names follow the ONNX node names; validate=False tolerates ones folded away
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored), types=skip_types, validate=False)
    qmodel = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **kwargs)
    ov.save_model(qmodel, str(out_xml), compress_to_fp16=False)
    # the IR holds no ISA-specific form: the CPU plugin picks VNNI/AMX/AVX2 kernels when it compiles
    return {"tool": f"nncf {nncf.__version__}", "model_type": "TRANSFORMER" if transformer else "default",
            "subset_size": len(feeds), "ignored": list(ignored), "target_isa": "any (chosen by OpenVINO at load)",
            "quantized_op_types": list(only_types) if only_types is not None else "nncf default"}
