"""OpenVINO INT8 through NNCF post-training quantization (torch-free).

CST (a ViT) uses `ModelType.TRANSFORMER`: SmoothQuant, and LayerNorm internals / residual
adds / non-constant MatMul activations handled the transformer way (deployment-notes §4).
Heads keep their last layers in float through an IgnoredScope, as with ONNX Runtime.
"""

from __future__ import annotations

from edgefss.errors import require


def quantize_ov(onnx_fp32_path, out_xml, feeds: list, transformer: bool, ignored: list) -> dict:
    """Quantize an FP32 ONNX graph with NNCF and save OpenVINO IR (xml + bin).

    Args:
        onnx_fp32_path: FP32 ONNX graph; out_xml: IR path (the .bin goes beside it).
        feeds: calibration feeds [{input name: float32 array}].
        transformer: use nncf.ModelType.TRANSFORMER (CST).
        ignored: node names kept float (e.g. the head's last layers).

    Returns:
        dict(model_type, subset_size, ignored).
    """
    ov = require("openvino", "OpenVINO INT8 export")
    nncf = require("nncf", "OpenVINO INT8 quantization")
    model = ov.convert_model(str(onnx_fp32_path))
    kwargs = {}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if ignored:
        # OV friendly names follow the ONNX node names; validate=False tolerates ones folded away
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored), validate=False)
    qmodel = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **kwargs)
    ov.save_model(qmodel, str(out_xml), compress_to_fp16=False)
    # the IR holds no ISA-specific form: the CPU plugin picks VNNI/AMX/AVX2 kernels when it compiles
    return {"tool": f"nncf {nncf.__version__}", "model_type": "TRANSFORMER" if transformer else "default",
            "subset_size": len(feeds), "ignored": list(ignored), "target_isa": "any (chosen by OpenVINO at load)"}
